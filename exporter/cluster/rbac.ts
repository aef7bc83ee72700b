/**
 * What the exporter's own ServiceAccount must be allowed, one rule per use. The docs' ClusterRole
 * (and the Helm chart's) are checked against this list, so a new API call cannot ship without its
 * permission being granted.
 */

import { EXPORTER_REVIEW_RBAC_RULES, type PolicyRule } from '../api/auth.js';

export const EXPORTER_RBAC_RULES: readonly PolicyRule[] = [
  // Read its node, resolve nodelabel=, write the gpuhealth and dcgm labels.
  { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'patch'] },
  // Resolve job=namespace:selector; this node's pods (GPU use, post-flight); the Autopilot pods'
  // interfaces; the deep-check Job's pod and its report.
  { apiGroups: [''], resources: ['pods'], verbs: ['list'] },
  // The deep-check Job.
  { apiGroups: ['batch'], resources: ['jobs'], verbs: ['create', 'get', 'delete'] },
  // Peers.
  { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] },
  // The pvc check.
  { apiGroups: [''], resources: ['persistentvolumeclaims'], verbs: ['create', 'get', 'delete'] },
  { apiGroups: ['storage.k8s.io'], resources: ['storageclasses'], verbs: ['get'] },
  ...EXPORTER_REVIEW_RBAC_RULES,
  // The iperf check starts servers and clients on other nodes through their APIs, as this exporter.
  {
    apiGroups: ['autopilot.ibm.com'],
    resources: ['healthchecks'],
    verbs: ['create'],
    resourceNames: ['iperf'],
  },
];
