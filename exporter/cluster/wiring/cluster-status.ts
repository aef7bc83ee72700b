/**
 * The cluster-wide /status wiring (Kubernetes mode): how this node asks the others (their pods
 * from the peer directory, with a deadline from the checks asked), and how it answers for itself
 * in process, honouring a forwarded maxage as every other node does.
 */

import { parseMaxAge, recentAnswer } from '../../api/status-routes.js';
import type { ClusterDeps } from '../../api/cluster-status.js';
import type { CheckRunner } from '../../check-runner.js';
import type { Check } from '../../checks/check.js';
import type { Clock } from '../../clock.js';
import type { HttpGet } from '../http-get.js';
import type { NodeConditionWriter } from '../node-condition.js';
import type { NodeLabeler } from '../node-labeler.js';
import type { NodeTainter } from '../node-taint.js';
import type { NodeWatch } from '../node-watch.js';
import type { Config } from '../../config/config.js';
import type { Logger } from '../../log.js';
import type { ResultStore } from '../../store.js';
import {
  kubernetesStatus,
  nodeConditionStatus,
  nodeWatchStatus,
  taintStatus,
  type KubernetesSide,
} from './kubernetes.js';

/** Slack for a node's HTTP answer on top of its checks' own deadlines. */
const FANOUT_MARGIN_MS = 15_000;

export interface ClusterStatusWiring {
  readonly checks: ReadonlyMap<string, Check>;
  readonly store: ResultStore;
  readonly runner: CheckRunner;
  readonly labeler: NodeLabeler;
  readonly tainter?: NodeTainter;
  /** undefined when AUTOPILOT_NODE_CONDITION is none. */
  readonly condition?: NodeConditionWriter;
  readonly nodeWatch?: NodeWatch;
  readonly fetch: HttpGet;
  readonly clock: Clock;
  readonly logger: Logger;
}

export function clusterStatusDeps(
  config: Config,
  side: KubernetesSide,
  wiring: ClusterStatusWiring,
): ClusterDeps {
  const { checks, store, runner, clock } = wiring;
  return {
    kube: side.kube,
    peers: () => side.peers.peers(),
    fetch: wiring.fetch,
    now: () => clock.now(),
    nodeName: config.nodeName,
    defaultPort: config.apiPort,
    concurrency: config.fanoutConcurrency,
    deadlineMs: (names) =>
      names.reduce((sum, name) => sum + (checks.get(name)?.timeoutMs ?? 0), FANOUT_MARGIN_MS),
    askSelf: async (names, params) => {
      const runs = [];
      // Forwarded maxage holds here as on every other node (validated by the API already).
      const maxAgeMs = parseMaxAge(params.maxage);
      for (const name of names) {
        const check = checks.get(name)!;
        const own = check.parseParams(params);
        const run =
          recentAnswer(check, store, own, maxAgeMs, clock.now()) ??
          (await runner.run(name, own, 'api'));
        runs.push({
          check: name,
          verdict: run.verdict,
          reason: run.reason,
          text: check.formatText(run, config.nodeName),
        });
      }
      const health = store.health();
      return { health: { state: health.state, reasons: health.reasons }, runs };
    },
    // The label, the condition, the taint and the watch that keeps them true, side by side.
    status: () => ({
      ...kubernetesStatus(side.health, side.peers, wiring.labeler),
      nodeCondition: nodeConditionStatus(wiring.condition, config.nodeCondition),
      nodeWatch: nodeWatchStatus(wiring.nodeWatch),
      taint: taintStatus(wiring.tainter),
    }),
    logger: wiring.logger.child({ component: 'fanout' }),
  };
}
