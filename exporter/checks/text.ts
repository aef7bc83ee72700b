/** Shared pieces of the Autopilot-style text output. */

import type { CheckRun } from './check.js';

/** A run with no device results (SKIP, or ERROR before anything was measured) as one line. */
export function formatCheckLevelText(prefix: string, run: CheckRun): string {
  return `${prefix} ${run.verdict}: ${run.reason}\n`;
}

/** The first non-empty line of a tool's message, for a one-line reason. */
export function firstLine(text: string): string {
  return text.trim().split('\n')[0] ?? '';
}
