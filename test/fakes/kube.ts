/**
 * An in-memory KubeApi for unit tests: nodes, pods and EndpointSlices as plain records, watches
 * the test drives by hand (push an event, end normally, end with a status such as 410), Jobs the
 * test finishes by hand, and one-shot failures per method. Every call is recorded, so a test can say exactly what was sent.
 *
 * `api` is a plain object of functions rather than the FakeKube instance itself, as the real
 * adapter is: a decorator that walks the API's own keys sees every method.
 */

import type {
  AccessReview,
  EndpointSliceInfo,
  JobInfo,
  JobSpec,
  KubeApi,
  NodeCondition,
  NodeEventSpec,
  NodeInfo,
  NodeMetadataPatch,
  PodInfo,
  PvcInfo,
  PvcSpec,
  ResourceAttributes,
  ReviewedUser,
  StorageClassInfo,
  WatchEventType,
  WatchHandle,
} from '../../exporter/k8s/ports.js';
import { KubeError } from '../../exporter/k8s/ports.js';
import { JOB_FAILURE_MESSAGES, JOB_NAME_LABEL } from './kube-api-server.js';

export type KubeMethod = keyof KubeApi;

export interface KubeCall {
  readonly method: KubeMethod;
  readonly args: readonly unknown[];
}

export interface FakeWatch {
  readonly namespace: string;
  readonly service: string;
  readonly resourceVersion: string;
  /** The watcher called stop(). */
  readonly stopped: boolean;
  /** Ended by the test, or stopped. */
  readonly ended: boolean;
  /** Delivers one event as the server would; ignored once the watch has ended. */
  push(type: WatchEventType, slice: EndpointSliceInfo): void;
  /** The server closes the watch normally. */
  end(): void;
  /** The watch ends with an error, such as 410 Gone. */
  fail(status: number | undefined, detail?: string): KubeError;
}

interface StoredPod extends PodInfo {
  readonly labels: Readonly<Record<string, string>>;
}

export interface FakeJob {
  readonly spec: JobSpec;
  readonly state: JobInfo['state'];
  readonly failure: string | undefined;
  /** The Job's creationTimestamp in a list; undefined as for jobs made by createJob here. */
  readonly createdAt?: number | undefined;
}

interface NodeRecord {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  allocatableGpus: number | undefined;
  conditions: NodeCondition[];
}

export class FakeKube {
  readonly api: KubeApi;
  /** Every call, failed ones included, in order. */
  readonly calls: KubeCall[] = [];
  /** The merge patches the fake applied (failed attempts are only in `calls`). */
  readonly patches: { readonly node: string; readonly patch: NodeMetadataPatch }[] = [];
  /** The Events created, as the API server keeps them (a patch raises count and lastTimestamp). */
  readonly events: NodeEventSpec[] = [];
  /** Every watch opened, oldest first. */
  readonly watches: FakeWatch[] = [];
  /** Decides SubjectAccessReviews; denies everything unless a test sets it. */
  authorize: (user: ReviewedUser, attributes: ResourceAttributes) => AccessReview = () => ({
    allowed: false,
    reason: '',
  });

  private readonly nodes = new Map<string, NodeRecord>();
  private pods: StoredPod[] = [];
  private readonly jobRecords = new Map<string, FakeJob>();
  private readonly slices = new Map<string, Map<string, EndpointSliceInfo>>();
  private readonly storageClasses = new Map<string, StorageClassInfo>();
  private readonly pvcs = new Map<string, PvcInfo>();
  private readonly tokens = new Map<string, ReviewedUser>();
  private readonly failures = new Map<KubeMethod, KubeError[]>();
  private resourceVersion = 1;

  constructor() {
    this.api = this.buildApi();
  }

  // -------------------------------------------------------------------------------------------
  // State

  addNode(
    name: string,
    init: {
      labels?: Record<string, string>;
      annotations?: Record<string, string>;
      allocatableGpus?: number;
    } = {},
  ): void {
    this.nodes.set(name, {
      labels: { ...init.labels },
      annotations: { ...init.annotations },
      allocatableGpus: init.allocatableGpus,
      conditions: [],
    });
  }

  /** The node as the server has it now. */
  node(name: string): NodeInfo {
    const record = this.nodes.get(name);
    if (record === undefined) throw new Error(`no node ${name} in the fake`);
    return {
      name,
      labels: { ...record.labels },
      annotations: { ...record.annotations },
      allocatableGpus: record.allocatableGpus,
      conditions: [...record.conditions],
    };
  }

  addPod(pod: {
    name: string;
    namespace: string;
    nodeName?: string;
    phase?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    podIPs?: string[];
    /** PodInfo.gpus as the adapter would compute it; 0 unless given. */
    gpus?: number;
    terminationMessage?: string;
  }): void {
    this.pods.push({
      name: pod.name,
      namespace: pod.namespace,
      nodeName: pod.nodeName,
      phase: pod.phase ?? 'Running',
      annotations: { ...pod.annotations },
      podIPs: [...(pod.podIPs ?? [])],
      labels: { ...pod.labels },
      gpus: pod.gpus ?? 0,
      terminationMessage: pod.terminationMessage,
    });
  }

  setPodPhase(namespace: string, name: string, phase: string): void {
    this.updatePods((pod) => pod.namespace === namespace && pod.name === name, { phase });
  }

  /** A Job (and its running pod) as another process made it, e.g. an exporter before a restart. */
  addJob(spec: JobSpec, options: { state?: JobInfo['state']; createdAt?: number } = {}): void {
    this.jobRecords.set(`${spec.namespace}/${spec.name}`, {
      spec,
      state: options.state ?? 'Active',
      failure: undefined,
      createdAt: options.createdAt,
    });
    this.addPod({
      name: `${spec.name}-pod`,
      namespace: spec.namespace,
      nodeName: spec.nodeName,
      phase: options.state === undefined || options.state === 'Active' ? 'Running' : 'Succeeded',
      labels: { ...spec.labels, [JOB_NAME_LABEL]: spec.name },
      gpus: spec.gpus,
    });
  }

  /** Jobs that exist now, by `namespace/name`. */
  get jobs(): ReadonlyMap<string, FakeJob> {
    return this.jobRecords;
  }

  /**
   * Ends a Job as its controller would: Complete, or Failed with the reason (BackoffLimitExceeded
   * unless given) and the controller's message for it; its pod (named `<job>-pod`) ends Succeeded
   * or Failed with `message` as its termination message.
   */
  finishJob(
    namespace: string,
    name: string,
    outcome: { succeeded: boolean; message?: string; reason?: string },
  ): void {
    const id = `${namespace}/${name}`;
    const job = this.jobRecords.get(id);
    if (job === undefined) throw new Error(`no job ${id} in the fake`);
    const reason = outcome.reason ?? 'BackoffLimitExceeded';
    const failure = `${reason}: ${JOB_FAILURE_MESSAGES[reason] ?? `the job failed: ${reason}`}`;
    this.jobRecords.set(
      id,
      outcome.succeeded
        ? { ...job, state: 'Succeeded', failure: undefined }
        : { ...job, state: 'Failed', failure },
    );
    this.updatePods((pod) => pod.namespace === namespace && pod.labels[JOB_NAME_LABEL] === name, {
      phase: outcome.succeeded ? 'Succeeded' : 'Failed',
      terminationMessage: outcome.message,
    });
  }

  /** Adds or replaces a slice of a Service, telling open watches of that Service. */
  putSlice(namespace: string, service: string, slice: EndpointSliceInfo): void {
    const slices = this.serviceSlices(namespace, service);
    const type = slices.has(slice.name) ? 'MODIFIED' : 'ADDED';
    slices.set(slice.name, slice);
    this.resourceVersion += 1;
    this.notify(namespace, service, type, slice);
  }

  removeSlice(namespace: string, service: string, name: string): void {
    const slices = this.serviceSlices(namespace, service);
    const slice = slices.get(name);
    if (slice === undefined) return;
    slices.delete(name);
    this.resourceVersion += 1;
    this.notify(namespace, service, 'DELETED', slice);
  }

  addStorageClass(info: StorageClassInfo): void {
    this.storageClasses.set(info.name, info);
  }

  setPvcPhase(namespace: string, name: string, phase: string): void {
    const pvc = this.pvcs.get(`${namespace}/${name}`);
    if (pvc !== undefined) this.pvcs.set(`${namespace}/${name}`, { ...pvc, phase });
  }

  addToken(token: string, user: ReviewedUser): void {
    this.tokens.set(token, user);
  }

  // -------------------------------------------------------------------------------------------
  // Faults and observations

  /** The next call of `method` rejects with the returned error; calls queue up. */
  failNext(method: KubeMethod, status: number | undefined, detail = 'injected failure'): KubeError {
    const error = new KubeError(method, status, detail);
    this.failures.set(method, [...(this.failures.get(method) ?? []), error]);
    return error;
  }

  callsTo(method: KubeMethod): (readonly unknown[])[] {
    return this.calls.filter((call) => call.method === method).map((call) => call.args);
  }

  /** The newest watch that has not ended, if any. */
  openWatch(): FakeWatch | undefined {
    return this.watches.findLast((watch) => !watch.ended);
  }

  // -------------------------------------------------------------------------------------------

  private updatePods(
    which: (pod: StoredPod) => boolean,
    change: Partial<Pick<StoredPod, 'phase' | 'terminationMessage'>>,
  ): void {
    this.pods = this.pods.map((pod) => (which(pod) ? { ...pod, ...change } : pod));
  }

  private serviceSlices(namespace: string, service: string): Map<string, EndpointSliceInfo> {
    const key = `${namespace}/${service}`;
    let slices = this.slices.get(key);
    if (slices === undefined) {
      slices = new Map();
      this.slices.set(key, slices);
    }
    return slices;
  }

  private notify(
    namespace: string,
    service: string,
    type: WatchEventType,
    slice: EndpointSliceInfo,
  ): void {
    for (const watch of this.watches) {
      if (watch.namespace === namespace && watch.service === service) watch.push(type, slice);
    }
  }

  /** Records the call and throws the failure queued for it, if any. */
  private enter(method: KubeMethod, args: readonly unknown[]): void {
    this.calls.push({ method, args });
    const error = this.failures.get(method)?.shift();
    if (error !== undefined) throw error;
  }

  private notSimulated(method: KubeMethod, args: readonly unknown[]): Promise<never> {
    this.enter(method, args);
    return Promise.reject(
      new KubeError(method, 501, 'not simulated here: use the fake API server'),
    );
  }

  private nodeRecord(method: KubeMethod, name: string): NodeRecord {
    const record = this.nodes.get(name);
    if (record === undefined) throw new KubeError(method, 404, `nodes "${name}" not found`);
    return record;
  }

  private openWatchHandle(
    namespace: string,
    service: string,
    resourceVersion: string,
    onEvent: (type: WatchEventType, slice: EndpointSliceInfo) => void,
  ): WatchHandle {
    let settle: (error: KubeError | undefined) => void = () => undefined;
    const ended = new Promise<KubeError | undefined>((resolve) => (settle = resolve));
    const state = { stopped: false, ended: false, version: resourceVersion };
    const finish = (error: KubeError | undefined): void => {
      if (state.ended) return;
      state.ended = true;
      settle(error);
    };
    this.watches.push({
      namespace,
      service,
      resourceVersion,
      get stopped() {
        return state.stopped;
      },
      get ended() {
        return state.ended;
      },
      push: (type, slice) => {
        if (state.ended) return;
        onEvent(type, slice);
        state.version = String(this.resourceVersion);
      },
      end: () => finish(undefined),
      fail: (status, detail = 'watch failed') => {
        const error = new KubeError('watchEndpointSlices', status, detail);
        finish(error);
        return error;
      },
    });
    return {
      ended,
      resourceVersion: () => state.version,
      stop: () => {
        state.stopped = true;
        finish(undefined);
      },
    };
  }

  private buildApi(): KubeApi {
    return {
      getNode: async (name) => {
        this.enter('getNode', [name]);
        await Promise.resolve();
        this.nodeRecord('getNode', name);
        return this.node(name);
      },
      patchNodeMetadata: async (name, patch) => {
        // Nodes here have no versions: a precondition could only be ignored, which would be a lie.
        if (patch.resourceVersion !== undefined) {
          return this.notSimulated('patchNodeMetadata', [name, patch]);
        }
        this.enter('patchNodeMetadata', [name, patch]);
        await Promise.resolve();
        const record = this.nodeRecord('patchNodeMetadata', name);
        applyMerge(record.labels, patch.labels);
        applyMerge(record.annotations, patch.annotations);
        this.patches.push({ node: name, patch });
        return this.node(name);
      },
      listNodes: async (labelSelector) => {
        this.enter('listNodes', [labelSelector]);
        await Promise.resolve();
        const matches = selectorMatcher('listNodes', labelSelector);
        return [...this.nodes.keys()]
          .map((name) => this.node(name))
          .filter((node) => matches(node.labels));
      },
      listPods: async (namespace, labelSelector) => {
        this.enter('listPods', [namespace, labelSelector]);
        await Promise.resolve();
        const matches = selectorMatcher('listPods', labelSelector);
        return this.pods
          .filter((pod) => pod.namespace === namespace && matches(pod.labels))
          .map(toPodInfo);
      },
      listPodsOnNode: async (nodeName) => {
        this.enter('listPodsOnNode', [nodeName]);
        await Promise.resolve();
        return this.pods.filter((pod) => pod.nodeName === nodeName).map(toPodInfo);
      },
      listJobPods: async (namespace, jobName) => {
        this.enter('listJobPods', [namespace, jobName]);
        await Promise.resolve();
        return this.pods
          .filter((pod) => pod.namespace === namespace && pod.labels[JOB_NAME_LABEL] === jobName)
          .map(toPodInfo);
      },
      createJob: async (spec) => {
        this.enter('createJob', [spec]);
        await Promise.resolve();
        const id = `${spec.namespace}/${spec.name}`;
        if (this.jobRecords.has(id)) {
          throw new KubeError('createJob', 409, `jobs.batch "${spec.name}" already exists`);
        }
        this.jobRecords.set(id, { spec, state: 'Active', failure: undefined });
        // What the Job controller would create; deterministic so tests can name it.
        this.addPod({
          name: `${spec.name}-pod`,
          namespace: spec.namespace,
          nodeName: spec.nodeName,
          phase: 'Pending',
          labels: { ...spec.labels, [JOB_NAME_LABEL]: spec.name },
          gpus: spec.gpus,
        });
      },
      listJobs: async (namespace, labelSelector) => {
        this.enter('listJobs', [namespace, labelSelector]);
        await Promise.resolve();
        const matches = selectorMatcher('listJobs', labelSelector);
        return [...this.jobRecords.values()]
          .filter((job) => job.spec.namespace === namespace && matches(job.spec.labels))
          .map((job) => ({
            name: job.spec.name,
            state: job.state,
            failure: job.failure,
            nodeName: job.spec.nodeName,
            createdAt: job.createdAt,
          }));
      },
      readJob: async (namespace, name) => {
        this.enter('readJob', [namespace, name]);
        await Promise.resolve();
        const job = this.jobRecords.get(`${namespace}/${name}`);
        return job === undefined ? undefined : { name, state: job.state, failure: job.failure };
      },
      deleteJob: async (namespace, name) => {
        this.enter('deleteJob', [namespace, name]);
        await Promise.resolve();
        this.jobRecords.delete(`${namespace}/${name}`);
        this.pods = this.pods.filter(
          (pod) => !(pod.namespace === namespace && pod.labels[JOB_NAME_LABEL] === name),
        );
      },
      listEndpointSlices: async (namespace, service) => {
        this.enter('listEndpointSlices', [namespace, service]);
        await Promise.resolve();
        return {
          slices: [...this.serviceSlices(namespace, service).values()],
          resourceVersion: String(this.resourceVersion),
        };
      },
      watchEndpointSlices: async (namespace, service, resourceVersion, onEvent) => {
        this.enter('watchEndpointSlices', [namespace, service, resourceVersion]);
        await Promise.resolve();
        return this.openWatchHandle(namespace, service, resourceVersion, onEvent);
      },
      readStorageClass: async (name) => {
        this.enter('readStorageClass', [name]);
        await Promise.resolve();
        return this.storageClasses.get(name);
      },
      createPvc: async (spec: PvcSpec) => {
        this.enter('createPvc', [spec]);
        await Promise.resolve();
        const key = `${spec.namespace}/${spec.name}`;
        if (this.pvcs.has(key)) {
          throw new KubeError(
            'createPvc',
            409,
            `persistentvolumeclaims "${spec.name}" already exists`,
          );
        }
        this.pvcs.set(key, { name: spec.name, phase: 'Pending', deleting: false });
      },
      readPvc: async (namespace, name) => {
        this.enter('readPvc', [namespace, name]);
        await Promise.resolve();
        return this.pvcs.get(`${namespace}/${name}`);
      },
      deletePvc: async (namespace, name) => {
        this.enter('deletePvc', [namespace, name]);
        await Promise.resolve();
        this.pvcs.delete(`${namespace}/${name}`);
      },
      reviewToken: async (token) => {
        this.enter('reviewToken', [token]);
        await Promise.resolve();
        const user = this.tokens.get(token);
        return user === undefined
          ? { authenticated: false, error: 'invalid bearer token' }
          : { authenticated: true, user };
      },
      reviewAccess: async (user, attributes) => {
        this.enter('reviewAccess', [user, attributes]);
        await Promise.resolve();
        return this.authorize(user, attributes);
      },
      // Conditions merge by type, as a strategic merge patch of nodes/status does.
      patchNodeStatus: async (name, conditions) => {
        this.enter('patchNodeStatus', [name, conditions]);
        await Promise.resolve();
        const record = this.nodeRecord('patchNodeStatus', name);
        for (const condition of conditions) {
          const at = record.conditions.findIndex((c) => c.type === condition.type);
          if (at < 0) record.conditions.push({ ...condition });
          else record.conditions[at] = { ...condition };
        }
        return this.node(name);
      },
      createEvent: async (event) => {
        this.enter('createEvent', [event]);
        await Promise.resolve();
        if (this.events.some((e) => e.namespace === event.namespace && e.name === event.name)) {
          throw new KubeError('createEvent', 409, `events "${event.name}" already exists`);
        }
        this.events.push({ ...event });
      },
      patchEvent: async (namespace, name, repeat) => {
        this.enter('patchEvent', [namespace, name, repeat]);
        await Promise.resolve();
        const at = this.events.findIndex((e) => e.namespace === namespace && e.name === name);
        if (at < 0) throw new KubeError('patchEvent', 404, `events "${name}" not found`);
        this.events[at] = { ...this.events[at]!, ...repeat };
      },
      // The taint's read-modify-write and its Lease need resourceVersions and 409s: the fake API
      // server (kube-api-server.ts) simulates them; this fake records the call and refuses it.
      patchNodeTaints: (...args) => this.notSimulated('patchNodeTaints', args),
      readLease: (...args) => this.notSimulated('readLease', args),
      createLease: (...args) => this.notSimulated('createLease', args),
      replaceLease: (...args) => this.notSimulated('replaceLease', args),
      // Node watches are driven through the fake API server (test/integration); here one stays
      // open, silent, until stopped.
      watchNode: async (name, resourceVersion) => {
        this.enter('watchNode', [name, resourceVersion]);
        await Promise.resolve();
        let stop: (error: undefined) => void = () => undefined;
        const ended = new Promise<KubeError | undefined>((resolve) => (stop = resolve));
        return { ended, resourceVersion: () => resourceVersion, stop: () => stop(undefined) };
      },
    };
  }
}

function toPodInfo(pod: StoredPod): PodInfo {
  return {
    name: pod.name,
    namespace: pod.namespace,
    nodeName: pod.nodeName,
    phase: pod.phase,
    annotations: pod.annotations,
    podIPs: pod.podIPs,
    gpus: pod.gpus,
    terminationMessage: pod.terminationMessage,
  };
}

function applyMerge(
  target: Record<string, string>,
  patch: Readonly<Record<string, string | null>> | undefined,
): void {
  for (const [key, value] of Object.entries(patch ?? {})) {
    if (value === null) delete target[key];
    else target[key] = value;
  }
}

/**
 * Equality-based selectors only (a=b, a==b, a!=b, a, !a), which is all unit tests need; anything
 * else is rejected with a 400, as the API server rejects a selector it cannot parse.
 */
function selectorMatcher(
  method: KubeMethod,
  selector: string,
): (labels: Readonly<Record<string, string>>) => boolean {
  const requirements = selector
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '')
    .map((part) => {
      const match = /^(!?)([A-Za-z0-9_./-]+)(?:\s*(==|=|!=)\s*([A-Za-z0-9_.-]*))?$/.exec(part);
      if (match === null || (match[1] === '!' && match[3] !== undefined)) {
        throw new KubeError(method, 400, `unable to parse requirement: ${JSON.stringify(part)}`);
      }
      const [, not, key, operator, value] = match;
      return (labels: Readonly<Record<string, string>>): boolean => {
        const actual = labels[key!];
        if (operator === undefined) return (actual !== undefined) !== (not === '!');
        return operator === '!=' ? actual !== value : actual === value;
      };
    });
  return (labels) => requirements.every((requirement) => requirement(labels));
}
