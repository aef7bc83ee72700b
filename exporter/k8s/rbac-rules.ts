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

// The deep-check Job.
const JOBS_RULE: PolicyRule = {
  apiGroups: ['batch'],
  resources: ['jobs'],
  // list: a restarted exporter finds the Job its predecessor left running and follows it.
  verbs: ['create', 'get', 'list', 'delete'],
};
// Peers: the EndpointSlices of the exporters' own Service.
const ENDPOINTSLICES_RULE: PolicyRule = {
  apiGroups: ['discovery.k8s.io'],
  resources: ['endpointslices'],
  verbs: ['list', 'watch'],
};
// The pvc check.
const PVC_RULE: PolicyRule = {
  apiGroups: [''],
  resources: ['persistentvolumeclaims'],
  verbs: ['create', 'get', 'delete'],
};

// The taint's breaker: a Lease held while counting the tainted nodes and tainting this one.
const LEASES_RULE: PolicyRule = {
  apiGroups: ['coordination.k8s.io'],
  resources: ['leases'],
  verbs: ['get', 'create', 'update'],
};

/**
 * What the exporter does only in its own namespace (NAMESPACE, the release's): the chart grants
 * these through a Role there, not cluster-wide, so the exporter cannot create Jobs or claims, or
 * read other Services' endpoints, anywhere else.
 */
export const EXPORTER_NAMESPACED_RBAC_RULES: readonly PolicyRule[] = [
  JOBS_RULE,
  ENDPOINTSLICES_RULE,
  PVC_RULE,
  LEASES_RULE,
];

/** Everything the exporter calls: a single ClusterRole granting it works too (docs/kubernetes.md). */
export const EXPORTER_RBAC_RULES: readonly PolicyRule[] = [
  // Read its node, resolve nodelabel=, write the gpuhealth and dcgm labels and the taint (a merge
  // patch); list the nodes for the taint's breaker; watch its node (label ownership, acknowledge).
  { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'watch', 'patch'] },
  // The node condition (GPUHealthy): a strategic merge patch of nodes/status.
  { apiGroups: [''], resources: ['nodes/status'], verbs: ['patch'] },
  // Events on the node and their repeats. Kubernetes files Events about a Node in the default
  // namespace, which a Role in the release's namespace cannot grant.
  { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
  // Resolve job=namespace:selector; this node's pods (GPU use, post-flight); the Autopilot pods'
  // interfaces; the deep-check Job's pod and its report.
  { apiGroups: [''], resources: ['pods'], verbs: ['list'] },
  JOBS_RULE,
  ENDPOINTSLICES_RULE,
  PVC_RULE,
  LEASES_RULE,
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

/** What needs a ClusterRole: cluster-scoped kinds, and pods read in any namespace. */
export const EXPORTER_CLUSTER_RBAC_RULES: readonly PolicyRule[] = EXPORTER_RBAC_RULES.filter(
  (rule) => !EXPORTER_NAMESPACED_RBAC_RULES.includes(rule),
);
