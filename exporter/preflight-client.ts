/**
 * The pre-flight client (`autopilot preflight`): asks the exporters whether a node may run a job,
 * and judges the answer, either this node's own /status or a cluster report naming it. Pure; main.ts
 * makes the request and sets the exit code.
 */

import { parseGoDuration } from './config/duration.js';

export type FailOn = 'warn' | 'evict' | 'error';
/** What an exporter that cannot be asked means: fail blocks the job, pass lets it start. */
export type OnUnreachable = 'fail' | 'pass';

export interface PreflightRequest {
  readonly url: string;
  readonly node: string;
  readonly maxAge: string;
  readonly checks: readonly string[];
  readonly failOn: FailOn;
  readonly onUnreachable: OnUnreachable;
}

/** Throws an Error naming a bad option. */
export function parsePreflightOptions(
  options: ReadonlyMap<string, string>,
  node: string,
  knownChecks: readonly string[],
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
  // Checked here, not by the exporter: a typo would otherwise block every job as "NOT READY".
  const unknown = checks.find((c) => !knownChecks.includes(c));
  if (unknown !== undefined) {
    throw new Error(
      `invalid --checks: unknown check ${JSON.stringify(unknown)}; known checks: ${knownChecks.join(', ')}`,
    );
  }
  const failOn = options.get('fail-on');
  if (failOn !== 'warn' && failOn !== 'evict' && failOn !== 'error') {
    throw new Error(`invalid --fail-on ${JSON.stringify(failOn)}: expected warn, evict or error`);
  }
  // Absent (a caller older than the option) means the documented default.
  const onUnreachable = options.get('on-unreachable') ?? 'fail';
  if (onUnreachable !== 'fail' && onUnreachable !== 'pass') {
    throw new Error(
      `invalid --on-unreachable ${JSON.stringify(onUnreachable)}: expected fail or pass`,
    );
  }
  return { url: url.replace(/\/+$/, ''), node, maxAge, checks, failOn, onUnreachable };
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

/**
 * Pure: the words of an error and of its causes. fetch says only "fetch failed"; the reason an
 * operator can act on (ECONNREFUSED, ENOTFOUND, a timeout) is in error.cause, and for a host name
 * with several addresses in the cause's AggregateError.errors.
 */
export function describeError(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    if (!(current instanceof Error)) {
      parts.push(typeof current === 'string' ? current : JSON.stringify(current));
      break;
    }
    const inner = (current as { errors?: unknown }).errors;
    const code = (current as { code?: unknown }).code;
    if (current.message !== '') parts.push(current.message);
    else if (Array.isArray(inner) && inner.length > 0)
      parts.push(inner.map((e) => (e instanceof Error ? e.message : String(e))).join('; '));
    else if (typeof code === 'string') parts.push(code);
    current = current.cause;
  }
  return parts.length === 0 ? 'unknown error' : parts.join(': ');
}

/** Pure: the report when the exporters could not be asked; --on-unreachable decides the exit. */
export function judgeUnreachable(
  url: string,
  error: unknown,
  request: PreflightRequest,
): { readonly exitCode: 0 | 1; readonly report: string } {
  const reason = `preflight ${request.node}: cannot ask ${url}: ${describeError(error)}`;
  return request.onUnreachable === 'pass'
    ? {
        exitCode: 0,
        report: `${reason}\nREADY: the exporters could not be asked and --on-unreachable is pass\n`,
      }
    : { exitCode: 1, report: `${reason}\nNOT READY\n` };
}
