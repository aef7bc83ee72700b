/**
 * The node condition (GPUHealthy) and the Events on the Node, end to end inside one process: a
 * whole exporter with in-memory GPUs, through the real client-node adapter, against the fake API
 * server over HTTP. What the cluster sees is read from the server's side.
 */

import { afterEach, describe, expect, test } from '@jest/globals';
import request from 'supertest';
import type { Exporter } from '../../exporter/exporter.js';
import {
  addKubeletReady,
  addOperator,
  exporterOnFakeApi,
  KUBELET_READY,
} from '../fakes/fake-api-exporter.js';
import { fakeNode, type FakeGpu } from '../fakes/gpu.js';
import { startFakeKubeApi, type FakeKubeApi, type KubeObject } from '../fakes/kube-api-server.js';

const NODE = 'node-c';
const OPERATOR_TOKEN = 'operator-token';
const READY = KUBELET_READY;
const REMAP_FAILED = { correctable: 0, uncorrectable: 1, pending: false, failureOccurred: true };
const REMAP_CLEAN = { correctable: 0, uncorrectable: 0, pending: false, failureOccurred: false };
const POWER_BRAKE = 0x80n;

interface Rig {
  readonly api: FakeKubeApi;
  readonly exporter: Exporter;
  readonly gpus: FakeGpu[];
}

let rig: Rig | undefined;

async function setup(env: Record<string, string> = {}): Promise<Rig> {
  const api = await startFakeKubeApi();
  api.addNode({ name: NODE, allocatableGpus: 2 });
  addKubeletReady(api, NODE);
  addOperator(api, OPERATOR_TOKEN);
  const gpus = fakeNode(2);
  const exporter = exporterOnFakeApi({
    url: api.url,
    node: NODE,
    gpus,
    env: {
      NAMESPACE: 'autopilot',
      POD_NAME: 'autopilot-7xk2p',
      PERIODIC_CHECKS: 'remapped,gpupower',
      ...env,
    },
  });
  await exporter.cluster!.labeler.start();
  await exporter.cluster!.reporting.condition?.start();
  rig = { api, exporter, gpus };
  return rig;
}

afterEach(async () => {
  if (rig === undefined) return;
  rig.exporter.cluster?.labeler.stop();
  rig.exporter.cluster?.reporting.condition?.stop();
  await rig.exporter.runner.shutdown(1000);
  await rig.api.close();
  rig = undefined;
});

async function settle(r: Rig): Promise<void> {
  await r.exporter.cluster!.labeler.idle();
  await r.exporter.cluster!.reporting.condition?.idle();
  await r.exporter.cluster!.reporting.events.idle();
}

async function runRound(r: Rig): Promise<void> {
  for (const check of ['remapped', 'gpupower']) await r.exporter.runner.run(check, {}, 'periodic');
  await settle(r);
}

type Condition = typeof READY;

function conditions(r: Rig): Condition[] {
  const status = r.api.node(NODE)?.status as { conditions?: Condition[] } | undefined;
  return status?.conditions ?? [];
}

const condition = (r: Rig, type = 'GPUHealthy') => conditions(r).find((c) => c.type === type);

/** The Events on node-c as `kubectl describe node` finds them: by involvedObject. */
function nodeEvents(r: Rig): KubeObject[] {
  return r.api.events().filter((event) => {
    const involved = event.involvedObject as { kind?: string; name?: string };
    return involved.kind === 'Node' && involved.name === NODE;
  });
}

const eventsWith = (r: Rig, reason: string) => nodeEvents(r).filter((e) => e.reason === reason);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('GPUHealthy and the Events on node-c', () => {
  test('a fatal finding gives False with its reason; Ready stays; a repeated EVICT keeps lastTransitionTime; an acknowledge gives True and an Event', async () => {
    const r = await setup();
    await runRound(r);
    expect(condition(r)).toMatchObject({ status: 'True', reason: 'ChecksPassed' });

    r.gpus[0]!.remapped = REMAP_FAILED;
    await runRound(r);
    const evicted = condition(r)!;
    expect(evicted).toMatchObject({ status: 'False', reason: 'RowRemapFailure' });
    expect(evicted.message).toContain('remapped 0: a row remapping failed');
    // The kubelet's condition is untouched: the patch was a strategic merge on nodes/status.
    expect(condition(r, 'Ready')).toEqual(READY);
    const statusPatches = r.api.patches.filter((p) => p.subresource === 'status');
    expect(statusPatches.length).toBeGreaterThan(0);
    expect(new Set(statusPatches.map((p) => p.contentType))).toEqual(
      new Set(['application/strategic-merge-patch+json']),
    );

    // A later EVICT round with a new finding: the message changes, lastTransitionTime does not.
    await sleep(1100);
    r.gpus[1]!.remapped = REMAP_FAILED;
    await runRound(r);
    const again = condition(r)!;
    expect(again.status).toBe('False');
    expect(again.message).toContain('remapped 1:');
    expect(again.lastTransitionTime).toBe(evicted.lastTransitionTime);
    expect(again.lastHeartbeatTime > evicted.lastHeartbeatTime).toBe(true);
    // And an unchanged EVICT round sends nothing at all.
    const patchesBefore = r.api.patches.length;
    await runRound(r);
    expect(r.api.patches.length).toBe(patchesBefore);

    const evict = eventsWith(r, 'GPUHealthEvict');
    expect(evict).toHaveLength(1);
    expect(evict[0]).toMatchObject({
      type: 'Warning',
      metadata: { namespace: 'default' },
      involvedObject: { kind: 'Node', name: NODE, uid: r.api.node(NODE)?.metadata.uid },
      reportingComponent: 'autopilot.ibm.com/exporter',
      reportingInstance: 'autopilot-7xk2p',
      source: { component: 'autopilot.ibm.com/exporter', host: NODE },
      count: 1,
    });
    expect(evict[0]!.message).toContain('RowRemapFailure');

    r.gpus[0]!.remapped = REMAP_CLEAN;
    r.gpus[1]!.remapped = REMAP_CLEAN;
    await runRound(r);
    expect(condition(r)?.status).toBe('False');
    const acknowledged = await request(r.exporter.apiApp.callback())
      .post('/acknowledge')
      .set('Authorization', `Bearer ${OPERATOR_TOKEN}`);
    expect(acknowledged.status).toBe(200);
    await settle(r);
    expect(condition(r)).toMatchObject({ status: 'True', reason: 'ChecksPassed' });
    expect(condition(r)!.lastTransitionTime >= again.lastHeartbeatTime).toBe(true);
    const ack = eventsWith(r, 'EvictAcknowledged');
    expect(ack).toHaveLength(1);
    expect(ack[0]!.message).toMatch(/^EVICT acknowledged by alice; health is now PASS/);
    expect(condition(r, 'Ready')).toEqual(READY);
  });

  test('the same change again raises the count of its Event instead of a new object', async () => {
    const r = await setup();
    await runRound(r);
    for (let i = 0; i < 3; i++) {
      r.gpus[1]!.reasons = POWER_BRAKE;
      await runRound(r);
      expect(condition(r)).toMatchObject({ status: 'True', reason: 'PowerSlowdown' });
      r.gpus[1]!.reasons = 0n;
      await runRound(r);
    }
    const warn = eventsWith(r, 'GPUHealthWarn');
    expect(warn).toHaveLength(1);
    expect(warn[0]?.count).toBe(3);
    expect(eventsWith(r, 'GPUHealthPass')[0]?.count).toBe(3);
    const patched = r.api.eventWrites.filter((write) => write.method === 'PATCH');
    expect(patched.map((write) => (write.body as { count: number }).count)).toEqual([2, 2, 3, 3]);
  });

  test('AUTOPILOT_NODE_CONDITION renames the condition, and none writes none', async () => {
    const renamed = await setup({ AUTOPILOT_NODE_CONDITION: 'example.com/GPUOk' });
    await runRound(renamed);
    expect(conditions(renamed).map((c) => c.type)).toEqual(['Ready', 'example.com/GPUOk']);
    await renamed.api.close();
    renamed.exporter.cluster?.reporting.condition?.stop();
    renamed.exporter.cluster?.labeler.stop();
    await renamed.exporter.runner.shutdown(1000);

    const off = await setup({ AUTOPILOT_NODE_CONDITION: 'none' });
    expect(off.exporter.cluster!.reporting.condition).toBeUndefined();
    off.gpus[0]!.remapped = REMAP_FAILED;
    await runRound(off);
    expect(conditions(off)).toEqual([READY]);
    expect(off.api.patches.filter((p) => p.subresource === 'status')).toEqual([]);
    // The Events do not depend on the condition.
    expect(eventsWith(off, 'GPUHealthEvict')).toHaveLength(1);
  });
});
