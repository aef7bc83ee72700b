/**
 * Builds one exporter instance from its configuration and ports: checks, store, runner,
 * scheduler, metrics registry and the three HTTP apps. No process state is touched here, so tests
 * build as many independent instances as they like.
 */

import type Koa from 'koa';
import { createKubernetesAuthorizer, createStaticTokenAuthorizer } from './api/auth.js';
import type { ClusterDeps } from './api/cluster-status.js';
import type { Registry } from 'prom-client';
import { createApiApp, parseMaxAge, recentAnswer } from './api/app.js';
import { createMetricsApp, createReadinessApp } from './api/side-apps.js';
import type { Check, CheckRun, Trigger } from './checks/check.js';
import { createChecks } from './checks/index.js';
import { createCheckRunner, type CheckRunner } from './check-runner.js';
import { sleep, type Clock } from './clock.js';
import { observeKubeApi, type KubeHealth } from './cluster/kube-health.js';
import { FANOUT_HEADER, resolveTargets } from './cluster/fanout.js';
import { parseJob } from './selectors.js';
import { createHttpGet, type HttpGet } from './cluster/http-get.js';
import { createTopology } from './cluster/topology.js';
import { expectedGpusOfNode } from './cluster/expected-gpus.js';
import { createNodeLabeler, type NodeLabeler } from './cluster/node-labeler.js';
import {
  DEEP_CHECK_JOB_PREFIX,
  createDeepCheck,
  scheduleDeepChecks,
  type DeepCheck,
} from './cluster/deep-check.js';
import { gpusBusy } from './cluster/gpu-idle.js';
import { createPostflight, type Postflight } from './cluster/postflight.js';
import { createPeerDirectory, type PeerDirectory } from './cluster/peer-directory.js';
import type { KubeApi } from './k8s/ports.js';
import type { StartProcess } from './exec/start-process.js';
import { createIperfService } from './network/iperf-service.js';
import type { PodInterface } from './network/interfaces.js';
import type { IperfNode } from './checks/iperf.js';
import type { PingPeer } from './checks/ping.js';
import type { Config } from './config/config.js';
import type { RunCommand } from './exec/run-command.js';
import type { CudaProbeLoad, NvmlLoad } from './native/ports.js';
import { createXidLedger, createXidWatcher, type XidWatcher } from './checks/xid.js';
import { createGpuLock } from './gpu-lock.js';
import type { Logger } from './log.js';
import { urlHost } from './net-names.js';
import {
  cachedExposition,
  createMetricsRegistry,
  type BuildInfo,
  type HostLabels,
} from './metrics/registry.js';
import { createScheduler, type Scheduler } from './scheduler.js';
import { createResultStore, type ResultStore } from './store.js';

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
}

/** What Kubernetes mode adds; main starts and stops it with the exporter. */
export interface ClusterParts {
  readonly peers: PeerDirectory;
  readonly labeler: NodeLabeler;
  readonly kubeHealth: KubeHealth;
  readonly deepCheck: DeepCheck;
  readonly postflight: Postflight | undefined;
  /** Starts the --invasive-check-timer schedule; returns its stop. */
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
  /** Listens to XID events while the exporter serves; runs the xid check when one counts. */
  readonly xidWatcher: XidWatcher;
  /** Kubernetes mode only. */
  readonly cluster: ClusterParts | undefined;
}

/** A node's answer holds its check texts; anything near this size is not an Autopilot answer. */
const FANOUT_MAX_ANSWER_BYTES = 32 * 1024 * 1024;

/** DCGM level 3 takes about 15 minutes on 8 GPUs, gpumem a few more. */
const DEEP_CHECK_DEADLINE_S = 2 * 3600;
const DEEP_CHECK_PENDING_MS = 10 * 60_000;
const DEEP_CHECK_POLL_MS = 10_000;
const POSTFLIGHT_POLL_MS = 15_000;

/** Slack for a node's HTTP answer on top of its checks' own deadlines. */
const FANOUT_MARGIN_MS = 15_000;

export function buildExporter(config: Config, ports: ExporterPorts): Exporter {
  const xidLedger = createXidLedger({ debounceMs: 10_000 });
  const observed =
    ports.kube === undefined ? undefined : observeKubeApi(ports.kube, () => ports.clock.now());
  const kube = observed?.api;
  const peerDirectory =
    kube === undefined
      ? undefined
      : createPeerDirectory({
          kube,
          namespace: config.namespace ?? 'default',
          service: config.serviceName,
          portName: 'healthcheck',
          clock: ports.clock,
          logger: ports.logger.child({ component: 'peers' }),
        });
  // Standalone: the configured list. Kubernetes: every other node's Autopilot pod, by node name.
  const peers = (): readonly PingPeer[] => {
    if (peerDirectory === undefined) return config.peers;
    const byNode = new Map<string, PingPeer>();
    for (const peer of peerDirectory.peers()) {
      if (peer.node === undefined || peer.node === config.nodeName) continue;
      // A ready pod is the one to ping when a node briefly has two (a rolling update).
      if (!byNode.has(peer.node) || peer.ready)
        byNode.set(peer.node, { name: peer.node, address: peer.address });
    }
    return [...byNode.values()];
  };
  const topology =
    kube === undefined
      ? undefined
      : createTopology({
          kube,
          namespace: config.namespace ?? 'default',
          podSelector: config.podSelector,
        });
  const httpGet = ports.fetch ?? createHttpGet(FANOUT_MAX_ANSWER_BYTES);
  const iperfNodes =
    topology === undefined || peerDirectory === undefined
      ? undefined
      : async (): Promise<IperfNode[]> => {
          const known = peerDirectory.peers();
          return (await topology.nodes()).flatMap((node) => {
            const peer =
              known.find((p) => p.node === node.node && p.ready) ??
              known.find((p) => p.node === node.node);
            if (peer === undefined) return [];
            const host = urlHost(peer.address);
            return [
              {
                node: node.node,
                api: `http://${host}:${peer.port ?? config.apiPort}`,
                // The iperf3 servers bind IPv4 addresses only.
                interfaces: Object.fromEntries(
                  node.interfaces
                    .filter((nic) => !nic.address.includes(':'))
                    .map((nic) => [nic.name, nic.address]),
                ),
              },
            ];
          });
        };
  const checks = createChecks(config, {
    runCommand: ports.runCommand,
    peers,
    onDcgmResult: (result) => void labeler?.recordDcgm(result),
    iperf: {
      nodes: iperfNodes,
      ask: async (url, signal) => {
        const token = await ports.peerToken?.();
        const response = await httpGet(url, {
          headers: {
            accept: 'application/json',
            [FANOUT_HEADER]: config.nodeName,
            ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
          },
          signal,
        });
        return { status: response.status, body: await response.text() };
      },
    },
    ...(kube === undefined || topology === undefined
      ? {}
      : {
          targetsOf: async (names: readonly string[]) => {
            const wanted = new Set(names);
            return (await topology.nodes())
              .filter((node) => wanted.has(node.node))
              .flatMap((node) =>
                node.interfaces.map((nic) => ({
                  peer: node.node,
                  interface: nic.name,
                  address: nic.address,
                })),
              );
          },
          selectNodes: async (selection: {
            job: string | undefined;
            nodelabel: string | undefined;
          }) =>
            (
              await resolveTargets(
                {
                  hosts: [],
                  job: selection.job === undefined ? undefined : parseJob(selection.job),
                  nodelabel: selection.nodelabel,
                },
                kube,
                [],
              )
            ).nodes,
        }),
    kube,
    expectedGpus:
      kube === undefined
        ? undefined
        : async () => expectedGpusOfNode(await kube.getNode(config.nodeName)),
    sleep: (ms, signal) => sleep(ports.clock, ms, signal),
    nvml: ports.nvml,
    cuda: ports.cuda,
    xidLedger,
    now: () => ports.clock.now(),
  });
  const store = createResultStore({
    historySize: config.historySize,
    countsForHealth: (name) => checks.get(name)?.affectsNodeHealth !== false,
    evictOn: config.evictOn,
  });
  let labeler: NodeLabeler | undefined;
  let deepCheck: DeepCheck | undefined;
  let postflight: Postflight | undefined;
  const gpuLock = createGpuLock({ onExclusiveChange: () => labeler?.sync() });
  const runner = createCheckRunner({
    checks,
    store,
    clock: ports.clock,
    gpuLock,
    logger: ports.logger,
  });
  if (kube !== undefined) {
    labeler = createNodeLabeler({
      kube,
      nodeName: config.nodeName,
      health: () => store.health(),
      exclusiveRunning: () => testing(),
      onEvictFound: (reason, dcgmFailedLevel) =>
        store.restoreEvict(reason, ports.clock.now(), dcgmFailedLevel),
      clock: ports.clock,
      logger: ports.logger.child({ component: 'labels' }),
    });
    store.onHealthChange(() => labeler?.sync());
    const busy = () =>
      gpusBusy({
        kube,
        nvml: ports.nvml,
        nodeName: config.nodeName,
        ownJobPrefix: DEEP_CHECK_JOB_PREFIX,
      });
    deepCheck = createDeepCheck({
      kube,
      settings: {
        namespace: config.namespace ?? 'default',
        nodeName: config.nodeName,
        image: config.deepcheckImage,
        command: config.deepcheckCommand,
        priorityClassName: config.deepcheckPriorityClass,
        serviceAccountName: undefined,
        ttlSeconds: config.deepCheckJobTtlSeconds,
        activeDeadlineSeconds: DEEP_CHECK_DEADLINE_S,
        pendingTimeoutMs: DEEP_CHECK_PENDING_MS,
        pollMs: DEEP_CHECK_POLL_MS,
        env: {
          DCGM_FATAL_ERRORS: config.dcgmFatalErrors.join(','),
          AUTOPILOT_DCGMI_COMMAND: config.dcgmiCommand,
          AUTOPILOT_NVML_LIBRARY: config.nvmlLibrary,
        },
      },
      gpusBusy: busy,
      record: (run) => store.record(run),
      passed: (at) => store.acknowledge(at),
      dcgmResult: (result) => void labeler?.recordDcgm(result),
      changed: () => labeler?.sync(),
      clock: ports.clock,
      logger: ports.logger.child({ component: 'deepcheck' }),
    });
    postflight =
      config.postflightChecks.length === 0
        ? undefined
        : createPostflight({
            kube,
            nodeName: config.nodeName,
            checks: config.postflightChecks.map((name) => [
              name,
              name === 'dcgm' ? { r: '1' } : {},
            ]),
            run: (name, params, trigger) => runner.run(name, params, trigger),
            gpusBusy: busy,
            ownJobPrefix: DEEP_CHECK_JOB_PREFIX,
            clock: ports.clock,
            logger: ports.logger.child({ component: 'postflight' }),
            pollMs: POSTFLIGHT_POLL_MS,
          });
  }
  const scheduler = createScheduler({
    schedule: config.periodic,
    checks: config.periodicChecks,
    run: (check, trigger) =>
      deepCheck?.running() === true && checks.get(check)?.usesGpu === true
        ? Promise.resolve(heldByDeepCheck(check, trigger, ports.clock.now()))
        : runner.run(check, {}, trigger),
    clock: ports.clock,
    nodeName: config.nodeName,
    logger: ports.logger.child({ component: 'scheduler' }),
  });
  const host: HostLabels = {
    nodeName: config.nodeName,
    cpuModel: ports.cpuModel,
    gpuModel: ports.gpuModel,
  };
  const testing = (): boolean => gpuLock.holders().exclusive || deepCheck?.running() === true;
  const registry = createMetricsRegistry({
    store,
    checks,
    host,
    build: ports.build,
    testing,
    ...(observed === undefined || peerDirectory === undefined
      ? {}
      : { kubernetes: { health: observed.health, peers: () => peerDirectory.peers() } }),
  });
  const xidWatcher = createXidWatcher({
    nvml: ports.nvml,
    ledger: xidLedger,
    clock: ports.clock,
    logger: ports.logger.child({ component: 'xid' }),
    onChange: () => void runner.run('xid', {}, 'event'),
  });
  const cluster: ClusterDeps | undefined =
    kube === undefined || peerDirectory === undefined || observed === undefined
      ? undefined
      : {
          kube,
          peers: () => peerDirectory.peers(),
          fetch: httpGet,
          now: () => ports.clock.now(),
          nodeName: config.nodeName,
          defaultPort: config.apiPort,
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
                recentAnswer(check, store, own, maxAgeMs, ports.clock.now()) ??
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
          status: () => kubernetesStatus(observed.health, peerDirectory, labeler),
          logger: ports.logger.child({ component: 'fanout' }),
        };
  return {
    checks,
    xidWatcher,
    cluster:
      peerDirectory === undefined ||
      labeler === undefined ||
      observed === undefined ||
      deepCheck === undefined
        ? undefined
        : {
            peers: peerDirectory,
            labeler,
            kubeHealth: observed.health,
            deepCheck,
            postflight,
            scheduleDeepChecks: () =>
              scheduleDeepChecks({
                schedule: config.deepCheckSchedule,
                deepCheck: deepCheck,
                clock: ports.clock,
                nodeName: config.nodeName,
                logger: ports.logger.child({ component: 'deepcheck' }),
              }),
          },
    store,
    runner,
    scheduler,
    registry,
    apiApp: createApiApp({
      nodeName: config.nodeName,
      checks,
      periodicChecks: config.periodicChecks,
      runner,
      store,
      logger: ports.logger.child({ component: 'api' }),
      authorizer:
        kube === undefined
          ? createStaticTokenAuthorizer(config.apiToken)
          : createKubernetesAuthorizer({
              kube,
              now: () => ports.clock.now(),
              logger: ports.logger.child({ component: 'auth' }),
            }),
      access: config.apiAccess,
      now: () => ports.clock.now(),
      cluster,
      onAcknowledged: () => labeler?.sync(),
      ...(deepCheck === undefined ? {} : { startDeepCheck: () => deepCheck.start() }),
      ...(ports.startProcess === undefined
        ? {}
        : {
            iperf: {
              service: createIperfService({
                startProcess: ports.startProcess,
                runCommand: ports.runCommand,
                command: config.iperfCommand,
                logger: ports.logger.child({ component: 'iperf' }),
              }),
              localAddresses: ports.localAddresses ?? (() => []),
              podName: config.podName ?? `autopilot-${config.nodeName}`,
              nodeName: config.nodeName,
            },
          }),
    }),
    metricsApp: createMetricsApp(
      cachedExposition(registry, () =>
        observed === undefined || peerDirectory === undefined
          ? `${store.version()}/${testing()}`
          : `${store.version()}/${testing()}/${observed.health.version()}/${peerDirectory.version()}`,
      ),
      ports.logger,
    ),
    readinessApp: createReadinessApp(),
  };
}

/** The Kubernetes connection as /status JSON shows it: what works, and the last thing that did not. */
function kubernetesStatus(
  health: KubeHealth,
  peers: PeerDirectory,
  labeler: NodeLabeler | undefined,
): Record<string, unknown> {
  const api = health.snapshot();
  const discovery = peers.status();
  const labels = labeler?.status();
  const iso = (at: number | undefined): string | null =>
    at === undefined ? null : new Date(at).toISOString();
  return {
    apiUp: api.up,
    lastApiError:
      api.lastFailure === undefined
        ? null
        : {
            operation: api.lastFailure.operation,
            message: api.lastFailure.message,
            at: iso(api.lastFailure.at),
          },
    peers: {
      synced: discovery.synced,
      watching: discovery.watching,
      known: peers.peers().length,
      ready: peers.peers().filter((peer) => peer.ready).length,
      lastError:
        discovery.lastError === undefined
          ? null
          : { message: discovery.lastError.message, at: iso(discovery.lastError.at) },
    },
    nodeLabel: {
      applied: labels?.applied ?? null,
      pending: labels?.pending ?? null,
      lastError:
        labels?.lastError === undefined
          ? null
          : { message: labels.lastError.message, at: iso(labels.lastError.at) },
    },
  };
}

/**
 * A periodic GPU check while the deep-check Job holds the GPUs: not run, so it neither disturbs
 * DCGM level 3 nor fails against it ("another diagnostic is running"). Not recorded either, so the
 * last results stand.
 */
function heldByDeepCheck(check: string, trigger: Trigger, now: number): CheckRun {
  return {
    check,
    trigger,
    params: {},
    startedAt: now,
    finishedAt: now,
    verdict: 'SKIP',
    reason: 'the deep-check Job holds the GPUs',
    devices: [],
    samples: [],
  };
}
