/**
 * One table: each design target with the figure measured here, a reference measured in the same
 * run, and their ratio. `npm run bench:compare` runs it (docs/performance.md has the figures).
 *
 * References:
 * - scrape cost: Debian's prometheus-node-exporter, started beside the exporter and scraped in
 *   alternation with it (scripts/install.sh --bench installs it);
 * - ping at 1,000 peers: Autopilot's pattern (every node pings every other node every round)
 *   against the bounded one (AUTOPILOT_PING_SAMPLE=100), the same exporter binary both times, real
 *   ping over loopback addresses (127.0.x.y all answer on Linux; no packet leaves the machine);
 * - on a GPU host only: pciebw against the native copy loop (build/cuda/copy-reference), and the
 *   light GPU checks through NVML against nvidia-smi subprocesses, Autopilot's way. Without a GPU
 *   those rows say so instead of a figure.
 *
 * The exporter under test is the real process (dist/exporter/main.js) with the C fake NVML (8 GPUs),
 * the CUDA probe built against the fake runtime and the fake dcgmi: this machine has no GPU.
 */

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Check } from '../exporter/checks/check.js';
import { createGpuPowerCheck } from '../exporter/checks/gpupower.js';
import { createPcieBwCheck } from '../exporter/checks/pciebw.js';
import { createRemappedCheck } from '../exporter/checks/remapped.js';
import { silentLogger } from '../exporter/log.js';
import { loadCudaProbe } from '../exporter/native/cuda-probe.js';
import { loadNvml } from '../exporter/native/nvml.js';
import {
  buildFakes,
  FAKE_PING_ENV,
  LOOPBACK_PEERS,
  ROOT,
  startExporter,
  startupRound,
  type ExporterProcess,
} from './lib/exporter-process.js';
import { cpuSeconds, freePort, percentile, rssMB, sleep, waitForStatus } from './lib/measure.js';
import { LOAD_CHECKS, loadEndpoints, runOpenLoop, type Endpoint } from './lib/traffic.js';

const NODE_EXPORTER = '/usr/bin/prometheus-node-exporter';
const PEERS = 1_000;
const SAMPLE = 100;
const SCRAPES = Number(process.env.BENCH_SCRAPES ?? 300);
/** The load row: bench/load.ts's mix at its rate, for this many seconds (each side). */
const LOAD_RATE = 500;
const LOAD_S = Number(process.env.BENCH_LOAD_S ?? 30);
/** The rounds rows: this many 1,000-peer ping rounds back to back, scraped throughout. */
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 4);
/** How often RSS is read while a phase runs: the peak is the figure, not the value at the end. */
const RSS_EVERY_MS = 100;
const PERIODIC = 'pciebw,remapped,dcgm,ping,gpupower,ecc';

interface Row {
  readonly what: string;
  readonly measured: string;
  readonly reference: string;
  /** measured / reference, when both are numbers of the same unit. */
  readonly ratio: number | undefined;
  readonly target: string;
}

const rows: Row[] = [];
const ms = (value: number) => `${value.toFixed(2)} ms`;
const mb = (value: number) => `${value.toFixed(1)} MB`;

/** `count` loopback addresses, 127.0.1.1 on: Linux answers for all of 127.0.0.0/8. */
const loopbackPeers = (count: number): string =>
  Array.from(
    { length: count },
    (_, i) =>
      `127.${Math.floor(i / 62_500)}.${1 + Math.floor((i % 62_500) / 250)}.${1 + (i % 250)}`,
  ).join(',');
const PEER_ADDRESSES = loopbackPeers(PEERS);
/** Cluster sizes whose per-node series the cost table of docs/performance.md starts from. */
const CLUSTER_SIZES = (process.env.BENCH_CLUSTER_SIZES ?? '100,1000,10000').split(',').map(Number);

interface Exporter extends ExporterProcess {
  readonly api: string;
  readonly metrics: string;
}

/** The exporter with 1,000 peers, once its start-up round of every periodic check is over. */
async function startWithPeers(extraEnv: Record<string, string>): Promise<Exporter> {
  const process = await startExporter({
    AUTOPILOT_PEERS: PEER_ADDRESSES,
    PERIODIC_CHECKS: PERIODIC,
    ...extraEnv,
  });
  await startupRound(process.ports.api, PERIODIC.split(','), 120_000);
  return {
    ...process,
    api: `http://127.0.0.1:${process.ports.api}`,
    metrics: `http://127.0.0.1:${process.ports.metrics}/metrics`,
  };
}

function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

async function timedGet(url: string): Promise<{ readonly ms: number; readonly body: string }> {
  const t0 = performance.now();
  const response = await fetch(url);
  const body = await response.text();
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return { ms: performance.now() - t0, body };
}

const seriesOf = (body: string) =>
  body.split('\n').filter((line) => line !== '' && !line.startsWith('#')).length;

/** Debian's node-exporter with its default collectors, beside the exporter for the whole run. */
interface NodeExporter {
  readonly pid: number;
  readonly port: number;
  readonly url: string;
  stop(): Promise<void>;
}

const MISSING = `${NODE_EXPORTER} missing (scripts/install.sh --bench)`;

async function startNodeExporter(): Promise<NodeExporter | undefined> {
  if (!existsSync(NODE_EXPORTER)) return undefined;
  const port = await freePort();
  const child = spawn(NODE_EXPORTER, [`--web.listen-address=127.0.0.1:${port}`], {
    stdio: 'ignore',
  });
  const url = `http://127.0.0.1:${port}/metrics`;
  await waitForStatus(url, 200, 15_000);
  return { pid: child.pid ?? 0, port, url, stop: () => stopProcess(child) };
}

/**
 * Runs `work` while reading the RSS of each pid every RSS_EVERY_MS; resolves with its result and
 * each pid's peak in MB. A peak between two readings 100 ms apart can be missed; a heap that grows
 * under load stays up for seconds, so it is not.
 */
async function withPeakRss<T>(
  pids: readonly number[],
  work: () => Promise<T>,
): Promise<{ readonly result: T; readonly peaks: number[] }> {
  const peaks = pids.map((pid) => rssMB(pid));
  const read = () => pids.forEach((pid, i) => (peaks[i] = Math.max(peaks[i] ?? 0, rssMB(pid))));
  const timer = setInterval(read, RSS_EVERY_MS);
  try {
    const result = await work();
    read();
    return { result, peaks };
  } finally {
    clearInterval(timer);
  }
}

async function scrapeCost(exporter: Exporter, ne: NodeExporter | undefined): Promise<void> {
  if (ne === undefined) {
    rows.push({
      what: '/metrics scrape',
      measured: '—',
      reference: MISSING,
      ratio: undefined,
      target: '≤ 5 ms median',
    });
    return;
  }
  const referenceUrl = ne.url;
  for (let i = 0; i < 20; i++) {
    await timedGet(exporter.metrics);
    await timedGet(referenceUrl);
  }
  const ours: number[] = [];
  const theirs: number[] = [];
  const cpu = { ours: cpuSeconds(exporter.pid), theirs: cpuSeconds(ne.pid) };
  let bodies = { ours: '', theirs: '' };
  for (let i = 0; i < SCRAPES; i++) {
    const a = await timedGet(exporter.metrics);
    const b = await timedGet(referenceUrl);
    ours.push(a.ms);
    theirs.push(b.ms);
    bodies = { ours: a.body, theirs: b.body };
  }
  const cpuMs = {
    ours: ((cpuSeconds(exporter.pid) - cpu.ours) * 1000) / SCRAPES,
    theirs: ((cpuSeconds(ne.pid) - cpu.theirs) * 1000) / SCRAPES,
  };
  const median = { ours: percentile(ours, 50), theirs: percentile(theirs, 50) };
  const p99 = { ours: percentile(ours, 99), theirs: percentile(theirs, 99) };
  const series = { ours: seriesOf(bodies.ours), theirs: seriesOf(bodies.theirs) };
  const rss = { ours: rssMB(exporter.pid), theirs: rssMB(ne.pid) };
  const vs = 'node-exporter';
  rows.push(
    {
      what: `/metrics latency, median of ${SCRAPES}`,
      measured: ms(median.ours),
      reference: `${ms(median.theirs)} ${vs}`,
      ratio: median.ours / median.theirs,
      target: '≤ 5 ms',
    },
    {
      what: '/metrics latency, p99',
      measured: ms(p99.ours),
      reference: `${ms(p99.theirs)} ${vs}`,
      ratio: p99.ours / p99.theirs,
      target: '≤ 10 ms while checks run',
    },
    {
      what: '/metrics CPU per scrape',
      measured: ms(cpuMs.ours),
      reference: `${ms(cpuMs.theirs)} ${vs}`,
      ratio: cpuMs.theirs > 0 ? cpuMs.ours / cpuMs.theirs : undefined,
      target: '—',
    },
    {
      what: 'series per node (8 GPUs, 1,000 peers)',
      measured: String(series.ours),
      reference: `${series.theirs} ${vs}`,
      ratio: series.ours / series.theirs,
      target: '≤ 2,000',
    },
    {
      what: 'exposition size',
      measured: `${(bodies.ours.length / 1024).toFixed(0)} KiB`,
      reference: `${(bodies.theirs.length / 1024).toFixed(0)} KiB ${vs}`,
      ratio: bodies.ours.length / bodies.theirs.length,
      target: '—',
    },
    {
      what: 'RSS after the scrapes',
      measured: mb(rss.ours),
      reference: `${mb(rss.theirs)} ${vs}`,
      ratio: rss.ours / rss.theirs,
      target: '≤ 100 MB',
    },
  );
}

/** The exporter as bench/load.ts runs it: 8 fake GPUs, the load checks, three loopback peers. */
async function startForLoad(): Promise<ExporterProcess> {
  const exporter = await startExporter({
    PERIODIC_CHECKS: LOAD_CHECKS.join(','),
    AUTOPILOT_PEERS: LOOPBACK_PEERS.join(','),
  });
  await startupRound(exporter.ports.api, LOAD_CHECKS);
  return exporter;
}

/**
 * RSS at 500 requests/s: bench/load.ts's open loop and mix (half /metrics, the rest /status, a
 * tenth running the light checks for real) on the exporter, then the same rate of /metrics alone on
 * node-exporter (it has no other endpoint), one after the other so neither steals the other's CPU.
 */
async function footprintUnderLoad(ne: NodeExporter | undefined): Promise<void> {
  const what = `RSS at ${LOAD_RATE} requests/s, peak over ${LOAD_S} s`;
  const exporter = await startForLoad();
  const options = { rate: LOAD_RATE, maxSockets: 8, timeoutMs: 10_000 };
  let ours: { rss: number; rate: number; p99: number; errors: number };
  try {
    const endpoints = loadEndpoints(exporter.ports);
    await runOpenLoop({ ...options, durationS: 2, endpoints });
    const { result, peaks } = await withPeakRss([exporter.pid], () =>
      runOpenLoop({ ...options, durationS: LOAD_S, endpoints }),
    );
    const metrics = result.endpoints[0]?.latenciesMs ?? [];
    ours = {
      rss: peaks[0] ?? Number.NaN,
      rate: result.achievedRate,
      p99: percentile(metrics, 99),
      errors: result.errors,
    };
  } finally {
    await exporter.stop();
  }
  const measured = `${mb(ours.rss)} (${ours.rate.toFixed(0)}/s, ${ours.errors} errors)`;
  if (ne === undefined) {
    rows.push({ what, measured, reference: MISSING, ratio: undefined, target: '≤ 100 MB' });
    return;
  }
  const only: Endpoint = {
    name: '/metrics',
    port: ne.port,
    path: '/metrics',
    weight: 1,
    verify: (reply) => (reply.status === 200 ? undefined : `HTTP ${reply.status}`),
  };
  const theirs = await withPeakRss([ne.pid], () =>
    runOpenLoop({ ...options, durationS: LOAD_S, endpoints: [only] }),
  );
  const neRss = theirs.peaks[0] ?? Number.NaN;
  rows.push(
    {
      what,
      measured,
      reference: `${mb(neRss)} node-exporter, /metrics only (${theirs.result.achievedRate.toFixed(0)}/s achieved)`,
      ratio: ours.rss / neRss,
      target: '≤ 100 MB',
    },
    {
      what: `/metrics p99 at ${LOAD_RATE} requests/s`,
      measured: ms(ours.p99),
      reference: `${ms(percentile(theirs.result.endpoints[0]?.latenciesMs ?? [], 99))} node-exporter`,
      ratio: undefined,
      target: '≤ 10 ms',
    },
  );
}

/**
 * Series per node at each cluster size: the exporter as the DaemonSet runs it (the default
 * periodic round, nvlink included, 8 fake GPUs) with size − 1 peers, every one answering through
 * the fake ping (real ping of 10,000 peers would take minutes and measure nothing more here), after
 * its start-up round. The count is what Prometheus stores per node (docs/performance.md, costs).
 */
async function seriesAtClusterSizes(): Promise<void> {
  for (const nodes of CLUSTER_SIZES) {
    const exporter = await startExporter({
      AUTOPILOT_PEERS: loopbackPeers(nodes - 1),
      ...FAKE_PING_ENV,
    });
    try {
      const checks = ['pciebw', 'remapped', 'dcgm', 'ping', 'gpupower', 'nvlink', 'gpucount'];
      await startupRound(exporter.ports.api, checks, 300_000);
      const body = (await timedGet(`http://127.0.0.1:${exporter.ports.metrics}/metrics`)).body;
      const series = seriesOf(body);
      rows.push({
        what: `series per node, ${nodes.toLocaleString('en')} nodes (default round, 8 GPUs)`,
        measured: String(series),
        reference: `${(nodes - 1).toLocaleString('en')} compat series per peer (Autopilot)`,
        ratio: undefined,
        target: '≤ 2,000',
      });
    } finally {
      await exporter.stop();
    }
  }
}

/** Scrapes the exporter and node-exporter in alternation until `done` says stop. */
async function scrapeUntil(
  urls: readonly string[],
  done: () => boolean,
): Promise<readonly number[][]> {
  const latencies = urls.map((): number[] => []);
  while (!done()) {
    for (const [i, url] of urls.entries()) latencies[i]?.push((await timedGet(url)).ms);
    await sleep(20);
  }
  return latencies;
}

/**
 * 1,000-peer ping rounds back to back (the default sample: every peer, as Autopilot), /metrics of
 * both processes scraped in alternation every 20 ms throughout, RSS of both read every 100 ms.
 */
async function footprintDuringRounds(
  exporter: Exporter,
  ne: NodeExporter | undefined,
): Promise<void> {
  let finished = false;
  const pids = ne === undefined ? [exporter.pid] : [exporter.pid, ne.pid];
  const urls = ne === undefined ? [exporter.metrics] : [exporter.metrics, ne.url];
  const { result, peaks } = await withPeakRss(pids, async () => {
    const scraping = scrapeUntil(urls, () => finished);
    const t0 = performance.now();
    for (let round = 0; round < ROUNDS; round++)
      await timedGet(`${exporter.api}/status?check=ping`);
    const seconds = (performance.now() - t0) / 1000;
    finished = true;
    return { latencies: await scraping, seconds };
  });
  const [ours = [], theirs] = result.latencies;
  const during = `during ${ROUNDS} ping rounds of ${PEERS} peers (${result.seconds.toFixed(0)} s)`;
  const vs = (value: number | undefined, format: (v: number) => string) =>
    value === undefined ? MISSING : `${format(value)} node-exporter`;
  const neP99 = theirs === undefined ? undefined : percentile(theirs, 99);
  rows.push(
    {
      what: `RSS ${during}, peak`,
      measured: mb(peaks[0] ?? Number.NaN),
      reference: vs(peaks[1], mb),
      ratio: peaks[1] === undefined ? undefined : (peaks[0] ?? Number.NaN) / peaks[1],
      target: '≤ 100 MB',
    },
    {
      what: `/metrics p99 ${during}, ${ours.length} scrapes`,
      measured: ms(percentile(ours, 99)),
      reference: vs(neP99, ms),
      ratio: neP99 === undefined ? undefined : percentile(ours, 99) / neP99,
      target: '≤ 10 ms',
    },
  );
}

/** One ping round asked through the API: its duration and CPU (exporter + pings). */
async function pingRound(exporter: Exporter): Promise<{ seconds: number; cpu: number }> {
  const cpu = cpuSeconds(exporter.pid);
  const { ms: elapsed } = await timedGet(`${exporter.api}/status?check=ping`);
  return { seconds: elapsed / 1000, cpu: cpuSeconds(exporter.pid) - cpu };
}

async function pingPattern(allToAll: Exporter): Promise<void> {
  const all = await pingRound(allToAll);
  const bounded = await startWithPeers({ AUTOPILOT_PING_SAMPLE: String(SAMPLE) });
  try {
    const sample = await pingRound(bounded);
    rows.push(
      {
        what: `ping round, ${PEERS} peers`,
        measured: `${sample.seconds.toFixed(2)} s (${SAMPLE} per round)`,
        reference: `${all.seconds.toFixed(2)} s all-to-all (Autopilot)`,
        ratio: sample.seconds / all.seconds,
        target: '≤ 15 s',
      },
      {
        what: 'CPU per ping round (exporter + pings)',
        measured: `${sample.cpu.toFixed(2)} s`,
        reference: `${all.cpu.toFixed(2)} s all-to-all`,
        ratio: sample.cpu / all.cpu,
        target: '—',
      },
      {
        what: `pings per round, cluster of ${PEERS + 1} nodes`,
        measured: (SAMPLE * (PEERS + 1)).toLocaleString('en'),
        reference: `${(PEERS * (PEERS + 1)).toLocaleString('en')} all-to-all`,
        ratio: SAMPLE / PEERS,
        target: 'bounded',
      },
    );
  } finally {
    await bounded.stop();
  }
}

const NO_GPU = 'not measured: no GPU on this machine (run on a GPU host)';

/** pciebw against the native copy loop, on a GPU host with build/cuda/ built (make -C cuda all reference). */
async function pcieAgainstNative(): Promise<void> {
  const nvml = await loadNvml(process.env.AUTOPILOT_NVML_LIBRARY ?? 'libnvidia-ml.so.1');
  const probePath = join(ROOT, 'build', 'cuda', 'libautopilot-probe.so');
  const referencePath = join(ROOT, 'build', 'cuda', 'copy-reference');
  const cuda = existsSync(probePath) ? loadCudaProbe(probePath) : undefined;
  if (!nvml.ok || cuda?.ok !== true || !existsSync(referencePath)) {
    rows.push({
      what: 'pciebw H2D',
      measured: '—',
      reference: NO_GPU,
      ratio: undefined,
      target: '≥ 0.98 of native',
    });
    if (nvml.ok) await nvml.nvml.close();
    return;
  }
  const ctx = { signal: new AbortController().signal, logger: silentLogger, params: {} };
  const outcome = await createPcieBwCheck({ nvml, cuda, thresholdGBps: 4 }).run(ctx);
  const device = outcome.devices[0];
  const probe = Number(device?.evidence.h2dGBps);
  const native = Number(execFileSync(referencePath, ['0', 'h2d'], { encoding: 'utf8' }).trim());
  rows.push({
    what: 'pciebw H2D, GPU 0',
    measured: `${probe.toFixed(2)} GB/s`,
    reference: `${native.toFixed(2)} GB/s native copy loop`,
    ratio: probe / native,
    target: '≥ 0.98',
  });
  await nvml.nvml.close();
}

/** remapped + gpupower through NVML against Autopilot's nvidia-smi queries, on a GPU host. */
async function nvmlAgainstNvidiaSmi(): Promise<void> {
  const nvml = await loadNvml(process.env.AUTOPILOT_NVML_LIBRARY ?? 'libnvidia-ml.so.1');
  let nvidiaSmi = true;
  try {
    execFileSync('nvidia-smi', ['-L'], { stdio: 'ignore' });
  } catch {
    nvidiaSmi = false;
  }
  if (!nvml.ok || !nvidiaSmi) {
    rows.push({
      what: 'remapped + gpupower',
      measured: '—',
      reference: NO_GPU,
      ratio: undefined,
      target: '≤ 50 µs per GPU per check',
    });
    if (nvml.ok) await nvml.nvml.close();
    return;
  }
  const ctx = { signal: new AbortController().signal, logger: silentLogger, params: {} };
  const checks: Check[] = [createRemappedCheck({ nvml }), createGpuPowerCheck({ nvml })];
  const runs = 20;
  const t0 = performance.now();
  for (let i = 0; i < runs; i++) for (const check of checks) await check.run(ctx);
  const ours = (performance.now() - t0) / runs;
  const t1 = performance.now();
  for (let i = 0; i < runs; i++) {
    execFileSync('nvidia-smi', ['-q', '-d', 'ROW_REMAPPER'], { stdio: 'ignore' });
    execFileSync('nvidia-smi', ['--query-gpu=clocks_event_reasons.hw_slowdown', '--format=csv'], {
      stdio: 'ignore',
    });
  }
  const theirs = (performance.now() - t1) / runs;
  rows.push({
    what: 'remapped + gpupower, every GPU',
    measured: ms(ours),
    reference: `${ms(theirs)} nvidia-smi (Autopilot)`,
    ratio: ours / theirs,
    target: '≤ 50 µs per GPU per check',
  });
  await nvml.nvml.close();
}

function printTable(): void {
  const header: Row = {
    what: 'figure',
    measured: 'Autopilot (this)',
    reference: 'reference, same run',
    ratio: undefined,
    target: 'target',
  };
  const cells = (row: Row) => [
    row.what,
    row.measured,
    row.reference,
    row === header ? 'ratio' : row.ratio === undefined ? '—' : row.ratio.toFixed(3),
    row.target,
  ];
  const all = [header, ...rows].map(cells);
  const widths = all[0]!.map((_, column) => Math.max(...all.map((line) => line[column]!.length)));
  const format = (line: string[]) =>
    `| ${line.map((cell, column) => cell.padEnd(widths[column]!)).join(' | ')} |`;
  console.log(format(all[0]!));
  console.log(`| ${widths.map((width) => '-'.repeat(width)).join(' | ')} |`);
  for (const line of all.slice(1)) console.log(format(line));
}

async function main(): Promise<void> {
  const started = performance.now();
  console.log(`Autopilot against references (${new Date().toISOString()})`);
  buildFakes(true);
  const ne = await startNodeExporter();
  try {
    const exporter = await startWithPeers({});
    try {
      await scrapeCost(exporter, ne);
      await footprintDuringRounds(exporter, ne);
      await pingPattern(exporter);
    } finally {
      await exporter.stop();
    }
    await footprintUnderLoad(ne);
    await seriesAtClusterSizes();
  } finally {
    await ne?.stop();
  }
  await pcieAgainstNative();
  await nvmlAgainstNvidiaSmi();
  console.log('');
  printTable();
  console.log(`\n(${((performance.now() - started) / 1000).toFixed(0)} s)`);
}

await main();
