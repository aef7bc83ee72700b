import { recordingLogger } from '../fakes/logger.js';
import { describe, expect, test } from '@jest/globals';
import type { CheckRun, Trigger } from '../../exporter/checks/check.js';
import { DEEP_CHECK_JOB_PREFIX } from '../../exporter/cluster/deep-check.js';
import { gpuHolders, gpusBusy } from '../../exporter/cluster/gpu-idle.js';
import { createPostflight, endedGpuPods } from '../../exporter/cluster/postflight.js';
import type { PodInfo } from '../../exporter/k8s/ports.js';
import type { NvmlLoad } from '../../exporter/native/ports.js';
import { FakeClock } from '../fakes/clock.js';
import { fakeNode, fakeNvml } from '../fakes/gpu.js';
import { FakeKube } from '../fakes/kube.js';
import { makeRun } from '../fakes/runs.js';

const NODE = 'gpu-node-1';
const POLL_MS = 10_000;

function pod(name: string, phase: string, gpus: number, namespace = 'team-a'): PodInfo {
  return {
    name,
    namespace,
    nodeName: NODE,
    phase,
    annotations: {},
    podIPs: [],
    gpus,
    terminationMessage: undefined,
  };
}

const names = (pods: readonly PodInfo[]): string[] => pods.map((p) => `${p.namespace}/${p.name}`);

describe('gpuHolders', () => {
  test.each<[string, boolean]>([
    ['Pending', true],
    ['Running', true],
    ['Unknown', true],
    ['Succeeded', false],
    ['Failed', false],
  ])('a GPU pod %s holds its GPUs: %s', (phase, holds) => {
    expect(names(gpuHolders([pod('train', phase, 8)], DEEP_CHECK_JOB_PREFIX))).toEqual(
      holds ? ['team-a/train'] : [],
    );
  });

  test("pods without GPUs and the deep check's own pods are left out", () => {
    const pods = [
      pod('web', 'Running', 0),
      pod(`${DEEP_CHECK_JOB_PREFIX}a1b2c3-x7k2p`, 'Running', 8, 'autopilot'),
      pod('train', 'Running', 2),
    ];
    expect(names(gpuHolders(pods, DEEP_CHECK_JOB_PREFIX))).toEqual(['team-a/train']);
  });
});

describe('gpusBusy', () => {
  function busy(kube: FakeKube, nvml: NvmlLoad): Promise<string | undefined> {
    return gpusBusy({ kube: kube.api, nvml, nodeName: NODE, ownJobPrefix: DEEP_CHECK_JOB_PREFIX });
  }

  test('GPU pods on this node make the GPUs busy, named in the reason', async () => {
    const kube = new FakeKube();
    kube.addPod({ name: 'train-0', namespace: 'team-a', nodeName: NODE, gpus: 4 });
    kube.addPod({ name: 'infer', namespace: 'team-b', nodeName: NODE, gpus: 1, phase: 'Pending' });
    kube.addPod({ name: 'elsewhere', namespace: 'team-a', nodeName: 'other-node', gpus: 8 });
    const gpus = fakeNode(2);
    await expect(busy(kube, { ok: true, nvml: fakeNvml(gpus) })).resolves.toBe(
      'GPUs requested by team-a/train-0, team-b/infer',
    );
    expect(kube.callsTo('listPodsOnNode')).toEqual([[NODE]]);
  });

  test('compute processes NVML sees make the GPUs busy even without GPU pods', async () => {
    const kube = new FakeKube();
    kube.addPod({ name: 'web', namespace: 'team-a', nodeName: NODE, gpus: 0 });
    const gpus = fakeNode(4);
    gpus[1]!.processes = 2;
    gpus[3]!.processes = 1;
    await expect(busy(kube, { ok: true, nvml: fakeNvml(gpus) })).resolves.toBe(
      'GPUs in use: GPU 1 (2 compute processes), GPU 3 (1 compute processes)',
    );
  });

  test('idle: no GPU pods (ended ones and the deep check do not count) and no processes', async () => {
    const kube = new FakeKube();
    kube.addPod({ name: 'done', namespace: 'team-a', nodeName: NODE, gpus: 8, phase: 'Succeeded' });
    kube.addPod({
      name: `${DEEP_CHECK_JOB_PREFIX}abcdef-pod`,
      namespace: 'autopilot',
      nodeName: NODE,
      gpus: 8,
    });
    await expect(busy(kube, { ok: true, nvml: fakeNvml(fakeNode(8)) })).resolves.toBeUndefined();
  });

  test('without NVML only Kubernetes is asked', async () => {
    const kube = new FakeKube();
    await expect(
      busy(kube, { ok: false, reason: 'libnvidia-ml.so.1: cannot open shared object file' }),
    ).resolves.toBeUndefined();
    kube.addPod({ name: 'train', namespace: 'team-a', nodeName: NODE, gpus: 1 });
    await expect(busy(kube, { ok: false, reason: 'no NVML' })).resolves.toBe(
      'GPUs requested by team-a/train',
    );
  });
});

describe('endedGpuPods', () => {
  const before = [
    pod('gone', 'Running', 8),
    pod('succeeded', 'Running', 1),
    pod('failed', 'Running', 1),
    pod('still-running', 'Running', 1),
    pod('still-pending', 'Pending', 1),
    pod('cpu-only', 'Running', 0),
    pod(`${DEEP_CHECK_JOB_PREFIX}abcdef-pod`, 'Running', 8, 'autopilot'),
  ];

  test('vanished, Succeeded and Failed GPU pods have ended; running and pending ones have not', () => {
    const after = [
      pod('succeeded', 'Succeeded', 1),
      pod('failed', 'Failed', 1),
      pod('still-running', 'Running', 1),
      pod('still-pending', 'Pending', 1),
    ];
    expect(names(endedGpuPods(before, after, DEEP_CHECK_JOB_PREFIX))).toEqual([
      'team-a/gone',
      'team-a/succeeded',
      'team-a/failed',
    ]);
  });

  test("pods without GPUs and the deep check's pods never count as ended", () => {
    expect(names(endedGpuPods(before, [], DEEP_CHECK_JOB_PREFIX))).not.toContain('team-a/cpu-only');
    expect(names(endedGpuPods(before, [], DEEP_CHECK_JOB_PREFIX))).toEqual([
      'team-a/gone',
      'team-a/succeeded',
      'team-a/failed',
      'team-a/still-running',
      'team-a/still-pending',
    ]);
  });

  test('a pod already ended before is not reported again', () => {
    const ended = [pod('done', 'Succeeded', 1)];
    expect(endedGpuPods(ended, [], DEEP_CHECK_JOB_PREFIX)).toEqual([]);
  });

  test('pods are told apart by namespace as well as name', () => {
    const a = pod('train', 'Running', 1, 'team-a');
    const b = pod('train', 'Running', 1, 'team-b');
    expect(names(endedGpuPods([a, b], [b], DEEP_CHECK_JOB_PREFIX))).toEqual(['team-a/train']);
  });
});

describe('createPostflight', () => {
  const CHECKS: readonly (readonly [string, Readonly<Record<string, string>>])[] = [
    ['dcgm', { r: '1' }],
    ['pciebw', {}],
    ['remapped', {}],
  ];

  function setup() {
    const clock = new FakeClock();
    const kube = new FakeKube();
    const log = recordingLogger();
    const runs: { check: string; params: Readonly<Record<string, string>>; trigger: Trigger }[] =
      [];
    let busyReason: string | undefined;
    const postflight = createPostflight({
      kube: kube.api,
      nodeName: NODE,
      checks: CHECKS,
      run: (check, params, trigger): Promise<CheckRun> => {
        runs.push({ check, params, trigger });
        return Promise.resolve(makeRun(check, clock.now(), [], { trigger }));
      },
      gpusBusy: () => Promise.resolve(busyReason),
      ownJobPrefix: DEEP_CHECK_JOB_PREFIX,
      clock,
      logger: log.logger,
      pollMs: POLL_MS,
    });
    const addGpuPod = (name: string) =>
      kube.addPod({ name, namespace: 'team-a', nodeName: NODE, gpus: 8 });
    return {
      clock,
      kube,
      postflight,
      /** Starts polling and waits for the first poll, which only learns the pods. */
      start: async (): Promise<void> => {
        postflight.start();
        await postflight.idle();
      },
      /** Lets `polls` poll periods pass and waits for the poll under way. */
      poll: async (polls = 1): Promise<void> => {
        await clock.advance(POLL_MS * polls);
        await postflight.idle();
      },
      runs,
      lines: log.lines,
      addGpuPod,
      setBusy: (reason: string | undefined) => (busyReason = reason),
      checkNames: () => runs.map((r) => r.check),
    };
  }

  const ONE_POSTFLIGHT = [
    { check: 'dcgm', params: { r: '1' }, trigger: 'postflight' },
    { check: 'pciebw', params: {}, trigger: 'postflight' },
    { check: 'remapped', params: {}, trigger: 'postflight' },
  ];

  test('the first poll only learns the pods; the next after a GPU pod ended runs the checks', async () => {
    const ctx = setup();
    ctx.addGpuPod('train');
    ctx.kube.setPodPhase('team-a', 'train', 'Succeeded');
    await ctx.start();
    expect(ctx.kube.callsTo('listPodsOnNode')).toEqual([[NODE]]);
    expect(ctx.runs).toEqual([]);

    ctx.addGpuPod('train-2');
    await ctx.poll();
    expect(ctx.runs).toEqual([]);

    ctx.kube.setPodPhase('team-a', 'train-2', 'Failed');
    await ctx.poll();
    expect(ctx.runs).toEqual(ONE_POSTFLIGHT);
    ctx.postflight.stop();
  });

  test('nothing runs while GPU pods keep running, or when a CPU-only pod ends', async () => {
    const ctx = setup();
    ctx.addGpuPod('train');
    ctx.kube.addPod({ name: 'web', namespace: 'team-a', nodeName: NODE, gpus: 0 });
    ctx.postflight.start();
    ctx.kube.setPodPhase('team-a', 'web', 'Succeeded');
    await ctx.poll(5);
    expect(ctx.runs).toEqual([]);
    expect(ctx.kube.callsTo('listPodsOnNode')).toHaveLength(6);
    ctx.postflight.stop();
  });

  test('busy GPUs: the post-flight waits and runs once on the first poll that finds them idle', async () => {
    const ctx = setup();
    ctx.addGpuPod('train');
    await ctx.start();

    ctx.kube.setPodPhase('team-a', 'train', 'Succeeded');
    ctx.setBusy('GPUs in use: GPU 0 (1 compute processes)');
    await ctx.poll(3);
    expect(ctx.runs).toEqual([]);
    expect(ctx.lines).toContainEqual({
      level: 'debug',
      message: 'post-flight waits for idle GPUs',
      fields: { ended: ['team-a/train'], busy: 'GPUs in use: GPU 0 (1 compute processes)' },
    });

    ctx.setBusy(undefined);
    await ctx.poll();
    expect(ctx.runs).toEqual(ONE_POSTFLIGHT);

    await ctx.poll(3);
    expect(ctx.runs).toHaveLength(CHECKS.length);
    ctx.postflight.stop();
  });

  test('a later end, after the first post-flight ran, runs the checks again', async () => {
    const ctx = setup();
    ctx.addGpuPod('train-a');
    ctx.addGpuPod('train-b');
    await ctx.start();

    ctx.kube.setPodPhase('team-a', 'train-a', 'Succeeded');
    await ctx.poll();
    expect(ctx.runs).toHaveLength(CHECKS.length);

    ctx.kube.setPodPhase('team-a', 'train-b', 'Failed');
    await ctx.poll();
    expect(ctx.runs).toEqual([...ONE_POSTFLIGHT, ...ONE_POSTFLIGHT]);
    ctx.postflight.stop();
  });

  test('several pods ending together make one post-flight', async () => {
    const ctx = setup();
    ctx.addGpuPod('train-a');
    ctx.addGpuPod('train-b');
    await ctx.start();
    ctx.kube.setPodPhase('team-a', 'train-a', 'Succeeded');
    ctx.kube.setPodPhase('team-a', 'train-b', 'Succeeded');
    await ctx.poll();
    expect(ctx.checkNames()).toEqual(['dcgm', 'pciebw', 'remapped']);
    ctx.postflight.stop();
  });

  test("the deep check's own pod ending is no reason for a post-flight", async () => {
    const ctx = setup();
    ctx.kube.addPod({
      name: `${DEEP_CHECK_JOB_PREFIX}abcdef-pod`,
      namespace: 'autopilot',
      nodeName: NODE,
      gpus: 8,
    });
    await ctx.start();
    ctx.kube.setPodPhase('autopilot', `${DEEP_CHECK_JOB_PREFIX}abcdef-pod`, 'Succeeded');
    await ctx.poll();
    expect(ctx.runs).toEqual([]);
    ctx.postflight.stop();
  });

  test('a failed list is logged, polling goes on, and the pod that ended meanwhile is not lost', async () => {
    const ctx = setup();
    ctx.addGpuPod('train');
    await ctx.start();

    ctx.kube.setPodPhase('team-a', 'train', 'Succeeded');
    const error = ctx.kube.failNext('listPodsOnNode', 503, 'etcdserver: request timed out');
    await ctx.poll();
    expect(ctx.lines).toContainEqual({
      level: 'warn',
      message: 'post-flight poll failed',
      fields: { error },
    });
    expect(ctx.runs).toEqual([]);

    await ctx.poll();
    expect(ctx.kube.callsTo('listPodsOnNode')).toHaveLength(3);
    expect(ctx.runs).toEqual(ONE_POSTFLIGHT);
    ctx.postflight.stop();
  });

  test('stop() stops polling', async () => {
    const ctx = setup();
    ctx.addGpuPod('train');
    await ctx.start();
    await ctx.poll();
    expect(ctx.kube.callsTo('listPodsOnNode')).toHaveLength(2);

    ctx.postflight.stop();
    expect(ctx.clock.pending()).toEqual([]);
    ctx.kube.setPodPhase('team-a', 'train', 'Succeeded');
    await ctx.clock.advance(POLL_MS * 10);
    expect(ctx.kube.callsTo('listPodsOnNode')).toHaveLength(2);
    expect(ctx.runs).toEqual([]);
  });

  test('start() twice polls on one timer only', async () => {
    const ctx = setup();
    ctx.postflight.start();
    await ctx.start();
    await ctx.poll(2);
    expect(ctx.kube.callsTo('listPodsOnNode')).toHaveLength(3);
    ctx.postflight.stop();
  });
});
