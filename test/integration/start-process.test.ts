import { isRunning, waitUntilGone } from '../fakes/processes.js';
import { describe, test, expect, afterAll } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ts from 'typescript';
import { createStartProcess } from '../../exporter/exec/start-process.js';
import type { ExitHook, StartedProcess } from '../../exporter/exec/start-process.js';

const PATH = process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin';
const start = createStartProcess({ baseEnv: { PATH } });

/** Everything a test started, so that nothing outlives the suite even when a test fails. */
const started: StartedProcess[] = [];
const strays: number[] = [];
const scratch = mkdtempSync(join(tmpdir(), 'autopilot-start-process-'));

function track(process: StartedProcess): StartedProcess {
  started.push(process);
  return process;
}

afterAll(async () => {
  await Promise.all(started.map((p) => p.stop(100)));
  for (const pid of strays) {
    if (isRunning(pid)) process.kill(pid, 'SIGKILL');
  }
  rmSync(scratch, { recursive: true, force: true });
});

/** A shell script that prints the pid of a `sleep 30` it leaves in the background. */
async function grandchildOf(process: StartedProcess): Promise<number> {
  expect(await process.waitForOutput(/^grandchild \d+$/m, 10_000)).toBe(true);
  const pid = Number(/^grandchild (\d+)$/m.exec(process.output())?.[1]);
  strays.push(pid);
  expect(isRunning(pid)).toBe(true);
  return pid;
}

const sh = (script: string): { file: string; args: string[] } => ({
  file: 'sh',
  args: ['-c', script],
});

describe('createStartProcess: stopping', () => {
  test('stop() ends a running process with SIGTERM', async () => {
    const sleeper = track(start({ file: 'sleep', args: ['30'] }, { maxLifetimeMs: 60_000 }));
    expect(sleeper.pid).toEqual(expect.any(Number));
    const pid = sleeper.pid as number;
    expect(isRunning(pid)).toBe(true);
    const began = performance.now();
    const end = await sleeper.stop();
    expect(end).toStrictEqual({
      exitCode: null,
      signal: 'SIGTERM',
      spawnError: undefined,
      cause: 'stopped',
    });
    expect(performance.now() - began).toBeLessThan(1000);
    expect(await sleeper.exited).toBe(end);
    expect(isRunning(pid)).toBe(false);
  });

  test('maxLifetimeMs stops it by itself', async () => {
    const began = performance.now();
    const sleeper = track(start({ file: 'sleep', args: ['30'] }, { maxLifetimeMs: 300 }));
    const end = await sleeper.exited;
    const elapsed = performance.now() - began;
    expect(end.cause).toBe('lifetime');
    expect(end.signal).toBe('SIGTERM');
    expect(elapsed).toBeGreaterThanOrEqual(290);
    // Well short of the sleep's own 30 s, with room for a loaded machine.
    expect(elapsed).toBeLessThan(10_000);
  });

  test('stop() kills the whole group: the grandchild too', async () => {
    const parent = track(
      start(sh('sleep 30 & echo "grandchild $!"; wait'), { maxLifetimeMs: 60_000 }),
    );
    const grandchild = await grandchildOf(parent);
    const end = await parent.stop();
    expect(end.cause).toBe('stopped');
    expect(await waitUntilGone(grandchild)).toBe(true);
  });

  test('a group that ignores SIGTERM is killed after the grace period', async () => {
    // An ignored signal stays ignored across exec, so the backgrounded sleep ignores it too.
    const stubborn = track(
      start(sh('trap "" TERM; sleep 30 & echo "grandchild $!"; wait'), { maxLifetimeMs: 60_000 }),
    );
    const grandchild = await grandchildOf(stubborn);
    const began = performance.now();
    const end = await stubborn.stop(300);
    const elapsed = performance.now() - began;
    expect(end.signal).toBe('SIGKILL');
    expect(end.cause).toBe('stopped');
    expect(elapsed).toBeGreaterThanOrEqual(290);
    // Well short of the sleep's own 30 s, with room for a loaded machine.
    expect(elapsed).toBeLessThan(10_000);
    expect(await waitUntilGone(grandchild)).toBe(true);
  });

  test('a leader that exits on its own takes what it left behind with it', async () => {
    const leaver = track(start(sh('sleep 30 & echo "grandchild $!"'), { maxLifetimeMs: 60_000 }));
    const grandchild = await grandchildOf(leaver);
    const end = await leaver.exited;
    expect(end).toStrictEqual({
      exitCode: 0,
      signal: null,
      spawnError: undefined,
      cause: 'exited',
    });
    expect(await waitUntilGone(grandchild)).toBe(true);
  });

  test('stop() after the end only reports how it ended', async () => {
    const quick = track(start({ file: 'true', args: [] }, { maxLifetimeMs: 60_000 }));
    const end = await quick.exited;
    expect(await quick.stop()).toBe(end);
    expect(end.cause).toBe('exited');
  });

  test('a missing executable settles with ENOENT', async () => {
    const missing = track(
      start({ file: join(scratch, 'no-such-tool'), args: [] }, { maxLifetimeMs: 60_000 }),
    );
    expect(missing.pid).toBeUndefined();
    expect(await missing.exited).toStrictEqual({
      exitCode: null,
      signal: null,
      spawnError: 'ENOENT',
      cause: 'spawn-failed',
    });
    expect(await missing.waitForOutput(/anything/, 5000)).toBe(false);
    expect((await missing.stop()).cause).toBe('spawn-failed');
  });
});

describe('createStartProcess: output', () => {
  test('waitForOutput is true once the text appears, on stdout or stderr', async () => {
    const talker = track(
      start(sh('echo starting; sleep 0.2; echo "listening on 5201" >&2; sleep 30'), {
        maxLifetimeMs: 60_000,
      }),
    );
    expect(await talker.waitForOutput(/listening on \d+/, 5000)).toBe(true);
    expect(talker.output()).toBe('starting\nlistening on 5201\n');
    // Already there: at once, and a global regex's lastIndex does not matter.
    const global = /starting/g;
    expect(await talker.waitForOutput(global, 0)).toBe(true);
    expect(await talker.waitForOutput(global, 0)).toBe(true);
  });

  test('waitForOutput is false when the time passes first', async () => {
    const silent = track(start({ file: 'sleep', args: ['30'] }, { maxLifetimeMs: 60_000 }));
    const began = performance.now();
    expect(await silent.waitForOutput(/never/, 200)).toBe(false);
    expect(performance.now() - began).toBeGreaterThanOrEqual(190);
  });

  test('waitForOutput is false as soon as the process exits without it', async () => {
    const quitter = track(start(sh('echo bye; exit 3'), { maxLifetimeMs: 60_000 }));
    const began = performance.now();
    expect(await quitter.waitForOutput(/never/, 10_000)).toBe(false);
    // Short of the 10 s it would wait for output, with room for a loaded machine.
    expect(performance.now() - began).toBeLessThan(5000);
    expect(await quitter.exited).toMatchObject({ exitCode: 3, cause: 'exited' });
    expect(quitter.output()).toBe('bye\n');
  });

  test('only the last maxOutputBytes are kept', async () => {
    const flood = track(
      start(sh('head -c 300000 /dev/zero | tr "\\000" x; echo; echo END'), {
        maxLifetimeMs: 60_000,
        maxOutputBytes: 1024,
      }),
    );
    await flood.exited;
    const output = flood.output();
    expect(Buffer.byteLength(output)).toBe(1024);
    expect(output.endsWith('x\nEND\n')).toBe(true);
    expect(output.startsWith('xxxx')).toBe(true);
  });

  test('the default keeps 64 KiB', async () => {
    const flood = track(
      start(sh('head -c 300000 /dev/zero | tr "\\000" x'), { maxLifetimeMs: 60_000 }),
    );
    await flood.exited;
    expect(flood.output()).toHaveLength(64 * 1024);
  });
});

describe('createStartProcess: environment and argv', () => {
  test('LC_ALL=C wins, options.env overrides baseEnv, undefined base values are dropped', async () => {
    const withBase = createStartProcess({
      baseEnv: { PATH, LC_ALL: 'de_DE.UTF-8', A: 'base', B: 'base', GONE: undefined },
    });
    const printer = track(
      withBase(sh('echo "$LC_ALL ${A} ${B} ${GONE-unset} ${HOME-nohome}"'), {
        maxLifetimeMs: 60_000,
        env: { B: 'option', LC_ALL: 'fr_FR.UTF-8' },
      }),
    );
    await printer.exited;
    expect(printer.output()).toBe('C base option unset nohome\n');
  });

  test('argv is passed literally, never through a shell', async () => {
    const marker = join(scratch, 'injected');
    const args = [`$(touch ${marker})`, '; touch x', 'two words', '*', ''];
    const printer = track(
      start({ file: 'printf', args: ['<%s>', ...args] }, { maxLifetimeMs: 60_000 }),
    );
    await printer.exited;
    expect(printer.output()).toBe(args.map((a) => `<${a}>`).join(''));
  });
});

describe('createStartProcess: the exporter exiting', () => {
  test('every group still alive is killed by the exit hook, and the hook is removed after', async () => {
    const listeners = new Set<() => void>();
    const hook: ExitHook = { add: (l) => listeners.add(l), remove: (l) => listeners.delete(l) };
    const withHook = createStartProcess({ baseEnv: { PATH }, exitHook: hook });
    expect(listeners.size).toBe(0);
    const first = track(
      withHook(sh('sleep 30 & echo "grandchild $!"; wait'), { maxLifetimeMs: 60_000 }),
    );
    const second = track(withHook({ file: 'sleep', args: ['30'] }, { maxLifetimeMs: 60_000 }));
    expect(listeners.size).toBe(1);
    const grandchild = await grandchildOf(first);
    for (const listener of listeners) listener();
    expect((await first.exited).signal).toBe('SIGKILL');
    expect((await second.exited).signal).toBe('SIGKILL');
    expect(await waitUntilGone(grandchild)).toBe(true);
    expect(listeners.size).toBe(0);
  });

  test('a real Node process that ends leaves no started process behind, and is not kept alive by one', async () => {
    // The module compiled as it is, run in a Node process of its own that simply runs out of work.
    const source = readFileSync(
      join(import.meta.dirname, '..', '..', 'exporter', 'exec', 'start-process.ts'),
      'utf8',
    );
    const compiled = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
    }).outputText;
    writeFileSync(join(scratch, 'start-process.mjs'), compiled);
    writeFileSync(
      join(scratch, 'driver.mjs'),
      [
        "import { createStartProcess } from './start-process.mjs';",
        'const start = createStartProcess({ baseEnv: { PATH: process.env.PATH } });',
        "const p = start({ file: 'sh', args: ['-c', 'sleep 30 & echo \"grandchild $!\"; wait'] }, { maxLifetimeMs: 60000 });",
        'await p.waitForOutput(/grandchild/, 5000);',
        'process.stdout.write(`leader ${p.pid}\\n${p.output()}`);',
      ].join('\n'),
    );
    const began = performance.now();
    const driver = track(
      start(
        { file: process.execPath, args: [join(scratch, 'driver.mjs')] },
        { maxLifetimeMs: 20_000 },
      ),
    );
    const end = await driver.exited;
    expect(driver.output()).toMatch(/^leader \d+\ngrandchild \d+\n$/);
    expect(end).toMatchObject({ exitCode: 0, cause: 'exited' });
    expect(performance.now() - began).toBeLessThan(10_000);
    const leader = Number(/^leader (\d+)$/m.exec(driver.output())?.[1]);
    const grandchild = Number(/^grandchild (\d+)$/m.exec(driver.output())?.[1]);
    strays.push(leader, grandchild);
    expect(await waitUntilGone(leader)).toBe(true);
    expect(await waitUntilGone(grandchild)).toBe(true);
  });
});
