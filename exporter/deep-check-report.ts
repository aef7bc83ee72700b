/**
 * The deep check's report: the deep-check Job runs the checks below and leaves its results in its
 * container's termination message, which the exporter that created the Job reads back. Pure, so
 * both sides (main.ts in the Job, cluster/deep-check.ts in the exporter) share one format.
 */

import type { CheckRun, Verdict } from './checks/check.js';
import { VERDICTS } from './checks/check.js';

/** What the deep check runs: DCGM level 3 and the memory and arithmetic test. */
export const DEEP_CHECKS: readonly (readonly [string, Readonly<Record<string, string>>])[] = [
  ['dcgm', { r: '3' }],
  ['gpumem', {}],
];

/** Kubernetes keeps at most 4,096 bytes of a termination message. */
export const TERMINATION_MESSAGE_BYTES = 4096;

export interface DeepCheckRunReport {
  readonly check: string;
  readonly verdict: Verdict;
  readonly reason: string;
  /** dcgm: Autopilot's failure string (pcie.2memory_bandwidth.0), for the .output annotation. */
  readonly failures?: string;
  readonly devices: readonly {
    readonly id: string;
    readonly verdict: Verdict;
    readonly reason: string;
    readonly fatal: boolean;
  }[];
}

/** Pure: the JSON the Job leaves for the exporter, shortened to fit a termination message. */
export function deepCheckReport(runs: readonly CheckRun[]): string {
  const full: DeepCheckRunReport[] = runs.map((run) => ({
    check: run.check,
    verdict: run.verdict,
    reason: run.reason,
    ...failuresOf(run),
    devices: run.devices.map((d) => ({
      id: d.id,
      verdict: d.verdict,
      reason: d.reason,
      fatal: d.fatal === true,
    })),
  }));
  for (const limit of [200, 80, 20, 0]) {
    const text = JSON.stringify({
      runs: full.map((run) => ({
        ...run,
        reason: run.reason.slice(0, limit),
        devices: run.devices.map((d) => ({ ...d, reason: d.reason.slice(0, limit) })),
      })),
    });
    if (Buffer.byteLength(text) <= TERMINATION_MESSAGE_BYTES) return text;
  }
  // Too many devices for the message: the verdicts per check, and only the failing devices, whose
  // fatal flag decides whether the node is evicted.
  return JSON.stringify({
    runs: full.map(({ check, verdict, devices }) => ({
      check,
      verdict,
      reason: '',
      devices: devices
        .filter((d) => d.verdict === 'FAIL')
        .map((d) => ({ id: d.id, verdict: d.verdict, reason: '', fatal: d.fatal })),
    })),
  });
}

/** The dcgm check keeps Autopilot's failure string on its node-level device. */
function failuresOf(run: CheckRun): { failures?: string } {
  const failures = run.devices.find((d) => d.id === '')?.evidence.failures;
  return typeof failures === 'string' && failures !== ''
    ? { failures: failures.slice(0, 500) }
    : {};
}

/** Pure: the report back, or undefined when the message is not one (a crash's log tail). */
export function readDeepCheckReport(message: string | undefined): DeepCheckRunReport[] | undefined {
  if (message === undefined) return undefined;
  try {
    const parsed = JSON.parse(message) as { runs?: unknown };
    if (!Array.isArray(parsed.runs)) return undefined;
    const verdicts: readonly string[] = VERDICTS;
    const runs = (parsed.runs as Partial<DeepCheckRunReport>[]).filter(
      (run) => typeof run.check === 'string' && verdicts.includes(String(run.verdict)),
    );
    return runs.map((run) => ({
      check: run.check!,
      verdict: run.verdict!,
      reason: typeof run.reason === 'string' ? run.reason : '',
      ...(typeof run.failures === 'string' ? { failures: run.failures } : {}),
      devices: (Array.isArray(run.devices) ? (run.devices as unknown[]) : []).flatMap((entry) => {
        const d = entry as Partial<DeepCheckRunReport['devices'][number]>;
        if (typeof d.id !== 'string' || !verdicts.includes(String(d.verdict))) return [];
        return [
          {
            id: d.id,
            verdict: d.verdict!,
            reason: typeof d.reason === 'string' ? d.reason : '',
            fatal: d.fatal === true,
          },
        ];
      }),
    }));
  } catch {
    return undefined;
  }
}
