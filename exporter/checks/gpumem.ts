/**
 * gpumem: HBM bandwidth, a memory pattern test and FP32/FP64 throughput per GPU, through the CUDA
 * probe library. Exclusive: it needs the GPUs to itself, so it runs only when NVML counts no
 * compute process on any GPU; a count NVML cannot give is not idle either (and the runner keeps
 * every other GPU check out meanwhile).
 *
 * Verdict per GPU: any pattern mismatch → FAIL, fatal (the memory returns wrong data); a figure
 * below AUTOPILOT_GPUMEM_FAIL_SHARE (half) of the model's datasheet peak → FAIL; below
 * AUTOPILOT_GPUMEM_WARN_SHARE (60 %) of it, or below AUTOPILOT_GPUMEM_SIBLING_SHARE (85 %) of the
 * node's other GPUs → WARN. Autopilot's thresholds were fixed A100/H100 numbers that failed every
 * other GPU model.
 */

import {
  CudaError,
  type CudaProbe,
  type CudaProbeLoad,
  type GpuDevice,
  type Nvml,
  type NvmlLoad,
} from '../native/ports.js';
import { failWarnShares, setting, type SettingValues, share } from '../config/setting.js';
import type { Check, CheckOutcome, DeviceResult, Sample } from './check.js';
import { withDeadline, type CheckModule } from './module.js';
import {
  gpuCheckBase,
  gpuSample,
  measureEachGpu,
  medianOf,
  noCudaDevice,
  notIdleGpus,
  notIdleSubject,
  withGpusAndCuda,
} from './gpu-common.js';

/** Datasheet peaks (SXM unless named): HBM GB/s, FP32 and FP64 non-tensor TFLOPS. */
export const GPU_MODELS: readonly {
  readonly match: RegExp;
  readonly hbmGBps: number;
  readonly fp32Tflops: number;
  readonly fp64Tflops: number;
}[] = [
  { match: /H200/, hbmGBps: 4800, fp32Tflops: 67, fp64Tflops: 34 },
  { match: /H100.*PCIe/, hbmGBps: 2000, fp32Tflops: 51, fp64Tflops: 26 },
  { match: /H100/, hbmGBps: 3350, fp32Tflops: 67, fp64Tflops: 34 },
  { match: /A100.*80GB/, hbmGBps: 2039, fp32Tflops: 19.5, fp64Tflops: 9.7 },
  { match: /A100/, hbmGBps: 1555, fp32Tflops: 19.5, fp64Tflops: 9.7 },
];

export function expectedFigures(gpuName: string): (typeof GPU_MODELS)[number] | undefined {
  return GPU_MODELS.find((model) => model.match.test(gpuName));
}

export interface GpuMemMeasurement {
  readonly hbmGBps: number;
  readonly mismatches: number;
  readonly bytesTested: number;
  readonly fp32Tflops: number;
  readonly fp64Tflops: number;
}

/**
 * The thresholds, as shares: of the datasheet peak (fail, warn; fail below warn) and of the node's
 * median (sibling).
 */
export interface GpuMemShares {
  readonly fail: number;
  readonly warn: number;
  readonly sibling: number;
}

export const DEFAULT_GPUMEM_SHARES: GpuMemShares = { fail: 0.5, warn: 0.6, sibling: 0.85 };

type Figure = 'hbmGBps' | 'fp32Tflops' | 'fp64Tflops';
const FIGURES: readonly { readonly key: Figure; readonly label: string; readonly unit: string }[] =
  [
    { key: 'hbmGBps', label: 'HBM', unit: 'GB/s' },
    { key: 'fp32Tflops', label: 'FP32', unit: 'TFLOPS' },
    { key: 'fp64Tflops', label: 'FP64', unit: 'TFLOPS' },
  ];

/** Pure: the verdict for one GPU. */
export function judgeGpuMem(
  id: string,
  gpuName: string,
  m: GpuMemMeasurement,
  siblingMedians: Readonly<Partial<Record<Figure, number>>>,
  shares: GpuMemShares = DEFAULT_GPUMEM_SHARES,
): DeviceResult {
  const evidence = {
    hbmGBps: round(m.hbmGBps),
    fp32Tflops: round(m.fp32Tflops),
    fp64Tflops: round(m.fp64Tflops),
    patternMismatches: m.mismatches,
    patternBytesTested: m.bytesTested,
  };
  const base = { id, evidence };
  if (m.mismatches > 0) {
    return {
      ...base,
      verdict: 'FAIL',
      fatal: true,
      reason: `${m.mismatches} mismatched words in the memory pattern test`,
      compatValue: 1,
    };
  }
  const model = expectedFigures(gpuName);
  const failing: string[] = [];
  const warning: string[] = [];
  for (const { key, label, unit } of FIGURES) {
    const value = m[key];
    const text = `${label} ${round(value)} ${unit}`;
    if (model !== undefined && value < shares.fail * model[key])
      failing.push(`${text} (datasheet ${model[key]})`);
    else if (model !== undefined && value < shares.warn * model[key])
      warning.push(`${text} (datasheet ${model[key]})`);
    else {
      const median = siblingMedians[key];
      if (median !== undefined && value < shares.sibling * median)
        warning.push(`${text} (node median ${round(median)})`);
    }
  }
  if (failing.length > 0)
    return { ...base, verdict: 'FAIL', reason: `too slow: ${failing.join(', ')}`, compatValue: 1 };
  if (warning.length > 0)
    return { ...base, verdict: 'WARN', reason: `slow: ${warning.join(', ')}`, compatValue: 0 };
  const known =
    model === undefined
      ? ' (no datasheet figures for this model; compared with the node only)'
      : '';
  return {
    ...base,
    verdict: 'PASS',
    reason: `HBM ${round(m.hbmGBps)} GB/s, FP32 ${round(m.fp32Tflops)}, FP64 ${round(m.fp64Tflops)} TFLOPS, pattern clean${known}`,
    compatValue: 0,
  };
}

export interface GpuMemCheckDeps {
  readonly nvml: NvmlLoad;
  readonly cuda: CudaProbeLoad;
  /** Share of free device memory the pattern test covers. */
  readonly patternFraction?: number;
  /** DEFAULT_GPUMEM_SHARES when absent. */
  readonly shares?: GpuMemShares;
}

export const GPUMEM_SUMMARY =
  'HBM bandwidth, memory pattern test and FP32/FP64 throughput on idle GPUs (exclusive)';

const TEXT = gpuCheckBase(
  '[[ GPU-MEM ]]',
  '[[ GPU-MEM ]] Briefings completed. Continue with memory evaluation.',
);

export function createGpuMemCheck(deps: GpuMemCheckDeps): Check {
  const fraction = deps.patternFraction ?? 0.5;

  async function measure(
    nvml: Nvml,
    cuda: CudaProbe,
    gpus: readonly GpuDevice[],
  ): Promise<CheckOutcome> {
    // MIG first: a MIG GPU is skipped anyway, and its process list may need privileges.
    const mig = new Set<number>();
    for (const gpu of gpus)
      if (await nvml.migEnabled(gpu.index).catch(() => false)) mig.add(gpu.index);
    const notIdle = await notIdleGpus(
      nvml,
      gpus.filter((g) => !mig.has(g.index)),
    );
    if (notIdle.gpus.length > 0) {
      return {
        devices: [],
        verdict: 'SKIP',
        reason: `${notIdleSubject(notIdle)}, not tested: ${notIdle.gpus.join(', ')}`,
      };
    }
    const outcome = await measureEachGpu(
      nvml,
      cuda,
      gpus.filter((gpu) => !mig.has(gpu.index)),
      async (_gpu, ordinal): Promise<GpuMemMeasurement> => ({
        hbmGBps: await hbmBandwidth(cuda, ordinal),
        ...(await cuda.memoryPattern(ordinal, fraction)),
        fp32Tflops: await cuda.flops(ordinal, 32),
        fp64Tflops: await cuda.flops(ordinal, 64),
      }),
      judgeCudaFailure,
    );
    if (outcome === undefined) {
      return { devices: [], verdict: 'SKIP', reason: noCudaDevice(gpus.length) };
    }
    const { measured } = outcome;
    const results = new Map(outcome.settled);
    for (const gpu of gpus.filter((g) => mig.has(g.index))) {
      results.set(gpu.index, {
        id: String(gpu.index),
        verdict: 'SKIP',
        reason: 'MIG is enabled on this GPU',
        evidence: {},
      });
    }
    const medians: Partial<Record<Figure, number>> = {};
    for (const { key } of FIGURES) {
      const median = medianOf([...measured.values()].map((m) => m[key]));
      if (median !== undefined) medians[key] = median;
    }
    const samples: Sample[] = [];
    for (const gpu of gpus) {
      const m = measured.get(gpu.index);
      if (m === undefined) continue;
      results.set(gpu.index, judgeGpuMem(String(gpu.index), gpu.name, m, medians, deps.shares));
      samples.push(
        gpuSample('autopilot_gpu_memory_bandwidth_bytes_per_second', gpu, m.hbmGBps * 1e9),
        gpuSample('autopilot_gpu_memory_pattern_mismatches', gpu, m.mismatches),
        gpuSample('autopilot_gpu_fp32_flops', gpu, m.fp32Tflops * 1e12),
        gpuSample('autopilot_gpu_fp64_flops', gpu, m.fp64Tflops * 1e12),
      );
    }
    return { devices: gpus.map((gpu) => results.get(gpu.index)!), samples };
  }

  return {
    ...TEXT,
    name: 'gpumem',
    summary: GPUMEM_SUMMARY,
    banner: 'GPU Memory DGEMM+DAXPY test',
    compatHealth: 'gpumem',
    usesGpu: true,
    exclusive: true,
    timeoutMs: 900_000,
    run: () => withGpusAndCuda(deps.nvml, deps.cuda, measure),
  };
}

const CUDA_ERROR_MEMORY_ALLOCATION = 2;
/** cudaErrorECCUncorrectable: with ECC on, bad HBM shows as this error rather than as mismatches. */
const CUDA_ERROR_ECC_UNCORRECTABLE = 214;

/** Pure: a measurement that failed is ERROR, except an uncorrectable ECC error, which is the finding. */
export function judgeCudaFailure(id: string, error: unknown): DeviceResult {
  if (error instanceof CudaError && error.code === CUDA_ERROR_ECC_UNCORRECTABLE) {
    return {
      id,
      verdict: 'FAIL',
      fatal: true,
      reason: `uncorrectable ECC error while testing the memory (${error.message})`,
      evidence: { cudaError: error.code },
      compatValue: 1,
    };
  }
  return {
    id,
    verdict: 'ERROR',
    reason: error instanceof Error ? error.message : String(error),
    evidence: {},
  };
}

/**
 * HBM bandwidth over 1 GiB buffers, or smaller ones on a GPU with less memory to spare: a figure
 * from a smaller buffer is still a figure, an out-of-memory error is none.
 */
async function hbmBandwidth(cuda: CudaProbe, ordinal: number): Promise<number> {
  for (let bytes = 1024 * 1024 * 1024; ; bytes /= 4) {
    try {
      return await cuda.hbmBandwidth(ordinal, bytes, 10);
    } catch (error) {
      const outOfMemory = error instanceof CudaError && error.code === CUDA_ERROR_MEMORY_ALLOCATION;
      if (!outOfMemory || bytes <= 64 * 1024 * 1024) throw error;
    }
  }
}

function round(value: number): number {
  return Number(value.toFixed(2));
}

/** gpumem's own settings, after pciebw's. */
const GPUMEM_SETTINGS = {
  ...failWarnShares('AUTOPILOT_GPUMEM', DEFAULT_GPUMEM_SHARES, {
    fail: "gpumem FAIL when a figure is below this share of the GPU model's datasheet peak (above 0, below the WARN share)",
    warn: "gpumem WARN when a figure is below this share of the GPU model's datasheet peak (above the FAIL share, at most 1)",
  }),
  AUTOPILOT_GPUMEM_SIBLING_SHARE: setting({
    fallback: String(DEFAULT_GPUMEM_SHARES.sibling),
    help: "gpumem WARN when a figure is below this share of the node's median (above 0, at most 1)",
    parse: share('AUTOPILOT_GPUMEM_SIBLING_SHARE', String(DEFAULT_GPUMEM_SHARES.sibling)),
  }),
};

/** GPUMEM_SETTINGS parsed, by setting name, as parseConfig hands them to the module. */
export type GpumemSettingValues = SettingValues<typeof GPUMEM_SETTINGS>;

/**
 * The settings as environment variables: the deep check runs gpumem in a Job of its own, which
 * must judge with the exporter's thresholds.
 */
export function gpumemSettingsEnv(values: GpumemSettingValues): Record<string, string> {
  return Object.fromEntries(Object.entries(values).map(([name, value]) => [name, String(value)]));
}

export const gpumemModule: CheckModule<GpumemSettingValues> = {
  name: 'gpumem',
  summary: GPUMEM_SUMMARY,
  policy: { exclusive: true, timeoutSettings: ['gpumem'] },
  metrics: [
    'autopilot_gpu_memory_bandwidth_bytes_per_second',
    'autopilot_gpu_memory_pattern_mismatches',
    'autopilot_gpu_fp32_flops',
    'autopilot_gpu_fp64_flops',
  ],
  formatText: TEXT.formatText,
  statusName: 'GPU MEM Test',
  settings: { after: 'AUTOPILOT_PCIEBW_SIBLING_SHARE', specs: GPUMEM_SETTINGS },
  create: (config, ports, _extras, settings) =>
    withDeadline(
      createGpuMemCheck({
        nvml: ports.nvml,
        cuda: ports.cuda,
        shares: {
          fail: settings.AUTOPILOT_GPUMEM_FAIL_SHARE,
          warn: settings.AUTOPILOT_GPUMEM_WARN_SHARE,
          sibling: settings.AUTOPILOT_GPUMEM_SIBLING_SHARE,
        },
      }),
      config.checkTimeoutsMs.get('gpumem'),
    ),
};
