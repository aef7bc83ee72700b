/**
 * ecc: volatile double-bit (uncorrected) ECC errors → FAIL, fatal; pages waiting to be retired →
 * WARN (a reset retires them). A GPU with ECC off or without ECC says SKIP: that is how it was
 * built or configured, not a fault this check can judge.
 */

import type { EccState, NvmlLoad } from '../native/ports.js';
import type { Check, DeviceResult } from './check.js';
import { gpuCheckBase, gpuSample, readEachGpu } from './gpu-common.js';

/** Pure: the verdict for one GPU. */
export function judgeEcc(id: string, ecc: EccState): DeviceResult {
  const evidence = {
    eccEnabled: ecc.enabled,
    volatileUncorrected: ecc.volatileUncorrected ?? null,
    retiredPagesPending: ecc.retiredPagesPending ?? null,
  };
  if (!ecc.enabled)
    return { id, verdict: 'SKIP', reason: 'ECC is not enabled on this GPU', evidence };
  if ((ecc.volatileUncorrected ?? 0) > 0) {
    return {
      id,
      verdict: 'FAIL',
      fatal: true,
      reason: `${ecc.volatileUncorrected} uncorrected (double-bit) ECC errors since the driver loaded`,
      evidence,
      compatValue: 1,
    };
  }
  if (ecc.retiredPagesPending === true) {
    return {
      id,
      verdict: 'WARN',
      reason: 'page retirement pending: reset the GPU',
      evidence,
      compatValue: 0,
    };
  }
  return { id, verdict: 'PASS', reason: 'no uncorrected ECC errors', evidence, compatValue: 0 };
}

export interface EccCheckDeps {
  readonly nvml: NvmlLoad;
  readonly timeoutMs?: number;
}

export const ECC_SUMMARY = 'uncorrected (double-bit) ECC errors and pending page retirement';

export function createEccCheck(deps: EccCheckDeps): Check {
  return {
    ...gpuCheckBase('[[ ECC ]]'),
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
        const samples = [];
        if (ecc.volatileUncorrected !== undefined) {
          samples.push(
            gpuSample(
              'autopilot_gpu_ecc_volatile_uncorrected_errors',
              gpu,
              ecc.volatileUncorrected,
            ),
          );
        }
        if (ecc.retiredPagesPending !== undefined) {
          samples.push(
            gpuSample('autopilot_gpu_retired_pages_pending', gpu, ecc.retiredPagesPending ? 1 : 0),
          );
        }
        return { device: judgeEcc(String(gpu.index), ecc), samples };
      }),
  };
}
