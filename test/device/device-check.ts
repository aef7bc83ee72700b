/**
 * The GPU checks against the real libraries on a GPU host, one table per GPU: each check's verdict
 * and the figures the design targets (NVML cost ≤ 50 µs per GPU per check, pciebw ≤ 0.5 s per GPU
 * with allocation, pciebw ≥ 0.98 of a native copy loop in the same run), gpumem's figures, and
 * p2pbw's run time over every GPU pair with each GPU's slowest pair (SKIP on a one-GPU host).
 * Targets are printed beside the figures with the ratio, never asserted: this run exists to
 * measure them for the first time. Every step has a deadline, what timed out is printed, and the
 * process never waits on a driver call that hung.
 *
 * Run by run.sh from the pack that scripts/device-pack.sh builds (docs/gpu-host.md); with the C
 * fakes it runs anywhere (test/e2e/device-pack.test.ts). Not part of the exporter.
 */

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import type {
  Check,
  CheckContext,
  CheckOutcome,
  DeviceResult,
} from '../../exporter/checks/check.js';
import { createEccCheck } from '../../exporter/checks/ecc.js';
import { createNvLinkCheck } from '../../exporter/checks/nvlink.js';
import { cudaOrdinalOf } from '../../exporter/checks/gpu-common.js';
import { createGpuMemCheck, expectedFigures } from '../../exporter/checks/gpumem.js';
import { createGpuPowerCheck } from '../../exporter/checks/gpupower.js';
import { createP2pBwCheck } from '../../exporter/checks/p2pbw.js';
import { createPcieBwCheck } from '../../exporter/checks/pciebw.js';
import { createRemappedCheck } from '../../exporter/checks/remapped.js';
import { createXidCheck, createXidLedger, createXidWatcher } from '../../exporter/checks/xid.js';
import { createSystemClock, sleep } from '../../exporter/clock.js';
import { silentLogger } from '../../exporter/log.js';
import { loadCudaProbe } from '../../exporter/native/cuda-probe.js';
import { loadNvml } from '../../exporter/native/nvml.js';
import type {
  CopyDirection,
  CudaProbe,
  GpuDevice,
  Nvml,
  NvmlLoad,
} from '../../exporter/native/ports.js';

/** The pack's root (or the repository's): dist/test/device/ is three levels below it. */
const ROOT = join(import.meta.dirname, '..', '..', '..');

const NVML_TARGET_US = 50;
const PCIEBW_TARGET_S = 0.5;
const REFERENCE_TARGET_RATIO = 0.98;
/** The exporter's copy size and count (pciebw's defaults), given to the native loop too. */
const COPY_BYTES = 64 * 1024 * 1024;
const COPY_REPETITIONS = 16;
/** --bw's default, Autopilot's. */
const BW_THRESHOLD_GBPS = 4;

interface Settings {
  readonly nvmlLibrary: string;
  readonly probeLibrary: string;
  readonly reference: string;
  readonly budgetMs: number;
  readonly nvmlRuns: number;
  readonly xidListenMs: number;
  /** DEVICE_STEP_TIMEOUT_S: a shorter deadline for every step (tests, impatient runs). */
  readonly stepCapMs: number;
}

function wholeNumber(name: string, fallback: number, min: number, max: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new Error(
      `${name} must be a whole number from ${min} to ${max}, not ${JSON.stringify(text)}`,
    );
  }
  return Number(text);
}

function readSettings(): Settings {
  return {
    nvmlLibrary: process.env.AUTOPILOT_NVML_LIBRARY ?? 'libnvidia-ml.so.1',
    probeLibrary:
      process.env.AUTOPILOT_CUDA_PROBE_LIBRARY ??
      join(ROOT, 'build', 'cuda', 'libautopilot-probe.so'),
    reference: process.env.DEVICE_REFERENCE ?? join(ROOT, 'build', 'cuda', 'copy-reference'),
    budgetMs: wholeNumber('DEVICE_CHECK_BUDGET_S', 200, 10, 3600) * 1000,
    nvmlRuns: wholeNumber('DEVICE_NVML_RUNS', 200, 1, 100_000),
    xidListenMs: wholeNumber('DEVICE_XID_LISTEN_MS', 3000, 0, 60_000),
    stepCapMs: wholeNumber('DEVICE_STEP_TIMEOUT_S', 3600, 1, 3600) * 1000,
  };
}

type Step<T> =
  | { readonly ok: true; readonly value: T; readonly ms: number }
  | { readonly ok: false; readonly problem: string };

/**
 * Runs each step under its own deadline and the run's budget. A step that times out is aborted
 * (checks honour the signal) and reported at once, so the output says what hung even if a later
 * step hangs too.
 */
class Steps {
  readonly timedOut: string[] = [];
  readonly notStarted: string[] = [];
  private readonly deadline: number;

  constructor(
    budgetMs: number,
    private readonly stepCapMs: number,
  ) {
    this.deadline = performance.now() + budgetMs;
  }

  async run<T>(
    label: string,
    capMs: number,
    body: (signal: AbortSignal) => Promise<T>,
  ): Promise<Step<T>> {
    const limitMs = Math.min(capMs, this.stepCapMs, this.deadline - performance.now());
    if (limitMs < 500) {
      this.notStarted.push(label);
      return { ok: false, problem: 'not run: the budget was spent' };
    }
    const controller = new AbortController();
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), limitMs);
    });
    try {
      const result = await Promise.race([body(controller.signal), expired]);
      if (result === 'timeout') {
        const problem = `timed out after ${(limitMs / 1000).toFixed(1)} s`;
        controller.abort(new Error(`${label} ${problem}`));
        this.timedOut.push(`${label}: ${problem}`);
        console.log(`TIMED OUT: ${label} after ${(limitMs / 1000).toFixed(1)} s`);
        return { ok: false, problem };
      }
      return { ok: true, value: result as T, ms: performance.now() - started };
    } catch (error) {
      return { ok: false, problem: `failed: ${messageOf(error)}` };
    } finally {
      clearTimeout(timer);
    }
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function contextOf(signal: AbortSignal): CheckContext {
  return { signal, logger: silentLogger, params: {} };
}

interface Row {
  readonly check: string;
  readonly item: string;
  readonly verdict: string;
  readonly measured: string;
  readonly target: string;
  readonly ratio: string;
}

interface GpuTable {
  readonly gpu: GpuDevice;
  readonly ordinal: number | undefined;
  readonly rows: Row[];
  readonly reasons: string[];
}

type Tables = ReadonlyMap<string, GpuTable>;

function row(check: string, item: string, fields: Partial<Row>): Row {
  return { check, item, verdict: '', measured: '', target: '', ratio: '', ...fields };
}

/** "0.25": measured ÷ target, the reader compares with 1 in the target's direction. */
function ratioOf(measured: number, target: number, digits = 2): string {
  return Number.isFinite(measured) ? (measured / target).toFixed(digits) : '';
}

function numberIn(device: DeviceResult | undefined, key: string): number | undefined {
  const value = device?.evidence[key];
  return typeof value === 'number' ? value : undefined;
}

/**
 * Files a check's outcome in the tables: a verdict per GPU (a check-level verdict, such as SKIP
 * with no GPU judged, goes to every GPU), its reason, and the row `detail` adds for the device.
 */
function file(
  tables: Tables,
  check: string,
  item: string,
  step: Step<CheckOutcome>,
  detail: (device: DeviceResult | undefined, table: GpuTable) => Partial<Row> = () => ({}),
): void {
  for (const table of tables.values()) {
    if (!step.ok) {
      table.rows.push(row(check, item, { verdict: '—', measured: step.problem }));
      continue;
    }
    const device = step.value.devices.find((d) => d.id === String(table.gpu.index));
    const verdict = device?.verdict ?? step.value.verdict ?? '—';
    const reason = device?.reason ?? step.value.reason ?? 'no result for this GPU';
    table.rows.push(row(check, item, { verdict, ...detail(device, table) }));
    table.reasons.push(`${check}: ${reason}`);
  }
}

/** NVML with one GPU in its list: the cost of a check's own calls for that GPU. */
function oneGpuView(nvml: Nvml, gpu: GpuDevice): NvmlLoad {
  const view = new Proxy(nvml, {
    get(target, key) {
      if (key === 'devices') return () => Promise.resolve([gpu]);
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === 'function' ? (value as () => unknown).bind(target) : value;
    },
  });
  return { ok: true, nvml: view };
}

/** The median wall time of a check's run in µs, over `runs` runs or 3 s, whichever ends first. */
async function medianRunUs(check: Check, runs: number, signal: AbortSignal): Promise<number> {
  const context = contextOf(signal);
  for (let i = 0; i < Math.min(20, runs); i++) await check.run(context);
  const times: number[] = [];
  const until = performance.now() + 3000;
  while (times.length < runs && performance.now() < until && !signal.aborted) {
    const started = performance.now();
    await check.run(context);
    times.push((performance.now() - started) * 1000);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] ?? Number.NaN;
}

const clock = createSystemClock();

type Sleep = (ms: number, signal: AbortSignal) => Promise<void>;
const realSleep: Sleep = (ms, signal) => sleep(clock, ms, signal);
/** For the cost runs: what is timed is NVML, not gpupower's wait between its two reads. */
const noWait: Sleep = () => Promise.resolve();

const NVML_CHECKS: readonly (readonly [string, (nvml: NvmlLoad, wait: Sleep) => Check])[] = [
  ['remapped', (nvml) => createRemappedCheck({ nvml })],
  ['gpupower', (nvml, wait) => createGpuPowerCheck({ nvml, sleep: wait, now: () => clock.now() })],
  ['ecc', (nvml) => createEccCheck({ nvml })],
  ['nvlink', (nvml) => createNvLinkCheck({ nvml, now: () => clock.now() })],
];

/** The NVML-only checks: verdicts, then their cost per GPU (alone, and whole check ÷ GPUs). */
async function nvmlChecks(
  steps: Steps,
  nvml: Nvml,
  tables: Tables,
  settings: Settings,
): Promise<string[]> {
  const summary: string[] = [];
  for (const [name, create] of NVML_CHECKS) {
    console.log(`running ${name}…`);
    const outcome = await steps.run(`${name}: verdicts`, 30_000, (signal) =>
      create({ ok: true, nvml }, realSleep).run(contextOf(signal)),
    );
    if (!outcome.ok) {
      // A check whose calls hung would only queue more calls behind them.
      summary.push(`${name}: ${outcome.problem}, its cost not measured`);
      file(tables, name, 'NVML time, this GPU', outcome);
      continue;
    }
    const whole = await steps.run(`${name}: NVML cost, all GPUs`, 15_000, (signal) =>
      medianRunUs(create({ ok: true, nvml }, noWait), settings.nvmlRuns, signal),
    );
    const perGpu = whole.ok ? whole.value / tables.size : Number.NaN;
    summary.push(
      `${name}: whole check ${whole.ok ? `${whole.value.toFixed(0)} µs ÷ ${tables.size} GPUs = ${perGpu.toFixed(1)} µs per GPU (target ≤ ${NVML_TARGET_US} µs: ratio ${ratioOf(perGpu, NVML_TARGET_US)})` : whole.problem}`,
    );
    const alone = new Map<string, Step<number>>();
    for (const table of tables.values()) {
      alone.set(
        String(table.gpu.index),
        await steps.run(`${name}: NVML cost, GPU ${table.gpu.index}`, 10_000, (signal) =>
          medianRunUs(create(oneGpuView(nvml, table.gpu), noWait), settings.nvmlRuns, signal),
        ),
      );
    }
    file(tables, name, 'NVML time, this GPU', outcome, (_device, table) => {
      const cost = alone.get(String(table.gpu.index))!;
      if (!cost.ok) return { measured: cost.problem };
      return {
        measured: `${cost.value.toFixed(1)} µs`,
        target: `≤ ${NVML_TARGET_US} µs`,
        ratio: ratioOf(cost.value, NVML_TARGET_US),
      };
    });
  }
  return summary;
}

/** xid: listens to the real event set for a few seconds, then judges each GPU from the ledger. */
async function xidCheck(
  steps: Steps,
  nvml: Nvml,
  tables: Tables,
  settings: Settings,
): Promise<void> {
  console.log(`running xid (listening ${settings.xidListenMs / 1000} s)…`);
  const load: NvmlLoad = { ok: true, nvml };
  const ledger = createXidLedger({ debounceMs: 10_000 });
  const watcher = createXidWatcher({
    nvml: load,
    ledger,
    clock,
    logger: silentLogger,
    onChange: () => undefined,
  });
  const outcome = await steps.run(
    'xid: listen and judge',
    settings.xidListenMs + 15_000,
    async (signal) => {
      watcher.start();
      await delay(settings.xidListenMs, undefined, { signal });
      const judged = await createXidCheck({ nvml: load, ledger, now: Date.now }).run(
        contextOf(signal),
      );
      await watcher.stop();
      return judged;
    },
  );
  file(tables, 'xid', `listened ${settings.xidListenMs / 1000} s`, outcome, (device) => {
    const counts = Object.entries(device?.evidence ?? {})
      .filter(([key]) => /^xid\d+$/.test(key))
      .map(([, count]) => (typeof count === 'number' ? count : 0));
    return { measured: `${counts.reduce((a, b) => a + b, 0)} XIDs counted` };
  });
}

/** The native copy loop (cuda/reference) in one direction: its GB/s, or why it gave none. */
function nativeCopy(
  reference: string,
  ordinal: number,
  direction: CopyDirection,
): Promise<number | string> {
  return new Promise((resolve) => {
    const argv = [String(ordinal), direction, String(COPY_BYTES), String(COPY_REPETITIONS)];
    execFile(
      reference,
      argv,
      { timeout: 30_000, killSignal: 'SIGKILL', encoding: 'utf8' },
      (error, stdout, stderr) => {
        const gbps = Number(stdout.trim());
        if (error === null && stdout.trim() !== '' && Number.isFinite(gbps)) resolve(gbps);
        else resolve(`native loop failed: ${stderr.trim() || messageOf(error)}`);
      },
    );
  });
}

/** pciebw on all GPUs (verdicts), each GPU alone (time), and against the native copy loop. */
async function pcieCheck(
  steps: Steps,
  nvml: Nvml,
  probe: CudaProbe,
  tables: Tables,
  settings: Settings,
): Promise<string> {
  console.log('running pciebw…');
  const create = (load: NvmlLoad): Check =>
    createPcieBwCheck({
      nvml: load,
      cuda: { ok: true, probe },
      thresholdGBps: BW_THRESHOLD_GBPS,
      copyBytes: COPY_BYTES,
      repetitions: COPY_REPETITIONS,
    });
  const all = await steps.run('pciebw: all GPUs', 120_000, (signal) =>
    create({ ok: true, nvml }).run(contextOf(signal)),
  );
  const alone = new Map<string, Step<CheckOutcome>>();
  // After a hang, each GPU alone would only time out again.
  for (const table of all.ok ? tables.values() : []) {
    alone.set(
      String(table.gpu.index),
      await steps.run(`pciebw: GPU ${table.gpu.index} alone`, 30_000, (signal) =>
        create(oneGpuView(nvml, table.gpu)).run(contextOf(signal)),
      ),
    );
  }
  file(tables, 'pciebw', 'time, this GPU alone', all, (_device, table) => {
    const step = alone.get(String(table.gpu.index));
    if (step === undefined) return {};
    if (!step.ok) return { measured: step.problem };
    const seconds = step.ms / 1000;
    return {
      measured: `${seconds.toFixed(3)} s`,
      target: `≤ ${PCIEBW_TARGET_S} s`,
      ratio: ratioOf(seconds, PCIEBW_TARGET_S),
    };
  });
  if (all.ok) await referenceRows(all.value, tables, settings.reference);
  const seconds = all.ok ? all.ms / 1000 : Number.NaN;
  return `pciebw: all ${tables.size} GPUs ${all.ok ? `${seconds.toFixed(2)} s, ${(seconds / tables.size).toFixed(3)} s per GPU (target ≤ ${PCIEBW_TARGET_S} s: ratio ${ratioOf(seconds / tables.size, PCIEBW_TARGET_S)})` : all.problem}`;
}

/** Per GPU and direction: the probe's GB/s in the check divided by the native loop's, run next. */
async function referenceRows(outcome: CheckOutcome, tables: Tables, reference: string) {
  for (const table of tables.values()) {
    const device = outcome.devices.find((d) => d.id === String(table.gpu.index));
    for (const direction of ['h2d', 'd2h'] as const) {
      const item = `${direction} ÷ native`;
      const probe = numberIn(device, `${direction}GBps`);
      if (probe === undefined) {
        table.rows.push(row('pciebw', item, { measured: 'no probe figure (see the reason)' }));
      } else if (table.ordinal === undefined || !existsSync(reference)) {
        const why = table.ordinal === undefined ? 'CUDA does not see this GPU' : 'no native loop';
        table.rows.push(row('pciebw', item, { measured: `probe ${probe} GB/s; ${why}` }));
      } else {
        const native = await nativeCopy(reference, table.ordinal, direction);
        if (typeof native === 'string') {
          table.rows.push(row('pciebw', item, { measured: `probe ${probe} GB/s; ${native}` }));
        } else {
          const share = probe / native;
          table.rows.push(
            row('pciebw', item, {
              measured: `${share.toFixed(3)} (probe ${probe} / native ${native.toFixed(2)} GB/s)`,
              target: `≥ ${REFERENCE_TARGET_RATIO}`,
              ratio: ratioOf(share, REFERENCE_TARGET_RATIO, 3),
            }),
          );
        }
      }
    }
  }
}

/** gpumem on every GPU (they must be idle): the kernels' first run on real hardware. */
async function gpuMemCheck(steps: Steps, nvml: Nvml, probe: CudaProbe, tables: Tables) {
  console.log('running gpumem…');
  const outcome = await steps.run('gpumem: all GPUs', 150_000, (signal) =>
    createGpuMemCheck({ nvml: { ok: true, nvml }, cuda: { ok: true, probe } }).run(
      contextOf(signal),
    ),
  );
  const seconds = outcome.ok ? `${(outcome.ms / 1000).toFixed(1)} s, all GPUs` : '';
  file(tables, 'gpumem', 'run time', outcome, () => ({ measured: seconds }));
  if (!outcome.ok) return;
  for (const table of tables.values()) {
    const device = outcome.value.devices.find((d) => d.id === String(table.gpu.index));
    const datasheet = expectedFigures(table.gpu.name);
    const figure = (item: string, key: string, unit: string, sheet: number | undefined): Row => {
      const value = numberIn(device, key);
      return row('gpumem', item, {
        measured: value === undefined ? 'not measured' : `${value} ${unit}`,
        target: sheet === undefined ? '' : `datasheet ${sheet}`,
        ratio: value === undefined || sheet === undefined ? '' : ratioOf(value, sheet),
      });
    };
    const mismatches = numberIn(device, 'patternMismatches');
    const tested = numberIn(device, 'patternBytesTested');
    table.rows.push(
      figure('HBM', 'hbmGBps', 'GB/s', datasheet?.hbmGBps),
      row('gpumem', 'pattern', {
        measured:
          mismatches === undefined
            ? 'not measured'
            : `${mismatches} mismatches in ${((tested ?? 0) / 1e9).toFixed(1)} GB`,
      }),
      figure('FP32', 'fp32Tflops', 'TFLOPS', datasheet?.fp32Tflops),
      figure('FP64', 'fp64Tflops', 'TFLOPS', datasheet?.fp64Tflops),
    );
  }
}

/**
 * p2pbw on every GPU pair (the GPUs must be idle): its run time for n·(n-1) pairs and each GPU's
 * slowest pair against the node's pair median. A host with one GPU says SKIP, nothing to pair.
 */
async function p2pCheck(steps: Steps, nvml: Nvml, probe: CudaProbe, tables: Tables) {
  console.log('running p2pbw…');
  const outcome = await steps.run('p2pbw: all GPU pairs', 120_000, (signal) =>
    createP2pBwCheck({ nvml: { ok: true, nvml }, cuda: { ok: true, probe } }).run(
      contextOf(signal),
    ),
  );
  const pairs = outcome.ok ? (outcome.value.samples ?? []).length : 0;
  const seconds = outcome.ok ? outcome.ms / 1000 : 0;
  file(tables, 'p2pbw', 'run time', outcome, () => ({
    measured: outcome.ok
      ? `${seconds.toFixed(1)} s, ${pairs} pairs${pairs > 0 ? `, ${(seconds / pairs).toFixed(2)} s per pair` : ''}`
      : '',
  }));
  if (!outcome.ok) return `p2pbw: ${outcome.problem}`;
  for (const table of tables.values()) {
    const device = outcome.value.devices.find((d) => d.id === String(table.gpu.index));
    const median = numberIn(device, 'nodePairMedianGBps');
    const figures = Object.entries(device?.evidence ?? {})
      .filter(([key, value]) => /^(to|from)_\d+_GBps$/.test(key) && typeof value === 'number')
      .map(([, value]) => value as number);
    if (median === undefined || figures.length === 0) continue;
    const slowest = Math.min(...figures);
    table.rows.push(
      row('p2pbw', 'slowest pair', {
        measured: `${slowest} GB/s`,
        target: `node pair median ${median} GB/s`,
        ratio: ratioOf(slowest, median),
      }),
    );
  }
  return `p2pbw: ${pairs} GPU pairs measured in ${seconds.toFixed(1)} s (${outcome.value.reason ?? 'per GPU below'})`;
}

const COLUMNS: readonly (readonly [keyof Row, string])[] = [
  ['check', 'check'],
  ['item', 'item'],
  ['verdict', 'verdict'],
  ['measured', 'measured'],
  ['target', 'target'],
  ['ratio', '÷ target'],
];

/** One Markdown table per GPU, so that a run pastes into docs/gpu-host.md as it is. */
function renderTable(table: GpuTable): string {
  const { gpu, ordinal } = table;
  const header: Row = Object.fromEntries(COLUMNS) as unknown as Row;
  const widths = COLUMNS.map(([key]) =>
    Math.max(...[header, ...table.rows].map((r) => r[key].length)),
  );
  const line = (r: Row): string =>
    `| ${COLUMNS.map(([key], i) => r[key].padEnd(widths[i]!)).join(' | ')} |`;
  return [
    `### GPU ${gpu.index}: ${gpu.name}, ${gpu.pciBusId}, CUDA ordinal ${ordinal ?? 'none'}`,
    '',
    line(header),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...table.rows.map(line),
    '',
    ...table.reasons.map((reason) => `- ${reason}`),
    '',
  ].join('\n');
}

async function main(settings: Settings, steps: Steps): Promise<number> {
  const loaded = await steps.run('NVML load', 30_000, () => loadNvml(settings.nvmlLibrary));
  const nvmlLoad: NvmlLoad = loaded.ok ? loaded.value : { ok: false, reason: loaded.problem };
  const cuda = loadCudaProbe(settings.probeLibrary);
  if (!nvmlLoad.ok) {
    console.log(`NVML ${settings.nvmlLibrary}: unavailable: ${nvmlLoad.reason}`);
    return 1;
  }
  const { nvml } = nvmlLoad;
  const driver = await steps.run('NVML driver version', 10_000, () => nvml.driverVersion());
  const gpus = await steps.run('NVML GPU list', 30_000, () => nvml.devices());
  console.log(
    `NVML ${settings.nvmlLibrary}: driver ${driver.ok ? driver.value : driver.problem}, ${gpus.ok ? `${gpus.value.length} GPUs` : `GPU list ${gpus.problem}`}`,
  );
  console.log(
    `CUDA probe ${settings.probeLibrary}: ${cuda.ok ? 'loaded' : `unavailable: ${cuda.reason}`}`,
  );
  console.log(
    `native copy loop ${settings.reference}: ${existsSync(settings.reference) ? 'present' : 'absent'}`,
  );
  if (!gpus.ok || gpus.value.length === 0) return 1;
  // Every GPU's ordinal, for the tables and the native loop: bus-id lookups, which create no
  // context (the checks themselves look up only the GPUs they measure).
  const list = gpus.value;
  const ordinals = cuda.ok
    ? await steps.run('CUDA ordinals', 30_000, () =>
        Promise.all(list.map((gpu) => cudaOrdinalOf(cuda.probe, gpu))),
      )
    : undefined;
  const tables = new Map(
    list.map((gpu, i): [string, GpuTable] => {
      const ordinal = ordinals?.ok ? ordinals.value[i] : undefined;
      return [String(gpu.index), { gpu, ordinal, rows: [], reasons: [] }];
    }),
  );

  const summary = await nvmlChecks(steps, nvml, tables, settings);
  await xidCheck(steps, nvml, tables, settings);
  if (cuda.ok) {
    summary.push(await pcieCheck(steps, nvml, cuda.probe, tables, settings));
    await gpuMemCheck(steps, nvml, cuda.probe, tables);
    summary.push(await p2pCheck(steps, nvml, cuda.probe, tables));
  } else {
    summary.push(`pciebw, gpumem, p2pbw: not run, the CUDA probe is unavailable: ${cuda.reason}`);
  }

  console.log(`\n## Device check: ${gpus.value.length} GPUs\n`);
  for (const line of summary) console.log(`- ${line}`);
  console.log('');
  for (const table of tables.values()) console.log(renderTable(table));
  await steps.run('NVML shutdown', 10_000, () => nvml.close());
  const inFlight = nvml.callsInFlight() + (cuda.ok ? cuda.probe.callsInFlight() : 0);
  if (inFlight > 0) console.log(`${inFlight} native calls are still in flight (hung)`);
  return inFlight > 0 ? 3 : 0;
}

const settings = readSettings();
const steps = new Steps(settings.budgetMs, settings.stepCapMs);
const code = await main(settings, steps);
if (steps.timedOut.length > 0) {
  console.log(`\nTimed out:\n${steps.timedOut.map((t) => `- ${t}`).join('\n')}`);
}
if (steps.notStarted.length > 0) {
  console.log(`Not started, the budget spent: ${steps.notStarted.join('; ')}`);
}
if (steps.timedOut.length > 0 || code === 3) {
  // Node joins its worker threads at exit, and a thread stuck in the driver never returns.
  console.log('exiting by SIGKILL: a thread may be stuck in the driver');
  process.kill(process.pid, 'SIGKILL');
}
process.exitCode = code;
