/**
 * Builds one exporter instance from its configuration and ports: checks, store, runner,
 * scheduler, metrics registry and the three HTTP apps. No process state is touched here, so tests
 * build as many independent instances as they like.
 */

import type Koa from 'koa';
import type { Registry } from 'prom-client';
import { createApiApp } from './api/app.js';
import { createKubernetesAuthorizer, createStaticTokenAuthorizer } from './api/auth.js';
import { createMetricsApp, createReadinessApp } from './api/side-apps.js';
import type { Check } from './checks/check.js';
import { CHECK_TABLE } from './checks/index.js';
import type { CheckExtras, CommonPorts, Listener } from './checks/module.js';
import type { CheckTable } from './checks/table.js';
import { createCheckRunner, type CheckRunner } from './check-runner.js';
import type { Clock } from './clock.js';
import type { KubeHealth } from './cluster/kube-health.js';
import { createHttpGet, type HttpGet } from './cluster/http-get.js';
import type { NodeLabeler } from './cluster/node-labeler.js';
import type { NodeWatch } from './cluster/node-watch.js';
import type { NodeHealth } from './node-health.js';
import { acknowledgeEvict } from './acknowledge.js';
import type { NodeTainter } from './cluster/node-taint.js';
import type { DeepCheck } from './cluster/deep-check.js';
import type { Postflight } from './cluster/postflight.js';
import type { PeerDirectory } from './cluster/peer-directory.js';
import type { KubeApi } from './k8s/ports.js';
import type { StartProcess } from './exec/start-process.js';
import type { PodInterface } from './network/interfaces.js';
import type { Config } from './config/config.js';
import type { RunCommand } from './exec/run-command.js';
import type { CudaProbeLoad, NvmlLoad } from './native/ports.js';
import { createGpuLock } from './gpu-lock.js';
import type { Logger } from './log.js';
import {
  cachedExposition,
  createMetricsRegistry,
  type BuildInfo,
  type HostLabels,
} from './metrics/registry.js';
import {
  checkIntervalSeconds,
  createScheduler,
  type CheckSchedules,
  type Scheduler,
} from './scheduler.js';
import { createResultStore, type ResultStore } from './store.js';
import { DEEP_CHECKS } from './deep-check-report.js';
import { clusterStatusDeps } from './cluster/wiring/cluster-status.js';
import { wireDeepCheck } from './cluster/wiring/deep-check.js';
import { iperfCheckPorts, iperfRoutes } from './cluster/wiring/iperf.js';
import {
  clusterCheckPorts,
  connectKubernetes,
  createLabeler,
  createTainter,
  watchOwnNode,
  peerList,
  type KubernetesSide,
} from './cluster/wiring/kubernetes.js';
import { wireNodeReporting, type NodeReporting } from './cluster/wiring/node-reporting.js';

export interface ExporterPorts {
  readonly runCommand: RunCommand;
  readonly nvml: NvmlLoad;
  readonly cuda: CudaProbeLoad;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly cpuModel: string;
  readonly gpuModel: string;
  readonly build: BuildInfo;
  /** The Kubernetes API; undefined in standalone mode. */
  readonly kube?: KubeApi | undefined;
  /** How the fan-out reaches other nodes' APIs. */
  readonly fetch?: HttpGet;
  /** Kubernetes mode: this exporter's bearer token (its service account) for other nodes' APIs. */
  readonly peerToken?: () => Promise<string | undefined>;
  /** Long-running processes (iperf3 servers); absent, the node-local iperf endpoints are off. */
  readonly startProcess?: StartProcess;
  /** This pod's own addresses (os.networkInterfaces). */
  readonly localAddresses?: () => readonly PodInterface[];
  /** The checks to build; CHECK_TABLE (every check of this build) unless a test brings its own. */
  readonly checkTable?: CheckTable;
}

/** What Kubernetes mode adds; main starts and stops it with the exporter. */
export interface ClusterParts {
  readonly peers: PeerDirectory;
  readonly labeler: NodeLabeler;
  /** This node's object, watched: label ownership and acknowledgements written on the node. */
  readonly nodeWatch: NodeWatch;
  /** The optional taint of an EVICT node; idle when AUTOPILOT_TAINT_EFFECT is none. */
  readonly tainter: NodeTainter;
  /** The node condition (GPUHealthy) and the Events on the node. */
  readonly reporting: NodeReporting;
  readonly kubeHealth: KubeHealth;
  readonly deepCheck: DeepCheck;
  readonly postflight: Postflight | undefined;
  /** Follows a Job a previous exporter left running, starts the timer schedule; returns its stop. */
  readonly scheduleDeepChecks: () => () => void;
}

export interface Exporter {
  readonly checks: ReadonlyMap<string, Check>;
  readonly store: ResultStore;
  readonly runner: CheckRunner;
  readonly scheduler: Scheduler;
  readonly registry: Registry;
  readonly apiApp: Koa;
  readonly metricsApp: Koa;
  readonly readinessApp: Koa;
  /** The checks' listeners (XID events), started and stopped with the exporter's listeners. */
  readonly checkListener: Listener;
  /** Kubernetes mode only. */
  readonly cluster: ClusterParts | undefined;
}

/** A node's answer holds its check texts; anything near this size is not an Autopilot answer. */
const FANOUT_MAX_ANSWER_BYTES = 32 * 1024 * 1024;

/**
 * The parts, in the order they need each other: the Kubernetes side (Kubernetes mode), the checks
 * and their ports, the core that runs and records them, the cluster parts that act on the node
 * (labels, deep check, post-flight), then the scheduler, the metrics and the three HTTP apps.
 */
export function buildExporter(config: Config, ports: ExporterPorts): Exporter {
  const side =
    ports.kube === undefined
      ? undefined
      : connectKubernetes(config, ports.kube, ports.clock, ports.logger);
  const httpGet = ports.fetch ?? createHttpGet(FANOUT_MAX_ANSWER_BYTES);
  // The cluster parts come after the checks and the runner that they drive, and the checks and
  // the GPU lock report to them: filled in once built.
  const late: Late = {};
  const created = (ports.checkTable ?? CHECK_TABLE).create(
    config,
    commonPorts(ports, side),
    checkExtras(config, ports, {
      side,
      httpGet,
      late,
      runOnEvent: (name) => void runner.run(name, {}, 'event'),
    }),
  );
  const { checks } = created;
  const store = createResultStore({
    historySize: config.historySize,
    countsForHealth: (name) => checks.get(name)?.affectsNodeHealth !== false,
    evictOn: config.evictOn,
  });
  const gpuLock = createGpuLock({ onExclusiveChange: () => late.labeler?.sync() });
  const runner = heldDuringDeepCheck(
    createCheckRunner({ checks, store, clock: ports.clock, gpuLock, logger: ports.logger }),
    checks,
    late,
    ports.clock,
  );
  const testing = (): boolean => gpuLock.holders().exclusive || late.deepCheck?.running() === true;
  const cluster =
    side === undefined
      ? undefined
      : wireCluster(config, ports, side, { checks, store, runner, testing, late });
  const core: Core = { checks, store, runner, testing, late };
  const scheduler = periodicScheduler(config, ports, core);
  const registry = metricsRegistry(config, ports, side, core);
  return {
    checks,
    checkListener: created.listener,
    cluster,
    store,
    runner,
    scheduler,
    registry,
    apiApp: apiApp(config, ports, core, side, cluster, httpGet),
    metricsApp: createMetricsApp(
      cachedExposition(registry, () =>
        side === undefined
          ? `${store.version()}/${testing()}`
          : `${store.version()}/${testing()}/${side.health.version()}/${side.peers.version()}/${cluster?.tainter.version()}`,
      ),
      ports.logger,
    ),
    readinessApp: createReadinessApp(),
  };
}

/** What buildExporter's parts share once the core is built. */
interface Core {
  readonly checks: ReadonlyMap<string, Check>;
  readonly store: ResultStore;
  readonly runner: CheckRunner;
  /** Something holds the GPUs: an exclusive check or the deep-check Job. */
  readonly testing: () => boolean;
  readonly late: Late;
}

/** The cluster parts that the checks, the GPU lock and the scheduler call before they exist. */
interface Late {
  labeler?: NodeLabeler;
  tainter?: NodeTainter;
  reporting?: NodeReporting;
  deepCheck?: DeepCheck;
}

/** The ports every check may use, the same whatever checks the table has. */
function commonPorts(ports: ExporterPorts, side: KubernetesSide | undefined): CommonPorts {
  return {
    nvml: ports.nvml,
    cuda: ports.cuda,
    run: ports.runCommand,
    clock: ports.clock,
    logger: ports.logger,
    kube: side?.kube,
  };
}

/** The wiring a few checks need beyond the common ports; the cluster-only parts are absent standalone. */
function checkExtras(
  config: Config,
  ports: ExporterPorts,
  parts: {
    readonly side: KubernetesSide | undefined;
    readonly httpGet: HttpGet;
    readonly late: Late;
    readonly runOnEvent: (check: string) => void;
  },
): CheckExtras {
  const { side, late } = parts;
  return {
    peers: peerList(config, side?.peers),
    onDcgmResult: (result) => void late.labeler?.recordDcgm(result),
    iperf: iperfCheckPorts(config, parts.httpGet, ports.peerToken, side),
    ...(side === undefined ? {} : clusterCheckPorts(config, side)),
    runOnEvent: parts.runOnEvent,
  };
}

/** Kubernetes mode's parts that act on the node: its label, the deep check, post-flight. */
function wireCluster(
  config: Config,
  ports: ExporterPorts,
  side: KubernetesSide,
  core: Core,
): ClusterParts {
  const { clock, logger } = ports;
  const labeler = createLabeler(config, side, {
    ...core,
    clock,
    logger,
    // The same function as POST /acknowledge, with the same hook: one audit line, one Event.
    acknowledge: (request) =>
      acknowledgeEvict(
        {
          store: core.store,
          logger: logger.child({ component: 'labels' }),
          now: () => clock.now(),
          onAcknowledged: acknowledgedHook(core.late),
        },
        request.via === 'annotation' ? `node annotation (${request.request})` : 'node label',
        request.via === 'annotation' ? 'node-annotation' : 'node-label',
      ),
  });
  const nodeWatch = watchOwnNode(config, side, labeler, { clock, logger });
  core.late.labeler = labeler;
  const reporting = wireNodeReporting(config, side, {
    store: core.store,
    countsForHealth: (name) => core.checks.get(name)?.affectsNodeHealth !== false,
    deepCheck: () => core.late.deepCheck,
    clock,
    logger,
  });
  core.late.reporting = reporting;
  const deep = wireDeepCheck(config, {
    ...core,
    kube: side.kube,
    nvml: ports.nvml,
    labeler,
    onChanged: () => reporting.deepCheckChanged(),
    clock,
    logger,
  });
  core.late.deepCheck = deep.deepCheck;
  const tainter = createTainter(config, side, { store: core.store, clock, logger });
  core.late.tainter = tainter;
  return {
    peers: side.peers,
    labeler,
    nodeWatch,
    tainter,
    reporting,
    kubeHealth: side.health,
    ...deep,
  };
}

/** After any acknowledge (the API's or one written on the node). */
function acknowledgedHook(late: Late): (health: NodeHealth, caller: string) => void {
  return (_health, caller) => {
    late.labeler?.sync();
    late.reporting?.acknowledged(caller);
  };
}

function periodicScheduler(config: Config, ports: ExporterPorts, core: Core): Scheduler {
  const { runner } = core;
  return createScheduler({
    schedule: config.periodic,
    checks: config.periodicChecks,
    run: (check, trigger) => runner.run(check, {}, trigger),
    clock: ports.clock,
    nodeName: config.nodeName,
    logger: ports.logger.child({ component: 'scheduler' }),
  });
}

function metricsRegistry(
  config: Config,
  ports: ExporterPorts,
  side: KubernetesSide | undefined,
  core: Core,
): Registry {
  const host: HostLabels = {
    nodeName: config.nodeName,
    cpuModel: ports.cpuModel,
    gpuModel: ports.gpuModel,
  };
  return createMetricsRegistry({
    store: core.store,
    checks: core.checks,
    host,
    build: ports.build,
    testing: core.testing,
    now: () => ports.clock.now(),
    checkIntervals: () =>
      checkIntervalSeconds(
        checkSchedules(config, side !== undefined, core.checks),
        ports.clock.now(),
      ),
    ...(side === undefined
      ? {}
      : {
          kubernetes: {
            health: side.health,
            peers: () => side.peers.peers(),
            isolationBreakerOpen: () => core.late.tainter?.breakerOpen() === true,
          },
        }),
  });
}

/** The schedules as configured; a deep check without an image for its Job never starts. */
function checkSchedules(
  config: Config,
  kubernetes: boolean,
  checks: ReadonlyMap<string, Check>,
): CheckSchedules {
  const known = (names: readonly string[]): string[] => names.filter((name) => checks.has(name));
  return {
    periodic: config.periodic,
    periodicChecks: known(config.periodicChecks),
    ...(kubernetes && config.deepcheckImage !== undefined
      ? {
          deep: {
            schedule: config.deepCheckSchedule,
            checks: known(DEEP_CHECKS.map(([name]) => name)),
          },
        }
      : {}),
  };
}

function apiApp(
  config: Config,
  ports: ExporterPorts,
  core: Core,
  side: KubernetesSide | undefined,
  cluster: ClusterParts | undefined,
  httpGet: HttpGet,
): Koa {
  const { checks, store, runner, late } = core;
  const { clock, logger } = ports;
  const iperf = iperfRoutes(config, ports);
  return createApiApp({
    nodeName: config.nodeName,
    checks,
    periodicChecks: config.periodicChecks,
    runner,
    store,
    logger: logger.child({ component: 'api' }),
    authorizer:
      side === undefined
        ? createStaticTokenAuthorizer(config.apiToken)
        : createKubernetesAuthorizer({
            kube: side.kube,
            now: () => clock.now(),
            logger: logger.child({ component: 'auth' }),
          }),
    access: config.apiAccess,
    now: () => clock.now(),
    cluster:
      side === undefined || cluster === undefined
        ? undefined
        : clusterStatusDeps(config, side, {
            ...core,
            labeler: cluster.labeler,
            tainter: cluster.tainter,
            ...(cluster.reporting.condition === undefined
              ? {}
              : { condition: cluster.reporting.condition }),
            nodeWatch: cluster.nodeWatch,
            fetch: httpGet,
            clock,
            logger,
          }),
    onAcknowledged: acknowledgedHook(late),
    gpuModel: ports.gpuModel,
    testing: core.testing,
    ...(cluster === undefined ? {} : { startDeepCheck: () => cluster.deepCheck.start() }),
    ...(iperf === undefined ? {} : { iperf }),
  });
}

/**
 * A GPU check while the deep-check Job holds the GPUs, from any trigger (the periodic round, the
 * API, post-flight): not run, so it neither disturbs DCGM level 3 (whose failure would evict the
 * node) nor fails against it ("another diagnostic is running"). Answered SKIP with the reason and
 * not recorded, so the last results stand.
 */
function heldDuringDeepCheck(
  runner: CheckRunner,
  checks: ReadonlyMap<string, Check>,
  late: Late,
  clock: Clock,
): CheckRunner {
  return {
    run: async (check, params, trigger) => {
      if (checks.get(check)?.usesGpu !== true) return runner.run(check, params, trigger);
      // At start-up the round waits (bounded by the kube timeout) to learn whether a Job left
      // running by the previous exporter holds the GPUs; skipping instead would lose the round.
      await late.deepCheck?.resumed();
      if (late.deepCheck?.running() !== true) return runner.run(check, params, trigger);
      const now = clock.now();
      return {
        check,
        trigger,
        params,
        startedAt: now,
        finishedAt: now,
        verdict: 'SKIP',
        reason: 'the deep-check Job holds the GPUs',
        devices: [],
        samples: [],
      };
    },
    active: () => runner.active(),
    shutdown: (graceMs) => runner.shutdown(graceMs),
  };
}
