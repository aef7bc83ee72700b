import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, jest, test } from '@jest/globals';
import type { Check } from '../../exporter/checks/check.js';
import { ALL_METRICS } from '../../exporter/metrics/catalogue.js';
import { cachedExposition, createMetricsRegistry } from '../../exporter/metrics/registry.js';
import { createResultStore, type ResultStore } from '../../exporter/store.js';
import { device, makeRun } from '../fakes/runs.js';
import { checkStub } from '../fakes/check-stub.js';

const T = Date.UTC(2026, 0, 1, 12);
const GOLDEN_DIR = join(import.meta.dirname, '..', 'golden');

const CHECKS = new Map<string, Check>([
  ['ping', checkStub('ping', 'peer')],
  ['gpupower', checkStub('gpupower', 'gpu', 'power-slowdown')],
]);

function setup(testing?: () => boolean): { store: ResultStore; render: () => Promise<string> } {
  const store = createResultStore({ historySize: 5 });
  const registry = createMetricsRegistry({
    ...(testing === undefined ? {} : { testing }),
    store,
    checks: CHECKS,
    host: {
      nodeName: 'node-a',
      cpuModel: 'IntelR Xeon(R) Platinum 8480+',
      gpuModel: 'NVIDIA H200',
    },
    build: { version: '1.2.3', nodejs: '20.20.2' },
    // ping on the periodic round; gpupower as if a deep check every 4h ran it: not per-run values.
    checkIntervals: () =>
      new Map([
        ['ping', 3600],
        ['gpupower', 14_400],
      ]),
  });
  return { store, render: () => registry.metrics() };
}

function recordScenario(store: ResultStore): void {
  store.record(makeRun('ping', T - 60_000, [device('node-b', 'PASS', { compatValue: 0 })]));
  store.record(
    makeRun(
      'ping',
      T,
      [
        device('node-b', 'PASS', { compatValue: 0 }),
        device('node-c', 'FAIL', { compatValue: 1 }),
        device('node-d', 'ERROR'),
      ],
      {
        samples: [
          { metric: 'autopilot_peer_loss_ratio', labels: { check: 'ping' }, value: 0.5 },
          {
            metric: 'autopilot_peer_rtt_median_seconds',
            labels: { check: 'ping' },
            value: 0.00042,
          },
          { metric: 'autopilot_peer_rtt_max_seconds', labels: { check: 'ping' }, value: 0.0009 },
        ],
      },
    ),
  );
  store.record(
    makeRun('gpupower', T + 1000, [
      device('0', 'PASS', { compatValue: 0 }),
      device('1', 'WARN', { compatValue: 1 }),
    ]),
  );
}

/** Golden files change only on purpose: UPDATE_GOLDEN=1 rewrites them, and the diff is reviewed. */
function expectGolden(name: string, actual: string): void {
  const path = join(GOLDEN_DIR, name);
  if (process.env.UPDATE_GOLDEN === '1') writeFileSync(path, actual);
  expect(actual).toBe(readFileSync(path, 'utf8'));
}

describe('metrics', () => {
  test('render the scenario exactly as the golden file', async () => {
    const { store, render } = setup();
    recordScenario(store);
    expectGolden('metrics-ping-gpupower.prom', await render());
  });

  test('before any run only the families without per-run series carry values', async () => {
    const { render } = setup();
    expectGolden('metrics-empty.prom', await render());
  });

  test('the compatibility gauge has exactly Autopilot labels and values', async () => {
    const { store, render } = setup();
    recordScenario(store);
    const lines = (await render())
      .split('\n')
      .filter((l) => l.startsWith('autopilot_health_checks{'));
    expect(lines).toEqual([
      'autopilot_health_checks{health="ping",node="node-a",cpumodel="IntelR Xeon(R) Platinum 8480+",gpumodel="NVIDIA H200",deviceid="node-b"} 0',
      'autopilot_health_checks{health="ping",node="node-a",cpumodel="IntelR Xeon(R) Platinum 8480+",gpumodel="NVIDIA H200",deviceid="node-c"} 1',
      'autopilot_health_checks{health="power-slowdown",node="node-a",cpumodel="IntelR Xeon(R) Platinum 8480+",gpumodel="NVIDIA H200",deviceid="0"} 0',
      'autopilot_health_checks{health="power-slowdown",node="node-a",cpumodel="IntelR Xeon(R) Platinum 8480+",gpumodel="NVIDIA H200",deviceid="1"} 1',
    ]);
  });

  test('series of peers and GPUs that vanished from the latest run disappear', async () => {
    const { store, render } = setup();
    recordScenario(store);
    store.record(makeRun('ping', T + 5000, [device('node-b', 'PASS', { compatValue: 0 })]));
    store.record(makeRun('gpupower', T + 6000, [device('0', 'PASS', { compatValue: 0 })]));
    const text = await render();
    expect(text).toContain('deviceid="node-b"');
    expect(text).not.toContain('deviceid="node-c"');
    expect(text).not.toContain('deviceid="1"');
    expect(text).not.toContain('gpu="1"');
    expect(text).toContain(
      'autopilot_gpu_verdict{check="gpupower",gpu="0",verdict="PASS",gpumodel="NVIDIA H200"} 1',
    );
    expect(text).toContain('autopilot_check_peers{check="ping",verdict="FAIL"} 0');
  });

  test("every GPU family, pairs of GPUs included, carries the compatibility gauge's gpumodel", async () => {
    const gpuFamilies = Object.entries(ALL_METRICS)
      .filter(([, spec]) => spec.labelNames.some((l) => l === 'gpu' || l === 'src'))
      .map(([name]) => name);
    expect(gpuFamilies.length).toBeGreaterThan(20);
    expect(
      gpuFamilies.filter((name) => !ALL_METRICS[name]!.labelNames.includes('gpumodel')),
    ).toEqual([]);
    const { store, render } = setup();
    recordScenario(store);
    store.record(
      makeRun('gpupower', T + 2000, [device('0', 'PASS', { compatValue: 0 })], {
        samples: [
          {
            metric: 'autopilot_gpu_clock_event_reason',
            labels: { gpu: '0', uuid: 'GPU-a', reason: 'sw_power_cap' },
            value: 1,
          },
          {
            metric: 'autopilot_gpu_p2p_bandwidth_bytes_per_second',
            labels: { src: '0', dst: '1' },
            value: 4e11,
          },
        ],
      }),
    );
    const text = await render();
    expect(text).toContain(
      'autopilot_gpu_clock_event_reason{gpu="0",uuid="GPU-a",reason="sw_power_cap",gpumodel="NVIDIA H200"} 1',
    );
    expect(text).toContain(
      'autopilot_gpu_p2p_bandwidth_bytes_per_second{src="0",dst="1",gpumodel="NVIDIA H200"} 400000000000',
    );
    // Node-level families stay without it: the compatibility gauge already names the node's model.
    expect(text).toContain('autopilot_peer_loss_ratio{check="ping"} 0.5');
  });

  test('an ERROR run keeps the last conclusive values but reports itself', async () => {
    const { store, render } = setup();
    recordScenario(store);
    store.record(makeRun('ping', T + 5000, [], { verdict: 'ERROR', reason: 'timed out' }));
    const text = await render();
    expect(text).toContain('deviceid="node-c"} 1');
    expect(text).toContain('autopilot_check_verdict{check="ping",verdict="ERROR"} 1');
    expect(text).toContain('autopilot_check_success{check="ping"} 0');
    expect(text).toContain(
      `autopilot_check_last_success_timestamp_seconds{check="ping"} ${(T - 60_000) / 1000}`,
    );
    expect(text).toContain('autopilot_check_runs_total{check="ping",verdict="ERROR"} 1');
  });

  test('each family is named, typed and explained as in the catalogue', async () => {
    const { store, render } = setup();
    recordScenario(store);
    const text = await render();
    for (const [name, spec] of Object.entries(ALL_METRICS)) {
      expect(text).toContain(`# HELP ${name} ${spec.help}\n# TYPE ${name} ${spec.type}\n`);
    }
  });

  test('promtool check metrics accepts the exposition', async () => {
    const { store, render } = setup();
    recordScenario(store);
    const output = execFileSync('promtool', ['check', 'metrics'], {
      input: await render(),
      encoding: 'utf8',
    });
    expect(output).toBe('');
  });

  test('two instances keep separate registries', async () => {
    const first = setup();
    const second = setup();
    recordScenario(first.store);
    expect(await first.render()).toContain('deviceid="node-c"');
    expect(await second.render()).not.toContain('deviceid="node-c"');
  });

  test('the cached exposition renders once per change of the store', async () => {
    const store = createResultStore({ historySize: 5 });
    const registry = createMetricsRegistry({
      store,
      checks: CHECKS,
      host: { nodeName: 'node-a', cpuModel: 'cpu', gpuModel: 'gpu' },
      build: { version: '1.2.3', nodejs: '20.20.2' },
    });
    const render = jest.spyOn(registry, 'metrics');
    const exposition = cachedExposition(registry, () => store.version());
    expect(exposition.contentType).toBe(registry.contentType);
    const first = await exposition.metrics();
    expect(await exposition.metrics()).toBe(first);
    expect(render).toHaveBeenCalledTimes(1);
    recordScenario(store);
    const second = await exposition.metrics();
    expect(render).toHaveBeenCalledTimes(2);
    expect(second).toContain('deviceid="node-c"');
    store.acknowledge(T + 10_000);
    await exposition.metrics();
    expect(render).toHaveBeenCalledTimes(3);
  });

  test('a failed rendering is not served from the cache', async () => {
    const { store } = setup();
    let calls = 0;
    const flaky = {
      contentType: 'text/plain',
      metrics: () => (++calls === 1 ? Promise.reject(new Error('boom')) : Promise.resolve('ok')),
    };
    const exposition = cachedExposition(flaky, () => store.version());
    await expect(exposition.metrics()).rejects.toThrow('boom');
    expect(await exposition.metrics()).toBe('ok');
  });
});

describe('autopilot_node_health_state while the GPUs are under test', () => {
  test('TESTING while an exclusive check or the deep check holds the GPUs, EVICT still wins', async () => {
    let holding = true;
    const { store, render } = setup(() => holding);
    store.record(makeRun('ping', T, [device('node-b', 'PASS', { compatValue: 0 })]));
    expect(await render()).toContain('autopilot_node_health_state{state="TESTING"} 1');
    holding = false;
    expect(await render()).toContain('autopilot_node_health_state{state="PASS"} 1');
    holding = true;
    store.restoreEvict('fatal', T);
    expect(await render()).toContain('autopilot_node_health_state{state="EVICT"} 1');
  });
});
