/**
 * The node verdict (label autopilot.ibm.com/gpuhealth) derived from the latest conclusive run of
 * each check. Pure: the store calls it after every run.
 *
 * Rules: a fatal FAIL gives EVICT; any other FAIL gives WARN; otherwise PASS once some device has
 * been found PASS or WARN (SKIP alone is never PASS). EVICT is sticky: only an acknowledge (or,
 * later, a passing deep check) clears it.
 * ERROR is not evidence: the caller passes the conclusive view, in which a device that ended in
 * ERROR keeps its last conclusive result, so a check that stops completing cannot turn a failing
 * node back to PASS.
 */

import type { CheckRun } from './checks/check.js';

export const NODE_STATES = ['UNKNOWN', 'PASS', 'WARN', 'TESTING', 'EVICT'] as const;
/** UNKNOWN until the first conclusive run; TESTING is set while an exclusive check runs. */
export type NodeState = (typeof NODE_STATES)[number];

export interface NodeHealth {
  readonly state: NodeState;
  /** Epoch milliseconds of the last change of state. */
  readonly since: number;
  /** Why the node is in this state: one line per failing check and device. */
  readonly reasons: readonly string[];
}

export const INITIAL_NODE_HEALTH: NodeHealth = { state: 'UNKNOWN', since: 0, reasons: [] };

export interface HealthInputs {
  /** The conclusive view of each check (ResultStore.conclusiveRuns). */
  readonly conclusiveRuns: Iterable<CheckRun>;
  /** Fatal failures observed at or before this time were acknowledged by an operator. */
  readonly acknowledgedAt: number | undefined;
  readonly now: number;
}

export function evaluateNodeHealth(previous: NodeHealth, inputs: HealthInputs): NodeHealth {
  const fatal: string[] = [];
  const failing: string[] = [];
  let checked = false;
  for (const run of inputs.conclusiveRuns) {
    if (run.devices.length === 0 && run.verdict === 'FAIL') {
      checked = true;
      failing.push(`${run.check}: ${run.reason}`);
    }
    for (const device of run.devices) {
      // A check that does not apply here (SKIP) is no evidence of health.
      if (device.verdict === 'PASS' || device.verdict === 'WARN') checked = true;
      if (device.verdict !== 'FAIL') continue;
      checked = true;
      const observedAt = device.observedAt ?? run.finishedAt;
      const acknowledged =
        inputs.acknowledgedAt !== undefined && observedAt <= inputs.acknowledgedAt;
      const line = `${run.check}${device.id === '' ? '' : ` ${device.id}`}: ${device.reason}`;
      if (device.fatal === true && !acknowledged) fatal.push(line);
      else failing.push(line);
    }
  }

  if (previous.state === 'EVICT') {
    return { ...previous, reasons: fatal.length > 0 ? fatal : previous.reasons };
  }
  const next: NodeState =
    fatal.length > 0 ? 'EVICT' : failing.length > 0 ? 'WARN' : checked ? 'PASS' : previous.state;
  const reasons = next === 'EVICT' ? fatal : next === 'WARN' ? failing : [];
  return {
    state: next,
    since: next === previous.state ? previous.since : inputs.now,
    reasons,
  };
}

/** An operator's acknowledge: EVICT is lifted and the state follows the evidence again. */
export function acknowledgeEvict(previous: NodeHealth, inputs: HealthInputs): NodeHealth {
  if (previous.state !== 'EVICT') return previous;
  return evaluateNodeHealth({ ...previous, state: 'UNKNOWN' }, inputs);
}
