/**
 * The taint and its breaker end to end: whole exporters (buildExporter) with in-memory GPUs, each
 * on its own node, talking through the real client-node adapter to one fake API server. What the
 * nodes carry is read from the server's side.
 */

import { afterEach, describe, expect, test } from '@jest/globals';
import request from 'supertest';
import { createSystemClock } from '../../exporter/clock.js';
import { BREAKER_LEASE } from '../../exporter/cluster/isolation-breaker.js';
import { createNodeTainter, TAINT_OWNER_ANNOTATION } from '../../exporter/cluster/node-taint.js';
import type { Exporter } from '../../exporter/exporter.js';
import { createKubeApi } from '../../exporter/k8s/kube-api.js';
import type { KubeApi } from '../../exporter/k8s/ports.js';
import { silentLogger } from '../../exporter/log.js';
import type { NodeHealth } from '../../exporter/node-health.js';
import { addOperator, exporterOnFakeApi, kubeConfigFor } from '../fakes/fake-api-exporter.js';
import { fakeNode, type FakeGpu } from '../fakes/gpu.js';
import { startFakeKubeApi, type FakeKubeApi, type FakeTaint } from '../fakes/kube-api-server.js';
import { recordingLogger, type LogLine } from '../fakes/logger.js';

const LABEL = 'autopilot.ibm.com/gpuhealth';
const NAMESPACE = 'autopilot';
const OPERATOR_TOKEN = 'operator-token';
const OURS_NOSCHEDULE: FakeTaint = { key: LABEL, value: 'EVICT', effect: 'NoSchedule' };
const MAINTENANCE: FakeTaint = {
  key: 'example.com/maintenance',
  value: 'true',
  effect: 'NoExecute',
};

interface Node {
  readonly name: string;
  readonly exporter: Exporter;
  readonly gpus: FakeGpu[];
  readonly logs: LogLine[];
}

let api: FakeKubeApi | undefined;
const exporters: Exporter[] = [];

afterEach(async () => {
  for (const exporter of exporters.splice(0)) {
    exporter.cluster?.labeler.stop();
    exporter.cluster?.tainter.stop();
    await exporter.runner.shutdown(1000);
  }
  await api?.close();
  api = undefined;
});

/** A fake API server with `count` GPU nodes, node-a, node-b, ... */
async function cluster(
  count: number,
  taints: Record<string, FakeTaint[]> = {},
  cordoned: readonly string[] = [],
) {
  api = await startFakeKubeApi();
  addOperator(api, OPERATOR_TOKEN);
  const names = Array.from({ length: count }, (_, i) => `node-${String.fromCharCode(97 + i)}`);
  for (const name of names) {
    const own = taints[name];
    api.addNode({
      name,
      allocatableGpus: 2,
      unschedulable: cordoned.includes(name),
      ...(own === undefined ? {} : { taints: own }),
    });
  }
  return api;
}

async function exporterOn(
  server: FakeKubeApi,
  name: string,
  env: Record<string, string>,
): Promise<Node> {
  const gpus = fakeNode(2);
  const { logger, lines: logs } = recordingLogger();
  const exporter = exporterOnFakeApi({
    url: server.url,
    node: name,
    gpus,
    env: { NAMESPACE, PERIODIC_CHECKS: 'remapped', ...env },
    logger,
  });
  exporters.push(exporter);
  await exporter.cluster!.labeler.start();
  return { name, exporter, gpus, logs };
}

/** A fatal finding (row remapping failed): the node goes EVICT. */
async function evict(node: Node): Promise<void> {
  node.gpus[0]!.remapped = {
    correctable: 0,
    uncorrectable: 1,
    pending: false,
    failureOccurred: true,
  };
  await node.exporter.runner.run('remapped', {}, 'periodic');
}

async function settle(...nodes: Node[]): Promise<void> {
  await Promise.all(
    nodes.flatMap((n) => [n.exporter.cluster!.labeler.idle(), n.exporter.cluster!.tainter.idle()]),
  );
}

const taintsOf = (server: FakeKubeApi, name: string): unknown =>
  (server.node(name)?.spec as { taints?: unknown } | undefined)?.taints ?? [];
const labelOf = (server: FakeKubeApi, name: string): string | undefined =>
  server.node(name)?.metadata.labels?.[LABEL];
const hasOurTaint = (server: FakeKubeApi, name: string): boolean =>
  JSON.stringify(taintsOf(server, name)).includes(LABEL) &&
  server.node(name)?.metadata.annotations?.[TAINT_OWNER_ANNOTATION] !== undefined;

async function statusOf(node: Node): Promise<Record<string, unknown>> {
  const answer = await request(node.exporter.apiApp.callback()).get('/results?format=json');
  return (answer.body as { kubernetes: { taint: Record<string, unknown> } }).kubernetes.taint;
}

async function breakerMetric(node: Node): Promise<string | undefined> {
  const answer = await request(node.exporter.metricsApp.callback()).get('/metrics');
  return /^autopilot_isolation_breaker_open (\d+)$/m.exec(answer.text)?.[1];
}

async function acknowledge(node: Node): Promise<void> {
  const answer = await request(node.exporter.apiApp.callback())
    .post('/acknowledge')
    .set('Authorization', `Bearer ${OPERATOR_TOKEN}`);
  expect(answer.status).toBe(200);
  await settle(node);
}

describe('AUTOPILOT_TAINT_EFFECT=NoSchedule', () => {
  test('node-c gets the taint while EVICT and loses it on acknowledge; other taints and the cordon stay', async () => {
    const server = await cluster(5, { 'node-c': [MAINTENANCE] }, ['node-c']);
    const c = await exporterOn(server, 'node-c', { AUTOPILOT_TAINT_EFFECT: 'NoSchedule' });
    await evict(c);
    await settle(c);
    expect(labelOf(server, 'node-c')).toBe('EVICT');
    expect(taintsOf(server, 'node-c')).toEqual([MAINTENANCE, OURS_NOSCHEDULE]);
    const owner = JSON.parse(
      server.node('node-c')?.metadata.annotations?.[TAINT_OWNER_ANNOTATION] ?? '{}',
    ) as Record<string, unknown>;
    expect(owner).toMatchObject({ ...OURS_NOSCHEDULE, addedAt: expect.any(String) });
    expect(await statusOf(c)).toMatchObject({ effect: 'NoSchedule', state: 'tainted' });
    expect(await breakerMetric(c)).toBe('0');
    // Counted and written under the Lease, which is free again afterwards.
    expect(server.leaseWrites.map((w) => [w.method, w.holderIdentity, w.outcome])).toEqual([
      ['POST', 'node-c', 'ok'],
      ['PUT', '', 'ok'],
    ]);

    await acknowledge(c);
    // The finding stays, acknowledged: WARN.
    expect(labelOf(server, 'node-c')).toBe('WARN');
    expect(taintsOf(server, 'node-c')).toEqual([MAINTENANCE]);
    expect(server.node('node-c')?.metadata.annotations?.[TAINT_OWNER_ANNOTATION]).toBeUndefined();
    expect(server.node('node-c')?.spec).toMatchObject({ unschedulable: true });
    expect(await statusOf(c)).toMatchObject({ state: 'untainted' });
  });

  test('a taint someone else set on node-b stays, even with our key and effect, and blocks ours', async () => {
    const server = await cluster(5, { 'node-b': [OURS_NOSCHEDULE, MAINTENANCE] });
    const b = await exporterOn(server, 'node-b', { AUTOPILOT_TAINT_EFFECT: 'NoSchedule' });
    await evict(b);
    await settle(b);
    expect(labelOf(server, 'node-b')).toBe('EVICT');
    expect(taintsOf(server, 'node-b')).toEqual([OURS_NOSCHEDULE, MAINTENANCE]);
    expect(await statusOf(b)).toMatchObject({ state: 'blocked' });
    expect(String((await statusOf(b)).why)).toContain(
      `someone else's taint ${LABEL}=EVICT:NoSchedule`,
    );

    await acknowledge(b);
    // The finding stays, acknowledged: WARN.
    expect(labelOf(server, 'node-b')).toBe('WARN');
    expect(taintsOf(server, 'node-b')).toEqual([OURS_NOSCHEDULE, MAINTENANCE]);
    expect(server.patches.filter((p) => JSON.stringify(p.body).includes('taints'))).toEqual([]);
  });

  test('dry-run logs and reports the taint it would add, and writes nothing', async () => {
    const server = await cluster(5);
    const c = await exporterOn(server, 'node-c', {
      AUTOPILOT_TAINT_EFFECT: 'NoExecute',
      AUTOPILOT_TAINT_DRY_RUN: 'true',
    });
    await evict(c);
    await settle(c);
    expect(labelOf(server, 'node-c')).toBe('EVICT');
    expect(taintsOf(server, 'node-c')).toEqual([]);
    expect(server.leaseWrites).toEqual([]);
    expect(await statusOf(c)).toMatchObject({ dryRun: true, wouldDo: 'add', state: 'untainted' });
    const line = c.logs.find((l) => l.message === 'dry run: would change the node taints');
    expect(line?.fields).toMatchObject({
      action: 'add',
      taint: { ...OURS_NOSCHEDULE, effect: 'NoExecute' },
    });
  });
});

describe('the breaker', () => {
  test('10 GPU nodes, 3 EVICT at once, fraction 0.2: exactly 2 tainted, the third reported EVICT and refused', async () => {
    const server = await cluster(10);
    const env = { AUTOPILOT_TAINT_EFFECT: 'NoSchedule', AUTOPILOT_TAINT_MAX_FRACTION: '0.2' };
    const evicted = await Promise.all(
      ['node-c', 'node-f', 'node-h'].map((name) => exporterOn(server, name, env)),
    );
    await Promise.all(evicted.map(evict));
    await settle(...evicted);

    const tainted = evicted.filter((n) => hasOurTaint(server, n.name));
    const refused = evicted.filter((n) => !hasOurTaint(server, n.name));
    expect(tainted).toHaveLength(2);
    expect(refused).toHaveLength(1);
    for (const node of evicted) expect(labelOf(server, node.name)).toBe('EVICT');
    const third = refused[0]!;
    expect(taintsOf(server, third.name)).toEqual([]);
    expect(await breakerMetric(third)).toBe('1');
    expect(await statusOf(third)).toMatchObject({
      state: 'refused',
      breaker: { gpuNodes: 10, tainted: 2, limit: 2, open: true },
    });
    for (const node of tainted) expect(await breakerMetric(node)).toBe('0');
    expect(third.logs.some((l) => l.message.startsWith('isolation breaker open'))).toBe(true);
  });

  test('two exporters EVICT at once with room for one: the Lease lets exactly one taint', async () => {
    const server = await cluster(5);
    const env = { AUTOPILOT_TAINT_EFFECT: 'NoSchedule' };
    const pair = await Promise.all(
      ['node-a', 'node-b'].map((name) => exporterOn(server, name, env)),
    );
    // Both read the Lease before either writes it: the race the Lease must settle. The two reads
    // are answered together, however far apart a loaded machine lets them come.
    server.delay({
      method: 'GET',
      pathPrefix: '/apis/coordination.k8s.io/',
      ms: 10_000,
      times: 2,
      together: true,
    });
    await Promise.all(pair.map(evict));
    await settle(...pair);

    expect(pair.filter((n) => hasOurTaint(server, n.name))).toHaveLength(1);
    const creates = server.leaseWrites.filter((w) => w.method === 'POST');
    expect(creates.map((w) => w.outcome).sort()).toEqual(['conflict', 'ok']);
    const metrics = await Promise.all(pair.map(breakerMetric));
    expect(metrics.sort()).toEqual(['0', '1']);
  });
});

describe('the read-modify-write', () => {
  test('a taint another controller adds between the read and the write is kept (409, read again)', async () => {
    const server = await cluster(3);
    const real = createKubeApi(kubeConfigFor(server.url), 2000);
    let reads = 0;
    const kube: KubeApi = {
      ...real,
      getNode: async (name) => {
        const node = await real.getNode(name);
        // Another controller writes right after this exporter's first read.
        if (++reads === 1) server.setNodeTaints(name, [MAINTENANCE]);
        return node;
      },
    };
    const health: NodeHealth = { state: 'EVICT', since: 0, reasons: ['remapped: fatal'] };
    const tainter = createNodeTainter({
      kube,
      nodeName: 'node-a',
      config: { effect: 'NoSchedule', maxFraction: 0.2, dryRun: false },
      lease: { namespace: NAMESPACE, identity: 'node-a', requestTimeoutMs: 2000 },
      health: () => health,
      clock: createSystemClock(),
      logger: silentLogger,
    });
    tainter.sync();
    await tainter.idle();
    tainter.stop();
    expect(reads).toBe(2);
    expect(taintsOf(server, 'node-a')).toEqual([MAINTENANCE, OURS_NOSCHEDULE]);
    expect(server.lease(NAMESPACE, BREAKER_LEASE)?.spec).toMatchObject({ holderIdentity: '' });
  });
});
