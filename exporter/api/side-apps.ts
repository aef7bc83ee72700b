/** The two small listeners next to the API: Prometheus metrics (:8081) and readiness (:8080). */

import Koa from 'koa';
import type { Logger } from '../log.js';
import type { Exposition } from '../metrics/registry.js';

export function createMetricsApp(registry: Exposition, logger: Logger): Koa {
  const app = new Koa();
  app.use(async (ctx) => {
    if (ctx.path !== '/metrics') {
      ctx.status = 404;
      ctx.body = 'not found: metrics are served on /metrics\n';
      return;
    }
    try {
      ctx.type = registry.contentType;
      ctx.body = await registry.metrics();
    } catch (error) {
      logger.error('rendering metrics failed', { error });
      ctx.status = 500;
      ctx.body = 'internal error while rendering metrics\n';
    }
  });
  return app;
}

/** Autopilot's probe answers 201 with this exact body; the Helm chart and tools expect it. */
export function createReadinessApp(): Koa {
  const app = new Koa();
  app.use((ctx) => {
    if (ctx.path !== '/readinessprobe') {
      ctx.status = 404;
      ctx.body = 'not found: readiness is served on /readinessprobe\n';
      return;
    }
    ctx.status = 201;
    ctx.type = 'application/json';
    ctx.body = '{"Name":"readinessProbe","Body":"ready"}\n';
  });
  return app;
}
