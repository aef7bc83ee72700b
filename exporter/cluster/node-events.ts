/**
 * Events on this node for what people and log pipelines follow: the health turning WARN, EVICT or
 * back to PASS, an EVICT acknowledged or lifted, a deep check started and ended. core/v1 Events in
 * the default namespace (where Kubernetes files Events about cluster-scoped objects), naming the
 * Node by name and uid, so `kubectl describe node` lists them.
 *
 * Repeats merge: the same Event (NodeEvent.key) within REPEAT_WINDOW_MS of the last one patches the
 * existing Event's count, lastTimestamp and message instead of creating another object. New objects are
 * rate-limited (a token bucket), so a flapping node cannot flood the API server. Events are
 * best-effort: a write that fails is logged and dropped, never retried against a struggling API.
 */

import type { Clock } from '../clock.js';
import type { KubeApi, NodeEventSpec } from '../k8s/ports.js';
import type { Logger } from '../log.js';
import type { NodeHealth } from '../node-health.js';
import { isoSeconds, truncateUtf8 } from './node-condition.js';

/** Kubernetes files Events about cluster-scoped objects (a Node) in this namespace. */
export const EVENT_NAMESPACE = 'default';
export const REPORTING_CONTROLLER = 'autopilot.ibm.com/exporter';
/** The API server's default --event-ttl: an older Event may be gone, so a repeat starts anew. */
export const REPEAT_WINDOW_MS = 3_600_000;
export const EVENT_BURST = 20;
export const EVENT_REFILL_MS = 60_000;

export interface NodeEvent {
  readonly type: 'Normal' | 'Warning';
  /** Short CamelCase, stable for filtering (EVENT_REASONS). */
  readonly reason: string;
  readonly message: string;
  /** What happened, in one word (events.k8s.io's action). */
  readonly action: string;
  /**
   * What makes a repeat the same Event: reason and message unless given. Findings carry measured
   * values (a 101 ms interval, a bandwidth) that differ between rounds, so a change of health
   * repeats on its reason and cause, and the patch brings the latest message.
   */
  readonly key?: string;
}

export const EVENT_REASONS = {
  warn: 'GPUHealthWarn',
  evict: 'GPUHealthEvict',
  pass: 'GPUHealthPass',
  acknowledged: 'EvictAcknowledged',
  lifted: 'EvictLifted',
  deepCheckStarted: 'DeepCheckStarted',
  deepCheckEnded: 'DeepCheckEnded',
} as const;

/**
 * Pure: the Event for a change of health, undefined when there is none worth one: the first
 * PASS after start is no news, and leaving EVICT has its own Event (liftEvent).
 * `cause`: the condition's reason for the new state (RowRemapFailure, ...).
 */
export function healthChangeEvent(
  previous: NodeHealth,
  next: NodeHealth,
  cause: string,
): NodeEvent | undefined {
  if (previous.state === next.state || previous.state === 'EVICT') return undefined;
  const detail = `${cause}: ${next.reasons.join('; ')}`;
  switch (next.state) {
    case 'EVICT':
    case 'WARN': {
      const reason = next.state === 'EVICT' ? EVENT_REASONS.evict : EVENT_REASONS.warn;
      const action = next.state === 'EVICT' ? 'Evict' : 'Warn';
      return { type: 'Warning', reason, message: detail, action, key: `${reason}/${cause}` };
    }
    case 'PASS':
      return previous.state === 'WARN'
        ? {
            type: 'Normal',
            reason: EVENT_REASONS.pass,
            message: 'no check fails any more',
            action: 'Pass',
          }
        : undefined;
    case 'UNKNOWN':
    case 'TESTING':
      return undefined;
  }
}

/**
 * Pure: the Event for an EVICT that ended: acknowledged by `caller`, or lifted by a passing
 * check or a deep check, or an acknowledgement that did not say who.
 */
export function liftEvent(previous: NodeHealth, next: NodeHealth, caller?: string): NodeEvent {
  const was = previous.reasons.join('; ');
  return caller === undefined
    ? {
        type: 'Normal',
        reason: EVENT_REASONS.lifted,
        message: `EVICT lifted; health is now ${next.state} (was: ${was})`,
        action: 'Lift',
        key: EVENT_REASONS.lifted,
      }
    : {
        type: 'Normal',
        reason: EVENT_REASONS.acknowledged,
        message: `EVICT acknowledged by ${caller}; health is now ${next.state} (was: ${was})`,
        action: 'Acknowledge',
        key: `${EVENT_REASONS.acknowledged}/${caller}`,
      };
}

/** How a deep check ended (cluster/deep-check.ts's DeepCheckEnd). */
export type DeepCheckOutcome = 'passed' | 'failed' | 'deleted' | 'stuck' | 'error';

/** Pure: the Events of a deep check's start and end. */
export function deepCheckEvent(end: DeepCheckOutcome | 'started'): NodeEvent {
  if (end === 'started') {
    return {
      type: 'Normal',
      reason: EVENT_REASONS.deepCheckStarted,
      message: 'deep check started: DCGM level 3 and gpumem in a Job on idle GPUs',
      action: 'DeepCheck',
    };
  }
  const said: Record<DeepCheckOutcome, string> = {
    passed: 'passed',
    failed: 'failed: see the gpuhealth label and the dcgm.level.3 annotation',
    deleted: 'ended without results: its Job was deleted',
    stuck: 'ended without results: its pod stayed Pending',
    error: 'ended without results: its Job could not be followed or left no report',
  };
  return {
    type: end === 'passed' ? 'Normal' : 'Warning',
    reason: EVENT_REASONS.deepCheckEnded,
    message: `deep check ${said[end]}`,
    action: 'DeepCheck',
  };
}

/** An Event this process created, and how often it has happened. */
export interface Recorded {
  readonly name: string;
  readonly count: number;
  readonly first: number;
  readonly last: number;
}

/** Pure: a new object, or a repeat of `recorded` when it is recent enough to patch. */
export function planEvent(
  recorded: Recorded | undefined,
  now: number,
  windowMs = REPEAT_WINDOW_MS,
): { readonly kind: 'create' } | { readonly kind: 'repeat'; readonly count: number } {
  if (recorded === undefined || now - recorded.last >= windowMs) return { kind: 'create' };
  return { kind: 'repeat', count: recorded.count + 1 };
}

/** Pure: a token bucket, `burst` tokens refilled one per `refillMs`. */
export function takeToken(
  bucket: { readonly tokens: number; readonly at: number },
  now: number,
  burst = EVENT_BURST,
  refillMs = EVENT_REFILL_MS,
): { readonly taken: boolean; readonly tokens: number; readonly at: number } {
  const refilled = Math.floor(Math.max(0, now - bucket.at) / refillMs);
  const tokens = Math.min(burst, bucket.tokens + refilled);
  const at = tokens === burst ? now : bucket.at + refilled * refillMs;
  return tokens >= 1 ? { taken: true, tokens: tokens - 1, at } : { taken: false, tokens, at };
}

export interface NodeEventRecorder {
  record(event: NodeEvent): void;
  /** Resolves once every write asked for so far has been answered (tests, shutdown). */
  idle(): Promise<void>;
}

export interface NodeEventDeps {
  readonly kube: KubeApi;
  readonly nodeName: string;
  /** reportingInstance: this exporter's pod, or the node when the pod name is unknown. */
  readonly instance: string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly windowMs?: number;
}

export function createNodeEventRecorder(deps: NodeEventDeps): NodeEventRecorder {
  const recorded = new Map<string, Recorded>();
  let bucket = { tokens: EVENT_BURST, at: deps.clock.now() };
  let uid: Promise<string | undefined> | undefined;
  let queue: Promise<void> = Promise.resolve();
  let sequence = 0;

  /** The node's uid, read once; an Event without it still names the node. */
  const nodeUid = (): Promise<string | undefined> =>
    (uid ??= deps.kube.getNode(deps.nodeName).then(
      (node) => node.uid,
      () => {
        uid = undefined;
        return undefined;
      },
    ));

  /** As the kubelet names Events: the object's name and a time in hex, unique per process. */
  const eventName = (now: number): string =>
    `${deps.nodeName}.${(BigInt(now) * 1_000_000n + BigInt(sequence++ % 1_000_000)).toString(16)}`;

  const create = async (event: NodeEvent, key: string, count: number, first: number) => {
    const now = deps.clock.now();
    const spec: NodeEventSpec = {
      namespace: EVENT_NAMESPACE,
      name: eventName(now),
      nodeName: deps.nodeName,
      nodeUid: await nodeUid(),
      type: event.type,
      reason: event.reason,
      message: truncateUtf8(event.message),
      action: event.action,
      reportingController: REPORTING_CONTROLLER,
      reportingInstance: deps.instance.slice(0, 128),
      firstTimestamp: isoSeconds(first),
      lastTimestamp: isoSeconds(now),
      count,
    };
    await deps.kube.createEvent(spec);
    recorded.set(key, { name: spec.name, count, first, last: now });
  };

  const write = async (event: NodeEvent): Promise<void> => {
    const key = event.key ?? `${event.reason}\u0000${event.message}`;
    const now = deps.clock.now();
    const previous = recorded.get(key);
    const plan = planEvent(previous, now, deps.windowMs);
    if (plan.kind === 'repeat' && previous !== undefined) {
      recorded.set(key, { ...previous, count: plan.count, last: now });
      try {
        await deps.kube.patchEvent(EVENT_NAMESPACE, previous.name, {
          count: plan.count,
          lastTimestamp: isoSeconds(now),
          message: truncateUtf8(event.message),
        });
        return;
      } catch (error) {
        // Expired (the API server's event TTL) or deleted: the repeat starts a new object.
        if ((error as { status?: number }).status !== 404) throw error;
        return create(event, key, plan.count, previous.first);
      }
    }
    const token = takeToken(bucket, now);
    bucket = { tokens: token.tokens, at: token.at };
    if (!token.taken) {
      deps.logger.debug('node event dropped: too many events', { reason: event.reason });
      return;
    }
    await create(event, key, 1, now);
  };

  return {
    record(event) {
      queue = queue
        .then(() => write(event))
        .catch((error: unknown) => {
          deps.logger.warn('cannot record a node event', {
            reason: event.reason,
            error: error instanceof Error ? error.message : String(error),
          });
        });
    },
    idle: () => queue,
  };
}
