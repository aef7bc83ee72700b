/**
 * gpupower: clock event reasons per GPU, from NVML (Autopilot's "power-slowdown"). Hardware
 * slowdown, external power brake and hardware thermal slowdown → FAIL; software thermal
 * slowdown → WARN; the rest (idle, power cap, sync boost…) are normal operation.
 */

import type { NvmlLoad } from '../native/ports.js';
import type { Check, DeviceResult } from './check.js';
import { gpuCheckBase, gpuSample, readEachGpu } from './gpu-common.js';

/** nvmlClocksEventReason* bits, named as the `reason` label of autopilot_gpu_clock_event_reason. */
export const CLOCK_EVENT_REASONS = [
  ['gpu_idle', 0x1n],
  ['applications_clocks_setting', 0x2n],
  ['sw_power_cap', 0x4n],
  ['hw_slowdown', 0x8n],
  ['sync_boost', 0x10n],
  ['sw_thermal_slowdown', 0x20n],
  ['hw_thermal_slowdown', 0x40n],
  ['hw_power_brake_slowdown', 0x80n],
  ['display_clock_setting', 0x100n],
] as const;

const FAILING: Readonly<Record<string, string>> = {
  hw_power_brake_slowdown: 'power brake asserted (external, e.g. by the PSU or BMC)',
  hw_thermal_slowdown: 'hardware thermal slowdown',
  hw_slowdown: 'hardware slowdown',
};

/** Pure: names of the reasons set in the mask; unknown bits appear as "other". */
export function activeReasons(mask: bigint): string[] {
  const names: string[] = CLOCK_EVENT_REASONS.filter(([, bit]) => (mask & bit) !== 0n).map(
    ([n]) => n,
  );
  const known = CLOCK_EVENT_REASONS.reduce((all, [, bit]) => all | bit, 0n);
  if ((mask & ~known) !== 0n) names.push('other');
  return names;
}

/** Pure: the verdict for one GPU. */
export function judgeClockEvents(id: string, mask: bigint): DeviceResult {
  const active = activeReasons(mask);
  const evidence = { reasonsMask: `0x${mask.toString(16)}`, activeReasons: active.join(',') };
  // Power brake and thermal also set hw_slowdown; name the specific cause when there is one.
  const cause = ['hw_power_brake_slowdown', 'hw_thermal_slowdown', 'hw_slowdown'].find((r) =>
    active.includes(r),
  );
  if (cause !== undefined) {
    return { id, verdict: 'FAIL', reason: `${FAILING[cause]} active`, evidence, compatValue: 1 };
  }
  if (active.includes('sw_thermal_slowdown')) {
    return {
      id,
      verdict: 'WARN',
      reason: 'software thermal slowdown active',
      evidence,
      compatValue: 0,
    };
  }
  return {
    id,
    verdict: 'PASS',
    reason: active.length === 0 ? 'no clock event reason active' : `normal: ${active.join(', ')}`,
    evidence,
    compatValue: 0,
  };
}

export interface GpuPowerCheckDeps {
  readonly nvml: NvmlLoad;
  readonly timeoutMs?: number;
}

export const GPUPOWER_SUMMARY = 'power brake, hardware and thermal slowdown (clock event reasons)';

export function createGpuPowerCheck(deps: GpuPowerCheckDeps): Check {
  return {
    ...gpuCheckBase('[GPU POWER]'),
    name: 'gpupower',
    summary: GPUPOWER_SUMMARY,
    banner: 'GPU Power Measurement test',
    compatHealth: 'power-slowdown',
    usesGpu: true,
    exclusive: false,
    timeoutMs: deps.timeoutMs ?? 30_000,
    run: () =>
      readEachGpu(deps.nvml, async (nvml, gpu) => {
        const mask = await nvml.clockEventReasons(gpu.index);
        return {
          device: judgeClockEvents(String(gpu.index), mask),
          samples: CLOCK_EVENT_REASONS.map(([reason, bit]) =>
            gpuSample('autopilot_gpu_clock_event_reason', gpu, (mask & bit) !== 0n ? 1 : 0, {
              reason,
            }),
          ),
        };
      }),
  };
}
