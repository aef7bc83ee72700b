import { describe, expect, test } from '@jest/globals';
import {
  GPUHEALTH_LABEL,
  createNodeLabeler,
  dcgmPatch,
  dcgmTimestamp,
  desiredGpuHealth,
  highestFailedDcgmLevel,
  type NodeLabeler,
} from '../../exporter/cluster/node-labeler.js';
import { createGpuLock } from '../../exporter/gpu-lock.js';
import { silentLogger } from '../../exporter/log.js';
import type { EvictOn, NodeHealth, NodeState } from '../../exporter/node-health.js';
import { createResultStore } from '../../exporter/store.js';
import { FakeClock, flushPromises } from '../fakes/clock.js';
import { FakeKube } from '../fakes/kube.js';
import { device, makeRun } from '../fakes/runs.js';

const NODE = 'gpu-node-1';
const DCGM_AT = Date.UTC(2025, 4, 1, 13, 45, 7, 123);

const gpuhealth = (value: string) => ({
  node: NODE,
  patch: { labels: { [GPUHEALTH_LABEL]: value } },
});

const passRun = (at: number) => makeRun('remapped', at, [device('0', 'PASS')]);
const warnRun = (at: number) => makeRun('ping', at, [device('peer-b', 'FAIL')]);
const fatalRun = (at: number) =>
  makeRun('remapped', at, [device('0', 'FAIL', { fatal: true, reason: 'remapping failure' })]);

/** The real store and GPU lock, wired to the labeler as the exporter wires them. */
function setup(
  options: {
    labels?: Record<string, string>;
    backoff?: { initialMs: number; maxMs: number };
    evictOn?: EvictOn;
  } = {},
) {
  const clock = new FakeClock();
  const kube = new FakeKube();
  kube.addNode(NODE, { labels: options.labels ?? {} });
  const store = createResultStore({ historySize: 5, evictOn: options.evictOn ?? 'all' });
  const evictionsFound: string[] = [];
  const evictLevels: (number | undefined)[] = [];
  const lock = createGpuLock({ onExclusiveChange: () => labeler.sync() });
  const labeler: NodeLabeler = createNodeLabeler({
    kube: kube.api,
    nodeName: NODE,
    health: () => store.health(),
    exclusiveRunning: () => lock.holders().exclusive,
    onEvictFound: (reason, dcgmFailedLevel) => {
      evictionsFound.push(reason);
      evictLevels.push(dcgmFailedLevel);
      store.restoreEvict(reason, clock.now(), dcgmFailedLevel);
    },
    clock,
    logger: silentLogger,
    ...(options.backoff === undefined ? {} : { backoff: options.backoff }),
  });
  store.onHealthChange(() => labeler.sync());
  const label = (): string | undefined => kube.node(NODE).labels[GPUHEALTH_LABEL];
  return {
    clock,
    kube,
    store,
    lock,
    labeler,
    evictionsFound,
    evictLevels,
    label,
    t0: clock.now(),
  };
}

describe('desiredGpuHealth', () => {
  test.each<[NodeState, boolean, string | undefined]>([
    ['EVICT', false, 'EVICT'],
    ['EVICT', true, 'EVICT'],
    ['TESTING', false, 'TESTING'],
    ['PASS', true, 'TESTING'],
    ['WARN', true, 'TESTING'],
    ['UNKNOWN', true, 'TESTING'],
    ['UNKNOWN', false, undefined],
    ['PASS', false, 'PASS'],
    ['WARN', false, 'WARN'],
  ])('%s, exclusive %s → %s', (state, exclusive, expected) => {
    const health: NodeHealth = { state, since: 0, reasons: [] };
    expect(desiredGpuHealth(health, exclusive)).toBe(expected);
  });
});

describe('DCGM label and annotation', () => {
  test("dcgmTimestamp is Autopilot's YYYY-MM-DD_HH.MM.SSUTC, milliseconds dropped", () => {
    expect(dcgmTimestamp(DCGM_AT)).toBe('2025-05-01_13.45.07UTC');
    expect(dcgmTimestamp(Date.UTC(2026, 0, 2, 3, 4, 5, 999))).toBe('2026-01-02_03.04.05UTC');
  });

  test('a pass writes PASS_<time> and an empty annotation', () => {
    expect(dcgmPatch({ level: 1, passed: true, output: 'ignored', at: DCGM_AT })).toEqual({
      labels: { 'autopilot.ibm.com/dcgm.level.1': 'PASS_2025-05-01_13.45.07UTC' },
      annotations: { 'autopilot.ibm.com/dcgm.level.1.output': '' },
    });
  });
});

describe('node labeler', () => {
  test('start reads the node once and takes its label as applied', async () => {
    const { kube, labeler } = setup({ labels: { [GPUHEALTH_LABEL]: 'WARN' } });
    expect(labeler.status().applied).toBeUndefined();
    await labeler.start();
    expect(kube.callsTo('getNode')).toEqual([[NODE]]);
    expect(labeler.status()).toEqual({ applied: 'WARN', pending: undefined, lastError: undefined });
  });

  test('writes nothing while the health is UNKNOWN, so the label the node carries stays', async () => {
    const { kube, labeler, label } = setup({ labels: { [GPUHEALTH_LABEL]: 'WARN' } });
    await labeler.start();
    labeler.sync();
    await labeler.idle();
    expect(kube.callsTo('patchNodeMetadata')).toEqual([]);
    expect(label()).toBe('WARN');
  });

  test('a change of health sends exactly one merge patch; the same value again sends nothing', async () => {
    const { kube, store, labeler, label, t0 } = setup();
    await labeler.start();
    store.record(warnRun(t0 + 1));
    await labeler.idle();
    expect(kube.patches).toEqual([gpuhealth('WARN')]);
    expect(label()).toBe('WARN');

    store.record(warnRun(t0 + 2));
    labeler.sync();
    await labeler.idle();
    expect(kube.callsTo('patchNodeMetadata')).toHaveLength(1);
    expect(labeler.status()).toEqual({ applied: 'WARN', pending: undefined, lastError: undefined });
  });

  test('a node that already carries the value at start is not patched', async () => {
    const { kube, store, labeler, t0 } = setup({ labels: { [GPUHEALTH_LABEL]: 'PASS' } });
    store.record(passRun(t0));
    await labeler.start();
    await labeler.idle();
    expect(kube.callsTo('patchNodeMetadata')).toEqual([]);
  });

  test('a node that carries another value at start is patched once', async () => {
    const { kube, store, labeler, t0 } = setup({ labels: { [GPUHEALTH_LABEL]: 'PASS' } });
    store.record(warnRun(t0));
    await labeler.start();
    await labeler.idle();
    expect(kube.patches).toEqual([gpuhealth('WARN')]);
  });

  test('EVICT found on the node at start is handed to onEvictFound and kept', async () => {
    const { kube, store, labeler, evictionsFound, label, t0 } = setup({
      labels: { [GPUHEALTH_LABEL]: 'EVICT' },
    });
    await labeler.start();
    expect(evictionsFound).toEqual([
      'node label autopilot.ibm.com/gpuhealth=EVICT was set before this exporter started',
    ]);
    expect(store.health().state).toBe('EVICT');

    store.record(passRun(t0 + 10));
    await labeler.idle();
    expect(kube.callsTo('patchNodeMetadata')).toEqual([]);
    expect(label()).toBe('EVICT');
  });

  test('dcgm mode: an EVICT found beside dcgm.level.3=ERR is DCGM’s, and a passing level-3 run lifts it on the node', async () => {
    const { kube, store, labeler, evictLevels, label, t0 } = setup({
      evictOn: 'dcgm',
      labels: {
        [GPUHEALTH_LABEL]: 'EVICT',
        'autopilot.ibm.com/dcgm.level.1': 'PASS_2025-05-01_10.00.00UTC',
        'autopilot.ibm.com/dcgm.level.3': 'ERR_2025-05-01_12.00.00UTC',
      },
    });
    await labeler.start();
    expect(evictLevels).toEqual([3]);
    store.record(makeRun('dcgm', t0 + 10, [device('0', 'PASS'), device('', 'PASS')]));
    await labeler.idle();
    expect(label()).toBe('EVICT');
    store.record(
      makeRun('dcgm', t0 + 20, [device('0', 'PASS'), device('', 'PASS')], { params: { r: '3' } }),
    );
    await labeler.idle();
    expect(label()).toBe('PASS');
    expect(kube.patches).toEqual([gpuhealth('PASS')]);
  });

  test('all mode: the same EVICT stays through a passing level-3 run', async () => {
    const { store, labeler, evictLevels, label, t0 } = setup({
      labels: {
        [GPUHEALTH_LABEL]: 'EVICT',
        'autopilot.ibm.com/dcgm.level.3': 'ERR_2025-05-01_12.00.00UTC',
      },
    });
    await labeler.start();
    expect(evictLevels).toEqual([3]);
    store.record(
      makeRun('dcgm', t0 + 20, [device('0', 'PASS'), device('', 'PASS')], { params: { r: '3' } }),
    );
    await labeler.idle();
    expect(label()).toBe('EVICT');
  });

  test('onEvictFound is not called for any other label', async () => {
    const { labeler, evictionsFound } = setup({ labels: { [GPUHEALTH_LABEL]: 'WARN' } });
    await labeler.start();
    expect(evictionsFound).toEqual([]);
  });

  test('EVICT is sticky through the store until an acknowledge; then the label follows the evidence', async () => {
    const { kube, store, labeler, label, t0 } = setup();
    await labeler.start();
    store.record(fatalRun(t0 + 1));
    await labeler.idle();
    expect(label()).toBe('EVICT');

    store.record(passRun(t0 + 2));
    await labeler.idle();
    expect(label()).toBe('EVICT');
    expect(kube.patches).toEqual([gpuhealth('EVICT')]);

    store.acknowledge(t0 + 3);
    await labeler.idle();
    expect(kube.patches).toEqual([gpuhealth('EVICT'), gpuhealth('PASS')]);
  });

  test('TESTING while an exclusive check holds the GPUs, PASS again after it releases them', async () => {
    const { kube, store, lock, labeler, label, t0 } = setup();
    await labeler.start();
    store.record(passRun(t0));
    await labeler.idle();

    const release = await lock.acquire('exclusive', new AbortController().signal);
    await labeler.idle();
    expect(label()).toBe('TESTING');

    release();
    await labeler.idle();
    expect(kube.patches).toEqual([gpuhealth('PASS'), gpuhealth('TESTING'), gpuhealth('PASS')]);
  });

  test('a shared GPU check does not show TESTING', async () => {
    const { kube, store, lock, labeler, t0 } = setup();
    await labeler.start();
    store.record(passRun(t0));
    const release = await lock.acquire('shared', new AbortController().signal);
    await labeler.idle();
    release();
    expect(kube.patches).toEqual([gpuhealth('PASS')]);
  });

  test('a periodic PASS while TESTING does not overwrite TESTING', async () => {
    const { kube, store, lock, labeler, label, t0 } = setup();
    await labeler.start();
    store.record(passRun(t0));
    const release = await lock.acquire('exclusive', new AbortController().signal);
    await labeler.idle();

    store.record(passRun(t0 + 60_000));
    labeler.sync();
    await labeler.idle();
    expect(label()).toBe('TESTING');
    release();
    await labeler.idle();
    expect(kube.patches).toEqual([gpuhealth('PASS'), gpuhealth('TESTING'), gpuhealth('PASS')]);
  });

  test('TESTING does not outlive the exclusive check when nothing conclusive is known', async () => {
    // An exclusive check that ends in ERROR right after start leaves the health UNKNOWN; the node
    // must not go on advertising a test that no longer runs.
    const { store, lock, labeler, label, t0 } = setup();
    await labeler.start();
    const release = await lock.acquire('exclusive', new AbortController().signal);
    await labeler.idle();
    expect(label()).toBe('TESTING');

    release();
    store.record(makeRun('dcgm', t0 + 1, [], { verdict: 'ERROR', reason: 'timed out' }));
    await labeler.idle();
    expect(label()).toBeUndefined();
  });

  test('a refused patch is retried with backoff, visible in status() until it succeeds', async () => {
    const { clock, kube, store, labeler, label, t0 } = setup({
      backoff: { initialMs: 1000, maxMs: 60_000 },
    });
    await labeler.start();
    kube.failNext('patchNodeMetadata', 500, 'etcdserver: request timed out');
    kube.failNext('patchNodeMetadata', 500, 'etcdserver: request timed out');
    store.record(warnRun(t0));
    await flushPromises();

    expect(labeler.status()).toEqual({
      applied: undefined,
      pending: 'WARN',
      lastError: { message: 'patchNodeMetadata: 500 etcdserver: request timed out', at: t0 },
    });
    expect(clock.pending()).toEqual([t0 + 1000]);
    await clock.advance(1000);
    expect(kube.callsTo('patchNodeMetadata')).toHaveLength(2);
    expect(clock.pending()).toEqual([t0 + 1000 + 2000]);
    await clock.advance(2000);

    expect(kube.callsTo('patchNodeMetadata')).toHaveLength(3);
    expect(label()).toBe('WARN');
    expect(labeler.status()).toEqual({ applied: 'WARN', pending: undefined, lastError: undefined });
  });

  test('idle() waits for a pending retry and resolves once the write succeeds', async () => {
    const { clock, kube, store, labeler, t0 } = setup();
    await labeler.start();
    kube.failNext('patchNodeMetadata', 503, 'unavailable');
    store.record(warnRun(t0));
    let idle = false;
    void labeler.idle().then(() => (idle = true));
    await flushPromises();
    expect(idle).toBe(false);

    await clock.advance(1000);
    expect(idle).toBe(true);
  });

  test('idle() resolves at once when nothing is pending', async () => {
    const { labeler } = setup();
    await labeler.start();
    let idle = false;
    void labeler.idle().then(() => (idle = true));
    await flushPromises();
    expect(idle).toBe(true);
  });

  test('a failed read of the node at start is retried, and nothing is written before it succeeds', async () => {
    const { clock, kube, store, labeler, label, t0 } = setup();
    kube.failNext('getNode', undefined, 'connect ECONNREFUSED 10.96.0.1:443');
    store.record(warnRun(t0));
    await labeler.start();

    expect(labeler.status().lastError).toEqual({
      message: 'getNode: connect ECONNREFUSED 10.96.0.1:443',
      at: t0,
    });
    expect(kube.callsTo('patchNodeMetadata')).toEqual([]);
    await clock.advance(1000);
    await labeler.idle();
    expect(kube.callsTo('getNode')).toHaveLength(2);
    expect(label()).toBe('WARN');
    expect(labeler.status().lastError).toBeUndefined();
  });

  test('stop() cancels a pending retry', async () => {
    const { clock, kube, store, labeler, t0 } = setup();
    await labeler.start();
    kube.failNext('patchNodeMetadata', 500);
    store.record(warnRun(t0));
    await flushPromises();
    labeler.stop();
    expect(clock.pending()).toEqual([]);
    await clock.advance(60_000);
    expect(kube.callsTo('patchNodeMetadata')).toHaveLength(1);
  });

  test('recordDcgm writes the level label and its .output annotation', async () => {
    const { kube, labeler } = setup();
    await labeler.start();
    const output = 'Diagnostic: GPU 3 failed the memory test';
    await labeler.recordDcgm({ level: 3, passed: false, output, at: DCGM_AT });

    expect(kube.patches).toEqual([
      {
        node: NODE,
        patch: {
          labels: { 'autopilot.ibm.com/dcgm.level.3': 'ERR_2025-05-01_13.45.07UTC' },
          annotations: { 'autopilot.ibm.com/dcgm.level.3.output': output },
        },
      },
    ]);
    expect(kube.node(NODE).labels['autopilot.ibm.com/dcgm.level.3']).toBe(
      'ERR_2025-05-01_13.45.07UTC',
    );
    expect(kube.node(NODE).annotations['autopilot.ibm.com/dcgm.level.3.output']).toBe(output);
  });

  test('recordDcgm is retried like the health label', async () => {
    const { clock, kube, labeler } = setup();
    await labeler.start();
    kube.failNext('patchNodeMetadata', 500);
    let done = false;
    void labeler
      .recordDcgm({ level: 3, passed: true, output: '', at: DCGM_AT })
      .then(() => (done = true));
    await flushPromises();
    expect(done).toBe(false);
    await clock.advance(1000);
    expect(done).toBe(true);
    expect(kube.node(NODE).labels['autopilot.ibm.com/dcgm.level.3']).toBe(
      'PASS_2025-05-01_13.45.07UTC',
    );
  });
});

describe('highestFailedDcgmLevel', () => {
  test.each<[Record<string, string>, number | undefined]>([
    [{}, undefined],
    [{ 'autopilot.ibm.com/dcgm.level.1': 'PASS_2025-05-01_10.00.00UTC' }, undefined],
    [
      {
        'autopilot.ibm.com/dcgm.level.1': 'ERR_2025-05-01_10.00.00UTC',
        'autopilot.ibm.com/dcgm.level.2': 'ERR_2025-05-01_11.00.00UTC',
        'autopilot.ibm.com/dcgm.level.3': 'PASS_2025-05-01_12.00.00UTC',
      },
      2,
    ],
    // Before v2.1.3 Autopilot appended the failures to the label value.
    [{ 'autopilot.ibm.com/dcgm.level.3': 'ERR_2024-11-04_09.32.03UTC_pcie.2' }, 3],
    [{ 'autopilot.ibm.com/dcgm.level.3': '' }, undefined],
  ])('%j → %s', (labels, level) => {
    expect(highestFailedDcgmLevel(labels)).toBe(level);
  });
});
