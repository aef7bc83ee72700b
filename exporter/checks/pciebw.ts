/**
 * pciebw: the PCIe link of every GPU from NVML, and pinned host↔device copy bandwidth through the
 * CUDA probe library on the GPUs that are idle. Autopilot ran NVIDIA's bandwidthTest sample for
 * about 3 s per GPU and compared one direction with a fixed 4 GB/s.
 *
 * The link is read first, at idle, for every GPU: busy ones, and where the probe is missing or
 * CUDA sees no device, included. Width is judged there (a link does not drop lanes to save power),
 * generation only under load (it does: an idle link trains down), i.e. from the reads NVML gives
 * while the probe copies. Verdict per GPU, first match wins: width below its maximum → FAIL,
 * measured or not; not measured → SKIP (or ERROR) with the reason; below --bw → FAIL; generation
 * below its maximum under load → FAIL; below AUTOPILOT_PCIEBW_WARN_SHARE (80 %) of what the
 * maximum link carries → WARN; below AUTOPILOT_PCIEBW_SIBLING_SHARE (75 %) of the node's other
 * GPUs → WARN. The reason names the likely cause: "degraded (width)",
 * "degraded (generation)", or "link fine but slow" (which points at the host side: IOMMU, NUMA
 * placement, a PCIe switch).
 *
 * Where NVML answers NOT_SUPPORTED for the link (vGPU guests, some platforms), the GPU has no link
 * judgement and no link metrics, and is otherwise judged as above on its bandwidth alone: the
 * threshold and the node's other GPUs still apply, the share of the link's capacity cannot.
 */

import type {
  CopyDirection,
  CudaProbe,
  CudaProbeLoad,
  GpuDevice,
  HostPlacement,
  Nvml,
  NvmlLoad,
  PcieLinkState,
} from '../native/ports.js';
import { NVML_ERROR_NOT_SUPPORTED, NvmlError } from '../native/ports.js';
import { setting, share, type SettingValues } from '../config/setting.js';
import type { Check, CheckOutcome, DeviceResult, Evidence, Sample } from './check.js';
import { withDeadline, type CheckModule } from './module.js';
import {
  failedMeasurement,
  gpuCheckBase,
  gpuSample,
  measureEachGpu,
  medianOf,
  noCudaDevice,
  withGpus,
  type CudaMeasurements,
} from './gpu-common.js';

/** GB/s one lane carries per direction after line coding, by PCIe generation. */
const LANE_GBPS: Readonly<Record<number, number>> = {
  1: 0.25,
  2: 0.5,
  3: 0.985,
  4: 1.969,
  5: 3.938,
  6: 7.563,
};

/** What a link of this generation and width carries per direction, in GB/s. */
export function linkCapacityGBps(generation: number, width: number): number | undefined {
  const lane = LANE_GBPS[generation];
  return lane === undefined ? undefined : lane * width;
}

export interface PcieMeasurement {
  readonly h2dGBps: number;
  readonly d2hGBps: number;
  /**
   * The link as seen while copying: the highest generation and width observed; undefined where
   * NVML does not report the link.
   */
  readonly loadedLink: PcieLinkState | undefined;
  /** Where the pinned host buffer lay. */
  readonly placement: HostPlacement;
}

/**
 * What pciebw knows of one GPU: its idle link (undefined where NVML does not report it), and a
 * measurement or the result of not having one.
 */
export type PcieGpu = { readonly idleLink: PcieLinkState | undefined } & (
  { readonly measured: PcieMeasurement } | { readonly notMeasured: DeviceResult }
);

/** The WARN thresholds, as shares: AUTOPILOT_PCIEBW_WARN_SHARE and AUTOPILOT_PCIEBW_SIBLING_SHARE. */
export interface PcieShares {
  /** Of what the maximum link carries in practice. */
  readonly warn: number;
  /** Of the median host→device bandwidth of the node's GPUs. */
  readonly sibling: number;
}

export const DEFAULT_PCIE_SHARES: PcieShares = { warn: 0.8, sibling: 0.75 };

export interface PcieJudgement {
  readonly thresholdGBps: number;
  /** Median host→device bandwidth of the node's GPUs, when there are at least three to compare. */
  readonly siblingMedianH2dGBps: number | undefined;
  /** DEFAULT_PCIE_SHARES when absent. */
  readonly shares?: PcieShares;
}

/**
 * Share of the raw link rate that copies can reach: every 256-byte payload travels with TLP and
 * DLLP overhead (about 86 % efficiency). A healthy Gen4 x16 copies 24–27 GB/s of its raw 31.5, a
 * Gen5 x16 about 55 of its 63.
 */
const LINK_EFFICIENCY = 0.86;
const LINK_POLL_MS = 5;

/** "80 %": a share as the reasons quote it, without the float noise of 0.7 * 100. */
function percent(share: number): string {
  return `${Number((share * 100).toFixed(1))} %`;
}

/** "degraded (width): x8 of x16" when the link runs fewer lanes than it has, else undefined. */
export function widthDegradation(link: PcieLinkState): string | undefined {
  if (link.currentWidth >= link.maxWidth) return undefined;
  return `degraded (width): x${link.currentWidth} of x${link.maxWidth}`;
}

function linkEvidence(link: PcieLinkState | undefined, read: string): Evidence {
  if (link === undefined) return { linkRead: 'not supported by NVML' };
  const raw = linkCapacityGBps(link.maxGeneration, link.maxWidth);
  return {
    linkGeneration: link.currentGeneration,
    linkWidth: link.currentWidth,
    maxLinkGeneration: link.maxGeneration,
    maxLinkWidth: link.maxWidth,
    linkCapacityGBps: raw === undefined ? null : round(raw),
    linkRead: read,
  };
}

/** Pure: the verdict for one GPU. */
export function judgePcie(id: string, gpu: PcieGpu, j: PcieJudgement): DeviceResult {
  if ('measured' in gpu) return judgeMeasured(id, gpu.idleLink, gpu.measured, j);
  const { notMeasured, idleLink } = gpu;
  const width = idleLink === undefined ? undefined : widthDegradation(idleLink);
  const evidence = { ...notMeasured.evidence, ...linkEvidence(idleLink, 'idle') };
  if (width === undefined) return { ...notMeasured, id, evidence };
  return {
    id,
    verdict: 'FAIL',
    reason: `${width}; bandwidth not measured: ${notMeasured.reason}`,
    evidence,
  };
}

/** What is wrong with the link: its width at idle, its generation under load. */
function linkDegradations(
  idleLink: PcieLinkState | undefined,
  link: PcieLinkState | undefined,
): string[] {
  const degraded = [idleLink && widthDegradation(idleLink)].filter((d) => d !== undefined);
  if (link !== undefined && link.currentGeneration < link.maxGeneration) {
    degraded.push(
      `degraded (generation): Gen${link.currentGeneration} of Gen${link.maxGeneration} under load`,
    );
  }
  return degraded;
}

function judgeMeasured(
  id: string,
  idleLink: PcieLinkState | undefined,
  m: PcieMeasurement,
  j: PcieJudgement,
): DeviceResult {
  const link = m.loadedLink;
  const slowest = Math.min(m.h2dGBps, m.d2hGBps);
  const raw = link && linkCapacityGBps(link.maxGeneration, link.maxWidth);
  const expected = raw === undefined ? undefined : raw * LINK_EFFICIENCY;
  const evidence = {
    h2dGBps: round(m.h2dGBps),
    d2hGBps: round(m.d2hGBps),
    ...linkEvidence(link, 'under load'),
    ...(idleLink === undefined ? {} : { idleLinkWidth: idleLink.currentWidth }),
    numaNode: m.placement.node ?? null,
    hostBufferOnNode: m.placement.bound,
  };
  const base = { id, evidence, compatValue: round(m.h2dGBps) };
  const degraded = linkDegradations(idleLink, link);
  const figures = `h2d ${round(m.h2dGBps)} GB/s, d2h ${round(m.d2hGBps)} GB/s`;
  const shares = j.shares ?? DEFAULT_PCIE_SHARES;
  if (slowest < j.thresholdGBps) {
    const cause = degraded.length > 0 ? degraded.join('; ') : slowCause(m.placement, link);
    const reason = `${figures}: below the ${j.thresholdGBps} GB/s threshold; ${cause}`;
    return { ...base, verdict: 'FAIL', reason };
  }
  if (degraded.length > 0) {
    return { ...base, verdict: 'FAIL', reason: `${degraded.join('; ')}: ${figures}` };
  }
  if (link !== undefined && expected !== undefined && slowest < shares.warn * expected) {
    return {
      ...base,
      verdict: 'WARN',
      reason: `${figures}: below ${percent(shares.warn)} of the ${round(expected)} GB/s a Gen${link.maxGeneration} x${link.maxWidth} link carries in practice; ${slowCause(m.placement, link)}`,
    };
  }
  const median = j.siblingMedianH2dGBps;
  if (median !== undefined && m.h2dGBps < shares.sibling * median) {
    return {
      ...base,
      verdict: 'WARN',
      reason: `${figures}: far below the node's other GPUs (median h2d ${round(median)} GB/s); ${slowCause(m.placement, link)}`,
    };
  }
  const on =
    link === undefined
      ? '(link not reported by NVML)'
      : `on Gen${link.currentGeneration} x${link.currentWidth}`;
  return { ...base, verdict: 'PASS', reason: `${figures} ${on}` };
}

/**
 * "link fine but slow" (or, where NVML does not report the link, "link unknown"), with why the
 * host buffer was not on the GPU's NUMA node if it was not.
 */
function slowCause(placement: HostPlacement, link: PcieLinkState | undefined): string {
  const cause = link === undefined ? 'link unknown (not reported by NVML)' : 'link fine but slow';
  if (placement.bound) return cause;
  return `${cause} (host buffer not placed: ${placement.reason})`;
}

/** The link, or undefined when NVML answers NOT_SUPPORTED for it; other errors reject. */
async function readLink(nvml: Nvml, index: number): Promise<PcieLinkState | undefined> {
  try {
    return await nvml.pcieLink(index);
  } catch (error) {
    if (error instanceof NvmlError && error.code === NVML_ERROR_NOT_SUPPORTED) return undefined;
    throw error;
  }
}

export interface PcieBwCheckDeps {
  readonly nvml: NvmlLoad;
  readonly cuda: CudaProbeLoad;
  /** --bw, in GB/s. */
  readonly thresholdGBps: number;
  /** Bytes per copy and copies per direction: 64 MiB × 16 is about 20 ms per direction at 55 GB/s. */
  readonly copyBytes?: number;
  readonly repetitions?: number;
  /** DEFAULT_PCIE_SHARES when absent. */
  readonly shares?: PcieShares;
}

export const PCIEBW_SUMMARY =
  'PCIe link width and generation of every GPU, and host↔device bandwidth on idle GPUs';

const TEXT = gpuCheckBase(
  '[[ PCIEBW ]]',
  '[[ PCIEBW ]] Briefings completed. Continue with PCIe Bandwidth evaluation.',
);

export function createPcieBwCheck(deps: PcieBwCheckDeps): Check {
  const bytes = deps.copyBytes ?? 64 * 1024 * 1024;
  const repetitions = deps.repetitions ?? 16;

  /** Copies in one direction and reads the link while the copy runs and right after it. */
  async function measureDirection(
    nvml: Nvml,
    cuda: CudaProbe,
    gpu: GpuDevice,
    ordinal: number,
    direction: CopyDirection,
    node: number | undefined,
    readsLink: boolean,
  ): Promise<{ gbps: number; placement: HostPlacement; links: PcieLinkState[] }> {
    let copying = true;
    const copy = cuda.copyBandwidth(ordinal, direction, bytes, repetitions, node).finally(() => {
      copying = false;
    });
    // Handled now, thrown below: a copy failing while the loop waits on a timer would otherwise be
    // an unhandled rejection, which ends the process.
    copy.catch(() => undefined);
    // The copy starts after context creation and allocation, so one early read could miss it:
    // read the link every few milliseconds until the copy ends.
    const links: PcieLinkState[] = [];
    while (copying && readsLink) {
      links.push(await nvml.pcieLink(gpu.index));
      await new Promise((resolve) => setTimeout(resolve, LINK_POLL_MS));
    }
    return { ...(await copy), links };
  }

  async function measureGpu(
    nvml: Nvml,
    cuda: CudaProbe,
    gpu: GpuDevice,
    ordinal: number,
    readsLink: boolean,
  ): Promise<PcieMeasurement> {
    // Placement is an improvement, not a condition: without a node the copy still runs.
    const node = await nvml.numaNode(gpu.index).catch(() => undefined);
    const h2d = await measureDirection(nvml, cuda, gpu, ordinal, 'h2d', node, readsLink);
    const d2h = await measureDirection(nvml, cuda, gpu, ordinal, 'd2h', node, readsLink);
    const placement = h2d.placement.bound ? d2h.placement : h2d.placement;
    const measured = { h2dGBps: h2d.gbps, d2hGBps: d2h.gbps, placement };
    if (!readsLink) return { ...measured, loadedLink: undefined };
    const after = await nvml.pcieLink(gpu.index);
    const links = [...h2d.links, ...d2h.links, after];
    return {
      ...measured,
      loadedLink: {
        currentGeneration: Math.max(...links.map((l) => l.currentGeneration)),
        currentWidth: Math.max(...links.map((l) => l.currentWidth)),
        maxGeneration: after.maxGeneration,
        maxWidth: after.maxWidth,
      },
    };
  }

  /** Bandwidth of the GPUs that can be measured now; every other GPU settled with the reason. */
  async function bandwidths(
    nvml: Nvml,
    gpus: readonly GpuDevice[],
    links: ReadonlyMap<number, PcieLinkState | undefined>,
  ): Promise<CudaMeasurements<PcieMeasurement>> {
    const none = (result: (id: string) => DeviceResult): CudaMeasurements<PcieMeasurement> => ({
      measured: new Map(),
      settled: new Map(gpus.map((gpu) => [gpu.index, result(String(gpu.index))])),
    });
    const skip = (reason: string) => (id: string) =>
      ({ id, verdict: 'SKIP', reason, evidence: {} }) as const;
    const { cuda } = deps;
    if (!cuda.ok) return none(skip(cuda.reason));
    try {
      const outcome = await measureEachGpu(nvml, cuda.probe, gpus, (gpu, ordinal) =>
        measureGpu(nvml, cuda.probe, gpu, ordinal, links.get(gpu.index) !== undefined),
      );
      return outcome ?? none(skip(noCudaDevice(gpus.length)));
    } catch (error) {
      return none((id) => failedMeasurement(id, error)); // CUDA could not even be enumerated
    }
  }

  async function run(nvml: Nvml, gpus: readonly GpuDevice[]): Promise<CheckOutcome> {
    // Every idle link first, before any copy loads one of them.
    const links = new Map<number, PcieLinkState | undefined>();
    const unreadable = new Map<number, DeviceResult>();
    for (const gpu of gpus) {
      try {
        links.set(gpu.index, await readLink(nvml, gpu.index));
      } catch (error) {
        unreadable.set(gpu.index, failedMeasurement(String(gpu.index), error));
      }
    }
    const { measured, settled } = await bandwidths(
      nvml,
      gpus.filter((gpu) => links.has(gpu.index)),
      links,
    );
    const siblingMedianH2dGBps = medianOf([...measured.values()].map((m) => m.h2dGBps));
    const judgement = {
      thresholdGBps: deps.thresholdGBps,
      siblingMedianH2dGBps,
      ...(deps.shares === undefined ? {} : { shares: deps.shares }),
    };
    const devices: DeviceResult[] = [];
    const samples: Sample[] = [];
    for (const gpu of gpus) {
      if (!links.has(gpu.index)) {
        devices.push(unreadable.get(gpu.index)!);
        continue;
      }
      const idleLink = links.get(gpu.index);
      const m = measured.get(gpu.index);
      const known: PcieGpu =
        m === undefined
          ? { idleLink, notMeasured: settled.get(gpu.index)! }
          : { idleLink, measured: m };
      devices.push(judgePcie(String(gpu.index), known, judgement));
      samples.push(...pcieSamples(gpu, idleLink, m));
    }
    return { devices, samples };
  }

  return {
    ...TEXT,
    name: 'pciebw',
    summary: PCIEBW_SUMMARY,
    banner: `Requesting pcie test with bw: ${deps.thresholdGBps}`,
    compatHealth: 'pciebw',
    usesGpu: true,
    exclusive: false,
    timeoutMs: 120_000,
    run: () => withGpus(deps.nvml, run),
  };
}

/**
 * The link (under load where measured, else idle) where NVML reports it, and the bandwidth where
 * measured.
 */
function pcieSamples(
  gpu: GpuDevice,
  idleLink: PcieLinkState | undefined,
  m: PcieMeasurement | undefined,
): Sample[] {
  const link = m === undefined ? idleLink : m.loadedLink;
  const samples =
    link === undefined
      ? []
      : [
          gpuSample('autopilot_gpu_pcie_link_generation', gpu, link.currentGeneration, {
            state: 'current',
          }),
          gpuSample('autopilot_gpu_pcie_link_generation', gpu, link.maxGeneration, {
            state: 'max',
          }),
          gpuSample('autopilot_gpu_pcie_link_width', gpu, link.currentWidth, { state: 'current' }),
          gpuSample('autopilot_gpu_pcie_link_width', gpu, link.maxWidth, { state: 'max' }),
        ];
  if (m === undefined) return samples;
  return [
    ...samples,
    gpuSample('autopilot_gpu_pcie_bandwidth_bytes_per_second', gpu, m.h2dGBps * 1e9, {
      direction: 'h2d',
    }),
    gpuSample('autopilot_gpu_pcie_bandwidth_bytes_per_second', gpu, m.d2hGBps * 1e9, {
      direction: 'd2h',
    }),
  ];
}

function round(value: number): number {
  return Number(value.toFixed(2));
}

/** pciebw's own settings, after DCGM_FATAL_ERRORS (and xid's, which the table puts first). */
const PCIEBW_SETTINGS = {
  AUTOPILOT_PCIEBW_WARN_SHARE: setting({
    fallback: String(DEFAULT_PCIE_SHARES.warn),
    help: "pciebw WARN below this share of what the GPU's maximum PCIe link carries in practice (above 0, at most 1)",
    parse: share('AUTOPILOT_PCIEBW_WARN_SHARE', String(DEFAULT_PCIE_SHARES.warn)),
  }),
  AUTOPILOT_PCIEBW_SIBLING_SHARE: setting({
    fallback: String(DEFAULT_PCIE_SHARES.sibling),
    help: "pciebw WARN when host-to-device bandwidth is below this share of the node's median (above 0, at most 1)",
    parse: share('AUTOPILOT_PCIEBW_SIBLING_SHARE', String(DEFAULT_PCIE_SHARES.sibling)),
  }),
};

/** PCIEBW_SETTINGS parsed, by setting name, as parseConfig hands them to the module. */
export type PciebwSettingValues = SettingValues<typeof PCIEBW_SETTINGS>;

export const pciebwModule: CheckModule<PciebwSettingValues> = {
  name: 'pciebw',
  summary: PCIEBW_SUMMARY,
  policy: {
    periodic: 1,
    postflight: { order: 1 },
    preflight: true,
    exclusive: false,
    timeoutSettings: ['pciebw'],
  },
  metrics: [
    'autopilot_gpu_pcie_bandwidth_bytes_per_second',
    'autopilot_gpu_pcie_link_generation',
    'autopilot_gpu_pcie_link_width',
  ],
  formatText: TEXT.formatText,
  statusName: 'PCIE',
  settings: { after: 'DCGM_FATAL_ERRORS', specs: PCIEBW_SETTINGS },
  create: (config, ports, _extras, settings) =>
    withDeadline(
      createPcieBwCheck({
        nvml: ports.nvml,
        cuda: ports.cuda,
        thresholdGBps: config.bandwidthThresholdGBps,
        shares: {
          warn: settings.AUTOPILOT_PCIEBW_WARN_SHARE,
          sibling: settings.AUTOPILOT_PCIEBW_SIBLING_SHARE,
        },
      }),
      config.checkTimeoutsMs.get('pciebw'),
    ),
};
