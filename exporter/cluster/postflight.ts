/**
 * Post-flight: when a pod that held GPUs on this node ends, the post-flight checks run as soon as
 * the GPUs are idle, so a job that broke a GPU is caught before the next one lands there. The
 * node's pods are listed every pollMs (one cheap, node-scoped list) and compared with the last
 * list: a GPU pod that vanished or reached Succeeded/Failed has ended.
 */

import type { CheckRun, Trigger } from '../checks/check.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { gpuHolders } from './gpu-idle.js';
import type { KubeApi, PodInfo } from '../k8s/ports.js';

export interface PostflightDeps {
  readonly kube: KubeApi;
  readonly nodeName: string;
  /** Checks and their parameters (dcgm at level 1). */
  readonly checks: readonly (readonly [string, Readonly<Record<string, string>>])[];
  readonly run: (
    check: string,
    params: Readonly<Record<string, string>>,
    trigger: Trigger,
  ) => Promise<CheckRun>;
  /** Why the GPUs are busy, or undefined when idle. */
  readonly gpusBusy: () => Promise<string | undefined>;
  /** Pods of the deep check are not jobs that end. */
  readonly ownJobPrefix: string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly pollMs: number;
}

export interface Postflight {
  start(): void;
  stop(): void;
  /** Resolves after the poll in progress (and any post-flight it started) has finished. */
  idle(): Promise<void>;
}

/** Pure: the GPU pods of `before` that have ended by `after` (gone, Succeeded or Failed). */
export function endedGpuPods(
  before: readonly PodInfo[],
  after: readonly PodInfo[],
  ownJobPrefix: string,
): PodInfo[] {
  const stillHolding = new Set(gpuHolders(after, ownJobPrefix).map(key));
  return gpuHolders(before, ownJobPrefix).filter((pod) => !stillHolding.has(key(pod)));
}

const key = (pod: PodInfo): string => `${pod.namespace}/${pod.name}`;

export function createPostflight(deps: PostflightDeps): Postflight {
  let previous: PodInfo[] | undefined;
  /** Pods that ended and whose post-flight has not run yet. */
  let due: string[] = [];
  let cancel: (() => void) | undefined;
  let running = false;
  let current: Promise<void> = Promise.resolve();

  const poll = async (): Promise<void> => {
    try {
      const pods = await deps.kube.listPodsOnNode(deps.nodeName);
      if (previous !== undefined) {
        for (const pod of endedGpuPods(previous, pods, deps.ownJobPrefix)) due.push(key(pod));
      }
      previous = pods;
      if (due.length === 0) return;
      const busy = await deps.gpusBusy();
      if (busy !== undefined) {
        deps.logger.debug('post-flight waits for idle GPUs', { ended: due, busy });
        return;
      }
      const ended = due;
      due = [];
      deps.logger.info('post-flight checks after GPU pods ended', { ended });
      for (const [check, params] of deps.checks) await deps.run(check, params, 'postflight');
    } catch (error) {
      deps.logger.warn('post-flight poll failed', { error });
    }
  };

  const schedule = (): void => {
    cancel = deps.clock.setTimer(() => {
      current = poll().finally(() => {
        if (running) schedule();
      });
    }, deps.pollMs);
  };

  return {
    start() {
      if (running) return;
      running = true;
      current = poll().finally(() => {
        if (running) schedule();
      });
    },
    stop() {
      running = false;
      cancel?.();
    },
    idle: () => current,
  };
}
