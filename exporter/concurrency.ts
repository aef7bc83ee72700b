import { setMaxListeners } from 'node:events';

/** Maps items through an async function with at most `limit` calls in flight, keeping order. */
export async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next;
      next += 1;
      results[index] = await fn(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/**
 * Hands each item to `fn` with at most `limit` calls in flight, in order of start, stopping when the
 * signal aborts. `ready`, when given, is awaited before each item starts: a streaming caller passes
 * its writer's backpressure, so no more work begins while its reader lags.
 */
export async function forEachBounded<T>(
  items: readonly T[],
  options: {
    readonly limit: number;
    readonly signal: AbortSignal;
    readonly ready?: (() => Promise<void>) | undefined;
  },
  fn: (item: T) => Promise<void>,
): Promise<void> {
  const { signal } = options;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length && !signal.aborted) {
      if (options.ready !== undefined) await options.ready();
      if (signal.aborted || next >= items.length) return;
      const item = items[next]!;
      next += 1;
      await fn(item);
    }
  };
  const workers = Math.max(1, Math.min(options.limit, items.length));
  // Each worker's call may listen to the signal: that many listeners are expected.
  setMaxListeners(workers + 10, signal);
  await Promise.all(Array.from({ length: workers }, worker));
}
