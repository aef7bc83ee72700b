/**
 * One write to the API server at a time, retried with backoff while the exporter goes on serving:
 * the loop the node labeler, the condition writer and the tainter share, as watch-loop.ts is for
 * the watchers. Each module keeps what to write and when (`next`); the writer runs one job at a
 * time, waits after a failure (initialMs doubling up to maxMs, back to initialMs after a success),
 * keeps the error visible until a job succeeds, and cancels its timer on stop().
 */

import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { createBackoff, type BackoffSettings } from './backoff.js';

export interface WriterError {
  readonly message: string;
  readonly at: number;
}

export interface WriterJob {
  /** What failed, for the warning `cannot <what>; retrying`, e.g. 'write node labels'. */
  readonly what: string;
  /**
   * Throws on failure. Answers `{ retryInMs }` to be run again later without it being a failure
   * (the tainter's busy Lease or open breaker): the backoff and the last error stay as they are.
   */
  readonly run: () => Promise<void | { readonly retryInMs: number }>;
}

export interface RetryingWriterDeps {
  /** The job due now, or undefined; asked each time the writer is free to start one. */
  readonly next: () => WriterJob | undefined;
  /** Work due that `next` does not offer yet: idle() waits for it while the writer runs. */
  readonly pending?: () => boolean;
  /** True while a waiting retry is a decision taken rather than work under way: idle() ignores it. */
  readonly quietWait?: () => boolean;
  /** Called when lastError() changes (the tainter's /metrics cache key). */
  readonly onErrorChange?: () => void;
  /** Running from creation, without a start() (the tainter): the first job waits for a sync(). */
  readonly started?: boolean;
  readonly clock: Clock;
  readonly logger: Logger;
  /** 1 s doubling up to 60 s unless given. */
  readonly backoff?: BackoffSettings | undefined;
}

export function createRetryingWriter(deps: RetryingWriterDeps) {
  const backoff = createBackoff(deps.backoff);
  let running = deps.started === true;
  let inFlight: Promise<void> | undefined;
  let cancelRetry: (() => void) | undefined;
  let lastError: WriterError | undefined;
  const idleWaiters: (() => void)[] = [];

  const setError = (error: WriterError | undefined): void => {
    if (error === lastError) return;
    lastError = error;
    deps.onErrorChange?.();
  };

  const settleIdle = (): void => {
    if (inFlight !== undefined) return;
    if (cancelRetry !== undefined && deps.quietWait?.() !== true) return;
    if (running && deps.pending?.() === true) return;
    for (const resolve of idleWaiters.splice(0)) resolve();
  };

  const stopWaiting = (): void => {
    cancelRetry?.();
    cancelRetry = undefined;
  };

  const retryIn = (ms: number): void => {
    // A job that ends after stop() arms nothing: no timer outlives the writer.
    if (!running) return;
    cancelRetry = deps.clock.setTimer(() => {
      cancelRetry = undefined;
      sync();
    }, ms);
  };

  const attempt = async (job: WriterJob): Promise<void> => {
    try {
      const outcome = await job.run();
      if (outcome !== undefined) retryIn(outcome.retryInMs);
      else {
        setError(undefined);
        backoff.reset();
      }
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      setError({ message, at: deps.clock.now() });
      const delayMs = backoff.next();
      deps.logger.warn(`cannot ${job.what}; retrying`, { error: message, retryInMs: delayMs });
      retryIn(delayMs);
    }
  };

  /**
   * Starts the job due unless one is in flight or a retry is waiting. `dropWait` cancels a waiting
   * retry first, when what it was for is no longer wanted.
   */
  const sync = (dropWait = false): void => {
    if (dropWait) stopWaiting();
    const job = running && inFlight === undefined && cancelRetry === undefined && deps.next();
    if (!job) {
      settleIdle();
      return;
    }
    // Marked in flight before the job starts, so a sync() from inside its first step waits.
    let ended!: () => void;
    inFlight = new Promise<void>((resolve) => (ended = resolve));
    void attempt(job).then(() => {
      inFlight = undefined;
      ended();
      sync();
    });
  };

  return {
    /** Starts the job due; resolves once it has been tried (the next may have started). */
    start(): Promise<void> {
      running = true;
      sync();
      return inFlight ?? Promise.resolve();
    },
    /** Cancels a waiting retry; a job in flight ends, and nothing starts after it. */
    stop() {
      running = false;
      stopWaiting();
      settleIdle();
    },
    running: () => running,
    sync,
    writing: () => inFlight !== undefined,
    lastError: () => lastError,
    /** Resolves when nothing is in flight, waiting for a retry (but a quiet wait) or pending. */
    idle() {
      return new Promise<void>((resolve) => {
        idleWaiters.push(resolve);
        settleIdle();
      });
    },
  };
}
