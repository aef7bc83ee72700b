/**
 * `autopilot ack <node>`: lifts a node's EVICT from any machine with a kubeconfig, in one step.
 *
 * How: the command writes the annotation autopilot.ibm.com/acknowledge on the Node with the
 * caller's own credentials, then waits until the node's exporter, which watches its Node, has
 * taken the request (the annotation is gone) and the gpuhealth label has left EVICT. The API
 * server authenticates and authorises the caller (RBAC: patch nodes); nothing here holds or makes
 * a token, and no port-forward is needed. Going through the API server's pod proxy to the
 * exporter's POST /acknowledge was the alternative: the proxy does not pass the caller's identity
 * on, so the exporter could not tell who asked, and pods/proxy is a far wider grant.
 *
 * A request no exporter takes within --timeout is withdrawn: left on the node, an exporter that
 * starts hours later would lift an EVICT that nobody is waiting on any more, perhaps after a new
 * fatal finding. It is removed only while it is still this command's own value, under a
 * resourceVersion precondition, so an exporter taking it or a person's newer request is never
 * undone.
 */

import type { KubeApi, NodeInfo } from './k8s/ports.js';
import { KubeError } from './k8s/ports.js';
import { parseGoDuration } from './config/duration.js';

const GPUHEALTH_LABEL = 'autopilot.ibm.com/gpuhealth';
/** The same keys as cluster/node-watch.ts, which the CLI does not import (it runs off-cluster). */
export const ACK_REQUEST_ANNOTATION = 'autopilot.ibm.com/acknowledge';
const ACK_RECORD_ANNOTATION = 'autopilot.ibm.com/acknowledged';

/** 0 lifted (or nothing to lift), 1 not lifted in time, 2 bad usage, 3 the API refused or failed. */
export const ACK_EXIT = { lifted: 0, notLifted: 1, usage: 2, apiError: 3 } as const;

export interface AckOptions {
  readonly node: string;
  readonly reason: string;
  readonly timeoutMs: number;
}

/** Pure: the command's options, or an Error naming the bad one. */
export function parseAckOptions(node: string, options: ReadonlyMap<string, string>): AckOptions {
  const timeout = options.get('timeout') ?? '';
  const timeoutMs = parseGoDuration(timeout);
  if (timeoutMs === undefined || timeoutMs <= 0) {
    throw new Error(`invalid --timeout ${JSON.stringify(timeout)}: expected a duration such as 2m`);
  }
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(node) || node.length > 253) {
    throw new Error(`invalid node name ${JSON.stringify(node)}: expected a DNS subdomain`);
  }
  return { node, reason: options.get('reason') ?? '', timeoutMs };
}

/** Pure: what the annotation says: when, who, and why, for the exporter's audit line. */
export function ackRequest(at: number, who: string, reason: string): string {
  const when = new Date(at).toISOString().replace(/\.\d{3}Z$/, 'Z');
  return `${when} by ${who}${reason === '' ? '' : `: ${reason}`}`;
}

export interface AckDeps {
  readonly kube: KubeApi;
  readonly whoAmI: () => Promise<string>;
  readonly now: () => number;
  readonly sleep: (ms: number) => Promise<void>;
  /** One line of the report. */
  readonly print: (line: string) => void;
  readonly pollMs?: number;
}

/** Runs the command; resolves to its exit code (ACK_EXIT). */
export async function acknowledgeNode(options: AckOptions, deps: AckDeps): Promise<number> {
  const { node } = options;
  try {
    const before = await deps.kube.getNode(node);
    const state = before.labels[GPUHEALTH_LABEL];
    if (state !== 'EVICT') {
      deps.print(`${node}: gpuhealth is ${state ?? 'not set'}, not EVICT; nothing to acknowledge`);
      return ACK_EXIT.lifted;
    }
    const request = ackRequest(deps.now(), await deps.whoAmI(), options.reason);
    await deps.kube.patchNodeMetadata(node, {
      annotations: { [ACK_REQUEST_ANNOTATION]: request },
    });
    deps.print(
      `${node}: asked its exporter to lift the EVICT (${ACK_REQUEST_ANNOTATION}: ${request})`,
    );
    return await waitForLift(options, deps, request);
  } catch (error) {
    const message = error instanceof KubeError ? error.message : String(error);
    deps.print(`${node}: ${message}`);
    return ACK_EXIT.apiError;
  }
}

async function waitForLift(options: AckOptions, deps: AckDeps, request: string): Promise<number> {
  const deadline = deps.now() + options.timeoutMs;
  let node: NodeInfo;
  for (;;) {
    node = await deps.kube.getNode(options.node);
    const taken = node.annotations[ACK_REQUEST_ANNOTATION] !== request;
    const label = node.labels[GPUHEALTH_LABEL];
    if (taken && label !== 'EVICT') {
      deps.print(`${options.node}: EVICT lifted; gpuhealth is now ${label ?? 'not set'}`);
      const record = node.annotations[ACK_RECORD_ANNOTATION];
      if (record !== undefined) deps.print(`${options.node}: ${ACK_RECORD_ANNOTATION}: ${record}`);
      return ACK_EXIT.lifted;
    }
    if (deps.now() >= deadline) {
      if (!taken) {
        const withdrawn = await withdrawOnTimeout(options, deps, request);
        // Taken at the last moment: one more look, since the label follows the exporter's take.
        if (withdrawn === 'taken') continue;
        if (withdrawn !== 'withdrawn') return withdrawn;
      }
      deps.print(notLifted(options, taken));
      return ACK_EXIT.notLifted;
    }
    await deps.sleep(deps.pollMs ?? 1000);
  }
}

/** Conflicting writes tolerated before giving up on withdrawing the request. */
const WITHDRAW_ATTEMPTS = 5;

/**
 * Removes the request annotation while it is still `request`: a merge patch carrying the
 * resourceVersion read, so the API server refuses it (409) if the node moved on; then the node is
 * read again. 'taken' when the annotation no longer holds this request.
 */
export async function withdraw(
  kube: KubeApi,
  node: string,
  request: string,
): Promise<'withdrawn' | 'taken'> {
  for (let attempt = 1; ; attempt++) {
    const current = await kube.getNode(node);
    if (current.annotations[ACK_REQUEST_ANNOTATION] !== request) return 'taken';
    if (current.resourceVersion === undefined) {
      throw new Error(`cannot withdraw the request: node ${node} has no resourceVersion`);
    }
    try {
      await kube.patchNodeMetadata(node, {
        resourceVersion: current.resourceVersion,
        annotations: { [ACK_REQUEST_ANNOTATION]: null },
      });
      return 'withdrawn';
    } catch (error) {
      if (!(error instanceof KubeError && error.status === 409) || attempt >= WITHDRAW_ATTEMPTS) {
        throw error;
      }
    }
  }
}

/** withdraw(), or the exit code after saying that the request is left on the node. */
async function withdrawOnTimeout(
  options: AckOptions,
  deps: AckDeps,
  request: string,
): Promise<'withdrawn' | 'taken' | number> {
  try {
    return await withdraw(deps.kube, options.node, request);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    deps.print(
      `${options.node}: no exporter took the request, and it could not be withdrawn (${message}); remove it with kubectl annotate node ${options.node} ${ACK_REQUEST_ANNOTATION}-`,
    );
    return ACK_EXIT.apiError;
  }
}

function notLifted(options: AckOptions, taken: boolean): string {
  const seconds = Math.round(options.timeoutMs / 1000);
  return taken
    ? `${options.node}: the exporter took the request, but gpuhealth still says EVICT after ${seconds} s (a new fatal finding?); see its logs`
    : `${options.node}: no exporter took the request within ${seconds} s (is Autopilot running on the node?); the request is withdrawn`;
}
