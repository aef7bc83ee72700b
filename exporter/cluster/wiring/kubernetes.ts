/**
 * Kubernetes mode's wiring: the observed API, the pods the network checks reach, what only a cluster
 * can tell a check (whole-pod targets, job and node-label selections, the node's GPU count), the
 * node labeler, and the connection as /status JSON reports it. Standalone mode builds none of it.
 */

import type { Clock } from '../../clock.js';
import type { Peer, PeerTarget } from '../../checks/module.js';
import type { ExpectedGpus } from '../../checks/gpucount.js';
import { expectedGpusOfNode } from '../expected-gpus.js';
import { resolveTargets } from '../fanout.js';
import { observeKubeApi, type KubeHealth } from '../kube-health.js';
import { createNodeLabeler, type AcknowledgeRequest, type NodeLabeler } from '../node-labeler.js';
import type { NodeConditionWriter } from '../node-condition.js';
import { createNodeWatch, type NodeWatch } from '../node-watch.js';
import { createNodeTainter, type NodeTainter } from '../node-taint.js';
import { createPeerDirectory, type PeerDirectory } from '../peer-directory.js';
import { createTopology, type Topology } from '../topology.js';
import type { Config } from '../../config/config.js';
import type { KubeApi } from '../../k8s/ports.js';
import type { Logger } from '../../log.js';
import { parseJob } from '../../selectors.js';
import type { ResultStore } from '../../store.js';

export interface KubernetesSide {
  /** The API as every part calls it: observed, so kubeHealth sees each call. */
  readonly kube: KubeApi;
  readonly health: KubeHealth;
  readonly peers: PeerDirectory;
  readonly topology: Topology;
}

export function connectKubernetes(
  config: Config,
  api: KubeApi,
  clock: Clock,
  logger: Logger,
): KubernetesSide {
  const observed = observeKubeApi(api, () => clock.now());
  const kube = observed.api;
  const namespace = config.namespace ?? 'default';
  return {
    kube,
    health: observed.health,
    peers: createPeerDirectory({
      kube,
      namespace,
      service: config.serviceName,
      portName: 'healthcheck',
      clock,
      logger: logger.child({ component: 'peers' }),
    }),
    topology: createTopology({ kube, namespace, podSelector: config.podSelector }),
  };
}

/** Standalone: the configured list. Kubernetes: every other node's Autopilot pod, by node name. */
export function peerList(
  config: Config,
  directory: PeerDirectory | undefined,
): () => readonly Peer[] {
  return () => {
    if (directory === undefined) return config.peers;
    const byNode = new Map<string, Peer>();
    for (const peer of directory.peers()) {
      if (peer.node === undefined || peer.node === config.nodeName) continue;
      // A ready pod is the one to reach when a node briefly has two (a rolling update).
      if (!byNode.has(peer.node) || peer.ready)
        byNode.set(peer.node, { name: peer.node, address: peer.address });
    }
    return [...byNode.values()];
  };
}

/** What the checks learn from the cluster: the peers' addresses, selections, the node's GPU count. */
export interface ClusterCheckPorts {
  readonly targetsOf: (peers: readonly string[]) => Promise<readonly PeerTarget[]>;
  readonly selectNodes: (selection: {
    readonly job: string | undefined;
    readonly nodelabel: string | undefined;
  }) => Promise<readonly string[]>;
  readonly expectedGpus: () => Promise<ExpectedGpus>;
}

export function clusterCheckPorts(config: Config, side: KubernetesSide): ClusterCheckPorts {
  const { kube, topology } = side;
  return {
    targetsOf: async (names) => {
      const wanted = new Set(names);
      return (await topology.nodes())
        .filter((node) => wanted.has(node.node))
        .flatMap((node) =>
          node.interfaces.map((nic) => ({
            peer: node.node,
            interface: nic.name,
            address: nic.address,
          })),
        );
    },
    selectNodes: async (selection) =>
      (
        await resolveTargets(
          {
            hosts: [],
            job: selection.job === undefined ? undefined : parseJob(selection.job),
            nodelabel: selection.nodelabel,
          },
          kube,
          [],
        )
      ).nodes,
    expectedGpus: async () => expectedGpusOfNode(await kube.getNode(config.nodeName)),
  };
}

/** The node label follows the node's health, and TESTING while something holds the GPUs. */
export function createLabeler(
  config: Config,
  side: KubernetesSide,
  parts: {
    readonly store: ResultStore;
    readonly testing: () => boolean;
    readonly clock: Clock;
    readonly logger: Logger;
    /** A request on the node to lift the EVICT; the same path as POST /acknowledge. */
    readonly acknowledge?: (request: AcknowledgeRequest) => void;
  },
): NodeLabeler {
  const { store, clock } = parts;
  const labeler = createNodeLabeler({
    kube: side.kube,
    nodeName: config.nodeName,
    health: () => store.health(),
    exclusiveRunning: parts.testing,
    onEvictFound: (reason, dcgmFailedLevel) =>
      store.restoreEvict(reason, clock.now(), dcgmFailedLevel),
    ...(parts.acknowledge === undefined ? {} : { onAcknowledgeRequest: parts.acknowledge }),
    clock,
    logger: parts.logger.child({ component: 'labels' }),
  });
  store.onHealthChange(() => labeler.sync());
  return labeler;
}

/** This node's object, watched, each state handed to the labeler (label ownership, acknowledge). */
export function watchOwnNode(
  config: Config,
  side: KubernetesSide,
  labeler: NodeLabeler,
  parts: { readonly clock: Clock; readonly logger: Logger },
): NodeWatch {
  return createNodeWatch({
    kube: side.kube,
    nodeName: config.nodeName,
    onNode: (node) => labeler.observe(node),
    clock: parts.clock,
    logger: parts.logger.child({ component: 'node-watch' }),
  });
}

/** The optional taint of an EVICT node (AUTOPILOT_TAINT_*), following the node's health. */
export function createTainter(
  config: Config,
  side: KubernetesSide,
  parts: { readonly store: ResultStore; readonly clock: Clock; readonly logger: Logger },
): NodeTainter {
  const tainter = createNodeTainter({
    kube: side.kube,
    nodeName: config.nodeName,
    config: config.taint,
    lease: {
      namespace: config.namespace ?? 'default',
      identity: config.podName ?? config.nodeName,
      requestTimeoutMs: config.kubeRequestTimeoutMs,
    },
    health: () => parts.store.health(),
    clock: parts.clock,
    logger: parts.logger.child({ component: 'taint' }),
  });
  parts.store.onHealthChange(() => tainter.sync());
  return tainter;
}

const isoOrNull = (at: number | undefined): string | null =>
  at === undefined ? null : new Date(at).toISOString();

const errorOrNull = (
  error: { readonly message: string; readonly at: number } | undefined,
): { message: string; at: string | null } | null =>
  error === undefined ? null : { message: error.message, at: isoOrNull(error.at) };

/** /status JSON's view of the taint; dates as RFC 3339. */
export function taintStatus(tainter: NodeTainter | undefined): Record<string, unknown> | null {
  if (tainter === undefined) return null;
  const status = tainter.status();
  return {
    effect: status.effect,
    dryRun: status.dryRun,
    state: status.state,
    why: status.why ?? null,
    wouldDo: status.wouldDo ?? null,
    breaker: status.breaker ?? null,
    lastError: errorOrNull(status.lastError),
  };
}

/**
 * /status JSON's view of the node condition; null when AUTOPILOT_NODE_CONDITION is none. `status`,
 * `reason` and `lastTransitionTime` are the node's as last read or written (null before then).
 */
export function nodeConditionStatus(
  writer: NodeConditionWriter | undefined,
  type: string | undefined,
): Record<string, unknown> | null {
  if (writer === undefined || type === undefined) return null;
  const { applied, pending, lastError } = writer.status();
  return {
    type,
    status: applied?.status ?? null,
    reason: applied?.reason ?? null,
    lastTransitionTime: applied?.lastTransitionTime ?? null,
    pending: pending ?? null,
    lastError: errorOrNull(lastError),
  };
}

/** /status JSON's view of this node's watch (label ownership, acknowledgements on the node). */
export function nodeWatchStatus(watch: NodeWatch | undefined): Record<string, unknown> | null {
  if (watch === undefined) return null;
  const { watching, lastError } = watch.status();
  return { watching, lastError: errorOrNull(lastError) };
}

/** The Kubernetes connection as /status JSON shows it: what works, and the last thing that did not. */
export function kubernetesStatus(
  health: KubeHealth,
  peers: PeerDirectory,
  labeler: NodeLabeler | undefined,
): Record<string, unknown> {
  const api = health.snapshot();
  const discovery = peers.status();
  const labels = labeler?.status();
  return {
    apiUp: api.up,
    lastApiError:
      api.lastFailure === undefined
        ? null
        : {
            operation: api.lastFailure.operation,
            message: api.lastFailure.message,
            at: isoOrNull(api.lastFailure.at),
          },
    peers: {
      synced: discovery.synced,
      watching: discovery.watching,
      known: peers.peers().length,
      ready: peers.peers().filter((peer) => peer.ready).length,
      lastError: errorOrNull(discovery.lastError),
    },
    nodeLabel: {
      applied: labels?.applied ?? null,
      pending: labels?.pending ?? null,
      lastError: errorOrNull(labels?.lastError),
    },
  };
}
