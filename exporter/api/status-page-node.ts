/**
 * The status page's node view (GET /node/<name>): every check's last run with its per-device
 * verdicts, reasons and evidence (a GPU's uuid, serial and bus id among them), the newest runs from
 * the store's history, and in Kubernetes mode the node's labels, its condition and its taints.
 *
 * A node's results live in its own exporter, so another node's view asks that node
 * (GET /node/<name>?format=json, marked as coming from here so it cannot be passed on again) and
 * renders its answer here; the labels, condition and taints are read from the Kubernetes API, so
 * they show even when that node's exporter does not answer. Also GET /node/<name>/summary, the
 * cheap answer the cluster view asks each node for.
 */

import type Koa from 'koa';
import { ParamError } from '../checks/check.js';
import { FANOUT_HEADER } from '../cluster/fanout.js';
import type { NodeInfo } from '../k8s/ports.js';
import { urlHost } from '../net-names.js';
import { boundedInteger } from '../params.js';
import type { ApiDeps } from './app.js';
import { localDetail, localSummary, readDetail, type NodeDetail } from './status-page-data.js';
import {
  ageText,
  esc,
  pageFoot,
  pageHead,
  queryValue,
  setPageHeaders,
} from './status-page-html.js';
import { wantsJson } from './request.js';

export const DEFAULT_HISTORY_RUNS = 20;
const DETAIL_DEADLINE_MS = 10_000;

type Json = Record<string, unknown>;
const str = (value: unknown): string =>
  typeof value === 'string' ? value : typeof value === 'number' ? String(value) : '';
const records = (value: unknown): Json[] =>
  Array.isArray(value) ? value.filter((v): v is Json => typeof v === 'object' && v !== null) : [];
const ago = (seconds: unknown): string =>
  typeof seconds === 'number' ? `${ageText(seconds * 1000)} ago` : '';

export function historyRunsOf(value: string | string[] | undefined): number {
  const given = queryValue(value);
  if (given === '') return DEFAULT_HISTORY_RUNS;
  const runs = boundedInteger(given, 1, 1000);
  if (runs === undefined)
    throw new ParamError(`runs ${JSON.stringify(given)} is not a whole number 1-1000`);
  return runs;
}

/** GET /node/<name>/summary: this node only; the cluster view asks each node for its own. */
export function serveSummary(ctx: Koa.Context, deps: ApiDeps, name: string): void {
  if (name !== deps.nodeName) {
    throw new ParamError(`this is node ${deps.nodeName}, not ${name}; ask ${name}'s own exporter`);
  }
  ctx.body = localSummary(deps);
}

export async function serveNodeView(ctx: Koa.Context, deps: ApiDeps, name: string): Promise<void> {
  const runs = historyRunsOf(ctx.query.runs);
  const answer: DetailAnswer =
    name === deps.nodeName
      ? { ok: true, value: localDetail(deps, runs) }
      : await askDetail(ctx, deps, name, runs);
  if (wantsJson(ctx, queryValue(ctx.query.format) || undefined)) {
    ctx.status = answer.ok ? 200 : 502;
    ctx.body = answer.ok ? answer.value : { error: answer.error };
    return;
  }
  const node = deps.cluster === undefined ? undefined : await readNode(deps, name);
  setPageHeaders(ctx);
  ctx.body = renderNodePage(deps.nodeName, name, answer, node);
}

export type DetailAnswer =
  | { readonly ok: true; readonly value: NodeDetail }
  | { readonly ok: false; readonly error: string };

async function askDetail(
  ctx: Koa.Context,
  deps: ApiDeps,
  name: string,
  runs: number,
): Promise<DetailAnswer> {
  if (deps.cluster === undefined) {
    throw new ParamError(
      `node ${name} is not this node (${deps.nodeName}); other nodes are reached through Kubernetes (standalone mode)`,
    );
  }
  if (ctx.get(FANOUT_HEADER) !== '') {
    throw new ParamError(
      `node ${name} is not this node (${deps.nodeName}) and the request was passed on already`,
    );
  }
  const { cluster } = deps;
  const peer =
    cluster.peers().find((p) => p.node === name && p.ready) ??
    cluster.peers().find((p) => p.node === name);
  if (peer === undefined) return { ok: false, error: `no Autopilot pod is known on node ${name}` };
  const url = `http://${urlHost(peer.address)}:${peer.port ?? cluster.defaultPort}/node/${encodeURIComponent(name)}?format=json&runs=${runs}`;
  try {
    const response = await cluster.fetch(url, {
      headers: { accept: 'application/json', [FANOUT_HEADER]: cluster.nodeName },
      signal: AbortSignal.timeout(DETAIL_DEADLINE_MS),
    });
    const body = await response.text();
    if (!response.ok)
      return {
        ok: false,
        error: `${name}'s exporter answered ${response.status}: ${body.slice(0, 300)}`,
      };
    const value = readDetail(JSON.parse(body));
    return value === undefined
      ? { ok: false, error: `${name}'s exporter answered no node detail` }
      : { ok: true, value };
  } catch (error) {
    return {
      ok: false,
      error: `${name}'s exporter did not answer: ${error instanceof Error ? error.message : String(error)}`,
    };
  }
}

async function readNode(deps: ApiDeps, name: string): Promise<NodeInfo | string> {
  try {
    return await deps.cluster!.kube.getNode(name);
  } catch (error) {
    return `cannot read node ${name} from the Kubernetes API: ${error instanceof Error ? error.message : String(error)}`;
  }
}

/** Evidence values are numbers, strings, booleans or null (checks/check.ts); JSON says them all. */
function evidenceValue(value: unknown): string {
  return typeof value === 'string' ? value : value === null ? '—' : JSON.stringify(value);
}

function evidenceList(evidence: unknown): string {
  if (typeof evidence !== 'object' || evidence === null) return '';
  const items = Object.entries(evidence as Json).map(
    ([key, value]) => `<li><span class="k">${esc(key)}</span> ${esc(evidenceValue(value))}</li>`,
  );
  return items.length === 0 ? '' : `<ul class="evidence">${items.join('')}</ul>`;
}

/** Pure: one check's devices, or nothing when the run has none. */
export function renderDevices(result: Json): string {
  const devices = records(result.devices);
  if (devices.length === 0) return '';
  const check = str(result.check);
  const rows = devices.map((d) => {
    const verdict = str(d.verdict);
    const fatal = d.fatal === true ? ' <strong>fatal</strong>' : '';
    return (
      `<tr data-device="${esc(str(d.id))}" data-verdict="${esc(verdict)}"><th scope=row>${esc(str(d.id) || 'node')}</th>` +
      `<td class="${esc(verdict)}">${esc(verdict)}${fatal}</td><td>${esc(str(d.reason))}</td><td>${evidenceList(d.evidence)}</td></tr>\n`
    );
  });
  return (
    `<table class="devices" data-check="${esc(check)}"><caption>${esc(check)}: each device</caption>\n` +
    `<thead><tr><th scope=col>Device</th><th scope=col>Verdict</th><th scope=col>Reason</th><th scope=col>Evidence</th></tr></thead>\n` +
    `<tbody>\n${rows.join('')}</tbody></table>\n`
  );
}

/** Pure: the last run of every check, then each one's devices. */
export function renderChecks(results: readonly Json[]): string {
  const rows = results.map((r) => {
    const verdict = str(r.verdict);
    return (
      `<tr data-check="${esc(str(r.check))}" data-verdict="${esc(verdict)}"><th scope=row>${esc(str(r.check))}</th>` +
      `<td class="${esc(verdict)}">${esc(verdict)}</td><td>${esc(ago(r.ageSeconds))}</td>` +
      `<td>${esc(str(r.trigger))}</td><td>${esc(str(r.reason))}</td></tr>\n`
    );
  });
  return (
    `<table id="checks"><caption>Last run of each check</caption>\n` +
    `<thead><tr><th scope=col>Check</th><th scope=col>Verdict</th><th scope=col>Ended</th><th scope=col>Trigger</th><th scope=col>Reason</th></tr></thead>\n` +
    `<tbody>\n${rows.join('')}</tbody></table>\n${results.map(renderDevices).join('')}`
  );
}

/** Pure: the newest runs of any check. */
export function renderHistory(history: readonly Json[]): string {
  const rows = history.map((h) => {
    const verdict = str(h.verdict);
    return (
      `<tr data-check="${esc(str(h.check))}" data-verdict="${esc(verdict)}"><th scope=row>${esc(str(h.check))}</th>` +
      `<td class="${esc(verdict)}">${esc(verdict)}</td><td>${esc(ago(h.ageSeconds))}</td><td>${esc(str(h.trigger))}</td>` +
      `<td>${esc(str(h.durationSeconds))} s</td><td>${esc(str(h.reason))}</td></tr>\n`
    );
  });
  return (
    `<table id="history"><caption>The last ${history.length} runs, newest first</caption>\n` +
    `<thead><tr><th scope=col>Check</th><th scope=col>Verdict</th><th scope=col>Ended</th><th scope=col>Trigger</th><th scope=col>Duration</th><th scope=col>Reason</th></tr></thead>\n` +
    `<tbody>\n${rows.join('')}</tbody></table>\n`
  );
}

/** Pure: the node as Kubernetes has it: labels, conditions other than the kubelet's, taints. */
export function renderKubernetes(node: NodeInfo | string, status: Json | null): string {
  if (typeof node === 'string')
    return `<section id="kubernetes"><h2>Kubernetes</h2><p class="error">${esc(node)}</p></section>\n`;
  const conditionType =
    str((status?.nodeCondition as Json | null | undefined)?.type) || 'GPUHealthy';
  const conditions = (node.conditions ?? []).filter((c) => c.type === conditionType);
  const row = (cells: readonly string[]): string =>
    `<tr><th scope=row>${esc(cells[0])}</th>${cells
      .slice(1)
      .map((c) => `<td>${esc(c)}</td>`)
      .join('')}</tr>\n`;
  const labels = Object.entries(node.labels).sort(([a], [b]) => a.localeCompare(b));
  return (
    `<section id="kubernetes"><h2>Kubernetes</h2>\n` +
    `<table id="condition"><caption>Condition ${esc(conditionType)}</caption><thead><tr><th scope=col>Type</th><th scope=col>Status</th><th scope=col>Reason</th><th scope=col>Since</th><th scope=col>Message</th></tr></thead><tbody>\n` +
    `${conditions.map((c) => row([c.type, c.status, c.reason, c.lastTransitionTime, c.message])).join('') || '<tr><td colspan=5>not set</td></tr>\n'}</tbody></table>\n` +
    `<table id="taints"><caption>Taints</caption><thead><tr><th scope=col>Key</th><th scope=col>Value</th><th scope=col>Effect</th></tr></thead><tbody>\n` +
    `${(node.taints ?? []).map((t) => row([t.key, t.value ?? '', t.effect])).join('') || '<tr><td colspan=3>none</td></tr>\n'}</tbody></table>\n` +
    `<table id="labels"><caption>Labels</caption><thead><tr><th scope=col>Label</th><th scope=col>Value</th></tr></thead><tbody>\n` +
    `${labels.map(([key, value]) => row([key, value])).join('')}</tbody></table></section>\n`
  );
}

/** Pure: the whole node page; an unanswered node still shows what Kubernetes knows of it. */
export function renderNodePage(
  servedBy: string,
  name: string,
  answer: DetailAnswer,
  node: NodeInfo | string | undefined,
): string {
  let body: string;
  if (answer.ok) {
    const { summary, since, results, history, kubernetes } = answer.value;
    const reasons = summary.reasons.map((r) => `<li>${esc(r)}</li>`).join('');
    body =
      `<p id="state" class="state ${summary.state}" data-state=${summary.state}>${summary.state}` +
      `${since === null ? '' : ` <small>since ${esc(since)}</small>`}</p>\n` +
      `${reasons === '' ? '' : `<ul id="reasons">${reasons}</ul>\n`}` +
      `<p id="gpu">GPUs: ${summary.gpu.count === 0 ? 'none seen' : `${esc(summary.gpu.model)} ×${summary.gpu.count}`}</p>\n` +
      renderChecks(results as unknown as Json[]) +
      renderHistory(history as unknown as Json[]) +
      (node === undefined ? '' : renderKubernetes(node, kubernetes));
  } else {
    body =
      `<p id="state" class="state UNKNOWN" data-state=UNKNOWN>UNKNOWN</p>\n<p id="error">${esc(answer.error)}</p>\n` +
      (node === undefined ? '' : renderKubernetes(node, null));
  }
  return `${pageHead(`Autopilot: ${name}`, servedBy)}<h1>Node ${esc(name)}</h1>\n${body}${pageFoot()}`;
}
