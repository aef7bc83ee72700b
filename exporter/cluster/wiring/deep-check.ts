/**
 * The deep check's wiring (Kubernetes mode): the Job on this node's idle GPUs, started by
 * /invasive or the --invasive-check-timer schedule, and post-flight, which runs the quick checks
 * after a pod that held GPUs ends. Both wait for GPUs that no one else's pod holds.
 */

import type { CheckRunner } from '../../check-runner.js';
import { CHECK_TABLE } from '../../checks/index.js';
import type { Clock } from '../../clock.js';
import {
  DEEP_CHECK_JOB_PREFIX,
  createDeepCheck,
  scheduleDeepChecks,
  type DeepCheck,
} from '../deep-check.js';
import { gpusBusy } from '../gpu-idle.js';
import type { NodeLabeler } from '../node-labeler.js';
import { createPostflight, type Postflight } from '../postflight.js';
import type { Config } from '../../config/config.js';
import { gpumemSettingsEnv, type GpumemSettingValues } from '../../checks/gpumem.js';
import type { KubeApi } from '../../k8s/ports.js';
import type { Logger } from '../../log.js';
import type { NvmlLoad } from '../../native/ports.js';
import type { ResultStore } from '../../store.js';

/** DCGM level 3 takes about 15 minutes on 8 GPUs, gpumem a few more. */
const DEEP_CHECK_DEADLINE_S = 2 * 3600;
const DEEP_CHECK_PENDING_MS = 10 * 60_000;
const DEEP_CHECK_POLL_MS = 10_000;
const POSTFLIGHT_POLL_MS = 15_000;

export interface DeepCheckParts {
  readonly deepCheck: DeepCheck;
  readonly postflight: Postflight | undefined;
  /**
   * Follows a deep-check Job a previous exporter left running, and starts the
   * --invasive-check-timer schedule; returns its stop.
   */
  readonly scheduleDeepChecks: () => () => void;
}

export interface DeepCheckWiring {
  readonly kube: KubeApi;
  readonly nvml: NvmlLoad;
  readonly store: ResultStore;
  readonly runner: CheckRunner;
  readonly labeler: NodeLabeler;
  /** Told when the deep check starts or ends (its Events). */
  readonly onChanged?: () => void;
  readonly clock: Clock;
  readonly logger: Logger;
}

export function wireDeepCheck(config: Config, wiring: DeepCheckWiring): DeepCheckParts {
  const { kube, store, labeler, clock, logger } = wiring;
  const busy = () =>
    gpusBusy({
      kube,
      nvml: wiring.nvml,
      nodeName: config.nodeName,
      ownJobPrefix: DEEP_CHECK_JOB_PREFIX,
    });
  const deepCheck = createDeepCheck({
    kube,
    settings: {
      namespace: config.namespace ?? 'default',
      nodeName: config.nodeName,
      image: config.deepcheckImage,
      command: config.deepcheckCommand,
      priorityClassName: config.deepcheckPriorityClass,
      serviceAccountName: undefined,
      runtimeClassName: config.deepcheckRuntimeClass,
      imagePullSecrets: config.deepcheckPullSecrets,
      ttlSeconds: config.deepCheckJobTtlSeconds,
      activeDeadlineSeconds: DEEP_CHECK_DEADLINE_S,
      pendingTimeoutMs: DEEP_CHECK_PENDING_MS,
      pollMs: DEEP_CHECK_POLL_MS,
      env: {
        DCGM_FATAL_ERRORS: config.dcgmFatalErrors.join(','),
        AUTOPILOT_DCGMI_COMMAND: config.dcgmiCommand,
        AUTOPILOT_NVML_LIBRARY: config.nvmlLibrary,
        // parseConfig keeps each module's own settings under its name, typed by the module.
        ...gpumemSettingsEnv(config.checkSettings.get('gpumem') as GpumemSettingValues),
      },
    },
    gpusBusy: busy,
    record: (run) => store.record(run),
    passed: (at) => store.acknowledge(at),
    dcgmResult: (result) => void labeler.recordDcgm(result),
    changed: () => {
      labeler.sync();
      wiring.onChanged?.();
    },
    clock,
    logger: logger.child({ component: 'deepcheck' }),
  });
  const postflight =
    config.postflightChecks.length === 0
      ? undefined
      : createPostflight({
          kube,
          nodeName: config.nodeName,
          checks: config.postflightChecks.map((name) => [name, CHECK_TABLE.postflightParams(name)]),
          run: (name, params, trigger) => wiring.runner.run(name, params, trigger),
          // The Job's own pods do not count as busy (busy() leaves them out), but post-flight's
          // checks would be held beside it and their results lost: they wait for its end.
          gpusBusy: async () => {
            await deepCheck.resumed();
            return deepCheck.running() ? 'the deep-check Job holds the GPUs' : busy();
          },
          ownJobPrefix: DEEP_CHECK_JOB_PREFIX,
          clock,
          logger: logger.child({ component: 'postflight' }),
          pollMs: POSTFLIGHT_POLL_MS,
        });
  return {
    deepCheck,
    postflight,
    scheduleDeepChecks: () => {
      void deepCheck.resume();
      return scheduleDeepChecks({
        schedule: config.deepCheckSchedule,
        deepCheck,
        clock,
        nodeName: config.nodeName,
        logger: logger.child({ component: 'deepcheck' }),
      });
    },
  };
}
