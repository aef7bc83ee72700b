/** Builders of CheckRun records for tests that feed the store directly. */

import type { CheckRun, DeviceResult, Verdict } from '../../exporter/checks/check.js';

export function device(
  id: string,
  verdict: Verdict,
  extra: Partial<DeviceResult> = {},
): DeviceResult {
  return { id, verdict, reason: `${verdict.toLowerCase()} reason`, evidence: {}, ...extra };
}

export function makeRun(
  check: string,
  finishedAt: number,
  devices: DeviceResult[],
  extra: Partial<CheckRun> = {},
): CheckRun {
  const verdicts = devices.map((d) => d.verdict);
  const verdict: Verdict = verdicts.includes('FAIL')
    ? 'FAIL'
    : verdicts.includes('ERROR')
      ? 'ERROR'
      : verdicts.includes('WARN')
        ? 'WARN'
        : verdicts.includes('PASS')
          ? 'PASS'
          : 'SKIP';
  return {
    check,
    trigger: 'periodic',
    params: {},
    startedAt: finishedAt - 1500,
    finishedAt,
    verdict,
    reason: `${verdict} run`,
    devices,
    samples: [],
    ...extra,
  };
}
