/**
 * Builds one exporter instance from its configuration and ports: checks, store, runner,
 * scheduler, metrics registry and the three HTTP apps. No process state is touched here, so tests
 * build as many independent instances as they like.
 */

import type Koa from 'koa';
import type { Registry } from 'prom-client';
import { createApiApp } from './api/app.js';
import { createMetricsApp, createReadinessApp } from './api/side-apps.js';
import type { Check } from './checks/check.js';
import { createChecks } from './checks/index.js';
import { createCheckRunner, type CheckRunner } from './check-runner.js';
import type { Clock } from './clock.js';
import type { Config } from './config/config.js';
import type { RunCommand } from './exec/run-command.js';
import type { CudaProbeLoad, NvmlLoad } from './native/ports.js';
import { createXidLedger, createXidWatcher, type XidWatcher } from './checks/xid.js';
import { createGpuLock } from './gpu-lock.js';
import type { Logger } from './log.js';
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
}

export function buildExporter(config: Config, ports: ExporterPorts): Exporter {
  const xidLedger = createXidLedger({ debounceMs: 10_000 });
  const checks = createChecks(config, {
    runCommand: ports.runCommand,
    peers: () => config.peers,
    nvml: ports.nvml,
    cuda: ports.cuda,
    xidLedger,
    now: () => ports.clock.now(),
  });
  const store = createResultStore({ historySize: config.historySize });
  const runner = createCheckRunner({
    checks,
    store,
    clock: ports.clock,
    gpuLock: createGpuLock(),
    logger: ports.logger,
  });
  const scheduler = createScheduler({
    schedule: config.periodic,
    checks: config.periodicChecks,
    run: (check, trigger) => runner.run(check, {}, trigger),
    clock: ports.clock,
    nodeName: config.nodeName,
    logger: ports.logger.child({ component: 'scheduler' }),
  });
  const host: HostLabels = {
    nodeName: config.nodeName,
    cpuModel: ports.cpuModel,
    gpuModel: ports.gpuModel,
  };
  const registry = createMetricsRegistry({ store, checks, host, build: ports.build });
  const xidWatcher = createXidWatcher({
    nvml: ports.nvml,
    ledger: xidLedger,
    clock: ports.clock,
    logger: ports.logger.child({ component: 'xid' }),
    onCounted: () => void runner.run('xid', {}, 'event'),
  });
  return {
    checks,
    xidWatcher,
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
    }),
    metricsApp: createMetricsApp(
      cachedExposition(registry, () => store.version()),
      ports.logger,
    ),
    readinessApp: createReadinessApp(),
  };
}
