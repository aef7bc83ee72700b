import { describe, expect, test } from '@jest/globals';
import {
  boundedInteger,
  givenSelector,
  notWholeNumber,
  wholeNumberRange,
} from '../../exporter/params.js';

describe('params', () => {
  test.each([
    ['0', 0, 10, 0],
    ['10', 0, 10, 10],
    ['007', 1, 10, 7],
    ['11', 0, 10, undefined],
    ['0', 1, 10, undefined],
    ['', 0, 10, undefined],
    ['-1', -5, 10, undefined],
    ['1.5', 0, 10, undefined],
    ['1e1', 0, 100, undefined],
    [' 1', 0, 10, undefined],
  ])('boundedInteger(%j, %d, %d) is %j', (text, min, max, expected) => {
    expect(boundedInteger(text, min, max)).toBe(expected);
  });

  test('the refusal words', () => {
    expect(wholeNumberRange(1, 64)).toBe('a whole number from 1 to 64');
    expect(notWholeNumber('batch', 'x', 0, 5)).toBe('batch "x" is not a whole number from 0 to 5');
  });

  test.each([
    [undefined, undefined],
    ['', undefined],
    ['None', undefined],
    ['none', 'none'],
    ['app=x', 'app=x'],
  ])('givenSelector(%j) is %j', (value, expected) => {
    expect(givenSelector(value)).toBe(expected);
  });
});
