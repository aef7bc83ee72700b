/**
 * The health-check API on :3333, compatible with Autopilot: /status and one endpoint per check,
 * Autopilot-style text by default, JSON with `Accept: application/json` or `format=json`.
 * In Kubernetes mode /status reaches the other nodes through their own APIs (cluster-status.ts).
 * Beyond Autopilot: /results reads the last results without running anything, /acknowledge lifts
 * a sticky EVICT, protected actions need an authorised caller, and every bad parameter gets a 400
 * that names it. A request only ever waits on the checks it asked for.
 */

import Router from '@koa/router';
import Koa from 'koa';
import type { Check, CheckParams, CheckRun, RawParams } from '../checks/check.js';
import { ParamError } from '../checks/check.js';
import type { CheckRunner } from '../check-runner.js';
import { FANOUT_HEADER } from '../cluster/fanout.js';
import { KubeError } from '../k8s/ports.js';
import type { Logger } from '../log.js';
import { parseGoDuration } from '../config/duration.js';
import type { NodeHealth } from '../node-health.js';
import { boundedInteger, givenSelector, notWholeNumber } from '../params.js';
import type { ResultStore } from '../store.js';
import type { ApiAccess } from '../config/config.js';
import {
  PROTECTED_ACCESS,
  requiresAuthorization,
  withApiAccess,
  type Authorizer,
  type ProtectedAction,
} from './auth.js';
import { streamClusterStatus, type ClusterDeps } from './cluster-status.js';
import { iperfRunningLine } from '../checks/iperf.js';
import { addIperfRoutes, type IperfRouteDeps } from './iperf-routes.js';
import { healthToJson, renderResultsText, runToJson } from './render.js';

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
  /** Called after an acknowledge changed the node health (the node label follows it). */
  readonly onAcknowledged?: (health: NodeHealth) => void;
  /** Starts a deep check (Kubernetes mode); absent, /invasive says it needs Kubernetes. */
  readonly startDeepCheck?: () => Promise<{ readonly started: boolean; readonly detail: string }>;
  /** The node-local iperf endpoints; absent, they answer 404. */
  readonly iperf?: Omit<IperfRouteDeps, 'authorize' | 'readQuery' | 'wantsJson'>;
}

type Format = 'text' | 'json';

/** A protected action refused; the status is 401, 403 or 503. */
class AuthError extends Error {
  constructor(
    readonly status: 401 | 403 | 503,
    message: string,
  ) {
    super(message);
    this.name = 'AuthError';
  }
}

export function createApiApp(deps: ApiDeps): Koa {
  const app = new Koa();
  const router = new Router();
  const authorizer = withApiAccess(deps.authorizer, deps.access ?? PROTECTED_ACCESS);

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

  router.all('/status', async (ctx) => {
    const query = readQuery(ctx.query);
    // ndjson streams one line per node as it answers; a single node's answer is plain JSON.
    const streamed = query.format === 'ndjson';
    const format = formatOf(ctx, streamed ? { ...query, format: 'json' } : query);
    const names = parseCheckNames(query.check, deps);
    const batch = parseBoundedInteger('batch', query.batch, 0, 100_000);
    // r is DCGM's level; Autopilot took any text and failed later, this says what is wrong now.
    parseBoundedInteger('r', query.r, 1, 4);
    // Parameters are validated for every check before any check runs.
    const planned = names.map((name) => {
      const check = deps.checks.get(name)!;
      // iperf takes its workload parameters from the query, as Autopilot's /status did.
      const raw =
        name === 'iperf' ? iperfParams(query) : { pingnodes: query.pingnodes, r: query.r };
      return { check, params: check.parseParams(raw) };
    });
    const hosts = splitList(query.host);
    const local =
      hosts.length > 0 && hosts.every((host) => host === deps.nodeName) && !selects(query);
    if (deps.cluster === undefined) {
      checkHosts(hosts, deps.nodeName);
      rejectClusterSelectors(query);
    } else if (!local && ctx.get(FANOUT_HEADER) !== '') {
      throw new ParamError(
        `host ${JSON.stringify(query.host ?? 'all')} is not this node (${deps.nodeName}), and this request already comes from the cluster-wide status of ${ctx.get(FANOUT_HEADER)}; check that NODE_NAME matches the node name in the EndpointSlice`,
      );
    }
    // Refused here, before any node is asked: the nodes check the same token again themselves.
    for (const { check, params } of planned) {
      await authorize(ctx, { kind: 'run-check', check: check.name }, { check, params });
    }
    // iperf runs once, from here, between the nodes; it is not asked of every node in turn.
    const iperf = planned.find(({ check }) => check.name === 'iperf');
    if (deps.cluster !== undefined && !local && iperf !== undefined) {
      const run = await deps.runner.run('iperf', iperf.params, 'api');
      const others = names.filter((name) => name !== 'iperf');
      if (others.length === 0) {
        respond(ctx, format, [{ check: iperf.check, run }], false, iperfLine(query));
        return;
      }
      await streamClusterStatus(ctx, deps.cluster, {
        checks: others,
        forwarded: forwardedParams(query),
        query,
        batch,
        format: streamed ? 'ndjson' : format,
        authorization: ctx.get('Authorization') || undefined,
        preamble: {
          text: `${iperfLine(query)}${iperf.check.formatText(run, deps.nodeName)}\n`,
          json: { ...runToJson(run), text: iperf.check.formatText(run, deps.nodeName) },
        },
      });
      return;
    }
    if (deps.cluster !== undefined && !local) {
      await streamClusterStatus(ctx, deps.cluster, {
        checks: names,
        forwarded: forwardedParams(query),
        query,
        batch,
        format: streamed ? 'ndjson' : format,
        authorization: ctx.get('Authorization') || undefined,
      });
      return;
    }
    const maxAgeMs = parseMaxAge(query.maxage);
    const runs: { check: Check; run: CheckRun }[] = [];
    for (const { check, params } of planned) {
      // maxage: a recent conclusive result is answered as it is (what pre-flight asks for).
      const recent = recentAnswer(check, deps.store, params, maxAgeMs, deps.now());
      runs.push({ check, run: recent ?? (await deps.runner.run(check.name, params, 'api')) });
    }
    respond(ctx, format, runs, false, iperf === undefined ? '' : iperfLine(query));
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
      await authorize(ctx, { kind: 'run-check', check: check.name }, { check, params });
      const run = await deps.runner.run(check.name, params, 'api');
      if (format === 'json') respond(ctx, format, [{ check, run }], false);
      else {
        ctx.type = 'text/plain';
        ctx.body = `${check.banner}\n${check.formatText(run, deps.nodeName)}`;
      }
    });
  }

  if (deps.iperf !== undefined) {
    addIperfRoutes(router, {
      ...deps.iperf,
      authorize: async (ctx) => {
        await authorize(ctx, { kind: 'run-check', check: 'iperf' });
      },
      readQuery: (ctx) => readQuery(ctx.query),
      wantsJson: (ctx) => formatOf(ctx, { format: singleFormat(ctx) }) === 'json',
    });
  }

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
    const previous = deps.store.health();
    const health = deps.store.acknowledge(deps.now());
    // The audit line: who lifted what, and the evidence that stood at the time.
    deps.logger.warn('EVICT acknowledged', {
      audit: true,
      caller,
      previousState: previous.state,
      previousReasons: previous.reasons,
      state: health.state,
    });
    deps.onAcknowledged?.(health);
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

  /** Resolves to the caller's name, or throws AuthError; checks that need nothing pass at once. */
  async function authorize(
    ctx: Koa.Context,
    action: ProtectedAction,
    planned?: { readonly check: Check; readonly params: CheckParams },
  ): Promise<string | undefined> {
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
  }

  function respond(
    ctx: Koa.Context,
    format: Format,
    runs: readonly { check: Check; run: CheckRun }[],
    cached: boolean,
    /** Text written before the runs' (Autopilot's iperf line). */
    preface = '',
  ): void {
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
  }

  return app;
}

/** Autopilot's line before an iperf run in /status. */
function iperfLine(query: RawParams): string {
  return iperfRunningLine(query.host, query.job);
}

function readQuery(query: Readonly<Record<string, string | string[] | undefined>>): RawParams {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(query)) {
    if (Array.isArray(value)) throw new ParamError(`parameter ${name} is given more than once`);
    if (value !== undefined) out[name] = value;
  }
  return out;
}

function wantsJson(ctx: Koa.Context, format = ctx.query.format): boolean {
  return format === 'json' || (ctx.get('Accept').includes('application/json') && format !== 'text');
}

/** The format parameter of a route that reads no other parameter through readQuery. */
function singleFormat(ctx: Koa.Context): string | undefined {
  const format = ctx.query.format;
  if (Array.isArray(format)) throw new ParamError('format is given more than once');
  return format;
}

function formatOf(ctx: Koa.Context, query: RawParams): Format {
  if (query.format !== undefined && query.format !== 'text' && query.format !== 'json') {
    throw new ParamError(
      `format ${JSON.stringify(query.format)} is not supported; use text, json or (for /status across nodes) ndjson`,
    );
  }
  return wantsJson(ctx, query.format) ? 'json' : 'text';
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

/**
 * The stored result that answers a request with maxage: not ERROR, ended within maxAgeMs, and with
 * the same parameters once both are normalised (a periodic dcgm run stored {} is level 1; a level-3
 * result does not answer a level-1 request). undefined: the check must run.
 */
export function recentAnswer(
  check: Check,
  store: ResultStore,
  requested: CheckParams,
  maxAgeMs: number | undefined,
  now: number,
): CheckRun | undefined {
  const recent = store.latest(check.name);
  if (maxAgeMs === undefined || recent === undefined || recent.verdict === 'ERROR')
    return undefined;
  if (now - recent.finishedAt > maxAgeMs) return undefined;
  try {
    const same = JSON.stringify(check.parseParams(recent.params)) === JSON.stringify(requested);
    return same ? recent : undefined;
  } catch {
    return undefined;
  }
}

/** maxage: a Go duration; undefined when absent. */
export function parseMaxAge(value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  const ms = parseGoDuration(value);
  if (ms === undefined) {
    throw new ParamError(`maxage ${JSON.stringify(value)} is not a duration such as 30m or 1h`);
  }
  return ms;
}

function splitList(value: string | undefined): string[] {
  return (value ?? 'all')
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

/** job and nodelabel select nodes; Autopilot's "None" is its spelling of absent. */
function selects(query: RawParams): boolean {
  return [query.job, query.nodelabel].some((v) => givenSelector(v) !== undefined);
}

/** The iperf workload parameters of a /status query; an explicit host list names its nodes. */
function iperfParams(query: RawParams): RawParams {
  const hosts = query.host === undefined || query.host === 'all' ? undefined : query.host;
  return {
    workload: query.workload,
    pclients: query.pclients,
    startport: query.startport,
    duration: query.duration,
    src: query.src,
    dst: query.dst,
    nodes: hosts,
  };
}

/** What each node's own /status needs to run the same checks. */
function forwardedParams(query: RawParams): Record<string, string> {
  const forwarded: Record<string, string> = {};
  for (const name of ['r', 'pingnodes', 'maxage'] as const) {
    const value = query[name];
    if (value !== undefined) forwarded[name] = value;
  }
  return forwarded;
}

function checkHosts(hosts: readonly string[], nodeName: string): void {
  for (const host of hosts) {
    if (host !== 'all' && host !== nodeName) {
      throw new ParamError(
        `host ${JSON.stringify(host)} is not this node (${nodeName}); other nodes are reached through Kubernetes, which this exporter is not connected to (standalone mode)`,
      );
    }
  }
}

function rejectClusterSelectors(query: RawParams): void {
  for (const name of ['job', 'nodelabel'] as const) {
    if (givenSelector(query[name]) !== undefined) {
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
  const number = boundedInteger(value, min, max);
  if (number === undefined) throw new ParamError(notWholeNumber(name, value, min, max));
  return number;
}
