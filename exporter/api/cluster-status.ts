/**
 * /status across nodes (Kubernetes mode): resolves the selection, asks every node, and answers in
 * one of three forms, each streamed as nodes answer: Autopilot's text report, NDJSON, and one JSON
 * document whose nodes array is written node by node. Nothing of a node's answer is kept once
 * written but its statuses for the summary, so 10,000 nodes fit in a bounded memory, and the first
 * byte leaves before any node is asked.
 */

import { PassThrough, type Writable } from 'node:stream';
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
  StatusTally,
  summaryToJson,
  type FanoutHeaderInput,
  type NodeReport,
} from '../cluster/fanout-report.js';
import type { HttpGet } from '../cluster/http-get.js';
import type { Peer } from '../cluster/peer-directory.js';
import type { KubeApi } from '../k8s/ports.js';
import type { Logger } from '../log.js';

export interface ClusterDeps {
  readonly kube: KubeApi;
  readonly peers: () => readonly Peer[];
  readonly fetch: HttpGet;
  readonly now: () => number;
  readonly nodeName: string;
  /**
   * AUTOPILOT_FANOUT_CONCURRENCY: the most nodes asked at once. Autopilot's batch=0 meant all at
   * once; bounded, 10,000 nodes do not mean 10,000 sockets and 10,000 answers in memory.
   */
  readonly concurrency: number;
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
  const stream = new PassThrough();
  ctx.status = 200;
  ctx.type = CONTENT_TYPES[request.format];
  ctx.body = stream;
  const writer = WRITERS[request.format](stream);
  writer.begin({
    preamble: request.preamble,
    notes: targets.notes,
    header: {
      host: request.query.host,
      nodelabel: selection.nodelabel,
      job: request.query.job === 'None' ? undefined : request.query.job,
      // Only the nodes really asked: a not-ready pod gets its block, not a connection line.
      urls: planned.flatMap((plan) =>
        plan.url === undefined || plan.unasked !== undefined ? [] : [plan.url],
      ),
    },
  });
  const tally = new StatusTally();
  const runtime = (): number => (deps.now() - started) / 1000;
  // The answer streams; koa has already sent the headers when this settles.
  void askNodes(
    planned,
    {
      fetch: deps.fetch,
      now: deps.now,
      nodeName: deps.nodeName,
      askSelf: (signal) => deps.askSelf(request.checks, request.forwarded, signal),
    },
    {
      deadlineMs: deps.deadlineMs(request.checks),
      concurrency: fanoutConcurrency(request.batch, deps.concurrency),
      authorization: request.authorization,
      signal: aborted.signal,
      onReport: (report) => {
        tally.add(report);
        writer.node(report);
      },
      ready: drainGate(stream, aborted.signal),
    },
  ).then(
    () => writer.end(tally, runtime(), undefined),
    (error: unknown) => {
      deps.logger.error('cluster status failed', { error });
      writer.end(tally, runtime(), error instanceof Error ? error.message : String(error));
    },
  );
}

/** batch asks for fewer at once, never more than the node's own bound (0: the bound). */
export function fanoutConcurrency(batch: number | undefined, bound: number): number {
  return batch === undefined || batch === 0 ? bound : Math.min(batch, bound);
}

/**
 * Resolves once the stream can take more, or when it never will (the caller left). While the
 * caller reads slower than nodes answer, no more nodes are asked, so the unread part stays small.
 */
export function drained(stream: Writable, signal: AbortSignal): Promise<void> {
  if (!stream.writableNeedDrain || stream.destroyed || signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
    signal.addEventListener('abort', done);
  });
}

/** One wait on the stream shared by every worker, instead of a listener each. */
export function drainGate(stream: Writable, signal: AbortSignal): () => Promise<void> {
  let waiting: Promise<void> | undefined;
  return () => {
    if (!stream.writableNeedDrain || stream.destroyed || signal.aborted) return Promise.resolve();
    waiting ??= drained(stream, signal).finally(() => (waiting = undefined));
    return waiting;
  };
}

const CONTENT_TYPES: Record<ClusterRequest['format'], string> = {
  text: 'text/plain',
  ndjson: 'application/x-ndjson',
  json: 'application/json',
};

interface BeginInput {
  readonly preamble: ClusterRequest['preamble'];
  readonly notes: readonly string[];
  readonly header: FanoutHeaderInput;
}

/** One of the three forms, written piece by piece as nodes finish. */
interface ReportWriter {
  begin(input: BeginInput): void;
  node(report: NodeReport): void;
  /** error: the fan-out itself failed; the nodes reported so far stand. */
  end(tally: StatusTally, runtimeSeconds: number, error: string | undefined): void;
}

/** Writes nothing once the caller has gone: the rest of the answer has no reader. */
function sink(stream: PassThrough): { write: (text: string) => void; end: (text: string) => void } {
  return {
    write: (text) => {
      if (!stream.destroyed) stream.write(text);
    },
    end: (text) => {
      if (!stream.destroyed) stream.end(text);
    },
  };
}

const WRITERS: Record<ClusterRequest['format'], (stream: PassThrough) => ReportWriter> = {
  text: (stream) => {
    const out = sink(stream);
    return {
      begin: ({ preamble, notes, header }) => {
        if (preamble !== undefined) out.write(preamble.text);
        out.write(renderHeader(header));
        for (const note of notes) out.write(`${note}\n\n`);
      },
      node: (report) => out.write(renderNodeBlock(report)),
      end: (tally, runtimeSeconds, error) =>
        out.end(error === undefined ? renderSummary(tally, runtimeSeconds) : `\nerror: ${error}\n`),
    };
  },
  ndjson: (stream) => {
    const out = sink(stream);
    return {
      begin: ({ preamble, notes }) => {
        if (preamble !== undefined) {
          out.write(`${JSON.stringify({ type: 'iperf', result: preamble.json })}\n`);
        }
        for (const note of notes) out.write(`${JSON.stringify({ type: 'note', note })}\n`);
      },
      node: (report) => out.write(renderNdjsonLine(nodeReportToJson(report))),
      end: (tally, runtimeSeconds, error) =>
        out.end(
          error === undefined
            ? renderNdjsonLine(summaryToJson(tally, runtimeSeconds))
            : `${JSON.stringify({ type: 'error', error })}\n`,
        ),
    };
  },
  // One JSON document as before, its nodes array written as they finish (in that order).
  json: (stream) => {
    const out = sink(stream);
    let first = true;
    return {
      begin: ({ preamble, notes }) => {
        const iperf = preamble === undefined ? '' : `"iperf":${JSON.stringify(preamble.json)},`;
        out.write(`{${iperf}"notes":${JSON.stringify(notes)},"nodes":[`);
      },
      node: (report) => {
        out.write(`${first ? '\n' : ',\n'}${JSON.stringify(nodeReportToJson(report))}`);
        first = false;
      },
      end: (tally, runtimeSeconds, error) => {
        const failed = error === undefined ? '' : `"error":${JSON.stringify(error)},`;
        out.end(
          `\n],${failed}"summary":${JSON.stringify(summaryToJson(tally, runtimeSeconds))}}\n`,
        );
      },
    };
  },
};
