/**
 * The Autopilot pods of the cluster, from the EndpointSlices of the autopilot-healthchecks Service,
 * kept current with a watch: a list, then a watch from its resourceVersion, resumed from the last
 * version seen when the server ends it, listed again only when that version is too old or on
 * errors, with backoff (watch-loop.ts); errors stay visible in status() until the next success.
 * Unlike Autopilot, not-ready pods are kept (marked) so that the fan-out reports them instead of
 * silently skipping their nodes.
 */

import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { EndpointSliceInfo, KubeApi } from '../k8s/ports.js';
import { createWatchLoop } from './watch-loop.js';
import type { BackoffSettings } from './backoff.js';

export interface Peer {
  /** The node the pod runs on; undefined when the EndpointSlice does not say. */
  readonly node: string | undefined;
  readonly address: string;
  /** The Service's API port from the slice; undefined when the slice lists none. */
  readonly port: number | undefined;
  readonly ready: boolean;
  readonly pod: string | undefined;
}

export interface PeerDirectoryStatus {
  /** A list has succeeded since start. */
  readonly synced: boolean;
  readonly watching: boolean;
  readonly lastError: { readonly message: string; readonly at: number } | undefined;
}

export interface PeerDirectory {
  start(): void;
  stop(): void;
  /** Every known pod, ready or not, sorted by node then address. */
  peers(): readonly Peer[];
  status(): PeerDirectoryStatus;
  /** Changes whenever the peers do. */
  version(): number;
}

export interface PeerDirectoryDeps {
  readonly kube: KubeApi;
  readonly namespace: string;
  readonly service: string;
  /** The port name Autopilot's chart gives the API port in the Service. */
  readonly portName: string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly backoff?: BackoffSettings;
}

/** Pure: the peers that a set of slices describes. */
export function peersFromSlices(slices: Iterable<EndpointSliceInfo>, portName: string): Peer[] {
  const peers = new Map<string, Peer>();
  for (const slice of slices) {
    const port =
      slice.ports.find((p) => p.name === portName)?.port ??
      (slice.ports.length === 1 ? slice.ports[0]!.port : undefined);
    for (const endpoint of slice.endpoints) {
      const address = endpoint.addresses[0];
      if (address === undefined) continue;
      peers.set(`${address}:${port ?? ''}`, {
        node: endpoint.nodeName,
        address,
        port,
        ready: endpoint.ready,
        pod: endpoint.podName,
      });
    }
  }
  return [...peers.values()].sort(
    (a, b) => (a.node ?? '').localeCompare(b.node ?? '') || a.address.localeCompare(b.address),
  );
}

export function createPeerDirectory(deps: PeerDirectoryDeps): PeerDirectory {
  const slices = new Map<string, EndpointSliceInfo>();
  let cached: readonly Peer[] = [];
  let version = 0;
  let synced = false;

  const refresh = (): void => {
    cached = peersFromSlices(slices.values(), deps.portName);
    version += 1;
  };

  const watchFrom = (resourceVersion: string) =>
    deps.kube.watchEndpointSlices(deps.namespace, deps.service, resourceVersion, (type, slice) => {
      if (type === 'DELETED') slices.delete(slice.name);
      else slices.set(slice.name, slice);
      refresh();
    });

  const loop = createWatchLoop({
    failMessage: 'peer discovery failed; retrying',
    expiredMessage: 'peer watch expired (410 Gone); listing again',
    clock: deps.clock,
    logger: deps.logger,
    ...(deps.backoff === undefined ? {} : { backoff: deps.backoff }),
    open: async (current, ok) => {
      const list = await deps.kube.listEndpointSlices(deps.namespace, deps.service);
      if (!current()) throw new Error('stopped');
      slices.clear();
      for (const slice of list.slices) slices.set(slice.name, slice);
      refresh();
      synced = true;
      ok();
      return watchFrom(list.resourceVersion);
    },
    resume: (resourceVersion) => watchFrom(resourceVersion),
  });

  return {
    start: () => loop.start(),
    stop: () => loop.stop(),
    peers: () => cached,
    version: () => version,
    status: () => ({ synced, watching: loop.watching(), lastError: loop.lastError() }),
  };
}
