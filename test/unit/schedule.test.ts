import { describe, test, expect } from '@jest/globals';
import {
  SCHEDULE_ACCEPTED,
  describeSchedule,
  nextCronTime,
  parseSchedule,
  type Schedule,
} from '../../exporter/config/schedule.js';

describe('parseSchedule', () => {
  test.each<[string, Schedule]>([
    ['1h', { kind: 'interval', everyMs: 3_600_000 }],
    ['30m', { kind: 'interval', everyMs: 1_800_000 }],
    ['90s', { kind: 'interval', everyMs: 90_000 }],
    ['1h30m', { kind: 'interval', everyMs: 5_400_000 }],
    ['1.5h', { kind: 'interval', everyMs: 5_400_000 }],
    ['4h', { kind: 'interval', everyMs: 14_400_000 }],
    ['1s', { kind: 'interval', everyMs: 1000 }],
    [' 1h ', { kind: 'interval', everyMs: 3_600_000 }],
  ])('duration %j is an interval', (text, schedule) => {
    expect(parseSchedule(text)).toEqual(schedule);
  });

  // Autopilot 2.1.3: `--w 1` (flag.Int, hours), as its chart renders `repeat: 1`.
  test.each<[string, number]>([
    ['1', 3_600_000],
    ['4', 14_400_000],
    ['24', 86_400_000],
    ['123', 442_800_000],
    ['+2', 7_200_000],
    [' 1 ', 3_600_000],
    ['2562047', 2_562_047 * 3_600_000],
  ])('whole hours %j are an interval of that many hours', (text, everyMs) => {
    expect(parseSchedule(text)).toEqual({ kind: 'interval', everyMs });
  });

  test.each(['0', '0s', '0m', ' 0 ', '+0'])('%j disables', (text) => {
    expect(parseSchedule(text)).toEqual({ kind: 'disabled' });
  });

  test.each<[string, string]>([
    ['0 * * * *', '0 * * * *'],
    ['*/15 * * * *', '*/15 * * * *'],
    ['30 2 * * 1-5', '30 2 * * 1-5'],
    ['0 0 1 * *', '0 0 1 * *'],
    ['  0 * * * *  ', '0 * * * *'],
  ])('cron expression %j', (text, expression) => {
    expect(parseSchedule(text)).toEqual({ kind: 'cron', expression });
  });

  test.each([
    '61 * * * *',
    '* 24 * * *',
    '0 0 32 * *',
    'not a cron at all',
    '* * *',
    '* * * * * * *',
    '1h 30m',
    '',
    '   ',
    '-1',
    '1.5',
    '010',
    '0x10',
    '1e3',
    '2562048',
    '1x',
    '1d',
    '-1h',
    'soon',
  ])('%j is neither a duration nor a cron expression', (text) => {
    expect(parseSchedule(text)).toBeUndefined();
  });

  test('the accepted form names both a duration and a cron expression', () => {
    expect(SCHEDULE_ACCEPTED).toBe(
      'a Go duration of at least 1s such as 1h, 30m, 90s or 1h30m, a whole number of hours as Autopilot 2.1 took it (1 is 1h), 0 to disable, or a cron expression such as "0 * * * *"',
    );
  });

  test.each<[string, string]>([
    ['1', 'every 1h'],
    ['1h30m', 'every 1h30m'],
    ['0', 'disabled'],
    ['0 * * * *', 'cron 0 * * * * (UTC)'],
  ])('%j reads as %j in the logs', (text, described) => {
    expect(describeSchedule(parseSchedule(text)!)).toBe(described);
  });

  test.each(['1ns', '500ms', '999ms'])('%j is too short to be a periodic interval', (text) => {
    expect(parseSchedule(text)).toBeUndefined();
  });

  test.each(['0 0 30 2 *', '0 0 31 4 *'])(
    'the cron date %j that never comes is refused instead of crashing later',
    (text) => {
      expect(parseSchedule(text)).toBeUndefined();
    },
  );
});

describe('nextCronTime', () => {
  const at = (
    year: number,
    month: number,
    day: number,
    hour: number,
    minute: number,
    second = 0,
    ms = 0,
  ): number => Date.UTC(year, month - 1, day, hour, minute, second, ms);

  test.each<[string, string, number, number]>([
    ['hourly, exactly on a fire time', '0 * * * *', at(2024, 1, 1, 0, 0), at(2024, 1, 1, 1, 0)],
    [
      'hourly, 1 ms after a fire time',
      '0 * * * *',
      at(2024, 1, 1, 0, 0, 0, 1),
      at(2024, 1, 1, 1, 0),
    ],
    ['hourly, just before', '0 * * * *', at(2024, 1, 1, 0, 59, 59, 999), at(2024, 1, 1, 1, 0)],
    ['hourly, mid-hour', '0 * * * *', at(2024, 3, 10, 14, 27, 13), at(2024, 3, 10, 15, 0)],
    ['hourly, across midnight', '0 * * * *', at(2024, 1, 1, 23, 30), at(2024, 1, 2, 0, 0)],
    ['every 15 min, between', '*/15 * * * *', at(2024, 1, 1, 0, 30, 1), at(2024, 1, 1, 0, 45)],
    ['every 15 min, on one', '*/15 * * * *', at(2024, 1, 1, 0, 45), at(2024, 1, 1, 1, 0)],
    [
      'every 15 min, second before one',
      '*/15 * * * *',
      at(2024, 1, 1, 0, 44, 59),
      at(2024, 1, 1, 0, 45),
    ],
    ['every minute', '* * * * *', at(2024, 6, 15, 12, 34, 56, 789), at(2024, 6, 15, 12, 35)],
    ['every minute, on one', '* * * * *', at(2024, 6, 15, 12, 34), at(2024, 6, 15, 12, 35)],
    ['daily, leap day', '30 2 * * *', at(2024, 2, 28, 3, 0), at(2024, 2, 29, 2, 30)],
    ['monthly, across the year', '0 0 1 * *', at(2024, 12, 31, 23, 59, 59), at(2025, 1, 1, 0, 0)],
    [
      'weekly on Monday, from a Monday fire',
      '0 9 * * 1',
      at(2024, 1, 1, 9, 0),
      at(2024, 1, 8, 9, 0),
    ],
    ['weekly on Monday, from a Sunday', '0 9 * * 1', at(2024, 1, 7, 20, 0), at(2024, 1, 8, 9, 0)],
  ])('%s', (_name, expression, afterMs, expected) => {
    const next = nextCronTime(expression, afterMs);
    expect(new Date(next).toISOString()).toBe(new Date(expected).toISOString());
    expect(next).toBeGreaterThan(afterMs);
  });

  test('works in UTC whatever the process time zone', () => {
    const saved = process.env.TZ;
    try {
      process.env.TZ = 'America/New_York';
      expect(nextCronTime('0 2 * * *', at(2024, 3, 10, 1, 0))).toBe(at(2024, 3, 10, 2, 0));
      process.env.TZ = 'Asia/Kolkata';
      expect(nextCronTime('0 * * * *', at(2024, 1, 1, 0, 0))).toBe(at(2024, 1, 1, 1, 0));
    } finally {
      if (saved === undefined) delete process.env.TZ;
      else process.env.TZ = saved;
    }
  });

  test('repeated calls walk the schedule one fire time at a time', () => {
    let t = at(2024, 1, 1, 0, 0);
    const fires: string[] = [];
    for (let i = 0; i < 5; i++) {
      t = nextCronTime('*/15 * * * *', t);
      fires.push(new Date(t).toISOString());
    }
    expect(fires).toEqual([
      '2024-01-01T00:15:00.000Z',
      '2024-01-01T00:30:00.000Z',
      '2024-01-01T00:45:00.000Z',
      '2024-01-01T01:00:00.000Z',
      '2024-01-01T01:15:00.000Z',
    ]);
  });
});
