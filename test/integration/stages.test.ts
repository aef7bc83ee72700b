/**
 * DCGM, the deep check and post-flight in one exporter (buildExporter) talking through the real
 * client-node adapter to the fake API server, with the fake dcgmi and in-memory GPUs. Time moves
 * by hand (FakeClock) for the deep check's and post-flight's polls; HTTP is real.
 */

import { afterEach, describe, expect, test } from '@jest/globals';
import { join } from 'node:path';
import request from 'supertest';
import type { Exporter } from '../../exporter/exporter.js';
import { loadNvml } from '../../exporter/native/nvml.js';
import { FakeClock, flushPromises } from '../fakes/clock.js';
import { passingDeepCheckReport } from '../fakes/deep-check-reports.js';
import { fakeNode, fakeNvml } from '../fakes/gpu.js';
import type { FakeKubeApi } from '../fakes/kube-api-server.js';
import { FAKE_NVML, fakeNvmlControl } from '../fakes/native-fakes.js';
import {
  startKubeExporter,
  type KubeExporter,
  type KubeExporterOptions,
} from '../fakes/kube-exporter.js';

const NODE = 'gpu-node-1';
const NS = 'autopilot';
const LABEL = 'autopilot.ibm.com/gpuhealth';
const FAKE_DCGMI = join(import.meta.dirname, '..', 'fakes', 'bin', 'fake-dcgmi');

interface Rig extends KubeExporter {
  readonly clock: FakeClock;
}

/** What a test set up, undone after it whatever happened: the last set up first. */
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/** startKubeExporter for NODE with `allocatableGpus`, closed after the test. */
async function start(
  options: Omit<KubeExporterOptions, 'node'> & { allocatableGpus: number },
): Promise<KubeExporter> {
  const { allocatableGpus, ...rest } = options;
  const exporter = await startKubeExporter({ ...rest, node: { name: NODE, allocatableGpus } });
  cleanups.push(() => exporter.close());
  return exporter;
}

async function setup(dcgmScenario: string, busyGpu?: number): Promise<Rig> {
  const clock = new FakeClock(Date.now());
  const gpus = fakeNode(4);
  if (busyGpu !== undefined) gpus[busyGpu]!.processes = 2;
  const exporter = await start({
    allocatableGpus: 4,
    env: {
      NAMESPACE: NS,
      PERIODIC_CHECKS: 'remapped',
      AUTOPILOT_DCGMI_COMMAND: FAKE_DCGMI,
      AUTOPILOT_DEEPCHECK_IMAGE: 'registry.example/autopilot:test',
      AUTOPILOT_DEEPCHECK_PRIORITY_CLASS: 'autopilot-low',
      AUTOPILOT_POSTFLIGHT_CHECKS: 'remapped,gpupower,dcgm',
    },
    nvml: { ok: true, nvml: fakeNvml(gpus) },
    commandEnv: { PATH: process.env.PATH, FAKE_DCGMI_SCENARIO: dcgmScenario },
    clock,
  });
  return { ...exporter, clock };
}

describe('dcgm: GPU 2 fails PCIe (fatal), GPU 0 a non-fatal test', () => {
  test.each([['fail-4x'], ['fail-3x']])(
    '%s: EVICT, the annotation, per-test metrics',
    async (scenario) => {
      const r = await setup(scenario);
      const run = await r.exporter.runner.run('dcgm', { r: '3' }, 'api');
      expect(run.verdict).toBe('FAIL');
      expect(run.devices.find((d) => d.id === '2')).toMatchObject({ verdict: 'FAIL', fatal: true });
      expect(run.devices.find((d) => d.id === '0')).toMatchObject({ verdict: 'FAIL' });
      expect(run.devices.find((d) => d.id === '0')?.fatal).not.toBe(true);
      expect(r.exporter.store.health().state).toBe('EVICT');
      await r.exporter.cluster!.labeler.idle();
      const node = r.node();
      expect(node.labels[LABEL]).toBe('EVICT');
      expect(node.labels['autopilot.ibm.com/dcgm.level.3']).toMatch(
        /^ERR_\d{4}-\d{2}-\d{2}_\d{2}\.\d{2}\.\d{2}UTC$/,
      );
      expect(node.annotations['autopilot.ibm.com/dcgm.level.3.output']).toBe(
        'pcie.2memory_bandwidth.0',
      );
      const metrics = (await request(r.exporter.metricsApp.callback()).get('/metrics')).text;
      expect(metrics).toMatch(
        /^autopilot_dcgm_test_result\{[^}]*test="pcie"[^}]*gpu="2"[^}]*result="fail"[^}]*\} 1$/m,
      );
      expect(metrics).toMatch(
        /^autopilot_dcgm_test_result\{[^}]*test="memory_bandwidth"[^}]*gpu="0"[^}]*result="fail"[^}]*\} 1$/m,
      );
    },
  );
});

describe('dcgm levels 2 and above need idle GPUs', () => {
  test('level 2 with a compute process on GPU 1 is a SKIP that says so; level 1 runs', async () => {
    const r = await setup('pass-4x', 1);
    const level2 = await r.exporter.runner.run('dcgm', { r: '2' }, 'api');
    expect([level2.verdict, level2.reason]).toEqual([
      'SKIP',
      'GPUs in use, not tested: GPU 1 (2 compute processes)',
    ]);
    const level1 = await r.exporter.runner.run('dcgm', { r: '1' }, 'api');
    expect(level1.verdict).toBe('PASS');
  });
});

/** Moves the fake clock past a poll and lets the HTTP round-trips it started finish. */
async function tick(r: Rig, ms: number): Promise<void> {
  await r.clock.advance(ms);
  await r.exporter.cluster!.postflight?.idle();
  for (let i = 0; i < 5; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    await flushPromises();
  }
}

describe('deep check and post-flight', () => {
  test('no deep check while a GPU pod runs; after it ends post-flight runs', async () => {
    const r = await setup('pass-4x');
    r.api.addPod({ namespace: 'ml', name: 'trainer-0', nodeName: NODE, gpus: 4, phase: 'Running' });
    r.exporter.cluster!.postflight!.start();
    await r.exporter.cluster!.postflight!.idle();

    const refused = await r.exporter.cluster!.deepCheck.start();
    expect(refused).toEqual({
      started: false,
      detail: 'GPUs requested by ml/trainer-0; not started',
    });
    expect(r.api.jobs).toEqual([]);

    r.api.setPodPhase('ml', 'trainer-0', 'Succeeded');
    await tick(r, 15_000);
    await waitFor(() => r.exporter.store.latest('dcgm')?.trigger === 'postflight');
    for (const check of ['remapped', 'gpupower', 'dcgm']) {
      expect(r.exporter.store.latest(check)).toMatchObject({ trigger: 'postflight' });
    }
    expect(r.exporter.store.latest('dcgm')?.params).toEqual({ r: '1' });
  });

  test('a pod that ends while a deep-check Job runs gets its post-flight once the Job is gone', async () => {
    const r = await setup('pass-4x');
    r.api.addPod({ namespace: 'ml', name: 'trainer-0', nodeName: NODE, gpus: 4, phase: 'Running' });
    r.exporter.cluster!.postflight!.start();
    await r.exporter.cluster!.postflight!.idle();
    r.api.setPodPhase('ml', 'trainer-0', 'Succeeded');
    const start = await r.exporter.cluster!.deepCheck.start();
    expect(start.started).toBe(true);

    await tick(r, 15_000);
    await r.exporter.cluster!.postflight!.idle();
    expect(r.exporter.store.latest('remapped')).toBeUndefined();

    await deleteJob(r, start.detail);
    await tick(r, 10_000);
    expect(await r.exporter.cluster!.deepCheck.settled()).toBe('deleted');
    await tick(r, 15_000);
    await waitFor(() => r.exporter.store.latest('remapped')?.trigger === 'postflight');
  });

  test('a deep-check Job deleted mid-run leaves the node out of TESTING', async () => {
    const r = await setup('pass-4x');
    await r.exporter.runner.run('remapped', {}, 'periodic');
    await r.exporter.cluster!.labeler.idle();
    expect(r.node().labels[LABEL]).toBe('PASS');

    const start = await r.exporter.cluster!.deepCheck.start();
    expect(start.started).toBe(true);
    const job = r.api.job(NS, start.detail)!;
    const spec = job.spec as {
      template: {
        spec: {
          nodeName: string;
          priorityClassName: string;
          containers: { resources: { limits: Record<string, string> } }[];
        };
      };
    };
    expect(spec.template.spec.nodeName).toBe(NODE);
    expect(spec.template.spec.priorityClassName).toBe('autopilot-low');
    expect(spec.template.spec.containers[0]!.resources.limits['nvidia.com/gpu']).toBe('4');
    await r.exporter.cluster!.labeler.idle();
    expect(r.node().labels[LABEL]).toBe('TESTING');

    await request(r.exporter.apiApp.callback()).get('/results'); // the exporter keeps serving
    await deleteJob(r, start.detail);
    await tick(r, 10_000);
    expect(await r.exporter.cluster!.deepCheck.settled()).toBe('deleted');
    await r.exporter.cluster!.labeler.idle();
    expect(r.node().labels[LABEL]).toBe('PASS');
    expect(r.exporter.store.latest('dcgm')).toMatchObject({
      verdict: 'ERROR',
      trigger: 'deepcheck',
      reason: 'deep check: the deep-check Job was deleted before it ended',
    });
  });

  test('while the deep-check Job holds the GPUs, the periodic GPU checks are not run', async () => {
    const r = await setup('pass-4x');
    const start = await r.exporter.cluster!.deepCheck.start();
    expect(start.started).toBe(true);
    r.exporter.scheduler.start();
    await r.exporter.scheduler.idle();
    expect(r.exporter.store.latest('remapped')).toBeUndefined();
    r.exporter.scheduler.stop();
  });

  test('while the deep-check Job holds the GPUs, an API run of a GPU check answers SKIP and runs nothing', async () => {
    const r = await setup('pass-4x');
    const start = await r.exporter.cluster!.deepCheck.start();
    expect(start.started).toBe(true);
    const response = await request(r.exporter.apiApp.callback()).get(
      `/status?check=remapped&host=${NODE}&format=json`,
    );
    expect(response.status).toBe(200);
    expect(JSON.stringify(response.body)).toContain('the deep-check Job holds the GPUs');
    expect(r.exporter.store.latest('remapped')).toBeUndefined();
  });

  test('a passing deep check lifts a sticky EVICT', async () => {
    const r = await setup('fail-4x');
    await r.exporter.runner.run('dcgm', { r: '1' }, 'api');
    expect(r.exporter.store.health().state).toBe('EVICT');
    const start = await r.exporter.cluster!.deepCheck.start();
    expect(start.started).toBe(true);
    r.api.runJobPod(NS, start.detail);
    r.api.finishJob(NS, start.detail, { succeeded: true, message: passingDeepCheckReport(4) });
    await tick(r, 10_000);
    expect(await r.exporter.cluster!.deepCheck.settled()).toBe('passed');
    expect(r.exporter.store.health().state).toBe('PASS');
    await r.exporter.cluster!.labeler.idle();
    expect(r.node().labels[LABEL]).toBe('PASS');
    expect(r.node().labels['autopilot.ibm.com/dcgm.level.3']).toMatch(/^PASS_/);
  });
});

async function deleteJob(r: Rig, name: string): Promise<void> {
  const response = await fetch(`${r.api.url}/apis/batch/v1/namespaces/${NS}/jobs/${name}`, {
    method: 'DELETE',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ propagationPolicy: 'Background' }),
  });
  expect(response.status).toBe(200);
}

async function waitFor(condition: () => boolean, withinMs = 5000): Promise<void> {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > withinMs) throw new Error('condition not met');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('maxage answers only with a result of the same parameters', () => {
  test('a level-3 dcgm result does not answer a level-1 request; a level-1 one does', async () => {
    const r = await setup('pass-4x');
    const app = r.exporter.apiApp.callback();
    await r.exporter.runner.run('dcgm', { r: '3' }, 'api');
    const first = await request(app).get(
      '/status?host=gpu-node-1&check=dcgm&r=1&maxage=1h&format=json',
    );
    const runs = () => r.exporter.store.history('dcgm').length;
    expect(runs()).toBe(2);
    expect((first.body as { results: { params: { r: string } }[] }).results[0]!.params.r).toBe('1');
    await request(app).get('/status?host=gpu-node-1&check=dcgm&r=1&maxage=1h&format=json');
    expect(runs()).toBe(2);
  });
});

/**
 * What may evict (AUTOPILOT_EVICT_ON), through the whole exporter: the C fake libnvidia-ml over the
 * real koffi binding (a row-remap failure on GPU 1, XID 79 on GPU 2, heard by the XID watcher),
 * the fake dcgmi behind the API, the node label on the fake API server.
 */
describe('what may evict, on the C fake NVML and the fake dcgmi', () => {
  const { reset: fakeReset, apply: fakeApply } = fakeNvmlControl();

  interface EvictRig {
    readonly api: FakeKubeApi;
    readonly exporter: Exporter;
    /** The fake dcgmi's scenario for the next run; read by each run, so it can change between. */
    readonly dcgmEnv: Record<string, string | undefined>;
    label(): string | undefined;
    dcgmStatus(): Promise<{ status: number; text: string }>;
  }
  async function setupEvict(evictOn: 'dcgm' | 'all', scenario: string): Promise<EvictRig> {
    fakeReset();
    cleanups.push(fakeReset);
    expect(fakeApply(scenario)).toBe(0);
    const load = await loadNvml(FAKE_NVML);
    if (!load.ok) throw new Error(`the fake NVML did not load: ${load.reason}`);
    // Closed after the exporter that reads it, as cleanups undo the last first.
    cleanups.push(() => load.nvml.close());
    const dcgmEnv: Record<string, string | undefined> = { PATH: process.env.PATH };
    const { api, exporter } = await start({
      allocatableGpus: 8,
      env: {
        NAMESPACE: NS,
        PERIODIC_CHECKS: 'remapped',
        AUTOPILOT_DCGMI_COMMAND: FAKE_DCGMI,
        AUTOPILOT_EVICT_ON: evictOn,
        AUTOPILOT_API_ACCESS_INVASIVE: 'open',
      },
      nvml: load,
      commandEnv: dcgmEnv,
      gpuModel: 'NVIDIA H200',
    });
    return {
      api,
      exporter,
      dcgmEnv,
      label: () => (api.node(NODE)?.metadata.labels ?? {})[LABEL],
      dcgmStatus: async () => {
        const response = await request(exporter.apiApp.callback()).get(
          `/status?host=${NODE}&check=dcgm&r=3`,
        );
        await exporter.cluster!.labeler.idle();
        return { status: response.status, text: response.text };
      },
    };
  }

  /** The periodic round's remapped check, and the XID the watcher hears from the fake library. */
  async function remapAndXid(r: EvictRig): Promise<void> {
    await r.exporter.runner.run('remapped', {}, 'periodic');
    r.exporter.checkListener.start();
    for (let i = 0; i < 200 && r.exporter.store.latest('xid') === undefined; i++) {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    expect(r.exporter.store.latest('xid')?.verdict).toBe('FAIL');
    await r.exporter.cluster!.labeler.idle();
  }

  test('dcgm: a row-remap failure and XID 79 give WARN with evidence; DCGM level 3 failing PCIe evicts; a passing level 3 lifts it', async () => {
    const r = await setupEvict('dcgm', 'gpus=4;remapfail=1;xid=2:79');
    await remapAndXid(r);
    const health = r.exporter.store.health();
    expect(health.state).toBe('WARN');
    expect(health.reasons).toEqual([
      'remapped 1: a row remapping failed: replace the GPU (fatal, but only DCGM evicts with AUTOPILOT_EVICT_ON=dcgm)',
      expect.stringMatching(
        /^xid 2: XID 79 \(GPU has fallen off the bus\) ×1, last .* \(fatal, but only DCGM evicts with AUTOPILOT_EVICT_ON=dcgm\)$/,
      ),
    ]);
    const remapped = r.exporter.store.latest('remapped')!.devices.find((d) => d.id === '1')!;
    expect(remapped).toMatchObject({ verdict: 'FAIL', fatal: true });
    expect(remapped.evidence).toMatchObject({ failureOccurred: true });
    expect(r.label()).toBe('WARN');

    r.dcgmEnv.FAKE_DCGMI_SCENARIO = 'fail-3x';
    expect((await r.dcgmStatus()).status).toBe(200);
    expect(r.exporter.store.health()).toMatchObject({
      state: 'EVICT',
      evictCause: { dcgmLevel: 3, other: false },
    });
    expect(r.label()).toBe('EVICT');

    r.dcgmEnv.FAKE_DCGMI_SCENARIO = 'pass-3x';
    expect((await r.dcgmStatus()).text).toContain('[[ DCGM ]] SUCCESS');
    // Lifted: the remap failure and the XID remain, and only warn.
    expect(r.exporter.store.health().state).toBe('WARN');
    expect(r.label()).toBe('WARN');
    expect((r.api.node(NODE)?.metadata.labels ?? {})['autopilot.ibm.com/dcgm.level.3']).toMatch(
      /^PASS_/,
    );
  });

  test('all: the row-remap failure evicts, and a passing DCGM level-3 run does not lift it', async () => {
    const r = await setupEvict('all', 'gpus=4;remapfail=1');
    await r.exporter.runner.run('remapped', {}, 'periodic');
    await r.exporter.cluster!.labeler.idle();
    expect(r.exporter.store.health()).toMatchObject({
      state: 'EVICT',
      reasons: ['remapped 1: a row remapping failed: replace the GPU'],
    });
    r.dcgmEnv.FAKE_DCGMI_SCENARIO = 'pass-3x';
    expect((await r.dcgmStatus()).text).toContain('[[ DCGM ]] SUCCESS');
    expect(r.exporter.store.latest('dcgm')?.verdict).toBe('PASS');
    expect(r.exporter.store.health().state).toBe('EVICT');
    expect(r.label()).toBe('EVICT');
  });
});
