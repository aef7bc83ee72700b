/**
 * The Autopilot pods of the cluster, from the EndpointSlices of the autopilot-healthchecks Service,
 * kept current with a watch. A watch that ends (the server's timeout, a dropped connection, 410
 * Gone) is followed by a fresh list and a new watch; errors back off exponentially and stay
 * visible in status() until the next successful list. Unlike Autopilot, not-ready pods are kept
 * (marked) so that the fan-out reports them instead of silently skipping their nodes.
 */

import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { EndpointSliceInfo, KubeApi, KubeError, WatchHandle } from '../k8s/ports.js';

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
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
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

/** A watch that ends sooner than this counts as a failure, so the relist backs off. */
const MIN_HEALTHY_WATCH_MS = 1000;

export function createPeerDirectory(deps: PeerDirectoryDeps): PeerDirectory {
  const backoff = deps.backoff ?? { initialMs: 1000, maxMs: 60_000 };
  const slices = new Map<string, EndpointSliceInfo>();
  let cached: readonly Peer[] = [];
  let version = 0;
  let running = false;
  let synced = false;
  let watch: WatchHandle | undefined;
  let lastError: PeerDirectoryStatus['lastError'];
  let delayMs = backoff.initialMs;
  let cancelRetry: (() => void) | undefined;

  const refresh = (): void => {
    cached = peersFromSlices(slices.values(), deps.portName);
    version += 1;
  };

  const fail = (message: string): void => {
    lastError = { message, at: deps.clock.now() };
    deps.logger.warn('peer discovery failed; retrying', { error: message, retryInMs: delayMs });
    cancelRetry = deps.clock.setTimer(() => void cycle(), delayMs);
    delayMs = Math.min(backoff.maxMs, delayMs * 2);
  };

  /** Each start() begins a new generation; a loop from an earlier one ends at its next step. */
  let generation = 0;

  const cycle = async (mine = generation): Promise<void> => {
    cancelRetry = undefined;
    if (!running || mine !== generation) return;
    let resourceVersion: string;
    try {
      const list = await deps.kube.listEndpointSlices(deps.namespace, deps.service);
      if (!running || mine !== generation) return;
      slices.clear();
      for (const slice of list.slices) slices.set(slice.name, slice);
      refresh();
      resourceVersion = list.resourceVersion;
      synced = true;
      lastError = undefined;
    } catch (error) {
      if (running && mine === generation)
        fail(error instanceof Error ? error.message : String(error));
      return;
    }
    let handle: WatchHandle;
    try {
      handle = await deps.kube.watchEndpointSlices(
        deps.namespace,
        deps.service,
        resourceVersion,
        (type, slice) => {
          if (type === 'DELETED') slices.delete(slice.name);
          else slices.set(slice.name, slice);
          refresh();
        },
      );
    } catch (error) {
      if (running && mine === generation)
        fail(error instanceof Error ? error.message : String(error));
      return;
    }
    if (!running || mine !== generation) {
      handle.stop();
      return;
    }
    watch = handle;
    const watchedSince = deps.clock.now();
    const ended: KubeError | undefined = await handle.ended;
    watch = undefined;
    if (!running || mine !== generation) return;
    const served = deps.clock.now() - watchedSince >= MIN_HEALTHY_WATCH_MS;
    // A watch that served a while proves the API well: its end starts the backoff afresh.
    if (served) delayMs = backoff.initialMs;
    if (ended === undefined && !served) {
      // A watch closed as soon as it opened (a proxy, a flapping server): back off, do not spin.
      fail('the watch was closed by the server right after it opened');
    } else if (ended === undefined) {
      // A normal end (server timeout): relist at once; the watch served, so the backoff resets.
      delayMs = backoff.initialMs;
      void cycle();
    } else if (ended.status === 410) {
      deps.logger.info('peer watch expired (410 Gone); listing again', { error: ended.message });
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
      watch?.stop();
    },
    peers: () => cached,
    version: () => version,
    status: () => ({ synced, watching: watch !== undefined, lastError }),
  };
}
