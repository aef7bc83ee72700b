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
  ROOT,
  startExporter,
  startupRound,
  type ExporterProcess,
} from './lib/exporter-process.js';
import { cpuSeconds, freePort, percentile, rssMB, waitForStatus } from './lib/measure.js';

const NODE_EXPORTER = '/usr/bin/prometheus-node-exporter';
const PEERS = 1_000;
const SAMPLE = 100;
const SCRAPES = Number(process.env.BENCH_SCRAPES ?? 300);
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

const PEER_ADDRESSES = Array.from(
  { length: PEERS },
  (_, i) => `127.0.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`,
).join(',');

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

async function scrapeCost(exporter: Exporter): Promise<void> {
  if (!existsSync(NODE_EXPORTER)) {
    rows.push({
      what: '/metrics scrape',
      measured: '—',
      reference: `${NODE_EXPORTER} missing (scripts/install.sh --bench)`,
      ratio: undefined,
      target: '≤ 5 ms median',
    });
    return;
  }
  const port = await freePort();
  const reference = spawn(NODE_EXPORTER, [`--web.listen-address=127.0.0.1:${port}`], {
    stdio: 'ignore',
  });
  const referenceUrl = `http://127.0.0.1:${port}/metrics`;
  try {
    await waitForStatus(referenceUrl, 200, 15_000);
    for (let i = 0; i < 20; i++) {
      await timedGet(exporter.metrics);
      await timedGet(referenceUrl);
    }
    const ours: number[] = [];
    const theirs: number[] = [];
    const cpu = { ours: cpuSeconds(exporter.pid), theirs: cpuSeconds(reference.pid ?? 0) };
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
      theirs: ((cpuSeconds(reference.pid ?? 0) - cpu.theirs) * 1000) / SCRAPES,
    };
    const median = { ours: percentile(ours, 50), theirs: percentile(theirs, 50) };
    const p99 = { ours: percentile(ours, 99), theirs: percentile(theirs, 99) };
    const series = { ours: seriesOf(bodies.ours), theirs: seriesOf(bodies.theirs) };
    const rss = { ours: rssMB(exporter.pid), theirs: rssMB(reference.pid ?? 0) };
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
  } finally {
    await stopProcess(reference);
  }
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
  const exporter = await startWithPeers({});
  try {
    await scrapeCost(exporter);
    await pingPattern(exporter);
  } finally {
    await exporter.stop();
  }
  await pcieAgainstNative();
  await nvmlAgainstNvidiaSmi();
  console.log('');
  printTable();
  console.log(`\n(${((performance.now() - started) / 1000).toFixed(0)} s)`);
}

await main();
