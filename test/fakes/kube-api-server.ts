/**
 * A fake Kubernetes API server for tests: real HTTP on 127.0.0.1, the real wire format (JSON
 * objects, Status errors, chunked NDJSON watches), in-memory state, and hooks to inject faults.
 * It serves only what the exporter uses: nodes, pods, EndpointSlices (list and watch),
 * PersistentVolumeClaims with a simulated binder, StorageClasses, Jobs with a minimal Job
 * controller the test drives, TokenReview and SubjectAccessReview, and Leases (updates conditional
 * on resourceVersion). Tests drive it with the real @kubernetes/client-node.
 */

import { randomInt, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';

// ---------------------------------------------------------------------------------------------
// Object shapes

export interface ObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  [field: string]: unknown;
}

/** Any Kubernetes object as plain JSON. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  [field: string]: unknown;
}

export interface RecordedRequest {
  readonly method: string;
  /** The path without the query string. */
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  /** Without parameters such as charset; undefined when the request had none. */
  readonly contentType: string | undefined;
}

export interface RecordedPatch {
  readonly node: string;
  readonly contentType: string;
  readonly body: unknown;
  /** 'status' for PATCH nodes/{name}/status; absent for the node itself. */
  readonly subresource?: 'status';
}

/** An Event create (POST) or patch that reached the server, with its body as sent. */
export interface RecordedEventWrite {
  readonly method: 'POST' | 'PATCH';
  readonly namespace: string;
  readonly name?: string;
  readonly body: unknown;
}

export interface FakeUser {
  readonly username: string;
  readonly uid?: string;
  readonly groups?: readonly string[];
}

/** An RBAC-like grant; `*` in verb, resource or apiGroup matches anything. */
export type AccessRule = ({ readonly user: string } | { readonly group: string }) & {
  readonly verb: string;
  readonly resource: string;
  /** '' for the core group. */
  readonly apiGroup: string;
  /** Limits the rule to one object. */
  readonly name?: string;
};

/** How the simulated provisioner treats claims of one StorageClass. */
export type BinderBehaviour = { readonly bindAfterMs: number } | 'never';

export interface StorageClassSpec {
  /** Immediate (default) or WaitForFirstConsumer; the latter keeps claims Pending. */
  readonly volumeBindingMode?: string;
  readonly provisioner?: string;
  /** Default: binds at once (on the next tick, so a create still answers Pending). */
  readonly binder?: BinderBehaviour;
}

export interface InjectedFailure {
  readonly method?: string;
  readonly pathPrefix: string;
  /** true: only watch requests; false: only plain requests; absent: both. */
  readonly watch?: boolean;
  readonly status: number;
  readonly message?: string;
  /** Defaults to the usual reason for the status (Forbidden for 403...). */
  readonly reason?: string;
  /** How many matching requests fail; 1 unless given. */
  readonly times?: number;
}

export interface InjectedDelay {
  readonly method?: string;
  readonly pathPrefix: string;
  readonly ms: number;
  /** How many matching requests are delayed; all of them unless given. */
  readonly times?: number;
  /**
   * Hold the `times` matching requests until all of them have arrived, then answer them together
   * (`ms` is then the longest any waits): a race between clients made certain, however loaded the
   * machine is.
   */
  readonly together?: boolean;
}

export interface FakeKubeApiOptions {
  /**
   * How a watch from a compacted resourceVersion is refused. The real server does either:
   * 'event' answers 200 with one ERROR event carrying a 410 Status; 'status' answers HTTP 410.
   */
  readonly expiredWatch?: 'event' | 'status';
  /** Watch events kept for replay; resuming from an older version is refused as expired. */
  readonly historyLimit?: number;
  /** How long a deleted claim lingers with its deletionTimestamp set; 0 removes it at once. */
  readonly pvcDeletionDelayMs?: number;
  /** Address to listen on; 127.0.0.1 unless a test's network namespaces must reach it. */
  readonly host?: string;
}

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

// ---------------------------------------------------------------------------------------------
// Builders for the objects tests add most

export interface NodeInput {
  readonly name: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
  /** Sets status.allocatable and capacity of nvidia.com/gpu; absent: the node has no GPUs. */
  readonly allocatableGpus?: number;
  /** More status.capacity entries, such as nvidia.com/gpu.shared. */
  readonly capacity?: Readonly<Record<string, string>>;
  /** spec.taints, as someone else set them. */
  readonly taints?: readonly FakeTaint[];
  /** spec.unschedulable: cordoned. */
  readonly unschedulable?: boolean;
}

export interface FakeTaint {
  readonly key: string;
  readonly value?: string;
  readonly effect: string;
}

/** A Lease write that reached the server: create or update, accepted or refused with 409. */
export interface RecordedLeaseWrite {
  readonly method: 'POST' | 'PUT';
  readonly name: string;
  readonly holderIdentity: string;
  readonly outcome: 'ok' | 'conflict';
}

export interface PodInput {
  readonly namespace: string;
  readonly name: string;
  readonly labels?: Readonly<Record<string, string>>;
  /** Absent: the pod is not scheduled. */
  readonly nodeName?: string;
  /** Defaults to Running. */
  readonly phase?: string;
  readonly podIP?: string;
  readonly annotations?: Readonly<Record<string, string>>;
  /** nvidia.com/gpu of the first container; absent: it asks for none. */
  readonly gpus?: GpuResources;
  /** Further regular containers, each with its nvidia.com/gpu. */
  readonly moreContainers?: readonly GpuResources[];
  /** Init containers, each with its nvidia.com/gpu. */
  readonly initContainers?: readonly GpuResources[];
}

/** A container's nvidia.com/gpu: a number sets request and limit alike; the object sets either. */
export type GpuResources = number | { readonly request?: string; readonly limit?: string };

export interface JobOutcome {
  readonly succeeded: boolean;
  /** The pod's termination message (what the container wrote to /dev/termination-log). */
  readonly message?: string;
  /** The Failed condition's reason; BackoffLimitExceeded unless given. */
  readonly reason?: string;
}

/** The label the Job controller sets on a Job's pods (batch.kubernetes.io/job-name is newer). */
export const JOB_NAME_LABEL = 'job-name';

export interface SliceEndpointInput {
  readonly address: string;
  /** Absent leaves conditions.ready out, which Kubernetes defines as ready. */
  readonly ready?: boolean;
  readonly nodeName?: string;
  readonly podName?: string;
}

export interface EndpointSliceInput {
  readonly name: string;
  readonly service: string;
  readonly endpoints: readonly SliceEndpointInput[];
  readonly ports?: readonly { readonly name?: string; readonly port: number }[];
}

/** Pure: an EndpointSlice as the EndpointSlice controller writes it for a Service. */
export function endpointSlice(input: EndpointSliceInput): KubeObject {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: input.name,
      labels: {
        [SERVICE_NAME_LABEL]: input.service,
        'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io',
      },
    },
    addressType: 'IPv4',
    endpoints: input.endpoints.map((e) => ({
      addresses: [e.address],
      conditions: e.ready === undefined ? {} : { ready: e.ready, serving: e.ready },
      ...(e.nodeName === undefined ? {} : { nodeName: e.nodeName }),
      ...(e.podName === undefined ? {} : { targetRef: { kind: 'Pod', name: e.podName } }),
    })),
    ports: (input.ports ?? []).map((p) => ({
      ...(p.name === undefined ? {} : { name: p.name }),
      port: p.port,
      protocol: 'TCP',
    })),
  };
}

function gpuResources(gpus: GpuResources | undefined): Record<string, unknown> {
  if (gpus === undefined) return {};
  const { request, limit } =
    typeof gpus === 'number' ? { request: String(gpus), limit: String(gpus) } : gpus;
  return {
    resources: {
      ...(request === undefined ? {} : { requests: { 'nvidia.com/gpu': request } }),
      ...(limit === undefined ? {} : { limits: { 'nvidia.com/gpu': limit } }),
    },
  };
}

/** The condition message the Job controller writes for a failure reason. */
export const JOB_FAILURE_MESSAGES: Readonly<Record<string, string>> = {
  BackoffLimitExceeded: 'Job has reached the specified backoff limit',
  DeadlineExceeded: 'Job was active longer than specified deadline',
};

/** The alphabet of generated name suffixes in Kubernetes (no vowels, no look-alikes). */
const NAME_SUFFIX_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

function nameSuffix(): string {
  return Array.from({ length: 5 }, () => NAME_SUFFIX_ALPHABET[randomInt(27)]).join('');
}

// ---------------------------------------------------------------------------------------------
// Label selectors

export type LabelRequirement =
  | { readonly key: string; readonly op: 'exists' | 'notexists' }
  | { readonly key: string; readonly op: 'in' | 'notin'; readonly values: readonly string[] };

const KEY = String.raw`[A-Za-z0-9](?:[A-Za-z0-9._/-]*[A-Za-z0-9])?`;
const VALUE = String.raw`(?:[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)?`;
const EQUALITY = new RegExp(`^(${KEY})\\s*(==|=|!=)\\s*(${VALUE})$`);
const SET = new RegExp(`^(${KEY})\\s+(in|notin)\\s*\\(([^)]*)\\)$`);
const EXISTS = new RegExp(`^(${KEY})$`);
const NOT_EXISTS = new RegExp(`^!\\s*(${KEY})$`);
const SET_VALUE = new RegExp(`^${VALUE}$`);

/** Splits on the commas that separate requirements, not those inside `in (a,b)`. */
function splitTerms(selector: string): string[] {
  const terms: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < selector.length; i++) {
    const c = selector[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ',' && depth === 0) {
      terms.push(selector.slice(start, i));
      start = i + 1;
    }
  }
  terms.push(selector.slice(start));
  return terms.map((t) => t.trim());
}

/** Pure. Throws on a malformed selector; the empty selector has no requirements. */
export function parseLabelSelector(selector: string): LabelRequirement[] {
  if (selector.trim() === '') return [];
  return splitTerms(selector).map((term): LabelRequirement => {
    let m = EQUALITY.exec(term);
    if (m !== null) {
      const [, key = '', op, value = ''] = m;
      return { key, op: op === '!=' ? 'notin' : 'in', values: [value] };
    }
    m = SET.exec(term);
    if (m !== null) {
      const [, key = '', op, list = ''] = m;
      const values = list.split(',').map((v) => v.trim());
      if (values.some((v) => !SET_VALUE.test(v))) {
        throw new Error(`invalid label selector value list in ${JSON.stringify(term)}`);
      }
      return { key, op: op === 'in' ? 'in' : 'notin', values };
    }
    m = NOT_EXISTS.exec(term);
    if (m !== null) return { key: m[1] ?? '', op: 'notexists' };
    m = EXISTS.exec(term);
    if (m !== null) return { key: m[1] ?? '', op: 'exists' };
    throw new Error(`invalid label selector requirement ${JSON.stringify(term)}`);
  });
}

/** Pure. As in Kubernetes, `!=` and `notin` also match objects without the label. */
export function matchesLabelSelector(
  selector: string | readonly LabelRequirement[],
  labels: Readonly<Record<string, string>> | undefined,
): boolean {
  const requirements = typeof selector === 'string' ? parseLabelSelector(selector) : selector;
  const has = (key: string) => labels !== undefined && Object.hasOwn(labels, key);
  return requirements.every((r) => {
    switch (r.op) {
      case 'exists':
        return has(r.key);
      case 'notexists':
        return !has(r.key);
      case 'in':
        return has(r.key) && r.values.includes(labels?.[r.key] ?? '');
      case 'notin':
        return !has(r.key) || !r.values.includes(labels?.[r.key] ?? '');
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Field selectors: `path=value`, `path==value`, `path!=value` on dotted paths, like
// spec.nodeName=x; an absent field reads as '' as it does in Kubernetes.

type FieldRequirement = { readonly path: string; readonly value: string; readonly equal: boolean };

function parseFieldSelector(selector: string): FieldRequirement[] {
  if (selector.trim() === '') return [];
  return selector.split(',').map((term) => {
    const m = /^\s*([A-Za-z0-9.]+)\s*(==|=|!=)\s*([^,]*?)\s*$/.exec(term);
    if (m === null) throw new Error(`invalid field selector requirement ${JSON.stringify(term)}`);
    return { path: m[1] ?? '', value: m[3] ?? '', equal: m[2] !== '!=' };
  });
}

function fieldValue(object: KubeObject, path: string): string {
  let current: unknown = object;
  for (const part of path.split('.')) {
    if (typeof current !== 'object' || current === null) return '';
    current = (current as Record<string, unknown>)[part];
  }
  return typeof current === 'string' || typeof current === 'number' ? String(current) : '';
}

// ---------------------------------------------------------------------------------------------
// Patches

class PatchError extends Error {}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Pure: RFC 7386 JSON merge patch; null deletes a key, arrays are replaced whole. */
export function applyMergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return structuredClone(patch);
  const result: Record<string, unknown> = isPlainObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = applyMergePatch(result[key], value);
  }
  return result;
}

function pointerTokens(pointer: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) throw new PatchError(`invalid JSON pointer ${pointer}`);
  return pointer
    .slice(1)
    .split('/')
    .map((t) => t.replaceAll('~1', '/').replaceAll('~0', '~'));
}

/**
 * Pure: RFC 6902 JSON patch with add, replace, remove and test. Like the API server it is strict:
 * adding /metadata/labels/x to an object without labels fails because the parent is missing.
 */
export function applyJsonPatch(document: unknown, operations: unknown): unknown {
  if (!Array.isArray(operations)) throw new PatchError('a JSON patch must be an array');
  let result = structuredClone(document);
  for (const operation of operations as unknown[]) {
    if (!isPlainObject(operation) || typeof operation.path !== 'string') {
      throw new PatchError(`invalid JSON patch operation ${JSON.stringify(operation)}`);
    }
    const { op, path, value } = operation;
    const tokens = pointerTokens(path);
    const last = tokens.pop();
    if (last === undefined) {
      if (op === 'add' || op === 'replace') result = structuredClone(value);
      else throw new PatchError(`cannot ${String(op)} the whole document`);
      continue;
    }
    let parent: unknown = result;
    for (const token of tokens) {
      parent = isPlainObject(parent) || Array.isArray(parent) ? parent[token as never] : undefined;
      if (parent === undefined) throw new PatchError(`doc is missing path: ${path}`);
    }
    if (Array.isArray(parent)) {
      applyToArray(parent as unknown[], String(op), last, value, path);
    } else if (isPlainObject(parent)) {
      const exists = Object.hasOwn(parent, last);
      switch (op) {
        case 'add':
          parent[last] = structuredClone(value);
          break;
        case 'replace':
          if (!exists) throw new PatchError(`doc is missing key: ${path}`);
          parent[last] = structuredClone(value);
          break;
        case 'remove':
          if (!exists) throw new PatchError(`unable to remove nonexistent key: ${path}`);
          delete parent[last];
          break;
        case 'test':
          if (JSON.stringify(parent[last]) !== JSON.stringify(value)) {
            throw new PatchError(`testing value ${path} failed`);
          }
          break;
        default:
          throw new PatchError(`unsupported JSON patch operation ${String(op)}`);
      }
    } else {
      throw new PatchError(`doc is missing path: ${path}`);
    }
  }
  return result;
}

function applyToArray(array: unknown[], op: string, token: string, value: unknown, path: string) {
  const index = token === '-' ? array.length : Number(token);
  const inside = Number.isInteger(index) && index >= 0 && index < array.length;
  if (op === 'add' && Number.isInteger(index) && index >= 0 && index <= array.length) {
    array.splice(index, 0, structuredClone(value));
  } else if (op === 'replace' && inside) {
    array[index] = structuredClone(value);
  } else if (op === 'remove' && inside) {
    array.splice(index, 1);
  } else if (op === 'test' && inside) {
    if (JSON.stringify(array[index]) !== JSON.stringify(value)) {
      throw new PatchError(`testing value ${path} failed`);
    }
  } else {
    throw new PatchError(`cannot ${op} at ${path}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Errors and answers

const REASONS: Readonly<Record<number, string>> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  405: 'MethodNotAllowed',
  409: 'Conflict',
  410: 'Expired',
  415: 'UnsupportedMediaType',
  422: 'Invalid',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

/** A Kubernetes `Status` failure body. */
export function statusBody(code: number, message: string, reason = REASONS[code] ?? 'Unknown') {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    code,
  };
}

class ApiError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly reason?: string,
  ) {
    super(message);
  }
}

function notFound(resource: string, name: string): ApiError {
  return new ApiError(404, `${resource} "${name}" not found`);
}

interface Reply {
  readonly code: number;
  readonly body: unknown;
}

interface Call {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly contentType: string | undefined;
  readonly body: unknown;
  readonly params: readonly string[];
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
}

/** A handler answers with a Reply, or 'streamed' when it took over the response (watches). */
type Handler = (call: Call) => Reply | 'streamed';

interface Route {
  readonly method: string;
  readonly pattern: RegExp;
  readonly handle: Handler;
}

// ---------------------------------------------------------------------------------------------
// Watches

interface WatchEvent {
  readonly revision: number;
  /** Which collection changed: endpointslices or nodes. */
  readonly resource: WatchedResource;
  readonly namespace: string;
  /** The object before the change; undefined for a creation. */
  readonly before: KubeObject | undefined;
  /** The object after the change; undefined for a deletion. */
  readonly after: KubeObject | undefined;
  /** What a watcher receives: the new state, or the final state of a deleted object. */
  readonly object: KubeObject;
}

type WatchedResource = 'endpointslices' | 'nodes';

interface OpenWatch {
  readonly resource: WatchedResource;
  readonly namespace: string | undefined;
  readonly selector: readonly LabelRequirement[];
  /** fieldSelector, such as metadata.name=node-c for one node. */
  readonly fields: readonly FieldRequirement[];
  readonly res: ServerResponse;
}

/**
 * What one watcher sees of a change. An object that starts or stops matching the selector
 * arrives as ADDED or DELETED, as from the real server.
 */
function eventFor(watch: OpenWatch, event: WatchEvent): string | undefined {
  if (watch.resource !== event.resource) return undefined;
  if (watch.namespace !== undefined && watch.namespace !== event.namespace) return undefined;
  const matches = (o: KubeObject | undefined) =>
    o !== undefined &&
    matchesLabelSelector(watch.selector, o.metadata.labels) &&
    watch.fields.every((f) => (fieldValue(o, f.path) === f.value) === f.equal);
  const was = matches(event.before);
  const is = matches(event.after);
  const type = is ? (was ? 'MODIFIED' : 'ADDED') : was ? 'DELETED' : undefined;
  return type === undefined ? undefined : JSON.stringify({ type, object: event.object }) + '\n';
}

// ---------------------------------------------------------------------------------------------
// Validation the real server does on what the exporter writes

const TAINT_EFFECTS = ['NoSchedule', 'PreferNoSchedule', 'NoExecute'];

/**
 * The API server's validation of spec.taints: a known effect, and each key+effect pair at most
 * once (https://kubernetes.io/docs/concepts/scheduling-eviction/taint-and-toleration/).
 */
function validateTaints(node: KubeObject): void {
  const spec = isPlainObject(node.spec) ? node.spec : {};
  const taints: unknown[] = Array.isArray(spec.taints) ? spec.taints : [];
  const seen = new Set<string>();
  taints.forEach((taint, index) => {
    const t = isPlainObject(taint) ? taint : {};
    const effect = typeof t.effect === 'string' ? t.effect : '';
    if (!TAINT_EFFECTS.includes(effect)) {
      throw new ApiError(
        422,
        `Node "${node.metadata.name}" is invalid: spec.taints[${index}].effect: Unsupported value: "${effect}"`,
      );
    }
    const pair = `${String(t.key)}:${effect}`;
    if (seen.has(pair)) {
      throw new ApiError(
        422,
        `Node "${node.metadata.name}" is invalid: spec.taints[${index}]: Duplicate value: taints must be unique by key and effect pair`,
      );
    }
    seen.add(pair);
  });
}

function leaseBody(body: unknown): KubeObject {
  if (!isPlainObject(body) || !isPlainObject(body.metadata)) {
    throw new ApiError(400, 'a Lease needs metadata');
  }
  const name = body.metadata.name;
  if (typeof name !== 'string' || name === '') {
    throw new ApiError(
      422,
      'Lease.coordination.k8s.io "" is invalid: metadata.name: Required value',
    );
  }
  const lease = structuredClone(body) as KubeObject;
  lease.apiVersion = 'coordination.k8s.io/v1';
  lease.kind = 'Lease';
  const spec = isPlainObject(lease.spec) ? lease.spec : {};
  // MicroTime: the real server refuses any other number of fractional digits than six.
  for (const field of ['acquireTime', 'renewTime']) {
    const value = spec[field];
    if (value !== undefined && (typeof value !== 'string' || !MICRO_TIME.test(value))) {
      throw new ApiError(400, `Lease spec.${field}: ${JSON.stringify(value)} is not a MicroTime`);
    }
  }
  return lease;
}

const MICRO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$/;

function leaseHolder(lease: KubeObject): string {
  const spec = isPlainObject(lease.spec) ? lease.spec : {};
  return typeof spec.holderIdentity === 'string' ? spec.holderIdentity : '';
}

// ---------------------------------------------------------------------------------------------
// Strategic merge of a node's status

/** The lists of NodeStatus that a strategic merge patch merges by a key, not replaces. */
const STATUS_MERGE_KEYS: Readonly<Record<string, string>> = {
  conditions: 'type',
  addresses: 'type',
};

/**
 * Pure: a strategic merge patch of a node's status. As in Kubernetes, conditions (and addresses)
 * merge element by element on their `type`, a patch element with `$patch: delete` removes its
 * match, and every other field merges as in a JSON merge patch
 * (https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/).
 */
export function applyStrategicStatus(status: unknown, patch: unknown): unknown {
  if (patch === undefined) return structuredClone(status);
  if (!isPlainObject(patch)) throw new ApiError(422, 'status must be an object');
  const result: Record<string, unknown> = isPlainObject(status) ? structuredClone(status) : {};
  for (const [field, value] of Object.entries(patch)) {
    const mergeKey = STATUS_MERGE_KEYS[field];
    if (mergeKey !== undefined && Array.isArray(value)) {
      result[field] = mergeList(result[field], value, mergeKey);
    } else if (value === null) {
      delete result[field];
    } else {
      result[field] = applyMergePatch(result[field], value);
    }
  }
  return result;
}

function mergeList(current: unknown, patch: readonly unknown[], mergeKey: string): unknown[] {
  const list: unknown[] = Array.isArray(current) ? structuredClone(current) : [];
  for (const element of patch) {
    if (!isPlainObject(element) || typeof element[mergeKey] !== 'string') {
      throw new ApiError(422, `each element must have a string ${mergeKey}`);
    }
    const at = list.findIndex(
      (item) => isPlainObject(item) && item[mergeKey] === element[mergeKey],
    );
    if (element.$patch === 'delete') {
      if (at >= 0) list.splice(at, 1);
    } else if (at < 0) {
      list.push(structuredClone(element));
    } else {
      list[at] = applyMergePatch(list[at], element);
    }
  }
  return list;
}

// ---------------------------------------------------------------------------------------------
// The server

function timestamp(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function key(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** A list as the API server returns it: items without kind and apiVersion. */
function listOf(kind: string, apiVersion: string, items: KubeObject[], revision: number) {
  return {
    kind,
    apiVersion,
    metadata: { resourceVersion: String(revision) },
    items: items.map((item) => {
      const copy = structuredClone(item);
      delete copy.kind;
      delete copy.apiVersion;
      return copy;
    }),
  };
}

export class FakeKubeApi {
  private revision = 0;
  private readonly nodes = new Map<string, KubeObject>();
  private readonly pods = new Map<string, KubeObject>();
  private readonly slices = new Map<string, KubeObject>();
  private readonly claims = new Map<string, KubeObject>();
  private readonly jobObjects = new Map<string, KubeObject>();
  private readonly storageClasses = new Map<string, KubeObject>();
  private readonly binders = new Map<string, BinderBehaviour>();
  private readonly tokens = new Map<string, FakeUser>();
  private readonly rules: AccessRule[] = [];

  private history: WatchEvent[] = [];
  /** Events up to this revision may have been forgotten: resuming before it is expired. */
  private compactedThrough = 0;
  private readonly watches = new Set<OpenWatch>();
  private watchCount = 0;

  private failures: { rule: InjectedFailure; left: number }[] = [];
  private delays: { rule: InjectedDelay; left: number }[] = [];
  /** The requests a `together` delay holds until all of them have come. */
  private readonly meetings = new Map<InjectedDelay, (() => void)[]>();
  private down = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly sockets = new Set<Socket>();
  private pvcDeletionDelayMs: number;

  private readonly requestLog: RecordedRequest[] = [];
  private readonly patchLog: RecordedPatch[] = [];
  private readonly createdClaims: string[] = [];
  private readonly deletedClaims: string[] = [];
  private readonly tokenReviewLog: string[] = [];
  private readonly accessReviewLog: unknown[] = [];
  private readonly jobLog: unknown[] = [];
  private readonly leaseObjects = new Map<string, KubeObject>();
  private readonly leaseLog: RecordedLeaseWrite[] = [];
  private readonly eventObjects = new Map<string, KubeObject>();
  private readonly eventLog: RecordedEventWrite[] = [];

  private readonly routes: readonly Route[];

  constructor(
    private readonly server: Server,
    /** http://127.0.0.1:PORT */
    readonly url: string,
    private readonly options: FakeKubeApiOptions,
  ) {
    this.pvcDeletionDelayMs = options.pvcDeletionDelayMs ?? 0;
    const name = '([^/]+)';
    const route = (method: string, path: string, handle: Handler): Route => ({
      method,
      pattern: new RegExp(`^${path}$`),
      handle,
    });
    const claims = `/api/v1/namespaces/${name}/persistentvolumeclaims`;
    const slices = `/apis/discovery.k8s.io/v1/namespaces/${name}/endpointslices`;
    const jobs = `/apis/batch/v1/namespaces/${name}/jobs`;
    const leases = `/apis/coordination.k8s.io/v1/namespaces/${name}/leases`;
    this.routes = [
      route('GET', `${leases}/${name}`, (c) => this.readLease(c)),
      route('POST', leases, (c) => this.createLease(c)),
      route('PUT', `${leases}/${name}`, (c) => this.replaceLease(c)),
      route('GET', '/api/v1/nodes', (c) => this.listNodes(c)),
      route('GET', `/api/v1/nodes/${name}`, (c) => this.readNode(c)),
      route('PATCH', `/api/v1/nodes/${name}`, (c) => this.patchNode(c)),
      route('PATCH', `/api/v1/nodes/${name}/status`, (c) => this.patchNodeStatus(c)),
      route('GET', '/api/v1/events', (c) => this.listEvents(c)),
      route('GET', `/api/v1/namespaces/${name}/events`, (c) => this.listEvents(c)),
      route('POST', `/api/v1/namespaces/${name}/events`, (c) => this.createEvent(c)),
      route('PATCH', `/api/v1/namespaces/${name}/events/${name}`, (c) => this.patchEvent(c)),
      route('GET', '/api/v1/pods', (c) => this.listPods(c)),
      route('GET', `/api/v1/namespaces/${name}/pods`, (c) => this.listPods(c)),
      route('GET', `/api/v1/namespaces/${name}/pods/${name}`, (c) => this.readPod(c)),
      route('GET', '/apis/discovery.k8s.io/v1/endpointslices', (c) => this.listSlices(c)),
      route('GET', slices, (c) => this.listSlices(c)),
      route('GET', `${slices}/${name}`, (c) => this.readSlice(c)),
      route('GET', claims, (c) => this.listClaims(c)),
      route('POST', claims, (c) => this.createClaim(c)),
      route('GET', `${claims}/${name}`, (c) => this.readClaim(c)),
      route('DELETE', `${claims}/${name}`, (c) => this.deleteClaim(c)),
      route('GET', jobs, (c) => this.listJobs(c)),
      route('POST', jobs, (c) => this.createJob(c)),
      route('GET', `${jobs}/${name}`, (c) => this.readJob(c)),
      route('DELETE', `${jobs}/${name}`, (c) => this.deleteJob(c)),
      route('GET', '/apis/storage.k8s.io/v1/storageclasses', (c) => this.listStorageClasses(c)),
      route('GET', `/apis/storage.k8s.io/v1/storageclasses/${name}`, (c) =>
        this.readStorageClass(c),
      ),
      route('POST', '/apis/authentication.k8s.io/v1/tokenreviews', (c) => this.reviewToken(c)),
      route('POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews', (c) => this.reviewSelf(c)),
      route('POST', '/apis/authorization.k8s.io/v1/subjectaccessreviews', (c) =>
        this.reviewAccess(c),
      ),
    ];
    this.listen();
  }

  // ----- records -----

  /** Every request answered or failed on purpose (not those refused by setDown), oldest first. */
  get requests(): readonly RecordedRequest[] {
    return this.requestLog;
  }

  /** Every PATCH that reached a node (injected failures excepted), as sent on the wire. */
  get patches(): readonly RecordedPatch[] {
    return this.patchLog;
  }

  /** `namespace/name` of every claim created and every claim whose deletion was accepted. */
  get pvcLog(): { readonly created: readonly string[]; readonly deleted: readonly string[] } {
    return { created: this.createdClaims, deleted: this.deletedClaims };
  }

  /** The tokens sent for review, in order. */
  get tokenReviews(): readonly string[] {
    return this.tokenReviewLog;
  }

  /** The spec of every SubjectAccessReview, in order. */
  get accessReviews(): readonly unknown[] {
    return this.accessReviewLog;
  }

  /** The body of every Job creation that reached the handler, as sent, in order. */
  get jobs(): readonly unknown[] {
    return this.jobLog;
  }

  /** Every Event create and patch that reached the server, as sent, in order. */
  get eventWrites(): readonly RecordedEventWrite[] {
    return this.eventLog;
  }

  /** The Events the server holds now (all namespaces unless given), oldest first. */
  events(namespace?: string): KubeObject[] {
    return [...this.eventObjects.values()]
      .filter((event) => namespace === undefined || event.metadata.namespace === namespace)
      .map((event) => structuredClone(event));
  }

  /** Every Lease create and update, accepted or refused, in order. */
  get leaseWrites(): readonly RecordedLeaseWrite[] {
    return this.leaseLog;
  }

  /** The Lease as the server has it now, or undefined. */
  lease(namespace: string, name: string): KubeObject | undefined {
    const lease = this.leaseObjects.get(key(namespace, name));
    return lease === undefined ? undefined : structuredClone(lease);
  }

  /** Replaces a node's spec.taints as another controller or a person would (bumps its version). */
  setNodeTaints(name: string, taints: readonly FakeTaint[]): void {
    const node = this.nodes.get(name);
    if (node === undefined) throw new Error(`no node ${name} in the fake`);
    const updated = structuredClone(node);
    updated.spec = { ...(isPlainObject(updated.spec) ? updated.spec : {}), taints: [...taints] };
    this.bump(updated);
    this.putNode(name, updated);
  }

  /**
   * A change made by hand (kubectl edit, kubectl label): `edit` changes a copy of the node, which
   * then replaces it with a new resourceVersion, and node watchers see MODIFIED.
   */
  editNode(name: string, edit: (node: KubeObject) => void): KubeObject {
    const node = this.nodes.get(name);
    if (node === undefined) throw new Error(`no node ${name} in the fake`);
    const updated = structuredClone(node);
    edit(updated);
    this.bump(updated);
    this.putNode(name, updated);
    return structuredClone(updated);
  }

  /** Watch requests received, including those refused as expired. */
  get watchRequests(): number {
    return this.watchCount;
  }

  /** Watch streams open now. */
  get openWatches(): number {
    return this.watches.size;
  }

  /** The global resourceVersion, bumped by every change. */
  get resourceVersion(): string {
    return String(this.revision);
  }

  // ----- state -----

  addNode(input: NodeInput): KubeObject {
    const gpus =
      input.allocatableGpus === undefined
        ? {}
        : { 'nvidia.com/gpu': String(input.allocatableGpus) };
    const node: KubeObject = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: {
        name: input.name,
        labels: { 'kubernetes.io/hostname': input.name, ...input.labels },
        annotations: { ...input.annotations },
      },
      spec: {
        ...(input.taints === undefined ? {} : { taints: input.taints.map((t) => ({ ...t })) }),
        ...(input.unschedulable === undefined ? {} : { unschedulable: input.unschedulable }),
      },
      status: {
        capacity: { cpu: '64', memory: '512Gi', ...gpus, ...input.capacity },
        allocatable: { cpu: '63', memory: '500Gi', ...gpus },
      },
    };
    this.nodes.set(input.name, this.created(node));
    return structuredClone(node);
  }

  /** The node as the server has it now, or undefined. */
  node(name: string): KubeObject | undefined {
    const node = this.nodes.get(name);
    return node === undefined ? undefined : structuredClone(node);
  }

  /** The DaemonSet's pod on `node` (label app=autopilot), on loopback unless given an address. */
  addExporterPod(namespace: string, node: string, podIP = '127.0.0.1'): KubeObject {
    return this.addPod({
      namespace,
      name: `autopilot-${node}`,
      labels: { app: 'autopilot' },
      nodeName: node,
      podIP,
    });
  }

  addPod(input: PodInput): KubeObject {
    const pod: KubeObject = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: input.name,
        namespace: input.namespace,
        labels: { ...input.labels },
        ...(input.annotations === undefined ? {} : { annotations: { ...input.annotations } }),
      },
      spec: {
        ...(input.initContainers === undefined
          ? {}
          : {
              initContainers: input.initContainers.map((gpus, i) => ({
                name: `init-${i}`,
                image: 'registry.example/init:test',
                ...gpuResources(gpus),
              })),
            }),
        containers: [input.gpus, ...(input.moreContainers ?? [])].map((gpus, i) => ({
          name: i === 0 ? 'main' : `main-${i}`,
          image: 'registry.example/autopilot:test',
          ...gpuResources(gpus),
        })),
        ...(input.nodeName === undefined ? {} : { nodeName: input.nodeName }),
      },
      status: {
        phase: input.phase ?? 'Running',
        ...(input.podIP === undefined ? {} : { podIP: input.podIP, podIPs: [{ ip: input.podIP }] }),
      },
    };
    this.pods.set(key(input.namespace, input.name), this.created(pod));
    return structuredClone(pod);
  }

  /** The pod as the server has it now, or undefined. */
  pod(namespace: string, name: string): KubeObject | undefined {
    const pod = this.pods.get(key(namespace, name));
    return pod === undefined ? undefined : structuredClone(pod);
  }

  setPodPhase(namespace: string, name: string, phase: string): void {
    const id = key(namespace, name);
    const pod = this.pods.get(id);
    if (pod === undefined) throw new Error(`no pod ${id} in the fake`);
    this.updateStatus(this.pods, id, { phase });
  }

  /** The Job as the server has it now, or undefined once it is gone. */
  job(namespace: string, name: string): KubeObject | undefined {
    const job = this.jobObjects.get(key(namespace, name));
    return job === undefined ? undefined : structuredClone(job);
  }

  /** The pods the Job controller made for a Job, by name. */
  jobPods(namespace: string, jobName: string): KubeObject[] {
    return this.podsOfJob(namespace, jobName).flatMap((id) => {
      const pod = this.pods.get(id);
      return pod === undefined ? [] : [structuredClone(pod)];
    });
  }

  /** The kubelet started the Job's container. */
  runJobPod(namespace: string, jobName: string): void {
    for (const id of this.podsOfJob(namespace, jobName)) {
      this.updateStatus(this.pods, id, {
        phase: 'Running',
        containerStatuses: [
          containerStatus(this.pods.get(id), { running: { startedAt: timestamp() } }),
        ],
      });
    }
    this.updateStatus(this.jobObjects, key(namespace, jobName), { ready: 1 });
  }

  /**
   * The Job's container ended and the controller finished the Job, with the conditions a 1.31+
   * controller writes (SuccessCriteriaMet or FailureTarget first, then Complete or Failed).
   */
  finishJob(namespace: string, jobName: string, outcome: JobOutcome): void {
    const jobId = key(namespace, jobName);
    if (!this.jobObjects.has(jobId)) throw new Error(`no job ${jobId} in the fake`);
    const now = timestamp();
    for (const id of this.podsOfJob(namespace, jobName)) {
      const terminated = {
        exitCode: outcome.succeeded ? 0 : 1,
        reason: outcome.succeeded ? 'Completed' : 'Error',
        finishedAt: now,
        ...(outcome.message === undefined ? {} : { message: outcome.message }),
      };
      this.updateStatus(this.pods, id, {
        phase: outcome.succeeded ? 'Succeeded' : 'Failed',
        containerStatuses: [containerStatus(this.pods.get(id), { terminated })],
      });
    }
    const condition = (type: string, reason?: string) => ({
      type,
      status: 'True',
      lastProbeTime: now,
      lastTransitionTime: now,
      ...(reason === undefined
        ? {}
        : { reason, message: JOB_FAILURE_MESSAGES[reason] ?? `the job failed: ${reason}` }),
    });
    const reason = outcome.reason ?? 'BackoffLimitExceeded';
    this.updateStatus(this.jobObjects, jobId, {
      active: 0,
      ready: 0,
      completionTime: now,
      ...(outcome.succeeded
        ? {
            succeeded: 1,
            conditions: [
              condition('SuccessCriteriaMet', 'CompletionsReached'),
              condition('Complete'),
            ],
          }
        : {
            failed: 1,
            conditions: [condition('FailureTarget', reason), condition('Failed', reason)],
          }),
    });
  }

  /** Creates or replaces a slice (see endpointSlice()), telling watchers ADDED or MODIFIED. */
  upsertEndpointSlice(namespace: string, slice: KubeObject): KubeObject {
    const id = key(namespace, slice.metadata.name);
    const before = this.slices.get(id);
    const after: KubeObject = structuredClone({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      addressType: 'IPv4',
      endpoints: [],
      ...slice,
      metadata: {
        ...slice.metadata,
        namespace,
        uid: before?.metadata.uid ?? randomUUID(),
        creationTimestamp: before?.metadata.creationTimestamp ?? timestamp(),
      },
    });
    this.bump(after);
    this.slices.set(id, after);
    this.record({ resource: 'endpointslices', namespace, before, after, object: after });
    return structuredClone(after);
  }

  /** Removes a slice, telling watchers DELETED; false when there was none. */
  deleteEndpointSlice(namespace: string, name: string): boolean {
    const id = key(namespace, name);
    const before = this.slices.get(id);
    if (before === undefined) return false;
    this.slices.delete(id);
    const object = structuredClone(before);
    this.bump(object);
    this.record({ resource: 'endpointslices', namespace, before, after: undefined, object });
    return true;
  }

  /** Forgets every past watch event, so resuming from any version seen so far is expired. */
  compactHistory(): void {
    this.history = [];
    this.compactedThrough = this.revision;
  }

  /** Ends every open watch properly, as the server does when a watch's timeoutSeconds is up. */
  endWatches(): void {
    for (const watch of this.watches) watch.res.end();
    this.watches.clear();
  }

  /** Destroys every open watch connection without a proper end, like a dropped connection. */
  dropWatches(): void {
    for (const watch of this.watches) watch.res.socket?.destroy();
    this.watches.clear();
  }

  /** Resolves once `count` watches are open; rejects after `timeoutMs`. */
  async waitForOpenWatches(count: number, timeoutMs = 2000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.watches.size < count) {
      if (Date.now() > deadline) {
        throw new Error(
          `expected ${count} open watches, ${this.watches.size} after ${timeoutMs} ms`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  addStorageClass(name: string, spec: StorageClassSpec = {}): void {
    const storageClass: KubeObject = {
      apiVersion: 'storage.k8s.io/v1',
      kind: 'StorageClass',
      metadata: { name },
      provisioner: spec.provisioner ?? 'fake.csi.example.com',
      reclaimPolicy: 'Delete',
      volumeBindingMode: spec.volumeBindingMode ?? 'Immediate',
    };
    this.storageClasses.set(name, this.created(storageClass));
    this.binders.set(name, spec.binder ?? { bindAfterMs: 0 });
  }

  /** The claim as the server has it now, or undefined once it is gone. */
  pvc(namespace: string, name: string): KubeObject | undefined {
    const claim = this.claims.get(key(namespace, name));
    return claim === undefined ? undefined : structuredClone(claim);
  }

  /** Applies to deletions requested from now on. */
  setPvcDeletionDelay(ms: number): void {
    this.pvcDeletionDelayMs = ms;
  }

  /** Makes TokenReview authenticate `token` as `user`. */
  addToken(token: string, user: FakeUser): void {
    this.tokens.set(token, user);
  }

  /** Makes SubjectAccessReview allow what the rule grants; anything else is denied. */
  allow(rule: AccessRule): void {
    this.rules.push(rule);
  }

  // ----- faults -----

  /** Answers the next matching request(s) with this status and a Status body. */
  failNext(failure: InjectedFailure): void {
    this.failures.push({ rule: failure, left: failure.times ?? 1 });
  }

  /** Holds back the answer to matching requests by `ms`. */
  delay(delay: InjectedDelay): void {
    this.delays.push({ rule: delay, left: delay.times ?? Infinity });
  }

  /** Forgets every failNext and delay not yet used up. */
  clearFaults(): void {
    this.failures = [];
    this.delays = [];
  }

  /** While down, every connection is reset without an answer, open ones included. */
  setDown(down: boolean): void {
    this.down = down;
    if (down) for (const socket of this.sockets) socket.destroy();
  }

  /** Stops the server, its watch streams, connections and timers. */
  async close(): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.dropWatches();
    await new Promise<void>((resolve, reject) => {
      this.server.close((error) => (error === undefined ? resolve() : reject(error)));
      this.server.closeAllConnections();
    });
  }

  // ----- plumbing -----

  private listen(): void {
    this.server.on('connection', (socket: Socket) => {
      if (this.down) {
        socket.destroy();
        return;
      }
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      this.receive(req, res).catch((error: unknown) => {
        if (!res.headersSent) send(res, { code: 500, body: statusBody(500, String(error)) });
      });
    });
  }

  private async receive(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.down) {
      req.socket.destroy();
      return;
    }
    const url = new URL(req.url ?? '/', 'http://fake');
    const method = req.method ?? 'GET';
    const contentType = req.headers['content-type']?.split(';')[0]?.trim();
    const raw = await readBody(req);
    this.requestLog.push({
      method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      contentType,
    });
    const isWatch = url.searchParams.get('watch') === 'true';
    const failure = this.take(this.failures, method, url.pathname, isWatch);
    const delay = this.take(this.delays, method, url.pathname, isWatch);
    if (delay?.together === true) await this.meet(delay);
    else if (delay !== undefined) await this.sleep(delay.ms);
    if (res.destroyed || req.socket.destroyed) return;
    if (failure !== undefined) {
      const message = failure.message ?? `injected failure ${failure.status}`;
      send(res, {
        code: failure.status,
        body: statusBody(failure.status, message, failure.reason),
      });
      return;
    }
    let body: unknown;
    try {
      body = raw === '' ? undefined : JSON.parse(raw);
    } catch {
      send(res, { code: 400, body: statusBody(400, 'request body is not valid JSON') });
      return;
    }
    const reply = this.dispatch({
      method,
      path: url.pathname,
      query: url.searchParams,
      contentType,
      body,
      params: [],
      req,
      res,
    });
    if (reply !== 'streamed') send(res, reply);
  }

  private dispatch(call: Call): Reply | 'streamed' {
    let pathMatched = false;
    for (const route of this.routes) {
      const m = route.pattern.exec(call.path);
      if (m === null) continue;
      pathMatched = true;
      if (route.method !== call.method) continue;
      try {
        return route.handle({ ...call, params: m.slice(1).map(decodeURIComponent) });
      } catch (error) {
        if (error instanceof ApiError) {
          return { code: error.code, body: statusBody(error.code, error.message, error.reason) };
        }
        return { code: 500, body: statusBody(500, String(error)) };
      }
    }
    return pathMatched
      ? {
          code: 405,
          body: statusBody(405, `the server does not allow this method on ${call.path}`),
        }
      : { code: 404, body: statusBody(404, 'the server could not find the requested resource') };
  }

  /** Uses up one matching fault rule, if any. */
  private take<T extends { readonly method?: string; readonly pathPrefix: string }>(
    rules: { rule: T & { readonly watch?: boolean }; left: number }[],
    method: string,
    path: string,
    isWatch: boolean,
  ): T | undefined {
    const entry = rules.find(
      ({ rule, left }) =>
        left > 0 &&
        path.startsWith(rule.pathPrefix) &&
        (rule.method === undefined || rule.method.toUpperCase() === method) &&
        (rule.watch === undefined || rule.watch === isWatch),
    );
    if (entry === undefined) return undefined;
    entry.left--;
    return entry.rule;
  }

  /** Waits until `delay.times` requests of this rule have arrived, or `delay.ms` have passed. */
  private meet(delay: InjectedDelay): Promise<void> {
    const waiting = this.meetings.get(delay) ?? [];
    this.meetings.set(delay, waiting);
    return new Promise((resolve) => {
      waiting.push(resolve);
      if (waiting.length >= (delay.times ?? Infinity)) {
        for (const release of waiting.splice(0)) release();
      } else {
        this.after(delay.ms, resolve);
      }
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.after(ms, resolve));
  }

  /** A timer that close() cancels. */
  private after(ms: number, callback: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      callback();
    }, ms);
    this.timers.add(timer);
  }

  private bump(object: KubeObject): void {
    this.revision++;
    object.metadata.resourceVersion = String(this.revision);
  }

  private created(object: KubeObject): KubeObject {
    object.metadata.uid = randomUUID();
    object.metadata.creationTimestamp = timestamp();
    this.bump(object);
    return object;
  }

  private record(change: Omit<WatchEvent, 'revision'>): void {
    const event: WatchEvent = { ...change, revision: this.revision };
    this.history.push(event);
    const limit = this.options.historyLimit ?? 1000;
    while (this.history.length > limit) {
      const forgotten = this.history.shift();
      if (forgotten !== undefined) this.compactedThrough = forgotten.revision;
    }
    for (const watch of this.watches) {
      const line = eventFor(watch, event);
      if (line !== undefined) watch.res.write(line);
    }
  }

  private list(objects: Iterable<KubeObject>, query: URLSearchParams, namespace?: string) {
    let labels: LabelRequirement[];
    let fields: FieldRequirement[];
    try {
      labels = parseLabelSelector(query.get('labelSelector') ?? '');
      fields = parseFieldSelector(query.get('fieldSelector') ?? '');
    } catch (error) {
      throw new ApiError(400, (error as Error).message);
    }
    return [...objects]
      .filter((o) => namespace === undefined || o.metadata.namespace === namespace)
      .filter((o) => matchesLabelSelector(labels, o.metadata.labels))
      .filter((o) => fields.every((f) => (fieldValue(o, f.path) === f.value) === f.equal))
      .sort((a, b) =>
        key(a.metadata.namespace ?? '', a.metadata.name).localeCompare(
          key(b.metadata.namespace ?? '', b.metadata.name),
        ),
      );
  }

  // ----- nodes -----

  /** Every change of a node goes through here, so that node watchers see it. */
  private putNode(name: string, after: KubeObject): void {
    const before = this.nodes.get(name);
    this.nodes.set(name, after);
    if (before?.metadata.resourceVersion === after.metadata.resourceVersion) return;
    this.record({ resource: 'nodes', namespace: '', before, after, object: after });
  }

  private listNodes(call: Call): Reply | 'streamed' {
    if (call.query.get('watch') === 'true') {
      return this.openWatch(call, 'nodes', this.nodes.values(), undefined);
    }
    const items = this.list(this.nodes.values(), call.query);
    return { code: 200, body: listOf('NodeList', 'v1', items, this.revision) };
  }

  private readNode(call: Call): Reply {
    const [name = ''] = call.params;
    const node = this.nodes.get(name);
    if (node === undefined) throw notFound('nodes', name);
    return { code: 200, body: node };
  }

  private patchNode(call: Call): Reply {
    const [name = ''] = call.params;
    const contentType = call.contentType ?? '';
    this.patchLog.push({ node: name, contentType, body: call.body });
    const node = this.nodes.get(name);
    if (node === undefined) throw notFound('nodes', name);
    let patched: unknown;
    try {
      switch (contentType) {
        case 'application/merge-patch+json':
        case 'application/strategic-merge-patch+json':
          if (!isPlainObject(call.body)) throw new PatchError('a merge patch must be an object');
          this.checkPrecondition(node, call.body);
          patched = applyMergePatch(node, call.body);
          break;
        case 'application/json-patch+json':
          patched = applyJsonPatch(node, call.body);
          break;
        default:
          throw new ApiError(
            415,
            `the body of the request was in an unknown format: ${contentType}`,
          );
      }
    } catch (error) {
      if (error instanceof PatchError) throw new ApiError(422, error.message);
      throw error;
    }
    const result = patched as KubeObject;
    validateTaints(result);
    result.metadata = { ...result.metadata, name };
    if (node.metadata.resourceVersion !== undefined) {
      result.metadata.resourceVersion = node.metadata.resourceVersion;
    }
    // The real server keeps the resourceVersion when a patch changes nothing.
    if (JSON.stringify(result) !== JSON.stringify(node)) this.bump(result);
    this.putNode(name, result);
    return { code: 200, body: result };
  }

  /** A merge patch carrying metadata.resourceVersion is an optimistic-concurrency precondition. */
  private checkPrecondition(current: KubeObject, patch: Record<string, unknown>): void {
    const wanted = isPlainObject(patch.metadata) ? patch.metadata.resourceVersion : undefined;
    if (wanted !== undefined && wanted !== current.metadata.resourceVersion) {
      throw new ApiError(
        409,
        `Operation cannot be fulfilled on nodes "${current.metadata.name}": the object has been modified; please apply your changes to the latest version and try again`,
      );
    }
  }

  // ----- nodes/status and Events (the node condition and Events) -----

  /**
   * PATCH nodes/{name}/status: only status changes (the status strategy keeps spec and metadata),
   * and a strategic merge patch merges status.conditions by type, so a writer of one condition
   * leaves the kubelet's in place.
   */
  private patchNodeStatus(call: Call): Reply {
    const [name = ''] = call.params;
    const contentType = call.contentType ?? '';
    this.patchLog.push({ node: name, contentType, body: call.body, subresource: 'status' });
    const node = this.nodes.get(name);
    if (node === undefined) throw notFound('nodes', name);
    if (contentType !== 'application/strategic-merge-patch+json') {
      // A JSON merge patch would replace the whole conditions list: the exporter must not send one.
      throw new ApiError(
        415,
        `nodes/status accepts only a strategic merge patch here: ${contentType}`,
      );
    }
    if (!isPlainObject(call.body)) throw new ApiError(422, 'a merge patch must be an object');
    const result = structuredClone(node);
    result.status = applyStrategicStatus(node.status, call.body.status);
    if (JSON.stringify(result) !== JSON.stringify(node)) this.bump(result);
    this.putNode(name, result);
    return { code: 200, body: result };
  }

  private listEvents(call: Call): Reply {
    const items = this.list(this.eventObjects.values(), call.query, call.params[0]);
    return { code: 200, body: listOf('EventList', 'v1', items, this.revision) };
  }

  /**
   * core/v1 Event creation with the API server's validation of a series-less Event (no
   * eventTime): an Event about a cluster-scoped object (a Node) lives in the default namespace
   * (https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/).
   */
  private createEvent(call: Call): Reply {
    const [namespace = ''] = call.params;
    this.eventLog.push({ method: 'POST', namespace, body: structuredClone(call.body) });
    const body = call.body;
    if (!isPlainObject(body) || !isPlainObject(body.metadata)) {
      throw new ApiError(400, 'an Event needs metadata');
    }
    const name = body.metadata.name;
    if (typeof name !== 'string' || name === '') {
      throw new ApiError(422, 'Event "" is invalid: metadata.name: Required value');
    }
    const involved = isPlainObject(body.involvedObject) ? body.involvedObject : {};
    const involvedNamespace = typeof involved.namespace === 'string' ? involved.namespace : '';
    if (involvedNamespace === '' ? namespace !== 'default' : namespace !== involvedNamespace) {
      throw new ApiError(
        422,
        `Event "${name}" is invalid: involvedObject.namespace: Invalid value: "${involvedNamespace}": does not match event.namespace`,
      );
    }
    const id = key(namespace, name);
    if (this.eventObjects.has(id)) {
      throw new ApiError(409, `events "${name}" already exists`, 'AlreadyExists');
    }
    const event = structuredClone(body) as KubeObject;
    event.apiVersion = 'v1';
    event.kind = 'Event';
    event.metadata = { ...event.metadata, namespace };
    this.eventObjects.set(id, this.created(event));
    return { code: 201, body: event };
  }

  private patchEvent(call: Call): Reply {
    const [namespace = '', name = ''] = call.params;
    this.eventLog.push({ method: 'PATCH', namespace, name, body: structuredClone(call.body) });
    const id = key(namespace, name);
    const event = this.eventObjects.get(id);
    if (event === undefined) throw notFound('events', name);
    const contentType = call.contentType ?? '';
    if (
      contentType !== 'application/strategic-merge-patch+json' &&
      contentType !== 'application/merge-patch+json'
    ) {
      throw new ApiError(415, `the body of the request was in an unknown format: ${contentType}`);
    }
    // An Event's patchable fields (count, lastTimestamp, message) hold no lists: both merge alike.
    const patched = applyMergePatch(event, call.body) as KubeObject;
    patched.metadata = { ...patched.metadata, name, namespace };
    this.bump(patched);
    this.eventObjects.set(id, patched);
    return { code: 200, body: patched };
  }

  // ----- Leases (coordination.k8s.io/v1) -----

  private readLease(call: Call): Reply {
    const [namespace = '', name = ''] = call.params;
    const lease = this.leaseObjects.get(key(namespace, name));
    if (lease === undefined) throw notFound('leases.coordination.k8s.io', name);
    return { code: 200, body: lease };
  }

  private createLease(call: Call): Reply {
    const [namespace = ''] = call.params;
    const lease = leaseBody(call.body);
    const name = lease.metadata.name;
    const id = key(namespace, name);
    const holderIdentity = leaseHolder(lease);
    if (this.leaseObjects.has(id)) {
      this.leaseLog.push({ method: 'POST', name, holderIdentity, outcome: 'conflict' });
      throw new ApiError(
        409,
        `leases.coordination.k8s.io "${name}" already exists`,
        'AlreadyExists',
      );
    }
    // The server ignores a resourceVersion sent on create.
    delete lease.metadata.resourceVersion;
    lease.metadata = { ...lease.metadata, namespace };
    this.leaseObjects.set(id, this.created(lease));
    this.leaseLog.push({ method: 'POST', name, holderIdentity, outcome: 'ok' });
    return { code: 201, body: lease };
  }

  /**
   * An update is conditional on the resourceVersion it carries: a stale one is refused with 409
   * Conflict, which is what makes a Lease a lock.
   */
  private replaceLease(call: Call): Reply {
    const [namespace = '', name = ''] = call.params;
    const lease = leaseBody(call.body);
    const id = key(namespace, name);
    const current = this.leaseObjects.get(id);
    if (current === undefined) throw notFound('leases.coordination.k8s.io', name);
    const holderIdentity = leaseHolder(lease);
    const wanted = lease.metadata.resourceVersion;
    if (wanted !== undefined && wanted !== current.metadata.resourceVersion) {
      this.leaseLog.push({ method: 'PUT', name, holderIdentity, outcome: 'conflict' });
      throw new ApiError(
        409,
        `Operation cannot be fulfilled on leases.coordination.k8s.io "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        'Conflict',
      );
    }
    lease.metadata = { ...current.metadata, ...lease.metadata, name, namespace };
    this.bump(lease);
    this.leaseObjects.set(id, lease);
    this.leaseLog.push({ method: 'PUT', name, holderIdentity, outcome: 'ok' });
    return { code: 200, body: lease };
  }

  // ----- pods -----

  private listPods(call: Call): Reply {
    const items = this.list(this.pods.values(), call.query, call.params[0]);
    return { code: 200, body: listOf('PodList', 'v1', items, this.revision) };
  }

  private readPod(call: Call): Reply {
    const [namespace = '', name = ''] = call.params;
    const pod = this.pods.get(key(namespace, name));
    if (pod === undefined) throw notFound('pods', name);
    return { code: 200, body: pod };
  }

  // ----- EndpointSlices -----

  private listSlices(call: Call): Reply | 'streamed' {
    const namespace = call.params[0];
    if (call.query.get('watch') === 'true') return this.watchSlices(call, namespace);
    const items = this.list(this.slices.values(), call.query, namespace);
    return {
      code: 200,
      body: listOf('EndpointSliceList', 'discovery.k8s.io/v1', items, this.revision),
    };
  }

  private readSlice(call: Call): Reply {
    const [namespace = '', name = ''] = call.params;
    const slice = this.slices.get(key(namespace, name));
    if (slice === undefined) throw notFound('endpointslices.discovery.k8s.io', name);
    return { code: 200, body: slice };
  }

  /**
   * Without a resourceVersion (or with "0") the watch starts with ADDED for every current slice,
   * as the real server does; with one it replays the kept events newer than it.
   */
  private watchSlices(call: Call, namespace: string | undefined): Reply | 'streamed' {
    return this.openWatch(call, 'endpointslices', this.slices.values(), namespace);
  }

  private openWatch(
    call: Call,
    resource: WatchedResource,
    current: Iterable<KubeObject>,
    namespace: string | undefined,
  ): Reply | 'streamed' {
    let selector: LabelRequirement[];
    let fields: FieldRequirement[];
    try {
      selector = parseLabelSelector(call.query.get('labelSelector') ?? '');
      fields = parseFieldSelector(call.query.get('fieldSelector') ?? '');
    } catch (error) {
      throw new ApiError(400, (error as Error).message);
    }
    this.watchCount++;
    const from = call.query.get('resourceVersion') ?? '';
    const since = from === '' || from === '0' ? undefined : Number(from);
    if (since !== undefined && !Number.isSafeInteger(since)) {
      throw new ApiError(400, `invalid resource version ${JSON.stringify(from)}`);
    }
    if (since !== undefined && since < this.compactedThrough) {
      const expired = statusBody(
        410,
        `too old resource version: ${since} (${this.compactedThrough + 1})`,
        'Expired',
      );
      if (this.options.expiredWatch === 'status') return { code: 410, body: expired };
      call.res.writeHead(200, { 'content-type': 'application/json' });
      call.res.end(JSON.stringify({ type: 'ERROR', object: expired }) + '\n');
      return 'streamed';
    }

    const watch: OpenWatch = { resource, namespace, selector, fields, res: call.res };
    call.res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    call.res.flushHeaders();
    const backlog: WatchEvent[] =
      since === undefined
        ? this.list(current, new URLSearchParams(), namespace).map((object) => ({
            revision: this.revision,
            resource,
            namespace: object.metadata.namespace ?? '',
            before: undefined,
            after: object,
            object,
          }))
        : this.history.filter((e) => e.revision > since);
    for (const event of backlog) {
      const line = eventFor(watch, event);
      if (line !== undefined) call.res.write(line);
    }
    this.watches.add(watch);
    call.res.on('close', () => this.watches.delete(watch));
    const timeoutSeconds = Number(call.query.get('timeoutSeconds') ?? '');
    if (timeoutSeconds > 0) {
      this.after(timeoutSeconds * 1000, () => {
        this.watches.delete(watch);
        call.res.end();
      });
    }
    return 'streamed';
  }

  // ----- PersistentVolumeClaims -----

  private listClaims(call: Call): Reply {
    const items = this.list(this.claims.values(), call.query, call.params[0]);
    return { code: 200, body: listOf('PersistentVolumeClaimList', 'v1', items, this.revision) };
  }

  private readClaim(call: Call): Reply {
    const [namespace = '', name = ''] = call.params;
    const claim = this.claims.get(key(namespace, name));
    if (claim === undefined) throw notFound('persistentvolumeclaims', name);
    return { code: 200, body: claim };
  }

  private createClaim(call: Call): Reply {
    const [namespace = ''] = call.params;
    const body = call.body;
    if (!isPlainObject(body) || !isPlainObject(body.metadata)) {
      throw new ApiError(400, 'a PersistentVolumeClaim needs metadata');
    }
    const name = body.metadata.name;
    if (typeof name !== 'string' || name === '') {
      throw new ApiError(422, 'PersistentVolumeClaim "" is invalid: metadata.name: Required value');
    }
    const id = key(namespace, name);
    if (this.claims.has(id)) {
      throw new ApiError(409, `persistentvolumeclaims "${name}" already exists`, 'AlreadyExists');
    }
    const claim = structuredClone(body) as KubeObject;
    claim.apiVersion = 'v1';
    claim.kind = 'PersistentVolumeClaim';
    claim.metadata = { ...claim.metadata, namespace, finalizers: ['kubernetes.io/pvc-protection'] };
    claim.status = { phase: 'Pending' };
    this.claims.set(id, this.created(claim));
    this.createdClaims.push(id);
    this.scheduleBinding(id, claim);
    return { code: 201, body: claim };
  }

  /** The simulated provisioner: binds after the class's delay unless it never binds. */
  private scheduleBinding(id: string, claim: KubeObject): void {
    const spec = isPlainObject(claim.spec) ? claim.spec : {};
    const className = typeof spec.storageClassName === 'string' ? spec.storageClassName : '';
    const storageClass = this.storageClasses.get(className);
    const binder = this.binders.get(className);
    if (storageClass === undefined || binder === undefined || binder === 'never') return;
    if (storageClass.volumeBindingMode === 'WaitForFirstConsumer') return;
    const uid = claim.metadata.uid;
    this.after(binder.bindAfterMs, () => {
      const current = this.claims.get(id);
      if (current === undefined || current.metadata.uid !== uid) return;
      if (current.metadata.deletionTimestamp !== undefined) return;
      const resources = isPlainObject(spec.resources) ? spec.resources : {};
      const bound = structuredClone(current);
      bound.spec = { ...(bound.spec as object), volumeName: `pvc-${uid}` };
      bound.status = {
        phase: 'Bound',
        accessModes: spec.accessModes ?? [],
        capacity: isPlainObject(resources.requests) ? resources.requests : {},
      };
      this.bump(bound);
      this.claims.set(id, bound);
    });
  }

  private deleteClaim(call: Call): Reply {
    const [namespace = '', name = ''] = call.params;
    const id = key(namespace, name);
    const claim = this.claims.get(id);
    if (claim === undefined) throw notFound('persistentvolumeclaims', name);
    if (claim.metadata.deletionTimestamp !== undefined) return { code: 200, body: claim };
    const deleting = structuredClone(claim);
    deleting.metadata.deletionTimestamp = timestamp();
    deleting.metadata.deletionGracePeriodSeconds = 0;
    this.bump(deleting);
    this.deletedClaims.push(id);
    if (this.pvcDeletionDelayMs <= 0) {
      this.claims.delete(id);
    } else {
      this.claims.set(id, deleting);
      this.after(this.pvcDeletionDelayMs, () => {
        if (this.claims.get(id)?.metadata.uid === deleting.metadata.uid) this.claims.delete(id);
      });
    }
    return { code: 200, body: deleting };
  }

  // ----- Jobs -----

  private listJobs(call: Call): Reply {
    const items = this.list(this.jobObjects.values(), call.query, call.params[0]);
    return { code: 200, body: listOf('JobList', 'batch/v1', items, this.revision) };
  }

  private readJob(call: Call): Reply {
    const [namespace = '', name = ''] = call.params;
    const job = this.jobObjects.get(key(namespace, name));
    if (job === undefined) throw notFound('jobs.batch', name);
    return { code: 200, body: job };
  }

  /** Stores the Job and, as the Job controller would at once, creates its one pod. */
  private createJob(call: Call): Reply {
    const [namespace = ''] = call.params;
    const body = call.body;
    this.jobLog.push(structuredClone(body));
    if (!isPlainObject(body) || !isPlainObject(body.metadata)) {
      throw new ApiError(400, 'a Job needs metadata');
    }
    const name = body.metadata.name;
    if (typeof name !== 'string' || name === '') {
      throw new ApiError(422, 'Job.batch "" is invalid: metadata.name: Required value');
    }
    const spec = isPlainObject(body.spec) ? body.spec : {};
    const template = isPlainObject(spec.template) ? spec.template : {};
    const podSpec = isPlainObject(template.spec) ? template.spec : undefined;
    const containers = podSpec?.containers;
    if (podSpec === undefined || !Array.isArray(containers) || containers.length === 0) {
      throw new ApiError(
        422,
        `Job.batch "${name}" is invalid: spec.template.spec.containers: Required value`,
      );
    }
    if (podSpec.restartPolicy !== 'Never' && podSpec.restartPolicy !== 'OnFailure') {
      throw new ApiError(
        422,
        `Job.batch "${name}" is invalid: spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"`,
      );
    }
    const id = key(namespace, name);
    if (this.jobObjects.has(id)) {
      throw new ApiError(409, `jobs.batch "${name}" already exists`, 'AlreadyExists');
    }
    const job = this.created(structuredClone(body) as KubeObject);
    const uid = job.metadata.uid ?? '';
    const controllerLabels = {
      'batch.kubernetes.io/controller-uid': uid,
      'batch.kubernetes.io/job-name': name,
      'controller-uid': uid,
      [JOB_NAME_LABEL]: name,
    };
    const templateMeta = isPlainObject(template.metadata) ? template.metadata : {};
    const podLabels = {
      ...(isPlainObject(templateMeta.labels) ? templateMeta.labels : {}),
      ...controllerLabels,
    } as Record<string, string>;
    job.apiVersion = 'batch/v1';
    job.kind = 'Job';
    job.metadata = { ...job.metadata, namespace };
    job.spec = {
      ...spec,
      selector: { matchLabels: { 'batch.kubernetes.io/controller-uid': uid } },
      template: { ...template, metadata: { ...templateMeta, labels: podLabels } },
    };
    job.status = { active: 1, ready: 0, startTime: timestamp() };
    this.jobObjects.set(id, job);

    const podName = `${name}-${nameSuffix()}`;
    const pod: KubeObject = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: podName,
        namespace,
        labels: podLabels,
        ownerReferences: [{ apiVersion: 'batch/v1', kind: 'Job', name, uid, controller: true }],
      },
      spec: structuredClone(podSpec),
      status: { phase: 'Pending' },
    };
    this.pods.set(key(namespace, podName), this.created(pod));
    return { code: 201, body: job };
  }

  /**
   * Without propagationPolicy Background or Foreground, the pods are orphaned, as the real server
   * does for batch/v1 Jobs, so a test sees the pods a careless delete would leave running.
   */
  private deleteJob(call: Call): Reply {
    const [namespace = '', name = ''] = call.params;
    const id = key(namespace, name);
    const job = this.jobObjects.get(id);
    if (job === undefined) throw notFound('jobs.batch', name);
    const policy = call.query.get('propagationPolicy');
    const pods = this.podsOfJob(namespace, name);
    if (policy === 'Background' || policy === 'Foreground') {
      for (const pod of pods) this.pods.delete(pod);
    } else {
      for (const pod of pods) delete this.pods.get(pod)?.metadata.ownerReferences;
    }
    this.jobObjects.delete(id);
    const deleted = structuredClone(job);
    deleted.metadata.deletionTimestamp = timestamp();
    this.bump(deleted);
    return { code: 200, body: deleted };
  }

  /** Keys of the pods a Job owns. */
  private podsOfJob(namespace: string, jobName: string): string[] {
    const uid = this.jobObjects.get(key(namespace, jobName))?.metadata.uid;
    return [...this.pods.entries()]
      .filter(([, pod]) => {
        const owners = pod.metadata.ownerReferences;
        return (
          pod.metadata.namespace === namespace &&
          Array.isArray(owners) &&
          owners.some((owner) => isPlainObject(owner) && owner.kind === 'Job' && owner.uid === uid)
        );
      })
      .map(([id]) => id);
  }

  /** Merges `status` into the object's status and bumps its resourceVersion. */
  private updateStatus(
    objects: Map<string, KubeObject>,
    id: string,
    status: Record<string, unknown>,
  ): void {
    const current = objects.get(id);
    if (current === undefined) return;
    const updated = structuredClone(current);
    updated.status = { ...(isPlainObject(updated.status) ? updated.status : {}), ...status };
    this.bump(updated);
    objects.set(id, updated);
  }

  // ----- StorageClasses -----

  private listStorageClasses(call: Call): Reply {
    const items = this.list(this.storageClasses.values(), call.query);
    return {
      code: 200,
      body: listOf('StorageClassList', 'storage.k8s.io/v1', items, this.revision),
    };
  }

  private readStorageClass(call: Call): Reply {
    const [name = ''] = call.params;
    const storageClass = this.storageClasses.get(name);
    if (storageClass === undefined) throw notFound('storageclasses.storage.k8s.io', name);
    return { code: 200, body: storageClass };
  }

  // ----- reviews -----

  /**
   * Who the request's bearer token is (authentication.k8s.io/v1 SelfSubjectReview, GA in 1.28);
   * 401 for a token addToken did not name, as the real server answers an unknown one.
   */
  private reviewSelf(call: Call): Reply {
    const header = call.req.headers.authorization ?? '';
    const user = this.tokens.get(header.replace(/^Bearer\s+/i, ''));
    if (user === undefined) throw new ApiError(401, 'Unauthorized');
    return {
      code: 201,
      body: {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'SelfSubjectReview',
        metadata: { creationTimestamp: timestamp() },
        status: {
          userInfo: {
            username: user.username,
            groups: [...(user.groups ?? []), 'system:authenticated'],
          },
        },
      },
    };
  }

  private reviewToken(call: Call): Reply {
    const spec = isPlainObject(call.body) && isPlainObject(call.body.spec) ? call.body.spec : {};
    const token = typeof spec.token === 'string' ? spec.token : '';
    this.tokenReviewLog.push(token);
    const user = this.tokens.get(token);
    const status =
      user === undefined
        ? { authenticated: false, error: 'invalid bearer token' }
        : {
            authenticated: true,
            user: {
              username: user.username,
              ...(user.uid === undefined ? {} : { uid: user.uid }),
              groups: [...(user.groups ?? []), 'system:authenticated'],
            },
          };
    return {
      code: 201,
      body: {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenReview',
        metadata: { creationTimestamp: null },
        spec,
        status,
      },
    };
  }

  private reviewAccess(call: Call): Reply {
    const spec = isPlainObject(call.body) && isPlainObject(call.body.spec) ? call.body.spec : {};
    this.accessReviewLog.push(structuredClone(spec));
    const groups = Array.isArray(spec.groups) ? (spec.groups as unknown[]) : [];
    const attributes = isPlainObject(spec.resourceAttributes) ? spec.resourceAttributes : undefined;
    const wildcard = (granted: string, asked: unknown) =>
      granted === '*' || granted === (asked ?? '');
    const index =
      attributes === undefined
        ? -1
        : this.rules.findIndex(
            (rule) =>
              ('user' in rule ? rule.user === spec.user : groups.includes(rule.group)) &&
              wildcard(rule.verb, attributes.verb) &&
              wildcard(rule.resource, attributes.resource) &&
              wildcard(rule.apiGroup, attributes.group) &&
              (rule.name === undefined || rule.name === attributes.name),
          );
    const status =
      index < 0
        ? { allowed: false, reason: 'no fake RBAC rule allows this request' }
        : { allowed: true, reason: `allowed by fake RBAC rule ${index}` };
    return {
      code: 201,
      body: {
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SubjectAccessReview',
        metadata: { creationTimestamp: null },
        spec,
        status,
      },
    };
  }
}

/** The first container's status with this state, named as in the pod's spec. */
function containerStatus(pod: KubeObject | undefined, state: Record<string, unknown>) {
  const spec = pod !== undefined && isPlainObject(pod.spec) ? pod.spec : {};
  const first: unknown = Array.isArray(spec.containers) ? spec.containers[0] : undefined;
  const container = isPlainObject(first) ? first : {};
  return {
    name: typeof container.name === 'string' ? container.name : 'main',
    image: typeof container.image === 'string' ? container.image : '',
    imageID: '',
    ready: 'running' in state,
    restartCount: 0,
    started: 'running' in state,
    state,
  };
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, reply: Reply): void {
  if (res.destroyed || res.writableEnded) return;
  const text = JSON.stringify(reply.body);
  res.writeHead(reply.code, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

/** Starts a fake API server on 127.0.0.1 on a free port; close() it after the test. */
export async function startFakeKubeApi(options: FakeKubeApiOptions = {}): Promise<FakeKubeApi> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, options.host ?? '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return new FakeKubeApi(server, `http://${options.host ?? '127.0.0.1'}:${port}`, options);
}

/**
 * Writes `<dir>/kubeconfig` naming `server` with a bearer token, and returns its path. JSON is
 * YAML, which is what a kubeconfig file is; the fake speaks plain HTTP, which client-node accepts
 * only with TLS checks off.
 */
export function writeKubeconfig(dir: string, server: string, token = 'exporter-sa-token'): string {
  const path = join(dir, 'kubeconfig');
  writeFileSync(
    path,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'fake', cluster: { server, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'autopilot', user: { token } }],
      contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'autopilot' } }],
      'current-context': 'fake',
    }),
  );
  return path;
}
