/**
 * The dcgm check running test/fakes/bin/fake-dcgmi through the real createRunCommand: argv,
 * exit statuses, stdout and stderr as a real dcgmi gives them, and a dcgmi that never ends.
 */

import { describe, test, expect, beforeAll, afterAll } from '@jest/globals';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDcgmCheck } from '../../exporter/checks/dcgm.js';
import type { CheckOutcome } from '../../exporter/checks/check.js';
import { createRunCommand } from '../../exporter/exec/run-command.js';
import type { CommandResult, RunCommand } from '../../exporter/exec/run-command.js';
import { silentLogger } from '../../exporter/log.js';

const FAKE_DCGMI = join(import.meta.dirname, '..', 'fakes', 'bin', 'fake-dcgmi');
const PATH = process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin';

let scratch: string;
/** A directory whose `dcgmi` is the fake, put first on PATH: the check runs `dcgmi` as in production. */
let bin: string;
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'autopilot-dcgm-'));
  bin = join(scratch, 'bin');
  mkdirSync(bin);
  symlinkSync(FAKE_DCGMI, join(bin, 'dcgmi'));
});
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

interface Reported {
  readonly level: number;
  readonly passed: boolean;
  readonly output: string;
}

function setup(
  scenario: string,
  options: { command?: string; timeoutsMs?: Partial<Record<1 | 2 | 3 | 4, number>> } = {},
) {
  const argsFile = join(scratch, `${scenario}.args`);
  const realRun = createRunCommand({
    baseEnv: {
      PATH: `${bin}:${PATH}`,
      FAKE_DCGMI_SCENARIO: scenario,
      FAKE_DCGMI_ARGS_FILE: argsFile,
    },
  });
  const results: CommandResult[] = [];
  const run: RunCommand = async (spec, signal) => {
    const result = await realRun(spec, signal);
    results.push(result);
    return result;
  };
  const reported: Reported[] = [];
  const check = createDcgmCheck({
    run,
    command: options.command ?? 'dcgmi',
    fatalErrors: ['PCIe', 'NVLink', 'ECC', 'GPU Memory'],
    ...(options.timeoutsMs === undefined ? {} : { timeoutsMs: options.timeoutsMs }),
    onResult: ({ level, passed, output }) => reported.push({ level, passed, output }),
  });
  const runCheck = (r: string, signal = new AbortController().signal): Promise<CheckOutcome> =>
    check.run({ signal, logger: silentLogger, params: check.parseParams({ r }) });
  const argv = (): string[] => readFileSync(argsFile, 'utf8').trimEnd().split('\n');
  return { check, runCheck, reported, argv, results };
}

const verdicts = (outcome: CheckOutcome) =>
  outcome.devices.map((d) => [d.id, d.verdict, d.fatal === true]);

describe('dcgm check with fake-dcgmi', () => {
  test.each(['1', '2', '3', '4'])('argv is exactly diag -r %s -j', async (r) => {
    const { runCheck, argv } = setup('pass-4x');
    await runCheck(r);
    expect(argv()).toEqual(['diag', '-r', r, '-j']);
  });

  test.each(['pass-4x', 'pass-3x'])(
    '%s: every GPU PASS, labels told it passed',
    async (scenario) => {
      const { runCheck, reported } = setup(scenario);
      const outcome = await runCheck('3');
      expect(verdicts(outcome)).toEqual([
        ['0', 'PASS', false],
        ['1', 'PASS', false],
        ['2', 'PASS', false],
        ['3', 'PASS', false],
        ['', 'PASS', false],
      ]);
      expect(reported).toEqual([{ level: 3, passed: true, output: '' }]);
    },
  );

  test.each([
    ['fail-4x', 226],
    ['fail-3x', 205],
  ])('%s: exit %d, results still read: GPU 2 fatal, GPU 0 not', async (scenario, exitCode) => {
    const { runCheck, reported, results } = setup(scenario);
    const outcome = await runCheck('3');
    expect(results.map((r) => [r.end, r.exitCode])).toEqual([['exited', exitCode]]);
    expect(verdicts(outcome)).toEqual([
      ['0', 'FAIL', false],
      ['1', 'PASS', false],
      ['2', 'FAIL', true],
      ['3', 'PASS', false],
      ['', 'PASS', false],
    ]);
    expect(outcome.devices.find((d) => d.id === '')?.compatValue).toBe(1);
    expect(reported).toEqual([{ level: 3, passed: false, output: 'pcie.2memory_bandwidth.0' }]);
  });

  test('host engine down: ERROR quoting dcgmi, nothing for the labels', async () => {
    const { runCheck, reported, results } = setup('hostengine-down');
    const outcome = await runCheck('1');
    expect(results[0]?.exitCode).toBe(235);
    expect(outcome).toEqual({
      devices: [],
      verdict: 'ERROR',
      reason:
        'dcgmi diag -r 1 exited with 235: the host engine connection is invalid or lost (DCGM_ST_CONNECTION_NOT_VALID): Error: Unable to complete diagnostic for entities 0,1,2,3. Return: (-21) : Host engine connection invalid/disconnected',
    });
    expect(reported).toEqual([]);
  });

  test('a real DCGM 4.2.3 capture through the real exporter path: GPU 0 fails software', async () => {
    const { runCheck, reported, results } = setup('real-4.2.3-gb10');
    const outcome = await runCheck('1');
    expect(results.map((r) => [r.end, r.exitCode])).toEqual([['exited', 226]]);
    expect(verdicts(outcome)).toEqual([
      ['0', 'FAIL', false],
      ['', 'PASS', false],
    ]);
    expect(outcome.devices[0]?.reason).toBe(
      'failed software: Persistence Mode: Persistence mode for GPU 0 is disabled. Enable persistence mode by running "nvidia-smi -i <gpuId> -pm 1 " as root.',
    );
    expect(reported).toEqual([{ level: 1, passed: false, output: 'software.0' }]);
  });

  test('a warning on stderr is tolerated when stdout has results', async () => {
    const { runCheck, reported, results } = setup('stderr-warning');
    const outcome = await runCheck('1');
    expect(results[0]?.stderr).toMatch(/^WARNING: CUDA_VISIBLE_DEVICES is set/);
    expect(outcome.devices.every((d) => d.verdict === 'PASS')).toBe(true);
    expect(reported).toEqual([{ level: 1, passed: true, output: '' }]);
  });

  test('a hung dcgmi ends as ERROR when the runner aborts the run', async () => {
    const { runCheck, reported } = setup('hang');
    const controller = new AbortController();
    const started = performance.now();
    const timer = setTimeout(() => controller.abort(), 300);
    const outcome = await runCheck('2', controller.signal);
    clearTimeout(timer);
    expect(performance.now() - started).toBeLessThan(5000);
    expect(outcome).toEqual({
      devices: [],
      verdict: 'ERROR',
      reason: 'dcgmi diag -r 2 was stopped',
    });
    expect(reported).toEqual([]);
  });

  test('a hung dcgmi ends as ERROR at its level’s deadline', async () => {
    const { runCheck } = setup('hang', { timeoutsMs: { 1: 300 } });
    const outcome = await runCheck('1');
    expect(outcome).toEqual({
      devices: [],
      verdict: 'ERROR',
      reason: 'dcgmi diag -r 1 did not finish within 0.3 s',
    });
  });

  test('dcgmi not installed: SKIP', async () => {
    const { runCheck } = setup('pass-4x', { command: join(scratch, 'no-such-dcgmi') });
    expect(await runCheck('1')).toEqual({
      devices: [],
      verdict: 'SKIP',
      reason: `${join(scratch, 'no-such-dcgmi')} is not installed`,
    });
  });
});
