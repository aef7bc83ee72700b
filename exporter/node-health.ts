/**
 * The node verdict (label autopilot.ibm.com/gpuhealth) derived from the latest conclusive run of
 * each check. Pure: the store calls it after every run.
 *
 * Rules: a fatal FAIL that may evict (evictOn below) gives EVICT; any other FAIL, a fatal one that
 * may not evict included, gives WARN; otherwise PASS once some device has been found PASS or WARN
 * (SKIP alone is never PASS). EVICT is sticky: an acknowledge clears it, and a passing DCGM run of
 * the same or a higher level clears an EVICT that only DCGM set (as Autopilot's DCGM script wrote
 * PASS after a passing run); a later round, however clean, does not.
 * ERROR is not evidence: the caller passes the conclusive view, in which a device that ended in
 * ERROR keeps its last conclusive result, so a check that stops completing cannot turn a failing
 * node back to PASS.
 */

import type { CheckRun } from './checks/check.js';

export const NODE_STATES = ['UNKNOWN', 'PASS', 'WARN', 'TESTING', 'EVICT'] as const;
/** UNKNOWN until the first conclusive run; TESTING is set while an exclusive check runs. */
export type NodeState = (typeof NODE_STATES)[number];

/**
 * AUTOPILOT_EVICT_ON. dcgm: only a DCGM test of DCGM_FATAL_ERRORS evicts, as in Autopilot (whose
 * other checks never evicted); all: every check's fatal finding evicts (row-remap failure, fatal
 * XID, double-bit ECC error, a missing GPU, ...).
 */
export const EVICT_MODES = ['dcgm', 'all'] as const;
export type EvictOn = (typeof EVICT_MODES)[number];
export const DEFAULT_EVICT_ON: EvictOn = 'all';

/** The check whose fatal findings evict in both modes, and whose passing run lifts its own EVICT. */
export const DCGM_CHECK = 'dcgm';

/** What stands behind an EVICT, so a passing DCGM run lifts what DCGM set and nothing else. */
export interface EvictCause {
  /** The highest DCGM level whose fatal failure evicted; undefined when DCGM did not. */
  readonly dcgmLevel: number | undefined;
  /** Another check's fatal finding, or an EVICT of unknown origin found on the node at start. */
  readonly other: boolean;
}

export interface NodeHealth {
  readonly state: NodeState;
  /** Epoch milliseconds of the last change of state. */
  readonly since: number;
  /** Why the node is in this state: one line per failing check and device. */
  readonly reasons: readonly string[];
  /** Set while the state is EVICT. */
  readonly evictCause?: EvictCause;
}

export const INITIAL_NODE_HEALTH: NodeHealth = { state: 'UNKNOWN', since: 0, reasons: [] };

export interface HealthInputs {
  /** The conclusive view of each check (ResultStore.conclusiveRuns). */
  readonly conclusiveRuns: Iterable<CheckRun>;
  /** Fatal failures observed at or before this time were acknowledged by an operator. */
  readonly acknowledgedAt: number | undefined;
  readonly now: number;
  /** Which fatal findings evict; DEFAULT_EVICT_ON when absent. */
  readonly evictOn?: EvictOn;
  /** The run just recorded, when there is one: a passing DCGM run may lift an EVICT. */
  readonly latest?: CheckRun;
}

/** The fatal findings that the mode lets evict, and every other failure. */
interface Findings {
  readonly fatal: readonly string[];
  readonly cause: EvictCause;
  readonly failing: readonly string[];
  readonly checked: boolean;
}

/** Said beside a fatal finding that only warns, so the operator sees what would evict it. */
const NOT_EVICTING = 'fatal, but only DCGM evicts with AUTOPILOT_EVICT_ON=dcgm';

function collectFindings(inputs: HealthInputs): Findings {
  const evictOn = inputs.evictOn ?? DEFAULT_EVICT_ON;
  const fatal: string[] = [];
  const failing: string[] = [];
  let dcgmLevel: number | undefined;
  let other = false;
  let checked = false;
  for (const run of inputs.conclusiveRuns) {
    if (run.devices.length === 0 && run.verdict === 'FAIL') {
      checked = true;
      failing.push(`${run.check}: ${run.reason}`);
    }
    const isDcgm = run.check === DCGM_CHECK;
    for (const device of run.devices) {
      // A check that does not apply here (SKIP) is no evidence of health.
      if (device.verdict === 'PASS' || device.verdict === 'WARN') checked = true;
      if (device.verdict !== 'FAIL') continue;
      checked = true;
      const observedAt = device.observedAt ?? run.finishedAt;
      const acknowledged =
        inputs.acknowledgedAt !== undefined && observedAt <= inputs.acknowledgedAt;
      const line = `${run.check}${device.id === '' ? '' : ` ${device.id}`}: ${device.reason}`;
      if (device.fatal !== true || acknowledged) failing.push(line);
      else if (!isDcgm && evictOn === 'dcgm') failing.push(`${line} (${NOT_EVICTING})`);
      else {
        fatal.push(line);
        if (isDcgm) dcgmLevel = Math.max(dcgmLevel ?? 0, dcgmLevelOf(run));
        else other = true;
      }
    }
  }
  return { fatal, cause: { dcgmLevel, other }, failing, checked };
}

/** The level a dcgm run was asked for: its r parameter, 1 when absent (the periodic round). */
export function dcgmLevelOf(run: CheckRun): number {
  const level = Number(run.params.r ?? '1');
  return Number.isInteger(level) && level >= 1 ? level : 1;
}

/**
 * A DCGM run that verified every device: each PASS or WARN, so nothing failed and no GPU was left
 * untested (a GPU whose hardware tests all skipped is SKIP, and proves nothing).
 */
export function isPassingDcgmRun(run: CheckRun): boolean {
  return (
    run.check === DCGM_CHECK &&
    run.devices.length > 0 &&
    run.devices.every((device) => device.verdict === 'PASS' || device.verdict === 'WARN')
  );
}

/** Whether `latest` lifts an EVICT with this cause: DCGM alone set it, at this level or lower. */
function liftsEvict(cause: EvictCause | undefined, latest: CheckRun | undefined): boolean {
  if (cause === undefined || cause.other || cause.dcgmLevel === undefined) return false;
  return latest !== undefined && isPassingDcgmRun(latest) && dcgmLevelOf(latest) >= cause.dcgmLevel;
}

function mergeCauses(a: EvictCause | undefined, b: EvictCause): EvictCause {
  if (a === undefined) return b;
  const levels = [a.dcgmLevel, b.dcgmLevel].filter((level) => level !== undefined);
  return {
    dcgmLevel: levels.length === 0 ? undefined : Math.max(...levels),
    other: a.other || b.other,
  };
}

export function evaluateNodeHealth(previous: NodeHealth, inputs: HealthInputs): NodeHealth {
  const findings = collectFindings(inputs);
  if (previous.state === 'EVICT' && !liftsEvict(previous.evictCause, inputs.latest)) {
    return {
      ...previous,
      reasons: findings.fatal.length > 0 ? findings.fatal : previous.reasons,
      evictCause: mergeCauses(
        previous.evictCause,
        findings.fatal.length > 0 ? findings.cause : { dcgmLevel: undefined, other: false },
      ),
    };
  }
  const { fatal, failing, checked } = findings;
  const base = previous.state === 'EVICT' ? 'UNKNOWN' : previous.state;
  const next: NodeState =
    fatal.length > 0 ? 'EVICT' : failing.length > 0 ? 'WARN' : checked ? 'PASS' : base;
  const reasons = next === 'EVICT' ? fatal : next === 'WARN' ? failing : [];
  return {
    state: next,
    since: next === previous.state ? previous.since : inputs.now,
    reasons,
    ...(next === 'EVICT' ? { evictCause: findings.cause } : {}),
  };
}

/** An operator's acknowledge: EVICT is lifted and the state follows the evidence again. */
export function acknowledgeEvict(previous: NodeHealth, inputs: HealthInputs): NodeHealth {
  if (previous.state !== 'EVICT') return previous;
  return evaluateNodeHealth(
    { state: 'UNKNOWN', since: previous.since, reasons: previous.reasons },
    inputs,
  );
}

/**
 * An EVICT found on the node when the exporter starts. Only in dcgm mode is its origin known: DCGM
 * at the highest level whose dcgm.level.N label says ERR; anywhere else it is lifted by an
 * acknowledge alone.
 */
export function restoredEvict(
  reason: string,
  now: number,
  evictOn: EvictOn,
  dcgmFailedLevel: number | undefined,
): NodeHealth {
  const byDcgm = evictOn === 'dcgm' && dcgmFailedLevel !== undefined;
  return {
    state: 'EVICT',
    since: now,
    reasons: [reason],
    evictCause: byDcgm
      ? { dcgmLevel: dcgmFailedLevel, other: false }
      : { dcgmLevel: undefined, other: true },
  };
}
