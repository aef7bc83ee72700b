/**
 * nvlink: the NVLinks of every GPU and, on NVSwitch systems, the GPU's fabric registration, read
 * from NVML alone (a few dozen calls per GPU, no CUDA, safe on busy GPUs).
 *
 * Verdicts, per GPU:
 * - no NVLink (NVML answers NOT_SUPPORTED, as on PCIe boards without a bridge) → SKIP;
 * - a link down where the GPU's links should be up → FAIL, naming the links;
 * - the fabric probe completed with a failed status, or still not completed at a second round in a
 *   row (Fabric Manager down: CUDA cannot start on an NVSwitch system) → FAIL with the status; not
 *   completed at one round only → WARN: registration takes a while after the driver loads, and the
 *   exporter's first round runs right after a boot, so one reading in progress is not a fault,
 *   nor are links down at that same reading (Fabric Manager trains them): both WARN until then;
 *   where the driver lacks the fabric functions, or the GPU has no fabric (not an NVSwitch
 *   system), that part is skipped alone;
 * - an error counter (replay, recovery, CRC flit, CRC data) of a link rising faster than
 *   AUTOPILOT_NVLINK_ERROR_RATE per second between two rounds → WARN, naming link and counter.
 *
 * Which links "should be up". NVML says which links a GPU has, not which are cabled: a PCIe board
 * with a bridge on two of its GPUs, or a partitioned system, has links that are down by design.
 * So, with AUTOPILOT_NVLINK_EXPECTED_LINKS=auto (the default), a GPU should have as many active
 * links as the GPU of the same model on this node with the most: on an HGX board every GPU has
 * all of its links up, and one GPU short of its siblings is the fault. That alone misses a fault
 * every GPU shares (an NVSwitch lost takes one link from each), so any link this process has seen
 * up before must be up still; a link down since the exporter started is caught by the first rule
 * only. A number instead says how many active links every GPU must have (0: none), for nodes
 * where the siblings are no guide; the seen-before rule then does not apply. A GPU in MIG mode is
 * not judged on its links: NVML reports them down there (DCGM's DcgmTopology.cpp works round the
 * same report, NVIDIA bug 200682374).
 *
 * The rate. DCGM's NVLink health watch (modules/health/DcgmHealthWatch.cpp, MonitorNVLink4Fields)
 * compares each GPU's total of the four counters over the last minute: any rise of replay or
 * recovery fails (DCGM_LIMIT_MAX_NVLINK_ERROR, 1), a CRC rise warns and fails from 100 per second
 * (DCGM_LIMIT_MAX_NVLINK_CRC_ERROR, "RM has informed us that CRC errors only matter at rates of
 * 100+ per second", common/DcgmGPUHardwareLimits.h). The default here is that 100 per second, per
 * link and counter, between two rounds; 0 warns on any rise, as DCGM does for replay and recovery.
 * The first round has no rate; a counter that went down (a driver reload resets them) did not rise.
 */

import { ConfigError, setting, type SettingValues } from '../config/setting.js';
import {
  NVLINK_COUNTERS,
  type GpuDevice,
  type GpuFabric,
  type Nvml,
  type NvmlLoad,
  type NvLinkCounter,
  type NvLinks,
} from '../native/ports.js';
import type { Check, CheckOutcome, DeviceResult, Evidence, Sample } from './check.js';
import { gpuCheckBase, gpuSample, judgeEach, withGpus } from './gpu-common.js';
import type { CheckModule } from './module.js';

/** NVML_NVLINK_MAX_LINKS (nvml.h). */
const MAX_LINKS = 36;
const NVML_GPU_FABRIC_STATE_COMPLETED = 3;
const FABRIC_STATES = ['not supported', 'not started', 'in progress', 'completed'];

/** nvmlReturn_t names (nvml.h), for the fabric probe's status. */
const NVML_RETURN_NAMES: Readonly<Record<number, string>> = {
  0: 'NVML_SUCCESS',
  1: 'NVML_ERROR_UNINITIALIZED',
  2: 'NVML_ERROR_INVALID_ARGUMENT',
  3: 'NVML_ERROR_NOT_SUPPORTED',
  4: 'NVML_ERROR_NO_PERMISSION',
  5: 'NVML_ERROR_ALREADY_INITIALIZED',
  6: 'NVML_ERROR_NOT_FOUND',
  7: 'NVML_ERROR_INSUFFICIENT_SIZE',
  8: 'NVML_ERROR_INSUFFICIENT_POWER',
  9: 'NVML_ERROR_DRIVER_NOT_LOADED',
  10: 'NVML_ERROR_TIMEOUT',
  11: 'NVML_ERROR_IRQ_ISSUE',
  12: 'NVML_ERROR_LIBRARY_NOT_FOUND',
  13: 'NVML_ERROR_FUNCTION_NOT_FOUND',
  14: 'NVML_ERROR_CORRUPTED_INFOROM',
  15: 'NVML_ERROR_GPU_IS_LOST',
  16: 'NVML_ERROR_RESET_REQUIRED',
  17: 'NVML_ERROR_OPERATING_SYSTEM',
  18: 'NVML_ERROR_LIB_RM_VERSION_MISMATCH',
  19: 'NVML_ERROR_IN_USE',
  20: 'NVML_ERROR_MEMORY',
  21: 'NVML_ERROR_NO_DATA',
  22: 'NVML_ERROR_VGPU_ECC_NOT_SUPPORTED',
  23: 'NVML_ERROR_INSUFFICIENT_RESOURCES',
  24: 'NVML_ERROR_FREQ_NOT_SUPPORTED',
  25: 'NVML_ERROR_ARGUMENT_VERSION_MISMATCH',
  26: 'NVML_ERROR_DEPRECATED',
  27: 'NVML_ERROR_NOT_READY',
  28: 'NVML_ERROR_GPU_NOT_FOUND',
  29: 'NVML_ERROR_INVALID_STATE',
  30: 'NVML_ERROR_RESET_TYPE_NOT_SUPPORTED',
  999: 'NVML_ERROR_UNKNOWN',
};

export function nvmlReturnName(code: number): string {
  return `${NVML_RETURN_NAMES[code] ?? 'unknown nvmlReturn_t'} (${code})`;
}

/** auto, or how many active links every GPU must have. */
export type ExpectedLinks = 'auto' | number;

export const DEFAULT_NVLINK_ERROR_RATE = 100;

function parseErrorRate(value: string): number {
  const rate = /^(?:\d+(?:\.\d+)?|\.\d+)$/.test(value.trim()) ? Number(value) : Number.NaN;
  if (!Number.isFinite(rate)) {
    throw new ConfigError(
      'AUTOPILOT_NVLINK_ERROR_RATE',
      value,
      'errors per second, 0 or more, such as 100 or 0.5',
    );
  }
  return rate;
}

function parseExpectedLinks(value: string): ExpectedLinks {
  const text = value.trim();
  if (text === 'auto') return 'auto';
  const count = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!(count >= 0 && count <= MAX_LINKS)) {
    throw new ConfigError(
      'AUTOPILOT_NVLINK_EXPECTED_LINKS',
      value,
      `auto, or a whole number of links from 0 to ${MAX_LINKS}`,
    );
  }
  return count;
}

const NVLINK_SETTINGS = {
  AUTOPILOT_NVLINK_ERROR_RATE: setting({
    fallback: String(DEFAULT_NVLINK_ERROR_RATE),
    help: "errors per second of one NVLink error counter (replay, recovery, CRC flit, CRC data) of one link, between two nvlink runs, above which nvlink WARNs (0: any rise); 100 is DCGM's CRC error limit",
    parse: parseErrorRate,
  }),
  AUTOPILOT_NVLINK_EXPECTED_LINKS: setting({
    fallback: 'auto',
    help: 'active NVLinks every GPU must have, or auto: as many as the GPU of the same model on this node with the most, and every link seen up since the exporter started',
    parse: parseExpectedLinks,
  }),
};

export type NvLinkSettingValues = SettingValues<typeof NVLINK_SETTINGS>;

/** What one round read of a GPU. */
export interface NvLinkReading {
  readonly nvlinks: NvLinks;
  readonly fabric: GpuFabric;
  readonly mig: boolean;
}

/** What the check remembers of one GPU between rounds. */
export interface NvLinkMemory {
  /** When the counters were read. */
  readonly at: number;
  /** `${link}/${counter}` → count. */
  readonly counts: ReadonlyMap<string, number>;
  /** Links seen active since the exporter started. */
  readonly seenUp: ReadonlySet<number>;
  /** When the fabric was first seen not completed, in this spell; undefined when it was completed. */
  readonly fabricPendingSince?: number;
}

export interface CounterRate {
  readonly link: number;
  readonly counter: NvLinkCounter;
  readonly rise: number;
  readonly perSecond: number;
}

/**
 * How fast each counter rose since the last round, per second; none at the first round, and none
 * for a counter that went down (the driver reloaded and started it again) or was not read before.
 */
export function counterRates(
  nvlinks: NvLinks,
  previous: NvLinkMemory | undefined,
  now: number,
): CounterRate[] {
  if (!nvlinks.supported || previous === undefined || now <= previous.at) return [];
  const seconds = (now - previous.at) / 1000;
  const rates: CounterRate[] = [];
  for (const { link, errors } of nvlinks.links) {
    for (const counter of NVLINK_COUNTERS) {
      const count = errors[counter];
      const before = previous.counts.get(`${link}/${counter}`);
      if (count === undefined || before === undefined || count <= before) continue;
      rates.push({ link, counter, rise: count - before, perSecond: (count - before) / seconds });
    }
  }
  return rates;
}

/**
 * How many active links a GPU should have: the setting's number, or under auto the most any GPU
 * of its model has (undefined where no GPU of the model was read).
 */
export function expectedActiveLinks(
  setting: ExpectedLinks,
  mostOfModel: number | undefined,
): number | undefined {
  return setting === 'auto' ? mostOfModel : setting;
}

/** The links judged down, in link order; empty when none is. */
export function downLinks(
  nvlinks: NvLinks,
  expected: number | undefined,
  seenUp: ReadonlySet<number> | undefined,
): number[] {
  if (!nvlinks.supported) return [];
  const inactive = nvlinks.links.filter((l) => !l.active).map((l) => l.link);
  const active = nvlinks.links.length - inactive.length;
  const short = expected !== undefined && active < expected;
  return inactive.filter((link) => short || seenUp?.has(link) === true);
}

/** Whether the fabric probe has yet to finish (not started, in progress). */
const fabricPending = (fabric: GpuFabric): boolean =>
  fabric.supported && fabric.state !== NVML_GPU_FABRIC_STATE_COMPLETED;

/**
 * Why the fabric is not ready, or undefined when it is or there is none to judge. `pendingBefore`:
 * the previous round also found it not completed, so it is no longer a registration under way.
 */
export function fabricProblem(
  fabric: GpuFabric,
  pendingBefore = true,
): { readonly reason: string; readonly failed: boolean } | undefined {
  if (!fabric.supported) return undefined;
  if (fabricPending(fabric)) {
    const state = FABRIC_STATES[fabric.state] ?? `state ${fabric.state}`;
    return pendingBefore
      ? {
          reason: `fabric registration ${state}, not completed at two rounds in a row: is the NVIDIA Fabric Manager running?`,
          failed: true,
        }
      : {
          reason: `fabric registration ${state}, not completed yet: FAIL if it is still not at the next run`,
          failed: false,
        };
  }
  if (fabric.status !== 0) {
    return { reason: `fabric registration failed: ${nvmlReturnName(fabric.status)}`, failed: true };
  }
  return undefined;
}

function fabricEvidence(fabric: GpuFabric): Evidence {
  if (!fabric.supported) return { fabric: `not read: ${fabric.reason}` };
  return {
    fabricState: FABRIC_STATES[fabric.state] ?? fabric.state,
    fabricStatus: nvmlReturnName(fabric.status),
    fabricHealthSummary: fabric.healthSummary ?? null,
    fabricSource: fabric.source,
  };
}

export interface NvLinkJudgement {
  readonly id: string;
  readonly reading: NvLinkReading;
  readonly previous: NvLinkMemory | undefined;
  readonly now: number;
  /** Active links the GPU should have (expectedActiveLinks). */
  readonly expected: number | undefined;
  /** Whether links seen up before must still be up (auto). */
  readonly seenBeforeRule: boolean;
  readonly errorRate: number;
}

function remember(
  reading: NvLinkReading,
  previous: NvLinkMemory | undefined,
  now: number,
): NvLinkMemory {
  const counts = new Map<string, number>();
  const seenUp = new Set(previous?.seenUp ?? []);
  if (reading.nvlinks.supported) {
    for (const { link, active, errors } of reading.nvlinks.links) {
      if (active) seenUp.add(link);
      for (const counter of NVLINK_COUNTERS) {
        const count = errors[counter];
        if (count !== undefined) counts.set(`${link}/${counter}`, count);
      }
    }
  }
  const pendingSince = fabricPending(reading.fabric)
    ? (previous?.fabricPendingSince ?? now)
    : undefined;
  return {
    at: now,
    counts,
    seenUp,
    ...(pendingSince === undefined ? {} : { fabricPendingSince: pendingSince }),
  };
}

/** "link 2 crc_flit +500 (50.0/s)". */
function describeRate(r: CounterRate): string {
  return `link ${r.link} ${r.counter} +${r.rise} (${r.perSecond.toFixed(1)}/s)`;
}

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

/** Pure: the verdict for one GPU, and what to remember of it for the next round. */
export function judgeNvLink(j: NvLinkJudgement): {
  readonly device: DeviceResult;
  readonly memory: NvLinkMemory;
} {
  const { id, reading } = j;
  const memory = remember(reading, j.previous, j.now);
  const { nvlinks } = reading;
  if (!nvlinks.supported) {
    const reason = `no NVLink on this GPU (${nvlinks.reason})`;
    return { device: { id, verdict: 'SKIP', reason, evidence: {} }, memory };
  }
  const active = nvlinks.links.filter((l) => l.active).length;
  const down = reading.mig
    ? []
    : downLinks(nvlinks, j.expected, j.seenBeforeRule ? j.previous?.seenUp : undefined);
  const rates = counterRates(nvlinks, j.previous, j.now);
  const fast = rates.filter((r) => r.perSecond > j.errorRate);
  const evidence: Evidence = {
    activeLinks: active,
    totalLinks: nvlinks.links.length,
    expectedActiveLinks: reading.mig ? null : (j.expected ?? null),
    downLinks: nvlinks.links
      .filter((l) => !l.active)
      .map((l) => l.link)
      .join(','),
    migEnabled: reading.mig,
    errorRates: rates.map(describeRate).join(', '),
    ...fabricEvidence(reading.fabric),
  };
  const links: string[] = [];
  if (down.length > 0) {
    const expected = j.expected === undefined ? '' : `, ${j.expected} expected`;
    links.push(
      `${plural(down.length, 'NVLink')} down: ${down.map((l) => `link ${l}`).join(', ')} (${active} of ${nvlinks.links.length} active${expected})`,
    );
  } else if (!reading.mig && j.expected !== undefined && active < j.expected) {
    links.push(`${active} of ${nvlinks.links.length} NVLinks active, ${j.expected} expected`);
  }
  const fabric = fabricProblem(reading.fabric, j.previous?.fabricPendingSince !== undefined);
  // While the fabric registration is still under way at its first reading, Fabric Manager is
  // training the links: links down then are part of the same start-up, judged at the next run.
  const training = fabric !== undefined && !fabric.failed;
  const failures = training ? [] : [...links];
  if (fabric?.failed === true) failures.push(fabric.reason);
  if (failures.length > 0) {
    return {
      device: { id, verdict: 'FAIL', reason: failures.join('; '), evidence, compatValue: 1 },
      memory,
    };
  }
  const warnings: string[] = training ? [...links] : [];
  if (fabric !== undefined) warnings.push(fabric.reason);
  if (fast.length > 0) {
    const named = fast.map(describeRate).join(', ');
    warnings.push(`NVLink error counters rising faster than ${j.errorRate}/s: ${named}`);
  }
  if (warnings.length > 0) {
    const reason = warnings.join('; ');
    return { device: { id, verdict: 'WARN', reason, evidence, compatValue: 0 }, memory };
  }
  const parts = [`${active} of ${nvlinks.links.length} NVLinks active`];
  if (reading.mig) parts.push('MIG enabled: link state not judged');
  parts.push(
    j.previous === undefined
      ? 'error rates from the next run on'
      : `no error counter rising faster than ${j.errorRate}/s`,
  );
  if (reading.fabric.supported) parts.push('fabric registration completed');
  return {
    device: { id, verdict: 'PASS', reason: parts.join(', '), evidence, compatValue: 0 },
    memory,
  };
}

/**
 * The samples of one GPU: link state, raw counters, fabric readiness and state.
 *
 * A counter at 0 has no series. Every link's state is kept (18 links × 8 GPUs = 144 series on an
 * HGX H200 node), but a series per link and counter would be 576 more, a quarter of the node's
 * 2,000-series budget (issue 21), and on a healthy node every one of them reads 0. The price: a
 * counter's series appears at its first non-zero reading, so PromQL's increase() and changes()
 * miss that first jump (there is no earlier sample); the check itself still sees it (it remembers
 * the zeros), AutopilotGPUNVLinkErrors is gated on its WARN and also names a series that is new in
 * its window, and the dashboard's increase() shows the rises after the first.
 */
export function nvLinkSamples(gpu: GpuDevice, reading: NvLinkReading): Sample[] {
  const samples: Sample[] = [];
  if (reading.nvlinks.supported) {
    for (const { link, active, errors } of reading.nvlinks.links) {
      samples.push(
        gpuSample('autopilot_gpu_nvlink_up', gpu, active ? 1 : 0, { link: String(link) }),
      );
      for (const counter of NVLINK_COUNTERS) {
        const count = errors[counter];
        if (count === undefined || count === 0) continue;
        samples.push(
          gpuSample('autopilot_gpu_nvlink_errors_total', gpu, count, {
            link: String(link),
            counter,
          }),
        );
      }
    }
  }
  const { fabric } = reading;
  if (fabric.supported) {
    const ready = fabric.state === NVML_GPU_FABRIC_STATE_COMPLETED && fabric.status === 0;
    samples.push(gpuSample('autopilot_gpu_fabric_ready', gpu, ready ? 1 : 0));
    samples.push(gpuSample('autopilot_gpu_fabric_state', gpu, fabric.state));
  }
  return samples;
}

const NO_FABRIC: GpuFabric = { supported: false, reason: 'the GPU has no NVLink' };

/** One GPU's reading; the fabric is asked only of a GPU with NVLink. */
async function readGpu(nvml: Nvml, gpu: GpuDevice): Promise<NvLinkReading> {
  const nvlinks = await nvml.nvLinks(gpu.index);
  if (!nvlinks.supported) return { nvlinks, fabric: NO_FABRIC, mig: false };
  const [fabric, mig] = await Promise.all([nvml.gpuFabric(gpu.index), nvml.migEnabled(gpu.index)]);
  return { nvlinks, fabric, mig };
}

/** The most active links of any GPU of each model (GPU name), over the readings that succeeded. */
function mostActiveByModel(
  gpus: readonly GpuDevice[],
  readings: ReadonlyMap<number, NvLinkReading>,
): Map<string, number> {
  const most = new Map<string, number>();
  for (const gpu of gpus) {
    const reading = readings.get(gpu.index);
    if (reading === undefined || !reading.nvlinks.supported || reading.mig) continue;
    const active = reading.nvlinks.links.filter((l) => l.active).length;
    most.set(gpu.name, Math.max(most.get(gpu.name) ?? 0, active));
  }
  return most;
}

export interface NvLinkCheckDeps {
  readonly nvml: NvmlLoad;
  readonly timeoutMs?: number;
  readonly now?: () => number;
  readonly errorRate?: number | undefined;
  readonly expectedLinks?: ExpectedLinks | undefined;
}

export const NVLINK_SUMMARY =
  'NVLink state and error counters of every GPU, and the fabric registration on NVSwitch systems, from NVML';

const TEXT = gpuCheckBase('[[ NVLINK ]]');

export function createNvLinkCheck(deps: NvLinkCheckDeps): Check {
  const now = deps.now ?? Date.now;
  const errorRate = deps.errorRate ?? DEFAULT_NVLINK_ERROR_RATE;
  const setting = deps.expectedLinks ?? 'auto';
  // By UUID: an NVML index can name another GPU after the driver enumerates them again.
  const memories = new Map<string, NvLinkMemory>();
  const run = (nvml: Nvml, gpus: readonly GpuDevice[]): Promise<CheckOutcome> =>
    readAll(nvml, gpus).then(({ readings, failures }) => {
      const most = mostActiveByModel(gpus, readings);
      return judgeEach(gpus, (gpu) => {
        const reading = readings.get(gpu.index);
        if (reading === undefined) {
          return Promise.reject(failures.get(gpu.index) ?? new Error('not read'));
        }
        const key = gpu.uuid === '' ? `index ${gpu.index}` : gpu.uuid;
        const { device, memory } = judgeNvLink({
          id: String(gpu.index),
          reading,
          previous: memories.get(key),
          now: now(),
          expected: expectedActiveLinks(setting, most.get(gpu.name)),
          seenBeforeRule: setting === 'auto',
          errorRate,
        });
        memories.set(key, memory);
        return Promise.resolve({ device, samples: nvLinkSamples(gpu, reading) });
      });
    });
  return {
    ...TEXT,
    name: 'nvlink',
    summary: NVLINK_SUMMARY,
    banner: 'NVLink test',
    compatHealth: 'nvlink',
    usesGpu: true,
    exclusive: false,
    timeoutMs: deps.timeoutMs ?? 30_000,
    run: () => withGpus(deps.nvml, run),
  };
}

/** Every GPU read first, since each is judged against its siblings; a failed read is kept apart. */
async function readAll(
  nvml: Nvml,
  gpus: readonly GpuDevice[],
): Promise<{ readings: Map<number, NvLinkReading>; failures: Map<number, Error> }> {
  const readings = new Map<number, NvLinkReading>();
  const failures = new Map<number, Error>();
  await Promise.all(
    gpus.map((gpu) =>
      readGpu(nvml, gpu).then(
        (reading) => readings.set(gpu.index, reading),
        (error: unknown) =>
          failures.set(gpu.index, error instanceof Error ? error : new Error(String(error))),
      ),
    ),
  );
  return { readings, failures };
}

export const nvlinkModule: CheckModule<NvLinkSettingValues> = {
  name: 'nvlink',
  summary: NVLINK_SUMMARY,
  // In the default round (cheap: NVML reads only) so that a link lost between jobs is seen within a
  // round, not at the next quarterly diagnostic. IBM's values set PERIODIC_CHECKS without it: the
  // chart's default list adds it, docs/upgrading.md says so.
  policy: { periodic: 7, exclusive: false, nvmlOnly: true },
  metrics: [
    'autopilot_gpu_nvlink_up',
    'autopilot_gpu_nvlink_errors_total',
    'autopilot_gpu_fabric_ready',
    'autopilot_gpu_fabric_state',
  ],
  formatText: TEXT.formatText,
  settings: { after: 'AUTOPILOT_XID_WARN', specs: NVLINK_SETTINGS },
  create: (config, ports, _extras, settings) =>
    createNvLinkCheck({
      nvml: ports.nvml,
      timeoutMs: config.nvmlCheckTimeoutMs,
      now: () => ports.clock.now(),
      errorRate: settings.AUTOPILOT_NVLINK_ERROR_RATE,
      expectedLinks: settings.AUTOPILOT_NVLINK_EXPECTED_LINKS,
    }),
};
