import type { CheckOutcome, CheckRun } from '../../exporter/checks/check.js';

/**
 * The record of an API run of `check` around `outcome`, as formatText is given it: a FAIL from 0 to
 * 1 ms with no reason of its own, the outcome's devices, and `samples` (the outcome's by default).
 */
export function apiRun(
  check: string,
  outcome: CheckOutcome,
  samples = outcome.samples ?? [],
): CheckRun {
  return {
    check,
    trigger: 'api',
    params: {},
    startedAt: 0,
    finishedAt: 1,
    verdict: 'FAIL',
    reason: '',
    devices: outcome.devices,
    samples,
  };
}
