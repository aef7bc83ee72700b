/**
 * pciebw: pinned host↔device copy bandwidth per GPU through the CUDA probe library, with the PCIe
 * link generation and width NVML reports while the copy runs (an idle link trains down, so only a
 * loaded link says anything). Autopilot ran NVIDIA's bandwidthTest sample for about 3 s per GPU
 * and compared one direction with a fixed 4 GB/s.
 *
 * Verdict per GPU, first match wins: below --bw → FAIL; link below its maximum width or generation
 * under load → FAIL; below 80 % of what the negotiated maximum link carries → WARN; far below the
 * node's other GPUs → WARN. The reason names the likely cause: "x8 link", "Gen3", or "link fine but
 * slow" (which points at the host side: IOMMU, NUMA placement, a PCIe switch).
 */

import type {
  CopyDirection,
  CudaProbe,
  CudaProbeLoad,
  GpuDevice,
  Nvml,
  NvmlLoad,
  PcieLinkState,
} from '../native/ports.js';
import type { Check, CheckOutcome, DeviceResult, Sample } from './check.js';
import {
  gpuCheckBase,
  gpuSample,
  measureEachGpu,
  medianOf,
  noCudaDevice,
  withGpusAndCuda,
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
  /** The link as seen while copying: the highest generation and width observed. */
  readonly link: PcieLinkState;
  /** The GPU had compute processes, whose traffic shares the link. */
  readonly busy: boolean;
}

export interface PcieJudgement {
  readonly thresholdGBps: number;
  /** Median host→device bandwidth of the node's GPUs, when there are at least three to compare. */
  readonly siblingMedianH2dGBps: number | undefined;
}

const EXPECTED_SHARE = 0.8;
/**
 * Share of the raw link rate that copies can reach: every 256-byte payload travels with TLP and
 * DLLP overhead (about 86 % efficiency). A healthy Gen4 x16 copies 24–27 GB/s of its raw 31.5, a
 * Gen5 x16 about 55 of its 63.
 */
const LINK_EFFICIENCY = 0.86;
const LINK_POLL_MS = 5;
const SIBLING_SHARE = 0.75;

/** Pure: the verdict for one GPU. */
export function judgePcie(id: string, m: PcieMeasurement, j: PcieJudgement): DeviceResult {
  const { link } = m;
  const slowest = Math.min(m.h2dGBps, m.d2hGBps);
  const raw = linkCapacityGBps(link.maxGeneration, link.maxWidth);
  const expected = raw === undefined ? undefined : raw * LINK_EFFICIENCY;
  const evidence = {
    h2dGBps: round(m.h2dGBps),
    d2hGBps: round(m.d2hGBps),
    linkGeneration: link.currentGeneration,
    linkWidth: link.currentWidth,
    maxLinkGeneration: link.maxGeneration,
    maxLinkWidth: link.maxWidth,
    linkCapacityGBps: raw === undefined ? null : round(raw),
    busy: m.busy,
  };
  const base = { id, evidence, compatValue: round(m.h2dGBps) };
  const degraded: string[] = [];
  if (link.currentWidth < link.maxWidth)
    degraded.push(`x${link.currentWidth} link (max x${link.maxWidth})`);
  if (link.currentGeneration < link.maxGeneration) {
    degraded.push(`Gen${link.currentGeneration} (max Gen${link.maxGeneration})`);
  }
  const cause = degraded.length > 0 ? degraded.join(', ') : 'link fine but slow';
  const figures = `h2d ${round(m.h2dGBps)} GB/s, d2h ${round(m.d2hGBps)} GB/s`;

  if (slowest < j.thresholdGBps) {
    return {
      ...base,
      verdict: 'FAIL',
      reason: `${figures}: below the ${j.thresholdGBps} GB/s threshold; ${cause}`,
    };
  }
  if (degraded.length > 0) {
    return { ...base, verdict: 'FAIL', reason: `${figures}: link degraded under load: ${cause}` };
  }
  // A job's own host traffic shares the link: slowness on a busy GPU says nothing about the link.
  if (m.busy) {
    return {
      ...base,
      verdict: 'PASS',
      reason: `${figures} while the GPU runs jobs: only the threshold and the link judged`,
    };
  }
  if (expected !== undefined && slowest < EXPECTED_SHARE * expected) {
    return {
      ...base,
      verdict: 'WARN',
      reason: `${figures}: below ${EXPECTED_SHARE * 100} % of the ${round(expected)} GB/s a Gen${link.maxGeneration} x${link.maxWidth} link carries in practice; ${cause}`,
    };
  }
  if (j.siblingMedianH2dGBps !== undefined && m.h2dGBps < SIBLING_SHARE * j.siblingMedianH2dGBps) {
    return {
      ...base,
      verdict: 'WARN',
      reason: `${figures}: far below the node's other GPUs (median h2d ${round(j.siblingMedianH2dGBps)} GB/s); ${cause}`,
    };
  }
  return {
    ...base,
    verdict: 'PASS',
    reason: `${figures} on Gen${link.currentGeneration} x${link.currentWidth}`,
  };
}

export interface PcieBwCheckDeps {
  readonly nvml: NvmlLoad;
  readonly cuda: CudaProbeLoad;
  /** --bw, in GB/s. */
  readonly thresholdGBps: number;
  /** Bytes per copy and copies per direction: 64 MiB × 16 is about 20 ms per direction at 55 GB/s. */
  readonly copyBytes?: number;
  readonly repetitions?: number;
}

export const PCIEBW_SUMMARY =
  'host↔device PCIe bandwidth per GPU, with the link generation and width under load';

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
  ): Promise<{ gbps: number; links: PcieLinkState[] }> {
    let copying = true;
    const copy = cuda.copyBandwidth(ordinal, direction, bytes, repetitions).finally(() => {
      copying = false;
    });
    // The copy starts after context creation and allocation, so one early read could miss it:
    // read the link every few milliseconds until the copy ends.
    const links: PcieLinkState[] = [];
    while (copying) {
      links.push(await nvml.pcieLink(gpu.index));
      await new Promise((resolve) => setTimeout(resolve, LINK_POLL_MS));
    }
    return { gbps: await copy, links };
  }

  async function measureGpu(
    nvml: Nvml,
    cuda: CudaProbe,
    gpu: GpuDevice,
    ordinal: number,
  ): Promise<PcieMeasurement> {
    const busy = (await nvml.computeProcessCount(gpu.index)) > 0;
    const h2d = await measureDirection(nvml, cuda, gpu, ordinal, 'h2d');
    const d2h = await measureDirection(nvml, cuda, gpu, ordinal, 'd2h');
    const after = await nvml.pcieLink(gpu.index);
    const links = [...h2d.links, ...d2h.links, after];
    return {
      busy,
      h2dGBps: h2d.gbps,
      d2hGBps: d2h.gbps,
      link: {
        currentGeneration: Math.max(...links.map((l) => l.currentGeneration)),
        currentWidth: Math.max(...links.map((l) => l.currentWidth)),
        maxGeneration: after.maxGeneration,
        maxWidth: after.maxWidth,
      },
    };
  }

  async function measure(
    nvml: Nvml,
    cuda: CudaProbe,
    gpus: readonly GpuDevice[],
  ): Promise<CheckOutcome> {
    const outcome = await measureEachGpu(nvml, cuda, gpus, (gpu, ordinal) =>
      measureGpu(nvml, cuda, gpu, ordinal),
    );
    if (outcome === undefined) {
      return { devices: [], verdict: 'SKIP', reason: noCudaDevice(gpus.length) };
    }
    const { measured } = outcome;
    const results = new Map(outcome.settled);
    const siblingMedianH2dGBps = medianOf([...measured.values()].map((m) => m.h2dGBps));
    const samples: Sample[] = [];
    for (const gpu of gpus) {
      const m = measured.get(gpu.index);
      if (m === undefined) continue;
      results.set(
        gpu.index,
        judgePcie(String(gpu.index), m, {
          thresholdGBps: deps.thresholdGBps,
          siblingMedianH2dGBps,
        }),
      );
      samples.push(
        gpuSample('autopilot_gpu_pcie_bandwidth_bytes_per_second', gpu, m.h2dGBps * 1e9, {
          direction: 'h2d',
        }),
        gpuSample('autopilot_gpu_pcie_bandwidth_bytes_per_second', gpu, m.d2hGBps * 1e9, {
          direction: 'd2h',
        }),
        gpuSample('autopilot_gpu_pcie_link_generation', gpu, m.link.currentGeneration, {
          state: 'current',
        }),
        gpuSample('autopilot_gpu_pcie_link_generation', gpu, m.link.maxGeneration, {
          state: 'max',
        }),
        gpuSample('autopilot_gpu_pcie_link_width', gpu, m.link.currentWidth, { state: 'current' }),
        gpuSample('autopilot_gpu_pcie_link_width', gpu, m.link.maxWidth, { state: 'max' }),
      );
    }
    return { devices: gpus.map((gpu) => results.get(gpu.index)!), samples };
  }

  return {
    ...gpuCheckBase('[[ PCIEBW ]]'),
    name: 'pciebw',
    summary: PCIEBW_SUMMARY,
    banner: `Requesting pcie test with bw: ${deps.thresholdGBps}`,
    compatHealth: 'pciebw',
    usesGpu: true,
    exclusive: false,
    timeoutMs: 120_000,
    run: () => withGpusAndCuda(deps.nvml, deps.cuda, measure),
  };
}

function round(value: number): number {
  return Number(value.toFixed(2));
}
