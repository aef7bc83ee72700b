/**
 * CheckRunner: the one way a check runs, whoever asks (scheduler, API, CLI).
 *
 * Invariants:
 * - A check never runs twice at once on this node. A request with the same parameters as a run
 *   that is queued or in progress joins it and gets its result; other requests queue behind it.
 * - GPU checks share the GPUs; exclusive checks hold them alone (GpuLock).
 * - Every request has a deadline (the check's timeout) that covers waiting and running. When it
 *   passes, the caller gets an ERROR result at once, but the lane stays closed until the work
 *   really ends, so a hung run is never overlapped by the next one.
 * - Every result, ERROR included, is recorded in the store.
 */

import { setMaxListeners } from 'node:events';
import type {
  Check,
  CheckOutcome,
  CheckParams,
  CheckRun,
  Trigger,
  Verdict,
} from './checks/check.js';
import { summariseOutcome } from './checks/check.js';
import type { Clock } from './clock.js';
import type { GpuLock, Release } from './gpu-lock.js';
import type { Logger } from './log.js';
import type { ResultStore } from './store.js';

export interface CheckRunner {
  run(name: string, params: CheckParams, trigger: Trigger): Promise<CheckRun>;
  /** Names of checks with a run queued or in progress. */
  active(): string[];
  /** Aborts every run and waits, at most graceMs, for their work to end. */
  shutdown(graceMs: number): Promise<void>;
}

export interface CheckRunnerDeps {
  readonly checks: ReadonlyMap<string, Check>;
  readonly store: ResultStore;
  readonly clock: Clock;
  readonly gpuLock: GpuLock;
  readonly logger: Logger;
}

interface Pending {
  readonly key: string;
  readonly result: Promise<CheckRun>;
}

interface Lane {
  /** Resolves when the work of the last request queued on this lane has ended. */
  tail: Promise<void>;
  /** Requests queued or running, until their result is settled. */
  readonly pending: Pending[];
  /** Set while a run that passed its deadline is still working (a hung tool or driver call). */
  overdueSince: number | undefined;
}

class RunAborted extends Error {
  constructor(readonly why: string) {
    super(why);
    this.name = 'RunAborted';
  }
}

export function createCheckRunner(deps: CheckRunnerDeps): CheckRunner {
  const lanes = new Map<string, Lane>();
  const controllers = new Set<AbortController>();
  const work = new Set<Promise<unknown>>();

  const laneOf = (name: string): Lane => {
    let lane = lanes.get(name);
    if (lane === undefined) {
      lane = { tail: Promise.resolve(), pending: [], overdueSince: undefined };
      lanes.set(name, lane);
    }
    return lane;
  };

  const record = (
    check: Check,
    trigger: Trigger,
    params: CheckParams,
    startedAt: number,
    outcome: CheckOutcome,
  ): CheckRun => {
    const { verdict, reason } = summariseOutcome(outcome);
    const run: CheckRun = {
      check: check.name,
      trigger,
      params,
      startedAt,
      finishedAt: deps.clock.now(),
      verdict,
      reason,
      devices: outcome.devices,
      samples: outcome.samples ?? [],
    };
    deps.store.record(run);
    deps.logger.info('check finished', {
      check: check.name,
      trigger,
      verdict,
      reason,
      durationSeconds: (run.finishedAt - run.startedAt) / 1000,
    });
    return run;
  };

  async function execute(
    check: Check,
    params: CheckParams,
    trigger: Trigger,
    lane: Lane,
    previous: Promise<void>,
    laneFree: () => void,
  ): Promise<CheckRun> {
    const controller = new AbortController();
    // A check listens once per subprocess it runs at the same time (ping: up to 1,024), which is
    // expected and not the leak Node's default limit of 10 listeners warns about.
    setMaxListeners(0, controller.signal);
    controllers.add(controller);
    const timeoutMs = check.timeoutFor?.(params) ?? check.timeoutMs;
    const exclusive = check.exclusiveFor?.(params) ?? check.exclusive;
    const timeoutText = `timed out after ${formatSeconds(timeoutMs)}`;
    const cancelTimer = deps.clock.setTimer(
      () => controller.abort(new RunAborted(timeoutText)),
      timeoutMs,
    );
    const logger = deps.logger.child({ check: check.name, trigger });
    let phase = 'waiting for the previous run of this check to end';
    let startedAt = deps.clock.now();
    let release: Release | undefined;
    let running: Promise<CheckOutcome> | undefined;

    const finish = (outcome: CheckOutcome): CheckRun =>
      record(check, trigger, params, startedAt, outcome);

    try {
      await abortable(previous, controller.signal);
      if (check.usesGpu || exclusive) {
        phase = 'waiting for the GPUs';
        release = await deps.gpuLock.acquire(exclusive ? 'exclusive' : 'shared', controller.signal);
      }
      phase = 'running';
      startedAt = deps.clock.now();
      logger.debug('check started', { params });
      running = Promise.resolve().then(() =>
        check.run({ signal: controller.signal, logger, params }),
      );
      return finish(await abortable(running, controller.signal));
    } catch (error) {
      const reason =
        error instanceof RunAborted
          ? phase === 'running'
            ? error.why
            : `${error.why} ${phase}`
          : `check crashed: ${error instanceof Error ? error.message : String(error)}`;
      if (!(error instanceof RunAborted)) logger.error('check crashed', { error });
      else if (phase === 'running' && running !== undefined) {
        lane.overdueSince = deps.clock.now();
        logger.warn(
          'check is still running after its deadline; its lane stays closed until it ends',
        );
      }
      return finish({ devices: [], verdict: 'ERROR' satisfies Verdict, reason });
    } finally {
      cancelTimer();
      controllers.delete(controller);
      void Promise.all([previous, running?.catch(() => undefined)]).then(() => {
        release?.();
        if (running !== undefined) lane.overdueSince = undefined;
        laneFree();
      });
    }
  }

  return {
    run(name, params, trigger) {
      const check = deps.checks.get(name);
      if (check === undefined) return Promise.reject(new Error(`unknown check "${name}"`));
      const lane = laneOf(name);
      if (lane.overdueSince !== undefined) {
        // Queueing behind work that ignores its deadline would pile up requests without bound.
        const overdue = formatSeconds(deps.clock.now() - lane.overdueSince);
        const reason = `the previous run has not ended ${overdue} after its deadline`;
        return Promise.resolve(
          record(check, trigger, params, deps.clock.now(), {
            devices: [],
            verdict: 'ERROR',
            reason,
          }),
        );
      }
      const key = paramsKey(params);
      const joinable = lane.pending.find((p) => p.key === key);
      if (joinable !== undefined) return joinable.result;

      const previous = lane.tail;
      let laneFree: () => void = () => undefined;
      const tail = new Promise<void>((resolve) => (laneFree = resolve));
      lane.tail = tail;
      work.add(tail);
      void tail.then(() => work.delete(tail));
      const result = execute(check, params, trigger, lane, previous, laneFree);
      const pending: Pending = { key, result };
      lane.pending.push(pending);
      void result.finally(() => lane.pending.splice(lane.pending.indexOf(pending), 1));
      return result;
    },
    active: () => [...lanes.entries()].filter(([, l]) => l.pending.length > 0).map(([n]) => n),
    async shutdown(graceMs) {
      for (const controller of controllers)
        controller.abort(new RunAborted('exporter shutting down'));
      let cancel: () => void = () => undefined;
      const grace = new Promise<void>(
        (resolve) => (cancel = deps.clock.setTimer(resolve, graceMs)),
      );
      await Promise.race([Promise.all([...work]), grace]);
      cancel();
    },
  };
}

function paramsKey(params: CheckParams): string {
  return JSON.stringify(Object.entries(params).sort(([a], [b]) => a.localeCompare(b)));
}

function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}

export function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(3))}s`;
}
