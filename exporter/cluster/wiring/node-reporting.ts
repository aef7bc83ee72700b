/**
 * Kubernetes mode: the node's health as a NodeCondition and as Events on the Node. Both follow the
 * store's changes of health; the condition also a timer (heartbeats, staleness), the Events also
 * the API's acknowledge (who lifted an EVICT) and the deep check's start and end.
 */

import type { CheckRun } from '../../checks/check.js';
import type { Clock } from '../../clock.js';
import type { DeepCheck } from '../deep-check.js';
import {
  STALE_ROUNDS,
  causeOf,
  createNodeConditionWriter,
  desiredCondition,
  type NodeConditionWriter,
} from '../node-condition.js';
import {
  createNodeEventRecorder,
  deepCheckEvent,
  healthChangeEvent,
  liftEvent,
  type NodeEventRecorder,
} from '../node-events.js';
import type { Config } from '../../config/config.js';
import { scheduleIntervalMs } from '../../config/schedule.js';
import type { Logger } from '../../log.js';
import type { NodeHealth } from '../../node-health.js';
import type { ResultStore } from '../../store.js';
import type { KubernetesSide } from './kubernetes.js';

export interface NodeReporting {
  /** undefined when AUTOPILOT_NODE_CONDITION is none. */
  readonly condition: NodeConditionWriter | undefined;
  readonly events: NodeEventRecorder;
  /** An operator lifted the EVICT (POST /acknowledge): the Event names them. */
  acknowledged(caller: string): void;
  /** The deep check started or ended (its `changed` callback). */
  deepCheckChanged(): void;
}

export interface NodeReportingParts {
  readonly store: ResultStore;
  /** Whether a check's results count for the node health (iperf's do not). */
  readonly countsForHealth: (check: string) => boolean;
  readonly deepCheck: () => DeepCheck | undefined;
  readonly clock: Clock;
  readonly logger: Logger;
}

export function wireNodeReporting(
  config: Config,
  side: KubernetesSide,
  parts: NodeReportingParts,
): NodeReporting {
  const { store, clock } = parts;
  const runs = (): CheckRun[] =>
    store.conclusiveRuns().filter((run) => parts.countsForHealth(run.check));
  const staleAfterMs = (): number | undefined => {
    const interval = scheduleIntervalMs(config.periodic, clock.now());
    return interval === undefined ? undefined : STALE_ROUNDS * interval;
  };
  const condition =
    config.nodeCondition === undefined
      ? undefined
      : createNodeConditionWriter({
          kube: side.kube,
          nodeName: config.nodeName,
          type: config.nodeCondition,
          desired: () =>
            desiredCondition({
              health: store.health(),
              runs: runs(),
              now: clock.now(),
              staleAfterMs: staleAfterMs(),
            }),
          heartbeatMs: config.nodeConditionHeartbeatMs,
          keepUnprovenMs: staleAfterMs() ?? 2 * config.nodeConditionHeartbeatMs,
          clock,
          logger: parts.logger.child({ component: 'condition' }),
        });
  const events = createNodeEventRecorder({
    kube: side.kube,
    nodeName: config.nodeName,
    instance: config.podName ?? config.nodeName,
    clock,
    logger: parts.logger.child({ component: 'events' }),
  });
  const lifts = followHealth(store, events, runs, () => condition?.sync());
  let deepCheckRunning = false;
  return {
    condition,
    events,
    acknowledged: (caller) => lifts.namedBy(caller),
    deepCheckChanged() {
      const deepCheck = parts.deepCheck();
      const running = deepCheck?.running() === true;
      if (running === deepCheckRunning || deepCheck === undefined) return;
      deepCheckRunning = running;
      if (running) events.record(deepCheckEvent('started'));
      else
        void deepCheck.settled().then((end) => {
          if (end !== undefined) events.record(deepCheckEvent(end));
        });
    },
  };
}

interface Lift {
  readonly previous: NodeHealth;
  readonly next: NodeHealth;
  caller?: string;
}

/**
 * Events for the store's changes of health. An EVICT that ends waits a microtask for the API to
 * say who acknowledged it (the store tells its listeners before the acknowledge route returns).
 */
function followHealth(
  store: ResultStore,
  events: NodeEventRecorder,
  runs: () => readonly CheckRun[],
  changed: () => void,
): { namedBy(caller: string): void } {
  let last = store.health();
  let lift: Lift | undefined;
  store.onHealthChange((next) => {
    const previous = last;
    last = next;
    changed();
    if (previous.state === 'EVICT' && next.state !== 'EVICT') {
      const pending: Lift = { previous, next };
      lift = pending;
      queueMicrotask(() => {
        if (lift === pending) lift = undefined;
        events.record(liftEvent(pending.previous, pending.next, pending.caller));
      });
      return;
    }
    const event = healthChangeEvent(previous, next, causeOf(next, runs()));
    if (event !== undefined) events.record(event);
  });
  return {
    namedBy(caller) {
      if (lift !== undefined) lift.caller = caller;
    },
  };
}
