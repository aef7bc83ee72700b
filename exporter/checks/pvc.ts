/**
 * pvc: can this cluster provision storage? Creates a PersistentVolumeClaim in the configured
 * StorageClass, waits for it to bind, and deletes it again, whatever happened in between.
 *
 * Differences from Autopilot: no configured class is SKIP, not an attempt with class "" that always
 * fails; a missing class is named; a WaitForFirstConsumer class, which never binds without a pod,
 * is exercised as far as it can be (the API accepts the claim) instead of failing every time; the
 * claim is polled instead of read after fixed waits; and an API error is ERROR, not a finding about
 * the storage.
 */

import type { KubeApi, PvcInfo, StorageClassInfo } from '../k8s/ports.js';
import { KubeError } from '../k8s/ports.js';
import type { Logger } from '../log.js';
import type { Check, CheckOutcome, CheckRun, DeviceResult, Evidence } from './check.js';
import type { CheckModule } from './module.js';
import { sleep } from '../clock.js';

export interface PvcSettings {
  /** undefined when none is configured: the check does not apply. */
  readonly storageClass: string | undefined;
  readonly accessMode: string;
  /** A Kubernetes quantity such as 100Mi. */
  readonly size: string;
  /** How long a claim may stay Pending before the check fails. */
  readonly bindTimeoutMs: number;
  readonly namespace: string;
  readonly claimName: string;
}

export interface PvcCheckDeps {
  /** undefined in standalone mode (no Kubernetes). */
  readonly kube: KubeApi | undefined;
  readonly settings: PvcSettings;
  /** Resolves after `ms`; rejects as soon as `signal` aborts. */
  readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Milliseconds since the epoch; the bind timeout is measured on it, API latency included. */
  readonly now: () => number;
  readonly pollIntervalMs?: number;
}

export const PVC_SUMMARY =
  'PersistentVolumeClaim create-bind-delete in the configured StorageClass (PVC_TEST_STORAGE_CLASS)';

const TEXT_PREFIX = '[PVC Create-Delete]';
const DEFAULT_POLL_INTERVAL_MS = 2_000;
/** How long a claim left over from an earlier run may take to go away (Autopilot waited 30 s). */
export const LEFTOVER_WAIT_MS = 30_000;
/** Time for the API calls around the bind wait: reading the class, creating, deleting. */
const API_MARGIN_MS = 30_000;

export const PVC_LABELS: Readonly<Record<string, string>> = {
  'app.kubernetes.io/managed-by': 'autopilot',
  'autopilot.ibm.com/check': 'pvc',
};

/** The run was stopped (deadline or shutdown) while the check was waiting or between calls. */
class Stopped extends Error {
  constructor(signal: AbortSignal) {
    super(
      `stopped: ${signal.reason instanceof Error ? signal.reason.message : 'the run was aborted'}`,
    );
    this.name = 'Stopped';
  }
}

function throwIfStopped(signal: AbortSignal): void {
  if (signal.aborted) throw new Stopped(signal);
}

export function createPvcCheck(deps: PvcCheckDeps): Check {
  const { settings } = deps;
  const pollIntervalMs = deps.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
  const claim = `${settings.namespace}/${settings.claimName}`;

  /** Polls the claim until `done` says yes or `deadline` passes; returns the last answer. */
  async function pollClaim(
    kube: KubeApi,
    signal: AbortSignal,
    deadline: number,
    done: (pvc: PvcInfo | undefined) => boolean,
  ): Promise<{ readonly pvc: PvcInfo | undefined; readonly done: boolean }> {
    for (;;) {
      throwIfStopped(signal);
      const pvc = await kube.readPvc(settings.namespace, settings.claimName);
      throwIfStopped(signal);
      if (done(pvc)) return { pvc, done: true };
      const left = deadline - deps.now();
      if (left <= 0) return { pvc, done: false };
      await deps.sleep(Math.min(pollIntervalMs, left), signal);
    }
  }

  /** undefined once no claim of that name is left; an ERROR outcome when one stays. */
  async function removeLeftover(
    kube: KubeApi,
    signal: AbortSignal,
    logger: Logger,
  ): Promise<CheckOutcome | undefined> {
    const existing = await kube.readPvc(settings.namespace, settings.claimName);
    if (existing === undefined) return undefined;
    logger.warn('deleting a test claim left over from an earlier run', { claim });
    await kube.deletePvc(settings.namespace, settings.claimName);
    const gone = await pollClaim(kube, signal, deps.now() + LEFTOVER_WAIT_MS, (pvc) => !pvc);
    if (gone.done) return undefined;
    return errorOutcome(
      `claim ${claim}, left over from an earlier run, still exists ${seconds(LEFTOVER_WAIT_MS)} after it was deleted (a finalizer may hold it)`,
    );
  }

  /** From the class to a verdict; `created` is called just before the claim may come to exist. */
  async function exercise(
    kube: KubeApi,
    className: string,
    signal: AbortSignal,
    logger: Logger,
    created: (mayExist: boolean) => void,
  ): Promise<CheckOutcome> {
    const storageClass = await kube.readStorageClass(className);
    throwIfStopped(signal);
    if (storageClass === undefined) {
      return nodeOutcome({
        id: '',
        verdict: 'FAIL',
        reason: `StorageClass ${className} does not exist`,
        evidence: { storageClass: className },
        compatValue: 1,
      });
    }
    const leftover = await removeLeftover(kube, signal, logger);
    if (leftover !== undefined) return leftover;
    throwIfStopped(signal);

    created(true);
    try {
      await kube.createPvc({
        name: settings.claimName,
        namespace: settings.namespace,
        storageClass: className,
        accessMode: settings.accessMode,
        size: settings.size,
        labels: PVC_LABELS,
      });
    } catch (error) {
      // An HTTP answer says the claim was not created; no answer (refused, timed out) may hide one
      // that was, so cleanup still tries to delete it.
      if (error instanceof KubeError && error.status !== undefined) created(false);
      if (error instanceof KubeError && error.status === 409) {
        return errorOutcome(
          `conflict: claim ${claim} appeared between the leftover check and its creation; another process may use this name (${error.message})`,
        );
      }
      throw error;
    }
    const createdAt = deps.now();
    logger.debug('test claim created', { claim, storageClass: className });

    const evidence = (boundSeconds: number | null): Evidence => ({
      storageClass: className,
      provisioner: storageClass.provisioner,
      bindingMode: storageClass.volumeBindingMode,
      boundSeconds,
    });

    if (storageClass.volumeBindingMode === 'WaitForFirstConsumer') {
      // A claim in such a class binds only once a pod uses it; this check runs none.
      const pvc = await kube.readPvc(settings.namespace, settings.claimName);
      throwIfStopped(signal);
      return judgeFirstConsumer(pvc, storageClass, evidence(null));
    }

    const deadline = createdAt + settings.bindTimeoutMs;
    const { pvc } = await pollClaim(kube, signal, deadline, (p) => !isPending(p));
    if (pvc === undefined || pvc.deleting) return vanished();
    if (pvc.phase === 'Bound') {
      const boundSeconds = round((deps.now() - createdAt) / 1000);
      return nodeOutcome({
        id: '',
        verdict: 'PASS',
        reason: `claim ${claim} bound in ${boundSeconds} s in class ${className}`,
        evidence: evidence(boundSeconds),
        compatValue: 0,
      });
    }
    if (pvc.phase === 'Lost') return lost(className, evidence(null));
    return nodeOutcome({
      id: '',
      verdict: 'FAIL',
      reason: `claim ${claim} still ${pvc.phase || 'Pending'} after ${seconds(settings.bindTimeoutMs)} in class ${className}`,
      evidence: evidence(null),
      compatValue: 1,
    });
  }

  function judgeFirstConsumer(
    pvc: PvcInfo | undefined,
    storageClass: StorageClassInfo,
    evidence: Evidence,
  ): CheckOutcome {
    if (pvc === undefined || pvc.deleting) return vanished();
    if (pvc.phase === 'Lost') return lost(storageClass.name, evidence);
    return nodeOutcome({
      id: '',
      verdict: 'PASS',
      reason: `claim ${claim} accepted and ${pvc.phase || 'Pending'}; binding not exercised: class ${storageClass.name} binds on first consumer (WaitForFirstConsumer)`,
      evidence,
      compatValue: 0,
    });
  }

  function lost(className: string, evidence: Evidence): CheckOutcome {
    return nodeOutcome({
      id: '',
      verdict: 'FAIL',
      reason: `claim ${claim} is Lost (its volume is gone) in class ${className}`,
      evidence,
      compatValue: 1,
    });
  }

  function vanished(): CheckOutcome {
    return errorOutcome(
      `claim ${claim} disappeared while it was being watched (deleted by someone else?)`,
    );
  }

  /** Best effort, and never through the run's signal, which may have fired already. */
  async function deleteClaim(kube: KubeApi, logger: Logger): Promise<string | undefined> {
    try {
      await kube.deletePvc(settings.namespace, settings.claimName);
      return undefined;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      logger.error('could not delete the test claim; delete it by hand', { claim, error: message });
      return `could not delete claim ${claim}, delete it by hand: ${message}`;
    }
  }

  return {
    name: 'pvc',
    summary: PVC_SUMMARY,
    banner: 'PVC create-delete test',
    compatHealth: 'pvc',
    deviceKind: 'node',
    usesGpu: false,
    exclusive: false,
    timeoutMs: settings.bindTimeoutMs + LEFTOVER_WAIT_MS + API_MARGIN_MS,
    parseParams: () => ({}),

    async run(ctx): Promise<CheckOutcome> {
      const { kube } = deps;
      if (kube === undefined) return skip('not connected to Kubernetes (standalone mode)');
      const className = settings.storageClass;
      if (className === undefined || className === '') {
        return skip('no storage class configured (set PVC_TEST_STORAGE_CLASS)');
      }
      let claimMayExist = false;
      let outcome: CheckOutcome = errorOutcome('the check ended without a verdict');
      try {
        outcome = await exercise(kube, className, ctx.signal, ctx.logger, (mayExist) => {
          claimMayExist = mayExist;
        });
      } catch (error) {
        if (error instanceof KubeError || error instanceof Stopped) {
          outcome = errorOutcome(error.message);
        } else if (ctx.signal.aborted) {
          outcome = errorOutcome(new Stopped(ctx.signal).message);
        } else {
          throw error;
        }
      } finally {
        if (claimMayExist) {
          const leftover = await deleteClaim(kube, ctx.logger);
          if (leftover !== undefined) outcome = withLeftover(outcome, leftover);
        }
      }
      return outcome;
    },

    formatText: formatPvcText,
  };
}

function formatPvcText(run: CheckRun): string {
  if (run.verdict === 'PASS') return `${TEXT_PREFIX} PVC SUCCESS\n${TEXT_PREFIX} ${run.reason}\n`;
  if (run.verdict === 'FAIL') return `${TEXT_PREFIX} FAIL\n${TEXT_PREFIX} ${run.reason}\n`;
  return `${TEXT_PREFIX} ${run.verdict}: ${run.reason}. ABORT\n`;
}

function isPending(pvc: PvcInfo | undefined): boolean {
  return pvc !== undefined && !pvc.deleting && pvc.phase !== 'Bound' && pvc.phase !== 'Lost';
}

/** The run's reason is the finding's, not the store's default "1 FAIL". */
function nodeOutcome(device: DeviceResult): CheckOutcome {
  return { devices: [device], reason: device.reason };
}

function skip(reason: string): CheckOutcome {
  return { devices: [], verdict: 'SKIP', reason };
}

/** No device result: an API problem says nothing about the storage, and concludes nothing. */
function errorOutcome(reason: string): CheckOutcome {
  return { devices: [], verdict: 'ERROR', reason };
}

/** A claim that could not be deleted: a failure stays one, anything else becomes ERROR. */
function withLeftover(outcome: CheckOutcome, leftover: string): CheckOutcome {
  const failing = outcome.devices.find((d) => d.verdict === 'FAIL');
  if (failing !== undefined) {
    const reason = `${failing.reason}; ${leftover}`;
    return { ...outcome, devices: [{ ...failing, reason }], reason };
  }
  const before = outcome.reason ?? '';
  return errorOutcome(before === '' ? leftover : `${before}; ${leftover}`);
}

function seconds(ms: number): string {
  return `${round(ms / 1000)} s`;
}

function round(value: number): number {
  return Number(value.toFixed(3));
}

export const pvcModule: CheckModule = {
  name: 'pvc',
  summary: PVC_SUMMARY,
  // It creates cluster storage objects: beyond this node, so protected whatever its parameters.
  policy: { protectedAs: 'pvc', exclusive: false },
  metrics: [],
  formatText: formatPvcText,
  statusName: 'PVC Create-Delete Test',
  create: (config, ports) =>
    createPvcCheck({
      kube: ports.kube,
      settings: {
        storageClass: config.pvcStorageClass,
        accessMode: config.pvc.accessMode,
        size: config.pvc.size,
        bindTimeoutMs: config.pvc.bindTimeoutMs,
        namespace: config.namespace ?? 'default',
        // Autopilot named the claim after the pod; one pod runs one check at a time.
        claimName: config.podName ?? `autopilot-pvc-${config.nodeName}`,
      },
      sleep: (ms, signal) => sleep(ports.clock, ms, signal),
      now: () => ports.clock.now(),
    }),
};
