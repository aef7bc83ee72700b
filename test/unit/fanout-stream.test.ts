/**
 * The cluster-wide /status as it streams (issue 21 part 3): through a real koa server, with fake
 * nodes the test releases one by one, so order and partial delivery are asserted without a timing.
 */

import { afterEach, describe, expect, test } from '@jest/globals';
import { get, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import Koa from 'koa';
import {
  drained,
  fanoutConcurrency,
  streamClusterStatus,
  type ClusterDeps,
  type ClusterRequest,
} from '../../exporter/api/cluster-status.js';
import {
  askNodes,
  planNodes,
  type AskDeps,
  type AskOptions,
  type PlannedNode,
} from '../../exporter/cluster/fanout.js';
import { StatusTally, type NodeReport } from '../../exporter/cluster/fanout-report.js';
import type { HttpGet } from '../../exporter/cluster/http-get.js';
import type { Peer } from '../../exporter/cluster/peer-directory.js';
import { silentLogger } from '../../exporter/log.js';
import { FakeKube } from '../fakes/kube.js';

const ANSWER = JSON.stringify({
  health: { state: 'PASS', reasons: [] },
  results: [{ check: 'ping', verdict: 'PASS', reason: '1 PASS', text: '[PING] SUCCESS\n' }],
});

/** A node's answer that the test releases when it chooses; the fake counts what is in flight. */
class FakeNodes {
  readonly #held = new Map<string, { resolve: (response: Response) => void }>();
  readonly #waiting = new Map<string, () => void>();
  readonly asked: string[] = [];
  inFlight = 0;
  mostInFlight = 0;
  /** Nodes answered at once, without being held. */
  readonly immediate = new Set<string>();
  /** Nodes whose request fails as a refused connection would. */
  readonly refusing = new Set<string>();

  readonly fetch: HttpGet = (url) => {
    const node = new URL(url).searchParams.get('host') ?? '';
    this.asked.push(node);
    this.inFlight += 1;
    this.mostInFlight = Math.max(this.mostInFlight, this.inFlight);
    const settled = <T>(value: T): T => {
      this.inFlight -= 1;
      return value;
    };
    if (this.refusing.has(node)) {
      const error = new Error('fetch failed', { cause: new Error(`connect ECONNREFUSED ${node}`) });
      return new Promise((_, reject) => setImmediate(() => reject(settled(error))));
    }
    if (node === 'node-500') {
      return Promise.resolve(settled(new Response('{"error":"boom"}', { status: 500 })));
    }
    if (this.immediate.has(node)) {
      return new Promise((resolve) => setImmediate(() => resolve(settled(new Response(ANSWER)))));
    }
    return new Promise((resolve) => {
      this.#held.set(node, { resolve: (response) => resolve(settled(response)) });
      this.#waiting.get(node)?.();
    });
  };

  /** Answers the node's request once it has been made. */
  async release(node: string): Promise<void> {
    if (!this.#held.has(node)) {
      await new Promise<void>((resolve) => this.#waiting.set(node, resolve));
    }
    this.#held.get(node)!.resolve(new Response(ANSWER));
    this.#held.delete(node);
  }
}

const peerOf = (node: string, i: number): Peer => ({
  node,
  address: `10.0.0.${i + 1}`,
  port: 3333,
  ready: true,
  pod: `autopilot-${node}`,
});

function depsFor(nodes: FakeNodes, peers: readonly Peer[], concurrency: number): ClusterDeps {
  return {
    kube: new FakeKube().api,
    peers: () => peers,
    fetch: nodes.fetch,
    now: () => 0,
    nodeName: 'this-node',
    concurrency,
    defaultPort: 3333,
    deadlineMs: () => 60_000,
    askSelf: () => Promise.reject(new Error('this node is not selected in these tests')),
    status: () => ({}),
    logger: silentLogger,
  };
}

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(
    servers.splice(0).map(
      (server) =>
        new Promise((resolve) => {
          server.closeAllConnections();
          server.close(resolve);
        }),
    ),
  );
});

/** A koa server answering every request with the cluster-wide status. */
async function serve(deps: ClusterDeps, request: Omit<ClusterRequest, 'query'>, host: string) {
  const app = new Koa();
  app.use((ctx) => streamClusterStatus(ctx, deps, { ...request, query: { host } }));
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  return (server.address() as AddressInfo).port;
}

/** The answer as it arrives: `until` resolves when the text so far satisfies the predicate. */
function reader(port: number) {
  let text = '';
  let ended = false;
  const waiters: { test: () => boolean; resolve: () => void }[] = [];
  const check = (): void => {
    for (const waiter of [...waiters]) {
      if (waiter.test()) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  };
  get(`http://127.0.0.1:${port}/status`, (res) => {
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      text += chunk;
      check();
    });
    res.on('end', () => {
      ended = true;
      check();
    });
  });
  return {
    text: () => text,
    ended: () => ended,
    until: (test: (text: string) => boolean) =>
      new Promise<void>((resolve) => {
        waiters.push({ test: () => test(text), resolve });
        check();
      }),
    end: () =>
      new Promise<string>((resolve) => {
        waiters.push({ test: () => ended, resolve: () => resolve(text) });
        check();
      }),
  };
}

const NODES = ['node-a', 'node-b', 'node-c'];

describe('the cluster-wide /status streams each node as it answers', () => {
  // For each form: how a node's entry is recognised, and how the answer ends.
  const forms: [ClusterRequest['format'], (node: string) => string, string][] = [
    ['text', (node) => `Node: ${node}\n`, 'Node Summary:'],
    ['ndjson', (node) => `"node":"${node}"`, '"type":"summary"'],
    ['json', (node) => `"node":"${node}"`, '"summary":'],
  ];

  test.each(forms)(
    '%s: in the order they answer, before the slowest has',
    async (format, entry, summary) => {
      const nodes = new FakeNodes();
      const deps = depsFor(nodes, NODES.map(peerOf), 8);
      const port = await serve(
        deps,
        { checks: ['ping'], forwarded: {}, batch: undefined, format, authorization: undefined },
        NODES.join(','),
      );
      const answer = reader(port);

      await nodes.release('node-c');
      await answer.until((text) => text.includes(entry('node-c')));
      await nodes.release('node-a');
      await answer.until((text) => text.includes(entry('node-a')));
      // node-b has not answered: what came so far is node-c, then node-a, and no summary.
      const partial = answer.text();
      expect(partial.indexOf(entry('node-c'))).toBeLessThan(partial.indexOf(entry('node-a')));
      expect(partial).not.toContain(entry('node-b'));
      expect(partial).not.toContain(summary);
      expect(answer.ended()).toBe(false);

      await nodes.release('node-b');
      const whole = await answer.end();
      const order = NODES.map((node) => whole.indexOf(entry(node)));
      expect(order[2]).toBeLessThan(order[0]!);
      expect(order[0]).toBeLessThan(order[1]!);
      expect(whole.indexOf(summary)).toBeGreaterThan(order[1]!);
    },
  );

  test('json: one document, the nodes in answer order and the summary sorted', async () => {
    const nodes = new FakeNodes();
    const port = await serve(
      depsFor(nodes, NODES.map(peerOf), 8),
      {
        checks: ['ping'],
        forwarded: {},
        batch: undefined,
        format: 'json',
        authorization: undefined,
      },
      NODES.join(','),
    );
    const answer = reader(port);
    for (const node of ['node-b', 'node-c', 'node-a']) {
      await nodes.release(node);
      await answer.until((text) => text.includes(`"node":"${node}"`));
    }
    const document = JSON.parse(await answer.end()) as {
      notes: string[];
      nodes: { node: string; outcome: string }[];
      summary: { nodes: number; ok: number; summary: Record<string, string[]> };
    };
    expect(document.notes).toEqual([]);
    expect(document.nodes.map((n) => [n.node, n.outcome])).toEqual([
      ['node-b', 'answered'],
      ['node-c', 'answered'],
      ['node-a', 'answered'],
    ]);
    expect(Object.keys(document.summary.summary)).toEqual(NODES);
    expect(document.summary).toMatchObject({ nodes: 3, ok: 3 });
  });

  test('a node that fails is reported, and the others answer all the same', async () => {
    const names = ['node-500', 'node-a', 'node-down', 'node-z'];
    const nodes = new FakeNodes();
    nodes.refusing.add('node-down');
    for (const node of ['node-a', 'node-z']) nodes.immediate.add(node);
    const port = await serve(
      depsFor(nodes, names.map(peerOf), 2),
      {
        checks: ['ping'],
        forwarded: {},
        batch: undefined,
        format: 'ndjson',
        authorization: undefined,
      },
      names.join(','),
    );
    const lines = (await reader(port).end())
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    const byNode = new Map(lines.filter((l) => l.type === 'node').map((l) => [l.node, l]));
    expect(byNode.get('node-500')).toMatchObject({
      outcome: 'refused',
      httpStatus: 500,
      detail: '500: boom',
    });
    expect(byNode.get('node-down')).toMatchObject({
      outcome: 'unreachable',
      detail: 'connect ECONNREFUSED node-down',
    });
    expect(byNode.get('node-a')).toMatchObject({ outcome: 'answered', status: ['OK'] });
    expect(byNode.get('node-z')).toMatchObject({ outcome: 'answered', status: ['OK'] });
    expect(lines.at(-1)).toMatchObject({ type: 'summary', nodes: 4, ok: 2, notOk: 2 });
  });
});

describe('bounded concurrency', () => {
  const many = Array.from({ length: 40 }, (_, i) => `node-${String(i).padStart(2, '0')}`);

  test.each([
    ['the setting, batch absent', undefined, 5, 5],
    ['batch asks for fewer', 3, 5, 3],
    ['batch cannot ask for more', 1000, 5, 5],
  ])('%s', async (_, batch, bound, expected) => {
    const nodes = new FakeNodes();
    for (const node of many) nodes.immediate.add(node);
    const port = await serve(
      depsFor(nodes, many.map(peerOf), bound),
      { checks: ['ping'], forwarded: {}, batch, format: 'ndjson', authorization: undefined },
      many.join(','),
    );
    const text = await reader(port).end();
    expect(text.match(/"outcome":"answered"/g)).toHaveLength(many.length);
    expect(nodes.asked).toHaveLength(many.length);
    expect(nodes.mostInFlight).toBe(expected);
  });

  test('fanoutConcurrency: 0 or absent is the bound; more than the bound is the bound', () => {
    expect(fanoutConcurrency(undefined, 128)).toBe(128);
    expect(fanoutConcurrency(0, 128)).toBe(128);
    expect(fanoutConcurrency(17, 128)).toBe(17);
    expect(fanoutConcurrency(100_000, 128)).toBe(128);
  });

  test('a node that never answers holds one slot; the rest go through the others', async () => {
    const nodes = new FakeNodes();
    for (const node of many.slice(1)) nodes.immediate.add(node);
    const seen: string[] = [];
    const planned = planNodes(many, many.map(peerOf), { checks: ['ping'], params: {} }, 3333);
    const done = askNodes(planned, askDeps(nodes), {
      ...options(2),
      onReport: (report) => seen.push(report.node),
    });
    // Every other node is reported while the first one is still held.
    await until(() => seen.length === many.length - 1);
    expect(seen).not.toContain(many[0]);
    await nodes.release(many[0]!);
    expect(await done).toBe(many.length);
    expect(seen.at(-1)).toBe(many[0]);
  });
});

function askDeps(nodes: FakeNodes): AskDeps {
  return {
    fetch: nodes.fetch,
    now: () => 0,
    nodeName: 'this-node',
    askSelf: () => Promise.reject(new Error('not asked')),
  };
}

function options(concurrency: number): AskOptions {
  return {
    deadlineMs: 60_000,
    concurrency,
    authorization: undefined,
    signal: new AbortController().signal,
    onReport: () => undefined,
  };
}

/** Polls on the event loop (no clock): each turn lets the fake answers settle. */
async function until(condition: () => boolean): Promise<void> {
  for (let turn = 0; turn < 10_000 && !condition(); turn++) {
    await new Promise((resolve) => setImmediate(resolve));
  }
  expect(condition()).toBe(true);
}

describe('memory stays bounded', () => {
  const many = Array.from({ length: 30 }, (_, i) => `node-${String(i).padStart(2, '0')}`);
  const plan = (): PlannedNode[] =>
    planNodes(many, many.map(peerOf), { checks: ['ping'], params: {} }, 3333);

  test('askNodes hands each report on and keeps none: it resolves with a count', async () => {
    const nodes = new FakeNodes();
    for (const node of many) nodes.immediate.add(node);
    let handed = 0;
    const result = await askNodes(plan(), askDeps(nodes), {
      ...options(4),
      onReport: () => (handed += 1),
    });
    expect(result).toBe(many.length);
    expect(handed).toBe(many.length);
  });

  test('while the reader lags, no further node is asked', async () => {
    const nodes = new FakeNodes();
    for (const node of many) nodes.immediate.add(node);
    // The reader lags from the first report on, until the test lets it catch up.
    let gate: Promise<void> | undefined;
    let open: () => void = () => undefined;
    let caughtUp = false;
    const reported: string[] = [];
    const done = askNodes(plan(), askDeps(nodes), {
      ...options(4),
      onReport: (report) => {
        reported.push(report.node);
        if (gate === undefined && !caughtUp) gate = new Promise((resolve) => (open = resolve));
      },
      ready: () => gate ?? Promise.resolve(),
    });
    // The four asked before anything was written answer; then every worker waits.
    await until(() => reported.length === 4);
    for (let turn = 0; turn < 50; turn++) await new Promise((r) => setImmediate(r));
    expect(nodes.asked).toHaveLength(4);
    expect(reported).toHaveLength(4);
    caughtUp = true;
    gate = undefined;
    open();
    expect(await done).toBe(many.length);
    expect(nodes.asked).toHaveLength(many.length);
  });

  test('the summary keeps statuses only, the healthy ones as one shared array', () => {
    const report = (node: string, verdict: 'PASS' | 'FAIL'): NodeReport => ({
      node,
      endpoint: '10.0.0.1:3333',
      url: 'http://10.0.0.1:3333/status',
      outcome: 'answered',
      httpStatus: 200,
      detail: '',
      health: { state: verdict, reasons: [] },
      runs: [{ check: 'ping', verdict, reason: '', text: 'x'.repeat(100_000) }],
      durationSeconds: 0.1,
    });
    const tally = StatusTally.of([report('b', 'PASS'), report('a', 'FAIL'), report('c', 'PASS')]);
    const entries = tally.entries();
    expect(entries).toEqual([
      ['a', ['PING Failed']],
      ['b', ['OK']],
      ['c', ['OK']],
    ]);
    expect(entries[1]![1]).toBe(entries[2]![1]);
    expect(JSON.stringify(entries).length).toBeLessThan(100);
  });

  test('drained waits for the stream, and gives up when the caller has gone', async () => {
    const stream = new PassThrough({ highWaterMark: 4 });
    const caller = new AbortController();
    expect(stream.write('more than four bytes')).toBe(false);
    let resolved = false;
    const waiting = drained(stream, caller.signal).then(() => (resolved = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(resolved).toBe(false);
    stream.read();
    await waiting;
    expect(resolved).toBe(true);

    expect(stream.write('more than four bytes')).toBe(false);
    const gone = drained(stream, caller.signal);
    caller.abort();
    await expect(gone).resolves.toBeUndefined();
  });
});
