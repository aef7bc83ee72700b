/**
 * Load on the real exporter process: an open loop of requests on /metrics and /status at a fixed
 * rate (500 per second for 60 s by default), standalone, the fake NVML with 8 GPUs, three loopback
 * peers. Prints the rate achieved, errors and latency percentiles per endpoint, and the process's
 * RSS and CPU; exits 1 if any request failed or answered wrong. Timing figures are reported, never
 * asserted.
 *
 *   node dist/bench/load.js [--rate 500] [--duration 60] [--warmup 2] [--sockets 8] [--fake-ping]
 *
 * LOAD_RATE and LOAD_DURATION_S set the rate and duration too (the flags win).
 */

import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import {
  buildFakes,
  FAKE_PING_ENV,
  LOOPBACK_PEERS,
  NODE_FLAGS,
  procSample,
  startExporter,
  startupRound,
} from './lib/exporter-process.js';
import {
  checkRunsTotal,
  LOAD_CHECKS,
  loadEndpoints,
  runOpenLoop,
  type LoadReport,
} from './lib/traffic.js';
import { against, row } from './lib/report.js';
import { percentile } from './lib/measure.js';

const { values: flags } = parseArgs({
  options: {
    rate: { type: 'string', default: process.env.LOAD_RATE ?? '500' },
    duration: { type: 'string', default: process.env.LOAD_DURATION_S ?? '60' },
    warmup: { type: 'string', default: '2' },
    sockets: { type: 'string', default: '8' },
    timeout: { type: 'string', default: '10000' },
    'fake-ping': { type: 'boolean', default: false },
  },
});

function positive(name: string, value: string, allowZero = false): number {
  const number = Number(value);
  if (!Number.isFinite(number) || number < 0 || (number === 0 && !allowZero)) {
    console.error(`load: --${name} must be a positive number, got ${JSON.stringify(value)}`);
    process.exit(2);
  }
  return number;
}

const RATE = positive('rate', flags.rate);
const DURATION_S = positive('duration', flags.duration);
const WARMUP_S = positive('warmup', flags.warmup, true);
const SOCKETS = positive('sockets', flags.sockets);
const TIMEOUT_MS = positive('timeout', flags.timeout);

/** The real ping when there is one; the fake (a subprocess all the same) otherwise or on request. */
function realPing(): boolean {
  if (flags['fake-ping']) return false;
  try {
    execFileSync('ping', ['-n', '-c', '1', '-W', '1', '127.0.0.1'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const ms = (value: number): string => value.toFixed(2).padStart(9);

function latencyTable(report: LoadReport): void {
  const header = ['endpoint'.padEnd(22), 'requests'.padStart(9), 'errors'.padStart(7)];
  const columns = ['p50 ms', 'p90 ms', 'p99 ms', 'max ms'].map((c) => c.padStart(9));
  console.log(`  ${[...header, ...columns].join(' ')}`);
  const all = report.endpoints.flatMap((e) => e.latenciesMs);
  const lines = [
    ...report.endpoints.map((e) => ({ ...e, label: e.name })),
    {
      label: 'all',
      requests: report.scheduled,
      errors: report.errors,
      latenciesMs: all,
    },
  ];
  for (const line of lines) {
    const p = (q: number): string => ms(percentile(line.latenciesMs, q));
    console.log(
      `  ${line.label.padEnd(22)} ${String(line.requests).padStart(9)} ${String(line.errors).padStart(7)} ${p(50)} ${p(90)} ${p(99)} ${ms(Math.max(...line.latenciesMs))}`,
    );
  }
}

async function main(): Promise<void> {
  buildFakes(true);
  const real = realPing();
  const exporter = await startExporter({
    PERIODIC_CHECKS: LOAD_CHECKS.join(','),
    AUTOPILOT_PEERS: LOOPBACK_PEERS.join(','),
    ...(real ? {} : FAKE_PING_ENV),
  });
  try {
    await startupRound(exporter.ports.api, LOAD_CHECKS);
    const endpoints = loadEndpoints(exporter.ports);
    const options = { rate: RATE, maxSockets: SOCKETS, timeoutMs: TIMEOUT_MS, endpoints };
    // Not measured: the first requests compile the request paths.
    if (WARMUP_S > 0) await runOpenLoop({ ...options, durationS: WARMUP_S });
    const runsBefore = await checkRunsTotal(exporter.ports.metrics);
    const before = procSample(exporter.pid);
    const report = await runOpenLoop({ ...options, durationS: DURATION_S });
    const after = procSample(exporter.pid);
    const runsDuring = (await checkRunsTotal(exporter.ports.metrics)) - runsBefore;

    const title = `Autopilot load benchmark: open loop, ${RATE} requests/s for ${DURATION_S} s`;
    console.log(title);
    console.log('='.repeat(title.length));
    row(
      'exporter',
      '8 GPUs (fake NVML)',
      `standalone, ${LOOPBACK_PEERS.length} peers (${real ? 'real' : 'fake'} ping), PERIODIC_CHECKS=${LOAD_CHECKS.join(',')}, node ${NODE_FLAGS.join(' ')}`,
    );
    row(
      'client',
      `${SOCKETS} sockets each`,
      `keep-alive, one pool per endpoint, timeout ${TIMEOUT_MS} ms, ${WARMUP_S} s warm-up not counted`,
    );
    const weights = endpoints.reduce((sum, e) => sum + e.weight, 0);
    for (const endpoint of endpoints) {
      row(`  ${endpoint.name}`, `${endpoint.weight} in ${weights}`, endpoint.path);
    }
    row('rate asked / achieved', `${RATE} / ${report.achievedRate.toFixed(1)}`, 'answers per s');
    row(
      'requests / answered / errors',
      `${report.scheduled} / ${report.answered} / ${report.errors}`,
      report.errors === 0 ? '' : 'ERRORS',
    );
    row(
      'client send lag, max',
      `${report.maxSendLagMs.toFixed(1)} ms`,
      'how late the client sent a request',
    );
    row('check runs during the load', String(runsDuring), 'autopilot_check_runs_total');
    console.log('');
    console.log('  latency from the scheduled send to the last byte of the answer:');
    latencyTable(report);
    console.log('');
    const metrics = report.endpoints[0];
    if (metrics !== undefined) {
      const p99 = percentile(metrics.latenciesMs, 99);
      row('/metrics p99 while checks run', `${p99.toFixed(2)} ms`, against(p99, 10, ' ms'));
    }
    row('exporter RSS before', `${before.rssMB.toFixed(1)} MB`, against(before.rssMB, 100, ' MB'));
    row('exporter RSS after', `${after.rssMB.toFixed(1)} MB`, against(after.rssMB, 100, ' MB'));
    const cpu = after.cpuSeconds - before.cpuSeconds;
    row(
      'exporter CPU during the load',
      `${cpu.toFixed(1)} s`,
      `${((100 * cpu) / report.elapsedS).toFixed(0)} % of one core`,
    );
    row('exporter fds before / after', `${before.fds} / ${after.fds}`);
    row('exporter warn/error log lines', String(exporter.problems.length));
    for (const endpoint of report.endpoints) {
      for (const [kind, count] of endpoint.errorKinds) {
        console.log(`  error on ${endpoint.name}: ${kind} (×${count})`);
      }
    }
    for (const line of exporter.problems.slice(0, 10)) console.log(`  exporter: ${line}`);
    if (report.errors > 0) process.exitCode = 1;
  } finally {
    await exporter.stop();
  }
}

await main();
