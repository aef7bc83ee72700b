/**
 * Issue 14: "a MIG GPU answering NO_PERMISSION: every check completes". Every GPU check of the
 * catalogue (createChecks, with a config from parseConfig), and dcgm at level 3, over the real
 * bindings: the fake libnvidia-ml, the real probe.cu over the fake CUDA runtime, and fake-dcgmi on
 * PATH as `dcgmi`. Two nodes: GPU 3 in MIG mode, whose process query the binding does not even ask
 * (the fake would answer NO_PERMISSION there, as NVML does to an unprivileged caller); and a process
 * query answering NO_PERMISSION on every GPU. Jest's globalSetup builds the fakes.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Check, CheckOutcome } from '../../exporter/checks/check.js';
import { CHECK_NAMES, createChecks } from '../../exporter/checks/index.js';
import { createSystemClock } from '../../exporter/clock.js';
import { parseConfig } from '../../exporter/config/config.js';
import { createRunCommand } from '../../exporter/exec/run-command.js';
import { silentLogger } from '../../exporter/log.js';
import { loadCudaProbe } from '../../exporter/native/cuda-probe.js';
import { FAKE_PROBE, fakeCudaControl, openFakeNvmlEachTest } from '../fakes/native-fakes.js';

const ROOT = join(import.meta.dirname, '..', '..');
const FAKE_DCGMI = join(ROOT, 'test', 'fakes', 'bin', 'fake-dcgmi');
const NODE = 'gpu-node-1';

const openNvml = openFakeNvmlEachTest();
const { setDevices: cudaSetDevices, contexts, callsOn } = fakeCudaControl();

let bin: string;

beforeAll(() => {
  bin = mkdtempSync(join(tmpdir(), 'autopilot-mig-'));
  symlinkSync(FAKE_DCGMI, join(bin, 'dcgmi'));
});
afterAll(() => {
  rmSync(bin, { recursive: true, force: true });
});

/** The catalogue's GPU checks over the fakes, NVML steered by `scenario`. */
async function gpuChecks(scenario: string): Promise<ReadonlyMap<string, Check>> {
  expect(Number(cudaSetDevices(4))).toBe(0);
  const load = await openNvml(scenario);
  const config = parseConfig({
    flags: new Map(),
    env: { NODE_NAME: NODE, AUTOPILOT_EXPECTED_GPUS: '4' },
    hostname: NODE,
    knownChecks: CHECK_NAMES,
  });
  return createChecks(
    config,
    {
      run: createRunCommand({
        baseEnv: {
          PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`,
          FAKE_DCGMI_SCENARIO: 'pass-4x',
        },
      }),
      nvml: load,
      cuda: loadCudaProbe(FAKE_PROBE),
      clock: createSystemClock(),
      logger: silentLogger,
      kube: undefined,
    },
    { peers: () => [], runOnEvent: () => undefined },
  );
}

/** The checks that are not about GPUs. */
const NOT_GPU = new Set(['ping', 'pvc', 'iperf']);

/**
 * Runs every GPU check of the catalogue, and dcgm at level 3 as well, each under its own deadline:
 * a check that does not complete fails the test there. Keyed "pciebw", …, "dcgm 3".
 */
async function runEveryGpuCheck(scenario: string): Promise<Map<string, CheckOutcome>> {
  const checks = await gpuChecks(scenario);
  const runs: (readonly [string, Record<string, string>])[] = [
    ...[...checks.keys()].filter((name) => !NOT_GPU.has(name)).map((name) => [name, {}] as const),
    ['dcgm', { r: '3' }],
  ];
  const outcomes = new Map<string, CheckOutcome>();
  for (const [name, raw] of runs) {
    const check = checks.get(name)!;
    const params = check.parseParams(raw);
    const signal = AbortSignal.timeout(check.timeoutFor?.(params) ?? check.timeoutMs);
    const key = raw['r'] === undefined ? name : `${name} ${raw['r']}`;
    outcomes.set(key, await check.run({ signal, logger: silentLogger, params }));
  }
  return outcomes;
}

/** The check's own verdict where it has one, and each device's ("node" for the node's own). */
function verdicts(outcomes: ReadonlyMap<string, CheckOutcome>): Record<string, string[]> {
  const of = (outcome: CheckOutcome) => [
    ...(outcome.verdict === undefined ? [] : [`check:${outcome.verdict}`]),
    ...outcome.devices.map((d) => `${d.id === '' ? 'node' : d.id}:${d.verdict}`),
  ];
  return Object.fromEntries([...outcomes].map(([name, outcome]) => [name, of(outcome)]));
}

const PASS4 = ['0:PASS', '1:PASS', '2:PASS', '3:PASS'];
const MIG = 'MIG is enabled on this GPU';
const MIG_UNKNOWN =
  'process count unknown: MIG is enabled: NVML lists its processes only to privileged callers';
const DENIED =
  'process count unknown: nvmlDeviceGetComputeRunningProcesses_v3: Insufficient Permissions (4)';

describe('every GPU check completes where the process count is unknown', () => {
  test('GPU 3 in MIG mode: skipped where it would be loaded, the others measured, no ERROR', async () => {
    const outcomes = await runEveryGpuCheck('gpus=4;mig=3');
    expect(verdicts(outcomes)).toEqual({
      pciebw: ['0:PASS', '1:PASS', '2:PASS', '3:SKIP'],
      remapped: ['0:PASS', '1:PASS', '2:PASS', '3:SKIP'],
      dcgm: [...PASS4, 'node:PASS'],
      gpupower: PASS4,
      gpucount: ['node:PASS'],
      ecc: PASS4,
      xid: PASS4,
      gpumem: ['0:PASS', '1:PASS', '2:PASS', '3:SKIP'],
      // NVLink state is read on a MIG GPU but not judged on links (as DCGM does); peer copies skip it.
      nvlink: PASS4,
      p2pbw: ['0:PASS', '1:PASS', '2:PASS', '3:SKIP'],
      'dcgm 3': ['check:SKIP'],
    });
    expect(outcomes.get('pciebw')?.devices[3]?.reason).toBe(MIG);
    expect(outcomes.get('p2pbw')?.devices[3]?.reason).toBe(`${MIG} (no peer access)`);
    expect(outcomes.get('gpumem')?.devices[3]?.reason).toBe(MIG);
    expect(outcomes.get('dcgm 3')?.reason).toBe(
      `GPUs in use or not known to be idle, not tested: GPU 3 (${MIG_UNKNOWN})`,
    );
    // No CUDA call at all, not even a bus-id lookup, on the GPU whose processes cannot be seen.
    expect(Number(callsOn(null, 3))).toBe(0);
    expect(Number(contexts(3))).toBe(0);
  });

  test('the process query answering NO_PERMISSION on every GPU: SKIP with why, no ERROR', async () => {
    const outcomes = await runEveryGpuCheck(
      'gpus=4;fail=nvmlDeviceGetComputeRunningProcesses_v3:4',
    );
    const skip4 = ['0:SKIP', '1:SKIP', '2:SKIP', '3:SKIP'];
    expect(verdicts(outcomes)).toEqual({
      pciebw: skip4,
      remapped: PASS4,
      dcgm: [...PASS4, 'node:PASS'],
      gpupower: PASS4,
      gpucount: ['node:PASS'],
      ecc: PASS4,
      xid: PASS4,
      gpumem: ['check:SKIP'],
      nvlink: PASS4,
      p2pbw: ['check:SKIP'],
      'dcgm 3': ['check:SKIP'],
    });
    expect(outcomes.get('pciebw')?.devices.map((d) => d.reason)).toEqual(Array(4).fill(DENIED));
    const notIdle = `GPUs in use or not known to be idle, not tested: ${[0, 1, 2, 3]
      .map((i) => `GPU ${i} (${DENIED})`)
      .join(', ')}`;
    expect(outcomes.get('gpumem')?.reason).toBe(notIdle);
    expect(outcomes.get('p2pbw')?.reason).toBe(notIdle);
    expect(outcomes.get('dcgm 3')?.reason).toBe(notIdle);
    expect(Number(callsOn('cudaSetDevice', -1))).toBe(0);
    for (let device = 0; device < 4; device++) expect(Number(callsOn(null, device))).toBe(0);
  });
});
