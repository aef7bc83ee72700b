/**
 * The KubeApi port on @kubernetes/client-node 1.4, the only module that imports it.
 *
 * Every call has a deadline (a hung API server must not hang a check or a request) and every
 * failure becomes a KubeError that names the operation and what the server said, so logs and
 * /status read "patch node gpu-1: 403 nodes "gpu-1" is forbidden: ..." rather than a stack.
 */

import {
  AuthenticationV1Api,
  AuthorizationV1Api,
  BatchV1Api,
  CoordinationV1Api,
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  Observable,
  StorageV1Api,
  V1MicroTime,
  Watch,
  type ConfigurationOptions,
  type V1Container,
  type V1EndpointSlice,
  type V1Job,
  type V1Lease,
  type V1Node,
  type V1NodeCondition,
  type CoreV1Event,
  type V1PersistentVolumeClaim,
  type V1Pod,
} from '@kubernetes/client-node';
import type {
  EndpointSliceInfo,
  JobInfo,
  JobSpec,
  KubeApi,
  LeaseInfo,
  LeaseWrite,
  NodeCondition,
  NodeEventSpec,
  NodeInfo,
  PodInfo,
  WatchEventType,
  WatchHandle,
} from './ports.js';
import { KubeError } from './ports.js';

export interface KubeConnection {
  /** Path of a kubeconfig file; undefined means the in-cluster service account. */
  readonly kubeconfigPath: string | undefined;
  readonly requestTimeoutMs: number;
}

export interface KubeConnected {
  readonly api: KubeApi;
  /** The bearer token this configuration authenticates with (the pod's service account). */
  readonly token: () => Promise<string | undefined>;
}

/** Throws a plain Error naming the problem when the configuration cannot be loaded. */
export function connectKubernetes(connection: KubeConnection): KubeConnected {
  const kc = new KubeConfig();
  if (connection.kubeconfigPath === undefined) kc.loadFromCluster();
  else kc.loadFromFile(connection.kubeconfigPath);
  if (kc.getCurrentCluster() === null) {
    throw new Error(
      `${connection.kubeconfigPath ?? 'in-cluster configuration'} names no current cluster`,
    );
  }
  return { api: createKubeApi(kc, connection.requestTimeoutMs), token: () => bearerToken(kc) };
}

export interface CallerConnection {
  /** A kubeconfig file; undefined: KUBECONFIG, then ~/.kube/config, then in-cluster, as kubectl. */
  readonly kubeconfigPath: string | undefined;
  /** A context of that kubeconfig; undefined: its current context. */
  readonly context: string | undefined;
  readonly requestTimeoutMs: number;
}

export interface CallerConnected {
  readonly api: KubeApi;
  /** The API server's address and the context used, for messages. */
  readonly server: string;
  readonly context: string;
  /**
   * Who the API server says the caller is (a SelfSubjectReview, Kubernetes 1.28+); the
   * kubeconfig's user entry when the server cannot say.
   */
  whoAmI(): Promise<string>;
}

/**
 * A person's own credentials, as kubectl finds them (`autopilot ack`): the API server, not this
 * program, authenticates and authorises every call. Throws a plain Error naming the problem.
 */
export function connectAsCaller(connection: CallerConnection): CallerConnected {
  const kc = new KubeConfig();
  if (connection.kubeconfigPath === undefined) kc.loadFromDefault();
  else kc.loadFromFile(connection.kubeconfigPath);
  const where = connection.kubeconfigPath ?? 'the default kubeconfig';
  if (connection.context !== undefined) {
    if (kc.getContextObject(connection.context) === null) {
      const known = kc.getContexts().map((context) => context.name);
      throw new Error(
        `${where} has no context ${JSON.stringify(connection.context)}; contexts: ${known.join(', ') || 'none'}`,
      );
    }
    kc.setCurrentContext(connection.context);
  }
  const cluster = kc.getCurrentCluster();
  if (cluster === null) throw new Error(`${where} names no current cluster`);
  const authentication = kc.makeApiClient(AuthenticationV1Api);
  const fallback = `kubeconfig user ${kc.getCurrentUser()?.name ?? 'unknown'}`;
  return {
    api: createKubeApi(kc, connection.requestTimeoutMs),
    server: cluster.server,
    context: kc.getCurrentContext(),
    whoAmI: async () => {
      try {
        const review = await authentication.createSelfSubjectReview({
          body: { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' },
        });
        return review.status?.userInfo?.username ?? fallback;
      } catch {
        // Older servers (before 1.28) lack the review; the name is for the audit line only.
        return fallback;
      }
    },
  };
}

/** The token client-node would send (a projected service account token is re-read as it rotates). */
export async function bearerToken(kc: KubeConfig): Promise<string | undefined> {
  const options = await kc.applyToFetchOptions({});
  // client-node builds a WHATWG Headers object here.
  const header = (options.headers as Headers | undefined)?.get('authorization') ?? null;
  const match = header === null ? null : /^Bearer\s+(.+)$/i.exec(header);
  return match?.[1];
}

/** A KubeApi over an already loaded configuration (tests point one at a fake API server). */
export function createKubeApi(kc: KubeConfig, requestTimeoutMs: number): KubeApi {
  const core = kc.makeApiClient(CoreV1Api);
  const discovery = kc.makeApiClient(DiscoveryV1Api);
  const batch = kc.makeApiClient(BatchV1Api);
  const storage = kc.makeApiClient(StorageV1Api);
  const authentication = kc.makeApiClient(AuthenticationV1Api);
  const authorization = kc.makeApiClient(AuthorizationV1Api);
  const coordination = kc.makeApiClient(CoordinationV1Api);
  const watcher = new Watch(kc);

  const options = (contentType?: string): ConfigurationOptions => ({
    middleware: [
      {
        pre: (request) => {
          request.setSignal(AbortSignal.timeout(requestTimeoutMs));
          if (contentType !== undefined) request.setHeaderParam('Content-Type', contentType);
          return new Observable(Promise.resolve(request));
        },
        post: (response) => new Observable(Promise.resolve(response)),
      },
    ],
    middlewareMergeStrategy: 'append',
  });

  const call = async <T>(operation: string, send: () => Promise<T>): Promise<T> => {
    try {
      return await send();
    } catch (error) {
      throw toKubeError(operation, error, requestTimeoutMs);
    }
  };

  /** undefined on 404, so callers can tell "absent" from "cannot tell". */
  const absentOn404 = async <T>(operation: string, send: () => Promise<T>) => {
    try {
      return await call(operation, send);
    } catch (error) {
      if (error instanceof KubeError && error.status === 404) return undefined;
      throw error;
    }
  };

  const serviceSelector = (service: string): string => `kubernetes.io/service-name=${service}`;

  return {
    getNode: (name) =>
      call(`read node ${name}`, async () => toNodeInfo(await core.readNode({ name }, options()))),

    patchNodeMetadata: (name, patch) =>
      call(`patch node ${name}`, async () =>
        toNodeInfo(
          // A resourceVersion in the patch is the server's precondition (409 if the node moved on).
          await core.patchNode(
            { name, body: { metadata: patch } },
            options('application/merge-patch+json'),
          ),
        ),
      ),

    listNodes: (labelSelector) =>
      call(`list nodes ${labelSelector}`, async () =>
        (await core.listNode({ labelSelector }, options())).items.map(toNodeInfo),
      ),

    listPods: (namespace, labelSelector) =>
      call(`list pods ${namespace}:${labelSelector}`, async () =>
        (await core.listNamespacedPod({ namespace, labelSelector }, options())).items.map((pod) =>
          toPodInfo(pod, namespace),
        ),
      ),

    listPodsOnNode: (nodeName) =>
      call(`list pods on node ${nodeName}`, async () =>
        (
          await core.listPodForAllNamespaces(
            { fieldSelector: `spec.nodeName=${nodeName}` },
            options(),
          )
        ).items.map((pod) => toPodInfo(pod, '')),
      ),

    listJobPods: (namespace, jobName) =>
      call(`list pods of job ${namespace}/${jobName}`, async () =>
        (
          await core.listNamespacedPod(
            { namespace, labelSelector: `${JOB_NAME_LABEL}=${jobName}` },
            options(),
          )
        ).items.map((pod) => toPodInfo(pod, namespace)),
      ),

    createJob: (spec) =>
      call(`create job ${spec.namespace}/${spec.name}`, async () => {
        await batch.createNamespacedJob(
          { namespace: spec.namespace, body: toJobBody(spec) },
          options(),
        );
      }),

    listJobs: (namespace, labelSelector) =>
      call(`list jobs in ${namespace} (${labelSelector})`, async () =>
        (await batch.listNamespacedJob({ namespace, labelSelector }, options())).items.map(
          (job) => ({
            ...toJobInfo(job),
            nodeName: job.spec?.template.spec?.nodeName,
            createdAt: job.metadata?.creationTimestamp?.getTime(),
          }),
        ),
      ),

    readJob: (namespace, name) =>
      absentOn404(`read job ${namespace}/${name}`, async () =>
        toJobInfo(await batch.readNamespacedJob({ namespace, name }, options())),
      ),

    deleteJob: async (namespace, name) => {
      await absentOn404(`delete job ${namespace}/${name}`, () =>
        // The default for batch/v1 Jobs is to orphan their pods, which would leave a GPU-holding
        // pod behind on the node.
        batch.deleteNamespacedJob({ namespace, name, propagationPolicy: 'Background' }, options()),
      );
    },

    listEndpointSlices: (namespace, service) =>
      call(`list endpointslices of service ${namespace}/${service}`, async () => {
        const list = await discovery.listNamespacedEndpointSlice(
          { namespace, labelSelector: serviceSelector(service) },
          options(),
        );
        return {
          slices: list.items.map(toSliceInfo),
          resourceVersion: list.metadata?.resourceVersion ?? '',
        };
      }),

    watchEndpointSlices: (namespace, service, resourceVersion, onEvent) =>
      openWatch(
        watcher,
        `watch endpointslices of service ${namespace}/${service}`,
        `/apis/discovery.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/endpointslices`,
        { labelSelector: serviceSelector(service), resourceVersion },
        requestTimeoutMs,
        (type, object) => onEvent(type, toSliceInfo(object as V1EndpointSlice)),
      ),

    readStorageClass: (name) =>
      absentOn404(`read storageclass ${name}`, async () => {
        const sc = await storage.readStorageClass({ name }, options());
        return {
          name,
          volumeBindingMode: sc.volumeBindingMode ?? 'Immediate',
          provisioner: sc.provisioner,
        };
      }),

    createPvc: (spec) =>
      call(`create claim ${spec.namespace}/${spec.name}`, async () => {
        const body: V1PersistentVolumeClaim = {
          apiVersion: 'v1',
          kind: 'PersistentVolumeClaim',
          metadata: { name: spec.name, namespace: spec.namespace, labels: { ...spec.labels } },
          spec: {
            storageClassName: spec.storageClass,
            accessModes: [spec.accessMode],
            resources: { requests: { storage: spec.size } },
          },
        };
        await core.createNamespacedPersistentVolumeClaim(
          { namespace: spec.namespace, body },
          options(),
        );
      }),

    readPvc: (namespace, name) =>
      absentOn404(`read claim ${namespace}/${name}`, async () => {
        const claim = await core.readNamespacedPersistentVolumeClaim(
          { namespace, name },
          options(),
        );
        return {
          name,
          phase: claim.status?.phase ?? 'Pending',
          deleting: claim.metadata?.deletionTimestamp !== undefined,
        };
      }),

    deletePvc: async (namespace, name) => {
      await absentOn404(`delete claim ${namespace}/${name}`, () =>
        core.deleteNamespacedPersistentVolumeClaim({ namespace, name }, options()),
      );
    },

    reviewToken: (token) =>
      call('create tokenreview', async () => {
        const review = await authentication.createTokenReview(
          {
            body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token } },
          },
          options(),
        );
        const status = review.status;
        if (status?.authenticated !== true || status.user?.username === undefined) {
          return { authenticated: false, error: status?.error ?? 'not authenticated' };
        }
        return {
          authenticated: true,
          user: {
            username: status.user.username,
            uid: status.user.uid,
            groups: status.user.groups ?? [],
          },
        };
      }),

    reviewAccess: (user, attributes) =>
      call('create subjectaccessreview', async () => {
        const review = await authorization.createSubjectAccessReview(
          {
            body: {
              apiVersion: 'authorization.k8s.io/v1',
              kind: 'SubjectAccessReview',
              spec: {
                user: user.username,
                ...(user.uid === undefined ? {} : { uid: user.uid }),
                groups: [...user.groups],
                resourceAttributes: { ...attributes },
              },
            },
          },
          options(),
        );
        return { allowed: review.status?.allowed === true, reason: review.status?.reason ?? '' };
      }),

    // The node condition and Events.
    patchNodeStatus: (name, conditions) =>
      call(`patch status of node ${name}`, async () =>
        toNodeInfo(
          await core.patchNodeStatus(
            { name, body: { status: { conditions: conditions.map((c) => ({ ...c })) } } },
            // Strategic: conditions merge by type (a merge patch would replace the whole list).
            options('application/strategic-merge-patch+json'),
          ),
        ),
      ),

    createEvent: (event) =>
      call(`create event ${event.namespace}/${event.name}`, async () => {
        await core.createNamespacedEvent(
          { namespace: event.namespace, body: toEventBody(event) },
          options(),
        );
      }),

    patchEvent: (namespace, name, repeat) =>
      call(`patch event ${namespace}/${name}`, async () => {
        await core.patchNamespacedEvent(
          {
            namespace,
            name,
            body: {
              count: repeat.count,
              lastTimestamp: repeat.lastTimestamp,
              message: repeat.message,
            },
          },
          options('application/strategic-merge-patch+json'),
        );
      }),

    // The taint and its breaker.
    patchNodeTaints: (name, update) =>
      call(`patch taints of node ${name}`, async () =>
        toNodeInfo(
          await core.patchNode(
            {
              name,
              body: {
                // A merge patch carrying resourceVersion is a precondition: 409 if the node moved on.
                metadata: {
                  resourceVersion: update.resourceVersion,
                  annotations: update.annotations,
                },
                spec: { taints: update.taints.map((taint) => ({ ...taint })) },
              },
            },
            options('application/merge-patch+json'),
          ),
        ),
      ),

    readLease: (namespace, name) =>
      absentOn404(`read lease ${namespace}/${name}`, async () =>
        toLeaseInfo(await coordination.readNamespacedLease({ namespace, name }, options())),
      ),

    createLease: (namespace, lease) =>
      call(`create lease ${namespace}/${lease.name}`, async () =>
        toLeaseInfo(
          await coordination.createNamespacedLease(
            { namespace, body: toLeaseBody(namespace, lease) },
            options(),
          ),
        ),
      ),

    replaceLease: (namespace, lease) =>
      call(`update lease ${namespace}/${lease.name}`, async () =>
        toLeaseInfo(
          await coordination.replaceNamespacedLease(
            { namespace, name: lease.name, body: toLeaseBody(namespace, lease) },
            options(),
          ),
        ),
      ),

    // Label ownership and acknowledgements.
    watchNode: (name, resourceVersion, onEvent) =>
      openWatch(
        watcher,
        `watch node ${name}`,
        '/api/v1/nodes',
        { fieldSelector: `metadata.name=${name}`, resourceVersion },
        requestTimeoutMs,
        (type, object) => onEvent(type, toNodeInfo(object as V1Node)),
      ),
  };
}

/**
 * One watch request: its events to `onEvent`, its end (normal, an ERROR event such as 410 Gone, or
 * a failed connection) to the handle's `ended`.
 */
async function openWatch(
  watcher: Watch,
  operation: string,
  path: string,
  query: Readonly<Record<string, string>>,
  requestTimeoutMs: number,
  onEvent: (type: WatchEventType, object: unknown) => void,
): Promise<WatchHandle> {
  let settle: (error: KubeError | undefined) => void = () => undefined;
  const ended = new Promise<KubeError | undefined>((resolve) => (settle = resolve));
  let stopped = false;
  let version = query.resourceVersion ?? '';
  const controller = await watcher.watch(
    path,
    // The server ends the watch after timeoutSeconds; the caller re-watches from the last version
    // seen, which also proves the API alive. Bookmarks keep that version fresh while nothing
    // changes, so the re-watch is rarely too old (410) and rarely needs a list.
    { ...query, allowWatchBookmarks: true, timeoutSeconds: 300 },
    (type: string, object: unknown) => {
      if (type === 'ERROR') {
        const status = object as { code?: number; message?: string };
        settle(new KubeError(operation, status.code, status.message ?? 'watch error'));
        return;
      }
      const seen = (object as { metadata?: { resourceVersion?: string } }).metadata
        ?.resourceVersion;
      if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') onEvent(type, object);
      if (
        (type === 'BOOKMARK' || type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') &&
        seen
      ) {
        version = seen;
      }
    },
    (error: unknown) => {
      if (stopped || error === null || error === undefined) settle(undefined);
      else settle(toKubeError(operation, error, requestTimeoutMs));
    },
  );
  return {
    ended,
    resourceVersion: () => version,
    stop() {
      stopped = true;
      controller.abort();
      settle(undefined);
    },
  };
}

function toLeaseBody(namespace: string, lease: LeaseWrite): V1Lease {
  // MicroTime: the API server parses exactly six fractional digits, which V1MicroTime writes.
  return {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: {
      name: lease.name,
      namespace,
      ...(lease.resourceVersion === undefined ? {} : { resourceVersion: lease.resourceVersion }),
    },
    spec: {
      holderIdentity: lease.holderIdentity ?? '',
      leaseDurationSeconds: lease.leaseDurationSeconds,
      ...(lease.acquireTime === undefined
        ? {}
        : { acquireTime: new V1MicroTime(lease.acquireTime) }),
      ...(lease.renewTime === undefined ? {} : { renewTime: new V1MicroTime(lease.renewTime) }),
    },
  };
}

function toLeaseInfo(lease: V1Lease): LeaseInfo {
  const time = (value: unknown): number | undefined => {
    if (value instanceof Date) return value.getTime();
    const parsed = typeof value === 'string' ? Date.parse(value) : NaN;
    return Number.isNaN(parsed) ? undefined : parsed;
  };
  const holder = lease.spec?.holderIdentity;
  return {
    name: lease.metadata?.name ?? '',
    holderIdentity: holder === undefined || holder === '' ? undefined : holder,
    leaseDurationSeconds: lease.spec?.leaseDurationSeconds ?? 0,
    acquireTime: time(lease.spec?.acquireTime),
    renewTime: time(lease.spec?.renewTime),
    resourceVersion: lease.metadata?.resourceVersion ?? '',
  };
}

function toNodeInfo(node: V1Node): NodeInfo {
  const gpus = node.status?.allocatable?.['nvidia.com/gpu'];
  const capacity = wholeQuantity(node.status?.capacity?.['nvidia.com/gpu']);
  const shared = wholeQuantity(node.status?.capacity?.['nvidia.com/gpu.shared']);
  return {
    name: node.metadata?.name ?? '',
    labels: node.metadata?.labels ?? {},
    annotations: node.metadata?.annotations ?? {},
    allocatableGpus: gpus === undefined || !/^\d+$/.test(gpus) ? undefined : Number(gpus),
    ...(node.metadata?.uid === undefined ? {} : { uid: node.metadata.uid }),
    ...(node.status?.conditions === undefined
      ? {}
      : { conditions: node.status.conditions.map(toNodeCondition) }),
    ...(capacity === undefined ? {} : { capacityGpus: capacity }),
    ...(shared === undefined ? {} : { capacitySharedGpus: shared }),
    ...(node.metadata?.resourceVersion === undefined
      ? {}
      : { resourceVersion: node.metadata.resourceVersion }),
    taints: (node.spec?.taints ?? []).map((taint) => ({
      key: taint.key,
      ...(taint.value === undefined ? {} : { value: taint.value }),
      effect: taint.effect,
    })),
    unschedulable: node.spec?.unschedulable === true,
  };
}

/** Times as the API server writes them, RFC 3339 in whole seconds (client-node parses them to Date). */
function toNodeCondition(condition: V1NodeCondition): NodeCondition {
  const time = (value: Date | string | undefined): string =>
    value === undefined ? '' : new Date(value).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const status = condition.status;
  return {
    type: condition.type,
    status: status === 'True' || status === 'False' ? status : 'Unknown',
    reason: condition.reason ?? '',
    message: condition.message ?? '',
    lastTransitionTime: time(condition.lastTransitionTime),
    lastHeartbeatTime: time(condition.lastHeartbeatTime),
  };
}

/**
 * A core/v1 Event without eventTime (the series-less form kubectl and the kubelet's recorder
 * use): count, firstTimestamp and lastTimestamp carry the repeats.
 */
function toEventBody(event: NodeEventSpec): CoreV1Event {
  return {
    apiVersion: 'v1',
    kind: 'Event',
    metadata: { name: event.name, namespace: event.namespace },
    involvedObject: {
      apiVersion: 'v1',
      kind: 'Node',
      name: event.nodeName,
      ...(event.nodeUid === undefined ? {} : { uid: event.nodeUid }),
    },
    type: event.type,
    reason: event.reason,
    message: event.message,
    action: event.action,
    count: event.count,
    firstTimestamp: new Date(event.firstTimestamp),
    lastTimestamp: new Date(event.lastTimestamp),
    source: { component: event.reportingController, host: event.nodeName },
    reportingComponent: event.reportingController,
    reportingInstance: event.reportingInstance,
  };
}

/** An extended resource's quantity, which is a whole number; undefined when absent or not one. */
function wholeQuantity(value: string | undefined): number | undefined {
  return value === undefined || !/^\d+$/.test(value) ? undefined : Number(value);
}

/** The label the Job controller puts on the pods of a Job (batch.kubernetes.io/job-name is newer). */
const JOB_NAME_LABEL = 'job-name';
const GPU_RESOURCE = 'nvidia.com/gpu';

function toPodInfo(pod: V1Pod, fallbackNamespace: string): PodInfo {
  return {
    name: pod.metadata?.name ?? '',
    namespace: pod.metadata?.namespace ?? fallbackNamespace,
    nodeName: pod.spec?.nodeName ?? undefined,
    phase: pod.status?.phase ?? 'Unknown',
    annotations: pod.metadata?.annotations ?? {},
    podIPs:
      pod.status?.podIPs?.map((entry) => entry.ip) ??
      (pod.status?.podIP === undefined ? [] : [pod.status.podIP]),
    gpus: podGpus(pod),
    terminationMessage: pod.status?.containerStatuses?.[0]?.state?.terminated?.message,
  };
}

/**
 * kubectl's effective request, simplified: regular containers run together, so they add up, while
 * init containers run one at a time before them, so the largest of them counts on its own.
 */
function podGpus(pod: V1Pod): number {
  const regular = (pod.spec?.containers ?? []).reduce(
    (sum, container) => sum + containerGpus(container),
    0,
  );
  return Math.max(regular, ...(pod.spec?.initContainers ?? []).map(containerGpus));
}

/** A limit without a request implies a request of the same size, so the larger of the two counts. */
function containerGpus(container: V1Container): number {
  const resources = container.resources;
  return Math.max(
    gpuQuantity(resources?.requests?.[GPU_RESOURCE]),
    gpuQuantity(resources?.limits?.[GPU_RESOURCE]),
  );
}

const DECIMAL_SUFFIXES: Readonly<Record<string, number>> = { '': 1, k: 1e3, M: 1e6, G: 1e9 };

/**
 * The API server admits only whole numbers for extended resources and writes them canonically
 * (plain digits, or k/M/G for multiples of 1000). Anything else counts as one GPU: reading it as
 * none would let the deep check displace a workload that holds GPUs.
 */
function gpuQuantity(quantity: string | undefined): number {
  if (quantity === undefined) return 0;
  const match = /^(\d+)(k|M|G)?$/.exec(quantity.trim());
  if (match === null) return 1;
  return Number(match[1]) * (DECIMAL_SUFFIXES[match[2] ?? ''] ?? 1);
}

function toJobBody(spec: JobSpec): V1Job {
  const gpus = { [GPU_RESOURCE]: String(spec.gpus) };
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name: spec.name, namespace: spec.namespace, labels: { ...spec.labels } },
    spec: {
      // One attempt: a failed deep check is a finding to report, not something to retry.
      backoffLimit: 0,
      ttlSecondsAfterFinished: spec.ttlSecondsAfterFinished,
      activeDeadlineSeconds: spec.activeDeadlineSeconds,
      template: {
        metadata: { labels: { ...spec.labels } },
        spec: {
          restartPolicy: 'Never',
          // Pinned by name, bypassing the scheduler: the check is about this node and no other.
          nodeName: spec.nodeName,
          ...(spec.priorityClassName === undefined
            ? {}
            : { priorityClassName: spec.priorityClassName }),
          ...(spec.serviceAccountName === undefined
            ? {}
            : { serviceAccountName: spec.serviceAccountName }),
          ...(spec.runtimeClassName === undefined
            ? {}
            : { runtimeClassName: spec.runtimeClassName }),
          ...(spec.imagePullSecrets.length === 0
            ? {}
            : { imagePullSecrets: spec.imagePullSecrets.map((name) => ({ name })) }),
          ...(spec.toleratedTaintKeys.length === 0
            ? {}
            : {
                tolerations: spec.toleratedTaintKeys.map((key) => ({ key, operator: 'Exists' })),
              }),
          // It calls no API; with the settings below it passes the "restricted" Pod Security level.
          automountServiceAccountToken: false,
          securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
          containers: [
            {
              name: 'deepcheck',
              image: spec.image,
              command: [...spec.command],
              // Requesting the GPUs keeps the scheduler from placing GPU pods here meanwhile.
              resources: { requests: { ...gpus }, limits: { ...gpus } },
              env: Object.entries(spec.env).map(([name, value]) => ({ name, value })),
              // A crash before the report is written still leaves its last log lines to read.
              terminationMessagePolicy: 'FallbackToLogsOnError',
              securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
            },
          ],
        },
      },
    },
  };
}

function toJobInfo(job: V1Job): JobInfo {
  const conditions = job.status?.conditions ?? [];
  const holds = (type: string) =>
    conditions.find((condition) => condition.type === type && condition.status === 'True');
  const name = job.metadata?.name ?? '';
  if (holds('Complete') !== undefined) return { name, state: 'Succeeded', failure: undefined };
  const failed = holds('Failed');
  if (failed !== undefined) {
    const failure = [failed.reason, failed.message]
      .filter((part) => part !== undefined && part !== '')
      .join(': ');
    return { name, state: 'Failed', failure: failure === '' ? 'failed' : failure };
  }
  return { name, state: 'Active', failure: undefined };
}

function toSliceInfo(slice: V1EndpointSlice): EndpointSliceInfo {
  return {
    name: slice.metadata?.name ?? '',
    ports: (slice.ports ?? []).flatMap((port) =>
      port.port === undefined ? [] : [{ name: port.name, port: port.port }],
    ),
    endpoints: (slice.endpoints ?? []).map((endpoint) => ({
      addresses: endpoint.addresses,
      // An absent condition means ready (discovery.k8s.io/v1 semantics).
      ready: endpoint.conditions?.ready !== false,
      nodeName: endpoint.nodeName,
      podName: endpoint.targetRef?.kind === 'Pod' ? endpoint.targetRef.name : undefined,
    })),
  };
}

/** What the server said, in one line: the Status message when the body is a Status object. */
function toKubeError(operation: string, error: unknown, timeoutMs: number): KubeError {
  if (error instanceof KubeError) return error;
  const { code, statusCode, body, name, message } = error as {
    code?: unknown;
    statusCode?: unknown;
    body?: unknown;
    name?: string;
    message?: string;
  };
  const status =
    typeof code === 'number' ? code : typeof statusCode === 'number' ? statusCode : undefined;
  if (status !== undefined) return new KubeError(operation, status, statusMessage(body, message));
  if (name === 'AbortError' || name === 'TimeoutError') {
    return new KubeError(operation, undefined, `no answer within ${timeoutMs / 1000} s`);
  }
  // node-fetch: "request to http://... failed, reason: connect ECONNREFUSED 127.0.0.1:6443"
  const reason = /reason: (.*)$/.exec(message ?? '')?.[1] ?? message ?? String(error);
  return new KubeError(operation, undefined, reason);
}

function statusMessage(body: unknown, fallback: string | undefined): string {
  let parsed: unknown = body;
  if (typeof body === 'string') {
    try {
      parsed = JSON.parse(body);
    } catch {
      return body.trim().slice(0, 300) || (fallback ?? 'no detail');
    }
  }
  const message = (parsed as { message?: unknown } | null)?.message;
  return typeof message === 'string' && message !== '' ? message : (fallback ?? 'no detail');
}
