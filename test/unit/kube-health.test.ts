import { describe, expect, test } from '@jest/globals';
import { observeKubeApi } from '../../exporter/cluster/kube-health.js';
import type { KubeApi, NodeInfo, NodeMetadataPatch } from '../../exporter/k8s/ports.js';
import { KubeError } from '../../exporter/k8s/ports.js';
import { FakeClock } from '../fakes/clock.js';
import { FakeKube } from '../fakes/kube.js';

function setup() {
  const clock = new FakeClock();
  const kube = new FakeKube();
  kube.addNode('node-a', { labels: { 'nvidia.com/gpu.product': 'H100' }, allocatableGpus: 8 });
  const observed = observeKubeApi(kube.api, () => clock.now());
  return { clock, kube, api: observed.api, health: observed.health, t0: clock.now() };
}

describe('observeKubeApi', () => {
  test('starts up, with nothing recorded', () => {
    const { health } = setup();
    expect(health.snapshot()).toEqual({
      up: true,
      lastFailure: undefined,
      lastSuccessAt: undefined,
      failures: new Map(),
    });
  });

  test('a successful call keeps the API up and records when', async () => {
    const { clock, api, health, t0 } = setup();
    await clock.advance(5000);
    await api.getNode('node-a');
    expect(health.snapshot()).toEqual({
      up: true,
      lastFailure: undefined,
      lastSuccessAt: t0 + 5000,
      failures: new Map(),
    });
  });

  test('a 500 marks the API down with the operation, status, message and time', async () => {
    const { clock, kube, api, health, t0 } = setup();
    await clock.advance(1000);
    kube.failNext('patchNodeMetadata', 500, 'etcdserver: request timed out');
    await expect(api.patchNodeMetadata('node-a', { labels: { a: 'b' } })).rejects.toThrow(
      KubeError,
    );
    expect(health.snapshot()).toEqual({
      up: false,
      lastFailure: {
        operation: 'patchNodeMetadata',
        message: 'patchNodeMetadata: 500 etcdserver: request timed out',
        status: 500,
        at: t0 + 1000,
      },
      lastSuccessAt: undefined,
      failures: new Map([['patchNodeMetadata', 1]]),
    });
  });

  test('a call that got no answer (status undefined) marks the API down', async () => {
    const { kube, api, health, t0 } = setup();
    kube.failNext('listEndpointSlices', undefined, 'connect ECONNREFUSED 10.96.0.1:443');
    await expect(api.listEndpointSlices('autopilot', 'svc')).rejects.toThrow(
      'listEndpointSlices: connect ECONNREFUSED 10.96.0.1:443',
    );
    expect(health.snapshot().up).toBe(false);
    expect(health.snapshot().lastFailure).toEqual({
      operation: 'listEndpointSlices',
      message: 'listEndpointSlices: connect ECONNREFUSED 10.96.0.1:443',
      status: undefined,
      at: t0,
    });
  });

  test('failures are counted per operation; a later success brings the API back up', async () => {
    const { kube, api, health } = setup();
    kube.failNext('getNode', 503);
    kube.failNext('getNode', 503);
    kube.failNext('listPods', 500);
    await expect(api.getNode('node-a')).rejects.toThrow();
    await expect(api.getNode('node-a')).rejects.toThrow();
    await expect(api.listPods('default', 'app=x')).rejects.toThrow();
    expect(health.snapshot().failures).toEqual(
      new Map([
        ['getNode', 2],
        ['listPods', 1],
      ]),
    );
    expect(health.snapshot().lastFailure?.operation).toBe('listPods');

    await api.getNode('node-a');
    expect(health.snapshot().up).toBe(true);
    // The last failure stays visible after recovery: /status says what went wrong, and when.
    expect(health.snapshot().lastFailure?.operation).toBe('listPods');
    expect(health.snapshot().failures.get('getNode')).toBe(2);
  });

  test.each([404, 409])(
    'a %i is an answer: the API stays up and no failure is counted',
    async (status) => {
      const { clock, kube, api, health, t0 } = setup();
      await clock.advance(10);
      kube.failNext('createPvc', status, 'conflict or absent');
      await expect(
        api.createPvc({
          name: 'probe',
          namespace: 'autopilot',
          storageClass: 'standard',
          accessMode: 'ReadWriteOnce',
          size: '100Mi',
          labels: {},
        }),
      ).rejects.toThrow(KubeError);
      expect(health.snapshot()).toEqual({
        up: true,
        lastFailure: undefined,
        lastSuccessAt: t0 + 10,
        failures: new Map(),
      });
    },
  );

  test('a 404 after a failure brings the API back up', async () => {
    const { kube, api, health } = setup();
    kube.failNext('getNode', 500);
    await expect(api.getNode('node-a')).rejects.toThrow();
    await expect(api.getNode('no-such-node')).rejects.toThrow('getNode: 404');
    expect(health.snapshot().up).toBe(true);
  });

  test('version() changes on a failure and on recovery', async () => {
    const { kube, api, health } = setup();
    const initial = health.version();
    kube.failNext('getNode', 500);
    await expect(api.getNode('node-a')).rejects.toThrow();
    const failed = health.version();
    expect(failed).not.toBe(initial);
    await api.getNode('node-a');
    expect(health.version()).not.toBe(failed);
  });

  test('the wrapped API resolves to exactly what the inner one does and throws the same error', async () => {
    const { kube, api } = setup();
    const patch: NodeMetadataPatch = { labels: { 'autopilot.ibm.com/gpuhealth': 'PASS' } };
    const expected: NodeInfo = {
      name: 'node-a',
      labels: { 'nvidia.com/gpu.product': 'H100', 'autopilot.ibm.com/gpuhealth': 'PASS' },
      annotations: {},
      conditions: [],
      allocatableGpus: 8,
    };
    await expect(api.patchNodeMetadata('node-a', patch)).resolves.toEqual(expected);
    expect(kube.calls).toEqual([{ method: 'patchNodeMetadata', args: ['node-a', patch] }]);

    const error = kube.failNext('getNode', 500, 'boom');
    await expect(api.getNode('node-a')).rejects.toBe(error);
  });

  test('passes every method through, including a non-KubeError rejection', async () => {
    const { kube } = setup();
    const surprise = new TypeError('undici exploded');
    const inner: KubeApi = { ...kube.api, reviewToken: () => Promise.reject(surprise) };
    const observed = observeKubeApi(inner, () => 0);
    expect(Object.keys(observed.api).sort()).toEqual(Object.keys(kube.api).sort());
    await expect(observed.api.reviewToken('t')).rejects.toBe(surprise);
    expect(observed.health.snapshot().lastFailure).toEqual({
      operation: 'reviewToken',
      message: 'undici exploded',
      status: undefined,
      at: 0,
    });
  });

  test('wraps methods the implementation inherits, as a class instance does', async () => {
    const { kube } = setup();
    // A class that implements KubeApi keeps its methods on the prototype, as this object does.
    const inherited = Object.create(kube.api) as KubeApi;
    const observed = observeKubeApi(inherited, () => 0);
    await expect(observed.api.getNode('node-a')).resolves.toMatchObject({ name: 'node-a' });
    expect(observed.health.snapshot().lastSuccessAt).toBe(0);
  });
});
