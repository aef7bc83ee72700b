/**
 * ResultStore: the latest run of every check, a bounded history per check, run counters, and the
 * node verdict. Reads are cheap snapshots, so scrapes and status reads never wait on a check.
 */

import { worstVerdict, type CheckRun, type Trigger, type Verdict } from './checks/check.js';
import {
  INITIAL_NODE_HEALTH,
  DEFAULT_EVICT_ON,
  acknowledgeEvict,
  evaluateNodeHealth,
  restoredEvict,
  type EvictOn,
  type HealthInputs,
  type NodeHealth,
} from './node-health.js';

export interface ResultStore {
  record(run: CheckRun): void;
  latest(check: string): CheckRun | undefined;
  /** The latest run of each check that has run, in the order checks first ran. */
  latestRuns(): CheckRun[];
  /**
   * Per check, what is known about each device: the latest run's results, where a device that
   * ended in ERROR keeps its last conclusive result. A run that concluded nothing leaves it as it
   * was. Metrics and the node verdict read this view.
   */
  conclusiveRuns(): CheckRun[];
  /** Newest first, at most historySize runs. */
  history(check: string): CheckRun[];
  runCount(check: string, verdict: Verdict): number;
  /** Runs of the check started by this trigger (post-flight, deep check, ...), since start. */
  triggerCount(check: string, trigger: Trigger): number;
  /** Epoch milliseconds at which the last run that found nothing failing ended. */
  lastSuccessAt(check: string): number | undefined;
  health(): NodeHealth;
  /** Changes whenever anything above changes, so renderings can be cached until it does. */
  version(): number;
  /** Lifts a sticky EVICT; returns the new health. */
  acknowledge(now: number): NodeHealth;
  /**
   * Takes over an EVICT found on the node (written before this process started), so a restart
   * does not quietly return an evicted node to service. dcgmFailedLevel: the highest level whose
   * dcgm.level.N label says ERR, which in dcgm mode is what set it.
   */
  restoreEvict(reason: string, now: number, dcgmFailedLevel?: number): NodeHealth;
  /** Calls `listener` after every change of the node health; returns the unsubscribe function. */
  onHealthChange(listener: (health: NodeHealth) => void): () => void;
}

export interface StoreOptions {
  readonly historySize: number;
  /** Whether a check's results count for the node health; all do unless this says otherwise. */
  readonly countsForHealth?: (check: string) => boolean;
  /** Which fatal findings evict (AUTOPILOT_EVICT_ON); DEFAULT_EVICT_ON when absent. */
  readonly evictOn?: EvictOn;
}

export function createResultStore(options: StoreOptions): ResultStore {
  const latest = new Map<string, CheckRun>();
  const conclusive = new Map<string, CheckRun>();
  const histories = new Map<string, CheckRun[]>();
  const counts = new Map<string, number>();
  const lastSuccess = new Map<string, number>();
  let health: NodeHealth = INITIAL_NODE_HEALTH;
  let acknowledgedAt: number | undefined;
  let version = 0;
  const listeners = new Set<(health: NodeHealth) => void>();

  const setHealth = (next: NodeHealth): void => {
    const changed = next !== health;
    health = next;
    if (changed) for (const listener of [...listeners]) listener(health);
  };

  const evictOn = options.evictOn ?? DEFAULT_EVICT_ON;
  const countsForHealth = (check: string): boolean => options.countsForHealth?.(check) ?? true;
  const inputs = (now: number, latestRun?: CheckRun): HealthInputs => ({
    conclusiveRuns: [...conclusive.values()].filter((run) => countsForHealth(run.check)),
    acknowledgedAt,
    now,
    evictOn,
    ...(latestRun !== undefined && countsForHealth(latestRun.check) ? { latest: latestRun } : {}),
  });

  return {
    record(run) {
      version += 1;
      latest.set(run.check, run);
      const merged = mergeConclusive(conclusive.get(run.check), run);
      if (merged !== undefined) conclusive.set(run.check, merged);
      const history = histories.get(run.check) ?? [];
      history.unshift(run);
      history.length = Math.min(history.length, options.historySize);
      histories.set(run.check, history);
      const key = `${run.check}\u0000${run.verdict}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
      const byTrigger = `${run.check}\u0001${run.trigger}`;
      counts.set(byTrigger, (counts.get(byTrigger) ?? 0) + 1);
      if (isSuccess(run.verdict)) lastSuccess.set(run.check, run.finishedAt);
      setHealth(evaluateNodeHealth(health, inputs(run.finishedAt, run)));
    },
    latest: (check) => latest.get(check),
    latestRuns: () => [...latest.values()],
    conclusiveRuns: () => [...conclusive.values()],
    history: (check) => [...(histories.get(check) ?? [])],
    runCount: (check, verdict) => counts.get(`${check}\u0000${verdict}`) ?? 0,
    triggerCount: (check, trigger) => counts.get(`${check}\u0001${trigger}`) ?? 0,
    lastSuccessAt: (check) => lastSuccess.get(check),
    health: () => health,
    version: () => version,
    acknowledge(now) {
      version += 1;
      acknowledgedAt = now;
      setHealth(acknowledgeEvict(health, inputs(now)));
      return health;
    },
    restoreEvict(reason, now, dcgmFailedLevel) {
      if (health.state === 'EVICT') return health;
      version += 1;
      setHealth(restoredEvict(reason, now, evictOn, dcgmFailedLevel));
      return health;
    },
    onHealthChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

/**
 * Pure. The conclusive view after `run`: devices that ended in ERROR keep their previous conclusive
 * result, so one peer that cannot be checked neither hides the others nor turns a failing device
 * back to healthy. Devices absent from `run` are gone. A run with no device results is the view
 * itself unless it is an ERROR, which concludes nothing.
 */
export function mergeConclusive(
  previous: CheckRun | undefined,
  run: CheckRun,
): CheckRun | undefined {
  if (run.devices.length === 0) return run.verdict === 'ERROR' ? previous : run;
  if (run.devices.every((device) => device.verdict === 'ERROR')) return previous;
  const before = new Map((previous?.devices ?? []).map((device) => [device.id, device]));
  const devices = run.devices.map((device) => {
    const kept = device.verdict === 'ERROR' ? before.get(device.id) : undefined;
    if (kept === undefined) return device;
    return { ...kept, observedAt: kept.observedAt ?? previous?.finishedAt ?? run.finishedAt };
  });
  return {
    ...run,
    devices,
    verdict: worstVerdict(devices.map((device) => device.verdict)) ?? run.verdict,
    samples: run.samples.length > 0 ? run.samples : (previous?.samples ?? []),
  };
}

/** A run that found nothing failing; SKIP counts, since a check that does not apply is no fault. */
export function isSuccess(verdict: Verdict): boolean {
  return verdict === 'PASS' || verdict === 'WARN' || verdict === 'SKIP';
}
