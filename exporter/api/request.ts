/**
 * What every route group of the API shares: reading the query (a parameter given twice is an
 * error, not a silent pick), the answer format, the check names a request asks for, authorisation
 * of protected actions, and the answer itself (Autopilot's text, or JSON with the node's health).
 */

import type Koa from 'koa';
import type { Check, CheckParams, CheckRun, RawParams } from '../checks/check.js';
import { ParamError } from '../checks/check.js';
import { FANOUT_HEADER } from '../cluster/fanout.js';
import type { ApiDeps } from './app.js';
import {
  PROTECTED_ACCESS,
  requiresAuthorization,
  withApiAccess,
  type ProtectedAction,
} from './auth.js';
import { healthToJson, renderResultsText, runToJson } from './render.js';

export type Format = 'text' | 'json';

/** A protected action refused; the status is 401, 403 or 503. */
export class AuthError extends Error {
  constructor(
    readonly status: 401 | 403 | 503,
    message: string,
  ) {
    super(message);
    this.name = 'AuthError';
  }
}

/** The API's dependencies with the two things every route group does with them. */
export interface RouteKit {
  readonly deps: ApiDeps;
  /** Resolves to the caller's name, or throws AuthError; checks that need nothing pass at once. */
  readonly authorize: (
    ctx: Koa.Context,
    action: ProtectedAction,
    planned?: { readonly check: Check; readonly params: CheckParams },
  ) => Promise<string | undefined>;
  readonly respond: (
    ctx: Koa.Context,
    format: Format,
    runs: readonly { check: Check; run: CheckRun }[],
    cached: boolean,
    /** Text written before the runs' (Autopilot's iperf line). */
    preface?: string,
  ) => void;
}

export function createRouteKit(deps: ApiDeps): RouteKit {
  const authorizer = withApiAccess(deps.authorizer, deps.access ?? PROTECTED_ACCESS);
  return {
    deps,
    async authorize(ctx, action, planned) {
      if (
        planned !== undefined &&
        !requiresAuthorization(planned.check) &&
        planned.check.exclusiveFor?.(planned.params) !== true
      ) {
        return undefined;
      }
      const decision = await authorizer.authorize(ctx.get('Authorization') || undefined, action);
      if (!decision.allowed) throw new AuthError(decision.status, decision.message);
      return decision.caller;
    },
    respond(ctx, format, runs, cached, preface = '') {
      if (format === 'json') {
        const fannedOut = ctx.get(FANOUT_HEADER) !== '';
        ctx.body = {
          node: deps.nodeName,
          cached,
          health: healthToJson(deps.store.health()),
          results: runs.map(({ check, run }) => {
            const json = { ...runToJson(run), text: check.formatText(run, deps.nodeName) };
            // The node asking for a cluster-wide report reads verdicts and texts only; per-device
            // evidence (1,000 peers' ping figures) would make each answer hundreds of kilobytes.
            return fannedOut ? { ...json, devices: [] } : json;
          }),
          ...(deps.cluster === undefined ? {} : { kubernetes: deps.cluster.status() }),
        };
        return;
      }
      ctx.type = 'text/plain';
      const text = cached
        ? renderResultsText(deps.nodeName, deps.store.health(), runs)
        : runs.map(({ check, run }) => check.formatText(run, deps.nodeName)).join('');
      ctx.body = `${preface}${text}`;
    },
  };
}

export function readQuery(
  query: Readonly<Record<string, string | string[] | undefined>>,
): RawParams {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(query)) {
    if (Array.isArray(value)) throw new ParamError(`parameter ${name} is given more than once`);
    if (value !== undefined) out[name] = value;
  }
  return out;
}

export function wantsJson(ctx: Koa.Context, format = ctx.query.format): boolean {
  return format === 'json' || (ctx.get('Accept').includes('application/json') && format !== 'text');
}

/** The format parameter of a route that reads no other parameter through readQuery. */
export function singleFormat(ctx: Koa.Context): string | undefined {
  const format = ctx.query.format;
  if (Array.isArray(format)) throw new ParamError('format is given more than once');
  return format;
}

export function formatOf(ctx: Koa.Context, query: RawParams): Format {
  if (query.format !== undefined && query.format !== 'text' && query.format !== 'json') {
    throw new ParamError(
      `format ${JSON.stringify(query.format)} is not supported; use text, json or (for /status across nodes) ndjson`,
    );
  }
  return wantsJson(ctx, query.format) ? 'json' : 'text';
}

export function parseCheckNames(value: string | undefined, deps: ApiDeps): string[] {
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
