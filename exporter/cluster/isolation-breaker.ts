/**
 * The cluster-wide circuit breaker in front of the taint: no new autopilot.ibm.com/gpuhealth taint
 * once max(1, floor(AUTOPILOT_TAINT_MAX_FRACTION x GPU nodes)) nodes carry one that this project
 * added, so a buggy check cannot drain half a cluster.
 *
 * GPU nodes are the nodes whose status.capacity (or, without it, allocatable) advertises at least
 * one nvidia.com/gpu: what the device plugin registered, whether or not the chart's DaemonSet runs
 * there and whether or not the GPUs are healthy now (capacity, not allocatable, so a node whose
 * GPUs went bad still counts). A tainted node is one whose ownership annotation names a taint it
 * still carries (node-taint.ts): a taint someone else set is not ours to count.
 *
 * Two exporters deciding at once could each count n-1 and both taint. They are serialised by a
 * coordination.k8s.io/v1 Lease in the release namespace: an exporter acquires it (a create, or an
 * update conditional on the resourceVersion it read: of two writers one gets 409 and backs off),
 * counts, writes its taint and frees the Lease. The guarantee: between an acquire and its release
 * no other exporter holds the Lease, unless the holder overran leaseDurationSeconds; so a holder
 * writes its taint only while at least one API deadline of the Lease is left (mayWrite), and the
 * Lease lasts several deadlines. Like every Lease-based lock it assumes node clocks agree to within
 * a few seconds (NTP), because others judge its expiry by their own clocks. A crashed holder
 * blocks the others for at most one Lease duration.
 */

import type { Clock } from '../clock.js';
import type { KubeApi, LeaseInfo, NodeInfo } from '../k8s/ports.js';
import { KubeError } from '../k8s/ports.js';

/** The Lease's name, in the release namespace. */
export const BREAKER_LEASE = 'autopilot-isolation-breaker';

/**
 * Pure: how many nodes may carry the taint at once. The small epsilon keeps a share such as 0.29
 * of 100 nodes at 29, which floating point would compute as 28.999...
 */
export function breakerLimit(maxFraction: number, gpuNodes: number): number {
  return Math.max(1, Math.floor(maxFraction * gpuNodes + 1e-9));
}

/** Pure: the node advertises GPUs (capacity first: a node whose GPUs failed still counts). */
export function isGpuNode(node: NodeInfo): boolean {
  return (node.capacityGpus ?? node.allocatableGpus ?? 0) > 0;
}

export interface BreakerCount {
  readonly gpuNodes: number;
  /** Other nodes carrying a taint this project added. */
  readonly tainted: number;
  readonly limit: number;
  /** One more taint would exceed the limit. */
  readonly open: boolean;
}

/** Pure: the breaker's decision for `self`, which `carriesOurTaint` does not count. */
export function countBreaker(
  nodes: readonly NodeInfo[],
  self: string,
  maxFraction: number,
  carriesOurTaint: (node: NodeInfo) => boolean,
): BreakerCount {
  const gpu = nodes.filter(isGpuNode);
  const tainted = nodes.filter((node) => node.name !== self && carriesOurTaint(node)).length;
  const limit = breakerLimit(maxFraction, gpu.length);
  return { gpuNodes: gpu.length, tainted, limit, open: tainted >= limit };
}

/** Pure: the Lease is held by someone other than `identity` and has not expired at `now`. */
export function heldByOther(lease: LeaseInfo, identity: string, now: number): boolean {
  if (lease.holderIdentity === undefined || lease.holderIdentity === identity) return false;
  const renewed = lease.renewTime ?? lease.acquireTime;
  return renewed !== undefined && renewed + lease.leaseDurationSeconds * 1000 > now;
}

export interface BreakerLock {
  /** Whether a write started now still ends, at the latest, before the Lease expires. */
  mayWrite(): boolean;
  release(): Promise<void>;
}

export interface BreakerLeaseDeps {
  readonly kube: KubeApi;
  readonly namespace: string;
  /** Who holds it: this exporter's pod (or node) name. */
  readonly identity: string;
  /** The deadline of one API call: the Lease lasts four of them. */
  readonly requestTimeoutMs: number;
  readonly clock: Clock;
}

/** Pure: the Lease's duration, four API deadlines (read, list, patch, and a retried patch). */
export function leaseDurationSeconds(requestTimeoutMs: number): number {
  return Math.ceil((4 * requestTimeoutMs) / 1000);
}

/**
 * Acquires the Lease, or resolves undefined when another exporter holds it or won the race to it
 * (the caller retries shortly). Rejects with the KubeError of any other failure.
 */
export async function acquireBreakerLease(
  deps: BreakerLeaseDeps,
): Promise<BreakerLock | undefined> {
  const { kube, namespace, identity, clock } = deps;
  const duration = leaseDurationSeconds(deps.requestTimeoutMs);
  const acquiredAt = clock.now();
  const mine = {
    name: BREAKER_LEASE,
    holderIdentity: identity,
    leaseDurationSeconds: duration,
    acquireTime: acquiredAt,
    renewTime: acquiredAt,
  };
  const current = await kube.readLease(namespace, BREAKER_LEASE);
  if (current !== undefined && heldByOther(current, identity, acquiredAt)) return undefined;
  let held: LeaseInfo;
  try {
    held =
      current === undefined
        ? await kube.createLease(namespace, mine)
        : await kube.replaceLease(namespace, { ...mine, resourceVersion: current.resourceVersion });
  } catch (error) {
    if (error instanceof KubeError && error.status === 409) return undefined;
    throw error;
  }
  return {
    mayWrite: () => clock.now() + deps.requestTimeoutMs < acquiredAt + duration * 1000,
    release: async () => {
      try {
        await kube.replaceLease(namespace, {
          name: BREAKER_LEASE,
          holderIdentity: undefined,
          leaseDurationSeconds: duration,
          acquireTime: undefined,
          renewTime: undefined,
          resourceVersion: held.resourceVersion,
        });
      } catch {
        // Taken over after it expired, or unreachable: either way it expires on its own.
      }
    },
  };
}
