/**
 * Every ClusterRole rule the project ships, in one place: what operators are granted to call the
 * protected API, and what the exporter's own ServiceAccount must be allowed, one rule per use. The
 * docs' ClusterRoles (and the Helm chart's) are checked against these lists, so a new API call
 * cannot ship without its permission being granted. Data only.
 */

/** Virtual resources: RBAC evaluates them without any CRD being installed. */
export const RBAC_API_GROUP = 'autopilot.ibm.com';

/** A ClusterRole rule as Kubernetes spells it. */
export interface PolicyRule {
  readonly apiGroups: readonly string[];
  readonly resources: readonly string[];
  readonly verbs: readonly string[];
  /** Narrows the rule to some checks (or nodes); absent means all. */
  readonly resourceNames?: readonly string[];
}

/** What a ClusterRole for operators grants: every protected check, and acknowledging any node. */
export const OPERATOR_RBAC_RULES: readonly PolicyRule[] = [
  { apiGroups: [RBAC_API_GROUP], resources: ['healthchecks'], verbs: ['create'] },
  { apiGroups: [RBAC_API_GROUP], resources: ['nodehealth'], verbs: ['update'] },
];

/** What the exporter's own ServiceAccount needs to ask the reviews api/auth.ts asks. */
export const EXPORTER_REVIEW_RBAC_RULES: readonly PolicyRule[] = [
  { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
  { apiGroups: ['authorization.k8s.io'], resources: ['subjectaccessreviews'], verbs: ['create'] },
];

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
    apiGroups: [RBAC_API_GROUP],
    resources: ['healthchecks'],
    verbs: ['create'],
    resourceNames: ['iperf'],
  },
];
