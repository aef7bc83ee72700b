/**
 * The deep check's start and end as Events on the Node (issue 19 part 2), end to end: one exporter
 * (buildExporter) starting its deep-check Job through the real client-node adapter on the fake API
 * server, whose Job controller the test drives (the pod runs, the Job finishes or is deleted). Time
 * moves by hand (FakeClock) for the deep check's polls; HTTP is real. The Events are read from the
 * server as `kubectl describe node` finds them.
 */

import { afterEach, describe, expect, test } from '@jest/globals';
import { EVENT_REASONS } from '../../exporter/cluster/node-events.js';
import type { Exporter } from '../../exporter/exporter.js';
import { FakeClock, flushPromises } from '../fakes/clock.js';
import { passingDeepCheckReport } from '../fakes/deep-check-reports.js';
import { exporterOnFakeApi } from '../fakes/fake-api-exporter.js';
import { fakeNode } from '../fakes/gpu.js';
import { startFakeKubeApi, type FakeKubeApi, type KubeObject } from '../fakes/kube-api-server.js';

const NODE = 'node-c';
const NS = 'autopilot';

interface Rig {
  readonly api: FakeKubeApi;
  readonly exporter: Exporter;
  readonly clock: FakeClock;
}

let rig: Rig | undefined;

afterEach(async () => {
  if (rig === undefined) return;
  rig.exporter.cluster?.deepCheck.stop();
  rig.exporter.cluster?.labeler.stop();
  await rig.exporter.runner.shutdown(1000);
  await rig.api.close();
  rig = undefined;
});

async function setup(): Promise<Rig> {
  const api = await startFakeKubeApi();
  api.addNode({ name: NODE, allocatableGpus: 2 });
  const clock = new FakeClock(Date.now());
  const exporter = exporterOnFakeApi({
    url: api.url,
    node: NODE,
    gpus: fakeNode(2),
    env: {
      NAMESPACE: NS,
      POD_NAME: 'autopilot-7xk2p',
      PERIODIC_CHECKS: 'remapped',
      AUTOPILOT_DEEPCHECK_IMAGE: 'registry.example/autopilot:test',
    },
    clock,
  });
  await exporter.cluster!.labeler.start();
  rig = { api, exporter, clock };
  return rig;
}

/** Moves the fake clock past the deep check's poll and lets the HTTP round-trips finish. */
async function tick(r: Rig, ms: number): Promise<void> {
  await r.clock.advance(ms);
  for (let i = 0; i < 5; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    await flushPromises();
  }
}

/** The deep check's Events on node-c, by involvedObject, oldest first. */
async function deepCheckEvents(r: Rig): Promise<KubeObject[]> {
  await r.exporter.cluster!.reporting.events.idle();
  return r.api
    .events()
    .filter((event) => {
      const involved = event.involvedObject as { kind?: string; name?: string };
      return involved.kind === 'Node' && involved.name === NODE;
    })
    .filter((event) => String(event.reason).startsWith('DeepCheck'));
}

describe('deep check Events on the Node', () => {
  test('started when its Job is created, ended (Normal, passed) when the Job reports a pass', async () => {
    const r = await setup();
    const start = await r.exporter.cluster!.deepCheck.start();
    expect(start.started).toBe(true);
    const started = await deepCheckEvents(r);
    expect(started).toHaveLength(1);
    expect(started[0]).toMatchObject({
      type: 'Normal',
      reason: EVENT_REASONS.deepCheckStarted,
      action: 'DeepCheck',
      involvedObject: { kind: 'Node', name: NODE, uid: r.api.node(NODE)?.metadata.uid },
      reportingInstance: 'autopilot-7xk2p',
      count: 1,
    });
    expect(started[0]!.message).toContain('deep check started');

    r.api.runJobPod(NS, start.detail);
    r.api.finishJob(NS, start.detail, { succeeded: true, message: passingDeepCheckReport(2) });
    await tick(r, 10_000);
    expect(await r.exporter.cluster!.deepCheck.settled()).toBe('passed');
    const events = await deepCheckEvents(r);
    expect(events.map((e) => [e.reason, e.type, e.message])).toEqual([
      [EVENT_REASONS.deepCheckStarted, 'Normal', started[0]!.message],
      [EVENT_REASONS.deepCheckEnded, 'Normal', 'deep check passed'],
    ]);
  });

  test('a Job deleted mid-run ends it with a Warning that says so', async () => {
    const r = await setup();
    const start = await r.exporter.cluster!.deepCheck.start();
    expect(start.started).toBe(true);
    const response = await fetch(
      `${r.api.url}/apis/batch/v1/namespaces/${NS}/jobs/${start.detail}`,
      {
        method: 'DELETE',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ propagationPolicy: 'Background' }),
      },
    );
    expect(response.status).toBe(200);
    await tick(r, 10_000);
    expect(await r.exporter.cluster!.deepCheck.settled()).toBe('deleted');
    const ended = (await deepCheckEvents(r)).filter(
      (e) => e.reason === EVENT_REASONS.deepCheckEnded,
    );
    expect(ended).toHaveLength(1);
    expect(ended[0]).toMatchObject({
      type: 'Warning',
      message: 'deep check ended without results: its Job was deleted',
    });
  });
});
