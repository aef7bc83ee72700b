/**
 * Short versions of the load and soak benchmarks (bench/load.ts, bench/soak.ts) that can fail:
 * the built exporter with the fakes, the same traffic, and assertions on correctness only (every
 * answer complete, no fd or process left behind). Latency is the benchmarks' to report, not
 * asserted here.
 */

import { execFileSync } from 'node:child_process';
import { afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import {
  FAKE_PING_ENV,
  LOOPBACK_PEERS,
  ROOT,
  startExporter,
  startupRound,
  type ExporterProcess,
} from '../../bench/lib/exporter-process.js';
import {
  FD_TOLERANCE,
  LOAD_CHECKS,
  loadEndpoints,
  runOpenLoop,
  runSoak,
  SOAK_CHECKS,
} from '../../bench/lib/traffic.js';

/** Not a timing bound: only what turns a hung request into a failure instead of a stuck test. */
const HANG_MS = 20_000;

const running: ExporterProcess[] = [];

beforeAll(() => {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
}, 60_000);

afterEach(async () => {
  for (const exporter of running.splice(0)) await exporter.stop(1_000);
});

async function exporterWith(checks: readonly string[]): Promise<ExporterProcess> {
  const exporter = await startExporter({
    PERIODIC_CHECKS: checks.join(','),
    AUTOPILOT_PEERS: LOOPBACK_PEERS.join(','),
    ...FAKE_PING_ENV,
  });
  running.push(exporter);
  await startupRound(exporter.ports.api, checks);
  return exporter;
}

describe('load and soak, short', () => {
  test('load: 100 requests/s for 3 s on /metrics and /status, every answer whole and right', async () => {
    const exporter = await exporterWith(LOAD_CHECKS);
    const report = await runOpenLoop({
      rate: 100,
      durationS: 3,
      maxSockets: 8,
      timeoutMs: HANG_MS,
      endpoints: loadEndpoints(exporter.ports),
    });
    const failures = report.endpoints.flatMap((e) =>
      [...e.errorKinds].map(([kind, n]) => `${e.name}: ${kind} (×${n})`),
    );
    expect(failures).toEqual([]);
    expect(report.answered).toBe(300);
    expect(report.endpoints.map((e) => [e.name, e.requests])).toEqual([
      ['/metrics', 150],
      ['/status maxage=1h', 120],
      ['/status light checks', 30],
    ]);
    expect(exporter.problems).toEqual([]);
  }, 40_000);

  test('soak: 300 check runs, half of them spawning, leave no fd or process behind', async () => {
    const exporter = await exporterWith(SOAK_CHECKS);
    const report = await runSoak(exporter, {
      runs: 300,
      warmupRuns: 40,
      sampleEvery: 50,
      timeoutMs: HANG_MS,
      settleMs: 5_000,
    });
    expect([...report.errorKinds]).toEqual([]);
    expect(report.runs).toBeGreaterThanOrEqual(300);
    // Every check of both lanes ran, ping and dcgm (the subprocesses) included, and none ERROR.
    expect([...report.byCheck.keys()].sort()).toEqual([...SOAK_CHECKS].sort());
    expect([...report.verdicts.keys()]).toEqual(['PASS']);
    expect(report.end.fds).toBeLessThanOrEqual(report.baseline.fds + FD_TOLERANCE);
    expect(report.end.descendants).toEqual(report.baseline.descendants);
    expect(exporter.problems).toEqual([]);
  }, 40_000);
});
