/**
 * "The label, the condition, the taint and /status never disagree for longer than one watch
 * event" (issue 19 part 4): a whole exporter with in-memory GPUs, watching its node through the
 * real client library on the fake API server, with the condition and AUTOPILOT_TAINT_EFFECT=
 * NoSchedule. After each step the node is read from the server and /results?format=json from the
 * exporter, and every view must say the same thing.
 */

import { afterEach, describe, expect, test } from '@jest/globals';
import request from 'supertest';
import type { Exporter } from '../../exporter/exporter.js';
import { addKubeletReady, exporterOnFakeApi, KUBELET_READY } from '../fakes/fake-api-exporter.js';
import { fakeNode, type FakeGpu } from '../fakes/gpu.js';
import { startFakeKubeApi, type FakeKubeApi } from '../fakes/kube-api-server.js';

const NODE = 'node-c';
const LABEL = 'autopilot.ibm.com/gpuhealth';
const ACK = 'autopilot.ibm.com/acknowledge';
const OURS = { key: LABEL, value: 'EVICT', effect: 'NoSchedule' };
const READY = KUBELET_READY;
const REMAP_FAILED = { correctable: 0, uncorrectable: 1, pending: false, failureOccurred: true };
const REMAP_CLEAN = { correctable: 0, uncorrectable: 0, pending: false, failureOccurred: false };

interface Rig {
  readonly api: FakeKubeApi;
  readonly exporter: Exporter;
  readonly gpus: FakeGpu[];
}

let rig: Rig | undefined;

async function setup(): Promise<Rig> {
  const api = await startFakeKubeApi();
  api.addNode({ name: NODE, allocatableGpus: 2 });
  addKubeletReady(api, NODE);
  const gpus = fakeNode(2);
  const exporter = exporterOnFakeApi({
    url: api.url,
    node: NODE,
    gpus,
    env: {
      NAMESPACE: 'autopilot',
      PERIODIC_CHECKS: 'remapped,gpupower',
      AUTOPILOT_TAINT_EFFECT: 'NoSchedule',
    },
  });
  // As serve starts them (main.ts): the labeler's first read, then the watch and the condition.
  await exporter.cluster!.labeler.start();
  exporter.cluster!.nodeWatch.start();
  await exporter.cluster!.reporting.condition!.start();
  await api.waitForOpenWatches(1);
  rig = { api, exporter, gpus };
  return rig;
}

afterEach(async () => {
  if (rig === undefined) return;
  const cluster = rig.exporter.cluster!;
  cluster.nodeWatch.stop();
  cluster.labeler.stop();
  cluster.tainter.stop();
  cluster.reporting.condition?.stop();
  await rig.exporter.runner.shutdown(1000);
  await rig.api.close();
  rig = undefined;
});

async function settle(r: Rig): Promise<void> {
  const cluster = r.exporter.cluster!;
  // A write by one part is a watch event the labeler judges; twice catches what that set off.
  for (let i = 0; i < 2; i++) {
    await Promise.all([
      cluster.labeler.idle(),
      cluster.tainter.idle(),
      cluster.reporting.condition!.idle(),
      cluster.reporting.events.idle(),
    ]);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function runRound(r: Rig): Promise<void> {
  for (const check of ['remapped', 'gpupower']) await r.exporter.runner.run(check, {}, 'periodic');
  await settle(r);
}

async function waitUntil(condition: () => boolean, withinMs: number, what: string): Promise<void> {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > withinMs) throw new Error(`${what}: not within ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

interface NodeCondition {
  readonly type: string;
  readonly status: string;
  readonly reason: string;
  readonly lastTransitionTime: string;
}

interface StatusJson {
  readonly health: { readonly state: string };
  readonly kubernetes: {
    readonly nodeLabel: { applied: string | null; pending: string | null; lastError: unknown };
    readonly nodeCondition: {
      type: string;
      status: string | null;
      reason: string | null;
      lastTransitionTime: string | null;
      pending: unknown;
      lastError: unknown;
    };
    readonly nodeWatch: { watching: boolean; lastError: unknown };
    readonly taint: { effect: string; state: string; lastError: unknown };
  };
}

/** What the server holds and what /results?format=json says, read one after the other. */
async function views(r: Rig) {
  const node = r.api.node(NODE)!;
  const conditions = (node.status as { conditions?: NodeCondition[] }).conditions ?? [];
  const answer = await request(r.exporter.apiApp.callback()).get('/results?format=json');
  expect(answer.status).toBe(200);
  return {
    label: node.metadata.labels?.[LABEL],
    condition: conditions.find((c) => c.type === 'GPUHealthy'),
    ready: conditions.find((c) => c.type === 'Ready'),
    taints: (node.spec as { taints?: unknown[] } | undefined)?.taints ?? [],
    status: answer.body as StatusJson,
  };
}

/** Every view of the node agrees with `state` (EVICT, WARN or PASS). */
async function expectAgreement(r: Rig, state: 'EVICT' | 'WARN' | 'PASS', reason: string) {
  const seen = await views(r);
  const { kubernetes } = seen.status;
  expect(seen.status.health.state).toBe(state);
  expect(seen.label).toBe(state);
  expect(kubernetes.nodeLabel).toEqual({ applied: state, pending: null, lastError: null });
  const conditionStatus = state === 'EVICT' ? 'False' : 'True';
  expect(seen.condition).toMatchObject({ status: conditionStatus, reason });
  expect(kubernetes.nodeCondition).toEqual({
    type: 'GPUHealthy',
    status: conditionStatus,
    reason,
    lastTransitionTime: seen.condition!.lastTransitionTime,
    pending: null,
    lastError: null,
  });
  expect(seen.taints).toEqual(state === 'EVICT' ? [OURS] : []);
  expect(kubernetes.taint).toMatchObject({
    effect: 'NoSchedule',
    state: state === 'EVICT' ? 'tainted' : 'untainted',
    lastError: null,
  });
  expect(kubernetes.nodeWatch).toEqual({ watching: true, lastError: null });
  expect(seen.ready).toEqual(READY);
  return seen;
}

describe('the label, the condition, the taint and /status agree', () => {
  test('after a fatal finding, after a label removed by hand, and after an acknowledge on the node', async () => {
    const r = await setup();
    await runRound(r);
    await expectAgreement(r, 'PASS', 'ChecksPassed');

    r.gpus[0]!.remapped = REMAP_FAILED;
    await runRound(r);
    const evicted = await expectAgreement(r, 'EVICT', 'RowRemapFailure');

    // Someone removes the label: restored from one watch event, and nothing else moves.
    r.api.editNode(NODE, (node) => {
      const labels = { ...node.metadata.labels };
      delete labels[LABEL];
      node.metadata.labels = labels;
    });
    await waitUntil(() => r.api.node(NODE)?.metadata.labels?.[LABEL] === 'EVICT', 3000, 'label');
    await settle(r);
    const restored = await expectAgreement(r, 'EVICT', 'RowRemapFailure');
    expect(restored.condition!.lastTransitionTime).toBe(evicted.condition!.lastTransitionTime);

    // The GPU is replaced; the EVICT is sticky until someone acknowledges it, as `autopilot ack`
    // does, on the node.
    r.gpus[0]!.remapped = REMAP_CLEAN;
    await runRound(r);
    await expectAgreement(r, 'EVICT', 'RowRemapFailure');
    r.api.editNode(NODE, (node) => {
      node.metadata.annotations = { ...node.metadata.annotations, [ACK]: 'by alice: replaced' };
    });
    await waitUntil(() => r.api.node(NODE)?.metadata.annotations?.[ACK] === undefined, 3000, 'ack');
    await settle(r);
    await expectAgreement(r, 'PASS', 'ChecksPassed');
  });

  test('/status shows a condition write the API refuses as pending, with the error', async () => {
    const r = await setup();
    await runRound(r);
    r.api.failNext({ method: 'PATCH', pathPrefix: `/api/v1/nodes/${NODE}/status`, status: 403 });
    r.gpus[0]!.remapped = REMAP_FAILED;
    for (const check of ['remapped', 'gpupower']) {
      await r.exporter.runner.run(check, {}, 'periodic');
    }
    await waitUntil(
      () => r.exporter.cluster!.reporting.condition!.status().lastError !== undefined,
      3000,
      'the refused write',
    );
    const { kubernetes } = (await views(r)).status;
    expect(kubernetes.nodeCondition).toMatchObject({
      status: 'True',
      reason: 'ChecksPassed',
      pending: { status: 'False', reason: 'RowRemapFailure' },
      lastError: { message: expect.stringContaining('403'), at: expect.any(String) },
    });
  });
});
