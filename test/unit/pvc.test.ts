import { describe, test, expect } from '@jest/globals';
import { LEFTOVER_WAIT_MS, PVC_LABELS, createPvcCheck } from '../../exporter/checks/pvc.js';
import type { PvcCheckDeps, PvcSettings } from '../../exporter/checks/pvc.js';
import { summariseOutcome } from '../../exporter/checks/check.js';
import type { CheckOutcome, CheckRun } from '../../exporter/checks/check.js';
import { KubeError } from '../../exporter/k8s/ports.js';
import type { KubeApi, PvcInfo, PvcSpec, StorageClassInfo } from '../../exporter/k8s/ports.js';
import { silentLogger } from '../../exporter/log.js';
import { evaluateNodeHealth, INITIAL_NODE_HEALTH } from '../../exporter/node-health.js';
import { mergeConclusive } from '../../exporter/store.js';

const SETTINGS: PvcSettings = {
  storageClass: 'fast',
  accessMode: 'ReadWriteOnce',
  size: '100Mi',
  bindTimeoutMs: 90_000,
  namespace: 'autopilot',
  claimName: 'autopilot-pvc-node-a',
};
const CLAIM = 'autopilot/autopilot-pvc-node-a';
const POLL_MS = 2_000;

const IMMEDIATE: StorageClassInfo = {
  name: 'fast',
  volumeBindingMode: 'Immediate',
  provisioner: 'csi.example.com',
};
const FIRST_CONSUMER: StorageClassInfo = {
  ...IMMEDIATE,
  volumeBindingMode: 'WaitForFirstConsumer',
};

interface FakeClaim {
  phase: string;
  deleting: boolean;
  /** Reads left before the claim moves to `next` (Bound or Lost), or goes away when deleting. */
  readsLeft: number;
  next: string | undefined;
}

interface FakeOptions {
  readonly storageClass?: StorageClassInfo;
  /** The created claim turns Bound on this read of it; undefined: it stays Pending. */
  readonly boundOnRead?: number;
  readonly lostOnRead?: number;
  /** A claim of the test's name exists before the run. */
  readonly leftover?: boolean;
  /** Reads during which a deleted claim still shows, deleting; Infinity: a finalizer holds it. */
  readonly deletionReads?: number;
  readonly createError?: KubeError;
  /** The claim comes to exist although the create call failed (an answer lost on the way). */
  readonly createErrorAfterCreating?: boolean;
  readonly deleteErrorOnCall?: { readonly call: number; readonly error: KubeError };
  readonly readErrorOnRead?: { readonly read: number; readonly error: KubeError };
  /** Runs while createPvc is in flight. */
  readonly duringCreate?: () => void;
}

/** An in-memory PVC API with the single claim the check manages; the rest of KubeApi is unused. */
function fakeKube(options: FakeOptions = {}) {
  const calls: string[] = [];
  const created: PvcSpec[] = [];
  let claim: FakeClaim | undefined = options.leftover
    ? { phase: 'Bound', deleting: false, readsLeft: 0, next: undefined }
    : undefined;
  let reads = 0;
  let deletes = 0;
  const notUsed = (): never => {
    throw new Error('not used');
  };
  const api: KubeApi = {
    getNode: notUsed,
    patchNodeMetadata: notUsed,
    listNodes: notUsed,
    listPods: notUsed,
    listEndpointSlices: notUsed,
    watchEndpointSlices: notUsed,
    reviewToken: notUsed,
    reviewAccess: notUsed,
    listPodsOnNode: notUsed,
    listJobPods: notUsed,
    listJobs: notUsed,
    createJob: notUsed,
    readJob: notUsed,
    deleteJob: notUsed,
    patchNodeTaints: notUsed,
    readLease: notUsed,
    createLease: notUsed,
    replaceLease: notUsed,
    watchNode: notUsed,
    patchNodeStatus: notUsed,
    createEvent: notUsed,
    patchEvent: notUsed,
    readStorageClass(name) {
      calls.push(`readStorageClass ${name}`);
      return Promise.resolve(
        name === options.storageClass?.name ? options.storageClass : undefined,
      );
    },
    createPvc(spec) {
      calls.push('createPvc');
      options.duringCreate?.();
      if (options.createError !== undefined) {
        if (options.createErrorAfterCreating) created.push(spec);
        if (options.createErrorAfterCreating)
          claim = { phase: 'Pending', deleting: false, readsLeft: Infinity, next: undefined };
        return Promise.reject(options.createError);
      }
      if (claim !== undefined) {
        return Promise.reject(new KubeError('create PersistentVolumeClaim', 409, 'already exists'));
      }
      created.push(spec);
      const turn = options.boundOnRead ?? options.lostOnRead;
      claim = {
        phase: 'Pending',
        deleting: false,
        readsLeft: turn === undefined ? Infinity : turn - 1,
        next: options.boundOnRead !== undefined ? 'Bound' : 'Lost',
      };
      return Promise.resolve();
    },
    readPvc(namespace, name) {
      calls.push('readPvc');
      reads += 1;
      if (options.readErrorOnRead?.read === reads)
        return Promise.reject(options.readErrorOnRead.error);
      expect(`${namespace}/${name}`).toBe(CLAIM);
      if (claim === undefined) return Promise.resolve(undefined);
      if (claim.readsLeft <= 0) {
        if (claim.deleting) {
          claim = undefined;
          return Promise.resolve(undefined);
        }
        if (claim.next !== undefined) claim.phase = claim.next;
      }
      claim.readsLeft -= 1;
      const info: PvcInfo = { name, phase: claim.phase, deleting: claim.deleting };
      return Promise.resolve(info);
    },
    deletePvc(namespace, name) {
      calls.push('deletePvc');
      deletes += 1;
      expect(`${namespace}/${name}`).toBe(CLAIM);
      if (options.deleteErrorOnCall?.call === deletes) {
        return Promise.reject(options.deleteErrorOnCall.error);
      }
      if (claim !== undefined && !claim.deleting) {
        const deletionReads = options.deletionReads ?? 0;
        claim =
          deletionReads === 0 ? undefined : { ...claim, deleting: true, readsLeft: deletionReads };
      }
      return Promise.resolve();
    },
  };
  return {
    api,
    calls,
    created,
    /** The claim as the API server now has it; undefined once it is gone. */
    claim: () => claim,
  };
}

/** A clock that only moves when the check sleeps, so the suite never waits for real. */
function fakeTime(onSleep: (sleeps: number) => void = () => undefined) {
  let now = 0;
  let sleeps = 0;
  return {
    now: () => now,
    sleeps: () => sleeps,
    sleep: (ms: number, signal: AbortSignal): Promise<void> => {
      sleeps += 1;
      onSleep(sleeps);
      if (signal.aborted) return Promise.reject(signal.reason as Error);
      now += ms;
      return Promise.resolve();
    },
  };
}

function makeCheck(
  kube: KubeApi | undefined,
  time = fakeTime(),
  settings: Partial<PvcSettings> = {},
): ReturnType<typeof createPvcCheck> {
  const deps: PvcCheckDeps = {
    kube,
    settings: { ...SETTINGS, ...settings },
    sleep: time.sleep,
    now: time.now,
    pollIntervalMs: POLL_MS,
  };
  return createPvcCheck(deps);
}

function runCheck(
  check: ReturnType<typeof createPvcCheck>,
  signal: AbortSignal = new AbortController().signal,
): Promise<CheckOutcome> {
  return check.run({ signal, logger: silentLogger, params: {} });
}

function toRun(outcome: CheckOutcome): CheckRun {
  return {
    check: 'pvc',
    trigger: 'api',
    params: {},
    startedAt: 1_000,
    finishedAt: 2_000,
    ...summariseOutcome(outcome),
    devices: outcome.devices,
    samples: outcome.samples ?? [],
  };
}

describe('pvc check definition', () => {
  const check = makeCheck(fakeKube().api);

  test('presents itself as Autopilot did', () => {
    expect(check).toMatchObject({
      name: 'pvc',
      banner: 'PVC create-delete test',
      compatHealth: 'pvc',
      deviceKind: 'node',
      usesGpu: false,
      exclusive: false,
    });
  });

  test('its deadline covers the bind wait, a leftover to remove and the API calls', () => {
    expect(check.timeoutMs).toBeGreaterThan(SETTINGS.bindTimeoutMs + LEFTOVER_WAIT_MS);
  });

  test('takes no parameters and ignores unknown ones', () => {
    expect(check.parseParams({ host: 'node-b', anything: 'x' })).toEqual({});
  });
});

describe('pvc check: when it does not apply', () => {
  test('standalone mode (no Kubernetes) is SKIP', async () => {
    const outcome = await runCheck(makeCheck(undefined));
    expect(outcome).toEqual({
      devices: [],
      verdict: 'SKIP',
      reason: 'not connected to Kubernetes (standalone mode)',
    });
  });

  test.each([undefined, ''])('no storage class (%j) is SKIP and touches nothing', async (value) => {
    const kube = fakeKube({ storageClass: IMMEDIATE });
    const outcome = await runCheck(makeCheck(kube.api, fakeTime(), { storageClass: value }));
    expect(outcome).toEqual({
      devices: [],
      verdict: 'SKIP',
      reason: 'no storage class configured (set PVC_TEST_STORAGE_CLASS)',
    });
    expect(kube.calls).toEqual([]);
  });
});

describe('pvc check: binding', () => {
  test('a claim that binds after a few polls is PASS with the time it took, and is deleted', async () => {
    const kube = fakeKube({ storageClass: IMMEDIATE, boundOnRead: 3 });
    const time = fakeTime();
    const outcome = await runCheck(makeCheck(kube.api, time));
    expect(outcome).toEqual({
      devices: [
        {
          id: '',
          verdict: 'PASS',
          reason: `claim ${CLAIM} bound in 4 s in class fast`,
          evidence: {
            storageClass: 'fast',
            provisioner: 'csi.example.com',
            bindingMode: 'Immediate',
            boundSeconds: 4,
          },
          compatValue: 0,
        },
      ],
      reason: `claim ${CLAIM} bound in 4 s in class fast`,
    });
    expect(kube.created).toEqual([
      {
        name: 'autopilot-pvc-node-a',
        namespace: 'autopilot',
        storageClass: 'fast',
        accessMode: 'ReadWriteOnce',
        size: '100Mi',
        labels: PVC_LABELS,
      },
    ]);
    expect(PVC_LABELS).toEqual({
      'app.kubernetes.io/managed-by': 'autopilot',
      'autopilot.ibm.com/check': 'pvc',
    });
    expect(kube.calls).toEqual([
      'readStorageClass fast',
      'readPvc',
      'createPvc',
      'readPvc',
      'readPvc',
      'readPvc',
      'deletePvc',
    ]);
    expect(kube.claim()).toBeUndefined();
  });

  test('a claim still Pending at the bind timeout is FAIL (gauge 1), and is deleted', async () => {
    const kube = fakeKube({ storageClass: IMMEDIATE });
    const time = fakeTime();
    const outcome = await runCheck(makeCheck(kube.api, time));
    const reason = `claim ${CLAIM} still Pending after 90 s in class fast`;
    expect(outcome).toEqual({
      devices: [
        {
          id: '',
          verdict: 'FAIL',
          reason,
          evidence: {
            storageClass: 'fast',
            provisioner: 'csi.example.com',
            bindingMode: 'Immediate',
            boundSeconds: null,
          },
          compatValue: 1,
        },
      ],
      reason,
    });
    // Polled every 2 s for 90 s, no more.
    expect(time.now()).toBe(90_000);
    expect(time.sleeps()).toBe(45);
    expect(kube.calls.at(-1)).toBe('deletePvc');
    expect(kube.claim()).toBeUndefined();
  });

  test('the bind timeout counts time spent in API calls, not only sleeps', async () => {
    const kube = fakeKube({ storageClass: IMMEDIATE });
    const time = fakeTime();
    let clockSkew = 0;
    const api: KubeApi = {
      ...kube.api,
      readPvc: (namespace, name) => {
        clockSkew += 8_000;
        return kube.api.readPvc(namespace, name);
      },
    };
    const check = createPvcCheck({
      kube: api,
      settings: SETTINGS,
      sleep: time.sleep,
      now: () => time.now() + clockSkew,
      pollIntervalMs: POLL_MS,
    });
    const outcome = await runCheck(check);
    expect(summariseOutcome(outcome).verdict).toBe('FAIL');
    // Each poll costs 8 s of API time plus 2 s of sleep: ten polls, not forty-five.
    expect(time.sleeps()).toBeLessThanOrEqual(10);
    expect(kube.claim()).toBeUndefined();
  });

  test('a Lost claim is FAIL, and is deleted', async () => {
    const kube = fakeKube({ storageClass: IMMEDIATE, lostOnRead: 2 });
    const outcome = await runCheck(makeCheck(kube.api));
    expect(outcome.devices).toEqual([
      expect.objectContaining({
        id: '',
        verdict: 'FAIL',
        reason: `claim ${CLAIM} is Lost (its volume is gone) in class fast`,
        compatValue: 1,
      }),
    ]);
    expect(kube.claim()).toBeUndefined();
  });

  test('a WaitForFirstConsumer class is PASS without binding, and the claim is deleted', async () => {
    const kube = fakeKube({ storageClass: FIRST_CONSUMER });
    const time = fakeTime();
    const outcome = await runCheck(makeCheck(kube.api, time));
    const reason = `claim ${CLAIM} accepted and Pending; binding not exercised: class fast binds on first consumer (WaitForFirstConsumer)`;
    expect(outcome).toEqual({
      devices: [
        {
          id: '',
          verdict: 'PASS',
          reason,
          evidence: {
            storageClass: 'fast',
            provisioner: 'csi.example.com',
            bindingMode: 'WaitForFirstConsumer',
            boundSeconds: null,
          },
          compatValue: 0,
        },
      ],
      reason,
    });
    // No false alarm and no wait for a bind that cannot come.
    expect(time.sleeps()).toBe(0);
    expect(kube.created).toHaveLength(1);
    expect(kube.claim()).toBeUndefined();
  });

  test('a WaitForFirstConsumer claim that is Lost is still FAIL', async () => {
    const kube = fakeKube({ storageClass: FIRST_CONSUMER, lostOnRead: 1 });
    const outcome = await runCheck(makeCheck(kube.api));
    expect(summariseOutcome(outcome).verdict).toBe('FAIL');
    expect(kube.claim()).toBeUndefined();
  });

  test('a claim deleted by someone else while watched is ERROR, not a finding', async () => {
    const kube = fakeKube({ storageClass: IMMEDIATE });
    let reads = 0;
    const api: KubeApi = {
      ...kube.api,
      readPvc: (namespace, name) =>
        ++reads === 3 ? Promise.resolve(undefined) : kube.api.readPvc(namespace, name),
    };
    const outcome = await runCheck(makeCheck(api));
    expect(outcome).toEqual({
      devices: [],
      verdict: 'ERROR',
      reason: `claim ${CLAIM} disappeared while it was being watched (deleted by someone else?)`,
    });
    expect(kube.calls.at(-1)).toBe('deletePvc');
  });
});

describe('pvc check: the class and leftovers', () => {
  test('a StorageClass that does not exist is FAIL naming it, and nothing is created', async () => {
    const kube = fakeKube({ storageClass: { ...IMMEDIATE, name: 'other' } });
    const outcome = await runCheck(makeCheck(kube.api));
    expect(outcome).toEqual({
      devices: [
        {
          id: '',
          verdict: 'FAIL',
          reason: 'StorageClass fast does not exist',
          evidence: { storageClass: 'fast' },
          compatValue: 1,
        },
      ],
      reason: 'StorageClass fast does not exist',
    });
    expect(kube.calls).toEqual(['readStorageClass fast']);
  });

  test('a claim left over from a crash is deleted and awaited before the new one is created', async () => {
    const kube = fakeKube({
      storageClass: IMMEDIATE,
      leftover: true,
      deletionReads: 2,
      boundOnRead: 1,
    });
    const outcome = await runCheck(makeCheck(kube.api));
    expect(summariseOutcome(outcome).verdict).toBe('PASS');
    expect(kube.calls).toEqual([
      'readStorageClass fast',
      'readPvc',
      'deletePvc',
      'readPvc',
      'readPvc',
      'readPvc',
      'createPvc',
      'readPvc',
      'deletePvc',
    ]);
    expect(kube.claim()).toMatchObject({ deleting: true });
  });

  test('a leftover that never goes away is ERROR naming it, bounded in time, nothing created', async () => {
    const kube = fakeKube({ storageClass: IMMEDIATE, leftover: true, deletionReads: Infinity });
    const time = fakeTime();
    const outcome = await runCheck(makeCheck(kube.api, time));
    expect(outcome).toEqual({
      devices: [],
      verdict: 'ERROR',
      reason: `claim ${CLAIM}, left over from an earlier run, still exists 30 s after it was deleted (a finalizer may hold it)`,
    });
    expect(time.now()).toBe(LEFTOVER_WAIT_MS);
    expect(kube.calls).not.toContain('createPvc');
  });
});

describe('pvc check: API errors are ERROR and the claim is still cleaned up', () => {
  test('403 on create is ERROR with the API message, and nothing is left to delete', async () => {
    const forbidden = new KubeError(
      'create PersistentVolumeClaim autopilot/autopilot-pvc-node-a',
      403,
      'forbidden',
    );
    const kube = fakeKube({ storageClass: IMMEDIATE, createError: forbidden });
    const outcome = await runCheck(makeCheck(kube.api));
    expect(outcome).toEqual({ devices: [], verdict: 'ERROR', reason: forbidden.message });
    expect(kube.calls).not.toContain('deletePvc');
  });

  test('409 on create after the leftover check is ERROR naming the conflict; the other claim stays', async () => {
    const conflict = new KubeError('create PersistentVolumeClaim', 409, 'already exists');
    const kube = fakeKube({ storageClass: IMMEDIATE, createError: conflict });
    const outcome = await runCheck(makeCheck(kube.api));
    expect(summariseOutcome(outcome)).toEqual({
      verdict: 'ERROR',
      reason: expect.stringMatching(new RegExp(`^conflict: claim ${CLAIM} appeared .*409`)),
    });
    expect(kube.calls).not.toContain('deletePvc');
  });

  test('a create that got no answer may have created the claim, so it is deleted', async () => {
    const noAnswer = new KubeError('create PersistentVolumeClaim', undefined, 'request timed out');
    const kube = fakeKube({
      storageClass: IMMEDIATE,
      createError: noAnswer,
      createErrorAfterCreating: true,
    });
    const outcome = await runCheck(makeCheck(kube.api));
    expect(outcome).toEqual({ devices: [], verdict: 'ERROR', reason: noAnswer.message });
    expect(kube.calls.at(-1)).toBe('deletePvc');
    expect(kube.claim()).toBeUndefined();
  });

  test('500 while polling is ERROR, and the claim is deleted', async () => {
    const serverError = new KubeError('read PersistentVolumeClaim', 500, 'etcdserver: timeout');
    const kube = fakeKube({
      storageClass: IMMEDIATE,
      readErrorOnRead: { read: 3, error: serverError },
    });
    const outcome = await runCheck(makeCheck(kube.api));
    expect(outcome).toEqual({ devices: [], verdict: 'ERROR', reason: serverError.message });
    expect(kube.claim()).toBeUndefined();
  });

  test('500 on the final delete turns PASS into ERROR naming the leftover claim', async () => {
    const serverError = new KubeError('delete PersistentVolumeClaim', 500, 'internal error');
    const kube = fakeKube({
      storageClass: IMMEDIATE,
      boundOnRead: 1,
      deleteErrorOnCall: { call: 1, error: serverError },
    });
    const outcome = await runCheck(makeCheck(kube.api));
    expect(outcome).toEqual({
      devices: [],
      verdict: 'ERROR',
      reason: `claim ${CLAIM} bound in 0 s in class fast; could not delete claim ${CLAIM}, delete it by hand: ${serverError.message}`,
    });
    expect(kube.claim()).toEqual(expect.objectContaining({ phase: 'Bound' }));
  });

  test('500 on the final delete keeps a FAIL a FAIL and names the leftover claim', async () => {
    const serverError = new KubeError('delete PersistentVolumeClaim', 500, 'internal error');
    const kube = fakeKube({
      storageClass: IMMEDIATE,
      lostOnRead: 1,
      deleteErrorOnCall: { call: 1, error: serverError },
    });
    const outcome = await runCheck(makeCheck(kube.api));
    const reason = `claim ${CLAIM} is Lost (its volume is gone) in class fast; could not delete claim ${CLAIM}, delete it by hand: ${serverError.message}`;
    expect(summariseOutcome(outcome)).toEqual({ verdict: 'FAIL', reason });
    expect(outcome.devices).toEqual([expect.objectContaining({ reason, compatValue: 1 })]);
  });
});

describe('pvc check: abort', () => {
  test('an abort mid-wait stops polling at once and still deletes the claim', async () => {
    const controller = new AbortController();
    const kube = fakeKube({ storageClass: IMMEDIATE });
    const time = fakeTime((sleeps) => {
      if (sleeps === 3) controller.abort(new Error('timed out after 150s'));
    });
    const outcome = await runCheck(makeCheck(kube.api, time), controller.signal);
    expect(outcome).toEqual({
      devices: [],
      verdict: 'ERROR',
      reason: 'stopped: timed out after 150s',
    });
    expect(kube.calls.filter((c) => c === 'readPvc')).toHaveLength(1 + 3);
    expect(kube.calls.at(-1)).toBe('deletePvc');
    expect(kube.claim()).toBeUndefined();
  });

  test('an abort while the create call is in flight still deletes the claim', async () => {
    const controller = new AbortController();
    const kube = fakeKube({
      storageClass: IMMEDIATE,
      duringCreate: () => controller.abort(new Error('shutting down')),
    });
    const outcome = await runCheck(makeCheck(kube.api), controller.signal);
    expect(summariseOutcome(outcome)).toEqual({
      verdict: 'ERROR',
      reason: 'stopped: shutting down',
    });
    expect(kube.calls.slice(-2)).toEqual(['createPvc', 'deletePvc']);
    expect(kube.claim()).toBeUndefined();
  });

  test('an abort that is not an Error still ends in ERROR with the claim deleted', async () => {
    const controller = new AbortController();
    const kube = fakeKube({ storageClass: IMMEDIATE });
    const time = fakeTime(() => controller.abort());
    const outcome = await runCheck(makeCheck(kube.api, time), controller.signal);
    expect(summariseOutcome(outcome).verdict).toBe('ERROR');
    expect(kube.claim()).toBeUndefined();
  });
});

describe('pvc check: how the store and the node verdict read it', () => {
  test('a FAIL marks the node WARN with the reason, and a later ERROR does not clear it', async () => {
    const failed = toRun(await runCheck(makeCheck(fakeKube({ storageClass: IMMEDIATE }).api)));
    const errored = toRun({ devices: [], verdict: 'ERROR', reason: 'forbidden' });
    const conclusive = mergeConclusive(mergeConclusive(undefined, failed), errored);
    expect(conclusive).toEqual(failed);
    const health = evaluateNodeHealth(INITIAL_NODE_HEALTH, {
      conclusiveRuns: [failed],
      acknowledgedAt: undefined,
      now: 5_000,
    });
    expect(health.state).toBe('WARN');
    expect(health.reasons).toEqual([`pvc: claim ${CLAIM} still Pending after 90 s in class fast`]);
  });
});

describe('pvc check: text', () => {
  const check = makeCheck(undefined);

  test('PASS carries Autopilot success line, then the reason', () => {
    const run = toRun({
      devices: [{ id: '', verdict: 'PASS', reason: 'bound in 4 s', evidence: {}, compatValue: 0 }],
      reason: 'bound in 4 s',
    });
    expect(check.formatText(run, 'node-a')).toBe(
      '[PVC Create-Delete] PVC SUCCESS\n[PVC Create-Delete] bound in 4 s\n',
    );
  });

  test('FAIL carries Autopilot failure line, then the reason', () => {
    const run = toRun({
      devices: [{ id: '', verdict: 'FAIL', reason: 'still Pending', evidence: {}, compatValue: 1 }],
      reason: 'still Pending',
    });
    expect(check.formatText(run, 'node-a')).toBe(
      '[PVC Create-Delete] FAIL\n[PVC Create-Delete] still Pending\n',
    );
  });

  test.each(['SKIP', 'ERROR'] as const)('%s is an ABORT with the reason', (verdict) => {
    const run = toRun({ devices: [], verdict, reason: 'not connected' });
    expect(check.formatText(run, 'node-a')).toBe(
      `[PVC Create-Delete] ${verdict}: not connected. ABORT\n`,
    );
  });
});
