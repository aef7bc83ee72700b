/**
 * Kubernetes mode end to end inside one process: a whole exporter (buildExporter) with in-memory
 * GPUs, talking through the real client-node adapter to the fake API server over HTTP. What goes
 * on the wire is asserted from the server's side.
 */

import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import type { Logger } from '../../exporter/log.js';
import { fakeNode, fakeNvml, type FakeGpu } from '../fakes/gpu.js';
import { endpointSlice } from '../fakes/kube-api-server.js';
import { startKubeExporter, type KubeExporter } from '../fakes/kube-exporter.js';

const NODE = 'gpu-node-1';
const LABEL = 'autopilot.ibm.com/gpuhealth';
const POWER_BRAKE = 0x80n;
const OPERATOR_TOKEN = 'operator-token';
const VIEWER_TOKEN = 'viewer-token';

interface Rig extends KubeExporter {
  readonly gpus: FakeGpu[];
  readonly logs: { level: string; message: string; fields: Record<string, unknown> }[];
  /** The gpuhealth label the fake API server holds for the node. */
  label(): string | undefined;
  /** Merge patches of the gpuhealth label sent so far, oldest first. */
  labelPatches(): unknown[];
}

function recordingLogger(sink: Rig['logs']): Logger {
  const logger = (fields: Record<string, unknown>): Logger => {
    const emit =
      (level: string) =>
      (message: string, extra: Record<string, unknown> = {}) =>
        sink.push({ level, message, fields: { ...fields, ...extra } });
    return {
      error: emit('error'),
      warn: emit('warn'),
      info: emit('info'),
      debug: emit('debug'),
      child: (more) => logger({ ...fields, ...more }),
    };
  };
  return logger({});
}

let rig: Rig | undefined;

async function setup(
  nodeLabels: Record<string, string> = {},
  extraEnv: Record<string, string> = {},
): Promise<Rig> {
  const gpus = fakeNode(2);
  const logs: Rig['logs'] = [];
  const started = await startKubeExporter({
    node: { name: NODE, labels: nodeLabels, allocatableGpus: 2 },
    env: { NAMESPACE: 'autopilot', PERIODIC_CHECKS: 'remapped,gpupower', ...extraEnv },
    nvml: { ok: true, nvml: fakeNvml(gpus) },
    commandEnv: { ...process.env, ...extraEnv },
    logger: recordingLogger(logs),
    gpuModel: 'NVIDIA H200',
  });
  const { api, exporter } = started;
  const created: Rig = {
    ...started,
    gpus,
    logs,
    label: () => (api.node(NODE)?.metadata.labels ?? {})[LABEL],
    labelPatches: () =>
      api.patches
        .filter((patch) => JSON.stringify(patch.body).includes(LABEL))
        .map((patch) => ({ contentType: patch.contentType, body: patch.body })),
  };
  // Set before the rest of the set-up, so that afterEach closes the exporter whatever fails.
  rig = created;
  api.addToken(OPERATOR_TOKEN, { username: 'alice', groups: ['sre'] });
  api.addToken(VIEWER_TOKEN, { username: 'bob', groups: ['dev'] });
  api.allow({
    group: 'sre',
    verb: 'update',
    resource: 'nodehealth',
    apiGroup: 'autopilot.ibm.com',
  });
  api.allow({
    group: 'sre',
    verb: 'create',
    resource: 'healthchecks',
    apiGroup: 'autopilot.ibm.com',
  });
  api.upsertEndpointSlice(
    'autopilot',
    endpointSlice({
      name: 'autopilot-healthchecks-abc',
      service: 'autopilot-healthchecks',
      ports: [{ name: 'healthcheck', port: 3333 }],
      endpoints: [{ address: '10.0.0.1', nodeName: NODE, podName: 'autopilot-x1' }],
    }),
  );
  exporter.cluster!.peers.start();
  return created;
}

afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

async function runRound(r: Rig, trigger: 'periodic' | 'api' = 'periodic'): Promise<void> {
  for (const check of ['remapped', 'gpupower']) await r.exporter.runner.run(check, {}, trigger);
  await r.exporter.cluster!.labeler.idle();
}

const merge = (value: string) => ({
  contentType: 'application/merge-patch+json',
  body: { metadata: { labels: { [LABEL]: value } } },
});

describe('node label lifecycle through the real client library', () => {
  test('PASS, a failing check gives WARN, a fatal one EVICT, a passing round keeps EVICT, an authorised acknowledge clears it', async () => {
    const r = await setup();
    await runRound(r);
    expect(r.label()).toBe('PASS');

    r.gpus[1]!.reasons = POWER_BRAKE;
    await runRound(r);
    expect(r.label()).toBe('WARN');

    r.gpus[0]!.remapped = {
      correctable: 0,
      uncorrectable: 1,
      pending: false,
      failureOccurred: true,
    };
    await runRound(r);
    expect(r.label()).toBe('EVICT');

    // The GPUs recover (a reset, say); the periodic round must not return the node to service.
    r.gpus[0]!.remapped = {
      correctable: 0,
      uncorrectable: 0,
      pending: false,
      failureOccurred: false,
    };
    r.gpus[1]!.reasons = 0n;
    await runRound(r);
    await runRound(r);
    expect(r.label()).toBe('EVICT');

    const refused = await request(r.exporter.apiApp.callback()).post('/acknowledge');
    expect(refused.status).toBe(401);
    expect(r.label()).toBe('EVICT');

    const forbidden = await request(r.exporter.apiApp.callback())
      .post('/acknowledge')
      .set('Authorization', `Bearer ${VIEWER_TOKEN}`);
    expect(forbidden.status).toBe(403);
    expect(forbidden.text).toContain('user bob may not update nodehealth');
    expect(r.label()).toBe('EVICT');

    const acknowledged = await request(r.exporter.apiApp.callback())
      .post('/acknowledge')
      .set('Authorization', `Bearer ${OPERATOR_TOKEN}`);
    expect(acknowledged.status).toBe(200);
    expect(acknowledged.text).toBe(
      `Node ${NODE}: EVICT acknowledged by alice; health is now PASS\n`,
    );
    await r.exporter.cluster!.labeler.idle();
    expect(r.label()).toBe('PASS');

    // Merge patches, and one per change of value: five rounds and an acknowledge gave four changes.
    expect(r.labelPatches()).toEqual([merge('PASS'), merge('WARN'), merge('EVICT'), merge('PASS')]);
    const audit = r.logs.find((line) => line.message === 'EVICT acknowledged');
    expect(audit?.fields).toMatchObject({
      audit: true,
      caller: 'alice',
      previousState: 'EVICT',
      state: 'PASS',
    });
    expect(JSON.stringify(r.logs)).not.toContain(OPERATOR_TOKEN);
  });

  test('an EVICT written before the exporter started stays until acknowledged', async () => {
    const r = await setup({ [LABEL]: 'EVICT' });
    expect(r.exporter.store.health().state).toBe('EVICT');
    await runRound(r);
    expect(r.label()).toBe('EVICT');
    expect(r.labelPatches()).toEqual([]);
  });

  test('a node already labelled with the current value gets no patch', async () => {
    const r = await setup({ [LABEL]: 'PASS' });
    await runRound(r);
    await runRound(r);
    expect(r.label()).toBe('PASS');
    expect(r.labelPatches()).toEqual([]);
  });

  test('an API that refuses the patch leaves the exporter serving, says so, and the label lands after it recovers', async () => {
    const r = await setup();
    r.api.failNext({ method: 'PATCH', pathPrefix: `/api/v1/nodes/${NODE}`, status: 403, times: 1 });
    await r.exporter.runner.run('remapped', {}, 'periodic');
    // The first write was refused; the retry comes after the first backoff (1 s).
    await waitUntil(() => r.exporter.cluster!.labeler.status().lastError !== undefined, 2000);
    const status = await request(r.exporter.apiApp.callback()).get('/results?format=json');
    const kubernetes = (status.body as { kubernetes: Record<string, unknown> }).kubernetes;
    // apiUp follows the latest call, which may be the peer list that succeeded since.
    expect(kubernetes).toMatchObject({
      lastApiError: { operation: 'patchNodeMetadata' },
      nodeLabel: { applied: null, pending: 'PASS' },
    });
    expect(JSON.stringify(kubernetes)).toContain(`patch node ${NODE}: 403`);
    const metrics = await request(r.exporter.metricsApp.callback()).get('/metrics');
    expect(metrics.text).toContain(
      'autopilot_kubernetes_api_errors_total{operation="patchNodeMetadata"} 1',
    );
    await waitUntil(() => r.label() === 'PASS', 5000);
    await r.exporter.cluster!.labeler.idle();
    const after = await request(r.exporter.metricsApp.callback()).get('/metrics');
    expect(after.text).toContain('autopilot_kubernetes_api_up 1');
  });

  test('TESTING shows while an exclusive check holds the GPUs, then the evidence decides', async () => {
    const r = await setup();
    await runRound(r);
    const patchesBefore = r.labelPatches().length;
    // gpumem is exclusive; without CUDA it ends quickly in SKIP, but it holds the GPUs meanwhile.
    await r.exporter.runner.run('gpumem', {}, 'api');
    await r.exporter.cluster!.labeler.idle();
    expect(r.labelPatches().slice(patchesBefore)).toEqual([merge('TESTING'), merge('PASS')]);
  });
});

async function waitUntil(condition: () => boolean, withinMs: number): Promise<void> {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > withinMs) throw new Error(`condition not met within ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('peers from the EndpointSlices', () => {
  beforeEach(() => undefined);

  test('the directory lists the pods of the Service and follows changes', async () => {
    const r = await setup();
    await waitUntil(() => r.exporter.cluster!.peers.peers().length === 1, 2000);
    r.api.upsertEndpointSlice(
      'autopilot',
      endpointSlice({
        name: 'autopilot-healthchecks-def',
        service: 'autopilot-healthchecks',
        ports: [{ name: 'healthcheck', port: 3333 }],
        endpoints: [{ address: '10.0.0.2', nodeName: 'gpu-node-2', ready: false }],
      }),
    );
    await waitUntil(() => r.exporter.cluster!.peers.peers().length === 2, 2000);
    expect(r.exporter.cluster!.peers.peers()).toEqual([
      { node: NODE, address: '10.0.0.1', port: 3333, ready: true, pod: 'autopilot-x1' },
      { node: 'gpu-node-2', address: '10.0.0.2', port: 3333, ready: false, pod: undefined },
    ]);
    const metrics = await request(r.exporter.metricsApp.callback()).get('/metrics');
    expect(metrics.text).toContain('autopilot_peers{state="ready"} 1');
    expect(metrics.text).toContain('autopilot_peers{state="not_ready"} 1');
  });
});

describe('protected actions in Kubernetes mode', () => {
  test('an exclusive check or pvc needs an authorised caller, also cluster-wide; light checks stay open', async () => {
    const r = await setup();
    const app = r.exporter.apiApp.callback();
    const open = await request(app).get(`/status?host=${NODE}&check=remapped`);
    expect(open.status).toBe(200);

    const anonymous = await request(app).get('/status?check=gpumem');
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers['www-authenticate']).toBe('Bearer');

    const viewer = await request(app).get('/pvc').set('Authorization', `Bearer ${VIEWER_TOKEN}`);
    expect(viewer.status).toBe(403);
    expect(viewer.text).toContain('user bob may not create healthchecks/pvc');

    const operator = await request(app)
      .get('/pvc')
      .set('Authorization', `Bearer ${OPERATOR_TOKEN}`);
    expect(operator.status).toBe(200);
    expect(operator.text).toContain('[PVC Create-Delete]');
    // Nothing was asked of other nodes for the refused cluster-wide request.
    expect(r.api.requests.filter((q) => q.path.includes('/pods'))).toEqual([]);
  });

  test('a request fanned out by another node for a host that is not this one is refused, not fanned out again', async () => {
    const r = await setup();
    const response = await request(r.exporter.apiApp.callback())
      .get('/status?host=gpu-node-9&check=remapped')
      .set('X-Autopilot-Fanout-From', 'gpu-node-2');
    expect(response.status).toBe(400);
    expect(response.text).toContain(
      'this request already comes from the cluster-wide status of gpu-node-2',
    );
  });

  test('a Kubernetes API that cannot resolve a selector is a 503 that says so', async () => {
    const r = await setup();
    r.api.failNext({ pathPrefix: '/api/v1/namespaces/ml/pods', status: 500, message: 'etcd down' });
    const response = await request(r.exporter.apiApp.callback()).get(
      '/status?job=ml:app=trainer&check=remapped',
    );
    expect(response.status).toBe(503);
    expect(response.text).toBe(
      'error: the Kubernetes API cannot answer: list pods ml:app=trainer: 500 etcd down\n',
    );
  });
});

describe('API access settings (AUTOPILOT_API_ACCESS)', () => {
  const FAKE_DCGMI = join(import.meta.dirname, '..', 'fakes', 'bin', 'fake-dcgmi');
  const dcgmEnv = (argsFile: string) => ({
    AUTOPILOT_DCGMI_COMMAND: FAKE_DCGMI,
    FAKE_DCGMI_SCENARIO: 'pass-3x',
    FAKE_DCGMI_ARGS_FILE: argsFile,
  });
  const HINT =
    'set AUTOPILOT_API_ACCESS_INVASIVE=open (Helm: api.access.invasive: open) to allow it without authentication';

  test('by default, check=dcgm&r=3 is refused, and the refusal names the setting that opens it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'access-'));
    const r = await setup({}, dcgmEnv(join(dir, 'argv')));
    const app = r.exporter.apiApp.callback();
    const anonymous = await request(app).get('/status?check=dcgm&r=3');
    expect(anonymous.status).toBe(401);
    expect(anonymous.text).toBe(
      `error: this action needs a bearer token (Authorization: Bearer <token>); ${HINT}, or AUTOPILOT_API_ACCESS=open (Helm: api.access.all: open) for every protected call; docs/upgrading.md says what that risks\n`,
    );
    const viewer = await request(app)
      .get(`/status?host=${NODE}&check=dcgm&r=3&format=json`)
      .set('Authorization', `Bearer ${VIEWER_TOKEN}`);
    expect(viewer.status).toBe(403);
    expect((viewer.body as { error: string }).error).toContain(
      'user bob may not create healthchecks/dcgm',
    );
    expect((viewer.body as { error: string }).error).toContain(HINT);
    const ack = await request(app).post('/acknowledge');
    expect(ack.status).toBe(401);
    expect(ack.text).toContain(
      'set AUTOPILOT_API_ACCESS_ACKNOWLEDGE=open (Helm: api.access.acknowledge: open)',
    );
    // dcgmi never ran.
    await expect(readFile(join(dir, 'argv'), 'utf8')).rejects.toThrow('ENOENT');
  });

  test('with AUTOPILOT_API_ACCESS_INVASIVE=open the same call runs dcgmi at level 3; acknowledge stays protected', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'access-'));
    const argv = join(dir, 'argv');
    const r = await setup({}, { ...dcgmEnv(argv), AUTOPILOT_API_ACCESS_INVASIVE: 'open' });
    await waitUntil(() => r.exporter.cluster!.peers.peers().length === 1, 2000);
    const app = r.exporter.apiApp.callback();
    const response = await request(app).get('/status?check=dcgm&r=3');
    expect(response.status).toBe(200);
    expect(response.text).toContain('[[ DCGM ]] SUCCESS');
    expect((await readFile(argv, 'utf8')).split('\n')).toEqual(['diag', '-r', '3', '-j', '']);
    expect(r.exporter.store.latest('dcgm')).toMatchObject({ params: { r: '3' }, verdict: 'PASS' });

    const ack = await request(app).post('/acknowledge');
    expect(ack.status).toBe(401);
    expect(ack.text).toContain('AUTOPILOT_API_ACCESS_ACKNOWLEDGE=open');
  });

  test('AUTOPILOT_API_ACCESS=open opens acknowledge too, and the audit line says who let it in', async () => {
    const r = await setup({ [LABEL]: 'EVICT' }, { AUTOPILOT_API_ACCESS: 'open' });
    const response = await request(r.exporter.apiApp.callback()).post('/acknowledge');
    expect(response.status).toBe(200);
    expect(response.text).toContain(
      'EVICT acknowledged by anonymous (AUTOPILOT_API_ACCESS_ACKNOWLEDGE=open)',
    );
    expect(r.logs.find((line) => line.message === 'EVICT acknowledged')?.fields).toMatchObject({
      audit: true,
      caller: 'anonymous (AUTOPILOT_API_ACCESS_ACKNOWLEDGE=open)',
    });
  });
});

describe('answers to another node', () => {
  test('a node asked by another node for a cluster-wide report leaves out per-device evidence', async () => {
    const r = await setup();
    const direct = await request(r.exporter.apiApp.callback()).get(
      `/status?host=${NODE}&check=remapped&format=json`,
    );
    const fannedOut = await request(r.exporter.apiApp.callback())
      .get(`/status?host=${NODE}&check=remapped&format=json`)
      .set('X-Autopilot-Fanout-From', 'gpu-node-2');
    const devicesOf = (body: unknown) =>
      (body as { results: { devices: unknown[] }[] }).results[0]!.devices.length;
    expect(devicesOf(direct.body)).toBe(2);
    expect(devicesOf(fannedOut.body)).toBe(0);
    expect((fannedOut.body as { results: { text: string }[] }).results[0]!.text).toContain(
      '[[ REMAPPED ROWS ]]',
    );
  });
});

describe('maxage in a cluster-wide /status', () => {
  test('the node that received the request answers its own part from a fresh result too', async () => {
    const r = await setup();
    await waitUntil(() => r.exporter.cluster!.peers.peers().length === 1, 2000);
    await r.exporter.runner.run('remapped', {}, 'periodic');
    const response = await request(r.exporter.apiApp.callback()).get(
      '/status?check=remapped&maxage=1h&format=json',
    );
    expect(response.status).toBe(200);
    expect((response.body as { nodes: { node: string; outcome: string }[] }).nodes).toMatchObject([
      { node: NODE, outcome: 'answered' },
    ]);
    expect(r.exporter.store.history('remapped')).toHaveLength(1);
  });
});
