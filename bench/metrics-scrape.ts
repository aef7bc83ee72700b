/**
 * Benchmark of the /metrics endpoint under a synthetic load: 8 GPUs × every GPU check, and a ping
 * check with 1,000 peers. Nothing is executed on the machine: the store is filled with made-up
 * runs, the real registry and Koa app serve them over loopback HTTP, and the report compares the
 * figures with the design targets. No assertions: it prints and exits 0.
 *
 * Run with `npm run bench` (compiles with tsconfig.build.json, then runs dist/bench/metrics-scrape.js).
 */

import { Agent, createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus } from 'node:os';
import {
  constants as perfConstants,
  performance,
  PerformanceObserver,
  type NodeGCPerformanceDetail,
  type PerformanceEntry,
} from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createMetricsApp } from '../exporter/api/side-apps.js';
import type {
  Check,
  CheckOutcome,
  CheckParams,
  CheckRun,
  DeviceKind,
  DeviceResult,
  Sample,
  Verdict,
} from '../exporter/checks/check.js';
import { summariseOutcome } from '../exporter/checks/check.js';
import { pingSamples } from '../exporter/checks/ping.js';
import { silentLogger } from '../exporter/log.js';
import { cachedExposition, createMetricsRegistry } from '../exporter/metrics/registry.js';
import { createResultStore, type ResultStore } from '../exporter/store.js';

// ---------------------------------------------------------------------------------------------
// Load shape and design targets

const GPU_COUNT = 8;
const PEER_COUNT = 1_000;
/** Peers whose synthetic ping fails (every 250th: 4 of 1,000). */
const FAILING_PEER_EVERY = 250;
const WARMUP_SCRAPES = 50;
const MEASURED_SCRAPES = 500;
const PHASE2_RECORDS = 10_000;
const PHASE2_SCRAPE_EVERY = 100;
/** Same as the exporter's default (AUTOPILOT_HISTORY_SIZE). */
const HISTORY_SIZE = 20;
/**
 * Runs recorded per check before measuring: the counters are not zero and every history is already
 * at its bound, as in an exporter that has run for a while, so phase 2 shows growth, not filling.
 */
const SEED_RUNS_PER_CHECK = HISTORY_SIZE;
const PHASE2_CHECKPOINT_EVERY = 2_000;

const TARGET_SERIES = 2_000;
const TARGET_MEDIAN_MS = 5;
const TARGET_P99_MS = 10;
const TARGET_RSS_MB = 100;

/** GPU checks as Autopilot names them; `health` is the label of autopilot_health_checks. */
const GPU_CHECKS: readonly { readonly name: string; readonly compatHealth: string }[] = [
  { name: 'pciebw', compatHealth: 'pciebw' },
  { name: 'remapped', compatHealth: 'remapped' },
  { name: 'gpupower', compatHealth: 'power-slowdown' },
  { name: 'ecc', compatHealth: 'ecc' },
  { name: 'xid', compatHealth: 'xid' },
  { name: 'dcgm', compatHealth: 'dcgm' },
  { name: 'gpumem', compatHealth: 'gpumem' },
];
/** The GPU that WARNs in every GPU check. */
const WARN_GPU = 5;

// ---------------------------------------------------------------------------------------------
// Synthetic checks and runs

function syntheticCheck(name: string, compatHealth: string, deviceKind: DeviceKind): Check {
  return {
    name,
    summary: `synthetic ${name} check for the benchmark`,
    banner: `${name} test`,
    compatHealth,
    deviceKind,
    usesGpu: deviceKind === 'gpu',
    exclusive: false,
    timeoutMs: 60_000,
    parseParams: (): CheckParams => ({}),
    run: (): Promise<CheckOutcome> => Promise.reject(new Error('never run by the benchmark')),
    formatText: (run: CheckRun) => `[${name.toUpperCase()}] ${run.verdict}: ${run.reason}\n`,
  };
}

function gpuDevices(check: string, seq: number): DeviceResult[] {
  const devices: DeviceResult[] = [];
  for (let gpu = 0; gpu < GPU_COUNT; gpu++) {
    const warn = gpu === WARN_GPU;
    const verdict: Verdict = warn ? 'WARN' : 'PASS';
    if (check === 'pciebw') {
      const bandwidth = warn ? 9.8 : 55.1 + (seq % 3) * 0.1;
      devices.push({
        id: String(gpu),
        verdict,
        reason: `host-to-device ${bandwidth} GB/s`,
        evidence: { bandwidthGBps: bandwidth },
        compatValue: bandwidth,
      });
    } else {
      devices.push({
        id: String(gpu),
        verdict,
        reason: warn ? `${check}: 1 event below the limit` : `${check}: nothing found`,
        evidence: { count: warn ? 1 : 0 },
        compatValue: warn ? 1 : 0,
      });
    }
  }
  return devices;
}

function peerName(index: number): string {
  return `node-${String(index).padStart(4, '0')}`;
}

function pingDevices(seq: number): DeviceResult[] {
  const devices: DeviceResult[] = [];
  for (let i = 1; i <= PEER_COUNT; i++) {
    const id = peerName(i);
    const address = `10.${(i >> 8) & 255}.${i & 255}.${1 + (seq % 200)}`;
    if (i % FAILING_PEER_EVERY === 0) {
      devices.push({
        id,
        verdict: 'FAIL',
        reason: 'unreachable: no reply to 5 echo requests',
        evidence: {
          address,
          transmitted: 5,
          received: 0,
          lossRatio: 1,
          rttMinSeconds: null,
          rttAvgSeconds: null,
          rttMaxSeconds: null,
        },
        compatValue: 1,
      });
      continue;
    }
    const avg = 0.0002 + ((i * 7 + seq) % 100) * 0.000001;
    devices.push({
      id,
      verdict: 'PASS',
      reason: `5/5 replies, rtt avg ${(avg * 1000).toFixed(3)} ms`,
      evidence: {
        address,
        transmitted: 5,
        received: 5,
        lossRatio: 0,
        rttMinSeconds: Number((avg * 0.8).toFixed(9)),
        rttAvgSeconds: Number(avg.toFixed(9)),
        rttMaxSeconds: Number((avg * 1.5).toFixed(9)),
      },
      compatValue: 0,
    });
  }
  return devices;
}

/** A fresh run of `check` that ended at `finishedAt`; every call builds new objects. */
function makeRun(check: Check, seq: number, finishedAt: number): CheckRun {
  const devices = check.deviceKind === 'peer' ? pingDevices(seq) : gpuDevices(check.name, seq);
  const samples: Sample[] = check.deviceKind === 'peer' ? pingSamples(devices) : [];
  const { verdict, reason } = summariseOutcome({ devices, samples });
  const durationMs = check.deviceKind === 'peer' ? 4_200 : 850;
  return {
    check: check.name,
    trigger: 'periodic',
    params: {},
    startedAt: finishedAt - durationMs,
    finishedAt,
    verdict,
    reason,
    devices,
    samples,
  };
}

/** An inconclusive run, so the ERROR counters and the conclusive/latest split are exercised. */
function makeErrorRun(check: Check, finishedAt: number): CheckRun {
  return {
    check: check.name,
    trigger: 'periodic',
    params: {},
    startedAt: finishedAt - 30_000,
    finishedAt,
    verdict: 'ERROR',
    reason: 'timed out after 30 s',
    devices: [],
    samples: [],
  };
}

// ---------------------------------------------------------------------------------------------
// Measurement helpers

interface Scrape {
  readonly ms: number;
  readonly body: string;
  readonly status: number;
}

function scrape(agent: Agent, port: number): Promise<Scrape> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const req = request(
      { host: '127.0.0.1', port, path: '/metrics', method: 'GET', agent },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () =>
          resolve({
            ms: performance.now() - start,
            body: Buffer.concat(chunks).toString('utf8'),
            status: res.statusCode ?? 0,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

interface Stats {
  readonly n: number;
  readonly median: number;
  readonly p99: number;
  readonly max: number;
}

/** Nearest-rank percentiles. */
function stats(samples: readonly number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (p: number): number =>
    sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? NaN;
  return { n: sorted.length, median: at(0.5), p99: at(0.99), max: sorted.at(-1) ?? NaN };
}

function countSeries(body: string): number {
  let series = 0;
  for (const line of body.split('\n')) if (line !== '' && !line.startsWith('#')) series++;
  return series;
}

/** Series per metric family, largest first. */
function seriesByFamily(body: string): [string, number][] {
  const families = new Map<string, number>();
  for (const line of body.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const name = /^[A-Za-z_:][A-Za-z0-9_:]*/.exec(line)?.[0] ?? '?';
    families.set(name, (families.get(name) ?? 0) + 1);
  }
  return [...families].sort((a, b) => b[1] - a[1]);
}

/** V8's gc(), exposed at run time so `npm run bench` needs no --expose-gc flag. */
function exposeGc(): (() => void) | undefined {
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    return typeof gc === 'function' ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  }
}

interface Memory {
  readonly rssMB: number;
  readonly heapMB: number;
  readonly heapTotalMB: number;
}

const MB = 1024 * 1024;

function memory(): Memory {
  const usage = process.memoryUsage();
  return {
    rssMB: usage.rss / MB,
    heapMB: usage.heapUsed / MB,
    heapTotalMB: usage.heapTotal / MB,
  };
}

function settledMemory(gc: (() => void) | undefined): Memory {
  if (gc !== undefined) {
    gc();
    gc();
  }
  return memory();
}

interface GcPauses {
  count: number;
  totalMs: number;
  maxMs: number;
}

/** Garbage-collection pauses V8 decided on (forced ones, from the memory probes, are left out). */
function watchGc(): { take(): Promise<GcPauses>; stop(): void } {
  let pauses: GcPauses = { count: 0, totalMs: 0, maxMs: 0 };
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const { detail } = entry as PerformanceEntry & { readonly detail?: NodeGCPerformanceDetail };
      if (((detail?.flags ?? 0) & perfConstants.NODE_PERFORMANCE_GC_FLAGS_FORCED) !== 0) continue;
      pauses.count++;
      pauses.totalMs += entry.duration;
      pauses.maxMs = Math.max(pauses.maxMs, entry.duration);
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  return {
    /** The pauses since the last take; waits a moment, since entries arrive asynchronously. */
    async take() {
      await new Promise((resolve) => setTimeout(resolve, 20));
      const taken = pauses;
      pauses = { count: 0, totalMs: 0, maxMs: 0 };
      return taken;
    },
    stop: () => observer.disconnect(),
  };
}

// ---------------------------------------------------------------------------------------------
// Report formatting

const LABEL_WIDTH = 50;

function row(label: string, value: string, note = ''): void {
  const line = `  ${label.padEnd(LABEL_WIDTH)} ${value.padStart(12)}${note === '' ? '' : `   ${note}`}`;
  console.log(line);
}

function heading(title: string): void {
  console.log(`\n${title}\n${'-'.repeat(title.length)}`);
}

const ms = (value: number): string => `${value.toFixed(2)} ms`;
const mb = (value: number): string => `${value.toFixed(1)} MB`;
const signedMb = (value: number): string => `${value >= 0 ? '+' : ''}${value.toFixed(1)} MB`;
const count = (value: number): string => value.toLocaleString('en-US');
const against = (value: number, target: number, unit: string): string =>
  `target ≤ ${count(target)}${unit}: ratio ${(value / target).toFixed(2)}, ${value <= target ? 'within target' : 'OVER TARGET'}`;
const gcNote = (pauses: GcPauses): string =>
  `${pauses.count} pauses, ${pauses.totalMs.toFixed(0)} ms in all, longest ${pauses.maxMs.toFixed(1)} ms`;

// ---------------------------------------------------------------------------------------------
// The benchmark

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve, reject) =>
    server.close((error) => (error === undefined ? resolve() : reject(error))),
  );
}

/** Fills the store as an exporter that has run a while; returns the clock of the last run. */
function seedStore(store: ResultStore, checks: readonly Check[], start: number): number {
  let clock = start;
  let seq = 0;
  for (let round = 0; round < SEED_RUNS_PER_CHECK; round++) {
    for (const check of checks) {
      clock += 1_000;
      // One round times out, so the ERROR counters are not zero either.
      store.record(round === 1 ? makeErrorRun(check, clock) : makeRun(check, seq++, clock));
    }
  }
  return clock;
}

async function main(): Promise<void> {
  const gc = exposeGc();
  const atStart = memory();

  const checkList: Check[] = [
    ...GPU_CHECKS.map((c) => syntheticCheck(c.name, c.compatHealth, 'gpu')),
    syntheticCheck('ping', 'ping', 'peer'),
  ];
  const checks: ReadonlyMap<string, Check> = new Map(checkList.map((c) => [c.name, c]));
  const store = createResultStore({ historySize: HISTORY_SIZE });
  let clock = seedStore(store, checkList, Date.now() - 86_400_000);

  const registry = createMetricsRegistry({
    store,
    checks,
    host: {
      nodeName: 'gpu-node-001',
      cpuModel: 'AMD EPYC 9654',
      gpuModel: 'NVIDIA-H100-80GB-HBM3',
    },
    build: { version: 'bench', nodejs: process.versions.node },
  });
  // Served as the exporter serves it: rendered once per change of the store.
  const handle = createMetricsApp(
    cachedExposition(registry, () => store.version()),
    silentLogger,
  ).callback();
  const server = createServer((req, res) => void handle(req, res));
  const port = await listen(server);
  // Keep-alive, as Prometheus scrapes: the figures are the exporter's, not TCP set-up.
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const gcWatch = watchGc();

  try {
    // Phase 1: sequential scrapes of a fully loaded store.
    const beforeScrapes = settledMemory(gc);
    let last: Scrape | undefined;
    for (let i = 0; i < WARMUP_SCRAPES; i++) last = await scrape(agent, port);
    await gcWatch.take();
    const latencies: number[] = [];
    for (let i = 0; i < MEASURED_SCRAPES; i++) {
      last = await scrape(agent, port);
      latencies.push(last.ms);
    }
    const phase1Gc = await gcWatch.take();
    const afterScrapesRaw = memory();
    const afterScrapes = settledMemory(gc);
    if (last === undefined) throw new Error('no scrape was made');

    // The render alone, without HTTP and Koa, to tell where the time goes.
    const renderTimes: number[] = [];
    for (let i = 0; i < 100; i++) {
      const start = performance.now();
      await registry.metrics();
      renderTimes.push(performance.now() - start);
    }

    // Phase 2: 10,000 fresh runs, with a scrape every 100 of them.
    const beforeRecords = settledMemory(gc);
    await gcWatch.take();
    const checkpoints: { readonly records: number; readonly memory: Memory }[] = [];
    const whileRecording: number[] = [];
    const recordTimes: number[] = [];
    let seq = 1_000;
    for (let i = 1; i <= PHASE2_RECORDS; i++) {
      const check = checkList[i % checkList.length];
      if (check === undefined) throw new Error('no checks');
      clock += 1_000;
      const run = makeRun(check, seq++, clock);
      const start = performance.now();
      store.record(run);
      recordTimes.push(performance.now() - start);
      if (i % PHASE2_SCRAPE_EVERY === 0) whileRecording.push((await scrape(agent, port)).ms);
      if (i % PHASE2_CHECKPOINT_EVERY === 0 && i < PHASE2_RECORDS) {
        checkpoints.push({ records: i, memory: settledMemory(gc) });
      }
    }
    const phase2Gc = await gcWatch.take();
    const afterRecordsRaw = memory();
    const afterRecords = settledMemory(gc);
    checkpoints.push({ records: PHASE2_RECORDS, memory: afterRecords });
    const finalScrape = await scrape(agent, port);

    // Report
    const body = last.body;
    const series = countSeries(body);
    const phase1 = stats(latencies);
    const render = stats(renderTimes);
    const phase2 = stats(whileRecording);
    const records = stats(recordTimes);
    const cpu = cpus();

    console.log('Autopilot /metrics benchmark');
    console.log('============================');
    row('date', new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC');
    row('Node.js', process.version, `${cpu.length} CPUs: ${cpu[0]?.model.trim() ?? 'unknown'}`);
    row(
      'load',
      `${GPU_COUNT} GPUs`,
      `× ${GPU_CHECKS.length} GPU checks, ping × ${count(PEER_COUNT)} peers`,
    );
    row(
      'history per check',
      String(HISTORY_SIZE),
      `seeded full: ${SEED_RUNS_PER_CHECK} runs per check`,
    );
    row('forced GC before memory readings', gc === undefined ? 'unavailable' : 'yes');

    heading(
      `Phase 1: ${MEASURED_SCRAPES} sequential GET /metrics (after ${WARMUP_SCRAPES} warm-up)`,
    );
    row(
      'latency median (store unchanged: cached)',
      ms(phase1.median),
      against(phase1.median, TARGET_MEDIAN_MS, ' ms'),
    );
    row('latency p99 (cached)', ms(phase1.p99), against(phase1.p99, TARGET_P99_MS, ' ms'));
    row('latency max', ms(phase1.max));
    row(
      'full render, median',
      ms(render.median),
      'registry.metrics() without cache or HTTP: the first scrape after a run',
    );
    row('full render, p99', ms(render.p99));
    row('GC during the measured scrapes', String(phase1Gc.count), gcNote(phase1Gc));

    heading('Exposition');
    row('HTTP status', String(last.status));
    row('body size', `${count(Buffer.byteLength(body))} B`);
    row('series', count(series), against(series, TARGET_SERIES, ' per node'));
    for (const [family, n] of seriesByFamily(body)) row(`  ${family}`, count(n));

    heading('Memory, phase 1');
    row('RSS at start', mb(atStart.rssMB), `heap used ${mb(atStart.heapMB)}`);
    row(
      'RSS with store loaded, before scrapes (GC)',
      mb(beforeScrapes.rssMB),
      `heap used ${mb(beforeScrapes.heapMB)} of ${mb(beforeScrapes.heapTotalMB)}`,
    );
    row(
      `RSS after ${WARMUP_SCRAPES + MEASURED_SCRAPES} scrapes`,
      mb(afterScrapesRaw.rssMB),
      `heap used ${mb(afterScrapesRaw.heapMB)} of ${mb(afterScrapesRaw.heapTotalMB)}`,
    );
    row(
      `RSS after ${WARMUP_SCRAPES + MEASURED_SCRAPES} scrapes (GC)`,
      mb(afterScrapes.rssMB),
      `heap used ${mb(afterScrapes.heapMB)} of ${mb(afterScrapes.heapTotalMB)}; ${against(afterScrapes.rssMB, TARGET_RSS_MB, ' MB')}`,
    );

    heading(
      `Phase 2: ${count(PHASE2_RECORDS)} store.record() of fresh runs, a scrape every ${PHASE2_SCRAPE_EVERY}`,
    );
    row('record() median', ms(records.median), `p99 ${ms(records.p99)}, max ${ms(records.max)}`);
    row(`scrape latency median (n=${phase2.n})`, ms(phase2.median));
    row('scrape latency p99', ms(phase2.p99), against(phase2.p99, TARGET_P99_MS, ' ms'));
    row('scrape latency max', ms(phase2.max));
    row('GC during phase 2', String(phase2Gc.count), gcNote(phase2Gc));
    row('series after phase 2', count(countSeries(finalScrape.body)));
    row(
      'RSS before (GC)',
      mb(beforeRecords.rssMB),
      `heap used ${mb(beforeRecords.heapMB)} of ${mb(beforeRecords.heapTotalMB)}`,
    );
    for (const point of checkpoints) {
      row(
        `RSS after ${count(point.records)} records (GC)`,
        mb(point.memory.rssMB),
        `heap used ${mb(point.memory.heapMB)} of ${mb(point.memory.heapTotalMB)}`,
      );
    }
    row(
      `RSS after ${count(PHASE2_RECORDS)} records, before GC`,
      mb(afterRecordsRaw.rssMB),
      `heap used ${mb(afterRecordsRaw.heapMB)} of ${mb(afterRecordsRaw.heapTotalMB)}`,
    );
    row(
      'RSS steady (GC)',
      mb(afterRecords.rssMB),
      against(afterRecords.rssMB, TARGET_RSS_MB, ' MB'),
    );
    row(
      `RSS growth over ${count(PHASE2_RECORDS)} runs (GC)`,
      signedMb(afterRecords.rssMB - beforeRecords.rssMB),
      `heap used ${signedMb(afterRecords.heapMB - beforeRecords.heapMB)}; target: no growth`,
    );
    row(
      'runs kept in history (ping)',
      String(store.history('ping').length),
      `bound ${HISTORY_SIZE}`,
    );
  } finally {
    gcWatch.stop();
    agent.destroy();
    await close(server);
  }
}

await main();
