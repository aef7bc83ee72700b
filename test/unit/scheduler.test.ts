import { describe, expect, test } from '@jest/globals';
import type { CheckRun, Trigger } from '../../exporter/checks/check.js';
import { silentLogger } from '../../exporter/log.js';
import {
  checkIntervalSeconds,
  createScheduler,
  jitterFor,
  nextTick,
} from '../../exporter/scheduler.js';
import type { Schedule } from '../../exporter/config/schedule.js';
import { FakeClock } from '../fakes/clock.js';

const HOUR = 3_600_000;

interface Call {
  readonly check: string;
  readonly trigger: Trigger;
  readonly at: number;
}

/** A scheduler over a fake clock whose checks take `durationMs` of fake time each. */
function setup(schedule: Schedule, checks: string[], durationMs = 0, nodeName = 'node-a') {
  const clock = new FakeClock();
  const calls: Call[] = [];
  let running = 0;
  let maxRunning = 0;
  const run = async (check: string, trigger: Trigger): Promise<CheckRun> => {
    calls.push({ check, trigger, at: clock.now() });
    running += 1;
    maxRunning = Math.max(maxRunning, running);
    if (durationMs > 0) await new Promise<void>((resolve) => clock.setTimer(resolve, durationMs));
    running -= 1;
    return {
      check,
      trigger,
      params: {},
      startedAt: clock.now(),
      finishedAt: clock.now(),
      verdict: 'PASS',
      reason: '',
      devices: [],
      samples: [],
    };
  };
  const scheduler = createScheduler({
    schedule,
    checks,
    run,
    clock,
    nodeName,
    logger: silentLogger,
  });
  return { clock, calls, scheduler, maxRunning: () => maxRunning };
}

describe('scheduler', () => {
  test('runs the periodic list once at start-up, in order', async () => {
    const { clock, calls, scheduler } = setup({ kind: 'interval', everyMs: HOUR }, ['a', 'b']);
    const start = clock.now();
    scheduler.start();
    await clock.advance(0);
    expect(calls).toEqual([
      { check: 'a', trigger: 'startup', at: start },
      { check: 'b', trigger: 'startup', at: start },
    ]);
    scheduler.stop();
  });

  test('then runs every interval, shifted by the node jitter', async () => {
    const schedule: Schedule = { kind: 'interval', everyMs: HOUR };
    const { clock, calls, scheduler } = setup(schedule, ['a']);
    const start = clock.now();
    const jitter = jitterFor('node-a', schedule, start);
    scheduler.start();
    await clock.advance(0);
    expect(scheduler.nextRoundAt()).toBe(start + HOUR + jitter);
    await clock.advance(HOUR + jitter - 1);
    expect(calls).toHaveLength(1);
    await clock.advance(1);
    expect(calls.map((c) => c.trigger)).toEqual(['startup', 'periodic']);
    await clock.advance(2 * HOUR);
    expect(calls.map((c) => c.at - start)).toEqual([
      0,
      HOUR + jitter,
      2 * HOUR + jitter,
      3 * HOUR + jitter,
    ]);
    scheduler.stop();
  });

  test('jitter is stable per node, differs between nodes and stays within 10% (at most 5 minutes)', () => {
    const hourly: Schedule = { kind: 'interval', everyMs: HOUR };
    const jitters = ['node-a', 'node-b', 'node-c', 'node-d'].map((n) => jitterFor(n, hourly, 0));
    expect(jitterFor('node-a', hourly, 0)).toBe(jitters[0]);
    expect(new Set(jitters).size).toBe(4);
    for (const jitter of jitters) {
      expect(jitter).toBeGreaterThanOrEqual(0);
      expect(jitter).toBeLessThan(5 * 60_000);
    }
    const minutely: Schedule = { kind: 'interval', everyMs: 60_000 };
    expect(jitterFor('node-a', minutely, 0)).toBeLessThan(6_000);
    expect(jitterFor('node-a', { kind: 'disabled' }, 0)).toBe(0);
  });

  test('a round slower than the interval never overlaps and drops the ticks it overran', async () => {
    const schedule: Schedule = { kind: 'interval', everyMs: 10_000 };
    // Each of the two checks takes 13 s: a round is 26 s, longer than two intervals.
    const { clock, calls, scheduler, maxRunning } = setup(schedule, ['a', 'b'], 13_000);
    const start = clock.now();
    const jitter = jitterFor('node-a', schedule, start);
    scheduler.start();
    await clock.advance(26_000);
    expect(calls).toHaveLength(2);
    // The round ended at 26 s; ticks at 10 s and 20 s were overrun, the next is at 30 s.
    expect(scheduler.nextRoundAt()).toBe(start + 30_000 + jitter);
    await clock.advance(60_000);
    expect(maxRunning()).toBe(1);
    const roundStarts = calls.filter((c) => c.check === 'a').map((c) => c.at - start);
    for (let i = 1; i < roundStarts.length; i++) {
      expect(roundStarts[i]! - roundStarts[i - 1]!).toBeGreaterThanOrEqual(26_000);
    }
    scheduler.stop();
  });

  test('0 disables the timer: only the start-up round runs', async () => {
    const { clock, calls, scheduler } = setup({ kind: 'disabled' }, ['a']);
    scheduler.start();
    await clock.advance(48 * HOUR);
    expect(calls.map((c) => c.trigger)).toEqual(['startup']);
    expect(scheduler.nextRoundAt()).toBeUndefined();
    expect(clock.pending()).toEqual([]);
  });

  test('cron schedules fire at the next matching time plus the jitter', async () => {
    const schedule: Schedule = { kind: 'cron', expression: '0 * * * *' };
    const { clock, calls, scheduler } = setup(schedule, ['a']);
    await clock.advance(10 * 60_000); // 00:10 UTC
    scheduler.start();
    await clock.advance(0);
    const jitter = jitterFor('node-a', schedule, clock.now());
    expect(jitter).toBeGreaterThan(0);
    expect(scheduler.nextRoundAt()).toBe(Date.UTC(2026, 0, 1, 1) + jitter);
    await clock.advance(2 * HOUR);
    expect(calls.map((c) => c.at)).toEqual([
      Date.UTC(2026, 0, 1, 0, 10),
      Date.UTC(2026, 0, 1, 1) + jitter,
      Date.UTC(2026, 0, 1, 2) + jitter,
    ]);
    scheduler.stop();
  });

  test('stop cancels the planned round', async () => {
    const { clock, calls, scheduler } = setup({ kind: 'interval', everyMs: HOUR }, ['a']);
    scheduler.start();
    await clock.advance(0);
    scheduler.stop();
    await clock.advance(5 * HOUR);
    expect(calls).toHaveLength(1);
    expect(clock.pending()).toEqual([]);
  });

  test('a check that throws does not stop the round or the schedule', async () => {
    const clock = new FakeClock();
    const seen: string[] = [];
    const scheduler = createScheduler({
      schedule: { kind: 'interval', everyMs: HOUR },
      checks: ['bad', 'good'],
      run: (check) => {
        seen.push(check);
        return check === 'bad'
          ? Promise.reject(new Error('boom'))
          : Promise.resolve({} as CheckRun);
      },
      clock,
      nodeName: 'n',
      logger: silentLogger,
    });
    scheduler.start();
    await clock.advance(2 * HOUR + 5 * 60_000); // past the second periodic round and its jitter
    expect(seen).toEqual(['bad', 'good', 'bad', 'good', 'bad', 'good']);
    scheduler.stop();
  });
});

describe('nextTick', () => {
  test('is the first tick strictly after now', () => {
    const every: Schedule = { kind: 'interval', everyMs: 100 };
    expect(nextTick(every, 0, 0, 5)).toBe(105);
    expect(nextTick(every, 0, 105, 5)).toBe(205);
    expect(nextTick(every, 0, 350, 5)).toBe(405);
    expect(nextTick({ kind: 'disabled' }, 0, 0, 0)).toBeUndefined();
  });
});

describe('checkIntervalSeconds (autopilot_check_interval_seconds)', () => {
  const T = Date.UTC(2026, 0, 1, 12);

  test('every check of the periodic round gets --w in seconds; on-demand checks get nothing', () => {
    const intervals = checkIntervalSeconds(
      { periodic: { kind: 'interval', everyMs: 6 * HOUR }, periodicChecks: ['pciebw', 'ping'] },
      T,
    );
    expect([...intervals]).toEqual([
      ['pciebw', 21_600],
      ['ping', 21_600],
    ]);
  });

  test('a check on both schedules gets the shorter; a deep-check-only check gets the timer', () => {
    const intervals = checkIntervalSeconds(
      {
        periodic: { kind: 'interval', everyMs: HOUR },
        periodicChecks: ['dcgm'],
        deep: { schedule: { kind: 'interval', everyMs: 4 * HOUR }, checks: ['dcgm', 'gpumem'] },
      },
      T,
    );
    expect(Object.fromEntries(intervals)).toEqual({ dcgm: 3600, gpumem: 14_400 });
  });

  test('a cron expression exports the gap between its next two fire times', () => {
    // Weekdays at 09:00: on Friday 2026-01-02 at 12:00 the next two are Monday and Tuesday.
    const weekdays = checkIntervalSeconds(
      { periodic: { kind: 'cron', expression: '0 9 * * 1-5' }, periodicChecks: ['ping'] },
      Date.UTC(2026, 0, 2, 12),
    );
    expect(weekdays.get('ping')).toBe(86_400);
    // Thursday 12:00: Friday 09:00, then Monday 09:00.
    const overWeekend = checkIntervalSeconds(
      { periodic: { kind: 'cron', expression: '0 9 * * 1-5' }, periodicChecks: ['ping'] },
      Date.UTC(2026, 0, 1, 12),
    );
    expect(overWeekend.get('ping')).toBe(3 * 86_400);
    const every15 = checkIntervalSeconds(
      { periodic: { kind: 'cron', expression: '*/15 * * * *' }, periodicChecks: ['ping'] },
      T,
    );
    expect(every15.get('ping')).toBe(900);
  });

  test('a disabled schedule exports no series', () => {
    const intervals = checkIntervalSeconds(
      {
        periodic: { kind: 'disabled' },
        periodicChecks: ['pciebw'],
        deep: { schedule: { kind: 'disabled' }, checks: ['dcgm', 'gpumem'] },
      },
      T,
    );
    expect(intervals.size).toBe(0);
  });
});
