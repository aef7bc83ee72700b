/**
 * Running checks from the status page: the form (checks, DCGM level, a token for protected checks,
 * the nodes ticked in the table) and POST /run, which answers a results page that streams as the
 * nodes answer. With JavaScript, /assets/status.js reads /status's NDJSON itself and updates the
 * rows; this is the path without it.
 *
 * POST /run goes through /status's own handler (status-routes.ts): the same validation, the same
 * authorisation (the token becomes the Authorization header, as an API caller would send it) and
 * the same fan-out. The token travels only in the POST body and that header: never in a URL, a log
 * line or the page.
 *
 * Cross-site requests: a page elsewhere could make a visitor's browser post this form. Protected
 * checks need the token, which that page does not have; open checks would still run on the
 * visitor's behalf, so /run refuses a request the browser marks as cross-site (Sec-Fetch-Site),
 * or whose Origin is not this host. Clients that send neither header (curl, scripts) are not
 * browsers acting for someone else, and pass.
 */

import { Readable, Transform } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type Koa from 'koa';
import { ParamError } from '../checks/check.js';
import { AuthError, type RouteKit } from './request.js';
import { statusHandler } from './status-routes.js';
import { errorPage, esc, pageFoot, pageHead, setPageHeaders } from './status-page-html.js';

/** Where results appear, empty until a run (status.js fills it). */
export const RESULTS_SECTION = `<section id="results" aria-live="polite"></section>\n`;

/** A form of ticks and one token: anything larger is not this page's. */
export const MAX_FORM_BYTES = 64 * 1024;

/** Pure: the run form; the nodes are the table's ticked rows (form=run). */
export function renderRunForm(checkNames: readonly string[]): string {
  const boxes = checkNames.map(
    (name) =>
      `<label><input type="checkbox" name="check" value="${esc(name)}"> ${esc(name)}</label>`,
  );
  const levels = [1, 2, 3, 4].map((level) => `<option value="${level}">${level}</option>`);
  return (
    `<form id="run" method="post" action="/run"><fieldset><legend>Run checks on the ticked nodes</legend>\n` +
    `<p class="checks">${boxes.join(' ')}</p>\n` +
    `<label>DCGM level <select name="level">${levels.join('')}</select></label> ` +
    `<label>Token (protected checks) <input type="password" name="token" autocomplete="off"></label> ` +
    `<button id="run-submit" type="submit">Run</button></fieldset></form>\n`
  );
}

/**
 * Pure: why a POST must be refused as cross-site, or undefined. Sec-Fetch-Site is the browser's
 * own word; Origin covers browsers that do not send it.
 */
export function crossSiteRefusal(headers: {
  readonly secFetchSite: string;
  readonly origin: string;
  readonly host: string;
}): string | undefined {
  const site = headers.secFetchSite.toLowerCase();
  if (site !== '' && site !== 'same-origin' && site !== 'none') {
    return `the run form accepts only requests from this page (Sec-Fetch-Site: ${site})`;
  }
  if (headers.origin === '') return undefined;
  let originHost: string;
  try {
    originHost = new URL(headers.origin).host;
  } catch {
    return 'the run form accepts only requests from this page (Origin is not a URL)';
  }
  return originHost === headers.host
    ? undefined
    : `the run form accepts only requests from this page (Origin ${headers.origin} is not ${headers.host})`;
}

export interface RunForm {
  readonly nodes: readonly string[];
  readonly checks: readonly string[];
  readonly level: string | undefined;
  readonly token: string | undefined;
}

/** Pure: the posted fields; choosing no check is the caller's error. */
export function parseRunForm(body: string): RunForm {
  const form = new URLSearchParams(body);
  const checks = form.getAll('check').filter((name) => name !== '');
  if (checks.length === 0) throw new ParamError('choose one or more checks to run');
  const level = form.get('level') ?? '';
  const token = form.get('token') ?? '';
  return {
    nodes: form.getAll('node').filter((node) => node !== ''),
    checks,
    level: level === '' ? undefined : level,
    token: token === '' ? undefined : token,
  };
}

async function readBody(ctx: Koa.Context): Promise<string> {
  if (!ctx.is('application/x-www-form-urlencoded')) {
    throw new ParamError('the run form is sent as application/x-www-form-urlencoded');
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) throw new ParamError(`the form is over ${MAX_FORM_BYTES} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The /status query the form stands for; no node ticked means this node only in standalone mode. */
function statusQuery(form: RunForm, kit: RouteKit): Record<string, string> {
  if (form.nodes.length === 0 && kit.deps.cluster !== undefined) {
    throw new ParamError('tick one or more nodes in the table to run checks on');
  }
  const host = form.nodes.length === 0 ? kit.deps.nodeName : form.nodes.join(',');
  return {
    host,
    check: form.checks.join(','),
    format: 'ndjson',
    ...(form.level === undefined ? {} : { r: form.level }),
  };
}

export function runRoute(kit: RouteKit): (ctx: Koa.Context) => Promise<void> {
  const status = statusHandler(kit);
  const { nodeName } = kit.deps;
  return async (ctx) => {
    try {
      const refusal = crossSiteRefusal({
        secFetchSite: ctx.get('Sec-Fetch-Site'),
        origin: ctx.get('Origin'),
        host: ctx.get('Host'),
      });
      if (refusal !== undefined) throw new AuthError(403, refusal);
      const form = parseRunForm(await readBody(ctx));
      ctx.query = statusQuery(form, kit);
      // The API's own header, so authorisation and forwarding to the nodes are /status's.
      if (form.token !== undefined) ctx.req.headers.authorization = `Bearer ${form.token}`;
      await status(ctx);
    } catch (error) {
      if (!(error instanceof ParamError) && !(error instanceof AuthError)) throw error;
      const code = error instanceof AuthError ? error.status : 400;
      setPageHeaders(ctx);
      ctx.status = code;
      ctx.body = errorPage(nodeName, code, error.message);
      return;
    }
    const answer: unknown = ctx.body;
    setPageHeaders(ctx);
    const top = `${pageHead('Autopilot: check run', nodeName)}<h1>Check run</h1>\n${RESULTS_TOP}`;
    ctx.body =
      answer instanceof Readable
        ? answer.pipe(ndjsonToHtml(top))
        : `${top}${renderLocalAnswer(answer)}${RESULTS_BOTTOM('done')}${pageFoot()}`;
  };
}

const RESULTS_TOP =
  `<section id="results" data-run="running"><table id="run-results"><caption>Results as the nodes answer</caption>\n` +
  `<thead><tr><th scope=col>Node</th><th scope=col>Check</th><th scope=col>Verdict</th><th scope=col>Reason</th></tr></thead><tbody>\n`;

const RESULTS_BOTTOM = (how: string): string =>
  `</tbody></table><p id="run-done" data-run="${esc(how)}">Run ${esc(how)}. <a href="/">Back to the cluster</a></p></section>\n`;

/** Pure: one result row; every value is the node's or a tool's, so escaped. */
export function renderResultRow(
  node: string,
  check: string,
  verdict: string,
  reason: string,
): string {
  return (
    `<tr data-node="${esc(node)}" data-check="${esc(check)}" data-verdict="${esc(verdict)}">` +
    `<th scope=row>${esc(node)}<td>${esc(check)}<td class="${esc(verdict)}">${esc(verdict)}<td>${esc(reason)}\n`
  );
}

type Json = Record<string, unknown>;

const text = (value: unknown): string => (typeof value === 'string' ? value : '');

function runsOf(value: unknown): Json[] {
  return Array.isArray(value)
    ? value.filter((r): r is Json => typeof r === 'object' && r !== null)
    : [];
}

/** Pure: the rows of one NDJSON line of /status (node, note, iperf, summary or error). */
export function renderNdjsonLine(line: Json): string {
  switch (line.type) {
    case 'node': {
      const node = text(line.node);
      const runs = runsOf(line.runs);
      if (runs.length === 0)
        return renderResultRow(node, '', 'ERROR', `${text(line.outcome)}: ${text(line.detail)}`);
      return runs
        .map((r) => renderResultRow(node, text(r.check), text(r.verdict), text(r.reason)))
        .join('');
    }
    case 'note':
      return `<tr class="note"><td colspan=4>${esc(text(line.note))}\n`;
    case 'error':
      return `<tr class="error"><td colspan=4>${esc(text(line.error))}\n`;
    default:
      return '';
  }
}

/** Pure: this node's own JSON answer (standalone, or a run on this node alone). */
export function renderLocalAnswer(answer: unknown): string {
  const json = (typeof answer === 'object' && answer !== null ? answer : {}) as Json;
  const node = text(json.node);
  return runsOf(json.results)
    .map((r) => renderResultRow(node, text(r.check), text(r.verdict), text(r.reason)))
    .join('');
}

/** /status's NDJSON, line by line, as the results page: each node's rows the moment it answers. */
export function ndjsonToHtml(top: string): Transform {
  // A character split between two chunks is joined before it is read.
  const decoder = new StringDecoder('utf8');
  let pending = '';
  let ended = 'done';
  const rows = (line: string): string => {
    if (line.trim() === '') return '';
    try {
      const parsed = JSON.parse(line) as Json;
      if (parsed.type === 'error') ended = 'failed';
      return renderNdjsonLine(parsed);
    } catch {
      return '';
    }
  };
  return new Transform({
    construct(callback) {
      this.push(top);
      callback();
    },
    transform(chunk: Buffer, _encoding, callback) {
      pending += decoder.write(chunk);
      const lines = pending.split('\n');
      pending = lines.pop()!;
      callback(null, lines.map(rows).join(''));
    },
    flush(callback) {
      callback(null, `${rows(pending + decoder.end())}${RESULTS_BOTTOM(ended)}${pageFoot()}`);
    },
  });
}
