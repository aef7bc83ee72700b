/**
 * Soak of the real exporter process: 10,000 check runs through its API with the fakes, NVML checks
 * in one lane and checks that spawn (ping once per peer, dcgm) in another, side by side. Samples
 * the process from /proc (RSS, open fds, descendant processes) and prints the samples and a verdict:
 * RSS growth from the first to the last tenth of the samples, fds and children at the end against
 * the baseline taken idle after the warm-up. Exits 1 on leaked fds or processes and on failed
 * requests or ERROR results; RSS growth is reported against the target, not asserted.
 *
 *   node dist/bench/soak.js [--runs 10000] [--warmup 500] [--sample-every 100] [--print-every 1000]
 *
 * SOAK_RUNS sets the number of runs too (the flag wins).
 */

import { parseArgs } from 'node:util';
import {
  buildFakes,
  FAKE_PING_ENV,
  LOOPBACK_PEERS,
  NODE_FLAGS,
  startExporter,
  startupRound,
  type ProcSample,
} from './lib/exporter-process.js';
import {
  checkRunsTotal,
  FD_TOLERANCE,
  runSoak,
  SOAK_CHECKS,
  SOAK_LANES,
  type SoakSample,
} from './lib/traffic.js';
import { against, row } from './lib/report.js';

const { values: flags } = parseArgs({
  options: {
    runs: { type: 'string', default: process.env.SOAK_RUNS ?? '10000' },
    warmup: { type: 'string', default: '500' },
    'sample-every': { type: 'string', default: '100' },
    'print-every': { type: 'string', default: '1000' },
  },
});

function count(name: string, value: string): number {
  const number = Number(value);
  if (!Number.isInteger(number) || number < 1) {
    console.error(`soak: --${name} must be a whole number above 0, got ${JSON.stringify(value)}`);
    process.exit(2);
  }
  return number;
}

const RUNS = count('runs', flags.runs);
const WARMUP = count('warmup', flags.warmup);
const SAMPLE_EVERY = count('sample-every', flags['sample-every']);
const PRINT_EVERY = count('print-every', flags['print-every']);

function mean(values: readonly number[]): number {
  return values.reduce((sum, v) => sum + v, 0) / values.length;
}

function children(sample: ProcSample): string {
  return sample.descendants.map((d) => `${d.pid} ${d.command} (${d.state})`).join(', ') || 'none';
}

function sampleTable(samples: readonly SoakSample[]): void {
  console.log(
    `  ${['runs', 'seconds', 'RSS MB', 'fds', 'children'].map((c) => c.padStart(9)).join(' ')}`,
  );
  let nextPrinted = 0;
  for (const [i, s] of samples.entries()) {
    // The first sample, one every PRINT_EVERY runs, and the last.
    if (s.runs < nextPrinted && i !== samples.length - 1) continue;
    while (nextPrinted <= s.runs) nextPrinted += PRINT_EVERY;
    const cells = [s.runs, s.seconds.toFixed(1), s.rssMB.toFixed(1), s.fds, s.children];
    console.log(`  ${cells.map((c) => String(c).padStart(9)).join(' ')}`);
  }
}

async function main(): Promise<void> {
  buildFakes(false);
  const exporter = await startExporter({
    PERIODIC_CHECKS: SOAK_CHECKS.join(','),
    AUTOPILOT_PEERS: LOOPBACK_PEERS.join(','),
    ...FAKE_PING_ENV,
  });
  try {
    await startupRound(exporter.ports.api, SOAK_CHECKS);
    const runsBefore = await checkRunsTotal(exporter.ports.metrics);
    const report = await runSoak(exporter, {
      runs: RUNS,
      warmupRuns: WARMUP,
      sampleEvery: SAMPLE_EVERY,
      timeoutMs: 60_000,
      settleMs: 10_000,
    });
    const counted = (await checkRunsTotal(exporter.ports.metrics)) - runsBefore;

    const title = `Autopilot soak benchmark: ${RUNS} check runs through the API`;
    console.log(title);
    console.log('='.repeat(title.length));
    row(
      'exporter',
      '8 GPUs (fake NVML)',
      `standalone, ${LOOPBACK_PEERS.length} peers (fake ping), fake dcgmi, node ${NODE_FLAGS.join(' ')}`,
    );
    for (const lane of SOAK_LANES) {
      row(`  lane ${lane.name}`, lane.checks.join(','), 'one /status?format=json after another');
    }
    row('warm-up runs (not measured)', String(WARMUP));
    row(
      'runs measured',
      String(report.runs),
      `${report.seconds.toFixed(1)} s, ${(report.runs / report.seconds).toFixed(0)} runs/s`,
    );
    row(
      'runs counted by the exporter',
      String(counted),
      'autopilot_check_runs_total, warm-up included',
    );
    row('requests / errors', `${report.requests} / ${report.errors}`);
    row('runs by check', [...report.byCheck].map(([check, n]) => `${check} ${n}`).join(', '));
    row('verdicts', [...report.verdicts].map(([verdict, n]) => `${verdict} ${n}`).join(', '));
    console.log('');
    sampleTable(report.samples);
    console.log('');

    const measured = report.samples.slice(1);
    const tenth = Math.max(1, Math.floor(measured.length / 10));
    const first = mean(measured.slice(0, tenth).map((s) => s.rssMB));
    const last = mean(measured.slice(-tenth).map((s) => s.rssMB));
    const peak = Math.max(...report.samples.map((s) => s.rssMB));
    row(
      `RSS, first / last tenth (${tenth} samples)`,
      `${first.toFixed(1)} / ${last.toFixed(1)} MB`,
      `growth ${(last - first).toFixed(1)} MB (${((100 * (last - first)) / first).toFixed(1)} %)`,
    );
    row('RSS peak', `${peak.toFixed(1)} MB`, against(peak, 100, ' MB'));
    const fdsDuring = report.samples.map((s) => s.fds);
    row('fds during the runs, min / max', `${Math.min(...fdsDuring)} / ${Math.max(...fdsDuring)}`);
    const fdGrowth = report.end.fds - report.baseline.fds;
    row(
      'fds idle, baseline / end',
      `${report.baseline.fds} / ${report.end.fds}`,
      fdGrowth > FD_TOLERANCE ? `LEAK: ${fdGrowth} more` : 'no leak',
    );
    const childGrowth = report.end.descendants.length - report.baseline.descendants.length;
    row(
      'child processes idle, baseline / end',
      `${report.baseline.descendants.length} / ${report.end.descendants.length}`,
      childGrowth > 0 ? `LEAK: ${children(report.end)}` : 'no leak',
    );
    row('exporter warn/error log lines', String(exporter.problems.length));
    for (const [kind, n] of report.errorKinds) console.log(`  error: ${kind} (×${n})`);
    for (const line of exporter.problems.slice(0, 10)) console.log(`  exporter: ${line}`);
    if (fdGrowth > FD_TOLERANCE || childGrowth > 0 || report.errors > 0) process.exitCode = 1;
  } finally {
    await exporter.stop();
  }
}

await main();
