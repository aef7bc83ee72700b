/**
 * Follows this node's object: a read, then a watch (fieldSelector metadata.name) from the read's
 * resourceVersion. A watch that ends (the server's timeout, a dropped connection, 410 Gone when the
 * version is too old) is followed by a fresh read and a new watch; errors back off exponentially.
 * Every state of the node seen is handed to `onNode` in order; the node labeler decides what a
 * change means (node-labeler.ts: restore the label, or adopt an acknowledgement).
 *
 * Why watch rather than read at start-up only: a label removed by hand (or by a tool that rewrites
 * node labels) would otherwise stay wrong until the next change of health, and a person's
 * acknowledgement written on the node (`autopilot ack`) would never be seen.
 */

import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { KubeApi, KubeError, NodeInfo, WatchHandle } from '../k8s/ports.js';

/** A person asks for the EVICT to be lifted by setting this (`autopilot ack` does). */
export const ACK_ANNOTATION = 'autopilot.ibm.com/acknowledge';
/** What the exporter writes once it has acted on a request: when, and the request's value. */
export const ACKNOWLEDGED_ANNOTATION = 'autopilot.ibm.com/acknowledged';

export interface NodeWatchStatus {
  readonly watching: boolean;
  readonly lastError: { readonly message: string; readonly at: number } | undefined;
}

export interface NodeWatch {
  start(): void;
  stop(): void;
  status(): NodeWatchStatus;
}

export interface NodeWatchDeps {
  readonly kube: KubeApi;
  readonly nodeName: string;
  readonly onNode: (node: NodeInfo) => void;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
}

/** A watch that ends sooner than this counts as a failure, so the re-read backs off. */
const MIN_HEALTHY_WATCH_MS = 1000;

export function createNodeWatch(deps: NodeWatchDeps): NodeWatch {
  const backoff = deps.backoff ?? { initialMs: 1000, maxMs: 60_000 };
  let running = false;
  let generation = 0;
  let watch: WatchHandle | undefined;
  let lastError: NodeWatchStatus['lastError'];
  let delayMs = backoff.initialMs;
  let cancelRetry: (() => void) | undefined;

  const fail = (message: string): void => {
    lastError = { message, at: deps.clock.now() };
    deps.logger.warn('cannot watch this node; retrying', { error: message, retryInMs: delayMs });
    cancelRetry = deps.clock.setTimer(() => void cycle(), delayMs);
    delayMs = Math.min(backoff.maxMs, delayMs * 2);
  };
  const describe = (error: unknown): string =>
    error instanceof Error ? error.message : String(error);

  /** Read, then watch until the watch ends; each start() begins a new generation. */
  const cycle = async (mine = generation): Promise<void> => {
    cancelRetry = undefined;
    const current = (): boolean => running && mine === generation;
    if (!current()) return;
    let handle: WatchHandle;
    try {
      const node = await deps.kube.getNode(deps.nodeName);
      if (!current()) return;
      deps.onNode(node);
      handle = await deps.kube.watchNode(
        deps.nodeName,
        node.resourceVersion ?? '',
        (type, next) => {
          // A deleted node is gone with its labels; the next read says so (404) and backs off.
          if (type !== 'DELETED' && current()) deps.onNode(next);
        },
      );
    } catch (error) {
      if (current()) fail(describe(error));
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
    afterWatch(ended, deps.clock.now() - since >= MIN_HEALTHY_WATCH_MS);
  };

  const afterWatch = (ended: KubeError | undefined, served: boolean): void => {
    // A watch that served a while proves the API well: its end starts the backoff afresh.
    if (served) delayMs = backoff.initialMs;
    if (ended === undefined && !served) {
      fail('the node watch was closed by the server right after it opened');
    } else if (ended === undefined) {
      void cycle();
    } else if (ended.status === 410) {
      deps.logger.info('node watch expired (410 Gone); reading the node again', {
        error: ended.message,
      });
      delayMs = backoff.initialMs;
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
    status: () => ({ watching: watch !== undefined, lastError }),
  };
}
