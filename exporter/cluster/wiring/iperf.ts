/**
 * iperf's wiring: the check on this node drives the others' iperf endpoints (it lists the nodes
 * from the topology and asks their APIs with this exporter's token), and this node's own endpoints
 * run the iperf3 servers and clients the other nodes ask for.
 */

import type { ApiDeps } from '../../api/app.js';
import type { IperfNode, IperfPorts } from '../../checks/iperf.js';
import { FANOUT_HEADER } from '../fanout.js';
import type { HttpGet } from '../http-get.js';
import type { PeerDirectory } from '../peer-directory.js';
import type { Topology } from '../topology.js';
import type { Config } from '../../config/config.js';
import type { RunCommand } from '../../exec/run-command.js';
import type { StartProcess } from '../../exec/start-process.js';
import type { Logger } from '../../log.js';
import { urlHost } from '../../net-names.js';
import type { PodInterface } from '../../network/interfaces.js';
import { createIperfService } from '../../network/iperf-service.js';

/** How the iperf check reaches the nodes; without Kubernetes it lists none and says SKIP. */
export function iperfCheckPorts(
  config: Config,
  httpGet: HttpGet,
  peerToken: (() => Promise<string | undefined>) | undefined,
  cluster: { readonly topology: Topology; readonly peers: PeerDirectory } | undefined,
): IperfPorts {
  return {
    nodes: cluster === undefined ? undefined : iperfNodes(config, cluster.topology, cluster.peers),
    ask: async (url, signal) => {
      const token = await peerToken?.();
      const response = await httpGet(url, {
        headers: {
          accept: 'application/json',
          [FANOUT_HEADER]: config.nodeName,
          ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
        },
        signal,
      });
      return { status: response.status, body: await response.text() };
    },
  };
}

/** Each node with an Autopilot pod: its API (the ready pod's when there are two) and its IPv4 NICs. */
function iperfNodes(
  config: Config,
  topology: Topology,
  directory: PeerDirectory,
): () => Promise<IperfNode[]> {
  return async () => {
    const known = directory.peers();
    return (await topology.nodes()).flatMap((node) => {
      const peer =
        known.find((p) => p.node === node.node && p.ready) ??
        known.find((p) => p.node === node.node);
      if (peer === undefined) return [];
      const host = urlHost(peer.address);
      return [
        {
          node: node.node,
          api: `http://${host}:${peer.port ?? config.apiPort}`,
          // The iperf3 servers bind IPv4 addresses only.
          interfaces: Object.fromEntries(
            node.interfaces
              .filter((nic) => !nic.address.includes(':'))
              .map((nic) => [nic.name, nic.address]),
          ),
        },
      ];
    });
  };
}

/** This node's iperf endpoints; undefined (they answer 404) where no process can be started. */
export function iperfRoutes(
  config: Config,
  ports: {
    readonly startProcess?: StartProcess;
    readonly runCommand: RunCommand;
    readonly localAddresses?: () => readonly PodInterface[];
    readonly logger: Logger;
  },
): ApiDeps['iperf'] {
  if (ports.startProcess === undefined) return undefined;
  return {
    service: createIperfService({
      startProcess: ports.startProcess,
      runCommand: ports.runCommand,
      command: config.iperfCommand,
      logger: ports.logger.child({ component: 'iperf' }),
    }),
    localAddresses: ports.localAddresses ?? (() => []),
    podName: config.podName ?? `autopilot-${config.nodeName}`,
    nodeName: config.nodeName,
  };
}
