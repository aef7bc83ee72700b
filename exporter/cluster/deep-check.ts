/**
 * The deep check: DCGM level 3 and gpumem on idle GPUs, in a Job pinned to this node that requests
 * all the node's allocatable GPUs (so the scheduler keeps work off them meanwhile). The node shows
 * TESTING while the Job lives. The exporter follows the Job to its end, whatever it is: success or
 * failure (the report is read from the pod's termination message), deletion, or a pod stuck
 * Pending, and TESTING always ends. A passing deep check is what lifts a sticky EVICT.
 *
 * Autopilot's version requested exactly 8 GPUs, looked its pod up in a hard-coded namespace, never
 * watched the Job, and left the node TESTING when anything went wrong (§7.2 #6).
 */

import { randomBytes } from 'node:crypto';
import type { CheckRun, DeviceResult, Verdict } from '../checks/check.js';
import type { Clock } from '../clock.js';
import type { Schedule } from '../config/schedule.js';
import { jitterFor, nextTick } from '../scheduler.js';
import type { Logger } from '../log.js';
import { readDeepCheckReport, type DeepCheckRunReport } from '../deep-check-report.js';
import type { KubeApi } from '../k8s/ports.js';
import { TAINT_KEY } from './node-taint.js';

/**
 * Autopilot's name for the deep-check Job, `dcgm-<6 hex>`: operators' scripts find it with
 * `kubectl get jobs | grep dcgm`.
 */
export const DEEP_CHECK_JOB_PREFIX = 'dcgm-';

/** The labels of every deep-check Job, which a restarted exporter lists its predecessor's by. */
const DEEP_CHECK_JOB_LABELS = {
  'app.kubernetes.io/managed-by': 'autopilot',
  'autopilot.ibm.com/check': 'deepcheck',
};

export type DeepCheckEnd = 'passed' | 'failed' | 'deleted' | 'stuck' | 'error';

export interface DeepCheckStart {
  readonly started: boolean;
  /** The Job's name, or why nothing started. */
  readonly detail: string;
}

export interface DeepCheck {
  /** Starts a deep check when the GPUs are idle; resolves once the Job exists (or did not start). */
  start(): Promise<DeepCheckStart>;
  /** A deep check's Job is alive: the node label shows TESTING. */
  running(): boolean;
  /**
   * Resolves once resume() has learnt whether a Job runs (at once when no resume is under way): a
   * GPU check waits for it rather than start beside a Job not yet followed.
   */
  resumed(): Promise<void>;
  /** How the running deep check ends (or the last one ended); undefined before any has run. */
  settled(): Promise<DeepCheckEnd | undefined>;
  /**
   * At start-up: follows the deep-check Job a previous exporter on this node left running, so its
   * result is recorded (and a pass lifts EVICT) and no second Job is started beside it.
   */
  resume(): Promise<void>;
  stop(): void;
}

export interface DeepCheckSettings {
  readonly namespace: string;
  readonly nodeName: string;
  readonly image: string | undefined;
  readonly command: readonly string[];
  readonly priorityClassName: string | undefined;
  readonly serviceAccountName: string | undefined;
  readonly runtimeClassName: string | undefined;
  readonly imagePullSecrets: readonly string[];
  readonly ttlSeconds: number;
  /** The Job's activeDeadlineSeconds: DCGM level 3 takes about 15 minutes on 8 GPUs. */
  readonly activeDeadlineSeconds: number;
  /** What the Job's own exporter must judge by as this one does (DCGM_FATAL_ERRORS, ...). */
  readonly env: Readonly<Record<string, string>>;
  /** A pod Pending longer than this (no GPUs free after all, an image that cannot be pulled). */
  readonly pendingTimeoutMs: number;
  readonly pollMs: number;
}

export interface DeepCheckDeps {
  readonly kube: KubeApi;
  readonly settings: DeepCheckSettings;
  /** Why the GPUs are busy, or undefined when idle. */
  readonly gpusBusy: () => Promise<string | undefined>;
  /** Records a run as if the check had run here (trigger deepcheck). */
  readonly record: (run: CheckRun) => void;
  /** A deep check where nothing failed lifts a sticky EVICT. */
  readonly passed: (at: number) => void;
  /** The DCGM level 3 result, for the dcgm.level.3 label and annotation. */
  readonly dcgmResult?: (result: {
    level: number;
    passed: boolean;
    output: string;
    at: number;
  }) => void;
  /** Called when running() changes, so the node label can follow. */
  readonly changed: () => void;
  readonly clock: Clock;
  readonly logger: Logger;
}

export function createDeepCheck(deps: DeepCheckDeps): DeepCheck {
  const { settings } = deps;
  let current: { readonly job: string; readonly ended: Promise<DeepCheckEnd> } | undefined;
  let last: Promise<DeepCheckEnd> | undefined;
  /** Set from the first await of start() on, so a timer and /invasive at once make one Job. */
  let starting = false;
  /** resume()'s list, while under way. */
  let resuming: Promise<void> | undefined;
  let stopped = false;

  const wait = (ms: number): Promise<void> =>
    new Promise((resolve) => deps.clock.setTimer(resolve, ms));

  const follow = async (job: string, startedAt: number): Promise<DeepCheckEnd> => {
    let pendingSince: number | undefined;
    for (;;) {
      await wait(settings.pollMs);
      if (stopped) return 'error';
      let info;
      try {
        info = await deps.kube.readJob(settings.namespace, job);
      } catch (error) {
        // The API may be down for a while; the Job's own deadline bounds how long this can last.
        deps.logger.warn('cannot read the deep-check Job; trying again', { job, error });
        if (deps.clock.now() - startedAt > (settings.activeDeadlineSeconds + 300) * 1000) {
          return finishWithout(job, startedAt, 'error', 'the deep-check Job could not be followed');
        }
        continue;
      }
      if (info === undefined) {
        return finishWithout(
          job,
          startedAt,
          'deleted',
          'the deep-check Job was deleted before it ended',
        );
      }
      if (info.state !== 'Active') return finishWithReport(job, startedAt, info.failure);
      const pods = await deps.kube.listJobPods(settings.namespace, job).catch(() => []);
      const pending = pods.length === 0 || pods.every((pod) => pod.phase === 'Pending');
      pendingSince = pending ? (pendingSince ?? deps.clock.now()) : undefined;
      if (
        pendingSince !== undefined &&
        deps.clock.now() - pendingSince > settings.pendingTimeoutMs
      ) {
        await deps.kube.deleteJob(settings.namespace, job).catch(() => undefined);
        return finishWithout(
          job,
          startedAt,
          'stuck',
          `the deep-check pod stayed Pending for ${Math.round(settings.pendingTimeoutMs / 1000)} s; the Job was deleted`,
        );
      }
    }
  };

  /** The Job ended without results: recorded as ERROR, which leaves the node's health as it was. */
  const finishWithout = (job: string, startedAt: number, end: DeepCheckEnd, reason: string) => {
    deps.logger.warn('deep check ended without results', { job, reason });
    deps.record(runOf('dcgm', 'ERROR', `deep check: ${reason}`, [], startedAt, deps.clock.now()));
    return end;
  };

  const finishWithReport = async (
    job: string,
    startedAt: number,
    failure: string | undefined,
  ): Promise<DeepCheckEnd> => {
    const pods = await deps.kube.listJobPods(settings.namespace, job).catch(() => []);
    const report = pods.map((pod) => readDeepCheckReport(pod.terminationMessage)).find(Boolean);
    if (report === undefined || report.length === 0) {
      return finishWithout(
        job,
        startedAt,
        'error',
        failure ?? (report === undefined ? 'the Job left no report' : 'the Job reported no check'),
      );
    }
    const now = deps.clock.now();
    for (const entry of report) deps.record(runFromReport(entry, startedAt, now));
    // Nothing failed and something was really tested: a report of SKIPs (no dcgmi in the image)
    // is no evidence that an evicted node is fit again.
    const passed =
      report.every((entry) => entry.verdict !== 'FAIL' && entry.verdict !== 'ERROR') &&
      report.some((entry) => entry.verdict === 'PASS' || entry.verdict === 'WARN');
    const dcgm = report.find((entry) => entry.check === 'dcgm');
    if (dcgm !== undefined && dcgm.verdict !== 'ERROR' && dcgm.verdict !== 'SKIP') {
      deps.dcgmResult?.({
        level: 3,
        passed: dcgm.verdict !== 'FAIL',
        // Autopilot's failure string when the Job sent it; else the failing GPUs and why.
        output:
          dcgm.failures ??
          dcgm.devices
            .filter((d) => d.verdict === 'FAIL')
            .map((d) => `${d.id}:${d.reason}`)
            .join(','),
        at: now,
      });
    }
    if (passed) deps.passed(now);
    deps.logger.info('deep check ended', {
      job,
      passed,
      checks: report.map((e) => `${e.check}=${e.verdict}`),
    });
    return passed ? 'passed' : 'failed';
  };

  const startJob = async (): Promise<DeepCheckStart> => {
    if (current !== undefined)
      return { started: false, detail: `already running (${current.job})` };
    if (settings.image === undefined) {
      return { started: false, detail: 'no image for the Job (set AUTOPILOT_DEEPCHECK_IMAGE)' };
    }
    // Also here, not only at start-up: a resume whose list failed must not lead to a second Job,
    // which would sit Pending beside the first (its pods do not count as busy GPUs).
    const left = await adoptAlive();
    if (left !== undefined) return { started: false, detail: `already running (${left})` };
    const busy = await deps.gpusBusy();
    if (busy !== undefined) return { started: false, detail: `${busy}; not started` };
    const node = await deps.kube.getNode(settings.nodeName);
    if (node.allocatableGpus === undefined || node.allocatableGpus === 0) {
      return { started: false, detail: 'the node advertises no allocatable nvidia.com/gpu' };
    }
    const job = `${DEEP_CHECK_JOB_PREFIX}${randomBytes(3).toString('hex')}`;
    const startedAt = deps.clock.now();
    try {
      await deps.kube.createJob({
        name: job,
        namespace: settings.namespace,
        nodeName: settings.nodeName,
        image: settings.image,
        command: settings.command,
        gpus: node.allocatableGpus,
        priorityClassName: settings.priorityClassName,
        ttlSecondsAfterFinished: settings.ttlSeconds,
        activeDeadlineSeconds: settings.activeDeadlineSeconds,
        serviceAccountName: settings.serviceAccountName,
        runtimeClassName: settings.runtimeClassName,
        imagePullSecrets: settings.imagePullSecrets,
        // The deep check is what judges a node that autopilot tainted: under NoExecute a pod that
        // does not tolerate the taint is evicted, and the node could never pass one.
        toleratedTaintKeys: [TAINT_KEY],
        labels: DEEP_CHECK_JOB_LABELS,
        env: { ...settings.env, NODE_NAME: settings.nodeName },
      });
    } catch (error) {
      deps.record(
        runOf(
          'dcgm',
          'ERROR',
          `deep check: ${error instanceof Error ? error.message : String(error)}`,
          [],
          startedAt,
          deps.clock.now(),
        ),
      );
      return { started: false, detail: error instanceof Error ? error.message : String(error) };
    }
    followJob(job, startedAt);
    deps.logger.info('deep check started', { job, gpus: node.allocatableGpus });
    return { started: true, detail: job };
  };

  const followJob = (job: string, startedAt: number): void => {
    const ended = follow(job, startedAt).finally(() => {
      current = undefined;
      deps.changed();
    });
    current = { job, ended };
    last = ended;
    deps.changed();
  };

  /**
   * Follows the newest deep-check Job alive on this node that this process did not start (an
   * exporter before a restart did); its name, or undefined when there is none or the list failed.
   */
  const adoptAlive = async (): Promise<string | undefined> => {
    const selector = Object.entries(DEEP_CHECK_JOB_LABELS)
      .map(([key, value]) => `${key}=${value}`)
      .join(',');
    let jobs;
    try {
      jobs = await deps.kube.listJobs(settings.namespace, selector);
    } catch (error) {
      deps.logger.warn('cannot list the deep-check Jobs; one left running is not followed', {
        error,
      });
      return undefined;
    }
    const alive = jobs
      .filter((job) => job.nodeName === settings.nodeName && job.state === 'Active')
      .sort((a, b) => (b.createdAt ?? 0) - (a.createdAt ?? 0));
    const [newest] = alive;
    if (newest === undefined || stopped || current !== undefined) return undefined;
    followJob(newest.name, newest.createdAt ?? deps.clock.now());
    deps.logger.info('deep check resumed', {
      job: newest.name,
      // Two alive at once cannot come from one exporter; the older ones' GPUs free at their deadline.
      ...(alive.length > 1 ? { alsoAlive: alive.slice(1).map((job) => job.name) } : {}),
    });
    return newest.name;
  };

  return {
    async start() {
      if (current !== undefined) {
        return { started: false, detail: `already running (${current.job})` };
      }
      if (starting) return { started: false, detail: 'already starting' };
      starting = true;
      try {
        return await startJob();
      } finally {
        starting = false;
      }
    },
    async resume() {
      if (current !== undefined || starting || stopped) return;
      // A timer or /invasive meanwhile answers "already starting" rather than making a second Job,
      // and GPU checks wait (resumed) until the list says whether a Job runs.
      starting = true;
      resuming = adoptAlive().then(() => undefined);
      try {
        await resuming;
      } finally {
        starting = false;
        resuming = undefined;
      }
    },
    running: () => current !== undefined,
    resumed: () => resuming ?? Promise.resolve(),
    settled: () => current?.ended ?? last ?? Promise.resolve(undefined),
    stop() {
      stopped = true;
    },
  };
}

function runOf(
  check: string,
  verdict: Verdict,
  reason: string,
  devices: readonly DeviceResult[],
  startedAt: number,
  finishedAt: number,
): CheckRun {
  return {
    check,
    trigger: 'deepcheck',
    params: check === 'dcgm' ? { r: '3' } : {},
    startedAt,
    finishedAt,
    verdict,
    reason,
    devices,
    samples: [],
  };
}

/**
 * Pure: a reported run as the store keeps it. The compatibility gauge's value is rebuilt (1 for a
 * FAIL, else 0), so autopilot_health_checks keeps its dcgm and gpumem series after a deep check:
 * dcgm reports it on its node-level device only, the other checks per GPU.
 */
export function runFromReport(
  entry: DeepCheckRunReport,
  startedAt: number,
  finishedAt: number,
): CheckRun {
  const carriesCompat = (id: string): boolean => (entry.check === 'dcgm' ? id === '' : id !== '');
  return runOf(
    entry.check,
    entry.verdict,
    entry.reason,
    entry.devices.map((d) => ({
      id: d.id,
      verdict: d.verdict,
      reason: d.reason,
      evidence: {},
      ...(d.fatal ? { fatal: true } : {}),
      ...(carriesCompat(d.id) && d.verdict !== 'ERROR' && d.verdict !== 'SKIP'
        ? { compatValue: d.verdict === 'FAIL' ? 1 : 0 }
        : {}),
    })),
    startedAt,
    finishedAt,
  );
}

/**
 * Starts a deep check on the --invasive-check-timer schedule (not at start-up: a node that just
 * booted is likely to get work). Returns the function that stops the timer.
 */
export function scheduleDeepChecks(deps: {
  readonly schedule: Schedule;
  readonly deepCheck: DeepCheck;
  readonly clock: Clock;
  readonly nodeName: string;
  readonly logger: Logger;
}): () => void {
  const anchor = deps.clock.now();
  const jitter = jitterFor(deps.nodeName, deps.schedule, anchor);
  let cancel: (() => void) | undefined;
  let stopped = false;
  const plan = (): void => {
    const now = deps.clock.now();
    const at = nextTick(deps.schedule, anchor, now, jitter);
    if (at === undefined || stopped) return;
    cancel = deps.clock.setTimer(() => {
      void deps.deepCheck.start().then(
        (start) => deps.logger.info('scheduled deep check', { ...start }),
        (error: unknown) => deps.logger.warn('scheduled deep check could not start', { error }),
      );
      plan();
    }, at - now);
  };
  plan();
  return () => {
    stopped = true;
    cancel?.();
  };
}
