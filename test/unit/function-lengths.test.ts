import { describe, expect, test } from '@jest/globals';
import { functionLengths } from '../../scripts/function-lengths.js';

const SNIPPET = `export function outer(items: number[]): number {
  const double = (x: number): number => {
    const y = x * 2;
    return y;
  };
  const small = items.map((x) => x + 1);
  return small.length + double(1);
}

class Counter {
  private count = 0;
  constructor() {
    this.count = 1;
  }
  increment(): void {
    const step = function (): number {
      return 1;
    };
    this.count += step();
  }
  get value(): number {
    return this.count;
  }
}

export const factory = () => ({
  run() {
    return 1;
  },
});

router.all('/status', async (ctx) => {
  ctx.body = 'ok';
});
`;

const byName = (name: string) =>
  functionLengths('snippet.ts', SNIPPET).find((f) => f.name === name);

describe('functionLengths', () => {
  test('a multi-line nested arrow is subtracted from its parent; a one-line one stays in it', () => {
    expect(byName('outer')).toEqual({ name: 'outer', line: 1, totalLines: 8, ownLines: 4 });
    expect(byName('double')).toEqual({ name: 'double', line: 2, totalLines: 4, ownLines: 4 });
    expect(byName('<anonymous>')).toBeUndefined();
    expect(byName('items.map(…) callback')).toMatchObject({ totalLines: 1, ownLines: 1 });
  });

  test('methods, constructors, accessors and function expressions are counted on their own', () => {
    expect(byName('Counter.constructor')).toMatchObject({ totalLines: 3, ownLines: 3 });
    expect(byName('Counter.increment')).toMatchObject({ totalLines: 6, ownLines: 3 });
    expect(byName('step')).toMatchObject({ totalLines: 3, ownLines: 3 });
    expect(byName('Counter.value')).toMatchObject({ totalLines: 3, ownLines: 3 });
  });

  test('an arrow returning an object of methods is measured without them', () => {
    expect(byName('factory')).toMatchObject({ line: 26, totalLines: 5, ownLines: 2 });
    expect(byName('run')).toMatchObject({ line: 27, totalLines: 3, ownLines: 3 });
  });

  test('a callback is named after the call it is given to', () => {
    expect(byName("router.all('/status') callback")).toMatchObject({ line: 32, totalLines: 3 });
  });

  test('every function is listed once', () => {
    expect(functionLengths('snippet.ts', SNIPPET)).toHaveLength(10);
  });
});
