/**
 * /results, which reads the last result of each check without running anything, and one endpoint
 * per check (Autopilot's /pciebw, /dcgm?r=3...), which runs it once with its own parameters and
 * answers under the check's banner.
 */

import type Router from '@koa/router';
import type { CheckParams } from '../checks/check.js';
import { formatOf, parseCheckNames, readQuery, type RouteKit } from './request.js';

export function addCheckRoutes(router: Router, kit: RouteKit): void {
  const { deps, authorize, respond } = kit;
  router.all('/results', (ctx) => {
    const query = readQuery(ctx.query);
    const format = formatOf(ctx, query);
    const names =
      query.check === undefined ? [...deps.checks.keys()] : parseCheckNames(query.check, deps);
    const runs = names.flatMap((name) => {
      const run = deps.store.latest(name);
      return run === undefined ? [] : [{ check: deps.checks.get(name)!, run }];
    });
    respond(ctx, format, runs, true);
  });

  for (const check of deps.checks.values()) {
    router.all(`/${check.name}`, async (ctx) => {
      const query = readQuery(ctx.query);
      const format = formatOf(ctx, query);
      const params: CheckParams = check.parseParams(query);
      await authorize(ctx, { kind: 'run-check', check: check.name }, { check, params });
      const run = await deps.runner.run(check.name, params, 'api');
      if (format === 'json') respond(ctx, format, [{ check, run }], false);
      else {
        ctx.type = 'text/plain';
        ctx.body = `${check.banner}\n${check.formatText(run, deps.nodeName)}`;
      }
    });
  }
}
