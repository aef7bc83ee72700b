/**
 * The status page's cluster view (GET / from a browser): one row per node with its state, GPUs and
 * each check's last verdict and age, a count per state, and filters that work without JavaScript
 * (a GET form; the server filters). Standalone, the one row is this node. In Kubernetes mode every
 * node with an Autopilot pod is asked for its summary (GET /node/<name>/summary: read from its
 * store, nothing runs), at most AUTOPILOT_FANOUT_CONCURRENCY at once, and its row is written the
 * moment it answers: the head leaves before any node is asked.
 *
 * Size: 1,000 rows must stay under 500 KB, so rows omit optional end tags, a cell is its verdict
 * and age (the reason only as a clipped title, and only when not PASS), and columns are identified
 * by the table head, not per cell.
 */

import { PassThrough } from 'node:stream';
import type Koa from 'koa';
import { ParamError } from '../checks/check.js';
import { FANOUT_HEADER, planNodes, type PlannedNode } from '../cluster/fanout.js';
import { urlHost } from '../net-names.js';
import type { ApiDeps } from './app.js';
import type { ClusterDeps } from './cluster-status.js';
import { drainGate } from './cluster-status.js';
import { forEachBounded } from '../concurrency.js';
import {
  localSummary,
  readSummary,
  unansweredSummary,
  type CheckCell,
  type NodeSummary,
} from './status-page-data.js';
import {
  ageText,
  clip,
  esc,
  PAGE_STATES,
  pageFoot,
  pageHead,
  queryValue,
  setPageHeaders,
  type PageState,
} from './status-page-html.js';
import { renderRunForm, RESULTS_SECTION } from './status-page-run.js';

/** A summary is read from memory: a node that takes longer is in trouble, and shown so. */
export const SUMMARY_DEADLINE_MS = 5_000;

export interface ClusterFilter {
  /** '' for every state. */
  readonly state: PageState | '';
  /** '' for every check; otherwise only that check's column. */
  readonly check: string;
  /** A part of the node name, any case; '' for every node. */
  readonly node: string;
}

/** Pure: the filter a query asks for; a state or check the page does not know is a ParamError. */
export function parseFilter(
  query: Readonly<Record<string, string | string[] | undefined>>,
  checkNames: readonly string[],
): ClusterFilter {
  const state = queryValue(query.state).toUpperCase();
  const check = queryValue(query.check);
  if (state !== '' && !(PAGE_STATES as readonly string[]).includes(state)) {
    throw new ParamError(`state ${JSON.stringify(state)} is not one of ${PAGE_STATES.join(', ')}`);
  }
  if (check !== '' && !checkNames.includes(check)) {
    throw new ParamError(
      `check ${JSON.stringify(check)} is not a check of this exporter (${checkNames.join(', ')})`,
    );
  }
  return { state: state as PageState | '', check, node: queryValue(query.node) };
}

export function nameMatches(node: string, filter: ClusterFilter): boolean {
  return filter.node === '' || node.toLowerCase().includes(filter.node.toLowerCase());
}

/** Per state, of the nodes the name filter keeps (the state filter does not change the counts). */
export type StateCounts = Record<PageState, number>;

export function emptyCounts(): StateCounts {
  return Object.fromEntries(PAGE_STATES.map((state) => [state, 0])) as StateCounts;
}

function renderCell(cell: CheckCell | undefined): string {
  if (cell === undefined) return '<td>—';
  const title =
    cell.verdict === 'PASS' || cell.reason === '' ? '' : ` title="${esc(clip(cell.reason, 100))}"`;
  return `<td class=${cell.verdict}${title}>${cell.verdict} ${ageText(cell.ageSeconds * 1000)}`;
}

/**
 * Pure: one node's row; columns are the checks shown, in the table head's order. Cells carry their
 * state or verdict as their class (the stylesheet colours them) and say it in words.
 */
export function renderRow(summary: NodeSummary, columns: readonly string[]): string {
  const node = esc(summary.node);
  const cells = new Map(summary.checks.map((cell) => [cell.check, cell]));
  const why = summary.detail === '' ? '' : ` <small>${esc(clip(summary.detail, 80))}</small>`;
  const gpu = summary.gpu.count === 0 ? '' : `${esc(summary.gpu.model)} ×${summary.gpu.count}`;
  return (
    `<tr data-node="${node}" data-state=${summary.state}>` +
    `<td><input type=checkbox name=node value="${node}" form=run aria-label="${node}">` +
    `<th scope=row><a href="/node/${esc(encodeURIComponent(summary.node))}">${node}</a>` +
    `<td class=${summary.state}>${summary.state}${why}<td>${gpu}` +
    `${columns.map((check) => renderCell(cells.get(check))).join('')}\n`
  );
}

/** The periodic checks (the ones with recent verdicts everywhere), or the one the filter names. */
export function columnsOf(filter: ClusterFilter, periodic: readonly string[]): readonly string[] {
  return filter.check === '' ? periodic : [filter.check];
}

function option(value: string, label: string, selected: boolean): string {
  return `<option value="${esc(value)}"${selected ? ' selected' : ''}>${esc(label)}</option>`;
}

/** Pure: the filter form; its values are the filter's, so a filtered page says what it shows. */
export function renderFilterForm(filter: ClusterFilter, checkNames: readonly string[]): string {
  const states = ['', ...PAGE_STATES].map((s) => option(s, s || 'any', s === filter.state));
  const checks = ['', ...checkNames].map((c) => option(c, c || 'all', c === filter.check));
  return (
    `<form id="filter" method="get" action="/" role="search" aria-label="Filter the nodes">` +
    `<label>State <select name="state">${states.join('')}</select></label> ` +
    `<label>Check <select name="check">${checks.join('')}</select></label> ` +
    `<label>Node <input type="search" name="node" value="${esc(filter.node)}"></label> ` +
    `<button type="submit">Filter</button> <a href="/">clear</a></form>\n`
  );
}

/** Pure: everything before the first row. */
export function renderClusterTop(
  nodeName: string,
  filter: ClusterFilter,
  checkNames: readonly string[],
  columns: readonly string[],
): string {
  const heads = columns.map((c) => `<th scope=col data-check="${esc(c)}">${esc(c)}</th>`);
  return (
    `${pageHead('Autopilot: GPU health', nodeName)}<h1>GPU health</h1>\n` +
    renderFilterForm(filter, checkNames) +
    `<div class="scroll"><table id="nodes"><caption>Nodes, their state and each check's last verdict and age</caption>\n` +
    `<thead><tr><th scope=col><span class="sr">Select</span></th><th scope=col>Node</th>` +
    `<th scope=col>State</th><th scope=col>GPUs</th>${heads.join('')}</tr></thead>\n<tbody>\n`
  );
}

/** Pure: the counts, each a link to that state's filter; CSS shows them above the table. */
export function renderCounts(counts: StateCounts, filter: ClusterFilter): string {
  const keep = new URLSearchParams();
  if (filter.check !== '') keep.set('check', filter.check);
  if (filter.node !== '') keep.set('node', filter.node);
  const links = PAGE_STATES.map((state) => {
    const query = new URLSearchParams(keep);
    query.set('state', state);
    return `<li><a class="count ${state}" href="/?${esc(query.toString())}" data-state=${state} data-count=${counts[state]}>${counts[state]} ${state}</a></li>`;
  });
  const total = PAGE_STATES.reduce((sum, state) => sum + counts[state], 0);
  return `<section id="counts" aria-label="Nodes per state"><p>${total} nodes</p><ul>${links.join('')}</ul></section>\n`;
}

/** Pure: everything after the last row. */
export function renderClusterBottom(
  counts: StateCounts,
  filter: ClusterFilter,
  checkNames: readonly string[],
  shown: number,
): string {
  const none = shown === 0 ? `<p id="none">No node matches the filter.</p>\n` : '';
  return (
    `</tbody></table></div>\n${none}${renderCounts(counts, filter)}` +
    `${renderRunForm(checkNames)}${RESULTS_SECTION}${pageFoot()}`
  );
}

/** Pure: the whole page for summaries already at hand (standalone mode, tests). */
export function renderClusterPage(
  nodeName: string,
  summaries: readonly NodeSummary[],
  filter: ClusterFilter,
  checkNames: readonly string[],
  periodic: readonly string[],
): string {
  const columns = columnsOf(filter, periodic);
  const counts = emptyCounts();
  let rows = '';
  let shown = 0;
  for (const summary of summaries.filter((s) => nameMatches(s.node, filter))) {
    counts[summary.state] += 1;
    if (filter.state !== '' && summary.state !== filter.state) continue;
    rows += renderRow(summary, columns);
    shown += 1;
  }
  return `${renderClusterTop(nodeName, filter, checkNames, columns)}${rows}${renderClusterBottom(counts, filter, checkNames, shown)}`;
}

export function serveClusterView(ctx: Koa.Context, deps: ApiDeps): void {
  const checkNames = [...deps.checks.keys()];
  const filter = parseFilter(ctx.query, checkNames);
  setPageHeaders(ctx);
  if (deps.cluster === undefined) {
    ctx.body = renderClusterPage(
      deps.nodeName,
      [localSummary(deps)],
      filter,
      checkNames,
      deps.periodicChecks,
    );
    return;
  }
  streamClusterView(ctx, deps, deps.cluster, filter);
}

/** Sets the body to a stream at once; the rows follow as nodes answer. */
function streamClusterView(
  ctx: Koa.Context,
  deps: ApiDeps,
  cluster: ClusterDeps,
  filter: ClusterFilter,
): void {
  const checkNames = [...deps.checks.keys()];
  const columns = columnsOf(filter, deps.periodicChecks);
  const peers = cluster.peers();
  const nodes = [...new Set(peers.flatMap((p) => (p.node === undefined ? [] : [p.node])))]
    .filter((node) => nameMatches(node, filter))
    .sort();
  const planned = planNodes(nodes, peers, { checks: [], params: {} }, cluster.defaultPort);
  const aborted = new AbortController();
  ctx.req.once('close', () => {
    if (!ctx.res.writableFinished) aborted.abort(new Error('the caller closed the connection'));
  });
  const stream = new PassThrough();
  ctx.body = stream;
  stream.write(renderClusterTop(deps.nodeName, filter, checkNames, columns));
  const counts = emptyCounts();
  let shown = 0;
  const write = (text: string): void => {
    if (!stream.destroyed) stream.write(text);
  };
  void askSummaries(planned, deps, cluster, {
    signal: aborted.signal,
    ready: drainGate(stream, aborted.signal),
    onSummary: (summary) => {
      counts[summary.state] += 1;
      if (filter.state !== '' && summary.state !== filter.state) return;
      shown += 1;
      write(renderRow(summary, columns));
    },
  }).finally(() => {
    if (!stream.destroyed) stream.end(renderClusterBottom(counts, filter, checkNames, shown));
  });
}

interface AskSummaryOptions {
  readonly signal: AbortSignal;
  readonly ready: () => Promise<void>;
  readonly onSummary: (summary: NodeSummary) => void;
}

/** Every planned node's summary, at most the fan-out's concurrency at once; this node in process. */
export async function askSummaries(
  planned: readonly PlannedNode[],
  deps: ApiDeps,
  cluster: ClusterDeps,
  options: AskSummaryOptions,
): Promise<void> {
  const asked: PlannedNode[] = [];
  for (const plan of planned) {
    if (plan.unasked !== undefined)
      options.onSummary(unansweredSummary(plan.node, plan.unasked.detail));
    else asked.push(plan);
  }
  await forEachBounded(
    asked,
    { limit: cluster.concurrency, signal: options.signal, ready: options.ready },
    async (plan) =>
      options.onSummary(
        plan.node === deps.nodeName
          ? localSummary(deps)
          : await askSummary(plan, cluster, options.signal),
      ),
  );
}

export function summaryUrl(plan: PlannedNode, defaultPort: number): string {
  const peer = plan.peer!;
  const path = `/node/${encodeURIComponent(plan.node)}/summary`;
  return `http://${urlHost(peer.address)}:${peer.port ?? defaultPort}${path}`;
}

async function askSummary(
  plan: PlannedNode,
  cluster: ClusterDeps,
  signal: AbortSignal,
): Promise<NodeSummary> {
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(new Error('deadline')), SUMMARY_DEADLINE_MS);
  try {
    const response = await cluster.fetch(summaryUrl(plan, cluster.defaultPort), {
      headers: { accept: 'application/json', [FANOUT_HEADER]: cluster.nodeName },
      signal: AbortSignal.any([signal, deadline.signal]),
    });
    const body = await response.text();
    if (!response.ok) return unansweredSummary(plan.node, `answered ${response.status}`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      parsed = undefined;
    }
    const summary = readSummary(parsed);
    if (summary === undefined) return unansweredSummary(plan.node, 'answered no summary');
    // The row is the node the page asked about, whatever name the answer gives.
    return { ...summary, node: plan.node };
  } catch (error) {
    const detail = deadline.signal.aborted
      ? `no answer within ${SUMMARY_DEADLINE_MS / 1000} s`
      : error instanceof Error
        ? error.message
        : String(error);
    return unansweredSummary(plan.node, detail);
  } finally {
    clearTimeout(timer);
  }
}
