import { deepCheckReport } from '../../exporter/deep-check-report.js';
import { device, makeRun } from './runs.js';

/**
 * The termination message of a deep-check Job whose dcgm and gpumem both passed on GPUs 0 to
 * gpus-1, as `autopilot deepcheck` writes it.
 */
export function passingDeepCheckReport(gpus: number): string {
  const devices = Array.from({ length: gpus }, (_, id) =>
    device(String(id), 'PASS', { reason: 'ok' }),
  );
  return deepCheckReport(
    ['dcgm', 'gpumem'].map((check) =>
      makeRun(check, 1, devices, { trigger: 'cli', startedAt: 0, reason: `${gpus} PASS` }),
    ),
  );
}
