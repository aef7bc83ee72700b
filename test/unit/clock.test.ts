import { afterEach, beforeEach, describe, expect, jest, test } from '@jest/globals';
import { createSystemClock } from '../../exporter/clock.js';

describe('system clock', () => {
  beforeEach(() => {
    jest.useFakeTimers({ now: Date.UTC(2026, 0, 1) });
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  test('fires a timer after its delay, and not before', () => {
    const clock = createSystemClock();
    const callback = jest.fn();
    clock.setTimer(callback, 5000);
    jest.advanceTimersByTime(4999);
    expect(callback).not.toHaveBeenCalled();
    jest.advanceTimersByTime(1);
    expect(callback).toHaveBeenCalledTimes(1);
  });

  test('waits longer than the 24.8 days a single Node timer can (a yearly cron)', () => {
    const clock = createSystemClock();
    const callback = jest.fn();
    const year = 365 * 24 * 3_600_000;
    clock.setTimer(callback, year);
    jest.advanceTimersByTime(2 ** 31);
    expect(callback).not.toHaveBeenCalled();
    jest.advanceTimersByTime(year - 2 ** 31 - 1);
    expect(callback).not.toHaveBeenCalled();
    jest.advanceTimersByTime(1);
    expect(callback).toHaveBeenCalledTimes(1);
  });

  test('a cancelled long timer never fires', () => {
    const clock = createSystemClock();
    const callback = jest.fn();
    const cancel = clock.setTimer(callback, 40 * 24 * 3_600_000);
    jest.advanceTimersByTime(30 * 24 * 3_600_000);
    cancel();
    jest.advanceTimersByTime(30 * 24 * 3_600_000);
    expect(callback).not.toHaveBeenCalled();
  });
});
