/** Pure renderings of results for the API and the CLI: Autopilot-style text, JSON and a table. */

import type { Check, CheckRun } from '../checks/check.js';
import type { NodeHealth } from '../node-health.js';

export interface RunJson {
  readonly check: string;
  readonly verdict: string;
  readonly reason: string;
  readonly trigger: string;
  readonly params: Readonly<Record<string, string>>;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly durationSeconds: number;
  readonly devices: readonly {
    readonly id: string;
    readonly verdict: string;
    readonly reason: string;
    readonly fatal: boolean;
    readonly evidence: Readonly<Record<string, unknown>>;
  }[];
}

export function runToJson(run: CheckRun): RunJson {
  return {
    check: run.check,
    verdict: run.verdict,
    reason: run.reason,
    trigger: run.trigger,
    params: run.params,
    startedAt: new Date(run.startedAt).toISOString(),
    finishedAt: new Date(run.finishedAt).toISOString(),
    durationSeconds: (run.finishedAt - run.startedAt) / 1000,
    devices: run.devices.map((d) => ({
      id: d.id,
      verdict: d.verdict,
      reason: d.reason,
      fatal: d.fatal === true,
      evidence: d.evidence,
    })),
  };
}

export function healthToJson(health: NodeHealth): Record<string, unknown> {
  return {
    state: health.state,
    since: health.since === 0 ? null : new Date(health.since).toISOString(),
    reasons: health.reasons,
  };
}

/** The /results text: when each result was produced, then its Autopilot-style block. */
export function renderResultsText(
  nodeName: string,
  health: NodeHealth,
  runs: readonly { readonly check: Check; readonly run: CheckRun }[],
): string {
  const lines = [`Node ${nodeName} health ${health.state}`];
  for (const reason of health.reasons) lines.push(`  ${reason}`);
  let text = `${lines.join('\n')}\n`;
  if (runs.length === 0) return `${text}No check has run yet.\n`;
  for (const { check, run } of runs) {
    text += `\n--- ${run.check}: ${run.verdict} at ${new Date(run.finishedAt).toISOString()} (${run.trigger}) ---\n`;
    text += check.formatText(run, nodeName);
  }
  return text;
}

/** A fixed-width table, one row per device (or per check when it has none), for the CLI. */
export function renderTable(runs: readonly CheckRun[]): string {
  const rows: string[][] = [['CHECK', 'DEVICE', 'VERDICT', 'REASON']];
  for (const run of runs) {
    if (run.devices.length === 0) rows.push([run.check, '-', run.verdict, run.reason]);
    for (const device of run.devices) {
      rows.push([run.check, device.id === '' ? '-' : device.id, device.verdict, device.reason]);
    }
  }
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return `${rows
    .map((row) =>
      row
        .map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!)))
        .join('  '),
    )
    .join('\n')}\n`;
}
