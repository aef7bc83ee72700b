/**
 * The read-then-watch loop of a Kubernetes watcher: read (list or get) and open a watch from the
 * read's resourceVersion. When the server ends a watch that served (its timeout), a watcher with
 * `resume` watches again from the last version seen, without reading: at 10,000 nodes a list of
 * every peer per node per watch timeout is the largest cost on the API server. When the version is
 * too old (410 Gone), or a watch or resume fails, it reads again; errors back off exponentially and
 * stay visible until the next success. peer-directory.ts and node-watch.ts each follow one object kind
 * with it and keep only what they do with what they see.
 */

import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { KubeError, WatchHandle } from '../k8s/ports.js';
import { createBackoff, type BackoffSettings } from './backoff.js';

export interface WatchLoopError {
  readonly message: string;
  readonly at: number;
}

export interface WatchLoop {
  start(): void;
  stop(): void;
  watching(): boolean;
  lastError(): WatchLoopError | undefined;
}

export interface WatchLoopDeps {
  /**
   * Reads and opens the watch. `current()` turns false once the loop was stopped or restarted:
   * check it after every await before acting on what was read. `ok()` clears the last error (a
   * successful read, for a watcher whose read alone proves the API well).
   */
  readonly open: (current: () => boolean, ok: () => void) => Promise<WatchHandle>;
  /** Opens the watch again from `resourceVersion` without reading; absent: every end reads again. */
  readonly resume?: (resourceVersion: string, current: () => boolean) => Promise<WatchHandle>;
  /** Logged at warn with the error and the retry delay, e.g. 'peer discovery failed; retrying'. */
  readonly failMessage: string;
  /** Logged at info when the watch expired (410 Gone) and the loop reads again. */
  readonly expiredMessage: string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly backoff?: BackoffSettings;
}

/** A watch that ends sooner than this counts as a failure, so the next read backs off. */
const MIN_HEALTHY_WATCH_MS = 1000;

export function createWatchLoop(deps: WatchLoopDeps): WatchLoop {
  const backoff = createBackoff(deps.backoff);
  let running = false;
  /** Each start() begins a new generation; a loop from an earlier one ends at its next step. */
  let generation = 0;
  let watch: WatchHandle | undefined;
  let lastError: WatchLoopError | undefined;
  let cancelRetry: (() => void) | undefined;

  const fail = (message: string): void => {
    lastError = { message, at: deps.clock.now() };
    const delayMs = backoff.next();
    deps.logger.warn(deps.failMessage, { error: message, retryInMs: delayMs });
    cancelRetry = deps.clock.setTimer(() => void cycle(), delayMs);
  };

  const cycle = async (from?: string): Promise<void> => {
    cancelRetry = undefined;
    const mine = generation;
    const current = (): boolean => running && mine === generation;
    if (!current()) return;
    let handle: WatchHandle;
    try {
      handle =
        from !== undefined && from !== '' && deps.resume !== undefined
          ? await deps.resume(from, current)
          : await deps.open(current, () => {
              lastError = undefined;
            });
    } catch (error) {
      if (current()) fail(error instanceof Error ? error.message : String(error));
      return;
    }
    if (!current()) {
      handle.stop();
      return;
    }
    watch = handle;
    lastError = undefined;
    const since = deps.clock.now();
    const ended: KubeError | undefined = await handle.ended;
    watch = undefined;
    if (!current()) return;
    afterWatch(ended, deps.clock.now() - since >= MIN_HEALTHY_WATCH_MS, handle.resourceVersion());
  };

  const afterWatch = (ended: KubeError | undefined, served: boolean, seen: string): void => {
    // A watch that served a while proves the API well: its end starts the backoff afresh.
    if (served) backoff.reset();
    if (ended === undefined && !served) {
      // Closed as soon as it opened (a proxy, a flapping server): back off, do not spin.
      fail('the watch was closed by the server right after it opened');
    } else if (ended === undefined) {
      void cycle(seen);
    } else if (ended.status === 410) {
      deps.logger.info(deps.expiredMessage, { error: ended.message });
      backoff.reset();
      void cycle();
    } else {
      fail(ended.message);
    }
  };

  return {
    start() {
      if (running) return;
      running = true;
      generation += 1;
      void cycle();
    },
    stop() {
      running = false;
      cancelRetry?.();
      cancelRetry = undefined;
      watch?.stop();
    },
    watching: () => watch !== undefined,
    lastError: () => lastError,
  };
}
