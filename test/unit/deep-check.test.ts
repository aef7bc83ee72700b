import { describe, expect, test } from '@jest/globals';
import type { CheckRun, Verdict } from '../../exporter/checks/check.js';
import {
  DEEP_CHECK_JOB_PREFIX,
  runFromReport,
  createDeepCheck,
  scheduleDeepChecks,
  type DeepCheck,
  type DeepCheckSettings,
  type DeepCheckStart,
} from '../../exporter/cluster/deep-check.js';
import { gpuHolders } from '../../exporter/cluster/gpu-idle.js';
import type { JobSpec, PodInfo } from '../../exporter/k8s/ports.js';
import type { Schedule } from '../../exporter/config/schedule.js';
import { silentLogger } from '../../exporter/log.js';
import { deepCheckReport } from '../../exporter/deep-check-report.js';
import { FakeClock, flushPromises } from '../fakes/clock.js';
import { FakeKube } from '../fakes/kube.js';
import { device, makeRun } from '../fakes/runs.js';

const NODE = 'gpu-node-1';
const NAMESPACE = 'autopilot';
const POLL_MS = 1000;
const PENDING_TIMEOUT_MS = 5000;

const SETTINGS: DeepCheckSettings = {
  namespace: NAMESPACE,
  nodeName: NODE,
  image: 'registry.example/autopilot:1.0',
  command: ['autopilot', 'deepcheck'],
  priorityClassName: 'autopilot-low',
  serviceAccountName: 'autopilot-deepcheck',
  runtimeClassName: 'nvidia',
  imagePullSecrets: ['registry-a'],
  ttlSeconds: 600,
  activeDeadlineSeconds: 1800,
  pendingTimeoutMs: PENDING_TIMEOUT_MS,
  pollMs: POLL_MS,
  env: { DCGM_FATAL_ERRORS: 'PCIe,GPU Memory' },
};

interface DcgmResult {
  level: number;
  passed: boolean;
  output: string;
  at: number;
}

/** A deep check on a FakeKube node with 8 GPUs; every callback records what it was given. */
function setup(
  options: {
    settings?: Partial<DeepCheckSettings>;
    allocatableGpus?: number;
    busy?: () => string | undefined;
  } = {},
) {
  const clock = new FakeClock();
  const kube = new FakeKube();
  if (options.allocatableGpus === undefined) kube.addNode(NODE, { allocatableGpus: 8 });
  else kube.addNode(NODE, { allocatableGpus: options.allocatableGpus });
  const recorded: CheckRun[] = [];
  const passed: number[] = [];
  const dcgm: DcgmResult[] = [];
  let changes = 0;
  const deepCheck = createDeepCheck({
    kube: kube.api,
    settings: { ...SETTINGS, ...options.settings },
    gpusBusy: () => Promise.resolve(options.busy?.()),
    record: (run) => recorded.push(run),
    passed: (at) => passed.push(at),
    dcgmResult: (result) => dcgm.push(result),
    changed: () => (changes += 1),
    clock,
    logger: silentLogger,
  });
  return {
    clock,
    kube,
    deepCheck,
    recorded,
    passed,
    dcgm,
    changes: () => changes,
    t0: clock.now(),
  };
}

/** Starts a deep check that must start, and lets its pod run (no longer Pending). */
async function startRunning(ctx: ReturnType<typeof setup>): Promise<string> {
  const start = await ctx.deepCheck.start();
  expect(start.started).toBe(true);
  ctx.kube.setPodPhase(NAMESPACE, `${start.detail}-pod`, 'Running');
  return start.detail;
}

const report = (runs: CheckRun[]): string => deepCheckReport(runs);

/** The ERROR dcgm run the deep check records when it ends without a report. */
const dcgmError = (startedAt: number, finishedAt: number, reason: string): CheckRun => ({
  check: 'dcgm',
  trigger: 'deepcheck',
  params: { r: '3' },
  startedAt,
  finishedAt,
  verdict: 'ERROR',
  reason,
  devices: [],
  samples: [],
});

const passingReport = (at: number): string =>
  report([
    makeRun('dcgm', at, [device('0', 'PASS'), device('1', 'PASS')]),
    makeRun('gpumem', at, [device('0', 'PASS'), device('1', 'PASS')]),
  ]);

const fatalDcgmReport = (at: number): string =>
  report([
    makeRun('dcgm', at, [
      device('0', 'PASS'),
      device('3', 'FAIL', { fatal: true, reason: 'PCIe replay rate exceeded' }),
    ]),
    makeRun('gpumem', at, [device('0', 'PASS'), device('3', 'PASS')]),
  ]);

describe('deep check: not started', () => {
  test('without an image, nothing is asked of Kubernetes', async () => {
    const ctx = setup({ settings: { image: undefined } });
    await expect(ctx.deepCheck.start()).resolves.toEqual({
      started: false,
      detail: 'no image for the Job (set AUTOPILOT_DEEPCHECK_IMAGE)',
    });
    expect(ctx.kube.calls).toEqual([]);
    expect(ctx.deepCheck.running()).toBe(false);
    expect(ctx.changes()).toBe(0);
  });

  test('busy GPUs: the reason is in the detail and no Job is created', async () => {
    const ctx = setup({ busy: () => 'GPUs requested by team-a/train-0' });
    const start = await ctx.deepCheck.start();
    expect(start).toEqual({
      started: false,
      detail: 'GPUs requested by team-a/train-0; not started',
    });
    expect(ctx.kube.callsTo('createJob')).toEqual([]);
    expect(ctx.kube.jobs.size).toBe(0);
    expect(ctx.recorded).toEqual([]);
    expect(ctx.deepCheck.running()).toBe(false);
  });

  test.each<[string, number | undefined]>([
    ['no nvidia.com/gpu', undefined],
    ['zero nvidia.com/gpu', 0],
  ])('a node with %s allocatable gets no Job', async (_name, gpus) => {
    const clock = new FakeClock();
    const kube = new FakeKube();
    if (gpus === undefined) kube.addNode(NODE);
    else kube.addNode(NODE, { allocatableGpus: gpus });
    const deepCheck = createDeepCheck({
      kube: kube.api,
      settings: SETTINGS,
      gpusBusy: () => Promise.resolve(undefined),
      record: () => undefined,
      passed: () => undefined,
      changed: () => undefined,
      clock,
      logger: silentLogger,
    });
    await expect(deepCheck.start()).resolves.toEqual({
      started: false,
      detail: 'the node advertises no allocatable nvidia.com/gpu',
    });
    expect(kube.callsTo('createJob')).toEqual([]);
  });

  test('createJob forbidden: not started, and an ERROR dcgm run says why', async () => {
    const ctx = setup();
    const error = ctx.kube.failNext(
      'createJob',
      403,
      'jobs.batch is forbidden: User "system:serviceaccount:autopilot:autopilot" cannot create resource "jobs"',
    );
    const start = await ctx.deepCheck.start();
    expect(start).toEqual({ started: false, detail: error.message });
    expect(ctx.deepCheck.running()).toBe(false);
    expect(ctx.changes()).toBe(0);
    expect(ctx.recorded).toEqual([dcgmError(ctx.t0, ctx.t0, `deep check: ${error.message}`)]);
    expect(ctx.passed).toEqual([]);
    expect(ctx.dcgm).toEqual([]);
  });
});

describe("the idle test and the deep check's own pods", () => {
  const pod = (name: string): PodInfo => ({
    name,
    namespace: 'ml',
    nodeName: NODE,
    phase: 'Running',
    annotations: {},
    podIPs: [],
    gpus: 8,
    terminationMessage: undefined,
  });

  test("only the Job's own pods (dcgm-<6 hex>-…) are left out, not other pods named dcgm-…", () => {
    const pods = [
      pod('dcgm-3f9a1c-x7k2p'),
      pod('dcgm-trainer-0'),
      pod('dcgm-exporter-abcde'),
      pod('dcgm-3f9a1cz-x'),
    ];
    expect(gpuHolders(pods, DEEP_CHECK_JOB_PREFIX).map((p) => p.name)).toEqual([
      'dcgm-trainer-0',
      'dcgm-exporter-abcde',
      'dcgm-3f9a1cz-x',
    ]);
  });
});

describe('deep check: started', () => {
  test('the Job asks for every allocatable GPU on this node, at low priority, with a TTL', async () => {
    const ctx = setup();
    const start = await ctx.deepCheck.start();
    expect(start.started).toBe(true);
    // Autopilot's name, which operators' scripts grep for (kubectl get jobs | grep dcgm).
    expect(start.detail).toMatch(/^dcgm-[0-9a-f]{6}$/);
    expect(start.detail.startsWith(DEEP_CHECK_JOB_PREFIX)).toBe(true);
    const expected: JobSpec = {
      name: start.detail,
      namespace: NAMESPACE,
      nodeName: NODE,
      image: 'registry.example/autopilot:1.0',
      command: ['autopilot', 'deepcheck'],
      gpus: 8,
      priorityClassName: 'autopilot-low',
      ttlSecondsAfterFinished: 600,
      activeDeadlineSeconds: 1800,
      serviceAccountName: 'autopilot-deepcheck',
      runtimeClassName: 'nvidia',
      imagePullSecrets: ['registry-a'],
      // autopilot's own taint: under NoExecute a pod that does not tolerate it is evicted.
      toleratedTaintKeys: ['autopilot.ibm.com/gpuhealth'],
      labels: {
        'app.kubernetes.io/managed-by': 'autopilot',
        'autopilot.ibm.com/check': 'deepcheck',
      },
      env: { DCGM_FATAL_ERRORS: 'PCIe,GPU Memory', NODE_NAME: NODE },
    };
    expect(ctx.kube.callsTo('createJob')).toEqual([[expected]]);
    expect(ctx.kube.jobs.get(`${NAMESPACE}/${start.detail}`)?.state).toBe('Active');
    expect(ctx.deepCheck.running()).toBe(true);
    expect(ctx.changes()).toBe(1);
    expect(ctx.recorded).toEqual([]);
  });

  test('the Job takes the GPU count the node advertises, not a fixed 8', async () => {
    const ctx = setup({ allocatableGpus: 4 });
    await ctx.deepCheck.start();
    const [[spec]] = ctx.kube.callsTo('createJob') as [[JobSpec]];
    expect(spec.gpus).toBe(4);
  });

  test('two starts make two differently named Jobs', async () => {
    const ctx = setup();
    const first = await startRunning(ctx);
    ctx.kube.finishJob(NAMESPACE, first, { succeeded: true, message: passingReport(ctx.t0) });
    const ended = ctx.deepCheck.settled();
    await ctx.clock.advance(POLL_MS);
    await ended;
    const second = await ctx.deepCheck.start();
    expect(second.started).toBe(true);
    expect(second.detail).not.toBe(first);
  });

  test('a second start while one runs does not start', async () => {
    const ctx = setup();
    const job = await startRunning(ctx);
    const refused: DeepCheckStart = { started: false, detail: `already running (${job})` };
    await expect(ctx.deepCheck.start()).resolves.toEqual(refused);
    expect(ctx.kube.callsTo('createJob')).toHaveLength(1);
    expect(ctx.changes()).toBe(1);
  });

  test('settled() resolves undefined when nothing runs', async () => {
    const ctx = setup();
    await expect(ctx.deepCheck.settled()).resolves.toBeUndefined();
  });
});

describe('deep check: followed to its end', () => {
  test('success with a passing report: runs recorded, EVICT lifted, dcgm level 3 passed', async () => {
    const ctx = setup();
    const job = await startRunning(ctx);
    const ended = ctx.deepCheck.settled();
    await ctx.clock.advance(POLL_MS * 3);
    expect(ctx.deepCheck.running()).toBe(true);
    expect(ctx.recorded).toEqual([]);

    ctx.kube.finishJob(NAMESPACE, job, { succeeded: true, message: passingReport(ctx.t0) });
    await ctx.clock.advance(POLL_MS);
    const endedAt = ctx.clock.now();
    await expect(ended).resolves.toBe('passed');

    expect(ctx.recorded).toEqual([
      {
        check: 'dcgm',
        trigger: 'deepcheck',
        params: { r: '3' },
        startedAt: ctx.t0,
        finishedAt: endedAt,
        verdict: 'PASS',
        reason: 'PASS run',
        devices: [
          { id: '0', verdict: 'PASS', reason: 'pass reason', evidence: {} },
          { id: '1', verdict: 'PASS', reason: 'pass reason', evidence: {} },
        ],
        samples: [],
      },
      {
        check: 'gpumem',
        trigger: 'deepcheck',
        params: {},
        startedAt: ctx.t0,
        finishedAt: endedAt,
        verdict: 'PASS',
        reason: 'PASS run',
        // gpumem's compatibility gauge is per GPU: rebuilt so its series survive the deep check.
        devices: [
          { id: '0', verdict: 'PASS', reason: 'pass reason', evidence: {}, compatValue: 0 },
          { id: '1', verdict: 'PASS', reason: 'pass reason', evidence: {}, compatValue: 0 },
        ],
        samples: [],
      },
    ]);
    expect(ctx.passed).toEqual([endedAt]);
    expect(ctx.dcgm).toEqual([{ level: 3, passed: true, output: '', at: endedAt }]);
    expect(ctx.deepCheck.running()).toBe(false);
    expect(ctx.changes()).toBe(2);
  });

  test('failure with a fatal dcgm FAIL: recorded as fatal, EVICT not lifted, the GPU named', async () => {
    const ctx = setup();
    const job = await startRunning(ctx);
    const ended = ctx.deepCheck.settled();
    ctx.kube.finishJob(NAMESPACE, job, { succeeded: false, message: fatalDcgmReport(ctx.t0) });
    await ctx.clock.advance(POLL_MS);
    const endedAt = ctx.clock.now();
    await expect(ended).resolves.toBe('failed');

    expect(ctx.recorded.map((run) => [run.check, run.verdict, run.trigger])).toEqual([
      ['dcgm', 'FAIL', 'deepcheck'],
      ['gpumem', 'PASS', 'deepcheck'],
    ]);
    expect(ctx.recorded[0]?.devices).toEqual([
      { id: '0', verdict: 'PASS', reason: 'pass reason', evidence: {} },
      {
        id: '3',
        verdict: 'FAIL',
        reason: 'PCIe replay rate exceeded',
        evidence: {},
        fatal: true,
      },
    ]);
    expect(ctx.passed).toEqual([]);
    expect(ctx.dcgm).toEqual([
      { level: 3, passed: false, output: '3:PCIe replay rate exceeded', at: endedAt },
    ]);
    expect(ctx.deepCheck.running()).toBe(false);
    expect(ctx.changes()).toBe(2);
  });

  test('a gpumem FAIL alone fails the deep check while dcgm level 3 still passes', async () => {
    const ctx = setup();
    const job = await startRunning(ctx);
    const ended = ctx.deepCheck.settled();
    const message = report([
      makeRun('dcgm', ctx.t0, [device('0', 'PASS')]),
      makeRun('gpumem', ctx.t0, [device('0', 'FAIL', { reason: '12 mismatches' })]),
    ]);
    ctx.kube.finishJob(NAMESPACE, job, { succeeded: false, message });
    await ctx.clock.advance(POLL_MS);
    await expect(ended).resolves.toBe('failed');
    expect(ctx.passed).toEqual([]);
    expect(ctx.dcgm.map((r) => r.passed)).toEqual([true]);
  });

  test('a dcgm ERROR in the report neither lifts EVICT nor writes the dcgm.level.3 result', async () => {
    const ctx = setup();
    const job = await startRunning(ctx);
    const ended = ctx.deepCheck.settled();
    const message = report([
      makeRun('dcgm', ctx.t0, [device('', 'ERROR', { reason: 'dcgmi not found' })]),
      makeRun('gpumem', ctx.t0, [device('0', 'PASS')]),
    ]);
    ctx.kube.finishJob(NAMESPACE, job, { succeeded: false, message });
    await ctx.clock.advance(POLL_MS);
    await expect(ended).resolves.toBe('failed');
    expect(ctx.recorded.map((run) => run.verdict)).toEqual(['ERROR', 'PASS']);
    expect(ctx.passed).toEqual([]);
    expect(ctx.dcgm).toEqual([]);
  });

  test('a report of SKIPs only (no dcgmi in the image) does not lift EVICT', async () => {
    const ctx = setup();
    const job = await startRunning(ctx);
    const ended = ctx.deepCheck.settled();
    const message = report([
      makeRun('dcgm', ctx.t0, [], { verdict: 'SKIP', reason: 'dcgmi is not installed' }),
      makeRun('gpumem', ctx.t0, [], { verdict: 'SKIP', reason: 'no CUDA' }),
    ]);
    ctx.kube.finishJob(NAMESPACE, job, { succeeded: true, message });
    await ctx.clock.advance(POLL_MS);
    await expect(ended).resolves.toBe('failed');
    expect(ctx.passed).toEqual([]);
    expect(ctx.dcgm).toEqual([]);
  });

  // A report the exporter cannot read a single run from is no evidence of health; lifting a
  // sticky EVICT on it would return a broken node to service.
  test.each<[string, string]>([
    ['no runs', JSON.stringify({ runs: [] })],
    [
      'only runs with an unknown verdict',
      JSON.stringify({ runs: [{ check: 'dcgm', verdict: 'MAYBE', devices: [] }] }),
    ],
  ])('a report with %s does not lift EVICT', async (_name, message) => {
    const ctx = setup();
    const job = await startRunning(ctx);
    const ended = ctx.deepCheck.settled();
    ctx.kube.finishJob(NAMESPACE, job, { succeeded: true, message });
    await ctx.clock.advance(POLL_MS);
    await expect(ended).resolves.toBe('error');
    expect(ctx.passed).toEqual([]);
    expect(ctx.dcgm).toEqual([]);
    expect(ctx.recorded.map((run) => [run.check, run.verdict, run.reason])).toEqual([
      ['dcgm', 'ERROR', 'deep check: the Job reported no check'],
    ]);
  });

  test('the Job deleted mid-run: ERROR run, TESTING ends', async () => {
    const ctx = setup();
    const job = await startRunning(ctx);
    const ended = ctx.deepCheck.settled();
    await ctx.clock.advance(POLL_MS * 2);
    await ctx.kube.api.deleteJob(NAMESPACE, job);
    await ctx.clock.advance(POLL_MS);
    const endedAt = ctx.clock.now();
    await expect(ended).resolves.toBe('deleted');
    expect(ctx.recorded).toEqual([
      dcgmError(ctx.t0, endedAt, 'deep check: the deep-check Job was deleted before it ended'),
    ]);
    expect(ctx.passed).toEqual([]);
    expect(ctx.dcgm).toEqual([]);
    expect(ctx.deepCheck.running()).toBe(false);
    expect(ctx.changes()).toBe(2);
  });

  test('a pod Pending past pendingTimeoutMs: the Job is deleted, ERROR run, stuck', async () => {
    const ctx = setup();
    const start = await ctx.deepCheck.start();
    const ended = ctx.deepCheck.settled();
    // First poll at +1 s sees it Pending; the timeout counts from there and must be exceeded.
    await ctx.clock.advance(POLL_MS + PENDING_TIMEOUT_MS);
    expect(ctx.kube.callsTo('deleteJob')).toEqual([]);
    expect(ctx.deepCheck.running()).toBe(true);

    await ctx.clock.advance(POLL_MS);
    await expect(ended).resolves.toBe('stuck');
    expect(ctx.kube.callsTo('deleteJob')).toEqual([[NAMESPACE, start.detail]]);
    expect(ctx.kube.jobs.size).toBe(0);
    expect(ctx.recorded.map((run) => [run.check, run.verdict, run.reason])).toEqual([
      [
        'dcgm',
        'ERROR',
        'deep check: the deep-check pod stayed Pending for 5 s; the Job was deleted',
      ],
    ]);
    expect(ctx.passed).toEqual([]);
    expect(ctx.deepCheck.running()).toBe(false);
    expect(ctx.changes()).toBe(2);
  });

  test('a pod that leaves Pending in time is not taken for stuck', async () => {
    const ctx = setup();
    const start = await ctx.deepCheck.start();
    await ctx.clock.advance(POLL_MS + PENDING_TIMEOUT_MS);
    ctx.kube.setPodPhase(NAMESPACE, `${start.detail}-pod`, 'Running');
    await ctx.clock.advance(PENDING_TIMEOUT_MS * 3);
    expect(ctx.kube.callsTo('deleteJob')).toEqual([]);
    expect(ctx.deepCheck.running()).toBe(true);
  });

  test('the Job failed without a report: ERROR run with the failure', async () => {
    const ctx = setup();
    const job = await startRunning(ctx);
    const ended = ctx.deepCheck.settled();
    ctx.kube.finishJob(NAMESPACE, job, {
      succeeded: false,
      message: 'panic: CUDA driver version is insufficient',
    });
    await ctx.clock.advance(POLL_MS);
    await expect(ended).resolves.toBe('error');
    expect(ctx.recorded.map((run) => [run.check, run.verdict, run.reason])).toEqual([
      [
        'dcgm',
        'ERROR',
        'deep check: BackoffLimitExceeded: Job has reached the specified backoff limit',
      ],
    ]);
    expect(ctx.passed).toEqual([]);
    expect(ctx.dcgm).toEqual([]);
    expect(ctx.deepCheck.running()).toBe(false);
  });

  test('the Job succeeded without a report: ERROR run saying so', async () => {
    const ctx = setup();
    const job = await startRunning(ctx);
    const ended = ctx.deepCheck.settled();
    ctx.kube.finishJob(NAMESPACE, job, { succeeded: true });
    await ctx.clock.advance(POLL_MS);
    await expect(ended).resolves.toBe('error');
    expect(ctx.recorded.map((run) => run.reason)).toEqual(['deep check: the Job left no report']);
    expect(ctx.passed).toEqual([]);
  });

  test('readJob failing for a while is retried, and the end is still seen', async () => {
    const ctx = setup();
    const job = await startRunning(ctx);
    const ended = ctx.deepCheck.settled();
    ctx.kube.failNext('readJob', 503, 'the server is currently unable to handle the request');
    ctx.kube.failNext('readJob', undefined, 'connect ECONNREFUSED');
    await ctx.clock.advance(POLL_MS * 2);
    expect(ctx.deepCheck.running()).toBe(true);
    expect(ctx.recorded).toEqual([]);
    ctx.kube.finishJob(NAMESPACE, job, { succeeded: true, message: passingReport(ctx.t0) });
    await ctx.clock.advance(POLL_MS);
    await expect(ended).resolves.toBe('passed');
  });

  test('after it ends, a new deep check may start', async () => {
    const ctx = setup();
    const job = await startRunning(ctx);
    const ended = ctx.deepCheck.settled();
    await ctx.kube.api.deleteJob(NAMESPACE, job);
    await ctx.clock.advance(POLL_MS);
    await ended;
    await expect(ctx.deepCheck.start()).resolves.toMatchObject({ started: true });
  });
});

describe('deep check: resumed after the exporter restarts', () => {
  /** A deep-check Job as an exporter before the restart made it. */
  const leftJob = (name: string, nodeName = NODE): JobSpec => ({
    name,
    namespace: NAMESPACE,
    nodeName,
    image: SETTINGS.image ?? '',
    command: [...SETTINGS.command],
    gpus: 8,
    priorityClassName: undefined,
    ttlSecondsAfterFinished: 600,
    activeDeadlineSeconds: 1800,
    serviceAccountName: undefined,
    runtimeClassName: undefined,
    imagePullSecrets: [],
    toleratedTaintKeys: [],
    labels: { 'app.kubernetes.io/managed-by': 'autopilot', 'autopilot.ibm.com/check': 'deepcheck' },
    env: {},
  });

  test('the Job left running on this node is followed: no second Job, and its pass lifts EVICT', async () => {
    const ctx = setup();
    ctx.kube.addJob(leftJob(`${DEEP_CHECK_JOB_PREFIX}0ld001`), { createdAt: ctx.t0 - 60_000 });
    await ctx.deepCheck.resume();
    expect(ctx.kube.callsTo('listJobs')).toEqual([
      [NAMESPACE, 'app.kubernetes.io/managed-by=autopilot,autopilot.ibm.com/check=deepcheck'],
    ]);
    expect(ctx.deepCheck.running()).toBe(true);
    expect(ctx.changes()).toBe(1);
    await expect(ctx.deepCheck.start()).resolves.toEqual({
      started: false,
      detail: `already running (${DEEP_CHECK_JOB_PREFIX}0ld001)`,
    });
    expect(ctx.kube.callsTo('createJob')).toEqual([]);

    const ended = ctx.deepCheck.settled();
    ctx.kube.finishJob(NAMESPACE, `${DEEP_CHECK_JOB_PREFIX}0ld001`, {
      succeeded: true,
      message: passingReport(ctx.t0),
    });
    await ctx.clock.advance(POLL_MS);
    await expect(ended).resolves.toBe('passed');
    expect(ctx.recorded.map((run) => [run.check, run.verdict, run.startedAt])).toEqual([
      ['dcgm', 'PASS', ctx.t0 - 60_000],
      ['gpumem', 'PASS', ctx.t0 - 60_000],
    ]);
    expect(ctx.passed).toEqual([ctx.clock.now()]);
    expect(ctx.deepCheck.running()).toBe(false);
  });

  test('of two alive, the newest is followed', async () => {
    const ctx = setup();
    ctx.kube.addJob(leftJob(`${DEEP_CHECK_JOB_PREFIX}0ld001`), { createdAt: ctx.t0 - 90_000 });
    ctx.kube.addJob(leftJob(`${DEEP_CHECK_JOB_PREFIX}0ld002`), { createdAt: ctx.t0 - 30_000 });
    await ctx.deepCheck.resume();
    await expect(ctx.deepCheck.start()).resolves.toMatchObject({
      detail: `already running (${DEEP_CHECK_JOB_PREFIX}0ld002)`,
    });
  });

  test("another node's Job and a finished one are not followed; a new deep check starts", async () => {
    const ctx = setup();
    ctx.kube.addJob(leftJob(`${DEEP_CHECK_JOB_PREFIX}0the01`, 'gpu-node-2'));
    ctx.kube.addJob(leftJob(`${DEEP_CHECK_JOB_PREFIX}d0ne01`), { state: 'Succeeded' });
    await ctx.deepCheck.resume();
    expect(ctx.deepCheck.running()).toBe(false);
    expect(ctx.changes()).toBe(0);
    await expect(ctx.deepCheck.start()).resolves.toMatchObject({ started: true });
    expect(ctx.kube.callsTo('createJob')).toHaveLength(1);
  });

  test('resumed() resolves once the list has answered: running() then tells whether a Job holds the GPUs', async () => {
    const ctx = setup();
    ctx.kube.addJob(leftJob(`${DEEP_CHECK_JOB_PREFIX}0ld001`));
    const resumed = ctx.deepCheck.resume();
    await ctx.deepCheck.resumed();
    expect(ctx.deepCheck.running()).toBe(true);
    await resumed;
    await expect(ctx.deepCheck.resumed()).resolves.toBeUndefined();

    const none = setup();
    await expect(none.deepCheck.resumed()).resolves.toBeUndefined();
  });

  test('after a resume whose list failed, start follows the Job left running instead of making a second', async () => {
    const ctx = setup();
    ctx.kube.addJob(leftJob(`${DEEP_CHECK_JOB_PREFIX}0ld001`));
    ctx.kube.failNext('listJobs', 503, 'etcd timeout');
    await ctx.deepCheck.resume();
    expect(ctx.deepCheck.running()).toBe(false);
    await expect(ctx.deepCheck.start()).resolves.toEqual({
      started: false,
      detail: `already running (${DEEP_CHECK_JOB_PREFIX}0ld001)`,
    });
    expect(ctx.deepCheck.running()).toBe(true);
    expect(ctx.kube.callsTo('createJob')).toEqual([]);
  });

  test('a resume stopped before its list answers follows nothing', async () => {
    const ctx = setup();
    ctx.kube.addJob(leftJob(`${DEEP_CHECK_JOB_PREFIX}0ld001`));
    const resumed = ctx.deepCheck.resume();
    ctx.deepCheck.stop();
    await resumed;
    expect(ctx.deepCheck.running()).toBe(false);
    expect(ctx.changes()).toBe(0);
  });

  test('a list the API refuses leaves nothing followed, and start works after it', async () => {
    const ctx = setup();
    ctx.kube.failNext('listJobs', 403, 'jobs.batch is forbidden');
    await expect(ctx.deepCheck.resume()).resolves.toBeUndefined();
    expect(ctx.deepCheck.running()).toBe(false);
    await expect(ctx.deepCheck.start()).resolves.toMatchObject({ started: true });
  });
});

describe('scheduleDeepChecks', () => {
  const HOUR = 3_600_000;

  function scheduled(schedule: Schedule) {
    const clock = new FakeClock();
    const starts: number[] = [];
    const deepCheck: DeepCheck = {
      start: () => {
        starts.push(clock.now());
        return Promise.resolve({ started: true, detail: `${DEEP_CHECK_JOB_PREFIX}abc` });
      },
      running: () => false,
      resumed: () => Promise.resolve(),
      settled: () => Promise.resolve(undefined),
      resume: () => Promise.resolve(),
      stop: () => undefined,
    };
    const stop = scheduleDeepChecks({
      schedule,
      deepCheck,
      clock,
      nodeName: NODE,
      logger: silentLogger,
    });
    return { clock, starts, stop, t0: clock.now() };
  }

  test('not at start-up; first after one period plus at most 10 % jitter, then every period', async () => {
    const { clock, starts, t0 } = scheduled({ kind: 'interval', everyMs: HOUR });
    await flushPromises();
    expect(starts).toEqual([]);
    const [first] = clock.pending();
    expect(first).toBeGreaterThanOrEqual(t0 + HOUR);
    expect(first).toBeLessThan(t0 + HOUR * 1.1);

    await clock.advance(first! - t0 - 1);
    expect(starts).toEqual([]);
    await clock.advance(1);
    expect(starts).toEqual([first]);
    await clock.advance(HOUR);
    expect(starts).toEqual([first, first! + HOUR]);
  });

  test('a disabled schedule never starts a deep check', async () => {
    const { clock, starts } = scheduled({ kind: 'disabled' });
    expect(clock.pending()).toEqual([]);
    await clock.advance(HOUR * 48);
    expect(starts).toEqual([]);
  });

  test('stop() cancels the next start', async () => {
    const { clock, starts, stop } = scheduled({ kind: 'interval', everyMs: HOUR });
    await clock.advance(HOUR * 1.1);
    expect(starts).toHaveLength(1);
    stop();
    expect(clock.pending()).toEqual([]);
    await clock.advance(HOUR * 5);
    expect(starts).toHaveLength(1);
  });

  test('a start that rejects does not stop the schedule', async () => {
    const clock = new FakeClock();
    let attempts = 0;
    scheduleDeepChecks({
      schedule: { kind: 'interval', everyMs: HOUR },
      deepCheck: {
        start: () => {
          attempts += 1;
          return Promise.reject(new Error('getNode: 500 etcd timeout'));
        },
        running: () => false,
        resumed: () => Promise.resolve(),
        settled: () => Promise.resolve(undefined),
        resume: () => Promise.resolve(),
        stop: () => undefined,
      },
      clock,
      nodeName: NODE,
      logger: silentLogger,
    });
    await clock.advance(HOUR * 3.1);
    expect(attempts).toBe(3);
  });
});

describe('deep check: one at a time', () => {
  test('two starts at the same moment (the timer and /invasive) create one Job', async () => {
    const ctx = setup();
    const [first, second] = await Promise.all([ctx.deepCheck.start(), ctx.deepCheck.start()]);
    expect([first.started, second.started].sort()).toEqual([false, true]);
    expect([first.detail, second.detail]).toContain('already starting');
    expect(ctx.kube.jobs.size).toBe(1);
  });
});

describe('runFromReport', () => {
  type ReportDevice = readonly [id: string, verdict: Verdict, reason: string, fatal: boolean];

  /** [id, compatibility value] of each device of the run rebuilt from a report entry. */
  function compatValues(
    check: string,
    verdict: Verdict,
    reason: string,
    devices: readonly ReportDevice[],
  ): unknown[] {
    const entry = {
      check,
      verdict,
      reason,
      devices: devices.map(([id, v, why, fatal]) => ({ id, verdict: v, reason: why, fatal })),
    };
    return runFromReport(entry, 0, 1).devices.map((d) => [d.id, d.compatValue]);
  }

  test('the compatibility value is rebuilt: dcgm on its node device, others per GPU, none for ERROR', () => {
    const dcgm = compatValues('dcgm', 'FAIL', '1 FAIL', [
      ['', 'FAIL', 'pcie.2', false],
      ['2', 'FAIL', 'pcie', true],
    ]);
    expect(dcgm).toEqual([
      ['', 1],
      ['2', undefined],
    ]);
    const gpumem = compatValues('gpumem', 'ERROR', 'x', [
      ['0', 'PASS', '', false],
      ['1', 'ERROR', '', false],
    ]);
    expect(gpumem).toEqual([
      ['0', 0],
      ['1', undefined],
    ]);
  });
});
