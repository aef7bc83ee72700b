/**
 * The exponential backoff of the loops that talk to the API server (watch-loop.ts,
 * retrying-writer.ts): each failure doubles the wait up to a cap, a success starts it afresh.
 */

export interface BackoffSettings {
  readonly initialMs: number;
  readonly maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffSettings = { initialMs: 1000, maxMs: 60_000 };

export interface Backoff {
  /** The wait before the next retry; the one after it is twice as long, up to the cap. */
  next(): number;
  /** After a success: the next wait is the initial one again. */
  reset(): void;
}

export function createBackoff(settings: BackoffSettings = DEFAULT_BACKOFF): Backoff {
  let delayMs = settings.initialMs;
  return {
    next() {
      const wait = delayMs;
      delayMs = Math.min(settings.maxMs, delayMs * 2);
      return wait;
    },
    reset() {
      delayMs = settings.initialMs;
    },
  };
}
