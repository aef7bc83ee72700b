/**
 * Which addresses a node's Autopilot pod has, per interface: Multus writes them in the pod
 * annotation k8s.v1.cni.cncf.io/network-status; without it the pod IPs are the only interface.
 * Pure, so that ping and iperf name interfaces the same way Autopilot did.
 */

import type { PodInfo } from '../k8s/ports.js';

export const NETWORK_STATUS_ANNOTATION = 'k8s.v1.cni.cncf.io/network-status';

export interface PodInterface {
  /** eth0, net1-0, default: Autopilot's naming (see podInterfaces). */
  readonly name: string;
  readonly address: string;
}

/** Entries of the annotation that carry addresses; undefined when it is absent or not valid JSON. */
export function parseNetworkStatus(
  text: string | undefined,
): { readonly interface: string; readonly ips: readonly string[] }[] | undefined {
  if (text === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!Array.isArray(parsed)) return undefined;
  return parsed.flatMap((entry: unknown) => {
    if (typeof entry !== 'object' || entry === null) return [];
    const { interface: name, ips } = entry as { interface?: unknown; ips?: unknown };
    const addresses = Array.isArray(ips)
      ? ips.filter((ip): ip is string => typeof ip === 'string')
      : [];
    if (addresses.length === 0) return [];
    // Autopilot named an entry without an interface after Calico's default network.
    return [
      {
        interface: typeof name === 'string' && name !== '' ? name : 'k8s-pod-network',
        ips: addresses,
      },
    ];
  });
}

/**
 * Pure: every address of the pod, named as Autopilot named them: the annotation's interface name,
 * with "-<index>" when an interface has several addresses; "default" for the pod IPs when there is
 * no annotation.
 */
export function podInterfaces(pod: Pick<PodInfo, 'annotations' | 'podIPs'>): PodInterface[] {
  const entries = parseNetworkStatus(pod.annotations[NETWORK_STATUS_ANNOTATION]) ?? [
    { interface: 'default', ips: pod.podIPs },
  ];
  return entries.flatMap((entry) =>
    entry.ips.map((address, index) => ({
      name: entry.ips.length > 1 ? `${entry.interface}-${index}` : entry.interface,
      address,
    })),
  );
}

/** What os.networkInterfaces() gives for one address (the fields used here). */
export interface OsAddress {
  readonly address: string;
  readonly family: string | number;
  readonly internal: boolean;
}

/**
 * Pure: this pod's own IPv4 addresses (loopback left out), named like podInterfaces names them,
 * for the iperf3 servers to bind to.
 */
export function localAddresses(
  interfaces: Readonly<Record<string, readonly OsAddress[] | undefined>>,
): PodInterface[] {
  return Object.entries(interfaces)
    .sort(([a], [b]) => a.localeCompare(b))
    .flatMap(([name, addresses]) => {
      const usable = (addresses ?? []).filter(
        (a) => !a.internal && (a.family === 'IPv4' || a.family === 4),
      );
      return usable.map((a, index) => ({
        name: usable.length > 1 ? `${name}-${index}` : name,
        address: a.address,
      }));
    });
}
