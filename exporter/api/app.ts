/**
 * The health-check API on :3333, compatible with Autopilot: /status and one endpoint per check,
 * Autopilot-style text by default, JSON with `Accept: application/json` or `format=json`.
 * Beyond Autopilot: /results reads the last results without running anything, and every bad
 * parameter gets a 400 that names it. A request only ever waits on the checks it asked for.
 */

import Router from '@koa/router';
import Koa from 'koa';
import type { Check, CheckParams, CheckRun, RawParams } from '../checks/check.js';
import { ParamError } from '../checks/check.js';
import type { CheckRunner } from '../check-runner.js';
import type { Logger } from '../log.js';
import type { ResultStore } from '../store.js';
import { healthToJson, renderResultsText, runToJson } from './render.js';

export interface ApiDeps {
  readonly nodeName: string;
  readonly checks: ReadonlyMap<string, Check>;
  readonly periodicChecks: readonly string[];
  readonly runner: CheckRunner;
  readonly store: ResultStore;
  readonly logger: Logger;
}

type Format = 'text' | 'json';

export function createApiApp(deps: ApiDeps): Koa {
  const app = new Koa();
  const router = new Router();

  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (error) {
      const badRequest = error instanceof ParamError;
      if (!badRequest) deps.logger.error('API request failed', { path: ctx.path, error });
      ctx.status = badRequest ? 400 : 500;
      const message = badRequest
        ? error.message
        : `internal error: ${error instanceof Error ? error.message : String(error)}`;
      if (wantsJson(ctx)) ctx.body = { error: message };
      else ctx.body = `error: ${message}\n`;
    }
  });

  router.all('/status', async (ctx) => {
    const query = readQuery(ctx.query);
    const format = formatOf(ctx, query);
    const names = parseCheckNames(query.check, deps);
    checkHosts(query.host, deps.nodeName);
    rejectClusterSelectors(query);
    parseBoundedInteger('batch', query.batch, 0, 100_000);
    // r is DCGM's level; Autopilot took any text and failed later, this says what is wrong now.
    parseBoundedInteger('r', query.r, 1, 4);
    // Parameters are validated for every check before any check runs.
    const planned = names.map((name) => {
      const check = deps.checks.get(name)!;
      return { check, params: check.parseParams({ pingnodes: query.pingnodes, r: query.r }) };
    });
    const runs: { check: Check; run: CheckRun }[] = [];
    for (const { check, params } of planned) {
      runs.push({ check, run: await deps.runner.run(check.name, params, 'api') });
    }
    respond(ctx, format, runs, false);
  });

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
      const run = await deps.runner.run(check.name, params, 'api');
      if (format === 'json') respond(ctx, format, [{ check, run }], false);
      else {
        ctx.type = 'text/plain';
        ctx.body = `${check.banner}\n${check.formatText(run, deps.nodeName)}`;
      }
    });
  }

  app.use(router.routes());
  app.use(router.allowedMethods());

  function respond(
    ctx: Koa.Context,
    format: Format,
    runs: readonly { check: Check; run: CheckRun }[],
    cached: boolean,
  ): void {
    if (format === 'json') {
      ctx.body = {
        node: deps.nodeName,
        cached,
        health: healthToJson(deps.store.health()),
        results: runs.map(({ run }) => runToJson(run)),
      };
      return;
    }
    ctx.type = 'text/plain';
    ctx.body = cached
      ? renderResultsText(deps.nodeName, deps.store.health(), runs)
      : runs.map(({ check, run }) => check.formatText(run, deps.nodeName)).join('');
  }

  return app;
}

function readQuery(query: Readonly<Record<string, string | string[] | undefined>>): RawParams {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(query)) {
    if (Array.isArray(value)) throw new ParamError(`parameter ${name} is given more than once`);
    if (value !== undefined) out[name] = value;
  }
  return out;
}

function wantsJson(ctx: Koa.Context): boolean {
  return (
    ctx.query.format === 'json' ||
    (ctx.get('Accept').includes('application/json') && ctx.query.format !== 'text')
  );
}

function formatOf(ctx: Koa.Context, query: RawParams): Format {
  if (query.format !== undefined && query.format !== 'text' && query.format !== 'json') {
    throw new ParamError(
      `format ${JSON.stringify(query.format)} is not supported; use text or json`,
    );
  }
  return wantsJson(ctx) ? 'json' : 'text';
}

function parseCheckNames(value: string | undefined, deps: ApiDeps): string[] {
  const requested = (value ?? 'all')
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name !== '');
  if (requested.length === 0)
    throw new ParamError('check is empty; name one or more checks, or all');
  const names: string[] = [];
  for (const name of requested) {
    if (name === 'all') names.push(...deps.periodicChecks);
    else if (deps.checks.has(name)) names.push(name);
    else {
      throw new ParamError(
        `unknown check ${JSON.stringify(name)}; known checks: ${[...deps.checks.keys(), 'all'].join(', ')}`,
      );
    }
  }
  return [...new Set(names)];
}

function checkHosts(value: string | undefined, nodeName: string): void {
  for (const host of (value ?? 'all')
    .split(',')
    .map((h) => h.trim())
    .filter((h) => h !== '')) {
    if (host !== 'all' && host !== nodeName) {
      throw new ParamError(
        `host ${JSON.stringify(host)} is not this node (${nodeName}); other nodes are reached through Kubernetes, which this exporter is not connected to (standalone mode)`,
      );
    }
  }
}

function rejectClusterSelectors(query: RawParams): void {
  for (const name of ['job', 'nodelabel'] as const) {
    const value = query[name];
    if (value !== undefined && value !== '' && value !== 'None') {
      throw new ParamError(
        `${name} selects nodes through Kubernetes, which this exporter is not connected to (standalone mode)`,
      );
    }
  }
}

function parseBoundedInteger(
  name: string,
  value: string | undefined,
  min: number,
  max: number,
): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new ParamError(
      `${name} ${JSON.stringify(value)} is not a whole number from ${min} to ${max}`,
    );
  }
  return Number(value);
}
