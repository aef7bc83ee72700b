/**
 * remapped: HBM row remapping per GPU (Ampere and newer), from NVML.
 * A remap waiting for a reset → FAIL (the GPU must be reset); a remapping that failed → FAIL,
 * fatal (NVIDIA's RMA criterion); uncorrectable remapped rows → WARN. Autopilot read only
 * "Pending" from nvidia-smi text.
 */

import type { NvmlLoad, RemappedRows } from '../native/ports.js';
import type { Check, DeviceResult } from './check.js';
import { gpuCheckBase, gpuSample, readEachGpu } from './gpu-common.js';
import type { CheckModule } from './module.js';

/** Pure: the verdict for one GPU; undefined rows mean the GPU has no row remapping. */
export function judgeRemappedRows(id: string, rows: RemappedRows | undefined): DeviceResult {
  if (rows === undefined) {
    return {
      id,
      verdict: 'SKIP',
      reason: 'no row remapping on this GPU (before Ampere, or MIG)',
      evidence: {},
    };
  }
  const evidence = {
    correctableRows: rows.correctable,
    uncorrectableRows: rows.uncorrectable,
    pending: rows.pending,
    failureOccurred: rows.failureOccurred,
  };
  if (rows.failureOccurred) {
    return {
      id,
      verdict: 'FAIL',
      fatal: true,
      reason: 'a row remapping failed: replace the GPU',
      evidence,
      // Autopilot's gauge flagged only pending remaps; a failed remapping is worse, not healthy.
      compatValue: 1,
    };
  }
  if (rows.pending) {
    return {
      id,
      verdict: 'FAIL',
      reason: 'row remapping pending: reset the GPU',
      evidence,
      compatValue: 1,
    };
  }
  if (rows.uncorrectable > 0) {
    return {
      id,
      verdict: 'WARN',
      reason: `${rows.uncorrectable} rows remapped after uncorrectable errors`,
      evidence,
      compatValue: 0,
    };
  }
  return {
    id,
    verdict: 'PASS',
    reason: `nothing pending (${rows.correctable} correctable, 0 uncorrectable remapped rows)`,
    evidence,
    compatValue: 0,
  };
}

export interface RemappedCheckDeps {
  readonly nvml: NvmlLoad;
  readonly timeoutMs?: number;
}

export const REMAPPED_SUMMARY =
  'HBM row remapping: pending remaps, remapping failures, uncorrectable rows';

const TEXT = gpuCheckBase(
  '[[ REMAPPED ROWS ]]',
  '[[ REMAPPED ROWS ]] Briefings completed. Continue with remapped rows evaluation.',
);

export function createRemappedCheck(deps: RemappedCheckDeps): Check {
  return {
    ...TEXT,
    name: 'remapped',
    summary: REMAPPED_SUMMARY,
    banner: 'Requesting Remapped Rows check on all GPUs',
    compatHealth: 'remapped',
    usesGpu: true,
    exclusive: false,
    timeoutMs: deps.timeoutMs ?? 30_000,
    run: () =>
      readEachGpu(deps.nvml, async (nvml, gpu) => {
        const rows = await nvml.remappedRows(gpu.index);
        const device = judgeRemappedRows(String(gpu.index), rows);
        if (rows === undefined) return { device };
        return {
          device,
          samples: [
            gpuSample('autopilot_gpu_remapped_rows', gpu, rows.correctable, {
              state: 'correctable',
            }),
            gpuSample('autopilot_gpu_remapped_rows', gpu, rows.uncorrectable, {
              state: 'uncorrectable',
            }),
            gpuSample('autopilot_gpu_row_remap_pending', gpu, rows.pending ? 1 : 0),
            gpuSample('autopilot_gpu_row_remap_failure', gpu, rows.failureOccurred ? 1 : 0),
          ],
        };
      }),
  };
}

export const remappedModule: CheckModule = {
  name: 'remapped',
  summary: REMAPPED_SUMMARY,
  policy: {
    periodic: 2,
    postflight: { order: 2 },
    preflight: true,
    exclusive: false,
    nvmlOnly: true,
  },
  metrics: [
    'autopilot_gpu_remapped_rows',
    'autopilot_gpu_row_remap_pending',
    'autopilot_gpu_row_remap_failure',
  ],
  formatText: TEXT.formatText,
  statusName: 'REMAPPED ROWS',
  create: (config, ports) =>
    createRemappedCheck({ nvml: ports.nvml, timeoutMs: config.nvmlCheckTimeoutMs }),
};
