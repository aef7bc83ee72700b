/**
 * StartProcess: long-running children (iperf3 servers) that outlive the call that started them.
 *
 * Same rules as RunCommand: argv only (never a shell), LC_ALL=C, and each child leads its own
 * process group so that stopping it reaches whatever it forked. A started process cannot outlive
 * its maxLifetimeMs, nor the exporter: the groups still alive when Node exits are killed from the
 * 'exit' event. Started processes never keep the exporter alive on their own (the child, its pipes
 * and the lifetime timer are unref'd), so a forgotten server cannot block a clean shutdown.
 */

import { spawn } from 'node:child_process';

/** Why a started process ended. */
export type ProcessEndCause =
  | 'exited' // on its own: see exitCode
  | 'stopped' // stop() was called
  | 'lifetime' // maxLifetimeMs passed
  | 'signal' // killed by a signal nobody here sent
  | 'spawn-failed'; // never started: see spawnError

export interface ProcessEnd {
  readonly exitCode: number | null;
  readonly signal: string | null;
  /** errno code when the process could not start, such as ENOENT or EACCES. */
  readonly spawnError: string | undefined;
  readonly cause: ProcessEndCause;
}

export interface StartedProcess {
  readonly pid: number | undefined;
  /** Settles when the process has exited (or could not start). Never rejects. */
  readonly exited: Promise<ProcessEnd>;
  /** stdout+stderr so far, interleaved as they arrived; only the last maxOutputBytes are kept. */
  output(): string;
  /** Resolves true once the output matches, false if the process exits or timeoutMs passes first. */
  waitForOutput(pattern: RegExp, timeoutMs: number): Promise<boolean>;
  /** SIGTERM to the process group, SIGKILL after graceMs; resolves when it has exited. */
  stop(graceMs?: number): Promise<ProcessEnd>;
}

export interface StartProcessOptions {
  /** The process group is stopped (SIGTERM, then SIGKILL) when this passes. */
  readonly maxLifetimeMs: number;
  readonly env?: Record<string, string>;
  /** Bytes of output kept (the most recent); DEFAULT_KEPT_OUTPUT_BYTES when absent. */
  readonly maxOutputBytes?: number;
}

export type StartProcess = (
  command: { readonly file: string; readonly args: readonly string[] },
  options: StartProcessOptions,
) => StartedProcess;

/** Where "kill everything at exit" hooks in; tests substitute their own. */
export interface ExitHook {
  add(listener: () => void): void;
  remove(listener: () => void): void;
}

export interface StartProcessDeps {
  /** Environment the child starts from; LC_ALL=C is always added. */
  readonly baseEnv: Readonly<Record<string, string | undefined>>;
  /** Defaults to Node's process 'exit' event. */
  readonly exitHook?: ExitHook;
}

export const DEFAULT_KEPT_OUTPUT_BYTES = 64 * 1024;
export const DEFAULT_STOP_GRACE_MS = 2000;

/** setTimeout fires at once (with a warning) for delays above 2^31-1 ms, so longer ones are clamped. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** After the leader exits, how long to wait for its pipes to close before settling anyway. */
const CLOSE_AFTER_EXIT_MS = 1000;

const processExitHook: ExitHook = {
  add: (listener) => process.on('exit', listener),
  remove: (listener) => process.off('exit', listener),
};

/** Sends `signal` to the whole group led by `pid`; false when no process of it is left. */
export function signalProcessGroup(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Process groups to kill if the exporter exits while they live. */
export interface GroupReaper {
  track(pid: number): void;
  untrack(pid: number): void;
}

/**
 * Kills, from the exit hook, every group tracked and not yet untracked. The listener exists only
 * while there are some, so reapers made in tests do not pile up listeners on `process`. RunCommand
 * could share one (its children are detached too, so they would outlive the exporter).
 */
export function createGroupReaper(exitHook: ExitHook = processExitHook): GroupReaper {
  const liveGroups = new Set<number>();
  const killAllAtExit = (): void => {
    // Each group leaves the set when its 'exit' arrives, which removes the listener after the last.
    for (const pid of liveGroups) signalProcessGroup(pid, 'SIGKILL');
  };
  return {
    track: (pid) => {
      if (liveGroups.size === 0) exitHook.add(killAllAtExit);
      liveGroups.add(pid);
    },
    untrack: (pid) => {
      if (!liveGroups.delete(pid)) return;
      if (liveGroups.size === 0) exitHook.remove(killAllAtExit);
    },
  };
}

export function createStartProcess(deps: StartProcessDeps): StartProcess {
  const reaper = createGroupReaper(deps.exitHook);
  return (command, options) =>
    startProcess(command, options, environment(deps.baseEnv, options.env), reaper);
}

function environment(
  baseEnv: Readonly<Record<string, string | undefined>>,
  extra: Readonly<Record<string, string>> | undefined,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries({ ...baseEnv, ...extra })) {
    if (value !== undefined) env[key] = value;
  }
  env.LC_ALL = 'C';
  return env;
}

function startProcess(
  command: { readonly file: string; readonly args: readonly string[] },
  options: StartProcessOptions,
  env: Record<string, string>,
  groups: GroupReaper,
): StartedProcess {
  const output = new OutputTail(options.maxOutputBytes ?? DEFAULT_KEPT_OUTPUT_BYTES);
  const child = spawn(command.file, [...command.args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group, so that killing the group reaches grandchildren
    shell: false,
  });
  const pid = child.pid;
  if (pid !== undefined) groups.track(pid);
  child.unref();
  for (const stream of [child.stdout, child.stderr]) {
    unrefStream(stream);
    stream.on('data', (chunk: Buffer) => output.append(chunk));
  }

  let cause: ProcessEndCause | undefined;
  let leaderExited = false;
  let settle: (end: ProcessEnd) => void = () => undefined;
  const exited = new Promise<ProcessEnd>((resolve) => {
    settle = resolve;
  });
  let settled = false;
  const finish = (end: Omit<ProcessEnd, 'cause'>, fallback: ProcessEndCause): void => {
    if (settled) return;
    settled = true;
    clearTimeout(lifetimeTimer);
    clearTimeout(killTimer);
    if (pid !== undefined) groups.untrack(pid);
    output.finish();
    settle({ ...end, cause: cause ?? fallback });
  };

  let killTimer: NodeJS.Timeout | undefined;
  const terminate = (reason: ProcessEndCause, graceMs: number): void => {
    // After the leader's exit the group has already been killed; what remains is reporting it.
    if (settled || pid === undefined || leaderExited) return;
    cause ??= reason;
    signalProcessGroup(pid, 'SIGTERM');
    if (killTimer === undefined) {
      killTimer = setTimeout(() => signalProcessGroup(pid, 'SIGKILL'), clampDelay(graceMs));
    }
  };

  const lifetimeTimer = setTimeout(
    () => terminate('lifetime', DEFAULT_STOP_GRACE_MS),
    clampDelay(options.maxLifetimeMs),
  );
  lifetimeTimer.unref();

  let spawnError: string | undefined;
  child.on('error', (error: NodeJS.ErrnoException) => {
    if (child.pid !== undefined) return; // a failed kill on a live child, not a failed start
    spawnError = error.code ?? 'EUNKNOWN';
    finish({ exitCode: null, signal: null, spawnError }, 'spawn-failed');
  });
  child.on('exit', (exitCode, signal) => {
    leaderExited = true;
    // Whatever the leader forked must not outlive it; and a grandchild holding the pipes open
    // would otherwise delay 'close' for as long as it lives.
    if (pid !== undefined) {
      signalProcessGroup(pid, 'SIGKILL');
      // Node has reaped the leader, so its pid may be reused: never signal that group id again.
      clearTimeout(killTimer);
      groups.untrack(pid);
    }
    const end = { exitCode, signal, spawnError: undefined };
    const fallback: ProcessEndCause = signal !== null ? 'signal' : 'exited';
    // 'close' normally follows at once with the last output; this covers a descendant that left
    // the group (setsid) and still holds a pipe.
    setTimeout(() => finish(end, fallback), CLOSE_AFTER_EXIT_MS).unref();
    child.once('close', () => finish(end, fallback));
  });

  return {
    pid,
    exited,
    output: () => output.text(),
    waitForOutput: (pattern, timeoutMs) => output.waitFor(pattern, timeoutMs),
    stop: (graceMs = DEFAULT_STOP_GRACE_MS) => {
      terminate('stopped', graceMs);
      return exited;
    },
  };
}

function clampDelay(ms: number): number {
  if (!Number.isFinite(ms)) return ms > 0 ? MAX_TIMER_MS : 0;
  return Math.min(Math.max(ms, 0), MAX_TIMER_MS);
}

/** Pipes are sockets in Node; the Readable type does not say so. */
function unrefStream(stream: NodeJS.ReadableStream): void {
  const maybeSocket = stream as NodeJS.ReadableStream & { unref?: () => unknown };
  maybeSocket.unref?.();
}

/** The most recent output of a process, and waiters for a pattern in it. */
class OutputTail {
  private chunks: Buffer[] = [];
  private bytes = 0;
  private cached: string | undefined = '';
  private readonly waiters = new Set<() => void>();
  private ended = false;

  constructor(private readonly maxBytes: number) {}

  append(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    while (this.bytes > this.maxBytes && this.chunks.length > 0) {
      const first = this.chunks[0] as Buffer;
      const excess = this.bytes - this.maxBytes;
      if (first.length <= excess) {
        this.chunks.shift();
        this.bytes -= first.length;
      } else {
        this.chunks[0] = first.subarray(excess);
        this.bytes -= excess;
      }
    }
    this.cached = undefined;
    for (const wake of [...this.waiters]) wake();
  }

  text(): string {
    this.cached ??= Buffer.concat(this.chunks).toString('utf8');
    return this.cached;
  }

  finish(): void {
    this.ended = true;
    for (const wake of [...this.waiters]) wake();
  }

  waitFor(pattern: RegExp, timeoutMs: number): Promise<boolean> {
    // search() ignores the g and y flags and lastIndex, so a caller's regex state cannot interfere.
    const matches = (): boolean => this.text().search(pattern) >= 0;
    if (matches()) return Promise.resolve(true);
    if (this.ended) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (result: boolean): void => {
        clearTimeout(timer);
        this.waiters.delete(wake);
        resolve(result);
      };
      const wake = (): void => {
        if (matches()) done(true);
        else if (this.ended) done(false);
      };
      const timer = setTimeout(() => done(false), clampDelay(timeoutMs));
      this.waiters.add(wake);
    });
  }
}
