/**
 * What the status page shows of one node, read from its store (never by running a check): the
 * summary that the cluster view asks every node for (GET /node/<name>/summary), and the detail of
 * the node view (GET /node/<name>?format=json). Each node builds its own, so an age is measured by
 * the clock that dated the run, and parsed back here when another node answered it.
 */

import { VERDICTS, type CheckRun, type Verdict } from '../checks/check.js';
import type { ApiDeps } from './app.js';
import { runToJson, type RunJson } from './render.js';
import { pageState, type PageState } from './status-page-html.js';

export interface CheckCell {
  readonly check: string;
  readonly verdict: Verdict;
  readonly reason: string;
  /** How long ago the run ended, by the answering node's clock. */
  readonly ageSeconds: number;
}

export interface NodeSummary {
  readonly node: string;
  readonly state: PageState;
  readonly reasons: readonly string[];
  /** Why the row is UNKNOWN when the node gave no answer; '' when it answered. */
  readonly detail: string;
  readonly gpu: { readonly model: string; readonly count: number };
  /** The last run of each check that has run there. */
  readonly checks: readonly CheckCell[];
}

export interface HistoryEntry extends CheckCell {
  readonly trigger: string;
  readonly durationSeconds: number;
}

export interface NodeDetail {
  readonly summary: NodeSummary;
  readonly since: string | null;
  /** The last run of every check, with its devices and their evidence. */
  readonly results: readonly (RunJson & { readonly ageSeconds: number })[];
  /** The newest runs of any check, newest first. */
  readonly history: readonly HistoryEntry[];
  /** /status's kubernetes section (label, condition, taint, watch); null in standalone mode. */
  readonly kubernetes: Readonly<Record<string, unknown>> | null;
}

/** The state the node label shows: TESTING while something holds the GPUs, unless EVICT. */
function shownState(deps: ApiDeps): PageState {
  const stored = deps.store.health().state;
  return stored !== 'EVICT' && deps.testing?.() === true ? 'TESTING' : pageState(stored);
}

/** GPUs as the GPU checks' last runs list them (one id each), so it needs no NVML call. */
function gpuCount(deps: ApiDeps): number {
  const ids = new Set<string>();
  for (const run of deps.store.latestRuns()) {
    if (deps.checks.get(run.check)?.deviceKind !== 'gpu') continue;
    for (const device of run.devices) if (device.id !== '') ids.add(device.id);
  }
  return ids.size;
}

function cellOf(run: CheckRun, now: number): CheckCell {
  return {
    check: run.check,
    verdict: run.verdict,
    reason: run.reason,
    ageSeconds: Math.max(0, Math.round((now - run.finishedAt) / 1000)),
  };
}

export function localSummary(deps: ApiDeps): NodeSummary {
  const now = deps.now();
  const checks: CheckCell[] = [];
  for (const name of deps.checks.keys()) {
    const run = deps.store.latest(name);
    if (run !== undefined) checks.push(cellOf(run, now));
  }
  return {
    node: deps.nodeName,
    state: shownState(deps),
    reasons: deps.store.health().reasons,
    detail: '',
    gpu: { model: deps.gpuModel ?? 'N/A', count: gpuCount(deps) },
    checks,
  };
}

export function localDetail(deps: ApiDeps, historyRuns: number): NodeDetail {
  const now = deps.now();
  const health = deps.store.health();
  const history = [...deps.checks.keys()]
    .flatMap((name) => deps.store.history(name))
    .sort((a, b) => b.finishedAt - a.finishedAt)
    .slice(0, historyRuns)
    .map((run) => ({
      ...cellOf(run, now),
      trigger: run.trigger,
      durationSeconds: (run.finishedAt - run.startedAt) / 1000,
    }));
  return {
    summary: localSummary(deps),
    since: health.since === 0 ? null : new Date(health.since).toISOString(),
    results: deps.store.latestRuns().map((run) => ({
      ...runToJson(run),
      ageSeconds: cellOf(run, now).ageSeconds,
    })),
    history,
    kubernetes: deps.cluster?.status() ?? null,
  };
}

/** A row for a node that gave no usable answer: UNKNOWN, with why. */
export function unansweredSummary(node: string, detail: string): NodeSummary {
  return { node, state: 'UNKNOWN', reasons: [], detail, gpu: { model: '', count: 0 }, checks: [] };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function readCell(value: unknown): CheckCell | undefined {
  if (!isRecord(value)) return undefined;
  const { check, verdict, reason, ageSeconds } = value;
  if (typeof check !== 'string' || !(VERDICTS as readonly unknown[]).includes(verdict)) {
    return undefined;
  }
  return {
    check,
    verdict: verdict as Verdict,
    reason: typeof reason === 'string' ? reason : '',
    ageSeconds: typeof ageSeconds === 'number' && ageSeconds >= 0 ? ageSeconds : NaN,
  };
}

/** Pure: another node's summary as it answered it; undefined when it is not one. */
export function readSummary(value: unknown): NodeSummary | undefined {
  if (!isRecord(value) || typeof value.node !== 'string' || !Array.isArray(value.checks)) {
    return undefined;
  }
  const gpu = isRecord(value.gpu) ? value.gpu : {};
  const checks = value.checks.map(readCell);
  if (checks.some((cell) => cell === undefined)) return undefined;
  return {
    node: value.node,
    state: pageState(value.state),
    reasons: Array.isArray(value.reasons)
      ? value.reasons.filter((r): r is string => typeof r === 'string')
      : [],
    detail: '',
    gpu: {
      model: typeof gpu.model === 'string' ? gpu.model : '',
      count: typeof gpu.count === 'number' ? gpu.count : 0,
    },
    checks: checks as CheckCell[],
  };
}

/** Pure: another node's detail; undefined when it is not one. Its parts are escaped when shown. */
export function readDetail(value: unknown): NodeDetail | undefined {
  if (!isRecord(value)) return undefined;
  const summary = readSummary(value.summary);
  if (summary === undefined || !Array.isArray(value.results) || !Array.isArray(value.history)) {
    return undefined;
  }
  return {
    summary,
    since: typeof value.since === 'string' ? value.since : null,
    results: value.results.filter(isRecord) as unknown as NodeDetail['results'],
    history: value.history.filter(isRecord) as unknown as NodeDetail['history'],
    kubernetes: isRecord(value.kubernetes) ? value.kubernetes : null,
  };
}
