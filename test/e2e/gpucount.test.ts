/**
 * The built exporter on the fake libnvidia-ml (FAKE_NVML_SCENARIO): a node that should have 8 GPUs
 * (AUTOPILOT_EXPECTED_GPUS=8) is not PASS when NVML sees 7, or cannot load at all, although every
 * other check passes or says SKIP; /metrics carries both counts for the alert. jest's global setup
 * builds the fake.
 */

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from '@jest/globals';
import { waitForListening, type ExporterPorts } from '../fakes/exporter-ports.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
const FAKE_NVML = join(ROOT, 'build', 'fakes', 'nvml', 'libnvidia-ml.so.1');
const CHECKS = ['remapped', 'gpupower', 'gpucount'];

const running: ChildProcess[] = [];

afterEach(() => {
  for (const child of running.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
});

execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });

async function startExporter(env: Record<string, string>): Promise<ExporterPorts> {
  const child = spawn(process.execPath, [MAIN, '--port', '0', '--w', '1h'], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      NODE_NAME: 'gpu-node',
      AUTOPILOT_METRICS_PORT: '0',
      AUTOPILOT_READINESS_PORT: '0',
      AUTOPILOT_LISTEN_ADDRESS: '127.0.0.1',
      AUTOPILOT_NVML_LIBRARY: FAKE_NVML,
      AUTOPILOT_KUBERNETES: 'off',
      PERIODIC_CHECKS: CHECKS.join(','),
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  running.push(child);
  const ports: ExporterPorts = { api: 0, metrics: 0, readiness: 0 };
  await waitForListening(child, ports);
  return ports;
}

interface Results {
  health: { state: string; reasons: string[] };
  results: { check: string; verdict: string; reason: string }[];
}

/** The results once the start-up round has run every check. */
async function startupRound(api: number): Promise<Results> {
  for (let i = 0; i < 200; i++) {
    const results = (await (
      await fetch(`http://127.0.0.1:${api}/results?format=json`)
    ).json()) as Results;
    if (CHECKS.every((c) => results.results.some((r) => r.check === c))) return results;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('the start-up round did not finish');
}

const verdictOf = (results: Results, check: string): string | undefined =>
  results.results.find((r) => r.check === check)?.verdict;

describe('gpucount end to end on the fake NVML', () => {
  test('8 GPUs expected, NVML sees 7: the node is EVICT and says 8 expected, 7 seen', async () => {
    const ports = await startExporter({
      AUTOPILOT_EXPECTED_GPUS: '8',
      FAKE_NVML_SCENARIO: 'gpus=7',
    });
    const results = await startupRound(ports.api);
    expect(verdictOf(results, 'remapped')).toBe('PASS');
    expect(verdictOf(results, 'gpucount')).toBe('FAIL');
    expect(results.health.state).toBe('EVICT');
    expect(results.health.reasons).toEqual([
      'gpucount: expected 8 GPUs (AUTOPILOT_EXPECTED_GPUS), NVML sees 7',
    ]);
    const metrics = await (await fetch(`http://127.0.0.1:${ports.metrics}/metrics`)).text();
    expect(metrics).toContain('autopilot_gpus_expected{check="gpucount"} 8\n');
    expect(metrics).toContain('autopilot_gpus_visible{check="gpucount"} 7\n');
  });

  test('8 GPUs expected, NVML cannot initialise: the node is WARN, not PASS', async () => {
    const ports = await startExporter({
      AUTOPILOT_EXPECTED_GPUS: '8',
      FAKE_NVML_SCENARIO: 'initfail=9',
    });
    const results = await startupRound(ports.api);
    expect(verdictOf(results, 'remapped')).toBe('SKIP');
    expect(verdictOf(results, 'gpucount')).toBe('FAIL');
    expect(results.health.state).toBe('WARN');
    expect(results.health.reasons).toEqual([
      `gpucount: expected 8 GPUs (AUTOPILOT_EXPECTED_GPUS), NVML cannot load: nvmlInit_v2: Driver Not Loaded (9)`,
    ]);
  });

  test('8 GPUs expected and 8 visible: the node is PASS', async () => {
    const ports = await startExporter({ AUTOPILOT_EXPECTED_GPUS: '8' });
    const results = await startupRound(ports.api);
    expect(verdictOf(results, 'gpucount')).toBe('PASS');
    expect(results.health.state).toBe('PASS');
  });
});
