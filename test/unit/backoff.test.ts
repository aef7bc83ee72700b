import { describe, expect, test } from '@jest/globals';
import { DEFAULT_BACKOFF, createBackoff } from '../../exporter/cluster/backoff.js';

describe('backoff', () => {
  test('doubles up to the cap, and starts afresh after reset', () => {
    const backoff = createBackoff({ initialMs: 100, maxMs: 500 });
    expect([backoff.next(), backoff.next(), backoff.next(), backoff.next()]).toEqual([
      100, 200, 400, 500,
    ]);
    backoff.reset();
    expect(backoff.next()).toBe(100);
  });

  test('1 s doubling to 60 s unless given', () => {
    expect(DEFAULT_BACKOFF).toEqual({ initialMs: 1000, maxMs: 60_000 });
    const backoff = createBackoff();
    expect(Array.from({ length: 8 }, () => backoff.next())).toEqual([
      1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000,
    ]);
  });
});
