/**
 * Are this node's GPUs free for the deep check? Two views, both needed: Kubernetes (a pod on
 * the node requests or limits nvidia.com/gpu and has not ended) and the driver (NVML shows compute
 * processes, which also catches work that never asked Kubernetes for GPUs, such as another agent).
 * A GPU whose count NVML cannot give (MIG mode, no permission, an NVML error) is not known to be
 * idle, and counts as busy. Autopilot looked at pod requests only.
 */

import { gpusNotKnownIdle, notIdleSubject } from '../checks/gpu-common.js';
import type { NvmlLoad } from '../native/ports.js';
import type { KubeApi, PodInfo } from '../k8s/ports.js';

/** Pods in these phases hold (or are about to hold) their GPUs. */
const HOLDING_PHASES: ReadonlySet<string> = new Set(['Pending', 'Running', 'Unknown']);

/**
 * Pure: the pods that keep the GPUs busy, leaving out the deep check's own pods. Those are named
 * `<prefix><6 hex>-<suffix>` (the Job's name, then the suffix the Job controller adds); the prefix
 * alone (`dcgm-`) would also leave out someone's `dcgm-trainer-0` holding GPUs.
 */
export function gpuHolders(pods: readonly PodInfo[], ownJobPrefix: string): PodInfo[] {
  const own = (name: string): boolean =>
    name.startsWith(ownJobPrefix) && /^[0-9a-f]{6}-/.test(name.slice(ownJobPrefix.length));
  return pods.filter((pod) => pod.gpus > 0 && HOLDING_PHASES.has(pod.phase) && !own(pod.name));
}

/** Resolves to why the GPUs are busy, or undefined when they are idle. */
export async function gpusBusy(deps: {
  readonly kube: KubeApi;
  readonly nvml: NvmlLoad;
  readonly nodeName: string;
  readonly ownJobPrefix: string;
}): Promise<string | undefined> {
  const holders = gpuHolders(await deps.kube.listPodsOnNode(deps.nodeName), deps.ownJobPrefix);
  if (holders.length > 0) {
    return `GPUs requested by ${holders.map((pod) => `${pod.namespace}/${pod.name}`).join(', ')}`;
  }
  const notIdle = await gpusNotKnownIdle(deps.nvml);
  if (notIdle.gpus.length === 0) return undefined;
  return `${notIdleSubject(notIdle)}: ${notIdle.gpus.join(', ')}`;
}
