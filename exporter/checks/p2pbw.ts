/**
 * p2pbw: GPU-to-GPU copy bandwidth, measured through the CUDA probe library. For every ordered
 * pair of GPUs with peer access (cudaDeviceCanAccessPeer), a unidirectional cudaMemcpyPeerAsync of
 * 64 to 256 MiB with peer access enabled, timed with events: n·(n-1) pairs, 56 on an 8-GPU node.
 * Exclusive like gpumem: it runs only when NVML counts no compute process on any GPU (a count NVML
 * cannot give is not idle either), and each pair is checked again just before it is measured.
 *
 * Verdict per GPU, relative to the node's pair median, so no table of per-SKU NVLink figures is
 * needed: a pair below AUTOPILOT_P2PBW_FAIL_SHARE (half) of the median is a FAIL-level pair, below
 * AUTOPILOT_P2PBW_WARN_SHARE (80 %) a WARN-level one, and a GPU's verdict is the worst of the slow
 * pairs attributed to it, named in its reason.
 *
 * Attribution: a copy from A to B runs over one path, and a slow one cannot say which end is at
 * fault, so a slow pair counts against both GPUs, except where one end is slow with most of its
 * peers: that GPU (more than half of its measured pairs slow) is the likely culprit, and its slow
 * pairs count against it alone, so one bad GPU does not flag all the others. A link slow between
 * A and B only flags A and B. The judgement is only as good as the median: when most pairs are
 * slow (one bad GPU of three), the median is slow too and nothing stands out.
 */

import {
  CudaError,
  type CudaProbe,
  type CudaProbeLoad,
  type GpuDevice,
  type Nvml,
  type NvmlLoad,
} from '../native/ports.js';
import { failWarnShares, type SettingValues } from '../config/setting.js';
import {
  wholeNumberParam,
  type Check,
  type CheckContext,
  type CheckOutcome,
  type DeviceResult,
  type Evidence,
  type RawParams,
  type Sample,
  type Verdict,
} from './check.js';
import { withDeadline, type CheckModule } from './module.js';
import {
  cudaOrdinalOf,
  gpuCheckBase,
  medianOf,
  noCudaDevice,
  notIdleGpus,
  notIdleSubject,
  occupancyOf,
  withGpusAndCuda,
} from './gpu-common.js';

const MiB = 1024 * 1024;
/**
 * The copy size parameter (`mib`). 64 MiB by default: at about 400 GB/s (NVLink 4) a copy lasts
 * about 0.17 ms, far above launch overhead and event resolution, and 10 of them time well; larger
 * copies add device memory and time (and host memmove on the fake runtime) for no better figure.
 */
export const P2P_MIB = { min: 64, max: 256, fallback: 64 } as const;
/** Timed copies per pair, after one warm-up. */
const REPETITIONS = 10;

/** The outcome of one ordered pair, by NVML index. */
export type PairResult =
  | { readonly src: number; readonly dst: number; readonly gbps: number }
  | { readonly src: number; readonly dst: number; readonly noPeerAccess: true }
  | { readonly src: number; readonly dst: number; readonly error: string };

type MeasuredPair = Extract<PairResult, { gbps: number }>;

/** Shares of the node's pair median: FAIL below `fail`, WARN below `warn` (fail below warn). */
export interface P2pShares {
  readonly warn: number;
  readonly fail: number;
}

export const DEFAULT_P2PBW_SHARES: P2pShares = { warn: 0.8, fail: 0.5 };

const isMeasured = (pair: PairResult): pair is MeasuredPair => 'gbps' in pair;
const involves = (pair: PairResult, gpu: number): boolean => pair.src === gpu || pair.dst === gpu;
const other = (pair: PairResult, gpu: number): number => (pair.src === gpu ? pair.dst : pair.src);
const pairName = (pair: PairResult): string => `${pair.src}→${pair.dst}`;

function round(value: number): number {
  return Number(value.toFixed(2));
}

/** The slow pairs (below the WARN share of the median), each with its level. */
function slowPairs(
  measured: readonly MeasuredPair[],
  median: number,
  shares: P2pShares,
): Map<MeasuredPair, 'FAIL' | 'WARN'> {
  const slow = new Map<MeasuredPair, 'FAIL' | 'WARN'>();
  for (const pair of measured) {
    if (pair.gbps < shares.fail * median) slow.set(pair, 'FAIL');
    else if (pair.gbps < shares.warn * median) slow.set(pair, 'WARN');
  }
  return slow;
}

/** GPUs slow with most of their peers: more than half of their measured pairs are slow. */
function culprits(
  gpus: readonly number[],
  measured: readonly MeasuredPair[],
  slow: ReadonlyMap<MeasuredPair, unknown>,
): Set<number> {
  const found = new Set<number>();
  for (const gpu of gpus) {
    const own = measured.filter((pair) => involves(pair, gpu));
    const ownSlow = own.filter((pair) => slow.has(pair));
    if (own.length >= 2 && ownSlow.length * 2 > own.length) found.add(gpu);
  }
  return found;
}

/** Each pair of the GPU as evidence: to_<peer>_GBps, from_<peer>_GBps; null where not measured. */
function pairEvidence(gpu: number, pairs: readonly PairResult[]): Record<string, number | null> {
  const evidence: Record<string, number | null> = {};
  for (const pair of pairs.filter((p) => involves(p, gpu))) {
    const key = pair.src === gpu ? `to_${pair.dst}_GBps` : `from_${pair.src}_GBps`;
    evidence[key] = isMeasured(pair) ? round(pair.gbps) : null;
  }
  return evidence;
}

function describeSlow(pair: MeasuredPair, median: number): string {
  return `${pairName(pair)} ${round(pair.gbps)} GB/s (${round(pair.gbps / median)} of the median)`;
}

/** What the judgement of every GPU shares. */
interface Node {
  readonly pairs: readonly PairResult[];
  readonly median: number | undefined;
  readonly slow: ReadonlyMap<MeasuredPair, 'FAIL' | 'WARN'>;
  readonly culprits: ReadonlySet<number>;
}

/** Pure: one GPU's verdict from its pairs. */
function judgeGpu(gpu: number, node: Node): DeviceResult {
  const { pairs, median, slow } = node;
  const own = pairs.filter((pair) => involves(pair, gpu));
  const ownSlow = own.filter(isMeasured).filter((pair) => slow.has(pair));
  const culprit = node.culprits.has(gpu);
  // A slow pair with a culprit counts against the culprit alone.
  const attributed = culprit
    ? ownSlow
    : ownSlow.filter((pair) => !node.culprits.has(other(pair, gpu)));
  const excused = ownSlow.filter((pair) => !attributed.includes(pair));
  const evidence: Evidence = {
    ...pairEvidence(gpu, pairs),
    ...(median === undefined ? {} : { nodePairMedianGBps: round(median) }),
    slowPairs: attributed.map(pairName).join(', '),
  };
  const base = { id: String(gpu), evidence };
  if (attributed.length > 0 && median !== undefined) {
    const verdict: Verdict = attributed.some((pair) => slow.get(pair) === 'FAIL') ? 'FAIL' : 'WARN';
    const measuredCount = own.filter(isMeasured).length;
    const lead = culprit
      ? `slow with most of its peers (${attributed.length} of ${measuredCount} pairs)`
      : 'slow peer copies';
    const list = attributed.map((pair) => describeSlow(pair, median)).join(', ');
    return { ...base, verdict, reason: `${lead}: ${list}; node pair median ${round(median)} GB/s` };
  }
  const failed = own.filter((pair) => 'error' in pair);
  if (failed.length > 0) {
    const list = failed.map((pair) => `${pairName(pair)}: ${'error' in pair ? pair.error : ''}`);
    return { ...base, verdict: 'ERROR', reason: `peer copy failed: ${list.join('; ')}` };
  }
  const measured = own.filter(isMeasured);
  if (measured.length === 0 || median === undefined) {
    return { ...base, verdict: 'SKIP', reason: 'no peer access to or from any other GPU' };
  }
  return { ...base, verdict: 'PASS', reason: passReason(gpu, own, measured, excused, median) };
}

function passReason(
  gpu: number,
  own: readonly PairResult[],
  measured: readonly MeasuredPair[],
  excused: readonly MeasuredPair[],
  median: number,
): string {
  const slowest = measured.reduce((a, b) => (b.gbps < a.gbps ? b : a));
  const parts = [
    `${measured.length} pairs, slowest ${pairName(slowest)} ${round(slowest.gbps)} GB/s, node pair median ${round(median)} GB/s`,
  ];
  const blamed = [...new Set(excused.map((pair) => other(pair, gpu)))];
  if (blamed.length > 0) {
    parts.push(`slow only with GPU ${blamed.join(', ')}, slow with most of its peers`);
  }
  const without = [
    ...new Set(own.filter((pair) => 'noPeerAccess' in pair).map((p) => other(p, gpu))),
  ];
  if (without.length > 0) parts.push(`no peer access with GPU ${without.join(', ')}`);
  return parts.join('; ');
}

/**
 * Pure: the verdict of each GPU (NVML indexes, in order) from the node's pairs; `median` is the
 * median of the measured pairs' GB/s, undefined when none was measured.
 */
export function judgeP2p(
  gpus: readonly number[],
  pairs: readonly PairResult[],
  shares: P2pShares = DEFAULT_P2PBW_SHARES,
): { readonly devices: readonly DeviceResult[]; readonly median: number | undefined } {
  const measured = pairs.filter(isMeasured);
  const median = medianOf(
    measured.map((pair) => pair.gbps),
    1,
  );
  const slow = median === undefined ? new Map() : slowPairs(measured, median, shares);
  const node: Node = { pairs, median, slow, culprits: culprits(gpus, measured, slow) };
  return { devices: gpus.map((gpu) => judgeGpu(gpu, node)), median };
}

/** Pure: the `mib` parameter, validated; throws ParamError naming it. */
export function parseP2pParams(raw: RawParams): { mib: string } {
  return {
    mib: String(wholeNumberParam('mib', raw.mib, P2P_MIB.fallback, P2P_MIB.min, P2P_MIB.max)),
  };
}

export interface P2pBwCheckDeps {
  readonly nvml: NvmlLoad;
  readonly cuda: CudaProbeLoad;
  /** DEFAULT_P2PBW_SHARES when absent. */
  readonly shares?: P2pShares;
  /** Replaces the `mib` parameter's size (tests on the fake runtime copy less). */
  readonly copyBytes?: number;
  readonly repetitions?: number;
}

export const P2PBW_SUMMARY =
  'GPU-to-GPU peer copy bandwidth of every GPU pair with P2P access, on idle GPUs (exclusive)';

const TEXT = gpuCheckBase('[[ P2P-BW ]]');

function skipped(id: number, reason: string): DeviceResult {
  return { id: String(id), verdict: 'SKIP', reason, evidence: {} };
}

/** A GPU that stopped being idle during the run: its remaining pairs are not measured. */
type Busy = Map<number, string>;

/** Why the GPU must not be measured now, or undefined. Remembered for the rest of the run. */
async function busyNow(nvml: Nvml, gpu: number, busy: Busy): Promise<string | undefined> {
  if (busy.has(gpu)) return busy.get(gpu);
  const occupancy = await occupancyOf(nvml, gpu);
  if (occupancy.state === 'idle') return undefined;
  const reason = `not idle any more during the run (${occupancy.reason}), its remaining pairs not measured`;
  busy.set(gpu, reason);
  return reason;
}

interface Candidate {
  readonly index: number;
  readonly ordinal: number;
}

/** Every ordered pair of candidates, one at a time so that no two copies share a link. */
async function measurePairs(
  nvml: Nvml,
  cuda: CudaProbe,
  candidates: readonly Candidate[],
  copy: { readonly bytes: number; readonly repetitions: number; readonly signal: AbortSignal },
  busy: Busy,
): Promise<PairResult[]> {
  const pairs: PairResult[] = [];
  for (const a of candidates) {
    for (const b of candidates) {
      if (a === b) continue;
      copy.signal.throwIfAborted();
      const [src, dst] = [a.index, b.index];
      if (!(await cuda.canAccessPeer(a.ordinal, b.ordinal))) {
        pairs.push({ src, dst, noPeerAccess: true });
        continue;
      }
      if ((await busyNow(nvml, src, busy)) !== undefined) continue;
      if ((await busyNow(nvml, dst, busy)) !== undefined) continue;
      try {
        const gbps = await cuda.p2pBandwidth(a.ordinal, b.ordinal, copy.bytes, copy.repetitions);
        pairs.push(gbps === undefined ? { src, dst, noPeerAccess: true } : { src, dst, gbps });
      } catch (error) {
        const message = error instanceof CudaError ? error.message : String(error);
        pairs.push({ src, dst, error: message });
      }
    }
  }
  return pairs;
}

/** The GPUs in MIG mode, settled as SKIP: no peer access, and their process list may need privileges. */
async function migGpus(
  nvml: Nvml,
  gpus: readonly GpuDevice[],
  settled: Map<number, DeviceResult>,
): Promise<Set<number>> {
  const mig = new Set<number>();
  for (const gpu of gpus) {
    if (!(await nvml.migEnabled(gpu.index).catch(() => false))) continue;
    mig.add(gpu.index);
    settled.set(gpu.index, skipped(gpu.index, 'MIG is enabled on this GPU (no peer access)'));
  }
  return mig;
}

/** The GPUs CUDA sees, with their ordinals; the others settled as SKIP. */
async function candidatesOf(
  cuda: CudaProbe,
  gpus: readonly GpuDevice[],
  settled: Map<number, DeviceResult>,
): Promise<Candidate[]> {
  const candidates: Candidate[] = [];
  for (const gpu of gpus) {
    const ordinal = await cudaOrdinalOf(cuda, gpu);
    if (ordinal === undefined) {
      settled.set(gpu.index, skipped(gpu.index, `CUDA does not see ${gpu.pciBusId}`));
    } else candidates.push({ index: gpu.index, ordinal });
  }
  return candidates;
}

function pairSamples(pairs: readonly PairResult[]): Sample[] {
  return pairs.filter(isMeasured).map((pair) => ({
    metric: 'autopilot_gpu_p2p_bandwidth_bytes_per_second',
    labels: { src: String(pair.src), dst: String(pair.dst) },
    value: pair.gbps * 1e9,
  }));
}

export function createP2pBwCheck(deps: P2pBwCheckDeps): Check {
  async function measure(
    ctx: CheckContext,
    nvml: Nvml,
    cuda: CudaProbe,
    gpus: readonly GpuDevice[],
  ): Promise<CheckOutcome> {
    const settled = new Map<number, DeviceResult>();
    const mig = await migGpus(nvml, gpus, settled);
    const usable = gpus.filter((gpu) => !mig.has(gpu.index));
    const notIdle = await notIdleGpus(nvml, usable);
    if (notIdle.gpus.length > 0) {
      const reason = `${notIdleSubject(notIdle)}, not tested: ${notIdle.gpus.join(', ')}`;
      return { devices: [], verdict: 'SKIP', reason };
    }
    if ((await cuda.deviceCount()) === 0) {
      return { devices: [], verdict: 'SKIP', reason: noCudaDevice(gpus.length) };
    }
    const candidates = await candidatesOf(cuda, usable, settled);
    const listed = (outcome: CheckOutcome): CheckOutcome => ({
      ...outcome,
      devices: gpus.flatMap((gpu) => settled.get(gpu.index) ?? []),
    });
    if (candidates.length < 2) {
      const reason = `fewer than 2 GPUs to pair (${candidates.length} usable of ${gpus.length})`;
      return listed({ devices: [], verdict: 'SKIP', reason });
    }
    const mib = Number(parseP2pParams(ctx.params).mib);
    const copy = {
      bytes: deps.copyBytes ?? mib * MiB,
      repetitions: deps.repetitions ?? REPETITIONS,
      signal: ctx.signal,
    };
    const busy: Busy = new Map();
    const pairs = await measurePairs(nvml, cuda, candidates, copy, busy);
    if (!pairs.some((pair) => !('noPeerAccess' in pair))) {
      const reason = 'no GPU pair has peer access (cudaDeviceCanAccessPeer)';
      return listed({ devices: [], verdict: 'SKIP', reason });
    }
    const judged = judgeP2p(
      candidates.map((c) => c.index),
      pairs,
      deps.shares,
    );
    for (const device of judged.devices) {
      const why = busy.get(Number(device.id));
      settled.set(Number(device.id), why === undefined ? device : skipped(Number(device.id), why));
    }
    return { ...listed({ devices: [] }), samples: pairSamples(pairs) };
  }

  return {
    ...TEXT,
    name: 'p2pbw',
    summary: P2PBW_SUMMARY,
    banner: 'GPU-to-GPU peer copy bandwidth test',
    compatHealth: 'p2pbw',
    usesGpu: true,
    exclusive: true,
    // 56 pairs on 8 GPUs, each two contexts created and destroyed (a few 100 ms) and 11 copies of
    // 64 MiB by default (0.17 ms each at 400 GB/s over NVLink, 2.7 ms at 25 GB/s over PCIe): under
    // a minute; five minutes leave room for slow context creation.
    timeoutMs: 300_000,
    parseParams: parseP2pParams,
    run: (ctx) =>
      withGpusAndCuda(deps.nvml, deps.cuda, (nvml, cuda, gpus) => measure(ctx, nvml, cuda, gpus)),
  };
}

/** p2pbw's own settings, after gpumem's. */
const P2PBW_SETTINGS = {
  ...failWarnShares('AUTOPILOT_P2PBW', DEFAULT_P2PBW_SHARES, {
    fail: "p2pbw FAIL for a GPU with a peer copy pair below this share of the node's pair median (above 0, below the WARN share)",
    warn: "p2pbw WARN for a GPU with a peer copy pair below this share of the node's pair median (above the FAIL share, at most 1)",
  }),
};

/** P2PBW_SETTINGS parsed, by setting name, as parseConfig hands them to the module. */
export type P2pbwSettingValues = SettingValues<typeof P2PBW_SETTINGS>;

export const p2pbwModule: CheckModule<P2pbwSettingValues> = {
  name: 'p2pbw',
  summary: P2PBW_SUMMARY,
  policy: { exclusive: true, timeoutSettings: ['p2pbw'] },
  metrics: ['autopilot_gpu_p2p_bandwidth_bytes_per_second'],
  formatText: TEXT.formatText,
  statusName: 'P2P',
  settings: { after: 'AUTOPILOT_GPUMEM_SIBLING_SHARE', specs: P2PBW_SETTINGS },
  create: (config, ports, _extras, settings) =>
    withDeadline(
      createP2pBwCheck({
        nvml: ports.nvml,
        cuda: ports.cuda,
        shares: {
          fail: settings.AUTOPILOT_P2PBW_FAIL_SHARE,
          warn: settings.AUTOPILOT_P2PBW_WARN_SHARE,
        },
      }),
      config.checkTimeoutsMs.get('p2pbw'),
    ),
};
