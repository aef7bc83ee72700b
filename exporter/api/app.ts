/**
 * The health-check API on :3333, compatible with Autopilot: /status and one endpoint per check,
 * Autopilot-style text by default, JSON with `Accept: application/json` or `format=json`.
 * In Kubernetes mode /status reaches the other nodes through their own APIs (cluster-status.ts).
 * Beyond Autopilot: /results reads the last results without running anything, /acknowledge lifts
 * a sticky EVICT, protected actions need an authorised caller, and every bad parameter gets a 400
 * that names it. A request only ever waits on the checks it asked for.
 *
 * One module per route group: status-routes.ts, check-routes.ts (/results and one per check),
 * iperf-routes.ts, action-routes.ts (/invasive, /acknowledge), index-route.ts (/, the list of
 * endpoints), status-page.ts (the HTML status page: / in a browser, /node/<name>, /run, /assets);
 * request.ts holds what they share.
 */

import Router from '@koa/router';
import Koa from 'koa';
import type { Check } from '../checks/check.js';
import { ParamError } from '../checks/check.js';
import type { CheckRunner } from '../check-runner.js';
import { KubeError } from '../k8s/ports.js';
import type { Logger } from '../log.js';
import type { NodeHealth } from '../node-health.js';
import type { ResultStore } from '../store.js';
import type { ApiAccess } from '../config/config.js';
import type { Authorizer } from './auth.js';
import { addActionRoutes } from './action-routes.js';
import { addCheckRoutes } from './check-routes.js';
import { addIndexRoute } from './index-route.js';
import type { ClusterDeps } from './cluster-status.js';
import { addIperfRoutes, type IperfRouteDeps } from './iperf-routes.js';
import {
  AuthError,
  createRouteKit,
  formatOf,
  readQuery,
  singleFormat,
  wantsJson,
} from './request.js';
import { addStatusPageRoutes } from './status-page.js';
import { addStatusRoutes } from './status-routes.js';

export interface ApiDeps {
  readonly nodeName: string;
  readonly checks: ReadonlyMap<string, Check>;
  readonly periodicChecks: readonly string[];
  readonly runner: CheckRunner;
  readonly store: ResultStore;
  readonly logger: Logger;
  readonly authorizer: Authorizer;
  /** Groups of protected actions opened to every caller (AUTOPILOT_API_ACCESS); absent: none. */
  readonly access?: ApiAccess;
  readonly now: () => number;
  /** Kubernetes mode; undefined in standalone mode, where only this node can be asked. */
  readonly cluster: ClusterDeps | undefined;
  /**
   * Called after an acknowledge changed the node health (the node label follows it); `caller`
   * names who acknowledged, for the node's Event.
   */
  readonly onAcknowledged?: (health: NodeHealth, caller: string) => void;
  /** Starts a deep check (Kubernetes mode); absent, /invasive says it needs Kubernetes. */
  readonly startDeepCheck?: () => Promise<{ readonly started: boolean; readonly detail: string }>;
  /** The node-local iperf endpoints; absent, they answer 404. */
  readonly iperf?: Omit<IperfRouteDeps, 'authorize' | 'readQuery' | 'wantsJson'>;
  /** The GPU model (as autopilot_health_checks' gpumodel), for the status page; absent: N/A. */
  readonly gpuModel?: string;
  /** True while an exclusive check or the deep check holds the GPUs: the page shows TESTING. */
  readonly testing?: () => boolean;
}

/** The route groups in one Koa app, behind the error answer every route shares. */
export function createApiApp(deps: ApiDeps): Koa {
  const app = new Koa();
  const router = new Router();
  const kit = createRouteKit(deps);

  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (error) {
      const badRequest = error instanceof ParamError;
      const refused = error instanceof AuthError;
      const apiDown = error instanceof KubeError;
      if (!badRequest && !refused && !apiDown)
        deps.logger.error('API request failed', { path: ctx.path, error });
      ctx.status = badRequest ? 400 : refused ? error.status : apiDown ? 503 : 500;
      if (refused && error.status === 401) ctx.set('WWW-Authenticate', 'Bearer');
      const message =
        badRequest || refused
          ? error.message
          : apiDown
            ? `the Kubernetes API cannot answer: ${error.message}`
            : `internal error: ${error instanceof Error ? error.message : String(error)}`;
      if (wantsJson(ctx)) ctx.body = { error: message };
      else ctx.body = `error: ${message}\n`;
    }
  });

  addIndexRoute(router, kit);
  addStatusPageRoutes(router, kit);
  addStatusRoutes(router, kit);
  addCheckRoutes(router, kit);
  if (deps.iperf !== undefined) {
    addIperfRoutes(router, {
      ...deps.iperf,
      authorize: async (ctx) => {
        await kit.authorize(ctx, { kind: 'run-check', check: 'iperf' });
      },
      readQuery: (ctx) => readQuery(ctx.query),
      wantsJson: (ctx) => formatOf(ctx, { format: singleFormat(ctx) }) === 'json',
    });
  }
  addActionRoutes(router, kit);

  app.use(async (ctx, next) => {
    await next();
    // koa-router answers 501 to a method it does not route (TRACE, PROPFIND): the caller's
    // mistake, not the server's, so no 5xx.
    if (ctx.status === 501) {
      ctx.status = 405;
      ctx.type = 'text/plain';
      ctx.body = `error: method ${ctx.method} is not allowed\n`;
    }
  });
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}
