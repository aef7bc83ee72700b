/**
 * Follows this node's object: a read, then a watch (fieldSelector metadata.name) from the read's
 * resourceVersion, again and again with backoff (watch-loop.ts).
 * Every state of the node seen is handed to `onNode` in order; the node labeler decides what a
 * change means (node-labeler.ts: restore the label, or adopt an acknowledgement).
 *
 * Why watch rather than read at start-up only: a label removed by hand (or by a tool that rewrites
 * node labels) would otherwise stay wrong until the next change of health, and a person's
 * acknowledgement written on the node (`autopilot ack`) would never be seen.
 */

import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { KubeApi, NodeInfo } from '../k8s/ports.js';
import { createWatchLoop } from './watch-loop.js';
import type { BackoffSettings } from './backoff.js';

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
  readonly backoff?: BackoffSettings;
}

export function createNodeWatch(deps: NodeWatchDeps): NodeWatch {
  const watchFrom = (resourceVersion: string, current: () => boolean) =>
    deps.kube.watchNode(deps.nodeName, resourceVersion, (type, next) => {
      // A deleted node is gone with its labels; the next read says so (404) and backs off.
      if (type !== 'DELETED' && current()) deps.onNode(next);
    });
  const loop = createWatchLoop({
    failMessage: 'cannot watch this node; retrying',
    expiredMessage: 'node watch expired (410 Gone); reading the node again',
    clock: deps.clock,
    logger: deps.logger,
    ...(deps.backoff === undefined ? {} : { backoff: deps.backoff }),
    open: async (current) => {
      const node = await deps.kube.getNode(deps.nodeName);
      if (!current()) throw new Error('stopped');
      deps.onNode(node);
      return watchFrom(node.resourceVersion ?? '', current);
    },
    resume: watchFrom,
  });
  return {
    start: () => loop.start(),
    stop: () => loop.stop(),
    status: () => ({ watching: loop.watching(), lastError: loop.lastError() }),
  };
}
