/**
 * Cluster-wide /status: which nodes a request selects (host, job, nodelabel: a union, as in
 * Autopilot), which Autopilot pod answers for each, and asking them all with bounded concurrency
 * and a deadline each. Every selected node gets a report: answered, refused, unreachable, not ready
 * or without an Autopilot pod. None is skipped in silence (Autopilot dropped not-ready pods).
 */

import { forEachBounded } from '../concurrency.js';
import { urlHost } from '../net-names.js';
import { ParamError } from '../checks/check.js';
import type { NodeReport, RemoteRun } from './fanout-report.js';
import type { HttpAnswer, HttpGet } from './http-get.js';
import type { Peer } from './peer-directory.js';
import type { KubeApi } from '../k8s/ports.js';
import { KubeError } from '../k8s/ports.js';

export interface Selection {
  /** Node names, or 'all' for every node with an Autopilot pod. */
  readonly hosts: readonly string[] | 'all';
  /** Nodes running pods of this workload. */
  readonly job: { readonly namespace: string; readonly selector: string } | undefined;
  /** Nodes carrying these labels. */
  readonly nodelabel: string | undefined;
}

export interface ResolvedTargets {
  /** Sorted, without duplicates. */
  readonly nodes: readonly string[];
  /** A selector that matched nothing, said in the report rather than failing the request. */
  readonly notes: readonly string[];
}

/** The union of what the selection names. A selector the API server rejects is a ParamError. */
export async function resolveTargets(
  selection: Selection,
  kube: KubeApi,
  peers: readonly Peer[],
): Promise<ResolvedTargets> {
  const nodes = new Set<string>();
  const notes: string[] = [];
  const narrowed = selection.job !== undefined || selection.nodelabel !== undefined;
  // As in Autopilot, host=all with a job or nodelabel means "those nodes", not "every node too".
  if (selection.hosts === 'all') {
    if (!narrowed) for (const peer of peers) if (peer.node !== undefined) nodes.add(peer.node);
  } else {
    for (const host of selection.hosts) nodes.add(host);
  }
  if (selection.job !== undefined) {
    const { namespace, selector } = selection.job;
    const pods = await asParamError('job', () => kube.listPods(namespace, selector));
    const scheduled = pods.filter((pod) => pod.nodeName !== undefined);
    if (scheduled.length === 0) notes.push(`No workload labeled with ${selector} in ${namespace}.`);
    for (const pod of scheduled) nodes.add(pod.nodeName!);
  }
  if (selection.nodelabel !== undefined) {
    const labelled = await asParamError('nodelabel', () => kube.listNodes(selection.nodelabel!));
    if (labelled.length === 0) notes.push(`No node is labeled with ${selection.nodelabel}.`);
    for (const node of labelled) nodes.add(node.name);
  }
  return { nodes: [...nodes].sort(), notes };
}

/** The API server's 400 for a malformed selector is the caller's error, said as such. */
async function asParamError<T>(name: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof KubeError && error.status === 400) {
      throw new ParamError(`${name}: the Kubernetes API rejected the selector: ${error.detail}`);
    }
    throw error;
  }
}

export interface PlannedNode {
  readonly node: string;
  /** The pod that will be asked; undefined when none can be. */
  readonly peer: Peer | undefined;
  readonly url: string | undefined;
  /** Set when the node is reported without being asked. */
  readonly unasked:
    { readonly outcome: 'no-endpoint' | 'not-ready'; readonly detail: string } | undefined;
}

export interface RemoteQuery {
  readonly checks: readonly string[];
  /** Forwarded parameters (r, pingnodes), already validated. */
  readonly params: Readonly<Record<string, string>>;
}

/** Pure: the pod and URL for every node; a ready pod is preferred to a not-ready one. */
export function planNodes(
  nodes: readonly string[],
  peers: readonly Peer[],
  query: RemoteQuery,
  defaultPort: number,
): PlannedNode[] {
  // Indexed once: a scan of every peer for every node is 10^8 comparisons at 10,000 nodes.
  const chosen = new Map<string, Peer>();
  for (const peer of peers) {
    if (peer.node === undefined) continue;
    const held = chosen.get(peer.node);
    if (held === undefined || (!held.ready && peer.ready)) chosen.set(peer.node, peer);
  }
  return nodes.map((node) => {
    const peer = chosen.get(node);
    if (peer === undefined) {
      return {
        node,
        peer: undefined,
        url: undefined,
        unasked: { outcome: 'no-endpoint', detail: 'no Autopilot pod on this node' },
      };
    }
    const url = statusUrl(peer, node, query, defaultPort);
    if (!peer.ready) {
      return {
        node,
        peer,
        url,
        unasked: {
          outcome: 'not-ready',
          detail: `pod ${peer.pod ?? peer.address} is not ready`,
        },
      };
    }
    return { node, peer, url, unasked: undefined };
  });
}

export function statusUrl(
  peer: Peer,
  node: string,
  query: RemoteQuery,
  defaultPort: number,
): string {
  const host = urlHost(peer.address);
  const search = new URLSearchParams({ host: node, check: query.checks.join(',') });
  for (const [name, value] of Object.entries(query.params)) search.set(name, value);
  return `http://${host}:${peer.port ?? defaultPort}/status?${search.toString()}`;
}

/**
 * Marks a request one node sends another on behalf of a cluster-wide /status. A node that gets
 * one for a host other than itself refuses it instead of fanning out again, so a node name that
 * differs between the EndpointSlice and the pod's NODE_NAME cannot loop.
 */
export const FANOUT_HEADER = 'x-autopilot-fanout-from';

export interface AskDeps {
  readonly fetch: HttpGet;
  readonly now: () => number;
  /** This node answers in process, not over HTTP. */
  readonly nodeName: string;
  readonly askSelf: (signal: AbortSignal) => Promise<SelfAnswer>;
}

export interface SelfAnswer {
  readonly health: { readonly state: string; readonly reasons: readonly string[] };
  readonly runs: readonly RemoteRun[];
}

export interface AskOptions {
  readonly deadlineMs: number;
  readonly concurrency: number;
  /** Forwarded, so each node can authorise the caller for protected checks. */
  readonly authorization: string | undefined;
  readonly signal: AbortSignal;
  /** Takes each node's report as it finishes; the fan-out keeps nothing of it afterwards. */
  readonly onReport: (report: NodeReport) => void;
  /**
   * Resolves when the reader can take more. No further node is asked before it does, so a slow
   * reader holds at most the answers already asked for, not the whole cluster's in a buffer.
   */
  readonly ready?: () => Promise<void>;
}

/**
 * Asks every planned node, at most `concurrency` at once, handing each report to onReport as it
 * finishes. Resolves with the number of nodes reported: the reports themselves are not kept, so
 * memory does not grow with the cluster (10,000 answers with their texts would).
 */
export async function askNodes(
  planned: readonly PlannedNode[],
  deps: AskDeps,
  options: AskOptions,
): Promise<number> {
  let reported = 0;
  const report = (value: NodeReport): void => {
    reported += 1;
    options.onReport(value);
  };
  const asked: PlannedNode[] = [];
  for (const plan of planned) {
    if (plan.unasked === undefined) asked.push(plan);
    else {
      report({
        node: plan.node,
        endpoint: endpointOf(plan),
        url: plan.url,
        outcome: plan.unasked.outcome,
        httpStatus: undefined,
        detail: plan.unasked.detail,
        health: undefined,
        runs: [],
        durationSeconds: 0,
      });
    }
  }
  // Each worker asks one node at a time, so a dead node holds one worker for its deadline and
  // the others go on through the list.
  await forEachBounded(
    asked,
    { limit: options.concurrency, signal: options.signal, ready: options.ready },
    async (plan) => report(await askOne(plan, deps, options)),
  );
  return reported;
}

/**
 * The node's deadline, undone as soon as it has answered. AbortSignal.timeout would keep a timer
 * and its signal for the whole deadline (75 s for ping) after a 100 ms answer: at 10,000 nodes,
 * thousands of them at once.
 */
async function askOne(plan: PlannedNode, deps: AskDeps, options: AskOptions): Promise<NodeReport> {
  const deadline = new AbortController();
  const timer = setTimeout(
    () => deadline.abort(new Error('the deadline passed')),
    options.deadlineMs,
  );
  const stop = (): void => deadline.abort(options.signal.reason);
  options.signal.addEventListener('abort', stop, { once: true });
  try {
    return await askWithin(plan, deps, options, deadline.signal);
  } finally {
    clearTimeout(timer);
    options.signal.removeEventListener('abort', stop);
  }
}

async function askWithin(
  plan: PlannedNode,
  deps: AskDeps,
  options: AskOptions,
  signal: AbortSignal,
): Promise<NodeReport> {
  const started = deps.now();
  const base = { node: plan.node, endpoint: endpointOf(plan), url: plan.url };
  const elapsed = (): number => (deps.now() - started) / 1000;
  const failure = (
    outcome: 'unreachable' | 'refused',
    detail: string,
    httpStatus?: number,
  ): NodeReport => ({
    ...base,
    outcome,
    httpStatus,
    detail,
    health: undefined,
    runs: [],
    durationSeconds: elapsed(),
  });
  const timedOut = (): string =>
    `no answer within ${Number((options.deadlineMs / 1000).toFixed(1))} s`;

  if (plan.node === deps.nodeName) {
    try {
      const answer = await deps.askSelf(signal);
      return {
        ...base,
        outcome: 'answered',
        httpStatus: undefined,
        detail: '',
        ...answer,
        durationSeconds: elapsed(),
      };
    } catch (error) {
      return failure('refused', error instanceof Error ? error.message : String(error));
    }
  }

  let response: HttpAnswer;
  let body: string;
  try {
    response = await deps.fetch(plan.url!, {
      headers: {
        accept: 'application/json',
        [FANOUT_HEADER]: deps.nodeName,
        ...(options.authorization === undefined ? {} : { authorization: options.authorization }),
      },
      signal,
    });
    body = await response.text();
  } catch (error) {
    if (signal.aborted && !options.signal.aborted) return failure('unreachable', timedOut());
    return failure('unreachable', networkReason(error));
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    parsed = undefined;
  }
  if (!response.ok) {
    const message = (parsed as { error?: unknown } | undefined)?.error;
    return failure(
      'refused',
      `${response.status}: ${typeof message === 'string' ? message : body.trim().slice(0, 300)}`,
      response.status,
    );
  }
  const answer = readAnswer(parsed);
  if (answer === undefined) {
    return failure(
      'refused',
      `answered ${response.status} with something that is not Autopilot JSON`,
      response.status,
    );
  }
  return {
    ...base,
    outcome: 'answered',
    httpStatus: response.status,
    detail: '',
    ...answer,
    durationSeconds: elapsed(),
  };
}

function endpointOf(plan: PlannedNode): string | undefined {
  if (plan.peer === undefined) return undefined;
  const host = urlHost(plan.peer.address);
  return plan.peer.port === undefined ? host : `${host}:${plan.peer.port}`;
}

/** The global fetch says "fetch failed" and keeps the reason in its cause; node:http says it. */
function networkReason(error: unknown): string {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } }).cause;
  if (typeof cause?.message === 'string' && cause.message !== '') return cause.message;
  return error instanceof Error ? error.message : String(error);
}

/** Pure: a node's JSON answer (as /status?format=json writes it), or undefined if it is not one. */
export function readAnswer(value: unknown): SelfAnswer | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { health, results } = value as { health?: unknown; results?: unknown };
  if (!Array.isArray(results) || typeof health !== 'object' || health === null) return undefined;
  const state = (health as { state?: unknown }).state;
  const reasons = (health as { reasons?: unknown }).reasons;
  if (typeof state !== 'string') return undefined;
  const runs: RemoteRun[] = [];
  for (const result of results as unknown[]) {
    const { check, verdict, reason, text } = (result ?? {}) as Record<string, unknown>;
    if (typeof check !== 'string' || typeof verdict !== 'string') return undefined;
    if (!['PASS', 'WARN', 'FAIL', 'SKIP', 'ERROR'].includes(verdict)) return undefined;
    runs.push({
      check,
      verdict: verdict as RemoteRun['verdict'],
      reason: typeof reason === 'string' ? reason : '',
      text: typeof text === 'string' ? text : '',
    });
  }
  return {
    health: {
      state,
      reasons: Array.isArray(reasons)
        ? reasons.filter((r): r is string => typeof r === 'string')
        : [],
    },
    runs,
  };
}
