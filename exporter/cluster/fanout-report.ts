/**
 * Pure renderings of the cluster-wide /status fan-out: Autopilot's text report (which people and
 * scripts grep) and an NDJSON stream of the same facts.
 *
 * The text follows utils/runHealthchecks.py as printed behind the Go handler's first line:
 *
 *   Asking to run on remote node(s) <host|all> or with node label <nodelabel|None>
 *   <blank>
 *   Workload: <namespace>: <selector>               (only with job=, as the script printed it)
 *   Initiated connection to ['<url>'].              (one per node asked)
 *   <blank>
 *   Autopilot Endpoint: <ip|None>                   (one block per node, see renderNodeBlock)
 *   ...
 *   -------------------------------------
 *   <blank>
 *   Node Summary:
 *   <blank>
 *   <pprint of {node: [statuses]}>
 *   <blank>
 *   runtime: <seconds> sec
 *
 * One deliberate difference: the script began each block with a newline and print() ended it with
 * another, so consecutive blocks were two blank lines apart. Here every block is self-contained
 * (it can be streamed the moment its node answers) and blocks are one blank line apart.
 */

import type { Verdict } from '../checks/check.js';
import { CHECK_TABLE } from '../checks/index.js';

export type NodeOutcome = 'answered' | 'unreachable' | 'not-ready' | 'no-endpoint' | 'refused';

export interface RemoteRun {
  readonly check: string;
  readonly verdict: Verdict;
  readonly reason: string;
  /** The node's Autopilot text block for this check. */
  readonly text: string;
}

export interface NodeReport {
  readonly node: string;
  /** The peer's address:port ("10.0.0.5:3333", "[fd00::5]:3333"), undefined when it has none. */
  readonly endpoint: string | undefined;
  /** The URL asked, undefined when nothing was asked. */
  readonly url: string | undefined;
  readonly outcome: NodeOutcome;
  /** Status of the answer, when one came. */
  readonly httpStatus: number | undefined;
  /** Why, for any outcome but 'answered'. */
  readonly detail: string;
  /** The node's own verdict, when it answered. */
  readonly health: { readonly state: string; readonly reasons: readonly string[] } | undefined;
  readonly runs: readonly RemoteRun[];
  readonly durationSeconds: number;
}

export interface FanoutHeaderInput {
  /** The host parameter as given; undefined when it was defaulted (printed `all`, as Autopilot). */
  readonly host: string | undefined;
  /** The nodelabel selector; undefined prints `None`, as Autopilot. */
  readonly nodelabel: string | undefined;
  /** The job parameter, `namespace:selector`; undefined prints no Workload line. */
  readonly job: string | undefined;
  /** The URLs asked, in the order asked. Nodes without an endpoint were never asked. */
  readonly urls: readonly string[];
}

export interface NodeReportJson {
  readonly type: 'node';
  readonly node: string;
  readonly endpoint: string | null;
  readonly url: string | null;
  readonly outcome: NodeOutcome;
  readonly httpStatus: number | null;
  readonly detail: string;
  readonly status: readonly string[];
  readonly health: { readonly state: string; readonly reasons: readonly string[] } | null;
  readonly runs: readonly {
    readonly check: string;
    readonly verdict: Verdict;
    readonly reason: string;
  }[];
  readonly durationSeconds: number;
}

export interface SummaryJson {
  readonly type: 'summary';
  readonly nodes: number;
  readonly ok: number;
  readonly notOk: number;
  readonly summary: Readonly<Record<string, readonly string[]>>;
  readonly runtimeSeconds: number;
}

const OK = 'OK';
const SEPARATOR = '-------------------------------------';
const PPRINT_WIDTH = 80;

/** The label for a node that gave no usable answer; undefined for 'answered'. */
function failureLabel(report: NodeReport): string | undefined {
  switch (report.outcome) {
    case 'answered':
      return undefined;
    case 'unreachable':
      return 'Connection to Server Failed';
    case 'not-ready':
      return 'Not Ready';
    case 'no-endpoint':
      return 'No Autopilot Endpoint';
    case 'refused':
      return report.httpStatus === undefined
        ? 'Request Refused'
        : `Request Refused (${report.httpStatus})`;
  }
}

/**
 * Autopilot's "Node Status": ['OK'], or one entry per failing check. ERROR is not a health finding,
 * but hiding it behind OK would report a check that never completed as healthy, so it gets its own
 * word. A check that appears twice is listed once.
 */
export function nodeStatus(report: NodeReport): string[] {
  const label = failureLabel(report);
  if (label !== undefined) return [label];
  const statuses: string[] = [];
  for (const run of report.runs) {
    const status =
      run.verdict === 'FAIL'
        ? `${CHECK_TABLE.statusName(run.check)} Failed`
        : run.verdict === 'ERROR'
          ? `${CHECK_TABLE.statusName(run.check)} Error`
          : undefined;
    if (status !== undefined && !statuses.includes(status)) statuses.push(status);
  }
  return statuses.length === 0 ? [OK] : statuses;
}

export function renderHeader(input: FanoutHeaderInput): string {
  let text = `Asking to run on remote node(s) ${input.host ?? 'all'} or with node label ${input.nodelabel ?? 'None'}\n\n`;
  // The script printed the job as print('Workload:', ': '.join(job.split(':'))).
  if (input.job !== undefined) text += `Workload: ${input.job.split(':').join(': ')}\n`;
  for (const url of input.urls) text += `Initiated connection to ${pyListRepr([url])}.\n`;
  return `${text}\n`;
}

/** The address the script printed (address.ip): the endpoint without its port or IPv6 brackets. */
function endpointAddress(endpoint: string | undefined): string {
  if (endpoint === undefined || endpoint === '') return 'None';
  const bracketed = /^\[([^\]]*)\](?::\d*)?$/.exec(endpoint);
  if (bracketed !== null) return bracketed[1]!;
  const colon = endpoint.indexOf(':');
  // More than one colon without brackets is a bare IPv6 address, not address:port.
  if (colon === -1 || endpoint.indexOf(':', colon + 1) !== -1) return endpoint;
  return endpoint.slice(0, colon);
}

/**
 * A missing final newline would glue the next check's first line onto this one's last line and
 * break line-oriented greps, so every block ends with one.
 */
function responseText(report: NodeReport): string {
  const label = failureLabel(report);
  if (label !== undefined) return report.detail === '' ? label : `${label}: ${report.detail}`;
  return report.runs
    .map((run) => (run.text === '' || run.text.endsWith('\n') ? run.text : `${run.text}\n`))
    .join('');
}

/** One node's block, byte for byte the script's layout (its reply is followed by a newline). */
export function renderNodeBlock(report: NodeReport): string {
  return (
    `Autopilot Endpoint: ${endpointAddress(report.endpoint)}\n` +
    `Node: ${report.node}\n` +
    `url(s): ${report.url ?? 'None'}\n` +
    `Response:\n${responseText(report)}\n` +
    `Node Status: ${nodeStatus(report).join(', ')}\n` +
    `${SEPARATOR}\n\n`
  );
}

/**
 * What the summary needs of each node once its report is written: its name and statuses, nothing
 * of its answer. A streamed fan-out keeps this instead of the reports; the common ['OK'] is one
 * shared array, so 10,000 healthy nodes cost their names and a pointer each.
 */
export class StatusTally {
  readonly #byNode = new Map<string, readonly string[]>();

  static of(reports: Iterable<NodeReport>): StatusTally {
    const tally = new StatusTally();
    for (const report of reports) tally.add(report);
    return tally;
  }

  add(report: NodeReport): void {
    const statuses = nodeStatus(report);
    this.#byNode.set(report.node, isOk(statuses) ? OK_STATUSES : statuses);
  }

  get size(): number {
    return this.#byNode.size;
  }

  /** Each node once (the last report wins, as in the script's dict), in Python's sorted key order. */
  entries(): [string, readonly string[]][] {
    return [...this.#byNode.entries()].sort(([a], [b]) => compareCodePoints(a, b));
  }
}

const OK_STATUSES: readonly string[] = Object.freeze([OK]);

function isOk(statuses: readonly string[]): boolean {
  return statuses.length === 1 && statuses[0] === OK;
}

function tallyOf(reports: StatusTally | readonly NodeReport[]): StatusTally {
  return reports instanceof StatusTally ? reports : StatusTally.of(reports);
}

export function renderSummary(
  reports: StatusTally | readonly NodeReport[],
  runtimeSeconds: number,
): string {
  return `Node Summary:\n\n${pformatStatusDict(tallyOf(reports).entries())}\n\nruntime: ${formatSeconds(runtimeSeconds)} sec\n`;
}

export function nodeReportToJson(report: NodeReport): NodeReportJson {
  return {
    type: 'node',
    node: report.node,
    endpoint: report.endpoint ?? null,
    url: report.url ?? null,
    outcome: report.outcome,
    httpStatus: report.httpStatus ?? null,
    detail: report.detail,
    status: nodeStatus(report),
    health:
      report.health === undefined
        ? null
        : { state: report.health.state, reasons: [...report.health.reasons] },
    runs: report.runs.map((run) => ({
      check: run.check,
      verdict: run.verdict,
      reason: run.reason,
    })),
    durationSeconds: report.durationSeconds,
  };
}

export function summaryToJson(
  reports: StatusTally | readonly NodeReport[],
  runtimeSeconds: number,
): SummaryJson {
  const entries = tallyOf(reports).entries();
  const ok = entries.filter(([, statuses]) => isOk(statuses)).length;
  return {
    type: 'summary',
    nodes: entries.length,
    ok,
    notOk: entries.length - ok,
    // fromEntries defines own properties, so a node named __proto__ stays an ordinary key.
    summary: Object.fromEntries(entries),
    runtimeSeconds,
  };
}

export function renderNdjsonLine(value: NodeReportJson | SummaryJson): string {
  return `${JSON.stringify(value)}\n`;
}

/** str(float) for a runtime: at most three decimals, and always a decimal point, as Python prints. */
function formatSeconds(seconds: number): string {
  const rounded = Math.round(seconds * 1000) / 1000;
  return Number.isInteger(rounded) ? rounded.toFixed(1) : String(rounded);
}

// ---------------------------------------------------------------------------------------------
// Python repr() and pprint.pformat() (width 80, sort_dicts) for a dict of lists of strings, the
// only shape the summary needs. Lengths are in code points, as Python's len().

/** Python's Zs/Zl/Zp/Cc/Cf/Cs/Co/Cn, which str.isprintable() rejects (except the ASCII space). */
const NON_PRINTABLE = /^[\p{Zs}\p{Zl}\p{Zp}\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}]$/u;

function hexEscape(prefix: string, codePoint: number, digits: number): string {
  return `\\${prefix}${codePoint.toString(16).padStart(digits, '0')}`;
}

export function pyRepr(text: string): string {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = quote;
  for (const char of text) {
    const codePoint = char.codePointAt(0)!;
    if (char === quote || char === '\\') out += `\\${char}`;
    else if (char === '\t') out += '\\t';
    else if (char === '\n') out += '\\n';
    else if (char === '\r') out += '\\r';
    else if (codePoint < 0x20 || codePoint === 0x7f) out += hexEscape('x', codePoint, 2);
    else if (codePoint < 0x7f || !NON_PRINTABLE.test(char)) out += char;
    else if (codePoint <= 0xff) out += hexEscape('x', codePoint, 2);
    else if (codePoint <= 0xffff) out += hexEscape('u', codePoint, 4);
    else out += hexEscape('U', codePoint, 8);
  }
  return out + quote;
}

function pyListRepr(items: readonly string[]): string {
  return `[${items.map(pyRepr).join(', ')}]`;
}

function pyLength(text: string): number {
  return [...text].length;
}

/** Python orders str by code point; JavaScript's < compares UTF-16 units. */
function compareCodePoints(a: string, b: string): number {
  const left = [...a];
  const right = [...b];
  for (let i = 0; i < Math.min(left.length, right.length); i++) {
    const difference = left[i]!.codePointAt(0)! - right[i]!.codePointAt(0)!;
    if (difference !== 0) return difference;
  }
  return left.length - right.length;
}

/** str.splitlines(keepends=True). */
const PY_LINE =
  // eslint-disable-next-line no-control-regex -- Python ends lines at these control characters too.
  /[^\n\r\v\f\x1c-\x1e\x85\u2028\u2029]*(?:\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029])?/gu;
/** re.findall(r'\S*\s*', line) with Python's notion of whitespace (str.isspace). */
const PY_WORD =
  // eslint-disable-next-line no-control-regex -- str.isspace() counts \x1c-\x1f as whitespace.
  /[^\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*/gu;

function nonEmptyMatches(text: string, pattern: RegExp): string[] {
  return [...text.matchAll(pattern)].map((match) => match[0]).filter((part) => part !== '');
}

/** pprint's _pprint_str at a nesting level above 1: a too-long string as adjacent literals. */
function pformatLongString(text: string, indent: number, allowance: number): string {
  const lines = nonEmptyMatches(text, PY_LINE);
  const maxWidth = PPRINT_WIDTH - indent;
  const chunks: string[] = [];
  lines.forEach((line, lineIndex) => {
    const lastLine = lineIndex === lines.length - 1;
    const lineWidth = lastLine ? maxWidth - allowance : maxWidth;
    if (pyLength(pyRepr(line)) <= lineWidth) {
      chunks.push(pyRepr(line));
      return;
    }
    const parts = nonEmptyMatches(line, PY_WORD);
    let current = '';
    parts.forEach((part, partIndex) => {
      const partWidth =
        lastLine && partIndex === parts.length - 1 ? maxWidth - allowance : maxWidth;
      const candidate = current + part;
      if (pyLength(pyRepr(candidate)) > partWidth) {
        if (current !== '') chunks.push(pyRepr(current));
        current = part;
      } else {
        current = candidate;
      }
    });
    if (current !== '') chunks.push(pyRepr(current));
  });
  if (chunks.length <= 1) return pyRepr(text);
  return chunks.join(`\n${' '.repeat(indent)}`);
}

function pformatString(text: string, indent: number, allowance: number): string {
  const repr = pyRepr(text);
  if (text === '' || pyLength(repr) <= PPRINT_WIDTH - indent - allowance) return repr;
  return pformatLongString(text, indent, allowance);
}

function pformatList(items: readonly string[], indent: number, allowance: number): string {
  const repr = pyListRepr(items);
  if (pyLength(repr) <= PPRINT_WIDTH - indent - allowance) return repr;
  const itemIndent = indent + 1;
  const itemAllowance = allowance + 1;
  const rendered = items.map((item, index) =>
    pformatString(item, itemIndent, index === items.length - 1 ? itemAllowance : 1),
  );
  return `[${rendered.join(`,\n${' '.repeat(itemIndent)}`)}]`;
}

/** pprint.pformat of {node: [statuses]}; entries must already be in sorted key order. */
export function pformatStatusDict(
  entries: readonly (readonly [string, readonly string[]])[],
): string {
  const oneLine = `{${entries.map(([key, value]) => `${pyRepr(key)}: ${pyListRepr(value)}`).join(', ')}}`;
  if (pyLength(oneLine) <= PPRINT_WIDTH) return oneLine;
  const keyIndent = 1;
  const valueAllowance = 1;
  const rendered = entries.map(([key, value]) => {
    const keyRepr = pyRepr(key);
    return `${keyRepr}: ${pformatList(value, keyIndent + pyLength(keyRepr) + 2, valueAllowance)}`;
  });
  return `{${rendered.join(`,\n${' '.repeat(keyIndent)}`)}}`;
}
