/**
 * Autopilot's /status: the checks named (all = the periodic list) on this node, or in Kubernetes
 * mode on every node the host, job and nodelabel parameters pick, each node asked through its own
 * API (cluster-status.ts). iperf runs once from here, between the nodes. Every parameter of every
 * check is validated, and the caller authorised, before anything runs.
 */

import type Router from '@koa/router';
import type Koa from 'koa';
import type { Check, CheckParams, CheckRun, RawParams } from '../checks/check.js';
import { ParamError } from '../checks/check.js';
import { iperfRunningLine } from '../checks/iperf.js';
import { FANOUT_HEADER } from '../cluster/fanout.js';
import { parseGoDuration } from '../config/duration.js';
import { boundedInteger, givenSelector, notWholeNumber } from '../params.js';
import type { ResultStore } from '../store.js';
import { streamClusterStatus } from './cluster-status.js';
import { runToJson } from './render.js';
import { formatOf, parseCheckNames, readQuery, type RouteKit } from './request.js';

export function addStatusRoutes(router: Router, kit: RouteKit): void {
  router.all('/status', statusHandler(kit));
}

/** /status itself; the status page's run form (status-page-run.ts) goes through it too. */
export function statusHandler(kit: RouteKit): (ctx: Koa.Context) => Promise<void> {
  const { deps, authorize, respond } = kit;
  return async (ctx) => {
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
    if (deps.cluster !== undefined && !local) {
      const checks = names.filter((name) => name !== 'iperf');
      let preamble: { text: string; json: unknown } | undefined;
      if (iperf !== undefined) {
        const run = await deps.runner.run('iperf', iperf.params, 'api');
        if (checks.length === 0) {
          respond(ctx, format, [{ check: iperf.check, run }], false, iperfLine(query));
          return;
        }
        const text = iperf.check.formatText(run, deps.nodeName);
        preamble = { text: `${iperfLine(query)}${text}\n`, json: { ...runToJson(run), text } };
      }
      await streamClusterStatus(ctx, deps.cluster, {
        checks,
        forwarded: forwardedParams(query),
        query,
        batch,
        format: streamed ? 'ndjson' : format,
        authorization: ctx.get('Authorization') || undefined,
        ...(preamble === undefined ? {} : { preamble }),
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
  };
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

/** Autopilot's line before an iperf run in /status. */
function iperfLine(query: RawParams): string {
  return iperfRunningLine(query.host, query.job);
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
