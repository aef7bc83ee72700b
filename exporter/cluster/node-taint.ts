/**
 * The optional taint autopilot.ibm.com/gpuhealth=EVICT:<AUTOPILOT_TAINT_EFFECT> on this node while
 * it is EVICT, behind the cluster-wide breaker (isolation-breaker.ts).
 *
 * Ownership: the taint this exporter adds is recorded in the node annotation
 * autopilot.ibm.com/taint-owner, JSON naming its key, value, effect and when it was added. Only a
 * taint matching that record exactly is ours: a taint with the same key but another value or
 * effect, or an identical one that a person set without the record, is someone else's and is
 * never removed; spec.unschedulable (a cordon) is never written at all. When a taint of ours is
 * removed by someone else while the node is still EVICT, that is respected (no new taint until the
 * EVICT is lifted, when the stale record goes). Where someone else's taint already has the same key
 * and effect, none of ours is added beside it (the API server allows one per key and effect).
 *
 * Writes: spec.taints is a list other controllers edit, so every change is a read-modify-write, a
 * merge patch carrying the resourceVersion read (the API server answers 409 if the node moved on;
 * then it is read again). Taints and the record change in the same patch. Dry-run
 * (AUTOPILOT_TAINT_DRY_RUN) reads, decides and logs, and writes nothing, the Lease included.
 */

import type { Clock } from '../clock.js';
import type { TaintConfig } from '../config/config.js';
import type { KubeApi, NodeInfo, NodeTaintUpdate, Taint } from '../k8s/ports.js';
import { KubeError } from '../k8s/ports.js';
import type { Logger } from '../log.js';
import type { NodeHealth } from '../node-health.js';
import {
  acquireBreakerLease,
  countBreaker,
  type BreakerCount,
  type BreakerLeaseDeps,
} from './isolation-breaker.js';
import { GPUHEALTH_LABEL } from './node-labeler.js';
import { createRetryingWriter } from './retrying-writer.js';

export const TAINT_KEY = GPUHEALTH_LABEL;
export const TAINT_VALUE = 'EVICT';
export const TAINT_OWNER_ANNOTATION = 'autopilot.ibm.com/taint-owner';

export interface TaintOwnership extends Taint {
  /** RFC 3339. */
  readonly addedAt: string;
}

/** Pure: the ownership record on the node; undefined when absent or not ours to read. */
export function readOwnership(node: NodeInfo): TaintOwnership | undefined {
  const text = node.annotations[TAINT_OWNER_ANNOTATION];
  if (text === undefined) return undefined;
  try {
    const parsed = JSON.parse(text) as Partial<Record<keyof TaintOwnership, unknown>>;
    const { key, value, effect, addedAt } = parsed;
    if (typeof key !== 'string' || typeof effect !== 'string' || typeof addedAt !== 'string') {
      return undefined;
    }
    return { key, ...(typeof value === 'string' ? { value } : {}), effect, addedAt };
  } catch {
    return undefined;
  }
}

const sameTaint = (a: Taint, b: Taint): boolean =>
  a.key === b.key && (a.value ?? '') === (b.value ?? '') && a.effect === b.effect;

/** Pure: the taint on the node that the ownership record names, if it is still there. */
export function ownedTaint(node: NodeInfo): Taint | undefined {
  const owner = readOwnership(node);
  return owner === undefined ? undefined : node.taints?.find((taint) => sameTaint(taint, owner));
}

export const carriesOurTaint = (node: NodeInfo): boolean => ownedTaint(node) !== undefined;

/** Pure: the taint AUTOPILOT_TAINT_EFFECT asks for, undefined for none. */
export function taintFor(effect: TaintConfig['effect']): Taint | undefined {
  return effect === 'none' ? undefined : { key: TAINT_KEY, value: TAINT_VALUE, effect };
}

export type TaintPlan =
  | { readonly action: 'none'; readonly state: 'tainted' | 'untainted' }
  /** Someone else's taint has our key and effect, or removed ours while EVICT: nothing is added. */
  | { readonly action: 'none'; readonly state: 'blocked'; readonly why: string }
  | { readonly action: 'add' | 'remove' | 'forget'; readonly taints: readonly Taint[] };

/**
 * Pure: what to do about the node's taints. `wanted` is the taint to carry (undefined: none);
 * the new list keeps every taint that is not ours, in its order.
 */
export function planTaint(node: NodeInfo, wanted: Taint | undefined): TaintPlan {
  const taints = node.taints ?? [];
  const owner = readOwnership(node);
  const ours = ownedTaint(node);
  const others = ours === undefined ? taints : taints.filter((taint) => !sameTaint(taint, ours));
  if (wanted === undefined) {
    if (ours !== undefined) return { action: 'remove', taints: others };
    return owner === undefined
      ? { action: 'none', state: 'untainted' }
      : { action: 'forget', taints: others };
  }
  if (ours !== undefined && sameTaint(ours, wanted)) return { action: 'none', state: 'tainted' };
  if (owner !== undefined && ours === undefined && sameTaint(owner, wanted)) {
    return { action: 'none', state: 'blocked', why: 'our taint was removed by someone else' };
  }
  const clash = others.find((taint) => taint.key === wanted.key && taint.effect === wanted.effect);
  if (clash !== undefined) {
    const shown = `${clash.key}=${clash.value ?? ''}:${clash.effect}`;
    return { action: 'none', state: 'blocked', why: `someone else's taint ${shown} is there` };
  }
  return { action: 'add', taints: [...others, wanted] };
}

/** Pure: the patch for a plan that writes; the record is set with the taint, removed without it. */
export function taintUpdate(
  node: NodeInfo,
  plan: Extract<TaintPlan, { taints: readonly Taint[] }>,
  wanted: Taint | undefined,
  now: number,
): NodeTaintUpdate {
  const record =
    plan.action === 'add' && wanted !== undefined
      ? JSON.stringify({ ...wanted, addedAt: new Date(now).toISOString() })
      : null;
  return {
    resourceVersion: node.resourceVersion ?? '',
    taints: plan.taints,
    annotations: { [TAINT_OWNER_ANNOTATION]: record },
  };
}

/** What /status reports. */
export interface NodeTaintStatus {
  readonly effect: TaintConfig['effect'];
  readonly dryRun: boolean;
  /**
   * off (effect none); idle (nothing decided yet); tainted; untainted; refused (the breaker);
   * blocked (someone else's taint; why says whose); pending (waiting for the Lease or a retry).
   */
  readonly state: 'off' | 'idle' | 'tainted' | 'untainted' | 'refused' | 'blocked' | 'pending';
  readonly why: string | undefined;
  /** Dry-run: what a real run would have written last (add, remove or forget). */
  readonly wouldDo: 'add' | 'remove' | 'forget' | undefined;
  readonly breaker: BreakerCount | undefined;
  readonly lastError: { readonly message: string; readonly at: number } | undefined;
}

export interface NodeTainter {
  /** Re-evaluates after a change of health. */
  sync(): void;
  stop(): void;
  status(): NodeTaintStatus;
  /** 1 when this node was last refused a taint by the breaker (autopilot_isolation_breaker_open). */
  breakerOpen(): boolean;
  /** Changes whenever status() does (the /metrics cache key). */
  version(): number;
  /** Resolves when no reconciliation is in flight or due, a breaker re-count aside (tests). */
  idle(): Promise<void>;
}

export interface NodeTainterDeps {
  readonly kube: KubeApi;
  readonly nodeName: string;
  readonly config: TaintConfig;
  readonly lease: Omit<BreakerLeaseDeps, 'kube' | 'clock'>;
  readonly health: () => NodeHealth;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Waits: for the Lease held by another exporter, after a failure, and re-counts while refused. */
  readonly timing?: {
    readonly leaseBusyMs: number;
    readonly refusedRecheckMs: number;
    readonly maxBackoffMs: number;
  };
}

const DEFAULT_TIMING = { leaseBusyMs: 2000, refusedRecheckMs: 60_000, maxBackoffMs: 60_000 };
/** Read-modify-write attempts before a run of 409s counts as a failure. */
const MAX_CONFLICTS = 5;

type Want = 'taint' | 'untaint' | undefined;
type Outcome = { readonly retryInMs: number } | 'done';

export function createNodeTainter(deps: NodeTainterDeps): NodeTainter {
  const timing = deps.timing ?? DEFAULT_TIMING;
  const wanted = taintFor(deps.config.effect);
  const log = deps.logger;
  let status: Omit<NodeTaintStatus, 'lastError'> = {
    effect: deps.config.effect,
    dryRun: deps.config.dryRun,
    state: wanted === undefined ? 'off' : 'idle',
    why: undefined,
    wouldDo: undefined,
    breaker: undefined,
  };
  let version = 0;
  let sawEvict = false;
  let settled: Want;
  /** The goal of the latest attempt: a waiting retry is for it, and a change of goal does not wait. */
  let tried: Want;

  const update = (change: Partial<typeof status>): void => {
    status = { ...status, ...change };
    version += 1;
  };

  /** EVICT: taint. Lifted (any other state, or UNKNOWN after an EVICT this process saw): untaint. */
  const want = (): Want => {
    const state = deps.health().state;
    if (state === 'EVICT') sawEvict = true;
    if (state === 'EVICT') return 'taint';
    return state !== 'UNKNOWN' || sawEvict ? 'untaint' : undefined;
  };

  const writer = createRetryingWriter({
    next: () => {
      const goal = wanted === undefined ? undefined : want();
      if (goal === undefined || goal === settled) return undefined;
      tried = goal;
      return {
        what: 'write the node taint',
        run: async () => {
          const outcome = await reconcile(goal === 'taint' ? wanted : undefined);
          if (outcome !== 'done') return outcome;
          settled = goal;
        },
      };
    },
    // Waiting for the breaker to close is a decision taken, not work in progress.
    quietWait: () => status.state === 'refused',
    onErrorChange: () => update({}),
    started: true,
    clock: deps.clock,
    logger: log,
    backoff: { initialMs: timing.leaseBusyMs, maxMs: timing.maxBackoffMs },
  });

  const reconcile = async (taint: Taint | undefined): Promise<Outcome> => {
    for (let attempt = 1; attempt <= MAX_CONFLICTS; attempt++) {
      const node = await deps.kube.getNode(deps.nodeName);
      const plan = planTaint(node, taint);
      if (plan.action === 'none') {
        update({ state: plan.state, why: 'why' in plan ? plan.why : undefined });
        return 'done';
      }
      const result =
        plan.action === 'add'
          ? await addUnderBreaker(node, plan, taint)
          : await write(node, plan, taint);
      if (result !== 'conflict') return result;
    }
    throw new KubeError(`patch taints of node ${deps.nodeName}`, 409, 'kept changing; retrying');
  };

  /** The Lease held while counting and writing, so two exporters cannot both take the last room. */
  const addUnderBreaker = async (
    node: NodeInfo,
    plan: Extract<TaintPlan, { taints: readonly Taint[] }>,
    taint: Taint | undefined,
  ): Promise<Outcome | 'conflict'> => {
    if (deps.config.dryRun) return decide(await count(), () => write(node, plan, taint));
    const lock = await acquireBreakerLease({ ...deps.lease, kube: deps.kube, clock: deps.clock });
    if (lock === undefined) {
      update({ state: 'pending', why: 'another exporter holds the breaker Lease' });
      // Jittered, so two exporters that collided do not collide again.
      return { retryInMs: timing.leaseBusyMs * (0.5 + Math.random()) };
    }
    try {
      return await decide(await count(), () =>
        lock.mayWrite() ? write(node, plan, taint) : Promise.resolve({ retryInMs: 0 }),
      );
    } finally {
      await lock.release();
    }
  };

  const count = async (): Promise<BreakerCount> =>
    countBreaker(
      await deps.kube.listNodes(''),
      deps.nodeName,
      deps.config.maxFraction,
      carriesOurTaint,
    );

  const decide = async (
    breaker: BreakerCount,
    proceed: () => Promise<Outcome | 'conflict'>,
  ): Promise<Outcome | 'conflict'> => {
    if (breaker.open) {
      const why = `${breaker.tainted} of ${breaker.gpuNodes} GPU nodes carry the taint; the limit is ${breaker.limit}`;
      if (status.state !== 'refused') {
        log.warn('isolation breaker open: not tainting this EVICT node', {
          ...breaker,
          dryRun: deps.config.dryRun,
        });
      }
      update({ state: 'refused', why, breaker });
      return { retryInMs: timing.refusedRecheckMs };
    }
    update({ breaker });
    return proceed();
  };

  const write = async (
    node: NodeInfo,
    plan: Extract<TaintPlan, { taints: readonly Taint[] }>,
    taint: Taint | undefined,
  ): Promise<Outcome | 'conflict'> => {
    const patch = taintUpdate(node, plan, taint, deps.clock.now());
    const fields = { action: plan.action, taint: taint ?? null, taints: patch.taints };
    if (deps.config.dryRun) {
      log.info('dry run: would change the node taints', fields);
      // Nothing was written: the node is as it was.
      update({ state: plan.action === 'add' ? 'untainted' : 'tainted', wouldDo: plan.action });
      return 'done';
    }
    try {
      await deps.kube.patchNodeTaints(deps.nodeName, patch);
    } catch (error) {
      if (error instanceof KubeError && error.status === 409) return 'conflict';
      throw error;
    }
    log.info('Node taints changed', fields);
    update({ state: plan.action === 'add' ? 'tainted' : 'untainted', why: undefined });
    return 'done';
  };

  return {
    sync() {
      // A retry waiting for another goal is not waited for.
      writer.sync(want() !== tried);
    },
    stop: () => writer.stop(),
    status: () => ({ ...status, lastError: writer.lastError() }),
    breakerOpen: () => status.state === 'refused',
    version: () => version,
    idle: () => writer.idle(),
  };
}
