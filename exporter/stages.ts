/**
 * Pre-flight and the deep check's report: pure pieces of the stages around a job. Pre-flight asks
 * the exporters whether a node may run a job; the deep-check Job reports its results through its
 * container's termination message, which the exporter that created it reads back.
 */

import type { CheckRun, Verdict } from './checks/check.js';
import { VERDICTS } from './checks/check.js';
import { parseGoDuration } from './config/duration.js';

/** What the deep check runs: DCGM level 3 and the memory and arithmetic test. */
export const DEEP_CHECKS: readonly (readonly [string, Readonly<Record<string, string>>])[] = [
  ['dcgm', { r: '3' }],
  ['gpumem', {}],
];

/** Kubernetes keeps at most 4,096 bytes of a termination message. */
export const TERMINATION_MESSAGE_BYTES = 4096;

export interface DeepCheckRunReport {
  readonly check: string;
  readonly verdict: Verdict;
  readonly reason: string;
  /** dcgm: Autopilot's failure string (pcie.2memory_bandwidth.0), for the .output annotation. */
  readonly failures?: string;
  readonly devices: readonly {
    readonly id: string;
    readonly verdict: Verdict;
    readonly reason: string;
    readonly fatal: boolean;
  }[];
}

/** Pure: the JSON the Job leaves for the exporter, shortened to fit a termination message. */
export function deepCheckReport(runs: readonly CheckRun[]): string {
  const full: DeepCheckRunReport[] = runs.map((run) => ({
    check: run.check,
    verdict: run.verdict,
    reason: run.reason,
    ...failuresOf(run),
    devices: run.devices.map((d) => ({
      id: d.id,
      verdict: d.verdict,
      reason: d.reason,
      fatal: d.fatal === true,
    })),
  }));
  for (const limit of [200, 80, 20, 0]) {
    const text = JSON.stringify({
      runs: full.map((run) => ({
        ...run,
        reason: run.reason.slice(0, limit),
        devices: run.devices.map((d) => ({ ...d, reason: d.reason.slice(0, limit) })),
      })),
    });
    if (Buffer.byteLength(text) <= TERMINATION_MESSAGE_BYTES) return text;
  }
  // Too many devices for the message: the verdicts per check, and only the failing devices, whose
  // fatal flag decides whether the node is evicted.
  return JSON.stringify({
    runs: full.map(({ check, verdict, devices }) => ({
      check,
      verdict,
      reason: '',
      devices: devices
        .filter((d) => d.verdict === 'FAIL')
        .map((d) => ({ id: d.id, verdict: d.verdict, reason: '', fatal: d.fatal })),
    })),
  });
}

/** The dcgm check keeps Autopilot's failure string on its node-level device. */
function failuresOf(run: CheckRun): { failures?: string } {
  const failures = run.devices.find((d) => d.id === '')?.evidence.failures;
  return typeof failures === 'string' && failures !== ''
    ? { failures: failures.slice(0, 500) }
    : {};
}

/** Pure: the report back, or undefined when the message is not one (a crash's log tail). */
export function readDeepCheckReport(message: string | undefined): DeepCheckRunReport[] | undefined {
  if (message === undefined) return undefined;
  try {
    const parsed = JSON.parse(message) as { runs?: unknown };
    if (!Array.isArray(parsed.runs)) return undefined;
    const verdicts: readonly string[] = VERDICTS;
    const runs = (parsed.runs as Partial<DeepCheckRunReport>[]).filter(
      (run) => typeof run.check === 'string' && verdicts.includes(String(run.verdict)),
    );
    return runs.map((run) => ({
      check: run.check!,
      verdict: run.verdict!,
      reason: typeof run.reason === 'string' ? run.reason : '',
      ...(typeof run.failures === 'string' ? { failures: run.failures } : {}),
      devices: (Array.isArray(run.devices) ? (run.devices as unknown[]) : []).flatMap((entry) => {
        const d = entry as Partial<DeepCheckRunReport['devices'][number]>;
        if (typeof d.id !== 'string' || !verdicts.includes(String(d.verdict))) return [];
        return [
          {
            id: d.id,
            verdict: d.verdict!,
            reason: typeof d.reason === 'string' ? d.reason : '',
            fatal: d.fatal === true,
          },
        ];
      }),
    }));
  } catch {
    return undefined;
  }
}

export type FailOn = 'warn' | 'evict' | 'error';

export interface PreflightRequest {
  readonly url: string;
  readonly node: string;
  readonly maxAge: string;
  readonly checks: readonly string[];
  readonly failOn: FailOn;
}

/** Throws an Error naming a bad option. */
export function parsePreflightOptions(
  options: ReadonlyMap<string, string>,
  node: string,
): PreflightRequest {
  const url = options.get('url') ?? '';
  if (!/^https?:\/\/[^\s/]+/.test(url)) {
    throw new Error(`invalid --url ${JSON.stringify(url)}: expected http://host:port`);
  }
  const maxAge = options.get('max-age') ?? '';
  if (parseGoDuration(maxAge) === undefined) {
    throw new Error(`invalid --max-age ${JSON.stringify(maxAge)}: expected a duration such as 1h`);
  }
  const checks = (options.get('checks') ?? '')
    .split(',')
    .map((c) => c.trim())
    .filter((c) => c !== '');
  if (checks.length === 0) throw new Error('invalid --checks: name at least one check');
  const failOn = options.get('fail-on');
  if (failOn !== 'warn' && failOn !== 'evict' && failOn !== 'error') {
    throw new Error(`invalid --fail-on ${JSON.stringify(failOn)}: expected warn, evict or error`);
  }
  return { url: url.replace(/\/+$/, ''), node, maxAge, checks, failOn };
}

/** Pure: one request: this node's checks, answered from results younger than max-age. */
export function preflightUrl(request: PreflightRequest): string {
  const query = new URLSearchParams({
    host: request.node,
    check: request.checks.join(','),
    maxage: request.maxAge,
    format: 'json',
  });
  return `${request.url}/status?${query.toString()}`;
}

interface NodeView {
  readonly state: string;
  readonly reasons: readonly string[];
  readonly runs: readonly {
    readonly check: string;
    readonly verdict: string;
    readonly reason: string;
  }[];
}

/** Pure: either answer shape: one node's own (/status on it) or a cluster report naming it. */
function nodeView(body: unknown, node: string): NodeView | string {
  if (typeof body !== 'object' || body === null) return 'the answer is not an Autopilot status';
  const value = body as {
    health?: { state?: unknown; reasons?: unknown };
    results?: { check?: unknown; verdict?: unknown; reason?: unknown }[];
    nodes?: {
      node?: unknown;
      outcome?: unknown;
      detail?: unknown;
      health?: { state?: unknown; reasons?: unknown } | null;
      runs?: { check?: unknown; verdict?: unknown; reason?: unknown }[];
    }[];
  };
  const runsOf = (runs: { check?: unknown; verdict?: unknown; reason?: unknown }[] | undefined) =>
    (runs ?? []).map((r) => ({
      check: String(r.check),
      verdict: String(r.verdict),
      reason: typeof r.reason === 'string' ? r.reason : '',
    }));
  if (Array.isArray(value.nodes)) {
    const entry = value.nodes.find((n) => n.node === node);
    if (entry === undefined) return `the answer does not mention node ${node}`;
    if (entry.outcome !== 'answered' || entry.health === null || entry.health === undefined) {
      return `node ${node} did not answer: ${String(entry.detail ?? entry.outcome)}`;
    }
    return {
      state: String(entry.health.state),
      reasons: Array.isArray(entry.health.reasons) ? entry.health.reasons.map(String) : [],
      runs: runsOf(entry.runs),
    };
  }
  if (value.health !== undefined && Array.isArray(value.results)) {
    return {
      state: String(value.health.state),
      reasons: Array.isArray(value.health.reasons) ? value.health.reasons.map(String) : [],
      runs: runsOf(value.results),
    };
  }
  return 'the answer is not an Autopilot status';
}

/** Pure: may the job start here? The report says why in a few lines. */
export function judgePreflight(
  body: unknown,
  request: PreflightRequest,
): { readonly exitCode: 0 | 1; readonly report: string } {
  const view = nodeView(body, request.node);
  if (typeof view === 'string') {
    return { exitCode: 1, report: `preflight ${request.node}: ${view}\nNOT READY\n` };
  }
  const lines = [`preflight ${request.node}: health ${view.state}`];
  for (const run of view.runs)
    lines.push(`  ${run.check.padEnd(10)} ${run.verdict.padEnd(5)} ${run.reason}`);
  for (const reason of view.reasons) lines.push(`  reason: ${reason}`);
  const blocking: string[] = [];
  if (view.state === 'EVICT') blocking.push('the node is EVICT');
  if (request.failOn !== 'evict') {
    if (view.state === 'WARN') blocking.push('the node is WARN');
    for (const run of view.runs) if (run.verdict === 'FAIL') blocking.push(`${run.check} failed`);
  }
  if (request.failOn === 'error') {
    for (const run of view.runs)
      if (run.verdict === 'ERROR') blocking.push(`${run.check} could not run`);
  }
  lines.push(blocking.length === 0 ? 'READY' : `NOT READY: ${blocking.join('; ')}`);
  return { exitCode: blocking.length === 0 ? 0 : 1, report: `${lines.join('\n')}\n` };
}
