/**
 * /status across nodes (Kubernetes mode): resolves the selection, asks every node, and answers in
 * one of three forms: Autopilot's text report and NDJSON, both streamed as nodes answer (a long
 * DCGM run shows progress), or one JSON document at the end.
 */

import { PassThrough } from 'node:stream';
import type Koa from 'koa';
import { ParamError, type RawParams } from '../checks/check.js';
import {
  askNodes,
  planNodes,
  resolveTargets,
  type SelfAnswer,
  type Selection,
} from '../cluster/fanout.js';
import { givenSelector } from '../params.js';
import { checkSelector, parseJob } from '../selectors.js';
import {
  nodeReportToJson,
  renderHeader,
  renderNdjsonLine,
  renderNodeBlock,
  renderSummary,
  summaryToJson,
  type NodeReport,
} from '../cluster/fanout-report.js';
import type { HttpGet } from '../cluster/http-get.js';
import type { Peer } from '../cluster/peer-directory.js';
import type { KubeApi } from '../k8s/ports.js';
import type { Logger } from '../log.js';

/** batch=0 means "all at once" in Autopilot; this bounds it so 5,000 nodes do not mean 5,000 sockets. */
export const DEFAULT_FANOUT_CONCURRENCY = 256;

export interface ClusterDeps {
  readonly kube: KubeApi;
  readonly peers: () => readonly Peer[];
  readonly fetch: HttpGet;
  readonly now: () => number;
  readonly nodeName: string;
  /** The API port of peers whose EndpointSlice names none. */
  readonly defaultPort: number;
  /** How long one node may take for these checks, waiting behind its other runs included. */
  readonly deadlineMs: (checks: readonly string[]) => number;
  /** This node's answer, run in process. */
  readonly askSelf: (
    checks: readonly string[],
    params: Readonly<Record<string, string>>,
    signal: AbortSignal,
  ) => Promise<SelfAnswer>;
  /** The Kubernetes connection as /status JSON reports it. */
  readonly status: () => Record<string, unknown>;
  readonly logger: Logger;
}

export interface ClusterRequest {
  readonly checks: readonly string[];
  /** Parameters each node's /status needs (r, pingnodes). */
  readonly forwarded: Readonly<Record<string, string>>;
  readonly query: RawParams;
  readonly batch: number | undefined;
  readonly format: 'text' | 'json' | 'ndjson';
  readonly authorization: string | undefined;
  /** What ran before the nodes were asked (the iperf matrix): first in the answer. */
  readonly preamble?: { readonly text: string; readonly json: unknown };
}

/** Pure: the nodes a query selects, validated (ParamError names a malformed selector). */
export function selectionOf(query: RawParams): Selection {
  const hosts = (query.host ?? 'all')
    .split(',')
    .map((host) => host.trim())
    .filter((host) => host !== '');
  const job = givenSelector(query.job);
  const nodelabel = givenSelector(query.nodelabel);
  return {
    hosts: hosts.length === 0 || hosts.includes('all') ? 'all' : hosts,
    job: job === undefined ? undefined : parseJob(job),
    nodelabel: nodelabel === undefined ? undefined : checkSelector('nodelabel', nodelabel),
  };
}

export async function streamClusterStatus(
  ctx: Koa.Context,
  deps: ClusterDeps,
  request: ClusterRequest,
): Promise<void> {
  const started = deps.now();
  const selection = selectionOf(request.query);
  const peers = deps.peers();
  const targets = await resolveTargets(selection, deps.kube, peers);
  if (targets.nodes.length === 0) {
    throw new ParamError(
      `no node selected${targets.notes.length > 0 ? `: ${targets.notes.join(' ')}` : ' (no Autopilot pod is known yet)'}`,
    );
  }
  const planned = planNodes(
    targets.nodes,
    peers,
    { checks: request.checks, params: request.forwarded },
    deps.defaultPort,
  );
  const aborted = new AbortController();
  // A caller who hangs up stops the nodes not yet asked; those asked finish on their own.
  ctx.req.once('close', () => {
    if (!ctx.res.writableFinished) aborted.abort(new Error('the caller closed the connection'));
  });
  const run = (onReport: (report: NodeReport) => void): Promise<NodeReport[]> =>
    askNodes(
      planned,
      {
        fetch: deps.fetch,
        now: deps.now,
        nodeName: deps.nodeName,
        askSelf: (signal) => deps.askSelf(request.checks, request.forwarded, signal),
      },
      {
        deadlineMs: deps.deadlineMs(request.checks),
        concurrency:
          request.batch === undefined || request.batch === 0
            ? DEFAULT_FANOUT_CONCURRENCY
            : request.batch,
        authorization: request.authorization,
        signal: aborted.signal,
        onReport,
      },
    );
  const runtime = (): number => (deps.now() - started) / 1000;

  if (request.format === 'json') {
    const reports = await run(() => undefined);
    ctx.body = {
      ...(request.preamble === undefined ? {} : { iperf: request.preamble.json }),
      notes: targets.notes,
      nodes: sortByNode(reports).map(nodeReportToJson),
      summary: summaryToJson(reports, runtime()),
    };
    return;
  }

  const stream = new PassThrough();
  ctx.status = 200;
  ctx.type = request.format === 'ndjson' ? 'application/x-ndjson' : 'text/plain';
  ctx.body = stream;
  if (request.preamble !== undefined) {
    stream.write(
      request.format === 'text'
        ? request.preamble.text
        : `${JSON.stringify({ type: 'iperf', result: request.preamble.json })}\n`,
    );
  }
  if (request.format === 'text') {
    stream.write(
      renderHeader({
        host: request.query.host,
        nodelabel: selection.nodelabel,
        job: request.query.job === 'None' ? undefined : request.query.job,
        // Only the nodes really asked: a not-ready pod gets its block, not a connection line.
        urls: planned.flatMap((plan) =>
          plan.url === undefined || plan.unasked !== undefined ? [] : [plan.url],
        ),
      }),
    );
    for (const note of targets.notes) stream.write(`${note}\n\n`);
  } else {
    for (const note of targets.notes) stream.write(`${JSON.stringify({ type: 'note', note })}\n`);
  }
  const write = (report: NodeReport): void => {
    stream.write(
      request.format === 'ndjson'
        ? renderNdjsonLine(nodeReportToJson(report))
        : renderNodeBlock(report),
    );
  };
  // The answer streams; koa has already sent the headers when this settles.
  void run(write).then(
    (reports) => {
      stream.end(
        request.format === 'ndjson'
          ? renderNdjsonLine(summaryToJson(reports, runtime()))
          : renderSummary(reports, runtime()),
      );
    },
    (error: unknown) => {
      deps.logger.error('cluster status failed', { error });
      stream.end(`\nerror: ${error instanceof Error ? error.message : String(error)}\n`);
    },
  );
}

function sortByNode(reports: readonly NodeReport[]): NodeReport[] {
  return [...reports].sort((a, b) => a.node.localeCompare(b.node));
}
