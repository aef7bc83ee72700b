/**
 * The status page (issue 22): HTML for people, served by the API on :3333 beside the endpoints it
 * reads. One module per view: status-page-cluster.ts (GET / from a browser), status-page-node.ts
 * (GET /node/<name>), status-page-run.ts (the run form, POST /run); status-page-data.ts is what
 * a node answers about itself, status-page-html.ts what the views share, status-page-assets.ts
 * the stylesheet and script. docs/api.md describes the routes and their security.
 *
 * What browser tests may rely on (docs/api.md says the same):
 * - section#counts a[data-state=S][data-count=N], one per state, shown above the table;
 * - form#filter (GET /) with select[name=state], select[name=check], input[name=node];
 * - table#nodes: thead th[data-check=C] (the periodic checks, or the filter's one); tbody
 *   tr[data-node=N][data-state=S], cells in order: td > input[name=node][value=N][form=run],
 *   th[scope=row] > a[href="/node/N"], td.S (the state word), td (GPUs), then one td per check
 *   column in the head's order ("PASS 3m", "—"), class the verdict; status.js sets data-check=C;
 * - form#run (POST /run): input[name=check][value=C], select[name=level], input[name=token],
 *   button#run-submit; the nodes are the ticked row boxes;
 * - #results: rows tr[data-node=N][data-check=C][data-verdict=V]; p#run-done[data-run] when the
 *   run has ended (done, failed, error);
 * - node view: p#state[data-state], table#checks tr[data-check][data-verdict], table.devices[data-check]
 *   tr[data-device][data-verdict], table#history, section#kubernetes with table#condition,
 *   table#taints, table#labels.
 */

import type Router from '@koa/router';
import type Koa from 'koa';
import { ParamError } from '../checks/check.js';
import type { RouteKit } from './request.js';
import { serveAsset } from './status-page-assets.js';
import { serveClusterView } from './status-page-cluster.js';
import { errorPage, setPageHeaders, wantsHtml } from './status-page-html.js';
import { serveNodeView, serveSummary } from './status-page-node.js';
import { runRoute } from './status-page-run.js';

/** A browser's malformed request gets an HTML page under the CSP; the API's callers their text. */
async function asPage(
  ctx: Koa.Context,
  nodeName: string,
  view: () => Promise<void> | void,
): Promise<void> {
  try {
    await view();
  } catch (error) {
    if (!(error instanceof ParamError) || !wantsHtml(ctx)) throw error;
    setPageHeaders(ctx);
    ctx.status = 400;
    ctx.body = errorPage(nodeName, 400, error.message);
  }
}

/** GET / from a browser: the cluster view. false: the caller wants the endpoint index. */
export async function serveStatusPage(ctx: Koa.Context, kit: RouteKit): Promise<boolean> {
  if ((ctx.method !== 'GET' && ctx.method !== 'HEAD') || !wantsHtml(ctx)) return false;
  await asPage(ctx, kit.deps.nodeName, () => serveClusterView(ctx, kit.deps));
  return true;
}

export function addStatusPageRoutes(router: Router, kit: RouteKit): void {
  const { deps } = kit;
  router.get('/assets/:name', (ctx) => {
    if (!serveAsset(ctx, ctx.params.name ?? '')) {
      ctx.status = 404;
      ctx.type = 'text/plain';
      ctx.body = `error: no asset ${JSON.stringify(ctx.params.name)}\n`;
    }
  });
  router.get('/node/:name/summary', (ctx) => serveSummary(ctx, deps, ctx.params.name ?? ''));
  router.get('/node/:name', (ctx) =>
    asPage(ctx, deps.nodeName, () => serveNodeView(ctx, deps, ctx.params.name ?? '')),
  );
  router.post('/run', runRoute(kit));
}
