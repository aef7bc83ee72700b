/**
 * gpupower: clock event reasons per GPU, from NVML (Autopilot's "power-slowdown"). Hardware
 * slowdown, external power brake and hardware thermal slowdown → FAIL when they persist; software
 * thermal slowdown → WARN; the rest (idle, power cap, sync boost…) are normal operation.
 *
 * A single read of a hardware bit can catch a passing state (hw_slowdown is also raised briefly
 * around P-state changes), so a GPU fails only when the bit holds in two reads at least
 * PERSISTENCE_MS apart, or when the driver's accumulated slowdown duration grew for most of the
 * time between them. A bit seen in one read only is WARN, with both readings in the evidence.
 */

import {
  NVML_ERROR_NOT_SUPPORTED,
  type FieldValue,
  type GpuDevice,
  type Nvml,
  type NvmlLoad,
} from '../native/ports.js';
import type { Check, DeviceResult, Evidence, Sample } from './check.js';
import { gpuCheckBase, gpuSample, readEachGpu } from './gpu-common.js';
import type { CheckModule } from './module.js';

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

/** The least time between the two reads of a GPU's reasons. */
export const PERSISTENCE_MS = 100;
/** Share of the time between the reads that an accumulated duration must grow by to fail. */
export const SUSTAINED_SHARE = 0.5;

const HW_POWER_BRAKE = 0x80n;
const HW_THERMAL = 0x40n;
const HW_SLOWDOWN = 0x8n;
const SW_THERMAL = 0x20n;

/** Power brake and thermal also set hw_slowdown: the specific cause is named first. */
const FAILING: readonly (readonly [bigint, string])[] = [
  [HW_POWER_BRAKE, 'power brake asserted (external, e.g. by the PSU or BMC)'],
  [HW_THERMAL, 'hardware thermal slowdown'],
  [HW_SLOWDOWN, 'hardware slowdown'],
];
const FAILING_BITS = HW_POWER_BRAKE | HW_THERMAL | HW_SLOWDOWN;

/** Pure: names of the reasons set in the mask; unknown bits appear as "other". */
export function activeReasons(mask: bigint): string[] {
  const names: string[] = CLOCK_EVENT_REASONS.filter(([, bit]) => (mask & bit) !== 0n).map(
    ([n]) => n,
  );
  const known = CLOCK_EVENT_REASONS.reduce((all, [, bit]) => all | bit, 0n);
  if ((mask & ~known) !== 0n) names.push('other');
  return names;
}

/** One read of a GPU: its reasons and, where the driver has them, the accumulated durations. */
export interface PowerReading {
  readonly mask: bigint;
  readonly durations: SlowdownDurations;
}

/** Two reads `intervalMs` apart; `second` is absent when the first showed nothing to confirm. */
export interface PowerReadings {
  readonly first: PowerReading;
  readonly second?: PowerReading;
  readonly intervalMs: number;
}

const hex = (mask: bigint): string => `0x${mask.toString(16)}`;

function causeOf(mask: bigint): string | undefined {
  return FAILING.find(([bit]) => (mask & bit) !== 0n)?.[1];
}

/** Growth of an accumulated duration between the reads, in ns; undefined where not both known. */
function growthNs(first: bigint | undefined, second: bigint | undefined): number | undefined {
  return first === undefined || second === undefined || second < first
    ? undefined
    : Number(second - first);
}

function evidenceOf(readings: PowerReadings): Evidence {
  const latest = readings.second ?? readings.first;
  const evidence: Record<string, string | number> = {
    reasonsMask: hex(latest.mask),
    activeReasons: activeReasons(latest.mask).join(','),
    firstReasonsMask: hex(readings.first.mask),
  };
  if (readings.second !== undefined) evidence.intervalMs = readings.intervalMs;
  const thermal = growthNs(
    readings.first.durations.hwThermalNs,
    readings.second?.durations.hwThermalNs,
  );
  const brake = growthNs(
    readings.first.durations.hwPowerBrakeNs,
    readings.second?.durations.hwPowerBrakeNs,
  );
  if (thermal !== undefined) evidence.hwThermalSlowdownGrowthNs = thermal;
  if (brake !== undefined) evidence.hwPowerBrakeSlowdownGrowthNs = brake;
  return evidence;
}

/**
 * The hardware slowdown whose accumulated duration grew between the reads, the longest first, with
 * whether it grew by at least SUSTAINED_SHARE of the interval.
 */
function slowdownBetween(
  readings: PowerReadings,
): { readonly text: string; readonly sustained: boolean } | undefined {
  const { first, second, intervalMs } = readings;
  if (second === undefined || intervalMs <= 0) return undefined;
  const counters: [string, number | undefined][] = [
    [
      'power brake asserted',
      growthNs(first.durations.hwPowerBrakeNs, second.durations.hwPowerBrakeNs),
    ],
    [
      'hardware thermal slowdown',
      growthNs(first.durations.hwThermalNs, second.durations.hwThermalNs),
    ],
  ];
  let grown: [string, number] | undefined;
  for (const [name, ns] of counters) {
    if (ns !== undefined && ns > 0 && (grown === undefined || ns > grown[1])) grown = [name, ns];
  }
  if (grown === undefined) return undefined;
  const [name, ns] = grown;
  return {
    text: `${name} for ${Math.round(ns / 1e6)} ms of the ${intervalMs} ms between two reads (NVML accumulated duration)`,
    sustained: ns >= SUSTAINED_SHARE * intervalMs * 1e6,
  };
}

/** Pure: the verdict for one GPU from its two reads. */
export function judgeClockEvents(id: string, readings: PowerReadings): DeviceResult {
  const { first, second, intervalMs } = readings;
  const evidence = evidenceOf(readings);
  const fail = (reason: string): DeviceResult => ({
    id,
    verdict: 'FAIL',
    reason,
    evidence,
    compatValue: 1,
  });
  const held = second === undefined ? undefined : causeOf(first.mask & second.mask & FAILING_BITS);
  if (held !== undefined) return fail(`${held} held across two reads ${intervalMs} ms apart`);
  const slowdown = slowdownBetween(readings);
  if (slowdown?.sustained === true) return fail(slowdown.text);
  const warn = (reason: string): DeviceResult => ({
    id,
    verdict: 'WARN',
    reason,
    evidence,
    compatValue: 0,
  });
  if (slowdown !== undefined) return warn(`${slowdown.text}: less than half, not failed`);
  const passing = causeOf(first.mask) ?? (second === undefined ? undefined : causeOf(second.mask));
  if (passing !== undefined) {
    return warn(
      `${passing} in one read of two ${intervalMs} ms apart (a passing state, not failed)`,
    );
  }
  const latest = second ?? first;
  if ((latest.mask & SW_THERMAL) !== 0n) return warn('software thermal slowdown active');
  const active = activeReasons(latest.mask);
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
  /** Resolves after `ms`, rejects when `signal` aborts; real timers unless a test passes its own. */
  readonly sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Milliseconds on a monotonic clock; performance.now unless a test passes its own. */
  readonly now?: () => number;
}

/** Real time: the interval between the reads is a physical one, whatever clock schedules checks. */
function timerSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', stop);
      resolve();
    }, ms);
    const stop = (): void => {
      clearTimeout(timer);
      reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    };
    if (signal.aborted) stop();
    else signal.addEventListener('abort', stop, { once: true });
  });
}

export const GPUPOWER_SUMMARY = 'power brake, hardware and thermal slowdown (clock event reasons)';

const NO_DURATIONS: SlowdownDurations = { hwThermalNs: undefined, hwPowerBrakeNs: undefined };

/**
 * Time the GPU has spent in a hardware slowdown since the driver loaded, in nanoseconds
 * (NVML_FI_DEV_CLOCKS_EVENT_REASON_*). Each is undefined where the driver does not have the field
 * (NOT_SUPPORTED, or a driver before R575). hw_slowdown (0x8) itself has no such counter.
 */
export interface SlowdownDurations {
  readonly hwThermalNs: bigint | undefined;
  readonly hwPowerBrakeNs: bigint | undefined;
}

export interface SlowdownFieldIds {
  readonly hwThermal: number;
  readonly hwPowerBrake: number;
}

/**
 * NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN and _HW_POWER_BRAKE_SLOWDOWN as the driver of
 * this version numbers them. They first appear in nvml.h 12.9 (R575) as 252 and 253, and nvidia-smi
 * 580.65.06 asks for 251-253 (NVIDIA/k8s-test-infra pkg/gpu/mocknvml/engine/throttle_counters.go);
 * nvml.h 13.1.2 (CUDA 13.1, driver R590) renumbered them 270 and 271 and gave 251-253 to power
 * smoothing settings. Undefined before R575 and for a version that does not parse.
 */
export function slowdownFieldIds(driverVersion: string): SlowdownFieldIds | undefined {
  const major = Number(/^(\d+)\./.exec(driverVersion)?.[1]);
  if (!Number.isInteger(major) || major < 575) return undefined;
  return major >= 590
    ? { hwThermal: 270, hwPowerBrake: 271 }
    : { hwThermal: 252, hwPowerBrake: 253 };
}

/** A duration field's nanoseconds; another type means the id names another field on this driver. */
function durationOf(field: FieldValue | undefined): bigint | undefined {
  return field?.ok === true &&
    field.type === 'unsigned long long' &&
    typeof field.value === 'bigint'
    ? field.value
    : undefined;
}

/** Pure: the durations of one fieldValues answer; a field that failed otherwise spoils both. */
export function slowdownDurationsOf(fields: readonly FieldValue[]): SlowdownDurations {
  const failed = fields.some((f) => !f.ok && f.code !== NVML_ERROR_NOT_SUPPORTED);
  if (failed) return NO_DURATIONS;
  return { hwThermalNs: durationOf(fields[0]), hwPowerBrakeNs: durationOf(fields[1]) };
}

/** Reads the two durations through the generic field reader, the ids asked of the driver once. */
function slowdownReader(): (nvml: Nvml, index: number) => Promise<SlowdownDurations> {
  let ids: Promise<SlowdownFieldIds | undefined> | undefined;
  return async (nvml, index) => {
    ids ??= nvml.driverVersion().then(slowdownFieldIds, () => undefined);
    const known = await ids;
    if (known === undefined) return NO_DURATIONS;
    return slowdownDurationsOf(
      await nvml.fieldValues(index, [known.hwThermal, known.hwPowerBrake]),
    );
  };
}

async function readPower(
  nvml: Nvml,
  gpu: GpuDevice,
  durationsOf: (nvml: Nvml, index: number) => Promise<SlowdownDurations>,
): Promise<PowerReading> {
  const mask = await nvml.clockEventReasons(gpu.index);
  // The durations only add evidence: a driver that cannot give them leaves the reasons to judge.
  const durations = await durationsOf(nvml, gpu.index).catch(() => NO_DURATIONS);
  return { mask, durations };
}

function samplesOf(gpu: GpuDevice, latest: PowerReading): Sample[] {
  const samples = CLOCK_EVENT_REASONS.map(([reason, bit]) =>
    gpuSample('autopilot_gpu_clock_event_reason', gpu, (latest.mask & bit) !== 0n ? 1 : 0, {
      reason,
    }),
  );
  const durations = [
    ['hw_thermal_slowdown', latest.durations.hwThermalNs],
    ['hw_power_brake_slowdown', latest.durations.hwPowerBrakeNs],
  ] as const;
  for (const [reason, ns] of durations) {
    if (ns === undefined) continue;
    samples.push(
      gpuSample('autopilot_gpu_slowdown_seconds_total', gpu, Number(ns) / 1e9, {
        reason,
      }),
    );
  }
  return samples;
}

// Autopilot's power script wrote `[[GPU POWER]]` on its first line and `[GPU POWER]` below.
const TEXT = gpuCheckBase(
  '[GPU POWER]',
  '[[GPU POWER]] Briefings completed. Continue with power cap evaluation.',
);

export function createGpuPowerCheck(deps: GpuPowerCheckDeps): Check {
  const sleep = deps.sleep ?? timerSleep;
  const now = deps.now ?? (() => performance.now());
  const durationsOf = slowdownReader();
  return {
    ...TEXT,
    name: 'gpupower',
    summary: GPUPOWER_SUMMARY,
    banner: 'GPU Power Measurement test',
    compatHealth: 'power-slowdown',
    usesGpu: true,
    exclusive: false,
    timeoutMs: deps.timeoutMs ?? 30_000,
    run: (ctx) =>
      readEachGpu(deps.nvml, async (nvml, gpu) => {
        const first = await readPower(nvml, gpu, durationsOf);
        const startedAt = now();
        const hasDurations =
          first.durations.hwThermalNs !== undefined || first.durations.hwPowerBrakeNs !== undefined;
        if ((first.mask & FAILING_BITS) === 0n && !hasDurations) {
          return {
            device: judgeClockEvents(String(gpu.index), { first, intervalMs: 0 }),
            samples: samplesOf(gpu, first),
          };
        }
        await sleep(PERSISTENCE_MS, ctx.signal);
        const second = await readPower(nvml, gpu, durationsOf);
        const readings = { first, second, intervalMs: Math.max(Math.round(now() - startedAt), 0) };
        return {
          device: judgeClockEvents(String(gpu.index), readings),
          samples: samplesOf(gpu, second),
        };
      }),
  };
}

export const gpupowerModule: CheckModule = {
  name: 'gpupower',
  summary: GPUPOWER_SUMMARY,
  policy: {
    periodic: 5,
    postflight: { order: 3 },
    preflight: true,
    exclusive: false,
    nvmlOnly: true,
  },
  metrics: ['autopilot_gpu_clock_event_reason', 'autopilot_gpu_slowdown_seconds_total'],
  formatText: TEXT.formatText,
  statusName: 'GPU POWER',
  // The two reads are spaced in real time, not on the scheduler's clock: the interval is a
  // physical one that the driver's accumulated durations are compared with.
  create: (config, ports) =>
    createGpuPowerCheck({ nvml: ports.nvml, timeoutMs: config.nvmlCheckTimeoutMs }),
};
