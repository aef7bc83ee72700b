/**
 * How many physical GPUs a node should have, from what Kubernetes says of it. Pure: the exporter
 * reads the node through the KubeApi port and hands the gpucount check the answer.
 *
 * Sources, from NVIDIA/k8s-device-plugin (README "Shared Access to GPUs", docs/gpu-feature-discovery
 * README "Generated Labels", internal/lm/resource.go and mig-strategy.go):
 * - the GPU feature discovery label nvidia.com/gpu.count counts physical GPUs: time-slicing and MPS
 *   replicas go to nvidia.com/gpu.replicas instead, and under the MIG "mixed" strategy MIG-enabled
 *   GPUs still count once each. Under the MIG "single" strategy it is overridden with the number of
 *   MIG devices, so it is not used there;
 * - the capacity nvidia.com/gpu counts GPUs × replicas when the device plugin shares GPUs (the
 *   resource may also be renamed nvidia.com/gpu.shared), and MIG devices, not GPUs, under the
 *   "single" strategy (under "mixed", GPUs in MIG mode leave it): it is used only when nothing says
 *   that any of this is in force.
 * When neither can be trusted the answer says why, and the check does not judge from Kubernetes.
 */

import type { ExpectedGpus } from '../checks/gpucount.js';
import type { NodeInfo } from '../k8s/ports.js';

const GFD_COUNT = 'nvidia.com/gpu.count';
const GFD_REPLICAS = 'nvidia.com/gpu.replicas';
const SHARING_STRATEGY = 'nvidia.com/gpu.sharing-strategy';
const MIG_STRATEGY = 'nvidia.com/mig.strategy';

function wholeNumber(value: string | undefined): number | undefined {
  return value !== undefined && /^\d+$/.test(value) ? Number(value) : undefined;
}

/** Why the capacity nvidia.com/gpu is not a count of GPUs here, or undefined when it is. */
function capacityDistrust(node: NodeInfo): string | undefined {
  const mig = node.labels[MIG_STRATEGY];
  if (mig === 'mixed') return 'MIG strategy mixed: GPUs in MIG mode leave nvidia.com/gpu';
  const replicas = wholeNumber(node.labels[GFD_REPLICAS]);
  const sharing = node.labels[SHARING_STRATEGY];
  if (node.capacitySharedGpus !== undefined) {
    return 'GPUs are shared (nvidia.com/gpu.shared): the capacity counts replicas';
  }
  if ((replicas !== undefined && replicas > 1) || (sharing !== undefined && sharing !== 'none')) {
    return `GPUs are shared (${SHARING_STRATEGY}=${sharing ?? '?'}, ${GFD_REPLICAS}=${node.labels[GFD_REPLICAS] ?? '?'}): the capacity counts replicas`;
  }
  return undefined;
}

export function expectedGpusOfNode(node: NodeInfo): ExpectedGpus {
  if (node.labels[MIG_STRATEGY] === 'single') {
    return {
      count: undefined,
      source: `MIG strategy single on node ${node.name}: nvidia.com/gpu and ${GFD_COUNT} count MIG devices, not GPUs`,
    };
  }
  const labelled = wholeNumber(node.labels[GFD_COUNT]);
  if (labelled !== undefined) return { count: labelled, source: `node label ${GFD_COUNT}` };
  const distrust = capacityDistrust(node);
  if (distrust !== undefined) {
    return { count: undefined, source: `${distrust}, and there is no ${GFD_COUNT} label` };
  }
  if (node.capacityGpus !== undefined) {
    return { count: node.capacityGpus, source: 'node capacity nvidia.com/gpu' };
  }
  return {
    count: undefined,
    source: `node ${node.name} has neither a nvidia.com/gpu capacity nor a ${GFD_COUNT} label`,
  };
}
