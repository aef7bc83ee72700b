/**
 * The client-node adapter (exporter/k8s/kube-api.ts) against the fake API server over HTTP: what it
 * sends, what it makes of the answers, and how every kind of failure reads. Then the pieces built
 * on it (peer directory, pvc check) with the real adapter underneath.
 */

import { afterEach, describe, expect, test } from '@jest/globals';
import { KubeConfig } from '@kubernetes/client-node';
import { createSystemClock, sleep } from '../../exporter/clock.js';
import { createPeerDirectory } from '../../exporter/cluster/peer-directory.js';
import {
  KubeError,
  type EndpointSliceInfo,
  type JobSpec,
  type KubeApi,
} from '../../exporter/k8s/ports.js';
import { createPvcCheck } from '../../exporter/checks/pvc.js';
import { createKubeApi } from '../../exporter/k8s/kube-api.js';
import { silentLogger } from '../../exporter/log.js';
import { endpointSlice, startFakeKubeApi, type FakeKubeApi } from '../fakes/kube-api-server.js';

const NS = 'autopilot';
const SERVICE = 'autopilot-healthchecks';

let server: FakeKubeApi | undefined;
const cleanups: (() => void)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) cleanup();
  await server?.close();
  server = undefined;
});

async function setup(timeoutMs = 2000): Promise<{ api: FakeKubeApi; kube: KubeApi }> {
  const api = await startFakeKubeApi();
  server = api;
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server: api.url, skipTLSVerify: true }],
    users: [{ name: 'autopilot', token: 'sa-token' }],
    contexts: [{ name: 'fake', cluster: 'fake', user: 'autopilot' }],
    currentContext: 'fake',
  });
  return { api, kube: createKubeApi(kc, timeoutMs) };
}

async function failure(promise: Promise<unknown>): Promise<KubeError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof KubeError) return error;
    throw new Error(`expected a KubeError, got ${String(error)}`, { cause: error });
  }
  throw new Error('expected a failure');
}

async function waitUntil(condition: () => boolean, withinMs: number): Promise<void> {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > withinMs) throw new Error(`condition not met within ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('nodes', () => {
  test('reads labels, annotations and allocatable GPUs', async () => {
    const { api, kube } = await setup();
    api.addNode({ name: 'n1', labels: { a: '1' }, annotations: { b: '2' }, allocatableGpus: 4 });
    expect(await kube.getNode('n1')).toEqual({
      name: 'n1',
      labels: { a: '1', 'kubernetes.io/hostname': 'n1' },
      annotations: { b: '2' },
      allocatableGpus: 4,
      capacityGpus: 4,
      resourceVersion: api.node('n1')?.metadata.resourceVersion,
      taints: [],
      unschedulable: false,
      uid: api.node('n1')?.metadata.uid,
    });
  });

  test('reads status.conditions, times in whole seconds as the API server writes them', async () => {
    const { api, kube } = await setup();
    api.addNode({ name: 'n1' });
    const ready = {
      type: 'Ready',
      status: 'True',
      reason: 'KubeletReady',
      message: 'kubelet is posting ready status',
      lastHeartbeatTime: '2026-01-01T00:00:05Z',
      lastTransitionTime: '2025-12-01T00:00:00Z',
    };
    api.editNode('n1', (node) => {
      node.status = { ...(node.status as object), conditions: [ready] };
    });
    expect((await kube.getNode('n1')).conditions).toEqual([ready]);
  });

  test('reads the capacity of renamed shared GPUs (nvidia.com/gpu.shared)', async () => {
    const { api, kube } = await setup();
    api.addNode({ name: 'n1', capacity: { 'nvidia.com/gpu.shared': '80' } });
    const node = await kube.getNode('n1');
    expect(node.capacitySharedGpus).toBe(80);
    expect(node.capacityGpus).toBeUndefined();
  });

  test('patches metadata as a merge patch; null removes a key', async () => {
    const { api, kube } = await setup();
    api.addNode({ name: 'n1', labels: { gone: 'x', kept: 'y' } });
    const node = await kube.patchNodeMetadata('n1', {
      labels: { gone: null, 'autopilot.ibm.com/gpuhealth': 'WARN' },
      annotations: { 'autopilot.ibm.com/dcgm.level.3.output': '' },
    });
    expect(node.labels).toEqual({
      kept: 'y',
      'autopilot.ibm.com/gpuhealth': 'WARN',
      'kubernetes.io/hostname': 'n1',
    });
    expect(api.patches).toEqual([
      {
        node: 'n1',
        contentType: 'application/merge-patch+json',
        body: {
          metadata: {
            labels: { gone: null, 'autopilot.ibm.com/gpuhealth': 'WARN' },
            annotations: { 'autopilot.ibm.com/dcgm.level.3.output': '' },
          },
        },
      },
    ]);
  });

  test('lists nodes by label selector', async () => {
    const { api, kube } = await setup();
    api.addNode({ name: 'a', labels: { pool: 'x' } });
    api.addNode({ name: 'b', labels: { pool: 'y' } });
    expect((await kube.listNodes('pool=y')).map((n) => n.name)).toEqual(['b']);
  });

  test('lists the pods of a workload with their nodes', async () => {
    const { api, kube } = await setup();
    api.addPod({
      namespace: 'ml',
      name: 'p0',
      labels: { app: 't' },
      nodeName: 'n1',
      podIP: '10.0.0.7',
      annotations: { 'k8s.v1.cni.cncf.io/network-status': '[]' },
    });
    api.addPod({ namespace: 'ml', name: 'p1', labels: { app: 't' } });
    api.addPod({ namespace: 'other', name: 'p2', labels: { app: 't' }, nodeName: 'n2' });
    expect(await kube.listPods('ml', 'app=t')).toEqual([
      {
        name: 'p0',
        namespace: 'ml',
        nodeName: 'n1',
        phase: 'Running',
        annotations: { 'k8s.v1.cni.cncf.io/network-status': '[]' },
        podIPs: ['10.0.0.7'],
        gpus: 0,
        terminationMessage: undefined,
      },
      {
        name: 'p1',
        namespace: 'ml',
        nodeName: undefined,
        phase: 'Running',
        annotations: {},
        podIPs: [],
        gpus: 0,
        terminationMessage: undefined,
      },
    ]);
  });
});

describe('deep-check Jobs', () => {
  const JOB: JobSpec = {
    name: 'deepcheck-n1-4f2a9c',
    namespace: NS,
    nodeName: 'n1',
    image: 'registry.example/autopilot:1.0',
    command: ['autopilot-deepcheck', '--dcgm-level', '3'],
    gpus: 8,
    priorityClassName: 'autopilot-preemptible',
    ttlSecondsAfterFinished: 600,
    activeDeadlineSeconds: 1800,
    serviceAccountName: 'autopilot-deepcheck',
    runtimeClassName: 'nvidia',
    imagePullSecrets: ['registry-a', 'registry-b'],
    toleratedTaintKeys: ['autopilot.ibm.com/gpuhealth'],
    labels: { 'app.kubernetes.io/name': 'autopilot-deepcheck' },
    env: { NODE_NAME: 'n1', DEEPCHECK_LEVEL: '3' },
  };

  test('createJob sends a Job pinned to the node, holding its GPUs, tried once', async () => {
    const { api, kube } = await setup();
    await kube.createJob(JOB);
    expect(api.jobs).toEqual([
      {
        apiVersion: 'batch/v1',
        kind: 'Job',
        metadata: {
          name: 'deepcheck-n1-4f2a9c',
          namespace: NS,
          labels: { 'app.kubernetes.io/name': 'autopilot-deepcheck' },
        },
        spec: {
          backoffLimit: 0,
          ttlSecondsAfterFinished: 600,
          activeDeadlineSeconds: 1800,
          template: {
            metadata: { labels: { 'app.kubernetes.io/name': 'autopilot-deepcheck' } },
            spec: {
              restartPolicy: 'Never',
              nodeName: 'n1',
              priorityClassName: 'autopilot-preemptible',
              serviceAccountName: 'autopilot-deepcheck',
              runtimeClassName: 'nvidia',
              imagePullSecrets: [{ name: 'registry-a' }, { name: 'registry-b' }],
              tolerations: [{ key: 'autopilot.ibm.com/gpuhealth', operator: 'Exists' }],
              automountServiceAccountToken: false,
              securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
              containers: [
                {
                  name: 'deepcheck',
                  image: 'registry.example/autopilot:1.0',
                  command: ['autopilot-deepcheck', '--dcgm-level', '3'],
                  resources: {
                    requests: { 'nvidia.com/gpu': '8' },
                    limits: { 'nvidia.com/gpu': '8' },
                  },
                  env: [
                    { name: 'NODE_NAME', value: 'n1' },
                    { name: 'DEEPCHECK_LEVEL', value: '3' },
                  ],
                  terminationMessagePolicy: 'FallbackToLogsOnError',
                  securityContext: {
                    allowPrivilegeEscalation: false,
                    capabilities: { drop: ['ALL'] },
                  },
                },
              ],
            },
          },
        },
      },
    ]);
  });

  test('without a priority class, service account, runtime class, pull secrets or tolerations the pod names none', async () => {
    const { api, kube } = await setup();
    await kube.createJob({
      ...JOB,
      priorityClassName: undefined,
      serviceAccountName: undefined,
      runtimeClassName: undefined,
      imagePullSecrets: [],
      toleratedTaintKeys: [],
    });
    const podSpec = api.job(NS, JOB.name)?.spec as { template: { spec: Record<string, unknown> } };
    expect(Object.keys(podSpec.template.spec).sort()).toEqual([
      'automountServiceAccountToken',
      'containers',
      'nodeName',
      'restartPolicy',
      'securityContext',
    ]);
  });

  test('listJobs: the Jobs matching the selector, with their node and creation time', async () => {
    const { kube } = await setup();
    const before = Date.now() - 1000;
    await kube.createJob(JOB);
    await kube.createJob({
      ...JOB,
      name: 'other-job',
      labels: { 'app.kubernetes.io/name': 'other' },
    });
    const listed = await kube.listJobs(NS, 'app.kubernetes.io/name=autopilot-deepcheck');
    expect(listed).toEqual([
      {
        name: JOB.name,
        state: 'Active',
        failure: undefined,
        nodeName: 'n1',
        createdAt: expect.any(Number),
      },
    ]);
    expect(listed[0]?.createdAt).toBeGreaterThanOrEqual(before);
  });

  test('Active, then Succeeded, with the report in the pod termination message', async () => {
    const { api, kube } = await setup();
    await kube.createJob(JOB);
    expect(await kube.readJob(NS, JOB.name)).toEqual({
      name: JOB.name,
      state: 'Active',
      failure: undefined,
    });
    const [pending, ...others] = await kube.listJobPods(NS, JOB.name);
    expect(others).toEqual([]);
    expect(pending).toMatchObject({ namespace: NS, nodeName: 'n1', phase: 'Pending', gpus: 8 });
    expect(pending?.name).toMatch(/^deepcheck-n1-4f2a9c-[a-z0-9]{5}$/);

    api.runJobPod(NS, JOB.name);
    expect((await kube.listJobPods(NS, JOB.name)).map((p) => p.phase)).toEqual(['Running']);
    expect((await kube.readJob(NS, JOB.name))?.state).toBe('Active');

    api.finishJob(NS, JOB.name, { succeeded: true, message: '{"verdict":"PASS"}' });
    expect(await kube.readJob(NS, JOB.name)).toEqual({
      name: JOB.name,
      state: 'Succeeded',
      failure: undefined,
    });
    expect(
      (await kube.listJobPods(NS, JOB.name)).map((p) => [p.phase, p.terminationMessage]),
    ).toEqual([['Succeeded', '{"verdict":"PASS"}']]);
  });

  test.each([
    ['BackoffLimitExceeded', 'BackoffLimitExceeded: Job has reached the specified backoff limit'],
    ['DeadlineExceeded', 'DeadlineExceeded: Job was active longer than specified deadline'],
  ])('Failed (%s) reads as the condition reason and message', async (reason, expected) => {
    const { api, kube } = await setup();
    await kube.createJob(JOB);
    api.runJobPod(NS, JOB.name);
    api.finishJob(NS, JOB.name, { succeeded: false, reason, message: 'dcgmi diag: 2 failures' });
    expect(await kube.readJob(NS, JOB.name)).toEqual({
      name: JOB.name,
      state: 'Failed',
      failure: expected,
    });
    expect(
      (await kube.listJobPods(NS, JOB.name)).map((p) => [p.phase, p.terminationMessage]),
    ).toEqual([['Failed', 'dcgmi diag: 2 failures']]);
  });

  test('deleteJob removes the Job and its pod; reading it then is undefined', async () => {
    const { api, kube } = await setup();
    await kube.createJob(JOB);
    api.runJobPod(NS, JOB.name);
    await kube.deleteJob(NS, JOB.name);
    expect(await kube.readJob(NS, JOB.name)).toBeUndefined();
    // Without Background propagation the fake, like the real server, orphans the pod.
    expect(await kube.listJobPods(NS, JOB.name)).toEqual([]);
    expect(await kube.listPodsOnNode('n1')).toEqual([]);
    expect(api.requests.filter((r) => r.method === 'DELETE')).toEqual([
      {
        method: 'DELETE',
        path: `/apis/batch/v1/namespaces/${NS}/jobs/${JOB.name}`,
        query: { propagationPolicy: 'Background' },
        contentType: expect.anything(),
      },
    ]);
  });

  test('deleting a Job that is already gone resolves', async () => {
    const { api, kube } = await setup();
    await expect(kube.deleteJob(NS, 'gone')).resolves.toBeUndefined();
    expect(api.requests.map((r) => [r.method, r.path])).toEqual([
      ['DELETE', `/apis/batch/v1/namespaces/${NS}/jobs/gone`],
    ]);
  });

  test('a refused create ends in a KubeError naming the Job', async () => {
    const { api, kube } = await setup();
    const message =
      'jobs.batch is forbidden: User "system:serviceaccount:autopilot:autopilot" cannot create resource "jobs" in API group "batch" in the namespace "autopilot"';
    api.failNext({
      method: 'POST',
      pathPrefix: `/apis/batch/v1/namespaces/${NS}/jobs`,
      status: 403,
      message,
    });
    const error = await failure(kube.createJob(JOB));
    expect(error.operation).toBe(`create job ${NS}/${JOB.name}`);
    expect(error.status).toBe(403);
    expect(error.message).toBe(`create job ${NS}/${JOB.name}: 403 ${message}`);
    expect(api.job(NS, JOB.name)).toBeUndefined();
  });

  test('other errors reading a Job are not taken for its absence', async () => {
    const { api, kube } = await setup();
    api.failNext({
      method: 'GET',
      pathPrefix: `/apis/batch/v1/namespaces/${NS}/jobs/x`,
      status: 500,
    });
    const error = await failure(kube.readJob(NS, 'x'));
    expect(error.message).toBe(`read job ${NS}/x: 500 injected failure 500`);
  });
});

describe('pods on a node', () => {
  test('only that node, every namespace, with the GPUs each pod holds', async () => {
    const { api, kube } = await setup();
    api.addPod({ namespace: 'ml', name: 'none', nodeName: 'n1' });
    api.addPod({ namespace: 'ml', name: 'request-only', nodeName: 'n1', gpus: { request: '2' } });
    api.addPod({ namespace: 'ml', name: 'limit-only', nodeName: 'n1', gpus: { limit: '4' } });
    api.addPod({
      namespace: 'batch',
      name: 'two-containers',
      nodeName: 'n1',
      gpus: 1,
      moreContainers: [{ request: '1', limit: '2' }],
    });
    api.addPod({
      namespace: 'batch',
      name: 'init-larger',
      nodeName: 'n1',
      phase: 'Pending',
      gpus: 1,
      initContainers: [2, 8],
    });
    api.addPod({
      namespace: 'batch',
      name: 'init-smaller',
      nodeName: 'n1',
      gpus: 4,
      moreContainers: [2],
      initContainers: [5],
    });
    api.addPod({ namespace: 'ml', name: 'elsewhere', nodeName: 'n2', gpus: 8 });
    api.addPod({ namespace: 'ml', name: 'unscheduled', phase: 'Pending', gpus: 8 });

    const pods = await kube.listPodsOnNode('n1');
    expect(pods.map((p) => [p.namespace, p.name, p.phase, p.gpus])).toEqual([
      ['batch', 'init-larger', 'Pending', 8],
      ['batch', 'init-smaller', 'Running', 6],
      ['batch', 'two-containers', 'Running', 3],
      ['ml', 'limit-only', 'Running', 4],
      ['ml', 'none', 'Running', 0],
      ['ml', 'request-only', 'Running', 2],
    ]);
    expect(pods.every((p) => p.nodeName === 'n1' && p.terminationMessage === undefined)).toBe(true);
    expect(api.requests.at(-1)).toMatchObject({
      method: 'GET',
      path: '/api/v1/pods',
      query: { fieldSelector: 'spec.nodeName=n1' },
    });
  });

  test('a phase change shows on the next list', async () => {
    const { api, kube } = await setup();
    api.addPod({ namespace: 'ml', name: 'p', nodeName: 'n1', gpus: 2 });
    api.setPodPhase('ml', 'p', 'Succeeded');
    expect((await kube.listPodsOnNode('n1')).map((p) => [p.name, p.phase])).toEqual([
      ['p', 'Succeeded'],
    ]);
  });
});

describe('API errors end in clear messages', () => {
  test.each([
    [
      403,
      'nodes "n1" is forbidden: User cannot patch resource',
      'patch node n1: 403 nodes "n1" is forbidden: User cannot patch resource',
    ],
    [404, 'nodes "n1" not found', 'patch node n1: 404 nodes "n1" not found'],
    [409, 'the object has been modified', 'patch node n1: 409 the object has been modified'],
    [500, 'etcdserver: request timed out', 'patch node n1: 500 etcdserver: request timed out'],
  ])('%i', async (status, message, expected) => {
    const { api, kube } = await setup();
    api.addNode({ name: 'n1' });
    api.failNext({ method: 'PATCH', pathPrefix: '/api/v1/nodes/n1', status, message });
    const error = await failure(kube.patchNodeMetadata('n1', { labels: { a: 'b' } }));
    expect(error.message).toBe(expected);
    expect(error.status).toBe(status);
    expect(error.operation).toBe('patch node n1');
  });

  test('no answer within the deadline', async () => {
    const { api, kube } = await setup(200);
    api.addNode({ name: 'n1' });
    api.delay({ pathPrefix: '/api/v1/nodes/n1', ms: 2000 });
    const error = await failure(kube.getNode('n1'));
    expect(error.message).toBe('read node n1: no answer within 0.2 s');
    expect(error.status).toBeUndefined();
  });

  test('a server that resets connections', async () => {
    const { api, kube } = await setup();
    api.setDown(true);
    const error = await failure(kube.listNodes('a=b'));
    expect(error.message).toMatch(/^list nodes a=b: .*(socket hang up|ECONNRESET)/);
    expect(error.status).toBeUndefined();
  });

  test('nothing listening', async () => {
    const { api, kube } = await setup();
    await api.close();
    server = undefined;
    const error = await failure(kube.getNode('n1'));
    expect(error.message).toMatch(/^read node n1: .*ECONNREFUSED/);
  });
});

describe('EndpointSlice watch', () => {
  const slice = (name: string, node: string, ready = true) =>
    endpointSlice({
      name,
      service: SERVICE,
      ports: [{ name: 'healthcheck', port: 3333 }],
      endpoints: [{ address: `10.0.0.${name.length}`, nodeName: node, ready }],
    });

  test('list, then events from the returned resourceVersion', async () => {
    const { api, kube } = await setup();
    api.upsertEndpointSlice(NS, slice('s1', 'n1'));
    const list = await kube.listEndpointSlices(NS, SERVICE);
    expect(list.slices.map((s) => s.name)).toEqual(['s1']);
    const events: [string, EndpointSliceInfo][] = [];
    const handle = await kube.watchEndpointSlices(NS, SERVICE, list.resourceVersion, (type, s) =>
      events.push([type, s]),
    );
    cleanups.push(() => handle.stop());
    api.upsertEndpointSlice(NS, slice('s22', 'n2', false));
    api.deleteEndpointSlice(NS, 's1');
    await waitUntil(() => events.length === 2, 2000);
    expect(events.map(([type, s]) => [type, s.name, s.endpoints[0]?.ready])).toEqual([
      ['ADDED', 's22', false],
      ['DELETED', 's1', true],
    ]);
  });

  test('a dropped watch ends with an error that says so; an expired one ends with 410', async () => {
    const { api, kube } = await setup();
    // A list of nothing has resourceVersion 0, which a watch reads as "from any point".
    api.upsertEndpointSlice(NS, slice('s0', 'n0'));
    const list = await kube.listEndpointSlices(NS, SERVICE);
    const dropped = await kube.watchEndpointSlices(NS, SERVICE, list.resourceVersion, () => {});
    await waitUntil(() => api.openWatches === 1, 2000);
    api.dropWatches();
    const drop = await dropped.ended;
    expect(drop?.message).toBe(
      'watch endpointslices of service autopilot/autopilot-healthchecks: Premature close',
    );
    expect(drop?.status).toBeUndefined();

    api.upsertEndpointSlice(NS, slice('s1', 'n1'));
    api.compactHistory();
    const expired = await kube.watchEndpointSlices(NS, SERVICE, list.resourceVersion, () => {});
    const ended = await expired.ended;
    expect(ended?.status).toBe(410);
    expect(ended?.message).toMatch(
      /^watch endpointslices of service autopilot\/autopilot-healthchecks: 410 /,
    );
  });

  /** A peer directory on the fake API server, synced to one slice, its watch open. */
  async function directoryWithOnePeer() {
    const { api, kube } = await setup();
    api.upsertEndpointSlice(NS, slice('s1', 'n1'));
    const directory = createPeerDirectory({
      kube,
      namespace: NS,
      service: SERVICE,
      portName: 'healthcheck',
      clock: createSystemClock(),
      logger: silentLogger,
      backoff: { initialMs: 20, maxMs: 100 },
    });
    directory.start();
    cleanups.push(() => directory.stop());
    await waitUntil(() => directory.peers().length === 1, 2000);
    await api.waitForOpenWatches(1);
    return { api, directory };
  }

  test('the peer directory resumes a watch the server ended from the last version it saw: no list, no change missed', async () => {
    const { api, directory } = await directoryWithOnePeer();
    api.upsertEndpointSlice(NS, slice('s22', 'n2'));
    await waitUntil(() => directory.peers().length === 2, 2000);
    // The watch has served more than the loop's 1 s minimum: its end is the server's timeout.
    await new Promise((resolve) => setTimeout(resolve, 1100));

    api.endWatches();
    api.upsertEndpointSlice(NS, slice('s333', 'n3'));
    await waitUntil(() => directory.peers().length === 3, 3000);
    await api.waitForOpenWatches(1);
    const slices = api.requests.filter((r) => r.path.endsWith('/endpointslices'));
    expect(slices.map((r) => r.query.watch === 'true')).toEqual([false, true, true]);
    expect(slices[2]?.query.resourceVersion).not.toBe(slices[1]?.query.resourceVersion);
    expect(slices[2]?.query.allowWatchBookmarks).toBe('true');
  });

  test('the peer directory survives a dropped watch and a 410, and relists', async () => {
    const { api, directory } = await directoryWithOnePeer();

    // Changes made while no watch is open are picked up by the relist.
    api.dropWatches();
    api.upsertEndpointSlice(NS, slice('s22', 'n2'));
    api.compactHistory();
    await waitUntil(() => directory.peers().length === 2, 3000);
    await api.waitForOpenWatches(1);

    // A list that fails twice: the error shows, then clears when a list succeeds again.
    api.failNext({
      method: 'GET',
      pathPrefix: '/apis/discovery.k8s.io/v1/namespaces/autopilot/endpointslices',
      watch: false,
      status: 500,
      times: 2,
    });
    api.dropWatches();
    // The dropped watch is an error first ("Premature close"), then the relists answer 500.
    await waitUntil(() => / 500 /.test(directory.status().lastError?.message ?? ''), 3000);
    await waitUntil(() => directory.status().lastError === undefined, 3000);
    await api.waitForOpenWatches(1);
    expect(directory.peers().map((p) => p.node)).toEqual(['n1', 'n2']);
  });
});

describe('reviews', () => {
  test('TokenReview and SubjectAccessReview, allow and deny', async () => {
    const { api, kube } = await setup();
    api.addToken('good', { username: 'alice', uid: 'u1', groups: ['sre'] });
    api.allow({
      group: 'sre',
      verb: 'create',
      resource: 'healthchecks',
      apiGroup: 'autopilot.ibm.com',
    });
    expect(await kube.reviewToken('bad')).toEqual({
      authenticated: false,
      error: 'invalid bearer token',
    });
    const review = await kube.reviewToken('good');
    expect(review).toEqual({
      authenticated: true,
      user: { username: 'alice', uid: 'u1', groups: ['sre', 'system:authenticated'] },
    });
    if (!review.authenticated) throw new Error('unreachable');
    const attributes = {
      group: 'autopilot.ibm.com',
      resource: 'healthchecks',
      verb: 'create',
      name: 'gpumem',
    };
    expect((await kube.reviewAccess(review.user, attributes)).allowed).toBe(true);
    expect(
      (
        await kube.reviewAccess(review.user, {
          ...attributes,
          resource: 'nodehealth',
          verb: 'update',
        })
      ).allowed,
    ).toBe(false);
    expect(api.accessReviews[0]).toMatchObject({
      user: 'alice',
      uid: 'u1',
      groups: ['sre', 'system:authenticated'],
      resourceAttributes: attributes,
    });
  });
});

describe('pvc check through the adapter', () => {
  const settings = {
    accessMode: 'ReadWriteOnce',
    size: '100Mi',
    namespace: NS,
    claimName: 'autopilot-pod-x',
  };
  const check = (kube: KubeApi, storageClass: string, bindTimeoutMs: number) =>
    createPvcCheck({
      kube,
      settings: { ...settings, storageClass, bindTimeoutMs },
      sleep: (ms, signal) => sleep(createSystemClock(), ms, signal),
      now: () => Date.now(),
      pollIntervalMs: 20,
    });
  const run = (
    kube: KubeApi,
    storageClass: string,
    bindTimeoutMs: number,
    signal = new AbortController().signal,
  ) => check(kube, storageClass, bindTimeoutMs).run({ signal, logger: silentLogger, params: {} });

  test('binds: PASS, and the claim is deleted', async () => {
    const { api, kube } = await setup();
    api.addStorageClass('fast', { binder: { bindAfterMs: 50 } });
    const outcome = await run(kube, 'fast', 5000);
    expect(outcome.devices.map((d) => d.verdict)).toEqual(['PASS']);
    expect(api.pvcLog).toEqual({
      created: [`${NS}/autopilot-pod-x`],
      deleted: [`${NS}/autopilot-pod-x`],
    });
    expect(api.pvc(NS, 'autopilot-pod-x')).toBeUndefined();
  });

  test('never binds: FAIL after the timeout, and the claim is deleted', async () => {
    const { api, kube } = await setup();
    api.addStorageClass('stuck', { binder: 'never' });
    const outcome = await run(kube, 'stuck', 200);
    expect(outcome.devices.map((d) => [d.verdict, d.reason])).toEqual([
      ['FAIL', expect.stringContaining('still Pending')],
    ]);
    expect(api.pvcLog.deleted).toEqual([`${NS}/autopilot-pod-x`]);
  });

  test('aborted while waiting: the claim is still deleted', async () => {
    const { api, kube } = await setup();
    api.addStorageClass('stuck', { binder: 'never' });
    const controller = new AbortController();
    const running = run(kube, 'stuck', 60_000, controller.signal);
    await waitUntil(() => api.pvcLog.created.length === 1, 2000);
    controller.abort(new Error('deadline'));
    await running;
    expect(api.pvcLog.deleted).toEqual([`${NS}/autopilot-pod-x`]);
  });

  test('WaitForFirstConsumer is not a failure', async () => {
    const { api, kube } = await setup();
    api.addStorageClass('local', { volumeBindingMode: 'WaitForFirstConsumer' });
    const outcome = await run(kube, 'local', 5000);
    expect(outcome.devices.map((d) => d.verdict)).toEqual(['PASS']);
    expect(api.pvcLog.deleted).toEqual([`${NS}/autopilot-pod-x`]);
  });
});
