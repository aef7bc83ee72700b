/**
 * ecc: uncorrected (double-bit) ECC errors. A new one since the last run → FAIL, fatal, and the GPU
 * stays FAIL until the exporter restarts, as a fatal XID does; pages waiting to be retired → WARN
 * (a reset retires them). A GPU with ECC off or without ECC says SKIP: that is how it was built or
 * configured, not a fault this check can judge.
 *
 * Two counters are read (nvml.h, nvmlEccCounterType_t): the volatile one counts since the driver
 * loaded, and without persistence mode the driver loads again for every compute application, so an
 * error between two runs can be gone from it by the second; the aggregate one counts over the GPU's
 * lifetime and keeps it. An error is new when either counter rose since the last run. At the first
 * run a volatile count above 0 is new (nobody has judged it yet); a lifetime count alone is history
 * from before the driver loaded, which the remapped check and NVIDIA's RMA process deal with.
 */

import type { EccState, NvmlLoad } from '../native/ports.js';
import type { Check, DeviceResult } from './check.js';
import { gpuCheckBase, gpuSample, readEachGpu } from './gpu-common.js';
import type { CheckModule } from './module.js';

/** What the check remembers of one GPU between runs. */
export interface EccMemory {
  readonly volatileUncorrected: number | undefined;
  readonly aggregateUncorrected: number | undefined;
  /** When a new uncorrected error was last seen; undefined while none was. */
  readonly newErrorAt: number | undefined;
}

/** How much a counter rose since the last run; a counter that went down (a reload) rose by 0. */
function rise(now: number | undefined, before: number | undefined): number {
  if (now === undefined) return 0;
  return Math.max(0, now - (before ?? 0));
}

/**
 * The uncorrected errors a run finds new: by the larger rise of the two counters. A counter read
 * for the first time (the first run, or ECC just turned on) has no rise: its volatile count is new
 * all the same (nobody judged it), its lifetime count is history, as at the first run.
 */
export function newUncorrected(ecc: EccState, previous: EccMemory | undefined): number {
  const aggregateBefore = previous?.aggregateUncorrected;
  return Math.max(
    rise(ecc.volatileUncorrected, previous?.volatileUncorrected),
    aggregateBefore === undefined ? 0 : rise(ecc.aggregateUncorrected, aggregateBefore),
  );
}

/** Pure: the verdict for one GPU, and what to remember of it for the next run. */
export function judgeEcc(
  id: string,
  ecc: EccState,
  previous: EccMemory | undefined,
  now: number,
): { readonly device: DeviceResult; readonly memory: EccMemory } {
  const fresh = ecc.enabled ? newUncorrected(ecc, previous) : 0;
  const newErrorAt = fresh > 0 ? now : previous?.newErrorAt;
  const memory: EccMemory = {
    volatileUncorrected: ecc.volatileUncorrected,
    aggregateUncorrected: ecc.aggregateUncorrected,
    newErrorAt,
  };
  const evidence = {
    eccEnabled: ecc.enabled,
    volatileUncorrected: ecc.volatileUncorrected ?? null,
    aggregateUncorrected: ecc.aggregateUncorrected ?? null,
    retiredPagesPending: ecc.retiredPagesPending ?? null,
  };
  const counts = `volatile ${ecc.volatileUncorrected ?? 'n/a'}, aggregate ${ecc.aggregateUncorrected ?? 'n/a'}`;
  if (!ecc.enabled) {
    return {
      device: { id, verdict: 'SKIP', reason: 'ECC is not enabled on this GPU', evidence },
      memory,
    };
  }
  if (newErrorAt !== undefined) {
    const reason =
      fresh > 0
        ? `${fresh} new uncorrected (double-bit) ECC error${fresh === 1 ? '' : 's'} since the last run (${counts})`
        : `uncorrected (double-bit) ECC errors, the last new one seen ${new Date(newErrorAt).toISOString()} (${counts})`;
    // When the error was first seen, not when it was judged: an acknowledge after it must hold.
    const device: DeviceResult = {
      observedAt: newErrorAt,
      id,
      verdict: 'FAIL',
      fatal: true,
      reason,
      evidence,
      compatValue: 1,
    };
    return { device, memory };
  }
  if (ecc.retiredPagesPending === true) {
    const reason = 'page retirement pending: reset the GPU';
    return { device: { id, verdict: 'WARN', reason, evidence, compatValue: 0 }, memory };
  }
  const reason =
    (ecc.volatileUncorrected ?? 0) + (ecc.aggregateUncorrected ?? 0) === 0
      ? 'no uncorrected ECC errors'
      : `no new uncorrected ECC error (${counts})`;
  return { device: { id, verdict: 'PASS', reason, evidence, compatValue: 0 }, memory };
}

export interface EccCheckDeps {
  readonly nvml: NvmlLoad;
  readonly timeoutMs?: number;
  /** When a run judges; the system clock when absent. */
  readonly now?: () => number;
}

export const ECC_SUMMARY =
  'new uncorrected (double-bit) ECC errors in the volatile or aggregate counter, and pending page retirement';

const TEXT = gpuCheckBase('[[ ECC ]]');

export function createEccCheck(deps: EccCheckDeps): Check {
  const now = deps.now ?? Date.now;
  // By UUID: an NVML index can name another GPU after the driver enumerates them again.
  const memories = new Map<string, EccMemory>();
  return {
    ...TEXT,
    name: 'ecc',
    summary: ECC_SUMMARY,
    banner: 'ECC test',
    compatHealth: 'ecc',
    usesGpu: true,
    exclusive: false,
    timeoutMs: deps.timeoutMs ?? 30_000,
    run: () =>
      readEachGpu(deps.nvml, async (nvml, gpu) => {
        const ecc = await nvml.ecc(gpu.index);
        const key = gpu.uuid === '' ? `index ${gpu.index}` : gpu.uuid;
        const { device, memory } = judgeEcc(String(gpu.index), ecc, memories.get(key), now());
        memories.set(key, memory);
        const samples = [];
        for (const [metric, value] of [
          ['autopilot_gpu_ecc_volatile_uncorrected_errors', ecc.volatileUncorrected],
          ['autopilot_gpu_ecc_aggregate_uncorrected_errors', ecc.aggregateUncorrected],
        ] as const) {
          if (value !== undefined) samples.push(gpuSample(metric, gpu, value));
        }
        if (ecc.retiredPagesPending !== undefined) {
          samples.push(
            gpuSample('autopilot_gpu_retired_pages_pending', gpu, ecc.retiredPagesPending ? 1 : 0),
          );
        }
        return { device, samples };
      }),
  };
}

export const eccModule: CheckModule = {
  name: 'ecc',
  summary: ECC_SUMMARY,
  policy: { postflight: { order: 4 }, exclusive: false, nvmlOnly: true },
  metrics: [
    'autopilot_gpu_ecc_volatile_uncorrected_errors',
    'autopilot_gpu_ecc_aggregate_uncorrected_errors',
    'autopilot_gpu_retired_pages_pending',
  ],
  formatText: TEXT.formatText,
  create: (config, ports) =>
    createEccCheck({
      nvml: ports.nvml,
      timeoutMs: config.nvmlCheckTimeoutMs,
      now: () => ports.clock.now(),
    }),
};
