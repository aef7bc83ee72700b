/**
 * The status page's stylesheet and script, served from this exporter (/assets/status.css,
 * /assets/status.js) because the CSP allows nothing inline and nothing from elsewhere. They are
 * strings in the build, so dist/ carries them without a copy step.
 *
 * The script only enhances: the views work without it. It names each check cell after its column,
 * and runs checks from form#run by reading /status's NDJSON (the token as the Authorization header,
 * never in the URL), updating #results and the nodes' rows as each node answers.
 */

import { createHash } from 'node:crypto';
import type Koa from 'koa';

export const STATUS_CSS = `
:root { font-family: system-ui, sans-serif; color: #1b1b1b; background: #fafafa; }
header { padding: .4rem 1rem; background: #20303f; color: #fff; }
header a { color: #fff; font-weight: bold; }
.served { opacity: .8; font-size: .85em; }
main { display: flex; flex-direction: column; gap: .6rem; padding: 0 1rem 2rem; }
#counts { order: -1; }
#counts ul { display: flex; flex-wrap: wrap; gap: .5rem; list-style: none; padding: 0; margin: 0; }
#counts p { margin: .2rem 0; }
.count { display: inline-block; padding: .3rem .7rem; border-radius: .3rem; text-decoration: none; font-weight: bold; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .9em; }
caption { text-align: left; font-weight: bold; padding: .3rem 0; }
th, td { border: 1px solid #ccc; padding: .2rem .45rem; text-align: left; vertical-align: top; white-space: nowrap; }
td:last-child { white-space: normal; }
thead th { background: #e8ecf0; position: sticky; top: 0; }
.PASS { background: #d4f4dc; color: #0b4a1c; }
.WARN { background: #fff1c2; color: #5c4300; }
.TESTING { background: #d6e6ff; color: #0b2f66; }
.EVICT, .FAIL { background: #ffd6d6; color: #7a0000; font-weight: bold; }
.UNKNOWN, .ERROR, .SKIP { background: #eee; color: #444; }
td small, p small { font-weight: normal; }
a:focus, input:focus, select:focus, button:focus { outline: 3px solid #1a73e8; outline-offset: 1px; }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
form { margin: .3rem 0; }
fieldset { border: 1px solid #bbb; }
.evidence { margin: 0; padding-left: 1rem; font-size: .85em; }
.evidence .k { color: #555; }
.error, #error { color: #7a0000; font-weight: bold; }
td[data-updated] { outline: 2px solid #1a73e8; }
`;

export const STATUS_JS = `'use strict';
(function () {
  function checkColumns() {
    return Array.prototype.map.call(document.querySelectorAll('#nodes thead th'), function (th) {
      return th.getAttribute('data-check');
    });
  }
  function nameCells() {
    var columns = checkColumns();
    document.querySelectorAll('#nodes tbody tr').forEach(function (row) {
      Array.prototype.forEach.call(row.cells, function (cell, i) {
        if (columns[i]) cell.setAttribute('data-check', columns[i]);
      });
    });
  }
  function rowOf(node) {
    var rows = document.querySelectorAll('#nodes tbody tr');
    for (var i = 0; i < rows.length; i++) if (rows[i].getAttribute('data-node') === node) return rows[i];
    return null;
  }
  function updateRow(node, run) {
    var row = rowOf(node);
    if (!row) return;
    var cell = row.querySelector('td[data-check="' + CSS.escape(run.check) + '"]');
    if (!cell) return;
    cell.textContent = run.verdict + ' now';
    cell.className = run.verdict;
    cell.title = run.verdict === 'PASS' ? '' : run.reason || '';
    cell.setAttribute('data-updated', '');
  }
  function text(tag, value, attrs) {
    var el = document.createElement(tag);
    el.textContent = value;
    for (var k in attrs || {}) el.setAttribute(k, attrs[k]);
    return el;
  }
  function addResult(body, node, run) {
    var tr = document.createElement('tr');
    tr.setAttribute('data-node', node);
    tr.setAttribute('data-check', run.check || '');
    tr.setAttribute('data-verdict', run.verdict);
    tr.appendChild(text('th', node, { scope: 'row' }));
    tr.appendChild(text('td', run.check || ''));
    tr.appendChild(text('td', run.verdict, { class: run.verdict }));
    tr.appendChild(text('td', run.reason || ''));
    body.appendChild(tr);
    if (run.check) updateRow(node, run);
  }
  function onLine(body, line) {
    if (line.type === 'node') {
      if (!line.runs || line.runs.length === 0)
        addResult(body, line.node, { check: '', verdict: 'ERROR', reason: line.outcome + ': ' + line.detail });
      (line.runs || []).forEach(function (run) { addResult(body, line.node, run); });
    } else if (line.type === 'error' || line.type === 'note') {
      var tr = document.createElement('tr');
      tr.appendChild(text('td', line.error || line.note, { colspan: '4' }));
      body.appendChild(tr);
    }
  }
  function resultsTable(section) {
    section.textContent = '';
    var table = document.createElement('table');
    table.id = 'run-results';
    table.appendChild(text('caption', 'Results as the nodes answer'));
    var head = document.createElement('thead');
    var tr = document.createElement('tr');
    ['Node', 'Check', 'Verdict', 'Reason'].forEach(function (h) { tr.appendChild(text('th', h, { scope: 'col' })); });
    head.appendChild(tr);
    table.appendChild(head);
    var body = document.createElement('tbody');
    table.appendChild(body);
    section.appendChild(table);
    return body;
  }
  function finish(section, how, message) {
    section.setAttribute('data-run', how);
    section.appendChild(text('p', message, { id: 'run-done', 'data-run': how }));
  }
  async function readAnswer(response, body) {
    if ((response.headers.get('content-type') || '').indexOf('application/x-ndjson') !== 0) {
      var json = await response.json();
      (json.results || []).forEach(function (run) { addResult(body, json.node, run); });
      return;
    }
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var pending = '';
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) break;
      pending += decoder.decode(chunk.value, { stream: true });
      var lines = pending.split('\\n');
      pending = lines.pop();
      lines.forEach(function (l) { if (l.trim()) onLine(body, JSON.parse(l)); });
    }
    if (pending.trim()) onLine(body, JSON.parse(pending));
  }
  async function run(event) {
    event.preventDefault();
    var form = event.target;
    var section = document.getElementById('results');
    var nodes = Array.prototype.map.call(document.querySelectorAll('input[name=node][form=run]:checked'), function (i) { return i.value; });
    var checks = Array.prototype.map.call(form.querySelectorAll('input[name=check]:checked'), function (i) { return i.value; });
    var body = resultsTable(section);
    section.setAttribute('data-run', 'running');
    if (checks.length === 0) return finish(section, 'error', 'Choose one or more checks to run.');
    if (nodes.length === 0 && document.querySelectorAll('#nodes tbody tr').length !== 1)
      return finish(section, 'error', 'Tick one or more nodes in the table.');
    if (nodes.length === 0) nodes = [document.querySelector('#nodes tbody tr').getAttribute('data-node')];
    var query = new URLSearchParams({ host: nodes.join(','), check: checks.join(','), r: form.level.value, format: 'ndjson' });
    var headers = { Accept: 'application/x-ndjson, application/json' };
    if (form.token.value) headers.Authorization = 'Bearer ' + form.token.value;
    try {
      var response = await fetch('/status?' + query.toString(), { headers: headers, credentials: 'same-origin' });
      if (!response.ok) {
        var error = await response.text();
        try { error = JSON.parse(error).error; } catch (e) { /* the text as it came */ }
        return finish(section, 'error', 'Refused (' + response.status + '): ' + error);
      }
      await readAnswer(response, body);
      finish(section, 'done', 'Run done.');
    } catch (e) {
      finish(section, 'error', 'The run failed: ' + e.message);
    }
  }
  document.addEventListener('DOMContentLoaded', function () {
    nameCells();
    var form = document.getElementById('run');
    if (form) form.addEventListener('submit', run);
  });
})();
`;

const ASSETS: Readonly<Record<string, { readonly type: string; readonly body: string }>> = {
  'status.css': { type: 'text/css; charset=utf-8', body: STATUS_CSS },
  'status.js': { type: 'text/javascript; charset=utf-8', body: STATUS_JS },
};

/** Computed once: the body never changes while the exporter runs. */
const ETAGS = new Map(
  Object.entries(ASSETS).map(([name, asset]) => [
    name,
    `"${createHash('sha256').update(asset.body).digest('hex').slice(0, 16)}"`,
  ]),
);

/** Serves an asset with a validator; false when there is no such asset. */
export function serveAsset(ctx: Koa.Context, name: string): boolean {
  const asset = ASSETS[name];
  if (asset === undefined) return false;
  const etag = ETAGS.get(name)!;
  // An hour in the browser, then revalidated: an upgraded exporter's script is picked up.
  ctx.set('Cache-Control', 'public, max-age=3600');
  ctx.set('ETag', etag);
  ctx.set('X-Content-Type-Options', 'nosniff');
  ctx.set('Content-Security-Policy', "default-src 'self'");
  if (ctx.get('If-None-Match') === etag) {
    ctx.status = 304;
    return true;
  }
  ctx.type = asset.type;
  ctx.body = asset.body;
  return true;
}
