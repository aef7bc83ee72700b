/**
 * The Autopilot pods of the cluster with every address they have, per node: what ping and iperf
 * reach. Read from the pods (their Multus annotation), not from the EndpointSlices, which carry
 * one address per pod.
 */

import { podInterfaces, type PodInterface } from '../network/interfaces.js';
import type { KubeApi } from '../k8s/ports.js';

export interface NodeInterfaces {
  readonly node: string;
  readonly pod: string;
  readonly interfaces: readonly PodInterface[];
}

export interface Topology {
  /** One entry per node that runs an Autopilot pod, sorted by node name. */
  nodes(): Promise<NodeInterfaces[]>;
}

export function createTopology(deps: {
  readonly kube: KubeApi;
  readonly namespace: string;
  readonly podSelector: string;
}): Topology {
  return {
    async nodes() {
      const pods = await deps.kube.listPods(deps.namespace, deps.podSelector);
      const byNode = new Map<string, NodeInterfaces & { running: boolean }>();
      for (const pod of pods) {
        if (pod.nodeName === undefined) continue;
        const running = pod.phase === 'Running';
        const known = byNode.get(pod.nodeName);
        // During a rolling update a node has two pods for a while: the running one speaks for it.
        if (known !== undefined && (known.running || !running)) continue;
        byNode.set(pod.nodeName, {
          node: pod.nodeName,
          pod: pod.name,
          interfaces: podInterfaces(pod),
          running,
        });
      }
      return [...byNode.values()]
        .map(({ node, pod, interfaces }) => ({ node, pod, interfaces }))
        .sort((a, b) => a.node.localeCompare(b.node));
    },
  };
}
