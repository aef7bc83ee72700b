/**
 * The actions on the node itself: Autopilot's /invasive, which starts a deep check, and
 * POST /acknowledge, which lifts a sticky EVICT with an audit line naming the caller. Both are
 * protected.
 */

import type Router from '@koa/router';
import { ParamError } from '../checks/check.js';
import { acknowledgeEvict } from '../acknowledge.js';
import { healthToJson } from './render.js';
import { formatOf, readQuery, type RouteKit } from './request.js';

export function addActionRoutes(router: Router, kit: RouteKit): void {
  const { deps, authorize } = kit;
  // Autopilot's /invasive: a deep check on this node's idle GPUs, followed to its end in the background.
  router.all('/invasive', async (ctx) => {
    await authorize(ctx, { kind: 'run-check', check: 'invasive' });
    if (deps.startDeepCheck === undefined) {
      throw new ParamError('the deep check runs as a Kubernetes Job: Kubernetes mode only');
    }
    const start = await deps.startDeepCheck();
    ctx.type = 'text/plain';
    ctx.body = start.started
      ? `Launching invasive health checks. Results will be added to 'autopilot.ibm.com/gpuhealth' and 'autopilot.ibm.com/dcgm.level.3' node labels\nJob ${start.detail}\n`
      : `Invasive health checks not started: ${start.detail}\n`;
  });

  // Mutating: POST only, so a link followed by a browser or a crawler cannot lift an EVICT.
  router.post('/acknowledge', async (ctx) => {
    const query = readQuery(ctx.query);
    const format = formatOf(ctx, query);
    if (query.host !== undefined && query.host !== deps.nodeName) {
      throw new ParamError(
        `host ${JSON.stringify(query.host)} is not this node (${deps.nodeName}); acknowledge on the node itself`,
      );
    }
    const caller = await authorize(ctx, { kind: 'acknowledge', node: deps.nodeName });
    // Without a planned check, authorize always names the caller (or throws).
    const { previous, health } = acknowledgeEvict(deps, caller ?? 'unknown', 'api');
    if (format === 'json') {
      ctx.body = {
        node: deps.nodeName,
        previous: healthToJson(previous),
        health: healthToJson(health),
      };
    } else {
      ctx.type = 'text/plain';
      ctx.body =
        previous.state === 'EVICT'
          ? `Node ${deps.nodeName}: EVICT acknowledged by ${caller}; health is now ${health.state}\n`
          : `Node ${deps.nodeName}: nothing to acknowledge; health is ${health.state}\n`;
    }
  });
}
