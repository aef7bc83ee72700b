/**
 * A schedule setting: a Go duration ("1h", "0" disables) or a cron expression ("0 * * * *").
 */

import { CronTime, validateCronExpression } from 'cron';
import { parseGoDuration } from './duration.js';

export type Schedule =
  | { readonly kind: 'disabled' }
  | { readonly kind: 'interval'; readonly everyMs: number }
  | { readonly kind: 'cron'; readonly expression: string };

export const SCHEDULE_ACCEPTED =
  'a Go duration such as 1h, 30m, 90s or 1h30m (0 disables), or a cron expression such as "0 * * * *"';

/** Undefined when the text is neither a duration nor a valid cron expression. */
export function parseSchedule(text: string): Schedule | undefined {
  const trimmed = text.trim();
  const ms = parseGoDuration(trimmed);
  if (ms !== undefined) return ms === 0 ? { kind: 'disabled' } : { kind: 'interval', everyMs: ms };
  if (!/\s/.test(trimmed)) return undefined;
  return validateCronExpression(trimmed).valid ? { kind: 'cron', expression: trimmed } : undefined;
}

/** The first fire time strictly after `afterMs`, in UTC. */
export function nextCronTime(expression: string, afterMs: number): number {
  return new CronTime(expression, 'UTC').getNextDateFrom(new Date(afterMs), 'UTC').toMillis();
}
