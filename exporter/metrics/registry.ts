/**
 * The Prometheus registry of one exporter instance. Every family is rebuilt from the store at
 * scrape time (collect), so a scrape never waits on a check and series of GPUs or peers that
 * vanished from the latest run vanish from /metrics too.
 */

import { Counter, Gauge, Registry } from 'prom-client';
import { TRIGGERS, VERDICTS, type Check, type CheckRun, type Sample } from '../checks/check.js';
import { NODE_STATES, type NodeHealth, type NodeState } from '../node-health.js';
import { isSuccess, type ResultStore } from '../store.js';
import {
  ALL_METRICS,
  SAMPLE_METRICS,
  type CoreMetricName,
  type MetricSpec,
  type SampleMetricName,
} from './catalogue.js';

export interface HostLabels {
  readonly nodeName: string;
  readonly cpuModel: string;
  readonly gpuModel: string;
}

export interface BuildInfo {
  readonly version: string;
  readonly nodejs: string;
}

export interface MetricsDeps {
  readonly store: ResultStore;
  readonly checks: ReadonlyMap<string, Check>;
  readonly host: HostLabels;
  readonly build: BuildInfo;
  /** An exclusive check or the deep check holds the GPUs (the node label shows TESTING). */
  readonly testing?: () => boolean;
  /** Kubernetes mode only. */
  readonly kubernetes?: KubernetesView;
  /**
   * Epoch milliseconds. Dates what the store does not: the exporter's start (the state before any
   * check concluded) and TESTING. Without it, those states have no autopilot_node_state_since_seconds.
   */
  readonly now?: () => number;
  /** Seconds between scheduled runs per check, from the configured schedules; absent: none. */
  readonly checkIntervals?: () => ReadonlyMap<string, number>;
}

/**
 * The little the metrics read of the Kubernetes side, spelled here so that metrics/ depends on no
 * cluster type: cluster/kube-health.ts and cluster/peer-directory.ts satisfy it as they are.
 */
export interface KubernetesView {
  readonly health: {
    snapshot(): {
      /** The last API call answered. */
      readonly up: boolean;
      /** Failed calls per API operation since start. */
      readonly failures: ReadonlyMap<string, number>;
    };
  };
  /** Every known Autopilot pod, ready or not. */
  readonly peers: () => readonly { readonly ready: boolean }[];
  /** The breaker refused this EVICT node its taint (cluster/node-taint.ts); absent: never. */
  readonly isolationBreakerOpen?: () => boolean;
}

export function createMetricsRegistry(deps: MetricsDeps): Registry {
  const registry = new Registry();
  const { store, checks, host } = deps;
  const checkList = [...checks.values()];
  const latestOf = (): CheckRun[] => checkList.flatMap((c) => store.latest(c.name) ?? []);
  const conclusiveOf = (): Map<string, CheckRun> =>
    new Map(store.conclusiveRuns().map((run) => [run.check, run]));

  const gauge = (name: CoreMetricName | SampleMetricName, fill: (g: Gauge) => void): void => {
    const spec: MetricSpec = ALL_METRICS[name]!;
    new Gauge({
      name,
      help: spec.help,
      labelNames: spec.labelNames,
      registers: [registry],
      collect() {
        this.reset();
        fill(this);
      },
    });
  };

  const counter = (name: CoreMetricName | SampleMetricName, fill: (c: Counter) => void): void => {
    const spec: MetricSpec = ALL_METRICS[name]!;
    new Counter({
      name,
      help: spec.help,
      labelNames: spec.labelNames,
      registers: [registry],
      collect() {
        this.reset();
        fill(this);
      },
    });
  };

  gauge('autopilot_health_checks', (g) => {
    const conclusive = conclusiveOf();
    for (const check of checkList) {
      for (const device of conclusive.get(check.name)?.devices ?? []) {
        if (device.compatValue === undefined) continue;
        g.set(
          {
            health: check.compatHealth,
            node: host.nodeName,
            cpumodel: host.cpuModel,
            gpumodel: host.gpuModel,
            deviceid: device.id,
          },
          device.compatValue,
        );
      }
    }
  });

  gauge('autopilot_check_success', (g) => {
    for (const run of latestOf()) g.set({ check: run.check }, isSuccess(run.verdict) ? 1 : 0);
  });
  gauge('autopilot_check_verdict', (g) => {
    for (const run of latestOf()) {
      for (const verdict of VERDICTS)
        g.set({ check: run.check, verdict }, run.verdict === verdict ? 1 : 0);
    }
  });
  gauge('autopilot_check_duration_seconds', (g) => {
    for (const run of latestOf())
      g.set({ check: run.check }, (run.finishedAt - run.startedAt) / 1000);
  });
  gauge('autopilot_check_last_run_timestamp_seconds', (g) => {
    for (const run of latestOf()) g.set({ check: run.check }, run.finishedAt / 1000);
  });
  gauge('autopilot_check_last_success_timestamp_seconds', (g) => {
    for (const check of checkList) {
      const at = store.lastSuccessAt(check.name);
      if (at !== undefined) g.set({ check: check.name }, at / 1000);
    }
  });

  gauge('autopilot_check_interval_seconds', (g) => {
    for (const [check, seconds] of deps.checkIntervals?.() ?? []) g.set({ check }, seconds);
  });

  counter('autopilot_check_runs_total', (c) => {
    for (const check of checkList) {
      for (const verdict of VERDICTS)
        c.inc({ check: check.name, verdict }, store.runCount(check.name, verdict));
    }
  });

  counter('autopilot_check_trigger_runs_total', (c) => {
    // Only the pairs that happened: most checks never run post-flight or in a deep check.
    for (const check of checkList) {
      for (const trigger of TRIGGERS) {
        const count = store.triggerCount(check.name, trigger);
        if (count > 0) c.inc({ check: check.name, trigger }, count);
      }
    }
  });

  gauge('autopilot_gpu_verdict', (g) => {
    const conclusive = conclusiveOf();
    for (const check of checkList.filter((c) => c.deviceKind === 'gpu')) {
      for (const device of conclusive.get(check.name)?.devices ?? []) {
        for (const verdict of VERDICTS) {
          g.set(
            { check: check.name, gpu: device.id, verdict, gpumodel: host.gpuModel },
            device.verdict === verdict ? 1 : 0,
          );
        }
      }
    }
  });
  gauge('autopilot_check_peers', (g) => {
    for (const check of checkList.filter((c) => c.deviceKind === 'peer')) {
      const run = store.latest(check.name);
      if (run === undefined) continue;
      for (const verdict of VERDICTS) {
        g.set(
          { check: check.name, verdict },
          run.devices.filter((d) => d.verdict === verdict).length,
        );
      }
    }
  });
  gauge('autopilot_node_health_state', (g) => {
    const state = shownState(store.health().state, deps.testing?.() === true);
    for (const candidate of NODE_STATES) g.set({ state: candidate }, candidate === state ? 1 : 0);
  });
  const stateSince = stateSinceTracker(deps.now);
  gauge('autopilot_node_state_since_seconds', (g) => {
    const shown = stateSince(store.health(), deps.testing?.() === true);
    if (shown !== undefined) g.set({ state: shown.state }, shown.since / 1000);
  });
  gauge('autopilot_gpu_info', (g) => {
    for (const gpu of gpuIdentities(store.conclusiveRuns(), checks))
      g.set({ ...gpu, gpumodel: host.gpuModel }, 1);
  });
  const { kubernetes } = deps;
  gauge('autopilot_kubernetes_api_up', (g) => {
    // reset() leaves a label-less gauge at 0; in standalone mode that 0 would read as "the API is
    // down" and fire AutopilotKubernetesAPIDown, so the series goes.
    if (kubernetes === undefined) g.remove();
    else g.set(kubernetes.health.snapshot().up ? 1 : 0);
  });
  counter('autopilot_kubernetes_api_errors_total', (c) => {
    if (kubernetes === undefined) return;
    for (const [operation, count] of kubernetes.health.snapshot().failures)
      c.inc({ operation }, count);
  });
  gauge('autopilot_peers', (g) => {
    if (kubernetes === undefined) return;
    const peers = kubernetes.peers();
    const ready = peers.filter((peer) => peer.ready).length;
    g.set({ state: 'ready' }, ready);
    g.set({ state: 'not_ready' }, peers.length - ready);
  });
  gauge('autopilot_isolation_breaker_open', (g) => {
    // As autopilot_kubernetes_api_up: no series standalone, where there is no taint.
    if (kubernetes === undefined) g.remove();
    else g.set(kubernetes.isolationBreakerOpen?.() === true ? 1 : 0);
  });
  gauge('autopilot_build_info', (g) => {
    g.set({ version: deps.build.version, nodejs: deps.build.nodejs }, 1);
  });

  for (const name of Object.keys(SAMPLE_METRICS) as SampleMetricName[]) {
    const spec: MetricSpec = SAMPLE_METRICS[name];
    // The model is added here, where samples become series, rather than by each check: every GPU
    // family (pairs of GPUs included) gets the very value of autopilot_health_checks' gpumodel,
    // and the catalogue alone says which families carry it. Fleet rules group by it (issue 20).
    const model: Record<string, string> = spec.labelNames.includes('gpumodel')
      ? { gpumodel: host.gpuModel }
      : {};
    const samplesOf = (): Sample[] =>
      [...conclusiveOf().values()].flatMap((run) =>
        run.samples
          .filter((s) => s.metric === name)
          .map((s) => ({ ...s, labels: { ...s.labels, ...model } })),
      );
    if (spec.type === 'counter') {
      counter(name, (c) => {
        for (const sample of samplesOf()) c.inc(sample.labels, sample.value);
      });
    } else {
      gauge(name, (g) => {
        for (const sample of samplesOf()) g.set(sample.labels, sample.value);
      });
    }
  }
  return registry;
}

/** TESTING is the label's state while an exclusive check or the deep check holds the GPUs. */
function shownState(stored: NodeState, testing: boolean): NodeState {
  return stored !== 'EVICT' && testing ? 'TESTING' : stored;
}

/**
 * The state /metrics shows and since when (epoch ms). The store dates its own states; TESTING comes
 * from the GPU lock, which keeps no time, so it is dated from the first scrape that shows it (within
 * a scrape interval), and the state after it from the first scrape that no longer does.
 */
export function stateSinceTracker(
  now: (() => number) | undefined,
): (health: NodeHealth, testing: boolean) => { state: NodeState; since: number } | undefined {
  const startedAt = now?.();
  let testingSince: number | undefined;
  let testingEnded = 0;
  return (health, testing) => {
    const state = shownState(health.state, testing);
    if (state === 'TESTING') {
      testingSince ??= now?.();
      return testingSince === undefined ? undefined : { state, since: testingSince };
    }
    if (testingSince !== undefined) {
      testingEnded = now?.() ?? 0;
      testingSince = undefined;
    }
    // since 0: the state the node started in (UNKNOWN), never changed since the exporter started.
    const stored = health.since === 0 ? startedAt : health.since;
    return stored === undefined ? undefined : { state, since: Math.max(stored, testingEnded) };
  };
}

/**
 * Each GPU's identity as the GPU checks' device evidence gives it (checks/gpu-common.ts), from the
 * most recent conclusive result that has one; GPUs no check still lists are gone.
 */
function gpuIdentities(
  runs: readonly CheckRun[],
  checks: ReadonlyMap<string, Check>,
): Array<Record<'gpu' | 'UUID' | 'serial' | 'pci_bus_id', string>> {
  const latest = new Map<
    string,
    { at: number; labels: Record<'gpu' | 'UUID' | 'serial' | 'pci_bus_id', string> }
  >();
  for (const run of runs) {
    if (checks.get(run.check)?.deviceKind !== 'gpu') continue;
    for (const device of run.devices) {
      const { uuid, serial, pciBusId } = device.evidence;
      if (typeof uuid !== 'string' || uuid === '' || typeof pciBusId !== 'string') continue;
      const at = device.observedAt ?? run.finishedAt;
      if ((latest.get(device.id)?.at ?? -Infinity) >= at) continue;
      const labels = {
        gpu: device.id,
        UUID: uuid,
        serial: typeof serial === 'string' ? serial : '',
        pci_bus_id: pciBusId,
      };
      latest.set(device.id, { at, labels });
    }
  }
  return [...latest.values()].map((entry) => entry.labels);
}

/** What the /metrics endpoint serves; a prom-client Registry is one. */
export interface Exposition {
  readonly contentType: string;
  metrics(): Promise<string>;
}

/**
 * Every value in the registry derives from the store, so the rendered text stays valid until the
 * store changes. Checks end minutes apart while scrapes come every few seconds: nearly every scrape
 * is served from this cache instead of re-rendering thousands of series.
 */
export function cachedExposition(
  registry: Exposition,
  storeVersion: () => number | string,
): Exposition {
  let cached: { readonly version: number | string; readonly text: Promise<string> } | undefined;
  return {
    contentType: registry.contentType,
    metrics() {
      const version = storeVersion();
      if (cached?.version !== version) {
        const text = registry.metrics();
        cached = { version, text };
        // A failed rendering must not be served from the cache.
        text.catch(() => {
          if (cached?.text === text) cached = undefined;
        });
      }
      return cached.text;
    },
  };
}
