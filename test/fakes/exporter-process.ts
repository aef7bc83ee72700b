/**
 * The built exporter (dist/exporter/main.js) as a child process, for the end-to-end tests. Every
 * listener takes port 0 unless told otherwise, and the ports are read back from its `exporter
 * listening` line: ports picked by the test and handed over later can be taken in between (the
 * kernel may hand a just-closed ephemeral port to the next bind(0)).
 */

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { waitForListening, type ExporterPorts } from './exporter-ports.js';

const ROOT = join(import.meta.dirname, '..', '..');
export const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
export const FAKE_NVML = join(ROOT, 'build', 'fakes', 'nvml', 'libnvidia-ml.so.1');
export const FAKE_PROBE = join(ROOT, 'build', 'fakes', 'cuda', 'libautopilot-probe.so');

/** Compiles the exporter, so that a file run alone tests the current source. */
export function buildExporter(): void {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
}

export interface StartedExporter {
  readonly child: ChildProcess;
  readonly ports: ExporterPorts;
  /** All of stderr so far, for the test's diagnostics. */
  readonly stderr: () => string;
}

export interface ExporterOptions {
  /** The node's settings; PATH and 127.0.0.1 as the listen address are added. */
  readonly env: Readonly<Record<string, string>>;
  /** --w; an hour by default, so that only the start-up round runs. */
  readonly every?: string;
  /** A fixed port per listener (a restart that Prometheus must find again); 0 for the others. */
  readonly ports?: Partial<ExporterPorts>;
}

/** Every exporter this file started, for stopAllExporters. */
const started: ChildProcess[] = [];

/** Starts the exporter and resolves once it listens; an exporter that fails to is killed. */
export async function startExporter(options: ExporterOptions): Promise<StartedExporter> {
  const fixed = options.ports ?? {};
  const child = spawn(
    process.execPath,
    [MAIN, '--port', String(fixed.api ?? 0), '--w', options.every ?? '1h'],
    {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        AUTOPILOT_LISTEN_ADDRESS: '127.0.0.1',
        AUTOPILOT_METRICS_PORT: String(fixed.metrics ?? 0),
        AUTOPILOT_READINESS_PORT: String(fixed.readiness ?? 0),
        ...options.env,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  started.push(child);
  const ports: ExporterPorts = { api: 0, metrics: 0, readiness: 0 };
  let stderr = '';
  try {
    await waitForListening(child, ports, (all) => (stderr = all));
  } catch (error) {
    if (child.exitCode === null) child.kill('SIGKILL');
    throw error;
  }
  return { child, ports, stderr: () => stderr };
}

/** SIGTERM, and resolves once it has exited; nothing to do for one that has already. */
export async function stopExporter(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

/** SIGKILLs every exporter this file started that still runs (afterEach/afterAll). */
export function killAllExporters(): void {
  for (const child of started.splice(0))
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}
