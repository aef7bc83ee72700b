/** Shared pieces of the Autopilot-style text output. */

import type { CheckRun } from './check.js';

/**
 * A run with no device results (SKIP, or ERROR before anything was measured) as one line. A run
 * that could not test anything ends in Autopilot's `ABORT` token, as its checks printed when they
 * could not run on the node: scripts grep for it, and its daemon skipped such output.
 */
export function formatCheckLevelText(prefix: string, run: CheckRun): string {
  if (run.verdict !== 'SKIP' && run.verdict !== 'ERROR') {
    return `${prefix} ${run.verdict}: ${run.reason}\n`;
  }
  return `${prefix} ${run.verdict}: ${withAbort(run.reason)}\n`;
}

/** "reason. ABORT", without doubling a full stop the reason already ends with. */
export function withAbort(reason: string): string {
  const trimmed = reason.trimEnd();
  if (trimmed === '') return 'ABORT';
  return /[.!?]$/.test(trimmed) ? `${trimmed} ABORT` : `${trimmed}. ABORT`;
}

/** The first non-empty line of a tool's message, for a one-line reason. */
export function firstLine(text: string): string {
  return text.trim().split('\n')[0] ?? '';
}
