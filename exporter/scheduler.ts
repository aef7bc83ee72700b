/**
 * Scheduler: the periodic round. It runs the periodic list once at start-up, then on the schedule
 * (`--w`: an interval or a cron expression), shifted by a per-node jitter so that the nodes of a
 * cluster do not all probe at the same moment. The next round is planned only when the current one
 * has ended, at the first tick still ahead: a slow round drops the ticks it overran instead of
 * stacking runs. `0` disables the timer; the start-up round still runs, as in Autopilot.
 */

import { fnv1a } from './math.js';
import type { CheckRun, Trigger } from './checks/check.js';
import type { Clock, CancelTimer } from './clock.js';
import { nextCronTime, scheduleIntervalMs, type Schedule } from './config/schedule.js';
import type { Logger } from './log.js';

export interface Scheduler {
  start(): void;
  stop(): void;
  /** Epoch milliseconds of the next planned round, if one is planned. */
  nextRoundAt(): number | undefined;
  /** Resolves when no round is running. */
  idle(): Promise<void>;
}

export interface SchedulerDeps {
  readonly schedule: Schedule;
  readonly checks: readonly string[];
  readonly run: (check: string, trigger: Trigger) => Promise<CheckRun>;
  readonly clock: Clock;
  readonly nodeName: string;
  readonly logger: Logger;
}

/** The jitter never exceeds this share of the period, nor this absolute bound. */
const MAX_JITTER_SHARE = 0.1;
const MAX_JITTER_MS = 5 * 60_000;

export function createScheduler(deps: SchedulerDeps): Scheduler {
  const { schedule, clock, logger } = deps;
  let cancelTimer: CancelTimer | undefined;
  let nextAt: number | undefined;
  let stopped = true;
  let anchor = 0;
  let currentRound: Promise<void> = Promise.resolve();

  const runRound = async (trigger: Trigger): Promise<void> => {
    const startedAt = clock.now();
    logger.info('periodic round started', { trigger, checks: deps.checks });
    for (const check of deps.checks) {
      if (stopped) break;
      try {
        await deps.run(check, trigger);
      } catch (error) {
        logger.error('periodic check could not run', { check, error });
      }
    }
    logger.info('periodic round ended', { durationSeconds: (clock.now() - startedAt) / 1000 });
  };

  const plan = (): void => {
    if (stopped) return;
    const now = clock.now();
    let at: number | undefined;
    try {
      at = nextTick(schedule, anchor, now, jitterFor(deps.nodeName, schedule, now));
    } catch (error) {
      logger.error('no next periodic round can be planned', { error });
      return;
    }
    nextAt = at;
    if (at === undefined) return;
    cancelTimer = clock.setTimer(() => {
      cancelTimer = undefined;
      nextAt = undefined;
      currentRound = runRound('periodic').then(plan);
    }, at - now);
  };

  return {
    start() {
      if (!stopped) return;
      stopped = false;
      anchor = clock.now();
      currentRound = runRound('startup').then(plan);
    },
    stop() {
      stopped = true;
      cancelTimer?.();
      cancelTimer = undefined;
      nextAt = undefined;
    },
    nextRoundAt: () => nextAt,
    idle: () => currentRound,
  };
}

/** First planned time strictly after `now`, or undefined when the schedule is disabled. */
export function nextTick(
  schedule: Schedule,
  anchor: number,
  now: number,
  jitterMs: number,
): number | undefined {
  switch (schedule.kind) {
    case 'disabled':
      return undefined;
    case 'interval': {
      const first = anchor + jitterMs + schedule.everyMs;
      if (now < first) return first;
      const periods = Math.floor((now - first) / schedule.everyMs) + 1;
      return first + periods * schedule.everyMs;
    }
    case 'cron':
      return nextCronTime(schedule.expression, now) + jitterMs;
  }
}

/** A stable offset in [0, bound) from the node name (FNV-1a), so restarts keep the same slot. */
export function jitterFor(nodeName: string, schedule: Schedule, now: number): number {
  const period = scheduleIntervalMs(schedule, now);
  if (period === undefined) return 0;
  const bound = Math.min(period * MAX_JITTER_SHARE, MAX_JITTER_MS);
  return Math.floor((fnv1a(nodeName) / 2 ** 32) * bound);
}

/** The schedules that start checks: the periodic round and, in Kubernetes mode, the deep check. */
export interface CheckSchedules {
  readonly periodic: Schedule;
  readonly periodicChecks: readonly string[];
  /** Absent where no deep check can start (standalone mode, or no image for its Job). */
  readonly deep?: { readonly schedule: Schedule; readonly checks: readonly string[] };
}

/**
 * Seconds between scheduled runs of each check, for autopilot_check_interval_seconds. A check on
 * both schedules (dcgm: level 1 in the round, level 3 in the deep check) gets the shorter, the one
 * that keeps its last run fresh. Checks that run only on demand are absent.
 */
export function checkIntervalSeconds(
  schedules: CheckSchedules,
  now: number,
): ReadonlyMap<string, number> {
  const intervals = new Map<string, number>();
  const add = (schedule: Schedule, checks: readonly string[]): void => {
    const ms = scheduleIntervalMs(schedule, now);
    if (ms === undefined) return;
    for (const check of checks) {
      const known = intervals.get(check);
      intervals.set(check, known === undefined ? ms / 1000 : Math.min(known, ms / 1000));
    }
  };
  add(schedules.periodic, schedules.periodicChecks);
  if (schedules.deep !== undefined) add(schedules.deep.schedule, schedules.deep.checks);
  return intervals;
}
