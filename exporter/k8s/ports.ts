/**
 * The narrow port through which the exporter talks to the Kubernetes API. exporter/k8s/ implements
 * it with @kubernetes/client-node; tests implement it in memory or run the real adapter against a
 * fake API server. Types only: nothing here performs I/O.
 */

export interface NodeInfo {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  /** status.allocatable["nvidia.com/gpu"], undefined when the node does not advertise GPUs. */
  readonly allocatableGpus: number | undefined;
  /** status.capacity["nvidia.com/gpu"]: GPUs the device plugin registered, healthy or not. */
  readonly capacityGpus?: number;
  /** status.capacity["nvidia.com/gpu.shared"]: present when shared GPUs are renamed. */
  readonly capacitySharedGpus?: number;
  /** metadata.resourceVersion: the precondition of a read-modify-write (patchNodeTaints). */
  readonly resourceVersion?: string;
  /** spec.taints, every one, whoever set it. */
  readonly taints?: readonly Taint[];
  /** spec.unschedulable: the node is cordoned. */
  readonly unschedulable?: boolean;
  /** metadata.uid: what an Event's involvedObject names the node by. */
  readonly uid?: string;
  /** status.conditions, the kubelet's and everyone else's. */
  readonly conditions?: readonly NodeCondition[];
}

/** A NodeCondition as status.conditions holds it; times are RFC 3339 in whole seconds. */
export interface NodeCondition {
  readonly type: string;
  readonly status: 'True' | 'False' | 'Unknown';
  readonly reason: string;
  readonly message: string;
  readonly lastTransitionTime: string;
  readonly lastHeartbeatTime: string;
}

/**
 * A core/v1 Event about a Node. A Node is cluster-scoped, so Kubernetes files its Events in the
 * default namespace; `kubectl describe node` finds them by involvedObject.
 */
export interface NodeEventSpec {
  readonly namespace: string;
  readonly name: string;
  readonly nodeName: string;
  /** The node's metadata.uid, when known. */
  readonly nodeUid: string | undefined;
  readonly type: 'Normal' | 'Warning';
  readonly reason: string;
  /** At most 1 KiB (the API server's limit for a note). */
  readonly message: string;
  readonly action: string;
  readonly reportingController: string;
  readonly reportingInstance: string;
  /** RFC 3339. */
  readonly firstTimestamp: string;
  readonly lastTimestamp: string;
  readonly count: number;
}

/** A node taint as Kubernetes spells it (core/v1 Taint, without timeAdded). */
export interface Taint {
  readonly key: string;
  readonly value?: string;
  readonly effect: string;
}

/**
 * A read-modify-write of a node's taints: spec.taints replaced whole by `taints` and the
 * annotations merged (null removes one), refused with 409 unless the node is still at
 * `resourceVersion`.
 */
export interface NodeTaintUpdate {
  readonly resourceVersion: string;
  readonly taints: readonly Taint[];
  readonly annotations: Readonly<Record<string, string | null>>;
}

/** A coordination.k8s.io/v1 Lease; times are epoch milliseconds. */
export interface LeaseInfo {
  readonly name: string;
  /** Who holds it; undefined or '' when it is free. */
  readonly holderIdentity: string | undefined;
  readonly leaseDurationSeconds: number;
  readonly acquireTime: number | undefined;
  readonly renewTime: number | undefined;
  readonly resourceVersion: string;
}

export type LeaseWrite = Omit<LeaseInfo, 'resourceVersion'> & {
  /** The version being replaced; the update is refused with 409 when the Lease moved on. */
  readonly resourceVersion?: string;
};

/** A merge patch of node metadata: a string sets a key, null removes it. */
export interface NodeMetadataPatch {
  readonly labels?: Readonly<Record<string, string | null>>;
  readonly annotations?: Readonly<Record<string, string | null>>;
  /** A precondition: the patch is refused with 409 unless the node is still at this version. */
  readonly resourceVersion?: string;
}

export interface PodInfo {
  readonly name: string;
  readonly namespace: string;
  /** spec.nodeName, undefined while the pod is not scheduled. */
  readonly nodeName: string | undefined;
  readonly phase: string;
  readonly annotations: Readonly<Record<string, string>>;
  /** status.podIPs (status.podIP when the list is absent); empty before the pod has one. */
  readonly podIPs: readonly string[];
  /**
   * nvidia.com/gpu the pod holds: the sum over its containers of max(request, limit), or its
   * largest init container's when that is more.
   */
  readonly gpus: number;
  /** The first container's state.terminated.message (a Job's report), when it has ended. */
  readonly terminationMessage: string | undefined;
}

/** The deep-check Job: pinned to one node, all its GPUs, low priority, cleaned up by a TTL. */
export interface JobSpec {
  readonly name: string;
  readonly namespace: string;
  readonly nodeName: string;
  readonly image: string;
  readonly command: readonly string[];
  readonly gpus: number;
  readonly priorityClassName: string | undefined;
  readonly ttlSecondsAfterFinished: number;
  readonly activeDeadlineSeconds: number;
  readonly serviceAccountName: string | undefined;
  readonly runtimeClassName: string | undefined;
  readonly imagePullSecrets: readonly string[];
  /** Taint keys the pod tolerates, whatever their value and effect. */
  readonly toleratedTaintKeys: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  readonly env: Readonly<Record<string, string>>;
}

export interface JobInfo {
  readonly name: string;
  /** Active (created, not finished), Succeeded or Failed (from the Complete and Failed conditions). */
  readonly state: 'Active' | 'Succeeded' | 'Failed';
  /** Why it failed (the Failed condition's reason and message), when it did. */
  readonly failure: string | undefined;
}

/** A Job as a list shows it: its state, and where and when it was made. */
export interface ListedJob extends JobInfo {
  /** The pod template's nodeName, when it pins one. */
  readonly nodeName: string | undefined;
  /** metadata.creationTimestamp, in ms since the epoch. */
  readonly createdAt: number | undefined;
}

export interface SliceEndpoint {
  readonly addresses: readonly string[];
  /** conditions.ready; Kubernetes says an absent condition means ready. */
  readonly ready: boolean;
  readonly nodeName: string | undefined;
  readonly podName: string | undefined;
}

export interface EndpointSliceInfo {
  readonly name: string;
  readonly ports: readonly { readonly name: string | undefined; readonly port: number }[];
  readonly endpoints: readonly SliceEndpoint[];
}

export interface EndpointSliceList {
  readonly slices: readonly EndpointSliceInfo[];
  readonly resourceVersion: string;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface WatchHandle {
  /**
   * Settles when the watch ends: undefined when the server closed it normally, the error otherwise
   * (a KubeError with status 410 when the resource version is too old).
   */
  readonly ended: Promise<KubeError | undefined>;
  /**
   * The newest resourceVersion the watch has seen: the one it was opened from, then each event's
   * (and each bookmark's). A new watch from it misses nothing, so a watch the server ended can be
   * resumed without a list.
   */
  resourceVersion(): string;
  stop(): void;
}

export interface PvcSpec {
  readonly name: string;
  readonly namespace: string;
  readonly storageClass: string;
  readonly accessMode: string;
  /** A Kubernetes quantity such as 100Mi. */
  readonly size: string;
  readonly labels: Readonly<Record<string, string>>;
}

export interface PvcInfo {
  readonly name: string;
  /** status.phase: Pending, Bound or Lost. */
  readonly phase: string;
  /** Set while the claim is being deleted. */
  readonly deleting: boolean;
}

export interface StorageClassInfo {
  readonly name: string;
  /** Immediate or WaitForFirstConsumer. */
  readonly volumeBindingMode: string;
  readonly provisioner: string;
}

export interface ReviewedUser {
  readonly username: string;
  readonly uid: string | undefined;
  readonly groups: readonly string[];
}

export type TokenReview =
  | { readonly authenticated: true; readonly user: ReviewedUser }
  | { readonly authenticated: false; readonly error: string };

/** What an authorisation asks: may this user do `verb` on this resource? */
export interface ResourceAttributes {
  readonly group: string;
  readonly resource: string;
  readonly verb: string;
  readonly name?: string;
  readonly namespace?: string;
}

export interface AccessReview {
  readonly allowed: boolean;
  /** The authoriser's explanation, possibly empty. */
  readonly reason: string;
}

/** Every method rejects with a KubeError. */
export interface KubeApi {
  getNode(name: string): Promise<NodeInfo>;
  /** Sent as application/merge-patch+json; resolves to the node as the server now has it. */
  patchNodeMetadata(name: string, patch: NodeMetadataPatch): Promise<NodeInfo>;
  listNodes(labelSelector: string): Promise<NodeInfo[]>;
  listPods(namespace: string, labelSelector: string): Promise<PodInfo[]>;
  /** The slices of one Service (label kubernetes.io/service-name). */
  listEndpointSlices(namespace: string, service: string): Promise<EndpointSliceList>;
  watchEndpointSlices(
    namespace: string,
    service: string,
    resourceVersion: string,
    onEvent: (type: WatchEventType, slice: EndpointSliceInfo) => void,
  ): Promise<WatchHandle>;
  /** Pods on one node (fieldSelector spec.nodeName), every namespace. */
  listPodsOnNode(nodeName: string): Promise<PodInfo[]>;
  /** The pods of a Job (label job-name). */
  listJobPods(namespace: string, jobName: string): Promise<PodInfo[]>;
  createJob(spec: JobSpec): Promise<void>;
  /** The Jobs of a namespace that match a label selector. */
  listJobs(namespace: string, labelSelector: string): Promise<ListedJob[]>;
  /** undefined when there is no such Job (deleted, or cleaned up by its TTL). */
  readJob(namespace: string, name: string): Promise<JobInfo | undefined>;
  /** Deletes the Job and its pods (propagation Background); resolves also when it is gone. */
  deleteJob(namespace: string, name: string): Promise<void>;
  readStorageClass(name: string): Promise<StorageClassInfo | undefined>;
  createPvc(spec: PvcSpec): Promise<void>;
  /** undefined when there is no such claim. */
  readPvc(namespace: string, name: string): Promise<PvcInfo | undefined>;
  /** Resolves also when the claim is already gone. */
  deletePvc(namespace: string, name: string): Promise<void>;
  reviewToken(token: string): Promise<TokenReview>;
  reviewAccess(user: ReviewedUser, attributes: ResourceAttributes): Promise<AccessReview>;
  // The taint and its breaker (cluster/node-taint.ts).
  /** A merge patch with metadata.resourceVersion, so it is refused (409) if the node changed. */
  patchNodeTaints(name: string, update: NodeTaintUpdate): Promise<NodeInfo>;
  /** undefined when there is no such Lease. */
  readLease(namespace: string, name: string): Promise<LeaseInfo | undefined>;
  /** Rejects with 409 when it already exists. */
  createLease(namespace: string, lease: LeaseWrite): Promise<LeaseInfo>;
  /** Rejects with 409 when `lease.resourceVersion` is no longer the Lease's. */
  replaceLease(namespace: string, lease: LeaseWrite): Promise<LeaseInfo>;
  // Label ownership and acknowledgements (cluster/node-watch.ts).
  /** This one node (fieldSelector metadata.name), from `resourceVersion` on. */
  watchNode(
    name: string,
    resourceVersion: string,
    onEvent: (type: WatchEventType, node: NodeInfo) => void,
  ): Promise<WatchHandle>;
  // The node condition and Events (cluster/node-condition.ts, cluster/node-events.ts).
  /**
   * A strategic merge patch of nodes/status carrying these conditions: Kubernetes merges
   * status.conditions by type, so the kubelet's own conditions stay. Resolves to the node.
   */
  patchNodeStatus(name: string, conditions: readonly NodeCondition[]): Promise<NodeInfo>;
  createEvent(event: NodeEventSpec): Promise<void>;
  /** Raises a repeated Event's count and lastTimestamp, with its latest message (strategic merge). */
  patchEvent(
    namespace: string,
    name: string,
    repeat: { readonly count: number; readonly lastTimestamp: string; readonly message: string },
  ): Promise<void>;
}

/** A failed Kubernetes API call; the message names the operation and what the server said. */
export class KubeError extends Error {
  constructor(
    readonly operation: string,
    /** HTTP status, undefined when no answer came (refused, timed out). */
    readonly status: number | undefined,
    readonly detail: string,
  ) {
    super(`${operation}: ${status === undefined ? '' : `${status} `}${detail}`);
    this.name = 'KubeError';
  }
}
