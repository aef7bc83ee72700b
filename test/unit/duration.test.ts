import { describe, test, expect } from '@jest/globals';
import {
  MAX_WHOLE_HOURS,
  formatDuration,
  parseGoDuration,
  parseWholeHours,
} from '../../exporter/config/duration.js';

describe('parseGoDuration', () => {
  test.each<[string, number]>([
    ['1h', 3_600_000],
    ['30m', 1_800_000],
    ['90s', 90_000],
    ['1h30m', 5_400_000],
    ['1.5h', 5_400_000],
    ['2h15m30s', 8_130_000],
    ['500ms', 500],
    ['0', 0],
    ['45m', 2_700_000],
    ['2s', 2000],
    ['0s', 0],
    ['+1h', 3_600_000],
    ['+0', 0],
    ['.5s', 500],
    ['1.s', 1000],
    ['2.5m', 150_000],
    ['0.1s', 100],
    ['1h0m0s', 3_600_000],
    ['1m30s', 90_000],
    ['1000us', 1],
    ['1000µs', 1],
    ['1000000ns', 1],
    ['1500ms', 1500],
    ['1h1h', 7_200_000],
    // Go computes fractions exactly: 1.15h is 1h9m, not 1h8m59.9999999995s.
    ['1.15h', 4_140_000],
  ])('%j is %d ms', (text, ms) => {
    expect(parseGoDuration(text)).toBe(ms);
  });

  test.each([
    '',
    '123',
    '1',
    '00',
    '0.0',
    '1h2x',
    'abc',
    '-1h',
    '-0',
    '1d',
    ' 1h',
    '1h ',
    '1 h',
    'h',
    '.h',
    '+',
    '1H',
    '1e3s',
    '1h-30m',
    '1.5.5h',
    '1h30',
  ])('%j is not a Go duration', (text) => {
    expect(parseGoDuration(text)).toBeUndefined();
  });

  test('parses again after a failed parse (no state left from the previous call)', () => {
    expect(parseGoDuration('1h2x')).toBeUndefined();
    expect(parseGoDuration('30m')).toBe(1_800_000);
    expect(parseGoDuration('2h15m30s')).toBe(8_130_000);
  });
});

describe('parseWholeHours', () => {
  test.each<[string, number]>([
    ['0', 0],
    ['1', 3_600_000],
    ['+1', 3_600_000],
    ['24', 86_400_000],
    [String(MAX_WHOLE_HOURS), MAX_WHOLE_HOURS * 3_600_000],
  ])('%j is %d ms', (text, ms) => {
    expect(parseWholeHours(text)).toBe(ms);
  });

  // Go's flag.Int would read 010 as octal 8 and 0x10 as 16: refused rather than guessed.
  test.each(['', '-1', '1.5', '1h', '010', '00', '0x10', '1e3', ' 1', String(MAX_WHOLE_HOURS + 1)])(
    '%j is not a whole number of hours',
    (text) => {
      expect(parseWholeHours(text)).toBeUndefined();
    },
  );
});

describe('formatDuration', () => {
  test.each<[number, string]>([
    [0, '0'],
    [5_400_000, '1h30m'],
    [3_600_000, '1h'],
    [14_400_000, '4h'],
    [86_400_000, '24h'],
    [60_000, '1m'],
    [90_000, '1m30s'],
    [1000, '1s'],
    [100, '100ms'],
    [1500, '1s500ms'],
    [8_130_000, '2h15m30s'],
    [3_601_000, '1h1s'],
    [0.5, '0.5ms'],
  ])('%d ms is %j', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  test.each([0, 100, 500, 1500, 60_000, 90_000, 3_601_000, 5_400_000, 8_130_000, 86_400_000])(
    'parseGoDuration reads back formatDuration(%d)',
    (ms) => {
      expect(parseGoDuration(formatDuration(ms))).toBe(ms);
    },
  );
});
