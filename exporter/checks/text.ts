/** Shared pieces of the Autopilot-style text output. */

import type { CheckRun } from './check.js';

/** A run with no device results (SKIP, or ERROR before anything was measured) as one line. */
export function formatCheckLevelText(prefix: string, run: CheckRun): string {
  return `${prefix} ${run.verdict}: ${run.reason}\n`;
}
