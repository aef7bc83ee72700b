/**
 * RunCommand: the only module that imports node:child_process.
 *
 * Commands are argv arrays and never pass through a shell, so nothing a caller sends can become
 * shell syntax. Every child runs in its own process group with LC_ALL=C (parsers expect the C
 * locale), and the whole group is killed on timeout, on abort, and when its output passes the cap,
 * so a hung tool or a flood of output can neither block nor exhaust the exporter.
 */

import { spawn } from 'node:child_process';
import { createGroupReaper, type ExitHook, type GroupReaper } from './start-process.js';

export interface CommandSpec {
  /** Executable name (looked up in PATH) or path. */
  readonly file: string;
  readonly args: readonly string[];
  readonly timeoutMs: number;
  /** Bytes of stdout plus stderr kept; past it the process group is killed. */
  readonly maxOutputBytes?: number;
  readonly env?: Readonly<Record<string, string>>;
}

export type CommandEnd =
  | 'exited' // ran to completion: see exitCode
  | 'timeout' // killed after timeoutMs
  | 'aborted' // killed because the caller's signal fired
  | 'output-limit' // killed because it wrote more than maxOutputBytes
  | 'signal' // killed by a signal nobody here sent
  | 'spawn-failed'; // never started: see spawnError

export interface CommandResult {
  readonly end: CommandEnd;
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly durationMs: number;
  /** errno code when the command could not start, such as ENOENT or EACCES. */
  readonly spawnError?: string;
}

export type RunCommand = (spec: CommandSpec, signal?: AbortSignal) => Promise<CommandResult>;

export const DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024;

export interface RunCommandOptions {
  /** Environment the child starts from; LC_ALL=C is always added. */
  readonly baseEnv: Readonly<Record<string, string | undefined>>;
  /** Defaults to Node's process 'exit' event: groups still running then are killed. */
  readonly exitHook?: ExitHook;
}

export function createRunCommand(options: RunCommandOptions): RunCommand {
  // spawn() forks the whole Node process on the event loop, a few milliseconds each; a burst of 64
  // pings would hold the loop for ~200 ms and stall /metrics. One spawn per turn of the event loop
  // lets the HTTP servers answer between spawns.
  let previousSpawn: Promise<void> = Promise.resolve();
  // A command still running when the exporter exits (a dcgmi diag at shutdown) must not outlive it.
  const groups = createGroupReaper(options.exitHook);
  return async (spec, signal) => {
    const turn = previousSpawn.then(nextTurnOfEventLoop);
    previousSpawn = turn;
    await turn;
    return runCommand(spec, options.baseEnv, signal, groups);
  };
}

function nextTurnOfEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function runCommand(
  spec: CommandSpec,
  baseEnv: Readonly<Record<string, string | undefined>>,
  signal: AbortSignal | undefined,
  groups: GroupReaper,
): Promise<CommandResult> {
  const started = performance.now();
  const maxBytes = spec.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES;
  return new Promise((resolve) => {
    if (signal?.aborted === true) {
      resolve(notStarted('aborted', 0));
      return;
    }
    const child = spawn(spec.file, [...spec.args], {
      env: { ...baseEnv, ...spec.env, LC_ALL: 'C' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group, so that killing the group reaches grandchildren
      shell: false,
    });
    const pid = child.pid;
    if (pid !== undefined) groups.track(pid);

    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let bytes = 0;
    let killReason: CommandEnd | undefined;
    let spawnError: NodeJS.ErrnoException | undefined;

    const killGroup = (reason: CommandEnd): void => {
      if (killReason !== undefined) return;
      killReason = reason;
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // The group is already gone: nothing left to kill.
      }
    };
    const collect = (sink: Buffer[]) => (chunk: Buffer) => {
      const room = maxBytes - bytes;
      if (room > 0) sink.push(chunk.length <= room ? chunk : chunk.subarray(0, room));
      bytes += chunk.length;
      if (bytes > maxBytes) killGroup('output-limit');
    };
    child.stdout.on('data', collect(stdout));
    child.stderr.on('data', collect(stderr));

    const timer = setTimeout(() => killGroup('timeout'), spec.timeoutMs);
    const onAbort = (): void => killGroup('aborted');
    signal?.addEventListener('abort', onAbort, { once: true });

    child.on('error', (error: NodeJS.ErrnoException) => {
      spawnError = error;
      if (child.pid !== undefined) return;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      const code = error.code ?? 'EUNKNOWN';
      resolve({ ...notStarted('spawn-failed', performance.now() - started), spawnError: code });
    });
    // A child that exits may leave its own children in the group; they must not outlive it, and one
    // that still holds stdout open would otherwise delay 'close' until the timeout.
    child.on('exit', () => {
      if (child.pid === undefined || killReason !== undefined) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // No process left in the group.
      }
    });
    child.on('close', (exitCode, exitSignal) => {
      if (pid !== undefined) groups.untrack(pid);
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (spawnError !== undefined && child.pid === undefined) return;
      resolve({
        end: killReason ?? (exitSignal !== null ? 'signal' : 'exited'),
        exitCode,
        signal: exitSignal,
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8'),
        durationMs: performance.now() - started,
      });
    });
  });
}

function notStarted(end: CommandEnd, durationMs: number): CommandResult {
  return { end, exitCode: null, signal: null, stdout: '', stderr: '', durationMs };
}

/** How a command ended, in words for a check's reason ("did not finish in time"). */
export function describeEnd(
  result: CommandResult,
  exited: (code: number | null) => string = (code) => `exited with ${code}`,
): string {
  switch (result.end) {
    case 'timeout':
      return 'did not finish in time';
    case 'aborted':
      return 'was stopped';
    case 'output-limit':
      return 'printed more output than expected';
    case 'signal':
      return `was killed by ${result.signal}`;
    case 'spawn-failed':
      return `could not start (${result.spawnError})`;
    case 'exited':
      return exited(result.exitCode);
  }
}
