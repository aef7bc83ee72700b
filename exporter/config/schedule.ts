/**
 * A schedule setting: a Go duration ("1h", "0" disables), a whole number of hours as Autopilot
 * 2.1.3 took it ("1" is 1h), or a cron expression ("0 * * * *").
 */

import { CronTime, validateCronExpression } from 'cron';
import { formatDuration, parseGoDuration, parseWholeHours } from './duration.js';

export type Schedule =
  | { readonly kind: 'disabled' }
  | { readonly kind: 'interval'; readonly everyMs: number }
  | { readonly kind: 'cron'; readonly expression: string };

export const SCHEDULE_ACCEPTED =
  'a Go duration of at least 1s such as 1h, 30m, 90s or 1h30m, a whole number of hours as Autopilot 2.1 took it (1 is 1h), 0 to disable, or a cron expression such as "0 * * * *"';

/** Shorter intervals would run rounds back to back; nothing needs them. */
const SHORTEST_INTERVAL_MS = 1000;

/** Undefined when the text is neither a duration, whole hours nor a valid cron expression. */
export function parseSchedule(text: string): Schedule | undefined {
  const trimmed = text.trim();
  const ms = parseGoDuration(trimmed) ?? parseWholeHours(trimmed);
  if (ms !== undefined) {
    if (ms === 0) return { kind: 'disabled' };
    return ms >= SHORTEST_INTERVAL_MS ? { kind: 'interval', everyMs: ms } : undefined;
  }
  if (!/\s/.test(trimmed) || !validateCronExpression(trimmed).valid) return undefined;
  // The cron package accepts dates that never come ("0 0 30 2 *") and throws only when asked for
  // the next one; that must be a configuration error, not a crash after the first round.
  try {
    nextCronTime(trimmed, 0);
  } catch {
    return undefined;
  }
  return { kind: 'cron', expression: trimmed };
}

/** How a schedule reads in logs: "every 1h", "cron 0 * * * * (UTC)", "disabled". */
export function describeSchedule(schedule: Schedule): string {
  switch (schedule.kind) {
    case 'disabled':
      return 'disabled';
    case 'interval':
      return `every ${formatDuration(schedule.everyMs)}`;
    case 'cron':
      return `cron ${schedule.expression} (UTC)`;
  }
}

/**
 * Milliseconds between two planned runs, undefined when disabled. A cron expression's gaps may
 * differ ("0 9 * * 1-5" waits three days over a weekend): this is the gap between its next two
 * fire times after `now`.
 */
export function scheduleIntervalMs(schedule: Schedule, now: number): number | undefined {
  switch (schedule.kind) {
    case 'disabled':
      return undefined;
    case 'interval':
      return schedule.everyMs;
    case 'cron': {
      const first = nextCronTime(schedule.expression, now);
      return nextCronTime(schedule.expression, first) - first;
    }
  }
}

/** The first fire time strictly after `afterMs`, in UTC. */
export function nextCronTime(expression: string, afterMs: number): number {
  return new CronTime(expression, 'UTC').getNextDateFrom(new Date(afterMs), 'UTC').toMillis();
}
