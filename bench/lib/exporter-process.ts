/**
 * The real exporter as a child process with the fakes (NVML, CUDA probe, dcgmi, optionally ping),
 * and what /proc says about it. Shared by bench/load.ts, bench/soak.ts and the short versions in
 * test/e2e/load-soak.test.ts, which run from dist/bench/lib and bench/lib respectively.
 */

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { cpuSeconds, rssMB, sleep } from './measure.js';

/** The repository root: this file runs from bench/lib (jest) and from dist/bench/lib (benches). */
function findRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${start}`);
  }
}

export const ROOT = findRoot(import.meta.dirname);
export const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
export const FAKE_NVML = join(ROOT, 'build', 'fakes', 'nvml', 'libnvidia-ml.so.1');
export const FAKE_PROBE = join(ROOT, 'build', 'fakes', 'cuda', 'libautopilot-probe.so');
export const FAKE_DCGMI = join(ROOT, 'test', 'fakes', 'bin', 'fake-dcgmi');
export const FAKE_PING = join(ROOT, 'test', 'fakes', 'bin', 'fake-ping');
const PING_REPLY = join(ROOT, 'test', 'fixtures', 'ping', 'iputils-20221126', 'reply.txt');

/**
 * The flags and thread pool `npm start` gives node; keep them in step with package.json and
 * deploy/image/autopilot. --optimize-for-size: the live heap during 1,000-peer rounds is about
 * 20 MB, but V8 let old space grow to 40 MB before collecting (RSS 103–125 MB); with it, 79–85 MB
 * (bench/README.md, issue 21).
 */
export const NODE_FLAGS = ['--max-semi-space-size=2', '--optimize-for-size'];
const THREADPOOL = '16';

/** Peers for AUTOPILOT_PEERS: Linux answers for all of 127.0.0.0/8, so nothing leaves the machine. */
export const LOOPBACK_PEERS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];

/** The fake ping: prints a captured 3/3-replies output, still a real subprocess (sh, then cat). */
export const FAKE_PING_ENV: Readonly<Record<string, string>> = {
  AUTOPILOT_PING_COMMAND: FAKE_PING,
  FAKE_PING_OUTPUT: PING_REPLY,
};

/**
 * Builds the C fakes the exporter loads, as jest's global setup does for the tests; make rebuilds
 * only what changed. `npm run prebench` builds the NVML fake but not the CUDA probe, whose host
 * code needs nvcc even against the fake runtime: only the load benchmark (pciebw) asks for it.
 */
export function buildFakes(withCudaProbe: boolean): void {
  const goals: [string, string[]][] = [[join(ROOT, 'test', 'fakes', 'native', 'nvml'), []]];
  if (withCudaProbe) goals.push([join(ROOT, 'cuda'), ['fake']]);
  for (const [directory, targets] of goals) {
    try {
      execFileSync('make', ['-s', '-C', directory, ...targets], { stdio: 'inherit' });
    } catch {
      throw new Error(
        `cannot build the fakes: make -C ${directory} ${targets.join(' ')} failed${withCudaProbe ? ' (the CUDA probe needs nvcc on PATH)' : ''}`,
      );
    }
  }
}

export interface Ports {
  readonly api: number;
  readonly metrics: number;
  readonly readiness: number;
}

export interface ExporterProcess {
  readonly pid: number;
  readonly ports: Ports;
  /** Log lines at level warn or error, and any stderr line that is not a JSON log line. */
  readonly problems: readonly string[];
  /** SIGTERM, then SIGKILL after graceMs; resolves when the process has exited. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Spawns `node dist/exporter/main.js --port 0 --w 1h` standalone on 127.0.0.1 with the fake NVML
 * (8 GPUs by default), the fake CUDA probe and the fake dcgmi, and resolves with the ports from its
 * `exporter listening` line. The periodic timer is an hour, so only the start-up round and the
 * caller's requests run checks. `env` adds to and overrides those settings.
 */
export async function startExporter(
  env: Readonly<Record<string, string>>,
  listenWithinMs = 15_000,
): Promise<ExporterProcess> {
  const child = spawn(process.execPath, [...NODE_FLAGS, MAIN, '--port', '0', '--w', '1h'], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/root',
      UV_THREADPOOL_SIZE: THREADPOOL,
      NODE_NAME: 'bench-node',
      AUTOPILOT_KUBERNETES: 'off',
      AUTOPILOT_METRICS_PORT: '0',
      AUTOPILOT_READINESS_PORT: '0',
      AUTOPILOT_LISTEN_ADDRESS: '127.0.0.1',
      AUTOPILOT_NVML_LIBRARY: FAKE_NVML,
      AUTOPILOT_CUDA_PROBE_LIBRARY: FAKE_PROBE,
      AUTOPILOT_DCGMI_COMMAND: FAKE_DCGMI,
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const problems: string[] = [];
  let tail = '';
  let onListening: (ports: Ports) => void = () => undefined;
  const listening = new Promise<Ports>((resolve) => (onListening = resolve));
  // stderr is read to the end: a pipe nobody drains would stall the exporter at 64 KiB of logs.
  child.stderr.on('data', (chunk: Buffer) => {
    tail += chunk.toString();
    const lines = tail.split('\n');
    tail = lines.pop() ?? '';
    for (const line of lines) {
      if (line === '') continue;
      let entry: { level?: string; msg?: string } & Partial<Ports>;
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        problems.push(line);
        continue;
      }
      if (entry.level === 'warn' || entry.level === 'error') problems.push(line);
      if (entry.msg === 'exporter listening') {
        onListening({
          api: entry.api ?? 0,
          metrics: entry.metrics ?? 0,
          readiness: entry.readiness ?? 0,
        });
      }
    }
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (graceMs = 5_000): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`the exporter did not listen: ${problems.join('\n')}`)),
      listenWithinMs,
    );
  });
  const early = exited.then(() => {
    throw new Error(`the exporter exited (${child.exitCode}): ${problems.join('\n')}`);
  });
  try {
    const ports = await Promise.race([listening, deadline, early]);
    return { pid: pidOf(child), ports, problems, stop };
  } catch (error) {
    await stop(0);
    throw error;
  } finally {
    clearTimeout(timer);
    early.catch(() => undefined);
  }
}

function pidOf(child: ChildProcess): number {
  if (child.pid === undefined) throw new Error('the exporter process has no pid');
  return child.pid;
}

/** Waits until /results holds a result of every named check: the start-up round is over. */
export async function startupRound(
  api: number,
  checks: readonly string[],
  withinMs = 30_000,
): Promise<void> {
  const started = Date.now();
  let seen: string[] = [];
  while (Date.now() - started < withinMs) {
    const body = (await (await fetch(`http://127.0.0.1:${api}/results?format=json`)).json()) as {
      results: { check: string }[];
    };
    seen = body.results.map((r) => r.check);
    if (checks.every((c) => seen.includes(c))) return;
    await sleep(50);
  }
  throw new Error(`the start-up round did not finish: results for ${seen.join(',')} only`);
}

/** What /proc says about a process at one moment. */
export interface ProcSample {
  readonly rssMB: number;
  /** utime + stime of the process and of its reaped children (the subprocesses of checks). */
  readonly cpuSeconds: number;
  readonly fds: number;
  /** Every descendant, zombies included: an unreaped child is a leak too. */
  readonly descendants: readonly Descendant[];
}

export interface Descendant {
  readonly pid: number;
  readonly state: string;
  readonly command: string;
}

export function procSample(pid: number): ProcSample {
  return {
    rssMB: rssMB(pid),
    cpuSeconds: cpuSeconds(pid),
    fds: readdirSync(`/proc/${pid}/fd`).length,
    descendants: descendantsOf(pid),
  };
}

interface Stat {
  readonly pid: number;
  readonly command: string;
  readonly state: string;
  readonly ppid: number;
}

function readStat(pid: number | string): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined; // ended between the listing and the read
  }
  // The command is in parentheses and may itself contain spaces and parentheses.
  const close = text.lastIndexOf(')');
  const rest = text.slice(close + 2).split(' ');
  return {
    pid: Number(pid),
    command: text.slice(text.indexOf('(') + 1, close),
    state: rest[0] ?? '?',
    ppid: Number(rest[1]),
  };
}

function descendantsOf(root: number): Descendant[] {
  const byParent = new Map<number, Stat[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readStat(name);
    if (stat === undefined) continue;
    const siblings = byParent.get(stat.ppid) ?? [];
    siblings.push(stat);
    byParent.set(stat.ppid, siblings);
  }
  const found: Descendant[] = [];
  const queue = [root];
  for (let pid = queue.shift(); pid !== undefined; pid = queue.shift()) {
    for (const child of byParent.get(pid) ?? []) {
      found.push({ pid: child.pid, state: child.state, command: child.command });
      queue.push(child.pid);
    }
  }
  return found;
}
