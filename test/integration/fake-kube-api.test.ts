/**
 * The fake Kubernetes API server, driven over HTTP by the real @kubernetes/client-node, so that
 * what other tests learn from it holds for the real client's requests and parsing.
 */

import { afterEach, describe, expect, test } from '@jest/globals';
import {
  ApiException,
  AuthenticationV1Api,
  AuthorizationV1Api,
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  Observable,
  PatchStrategy,
  StorageV1Api,
  Watch,
  setHeaderOptions,
} from '@kubernetes/client-node';
import type {
  ConfigurationOptions,
  ObservableMiddleware,
  V1PersistentVolumeClaim,
} from '@kubernetes/client-node';
import {
  applyJsonPatch,
  applyMergePatch,
  endpointSlice,
  matchesLabelSelector,
  parseLabelSelector,
  startFakeKubeApi,
} from '../fakes/kube-api-server.js';
import type { FakeKubeApi, FakeKubeApiOptions } from '../fakes/kube-api-server.js';

const NS = 'autopilot';
const SLICES = `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`;
const SERVICE_SELECTOR = 'kubernetes.io/service-name=autopilot-healthchecks';

function kubeConfig(url: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: url, skipTLSVerify: true }],
    users: [{ name: 'u', token: 't' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  return kc;
}

async function until(predicate: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Settles with the rejection of `promise`; fails the test if it resolves. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to fail');
}

interface StatusError {
  readonly code: number;
  /** The Status the server sent; client-node leaves the body of an error as unparsed text. */
  readonly status: Record<string, unknown>;
}

async function apiError(promise: Promise<unknown>): Promise<StatusError> {
  const error = await rejection(promise);
  expect(error).toBeInstanceOf(ApiException);
  const { code, body } = error as ApiException<unknown>;
  expect(typeof body).toBe('string');
  return { code, status: JSON.parse(body as string) as Record<string, unknown> };
}

/** Per-call options that make the client give up after `ms`, as an adapter's timeout would. */
function abortAfter(ms: number): ConfigurationOptions<ObservableMiddleware> {
  return {
    middleware: [
      {
        pre: (context) => {
          context.setSignal(AbortSignal.timeout(ms));
          return new Observable(Promise.resolve(context));
        },
        post: (context) => new Observable(Promise.resolve(context)),
      },
    ],
    middlewareMergeStrategy: 'append',
  };
}

const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

interface Rig {
  readonly api: FakeKubeApi;
  readonly kc: KubeConfig;
  readonly core: CoreV1Api;
}

async function setup(options: FakeKubeApiOptions = {}): Promise<Rig> {
  const api = await startFakeKubeApi(options);
  cleanups.push(() => api.close());
  const kc = kubeConfig(api.url);
  return { api, kc, core: kc.makeApiClient(CoreV1Api) };
}

describe('label selectors', () => {
  const labels = { app: 'autopilot', tier: 'gpu', 'example.com/zone': 'a' };

  test.each([
    ['', true],
    ['app=autopilot', true],
    ['app==autopilot', true],
    ['app=other', false],
    ['app!=other', true],
    ['app!=autopilot', false],
    ['missing!=x', true],
    ['tier', true],
    ['missing', false],
    ['!missing', true],
    ['!tier', false],
    ['tier in (cpu, gpu)', true],
    ['tier in (cpu)', false],
    ['tier notin (cpu,gpu)', false],
    ['missing notin (x)', true],
    ['example.com/zone=a', true],
    ['app=autopilot,tier in (gpu),!missing', true],
    ['app=autopilot, tier=cpu', false],
  ])('%j matches: %s', (selector, expected) => {
    expect(matchesLabelSelector(selector, labels)).toBe(expected);
  });

  test('no labels at all match only negative requirements', () => {
    expect(matchesLabelSelector('!a,b!=c,d notin (e)', undefined)).toBe(true);
    expect(matchesLabelSelector('a', undefined)).toBe(false);
  });

  test('parses set requirements with their values', () => {
    expect(parseLabelSelector('a in (x, y),b!=z')).toEqual([
      { key: 'a', op: 'in', values: ['x', 'y'] },
      { key: 'b', op: 'notin', values: ['z'] },
    ]);
  });

  test.each(['a=b=c', '=x', 'a in x', 'a in (b c)', 'a,,b', 'a b'])('rejects %j', (selector) => {
    expect(() => parseLabelSelector(selector)).toThrow(/invalid label selector/);
  });
});

describe('patch documents', () => {
  test('a merge patch sets keys, removes those set to null and keeps the rest', () => {
    const node = { metadata: { name: 'n', labels: { a: '1', b: '2' } }, spec: { x: [1, 2] } };
    expect(
      applyMergePatch(node, { metadata: { labels: { a: null, c: '3' } }, spec: { x: [3] } }),
    ).toEqual({ metadata: { name: 'n', labels: { b: '2', c: '3' } }, spec: { x: [3] } });
  });

  test('a JSON patch unescapes ~1 and ~0 and refuses a missing parent', () => {
    const node = { metadata: { labels: { 'a/b': '1' } } };
    expect(
      applyJsonPatch(node, [
        { op: 'replace', path: '/metadata/labels/a~1b', value: '2' },
        { op: 'add', path: '/metadata/labels/c~0d', value: '3' },
      ]),
    ).toEqual({ metadata: { labels: { 'a/b': '2', 'c~d': '3' } } });
    expect(() =>
      applyJsonPatch(node, [{ op: 'add', path: '/metadata/annotations/x', value: '1' }]),
    ).toThrow(/missing path/);
    expect(() => applyJsonPatch(node, [{ op: 'remove', path: '/metadata/labels/zz' }])).toThrow(
      /nonexistent/,
    );
  });
});

describe('nodes', () => {
  test('reads and lists nodes by label selector', async () => {
    const { api, core } = await setup();
    api.addNode({
      name: 'gpu-1',
      labels: { 'nvidia.com/gpu.present': 'true' },
      allocatableGpus: 8,
    });
    api.addNode({ name: 'cpu-1' });

    const node = await core.readNode({ name: 'gpu-1' });
    expect(node.metadata?.labels).toMatchObject({ 'nvidia.com/gpu.present': 'true' });
    expect(node.status?.allocatable?.['nvidia.com/gpu']).toBe('8');
    expect(node.metadata?.resourceVersion).toMatch(/^\d+$/);

    const list = await core.listNode({ labelSelector: 'nvidia.com/gpu.present=true' });
    expect(list.items.map((n) => n.metadata?.name)).toEqual(['gpu-1']);
    expect(list.metadata?.resourceVersion).toBe(api.resourceVersion);
    expect((await core.listNode({})).items).toHaveLength(2);

    const missing = await apiError(core.readNode({ name: 'nope' }));
    expect(missing.code).toBe(404);
    expect(missing.status).toMatchObject({ kind: 'Status', reason: 'NotFound', code: 404 });
  });

  test('a merge patch sets labels, null removes one, and the wire body is recorded', async () => {
    const { api, core } = await setup();
    api.addNode({ name: 'gpu-1', labels: { old: 'x', keep: 'y' }, annotations: { note: 'n' } });
    const before = api.node('gpu-1')?.metadata.resourceVersion;

    const body = { metadata: { labels: { 'autopilot.ibm.com/gpuhealth': 'PASS', old: null } } };
    const patched = await core.patchNode(
      { name: 'gpu-1', body },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );

    expect(patched.metadata?.labels).toEqual({
      'kubernetes.io/hostname': 'gpu-1',
      keep: 'y',
      'autopilot.ibm.com/gpuhealth': 'PASS',
    });
    expect(api.node('gpu-1')?.metadata.annotations).toEqual({ note: 'n' });
    expect(Number(api.node('gpu-1')?.metadata.resourceVersion)).toBeGreaterThan(Number(before));
    expect(api.patches).toEqual([
      { node: 'gpu-1', contentType: 'application/merge-patch+json', body },
    ]);
  });

  test('a patch that changes nothing keeps the resourceVersion', async () => {
    const { api, core } = await setup();
    api.addNode({ name: 'gpu-1', labels: { a: '1' } });
    const before = api.node('gpu-1')?.metadata.resourceVersion;
    await core.patchNode(
      { name: 'gpu-1', body: { metadata: { labels: { a: '1' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(api.node('gpu-1')?.metadata.resourceVersion).toBe(before);
  });

  test('a merge patch with a stale resourceVersion is a 409 Conflict', async () => {
    const { api, core } = await setup();
    api.addNode({ name: 'gpu-1' });
    const error = await apiError(
      core.patchNode(
        { name: 'gpu-1', body: { metadata: { resourceVersion: '0', labels: { a: '1' } } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      ),
    );
    expect(error.code).toBe(409);
    expect(error.status).toMatchObject({ reason: 'Conflict' });
  });

  test('the default JSON patch works and a missing parent is refused', async () => {
    const { api, core } = await setup();
    api.addNode({ name: 'gpu-1' });
    const body = [
      { op: 'add', path: '/metadata/labels/autopilot.ibm.com~1gpuhealth', value: 'OK' },
    ];

    const patched = await core.patchNode({ name: 'gpu-1', body });
    expect(patched.metadata?.labels?.['autopilot.ibm.com/gpuhealth']).toBe('OK');
    expect(api.patches[0]).toEqual({
      node: 'gpu-1',
      contentType: 'application/json-patch+json',
      body,
    });

    const error = await apiError(
      core.patchNode({
        name: 'gpu-1',
        body: [{ op: 'add', path: '/spec/taints/0/key', value: 'x' }],
      }),
    );
    expect(error.code).toBe(422);
  });
});

describe('pods', () => {
  test('lists by label selector, by node and across namespaces', async () => {
    const { api, core } = await setup();
    api.addPod({ namespace: NS, name: 'ap-1', labels: { app: 'autopilot' }, nodeName: 'n1' });
    api.addPod({ namespace: NS, name: 'ap-2', labels: { app: 'autopilot' }, nodeName: 'n2' });
    api.addPod({ namespace: NS, name: 'other', labels: { app: 'other' }, nodeName: 'n1' });
    api.addPod({ namespace: 'elsewhere', name: 'ap-3', labels: { app: 'autopilot' } });

    const byLabel = await core.listNamespacedPod({ namespace: NS, labelSelector: 'app=autopilot' });
    expect(byLabel.items.map((p) => p.metadata?.name)).toEqual(['ap-1', 'ap-2']);
    expect(byLabel.items[0]?.status?.phase).toBe('Running');

    const onNode = await core.listNamespacedPod({
      namespace: NS,
      labelSelector: 'app=autopilot',
      fieldSelector: 'spec.nodeName=n1',
    });
    expect(onNode.items.map((p) => p.metadata?.name)).toEqual(['ap-1']);

    const everywhere = await core.listPodForAllNamespaces({ labelSelector: 'app=autopilot' });
    expect(everywhere.items.map((p) => p.metadata?.name)).toEqual(['ap-1', 'ap-2', 'ap-3']);

    const bad = await apiError(core.listNamespacedPod({ namespace: NS, labelSelector: 'a b' }));
    expect(bad.code).toBe(400);
  });
});

interface Seen {
  readonly type: string;
  readonly name: string | undefined;
}

interface Watcher {
  readonly seen: Seen[];
  /** Settles with what done() received. */
  readonly ended: Promise<unknown>;
  readonly objects: unknown[];
  stop(): void;
}

async function watchSlices(kc: KubeConfig, resourceVersion: string | undefined): Promise<Watcher> {
  const seen: Seen[] = [];
  const objects: unknown[] = [];
  let end: (value: unknown) => void = () => undefined;
  const ended = new Promise<unknown>((resolve) => (end = resolve));
  const query = resourceVersion === undefined ? {} : { resourceVersion };
  const controller = await new Watch(kc).watch(
    SLICES,
    { labelSelector: SERVICE_SELECTOR, ...query },
    (type: string, object: { metadata?: { name?: string } }) => {
      seen.push({ type, name: object.metadata?.name });
      objects.push(object);
    },
    (error: unknown) => end(error),
  );
  cleanups.push(async () => {
    controller.abort();
    await ended;
  });
  return { seen, objects, ended, stop: () => controller.abort() };
}

const slice = (name: string, service = 'autopilot-healthchecks', ready = true) =>
  endpointSlice({
    name,
    service,
    endpoints: [{ address: '10.0.0.1', ready, nodeName: 'n1', podName: 'ap-1' }],
    ports: [{ name: 'http', port: 3333 }],
  });

describe('EndpointSlices', () => {
  test('lists the slices of one Service with the resourceVersion to watch from', async () => {
    const { api, kc } = await setup();
    api.upsertEndpointSlice(NS, slice('a'));
    api.upsertEndpointSlice(NS, slice('z', 'other-service'));
    const discovery = kc.makeApiClient(DiscoveryV1Api);

    const list = await discovery.listNamespacedEndpointSlice({
      namespace: NS,
      labelSelector: SERVICE_SELECTOR,
    });
    expect(list.items.map((s) => s.metadata?.name)).toEqual(['a']);
    expect(list.items[0]?.endpoints[0]).toMatchObject({
      addresses: ['10.0.0.1'],
      conditions: { ready: true },
      nodeName: 'n1',
      targetRef: { name: 'ap-1' },
    });
    expect(list.items[0]?.ports?.[0]).toMatchObject({ name: 'http', port: 3333 });
    expect(list.metadata?.resourceVersion).toBe(api.resourceVersion);
  });

  test('a watch from the list version sees ADDED, MODIFIED and DELETED of its Service only', async () => {
    const { api, kc } = await setup();
    api.upsertEndpointSlice(NS, slice('a'));
    const from = api.resourceVersion;
    const watcher = await watchSlices(kc, from);
    await api.waitForOpenWatches(1);

    api.upsertEndpointSlice(NS, slice('b'));
    api.upsertEndpointSlice(NS, slice('z', 'other-service'));
    api.upsertEndpointSlice(NS, slice('a', 'autopilot-healthchecks', false));
    api.deleteEndpointSlice(NS, 'b');
    await until(() => watcher.seen.length === 3, 'three events');

    expect(watcher.seen).toEqual([
      { type: 'ADDED', name: 'b' },
      { type: 'MODIFIED', name: 'a' },
      { type: 'DELETED', name: 'b' },
    ]);
    expect(watcher.objects[1]).toMatchObject({ endpoints: [{ conditions: { ready: false } }] });
    expect(api.watchRequests).toBe(1);
    expect(api.requests.at(-1)?.query).toMatchObject({
      watch: 'true',
      labelSelector: SERVICE_SELECTOR,
      resourceVersion: from,
    });
  });

  test('a slice relabelled away from the Service arrives as DELETED', async () => {
    const { api, kc } = await setup();
    api.upsertEndpointSlice(NS, slice('a'));
    const watcher = await watchSlices(kc, api.resourceVersion);
    await api.waitForOpenWatches(1);
    api.upsertEndpointSlice(NS, slice('a', 'other-service'));
    await until(() => watcher.seen.length === 1, 'one event');
    expect(watcher.seen).toEqual([{ type: 'DELETED', name: 'a' }]);
  });

  test('resuming from an older version replays the events since; none starts with ADDED of all', async () => {
    const { api, kc } = await setup();
    api.upsertEndpointSlice(NS, slice('a'));
    const from = api.resourceVersion;
    api.upsertEndpointSlice(NS, slice('b'));
    api.deleteEndpointSlice(NS, 'a');

    const resumed = await watchSlices(kc, from);
    await until(() => resumed.seen.length === 2, 'the replay');
    expect(resumed.seen).toEqual([
      { type: 'ADDED', name: 'b' },
      { type: 'DELETED', name: 'a' },
    ]);

    const fresh = await watchSlices(kc, undefined);
    await until(() => fresh.seen.length === 1, 'the initial state');
    expect(fresh.seen).toEqual([{ type: 'ADDED', name: 'b' }]);
  });

  test('dropWatches ends the watch with an error and closes it on the server', async () => {
    const { api, kc } = await setup();
    const watcher = await watchSlices(kc, api.resourceVersion);
    await api.waitForOpenWatches(1);
    api.dropWatches();
    await expect(watcher.ended).resolves.toBeInstanceOf(Error);
    await until(() => api.openWatches === 0, 'the server to forget the watch');
  });

  test('a client that stops its watch is no longer counted as open', async () => {
    const { api, kc } = await setup();
    const watcher = await watchSlices(kc, api.resourceVersion);
    await api.waitForOpenWatches(1);
    watcher.stop();
    await watcher.ended;
    await until(() => api.openWatches === 0, 'the server to see the close');
  });

  test('after compactHistory an old version gets one ERROR event with a 410 Status', async () => {
    const { api, kc } = await setup();
    api.upsertEndpointSlice(NS, slice('a'));
    const old = api.resourceVersion;
    api.upsertEndpointSlice(NS, slice('b'));
    api.compactHistory();

    const watcher = await watchSlices(kc, old);
    await expect(watcher.ended).resolves.toBeNull();
    expect(watcher.seen).toEqual([{ type: 'ERROR', name: undefined }]);
    expect(watcher.objects[0]).toMatchObject({ kind: 'Status', code: 410, reason: 'Expired' });

    // The current version is still good after compaction.
    const current = await watchSlices(kc, api.resourceVersion);
    await api.waitForOpenWatches(1);
    api.upsertEndpointSlice(NS, slice('c'));
    await until(() => current.seen.length === 1, 'an event');
    expect(api.watchRequests).toBe(2);
  });

  test('an overflowing history expires the versions it no longer holds', async () => {
    const { api, kc } = await setup({ historyLimit: 2 });
    api.upsertEndpointSlice(NS, slice('x'));
    const old = api.resourceVersion;
    for (const name of ['a', 'b', 'c']) api.upsertEndpointSlice(NS, slice(name));
    const watcher = await watchSlices(kc, old);
    await watcher.ended;
    expect(watcher.seen.map((s) => s.type)).toEqual(['ERROR']);
  });

  test('with expiredWatch "status" an old version is refused with HTTP 410', async () => {
    const { api, kc } = await setup({ expiredWatch: 'status' });
    api.upsertEndpointSlice(NS, slice('a'));
    const old = api.resourceVersion;
    api.upsertEndpointSlice(NS, slice('b'));
    api.compactHistory();
    const watcher = await watchSlices(kc, old);
    await expect(watcher.ended).resolves.toMatchObject({ statusCode: 410 });
    expect(watcher.seen).toEqual([]);
  });
});

function claim(name: string, storageClassName: string): V1PersistentVolumeClaim {
  return {
    metadata: { name, labels: { app: 'autopilot' } },
    spec: {
      storageClassName,
      accessModes: ['ReadWriteOnce'],
      resources: { requests: { storage: '100Mi' } },
    },
  };
}

describe('PersistentVolumeClaims and StorageClasses', () => {
  test('create, read, delete; a duplicate is 409 and a missing claim 404', async () => {
    const { api, core } = await setup();
    api.addStorageClass('fast', { binder: 'never' });

    const created = await core.createNamespacedPersistentVolumeClaim({
      namespace: NS,
      body: claim('pvc-1', 'fast'),
    });
    expect(created.status?.phase).toBe('Pending');
    expect(created.metadata?.uid).toBeDefined();

    const read = await core.readNamespacedPersistentVolumeClaim({ namespace: NS, name: 'pvc-1' });
    expect(read.spec?.storageClassName).toBe('fast');

    const duplicate = await apiError(
      core.createNamespacedPersistentVolumeClaim({ namespace: NS, body: claim('pvc-1', 'fast') }),
    );
    expect(duplicate.code).toBe(409);
    expect(duplicate.status).toMatchObject({ reason: 'AlreadyExists' });

    const listed = await core.listNamespacedPersistentVolumeClaim({ namespace: NS });
    expect(listed.items.map((c) => c.metadata?.name)).toEqual(['pvc-1']);

    const deleted = await core.deleteNamespacedPersistentVolumeClaim({
      namespace: NS,
      name: 'pvc-1',
    });
    expect(deleted.metadata?.deletionTimestamp).toBeInstanceOf(Date);
    const gone = await apiError(
      core.readNamespacedPersistentVolumeClaim({ namespace: NS, name: 'pvc-1' }),
    );
    expect(gone.code).toBe(404);
    expect(
      (await apiError(core.deleteNamespacedPersistentVolumeClaim({ namespace: NS, name: 'pvc-1' })))
        .code,
    ).toBe(404);
    expect(api.pvcLog).toEqual({ created: [`${NS}/pvc-1`], deleted: [`${NS}/pvc-1`] });
  });

  test('a deletion delay leaves the claim terminating for a while', async () => {
    const { api, core } = await setup({ pvcDeletionDelayMs: 100 });
    api.addStorageClass('fast');
    await core.createNamespacedPersistentVolumeClaim({ namespace: NS, body: claim('c', 'fast') });
    await core.deleteNamespacedPersistentVolumeClaim({ namespace: NS, name: 'c' });

    const terminating = await core.readNamespacedPersistentVolumeClaim({
      namespace: NS,
      name: 'c',
    });
    expect(terminating.metadata?.deletionTimestamp).toBeDefined();
    await until(() => api.pvc(NS, 'c') === undefined, 'the claim to go');
  });

  test('the binder binds after the class delay; never, WaitForFirstConsumer and no class stay Pending', async () => {
    const { api, core } = await setup();
    api.addStorageClass('slow', { binder: { bindAfterMs: 50 } });
    api.addStorageClass('stuck', { binder: 'never' });
    api.addStorageClass('local', { volumeBindingMode: 'WaitForFirstConsumer' });
    for (const [name, storageClass] of [
      ['bound', 'slow'],
      ['never', 'stuck'],
      ['wffc', 'local'],
      ['classless', 'absent'],
    ] as const) {
      await core.createNamespacedPersistentVolumeClaim({
        namespace: NS,
        body: claim(name, storageClass),
      });
    }
    expect(api.pvc(NS, 'bound')?.status).toEqual({ phase: 'Pending' });

    await until(
      () => (api.pvc(NS, 'bound')?.status as { phase?: string }).phase === 'Bound',
      'a bind',
    );
    const bound = await core.readNamespacedPersistentVolumeClaim({ namespace: NS, name: 'bound' });
    expect(bound.status).toMatchObject({ phase: 'Bound', capacity: { storage: '100Mi' } });
    expect(bound.spec?.volumeName).toMatch(/^pvc-/);

    await new Promise((resolve) => setTimeout(resolve, 50));
    for (const name of ['never', 'wffc', 'classless']) {
      const pending = await core.readNamespacedPersistentVolumeClaim({ namespace: NS, name });
      expect(pending.status?.phase).toBe('Pending');
    }
  });

  test('reads a StorageClass, 404 when absent', async () => {
    const { api, kc } = await setup();
    api.addStorageClass('local', {
      volumeBindingMode: 'WaitForFirstConsumer',
      provisioner: 'rancher.io/local-path',
    });
    const storage = kc.makeApiClient(StorageV1Api);
    const read = await storage.readStorageClass({ name: 'local' });
    expect(read).toMatchObject({
      provisioner: 'rancher.io/local-path',
      volumeBindingMode: 'WaitForFirstConsumer',
    });
    expect((await apiError(storage.readStorageClass({ name: 'nope' }))).code).toBe(404);
  });
});

describe('reviews', () => {
  test('TokenReview authenticates registered tokens only', async () => {
    const { api, kc } = await setup();
    api.addToken('good', { username: 'system:serviceaccount:mon:prom', uid: 'u1', groups: ['g'] });
    const authn = kc.makeApiClient(AuthenticationV1Api);

    const good = await authn.createTokenReview({ body: { spec: { token: 'good' } } });
    expect(good.status).toEqual({
      authenticated: true,
      user: {
        username: 'system:serviceaccount:mon:prom',
        uid: 'u1',
        groups: ['g', 'system:authenticated'],
      },
    });
    const bad = await authn.createTokenReview({ body: { spec: { token: 'bad' } } });
    expect(bad.status).toEqual({ authenticated: false, error: 'invalid bearer token' });
    expect(api.tokenReviews).toEqual(['good', 'bad']);
  });

  test('SubjectAccessReview allows what a rule grants a user or group, denies the rest', async () => {
    const { api, kc } = await setup();
    api.allow({ user: 'alice', verb: 'get', resource: 'nodes', apiGroup: '' });
    api.allow({ group: 'ops', verb: 'update', resource: 'pods', apiGroup: '', name: 'ap-1' });
    const authz = kc.makeApiClient(AuthorizationV1Api);
    const review = async (
      user: string,
      groups: string[],
      verb: string,
      resource: string,
      name?: string,
    ) =>
      (
        await authz.createSubjectAccessReview({
          body: {
            spec: {
              user,
              groups,
              resourceAttributes: {
                group: '',
                resource,
                verb,
                ...(name === undefined ? {} : { name }),
              },
            },
          },
        })
      ).status;

    expect(await review('alice', [], 'get', 'nodes')).toMatchObject({ allowed: true });
    expect(await review('alice', [], 'patch', 'nodes')).toMatchObject({ allowed: false });
    expect(await review('bob', [], 'get', 'nodes')).toMatchObject({ allowed: false });
    expect(await review('bob', ['ops'], 'update', 'pods', 'ap-1')).toMatchObject({ allowed: true });
    expect(await review('bob', ['ops'], 'update', 'pods', 'ap-2')).toMatchObject({
      allowed: false,
    });
    expect(api.accessReviews).toHaveLength(5);
    expect(api.accessReviews[0]).toMatchObject({
      user: 'alice',
      resourceAttributes: { verb: 'get', resource: 'nodes' },
    });
  });
});

describe('fault injection', () => {
  test('failNext answers matching requests with a Status, then stops', async () => {
    const { api, core } = await setup();
    api.addNode({ name: 'n1' });
    api.failNext({ pathPrefix: '/api/v1/nodes', status: 403, message: 'nodes is forbidden' });
    api.failNext({ method: 'GET', pathPrefix: '/api/v1/nodes/n1', status: 500, times: 2 });

    const forbidden = await apiError(core.readNode({ name: 'n1' }));
    expect(forbidden.code).toBe(403);
    expect(forbidden.status).toMatchObject({ reason: 'Forbidden', message: 'nodes is forbidden' });
    expect((await apiError(core.readNode({ name: 'n1' }))).code).toBe(500);
    const internal = await apiError(core.readNode({ name: 'n1' }));
    expect(internal.status).toMatchObject({ kind: 'Status', reason: 'InternalError', code: 500 });
    await expect(core.readNode({ name: 'n1' })).resolves.toMatchObject({ kind: 'Node' });
    expect(api.requests.map((r) => r.path)).toEqual(Array(4).fill('/api/v1/nodes/n1'));
  });

  test('a failure limited to watches leaves lists alone', async () => {
    const { api, kc } = await setup();
    api.failNext({ pathPrefix: SLICES, watch: true, status: 500 });
    const discovery = kc.makeApiClient(DiscoveryV1Api);
    await expect(discovery.listNamespacedEndpointSlice({ namespace: NS })).resolves.toBeDefined();
    const watcher = await watchSlices(kc, api.resourceVersion);
    await expect(watcher.ended).resolves.toMatchObject({ statusCode: 500 });
  });

  test('a delayed answer lets a client abort the call', async () => {
    const { api, core } = await setup();
    api.addNode({ name: 'n1' });
    api.delay({ pathPrefix: '/api/v1/nodes', ms: 5000 });
    const started = Date.now();
    const error = await rejection(core.readNode({ name: 'n1' }, abortAfter(50)));
    expect(error).not.toBeInstanceOf(ApiException);
    expect(String(error)).toMatch(/abort/i);
    expect(Date.now() - started).toBeLessThan(2000);

    api.clearFaults();
    await expect(core.readNode({ name: 'n1' })).resolves.toMatchObject({ kind: 'Node' });
  });

  test('while down every connection is reset; back up it answers again', async () => {
    const { api, core } = await setup();
    api.addNode({ name: 'n1' });
    api.setDown(true);
    const error = await rejection(core.readNode({ name: 'n1' }));
    expect(error).not.toBeInstanceOf(ApiException);
    expect(String(error)).toMatch(/ECONNRESET|socket hang up/);
    expect(api.requests).toEqual([]);

    api.setDown(false);
    await expect(core.readNode({ name: 'n1' })).resolves.toMatchObject({ kind: 'Node' });
    expect(api.requests).toEqual([
      { method: 'GET', path: '/api/v1/nodes/n1', query: {}, contentType: undefined },
    ]);
  });

  test('unknown paths are 404 and unknown methods 405, both as Status', async () => {
    const { api, kc } = await setup();
    const core = kc.makeApiClient(CoreV1Api);
    const error = await apiError(core.readNamespace({ name: 'default' }));
    expect(error.code).toBe(404);
    expect(error.status).toMatchObject({ kind: 'Status', reason: 'NotFound' });
    api.addNode({ name: 'n1' });
    expect((await apiError(core.deleteNode({ name: 'n1' }))).code).toBe(405);
  });
});
