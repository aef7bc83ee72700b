import { isRunning, waitUntilGone } from '../fakes/processes.js';
import { describe, test, expect, beforeAll, afterAll } from '@jest/globals';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRunCommand, DEFAULT_MAX_OUTPUT_BYTES } from '../../exporter/exec/run-command.js';
import type { CommandSpec } from '../../exporter/exec/run-command.js';

const BIN = join(import.meta.dirname, '..', 'fakes', 'bin');
const fake = (name: string): string => join(BIN, name);
const PATH = process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin';

const run = createRunCommand({ baseEnv: { PATH } });

let scratch: string;
/** Grandchildren the fakes started, so that none outlives the suite even when a test fails. */
const grandchildren: number[] = [];

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'autopilot-run-command-'));
});

afterAll(() => {
  for (const pid of grandchildren) {
    if (isRunning(pid)) process.kill(pid, 'SIGKILL');
  }
  rmSync(scratch, { recursive: true, force: true });
});

/**
 * True while the process exists and is not a zombie. A killed orphan is re-parented to PID 1, and
 * where PID 1 does not reap (some container inits) it stays a zombie that kill(pid, 0) still finds.
 */
function readPid(file: string): number {
  const pid = Number(readFileSync(file, 'utf8').trim());
  expect(Number.isInteger(pid) && pid > 1).toBe(true);
  grandchildren.push(pid);
  return pid;
}

async function waitForFile(file: string, withinMs = 10_000): Promise<void> {
  const deadline = performance.now() + withinMs;
  while (!existsSync(file) || readFileSync(file, 'utf8').trim() === '') {
    if (performance.now() > deadline) throw new Error(`${file} was never written`);
    await sleep(10);
  }
}

let counter = 0;
const scratchFile = (name: string): string => join(scratch, `${name}-${(counter += 1)}`);

describe('createRunCommand: completion', () => {
  test('a normal exit gives stdout, stderr, exit code 0 and end "exited"', async () => {
    const result = await run({ file: fake('exit-with'), args: ['0'], timeoutMs: 5000 });
    expect(result).toStrictEqual({
      end: 'exited',
      exitCode: 0,
      signal: null,
      stdout: 'out:0\n',
      stderr: 'err:0\n',
      durationMs: result.durationMs,
    });
    expect('spawnError' in result).toBe(false);
  });

  test('a non-zero exit is still "exited", with its code', async () => {
    const result = await run({ file: fake('exit-with'), args: ['3'], timeoutMs: 5000 });
    expect(result.end).toBe('exited');
    expect(result.exitCode).toBe(3);
    expect(result.signal).toBeNull();
    expect(result.stdout).toBe('out:3\n');
    expect(result.stderr).toBe('err:3\n');
  });

  test('durationMs measures the run', async () => {
    const started = performance.now();
    const result = await run({ file: fake('exit-with'), args: ['0'], timeoutMs: 5000 });
    const elapsed = performance.now() - started;
    expect(result.durationMs).toBeGreaterThan(0);
    expect(result.durationMs).toBeLessThanOrEqual(elapsed + 1);
    expect(result.durationMs).toBeLessThan(10_000);
  });

  test('a grandchild left behind by a child that exits is killed', async () => {
    const pidFile = scratchFile('leave-behind');
    const result = await run({ file: fake('leave-behind'), args: [pidFile], timeoutMs: 5000 });
    expect(result.end).toBe('exited');
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toBe('done\n');
    expect(await waitUntilGone(readPid(pidFile))).toBe(true);
  });

  test('a grandchild that keeps stdout open neither delays the result nor turns it into a timeout', async () => {
    const pidFile = scratchFile('leave-behind-open');
    const result = await run({
      file: fake('leave-behind'),
      args: [pidFile, 'keep-stdout'],
      timeoutMs: 2000,
    });
    const pid = readPid(pidFile);
    expect(result.end).toBe('exited');
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toBe('done\n');
    expect(result.durationMs).toBeLessThan(10_000);
    expect(await waitUntilGone(pid)).toBe(true);
  });
});

describe('createRunCommand: environment and argv', () => {
  test('LC_ALL=C is set even when baseEnv and spec.env set another locale', async () => {
    const withLocale = createRunCommand({
      baseEnv: { PATH, LC_ALL: 'de_DE.UTF-8', AUTOPILOT_BASE: 'from-base' },
    });
    const fromBase = await withLocale({
      file: fake('print-env'),
      args: ['AUTOPILOT_BASE'],
      timeoutMs: 5000,
    });
    expect(fromBase.stdout).toBe('LC_ALL=C\nAUTOPILOT_BASE=from-base\n');

    const fromSpec = await withLocale({
      file: fake('print-env'),
      args: ['AUTOPILOT_SPEC'],
      timeoutMs: 5000,
      env: { LC_ALL: 'fr_FR.UTF-8', AUTOPILOT_SPEC: 'from-spec' },
    });
    expect(fromSpec.stdout).toBe('LC_ALL=C\nAUTOPILOT_SPEC=from-spec\n');
  });

  test('spec.env overrides baseEnv, and undefined base values are not passed', async () => {
    const withBase = createRunCommand({
      baseEnv: { PATH, AUTOPILOT_X: 'base', AUTOPILOT_UNSET: undefined },
    });
    const overridden = await withBase({
      file: fake('print-env'),
      args: ['AUTOPILOT_X'],
      timeoutMs: 5000,
      env: { AUTOPILOT_X: 'spec' },
    });
    expect(overridden.stdout).toBe('LC_ALL=C\nAUTOPILOT_X=spec\n');
    const unset = await withBase({
      file: fake('print-env'),
      args: ['AUTOPILOT_UNSET'],
      timeoutMs: 5000,
    });
    expect(unset.stdout).toBe('LC_ALL=C\nAUTOPILOT_UNSET=<unset>\n');
  });

  test('nothing of the parent environment leaks past baseEnv', async () => {
    // HOME is set for the test process but not in baseEnv.
    const result = await run({ file: fake('print-env'), args: ['HOME'], timeoutMs: 5000 });
    expect(result.stdout).toBe('LC_ALL=C\nHOME=<unset>\n');
  });

  test('argv is passed literally, never through a shell', async () => {
    const marker = scratchFile('injected');
    const args = [
      `$(touch ${marker}-a); \`touch ${marker}-b\``,
      `; touch ${marker}-c`,
      `| touch ${marker}-d`,
      'two words',
      '\'quoted\' "double"',
      '*',
      '',
      '$HOME',
    ];
    const result = await run({ file: fake('print-args'), args, timeoutMs: 5000 });
    expect(result.end).toBe('exited');
    expect(result.stdout).toBe(args.map((a) => `<${a}>\n`).join(''));
    for (const suffix of ['a', 'b', 'c', 'd']) {
      expect(existsSync(`${marker}-${suffix}`)).toBe(false);
    }
  });
});

describe('createRunCommand: stopping a command', () => {
  test('a hanging command is killed at timeoutMs with its grandchild', async () => {
    const pidFile = scratchFile('hang-timeout');
    // Long enough for bash to start and write the pid on a loaded machine before the kill.
    const pending = run({ file: fake('hang'), args: [pidFile], timeoutMs: 3000 });
    await waitForFile(pidFile);
    const pid = readPid(pidFile);
    expect(isRunning(pid)).toBe(true);
    const result = await pending;
    expect(result.end).toBe('timeout');
    expect(result.exitCode).toBeNull();
    expect(result.signal).toBe('SIGKILL');
    expect(result.durationMs).toBeGreaterThanOrEqual(2990);
    expect(result.durationMs).toBeLessThan(10_000);
    // isRunning asks process.kill(pid, 0) first; /proc only tells a reaped-late zombie from a live one.
    expect(await waitUntilGone(pid)).toBe(true);
  });

  test('a flood of output is cut at maxOutputBytes and the command killed', async () => {
    const maxOutputBytes = 64 * 1024;
    const result = await run({ file: fake('flood'), args: [], timeoutMs: 5000, maxOutputBytes });
    expect(result.end).toBe('output-limit');
    expect(result.exitCode).toBeNull();
    expect(result.signal).toBe('SIGKILL');
    const kept = Buffer.byteLength(result.stdout) + Buffer.byteLength(result.stderr);
    expect(kept).toBe(maxOutputBytes);
    expect(result.stdout.startsWith('flood flood flood flood\n')).toBe(true);
    expect(result.durationMs).toBeLessThan(10_000);
  });

  test('output just under the cap is kept whole', async () => {
    const result = await run({
      file: fake('exit-with'),
      args: ['0'],
      timeoutMs: 5000,
      maxOutputBytes: 12,
    });
    expect(result.end).toBe('exited');
    expect(result.stdout + result.stderr).toHaveLength(12);
  });

  test('the default cap is 1 MiB', () => {
    expect(DEFAULT_MAX_OUTPUT_BYTES).toBe(1024 * 1024);
  });

  test('an AbortSignal stops a running command and its grandchild', async () => {
    const pidFile = scratchFile('hang-abort');
    const controller = new AbortController();
    const pending = run(
      { file: fake('hang'), args: [pidFile], timeoutMs: 10_000 },
      controller.signal,
    );
    await waitForFile(pidFile);
    const pid = readPid(pidFile);
    expect(isRunning(pid)).toBe(true);
    controller.abort();
    const result = await pending;
    expect(result.end).toBe('aborted');
    expect(result.exitCode).toBeNull();
    expect(result.signal).toBe('SIGKILL');
    expect(result.durationMs).toBeLessThan(10_000);
    expect(await waitUntilGone(pid)).toBe(true);
  });

  test('an already-aborted signal never starts the command', async () => {
    const pidFile = scratchFile('hang-never');
    const spec: CommandSpec = { file: fake('hang'), args: [pidFile], timeoutMs: 1000 };
    const result = await run(spec, AbortSignal.abort());
    expect(result).toStrictEqual({
      end: 'aborted',
      exitCode: null,
      signal: null,
      stdout: '',
      stderr: '',
      durationMs: 0,
    });
    await sleep(300);
    expect(existsSync(pidFile)).toBe(false);
  });

  test('a missing executable gives "spawn-failed" with ENOENT', async () => {
    const result = await run({
      file: join(scratch, 'no-such-tool'),
      args: ['--version'],
      timeoutMs: 5000,
    });
    expect(result.end).toBe('spawn-failed');
    expect(result.spawnError).toBe('ENOENT');
    expect(result.exitCode).toBeNull();
    expect(result.signal).toBeNull();
    expect(result.stdout).toBe('');
    expect(result.stderr).toBe('');
    expect(result.durationMs).toBeGreaterThanOrEqual(0);
    expect(result.durationMs).toBeLessThan(10_000);
  });

  test('a name missing from PATH gives "spawn-failed" with ENOENT', async () => {
    const result = await run({ file: 'autopilot-no-such-tool', args: [], timeoutMs: 5000 });
    expect(result.end).toBe('spawn-failed');
    expect(result.spawnError).toBe('ENOENT');
  });
});

describe('createRunCommand: the exporter exiting', () => {
  test('a command still running when the exporter exits is killed with its group', async () => {
    const listeners = new Set<() => void>();
    const withHook = createRunCommand({
      baseEnv: { PATH },
      exitHook: { add: (l) => listeners.add(l), remove: (l) => listeners.delete(l) },
    });
    const pidFile = scratchFile('hang-pid');
    const running = withHook({
      file: 'bash',
      args: ['-c', `sleep 30 & echo $! > ${pidFile}; wait`],
      timeoutMs: 60_000,
    });
    await waitForFile(pidFile);
    const grandchild = readPid(pidFile);
    expect(listeners.size).toBe(1);
    for (const listener of listeners) listener();
    const result = await running;
    expect(result.signal).toBe('SIGKILL');
    expect(await waitUntilGone(grandchild)).toBe(true);
    // The hook goes once nothing runs, so an idle exporter holds no listener.
    expect(listeners.size).toBe(0);
  });
});
