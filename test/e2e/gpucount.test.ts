/**
 * The built exporter on the fake libnvidia-ml (FAKE_NVML_SCENARIO): a node that should have 8 GPUs
 * (AUTOPILOT_EXPECTED_GPUS=8) is not PASS when NVML sees 7, or cannot load at all, although every
 * other check passes or says SKIP; /metrics carries both counts for the alert. jest's global setup
 * builds the fake.
 */

import { afterEach, describe, expect, test } from '@jest/globals';
import type { ExporterPorts } from '../fakes/exporter-ports.js';
import {
  buildExporter,
  FAKE_NVML,
  killAllExporters,
  startExporter as startBuiltExporter,
} from '../fakes/exporter-process.js';
import { waitFor } from '../fakes/wait-for.js';

const CHECKS = ['remapped', 'gpupower', 'gpucount'];

afterEach(killAllExporters);

buildExporter();

async function startExporter(env: Record<string, string>): Promise<ExporterPorts> {
  const { ports } = await startBuiltExporter({
    env: {
      NODE_NAME: 'gpu-node',
      AUTOPILOT_NVML_LIBRARY: FAKE_NVML,
      AUTOPILOT_KUBERNETES: 'off',
      PERIODIC_CHECKS: CHECKS.join(','),
      ...env,
    },
  });
  return ports;
}

interface Results {
  health: { state: string; reasons: string[] };
  results: { check: string; verdict: string; reason: string }[];
}

/** The results once the start-up round has run every check. */
function startupRound(api: number): Promise<Results> {
  return waitFor(
    'the start-up round',
    async () => {
      const results = (await (
        await fetch(`http://127.0.0.1:${api}/results?format=json`)
      ).json()) as Results;
      return CHECKS.every((c) => results.results.some((r) => r.check === c)) ? results : undefined;
    },
    60_000,
    50,
  );
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
