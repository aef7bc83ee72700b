import { describe, expect, test } from '@jest/globals';
import { ParamError } from '../../exporter/checks/check.js';
import type { NodeReport } from '../../exporter/cluster/fanout-report.js';
import {
  askNodes,
  planNodes,
  readAnswer,
  resolveTargets,
  statusUrl,
  type AskDeps,
  type AskOptions,
  type PlannedNode,
  type RemoteQuery,
  type SelfAnswer,
} from '../../exporter/cluster/fanout.js';
import type { Peer } from '../../exporter/cluster/peer-directory.js';
import { checkSelector, parseJob } from '../../exporter/selectors.js';
import { KubeError } from '../../exporter/k8s/ports.js';
import { FakeKube } from '../fakes/kube.js';

const QUERY: RemoteQuery = { checks: ['ping', 'pciebw'], params: {} };
const DEFAULT_PORT = 3333;

function peer(node: string | undefined, address: string, extra: Partial<Peer> = {}): Peer {
  return { node, address, port: 3333, ready: true, pod: `autopilot-${address}`, ...extra };
}

const jobError = (value: string): string =>
  `job ${JSON.stringify(value)} is not namespace:label-selector, such as default:app=trainer`;
const selectorError = (name: string, selector: string): string =>
  `${name} ${JSON.stringify(selector)} is not a label selector, such as app=trainer or gpu-type in (h100,h200)`;

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

describe('parseJob', () => {
  test.each([
    ['default:app=trainer', { namespace: 'default', selector: 'app=trainer' }],
    ['ml-team: app = trainer ', { namespace: 'ml-team', selector: 'app = trainer' }],
    ['ns1:job-name in (a,b)', { namespace: 'ns1', selector: 'job-name in (a,b)' }],
  ])('%j', (value, expected) => {
    expect(parseJob(value)).toEqual(expected);
  });

  test.each([
    ['no colon', 'default'],
    ['empty selector', 'default:'],
    ['blank selector', 'default:   '],
    ['empty namespace', ':app=x'],
    ['namespace with capitals', 'Default:app=x'],
    ['namespace with an underscore', 'my_ns:app=x'],
    ['namespace ending in a dash', 'team-:app=x'],
  ])('%s is a ParamError', (_, value) => {
    const error = thrown(() => parseJob(value));
    expect(error).toBeInstanceOf(ParamError);
    expect((error as Error).message).toBe(jobError(value));
  });

  test('a selector with characters no selector has is a ParamError naming the selector', () => {
    const error = thrown(() => parseJob('default:app=x;rm -rf'));
    expect(error).toBeInstanceOf(ParamError);
    expect((error as Error).message).toBe(selectorError('job', 'app=x;rm -rf'));
  });
});

describe('checkSelector', () => {
  test('returns the selector trimmed', () => {
    expect(checkSelector('nodelabel', ' gpu=h100 ')).toBe('gpu=h100');
    expect(checkSelector('nodelabel', 'gpu-type in (h100,h200),!cordoned')).toBe(
      'gpu-type in (h100,h200),!cordoned',
    );
    expect(checkSelector('nodelabel', 'nvidia.com/gpu.product!=A100')).toBe(
      'nvidia.com/gpu.product!=A100',
    );
  });

  test.each(['', '   ', 'a=b|c', 'a=${x}', 'a="b"'])('%j is a ParamError', (selector) => {
    const error = thrown(() => checkSelector('nodelabel', selector));
    expect(error).toBeInstanceOf(ParamError);
    expect((error as Error).message).toBe(selectorError('nodelabel', selector));
  });
});

describe('resolveTargets', () => {
  const PEERS = [
    peer('node-a', '10.0.0.1'),
    peer('node-b', '10.0.0.2'),
    peer(undefined, '10.0.0.9'),
  ];

  function cluster(): FakeKube {
    const kube = new FakeKube();
    kube.addNode('node-a', { labels: { gpu: 'h100' } });
    kube.addNode('node-b', { labels: { gpu: 'a100' } });
    kube.addNode('node-c', { labels: { gpu: 'h100' } });
    kube.addPod({
      name: 'trainer-0',
      namespace: 'ml',
      nodeName: 'node-b',
      labels: { app: 'trainer' },
    });
    kube.addPod({
      name: 'trainer-1',
      namespace: 'ml',
      nodeName: 'node-d',
      labels: { app: 'trainer' },
    });
    kube.addPod({
      name: 'trainer-2',
      namespace: 'ml',
      labels: { app: 'trainer' },
      phase: 'Pending',
    });
    kube.addPod({ name: 'other', namespace: 'ml', nodeName: 'node-x', labels: { app: 'other' } });
    kube.addPod({
      name: 'trainer-9',
      namespace: 'elsewhere',
      nodeName: 'node-y',
      labels: { app: 'trainer' },
    });
    return kube;
  }

  test('host=all is every node with an Autopilot pod', async () => {
    const targets = await resolveTargets(
      { hosts: 'all', job: undefined, nodelabel: undefined },
      cluster().api,
      PEERS,
    );
    expect(targets).toEqual({ nodes: ['node-a', 'node-b'], notes: [] });
  });

  test('a host list is taken as given, sorted and without duplicates', async () => {
    const kube = cluster();
    const targets = await resolveTargets(
      { hosts: ['node-z', 'node-a', 'node-z'], job: undefined, nodelabel: undefined },
      kube.api,
      PEERS,
    );
    expect(targets).toEqual({ nodes: ['node-a', 'node-z'], notes: [] });
    expect(kube.calls).toEqual([]);
  });

  test('hosts, the nodes of the job, and the labelled nodes make a union; unscheduled pods are ignored', async () => {
    const kube = cluster();
    const targets = await resolveTargets(
      {
        hosts: ['node-e'],
        job: { namespace: 'ml', selector: 'app=trainer' },
        nodelabel: 'gpu=h100',
      },
      kube.api,
      PEERS,
    );
    expect(targets).toEqual({
      nodes: ['node-a', 'node-b', 'node-c', 'node-d', 'node-e'],
      notes: [],
    });
    expect(kube.calls).toEqual([
      { method: 'listPods', args: ['ml', 'app=trainer'] },
      { method: 'listNodes', args: ['gpu=h100'] },
    ]);
  });

  test('host=all with a job means only the nodes of the job', async () => {
    const targets = await resolveTargets(
      { hosts: 'all', job: { namespace: 'ml', selector: 'app=trainer' }, nodelabel: undefined },
      cluster().api,
      PEERS,
    );
    expect(targets).toEqual({ nodes: ['node-b', 'node-d'], notes: [] });
  });

  test('host=all with a nodelabel means only the labelled nodes', async () => {
    const targets = await resolveTargets(
      { hosts: 'all', job: undefined, nodelabel: 'gpu=a100' },
      cluster().api,
      PEERS,
    );
    expect(targets).toEqual({ nodes: ['node-b'], notes: [] });
  });

  test('a selector that matches nothing is a note, not an error', async () => {
    const targets = await resolveTargets(
      { hosts: 'all', job: { namespace: 'ml', selector: 'app=nobody' }, nodelabel: 'gpu=b200' },
      cluster().api,
      PEERS,
    );
    expect(targets).toEqual({
      nodes: [],
      notes: ['No workload labeled with app=nobody in ml.', 'No node is labeled with gpu=b200.'],
    });
  });

  test('a job whose pods are all unscheduled matched nothing', async () => {
    const kube = new FakeKube();
    kube.addPod({ name: 'p', namespace: 'ml', labels: { app: 'queued' }, phase: 'Pending' });
    const targets = await resolveTargets(
      { hosts: 'all', job: { namespace: 'ml', selector: 'app=queued' }, nodelabel: undefined },
      kube.api,
      PEERS,
    );
    expect(targets).toEqual({ nodes: [], notes: ['No workload labeled with app=queued in ml.'] });
  });

  test('a selector the API server rejects (400) is a ParamError', async () => {
    const kube = cluster();
    kube.failNext('listNodes', 400, 'unable to parse requirement: found "(", expected: identifier');
    const error = await resolveTargets(
      { hosts: 'all', job: undefined, nodelabel: 'gpu in (' },
      kube.api,
      PEERS,
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ParamError);
    expect((error as Error).message).toBe(
      'nodelabel: the Kubernetes API rejected the selector: unable to parse requirement: found "(", expected: identifier',
    );
  });

  test('a job selector the API server rejects is a ParamError naming the job', async () => {
    const kube = cluster();
    kube.failNext('listPods', 400, 'bad selector');
    await expect(
      resolveTargets(
        { hosts: 'all', job: { namespace: 'ml', selector: 'a b' }, nodelabel: undefined },
        kube.api,
        PEERS,
      ),
    ).rejects.toThrow(
      new ParamError('job: the Kubernetes API rejected the selector: bad selector'),
    );
  });

  test('other API failures propagate unchanged', async () => {
    const kube = cluster();
    const failure = kube.failNext('listPods', 403, 'pods is forbidden');
    const error = await resolveTargets(
      { hosts: 'all', job: { namespace: 'ml', selector: 'app=trainer' }, nodelabel: undefined },
      kube.api,
      PEERS,
    ).catch((e: unknown) => e);
    expect(error).toBe(failure);
    expect(error).toBeInstanceOf(KubeError);
  });
});

describe('planNodes and statusUrl', () => {
  test('a node without an Autopilot pod is reported, not asked', () => {
    expect(planNodes(['node-z'], [peer('node-a', '10.0.0.1')], QUERY, DEFAULT_PORT)).toEqual([
      {
        node: 'node-z',
        peer: undefined,
        url: undefined,
        unasked: { outcome: 'no-endpoint', detail: 'no Autopilot pod on this node' },
      },
    ]);
  });

  test('a node whose only pod is not ready is reported with the pod, not asked', () => {
    const notReady = peer('node-a', '10.0.0.1', { ready: false, pod: 'autopilot-x7k2p' });
    expect(planNodes(['node-a'], [notReady], QUERY, DEFAULT_PORT)).toEqual([
      {
        node: 'node-a',
        peer: notReady,
        url: 'http://10.0.0.1:3333/status?host=node-a&check=ping%2Cpciebw',
        unasked: { outcome: 'not-ready', detail: 'pod autopilot-x7k2p is not ready' },
      },
    ]);
  });

  test('a not-ready peer without a pod name is named by its address', () => {
    const notReady = peer('node-a', '10.0.0.1', { ready: false, pod: undefined });
    const [plan] = planNodes(['node-a'], [notReady], QUERY, DEFAULT_PORT);
    expect(plan?.unasked?.detail).toBe('pod 10.0.0.1 is not ready');
  });

  test('a ready pod is preferred to a not-ready one on the same node', () => {
    const stale = peer('node-a', '10.0.0.1', { ready: false });
    const fresh = peer('node-a', '10.0.0.7');
    expect(planNodes(['node-a'], [stale, fresh], QUERY, DEFAULT_PORT)).toEqual([
      {
        node: 'node-a',
        peer: fresh,
        url: 'http://10.0.0.7:3333/status?host=node-a&check=ping%2Cpciebw',
        unasked: undefined,
      },
    ]);
  });

  test('keeps the order of the nodes given', () => {
    const peers = [peer('node-a', '10.0.0.1'), peer('node-b', '10.0.0.2')];
    expect(planNodes(['node-b', 'node-a'], peers, QUERY, DEFAULT_PORT).map((p) => p.node)).toEqual([
      'node-b',
      'node-a',
    ]);
  });

  test('an IPv6 address is bracketed in the URL', () => {
    expect(statusUrl(peer('node-a', 'fd00::5'), 'node-a', QUERY, DEFAULT_PORT)).toBe(
      'http://[fd00::5]:3333/status?host=node-a&check=ping%2Cpciebw',
    );
  });

  test('the default port is used when the slice names none', () => {
    expect(statusUrl(peer('node-a', '10.0.0.1', { port: undefined }), 'node-a', QUERY, 8080)).toBe(
      'http://10.0.0.1:8080/status?host=node-a&check=ping%2Cpciebw',
    );
  });

  test('forwarded parameters are in the URL', () => {
    const query: RemoteQuery = { checks: ['dcgm'], params: { r: '3', pingnodes: 'node-b,node-c' } };
    expect(statusUrl(peer('node-a', '10.0.0.1'), 'node-a', query, DEFAULT_PORT)).toBe(
      'http://10.0.0.1:3333/status?host=node-a&check=dcgm&r=3&pingnodes=node-b%2Cnode-c',
    );
  });
});

describe('readAnswer', () => {
  test('reads the JSON /status writes', () => {
    expect(
      readAnswer({
        health: { state: 'WARN', reasons: ['ping peer-b: unreachable', 7] },
        results: [
          { check: 'ping', verdict: 'FAIL', reason: '1 FAIL', text: 'Ping test\n' },
          { check: 'pciebw', verdict: 'PASS' },
        ],
        extra: 'ignored',
      }),
    ).toEqual({
      health: { state: 'WARN', reasons: ['ping peer-b: unreachable'] },
      runs: [
        { check: 'ping', verdict: 'FAIL', reason: '1 FAIL', text: 'Ping test\n' },
        { check: 'pciebw', verdict: 'PASS', reason: '', text: '' },
      ],
    });
  });

  test('reasons may be absent', () => {
    expect(readAnswer({ health: { state: 'PASS' }, results: [] })).toEqual({
      health: { state: 'PASS', reasons: [] },
      runs: [],
    });
  });

  test.each([
    ['null', null],
    ['a string', 'PASS'],
    ['no results', { health: { state: 'PASS' } }],
    ['results not a list', { health: { state: 'PASS' }, results: {} }],
    ['no health', { results: [] }],
    ['health null', { health: null, results: [] }],
    ['state not a string', { health: { state: 1 }, results: [] }],
    ['a null result', { health: { state: 'PASS' }, results: [null] }],
    ['a result without check', { health: { state: 'PASS' }, results: [{ verdict: 'PASS' }] }],
    ['an unknown verdict', { health: { state: 'PASS' }, results: [{ check: 'x', verdict: 'OK' }] }],
  ])('%s is not an answer', (_, value) => {
    expect(readAnswer(value)).toBeUndefined();
  });
});

describe('askNodes', () => {
  const ANSWER = {
    health: { state: 'PASS', reasons: [] },
    results: [{ check: 'ping', verdict: 'PASS', reason: '3 PASS', text: 'Ping test\nOK\n' }],
  };
  const SELF: SelfAnswer = {
    health: { state: 'WARN', reasons: ['pciebw 0: slow'] },
    runs: [{ check: 'pciebw', verdict: 'WARN', reason: '1 WARN', text: 'PCIe\n' }],
  };

  const ready = (node: string, address: string): PlannedNode =>
    planNodes([node], [peer(node, address)], QUERY, DEFAULT_PORT)[0]!;
  const urlOf = (address: string, node: string): string =>
    `http://${address}:3333/status?host=${node}&check=ping%2Cpciebw`;

  type FetchInit = Parameters<typeof fetch>[1];
  type Handler = (url: string, init: FetchInit) => Promise<Response>;

  function fakeFetch(handler: Handler) {
    const requests: { url: string; init: FetchInit }[] = [];
    const fetchFn = ((input: Parameters<typeof fetch>[0], init?: FetchInit) => {
      const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
      requests.push({ url, init });
      return handler(url, init);
    }) as typeof fetch;
    return { fetch: fetchFn, requests };
  }

  const json = (value: unknown, status = 200): Response =>
    new Response(JSON.stringify(value), {
      status,
      headers: { 'content-type': 'application/json' },
    });

  function run(
    planned: readonly PlannedNode[],
    handler: Handler,
    options: Partial<AskOptions> & { askSelf?: AskDeps['askSelf'] } = {},
  ) {
    const fetcher = fakeFetch(handler);
    const seen: NodeReport[] = [];
    const { askSelf, ...rest } = options;
    const deps: AskDeps = {
      fetch: fetcher.fetch,
      now: () => 1_000_000,
      nodeName: 'this-node',
      askSelf: askSelf ?? (() => Promise.resolve(SELF)),
    };
    const counted = askNodes(planned, deps, {
      deadlineMs: 5000,
      concurrency: 4,
      authorization: undefined,
      signal: new AbortController().signal,
      onReport: (report) => seen.push(report),
      ...rest,
    });
    // The fan-out keeps no report: what a test reads is what onReport was handed.
    const promise = counted.then(() => seen);
    return { promise, counted, requests: fetcher.requests, seen };
  }

  test('a node that answers JSON is answered, with its health and runs', async () => {
    const plan = ready('node-a', '10.0.0.1');
    const { promise, requests } = run([plan], () => Promise.resolve(json(ANSWER)));
    expect(await promise).toEqual([
      {
        node: 'node-a',
        endpoint: '10.0.0.1:3333',
        url: urlOf('10.0.0.1', 'node-a'),
        outcome: 'answered',
        httpStatus: 200,
        detail: '',
        health: { state: 'PASS', reasons: [] },
        runs: [{ check: 'ping', verdict: 'PASS', reason: '3 PASS', text: 'Ping test\nOK\n' }],
        durationSeconds: 0,
      },
    ]);
    expect(requests.map((r) => r.url)).toEqual([urlOf('10.0.0.1', 'node-a')]);
    // The header marks the request as part of a fan-out, so the asked node does not fan out again.
    expect(requests[0]?.init?.headers).toEqual({
      accept: 'application/json',
      'x-autopilot-fanout-from': 'this-node',
    });
  });

  test('the caller’s Authorization header is forwarded', async () => {
    const { promise, requests } = run(
      [ready('node-a', '10.0.0.1')],
      () => Promise.resolve(json(ANSWER)),
      {
        authorization: 'Bearer abc.def',
      },
    );
    await promise;
    expect(requests[0]?.init?.headers).toEqual({
      accept: 'application/json',
      'x-autopilot-fanout-from': 'this-node',
      authorization: 'Bearer abc.def',
    });
  });

  test('an HTTP error with an {error} body is refused, with its status and message', async () => {
    const { promise } = run([ready('node-a', '10.0.0.1')], () =>
      Promise.resolve(json({ error: 'dcgm requires the autopilot-admin role' }, 403)),
    );
    const [report] = await promise;
    expect(report).toMatchObject({
      outcome: 'refused',
      httpStatus: 403,
      detail: '403: dcgm requires the autopilot-admin role',
      health: undefined,
      runs: [],
    });
  });

  test('an HTTP error with a text body says the text', async () => {
    const { promise } = run([ready('node-a', '10.0.0.1')], () =>
      Promise.resolve(new Response('upstream connect error\n', { status: 503 })),
    );
    const [report] = await promise;
    expect(report).toMatchObject({
      outcome: 'refused',
      httpStatus: 503,
      detail: '503: upstream connect error',
    });
  });

  test('a network error is unreachable, with the reason fetch hides in its cause', async () => {
    const { promise } = run([ready('node-a', '10.0.0.9')], () =>
      Promise.reject(
        new TypeError('fetch failed', { cause: new Error('connect ECONNREFUSED 10.0.0.9:3333') }),
      ),
    );
    const [report] = await promise;
    expect(report).toEqual({
      node: 'node-a',
      endpoint: '10.0.0.9:3333',
      url: urlOf('10.0.0.9', 'node-a'),
      outcome: 'unreachable',
      httpStatus: undefined,
      detail: 'connect ECONNREFUSED 10.0.0.9:3333',
      health: undefined,
      runs: [],
      durationSeconds: 0,
    });
  });

  test('a node that does not answer within the deadline is unreachable', async () => {
    const neverAnswers: Handler = (_, init) =>
      new Promise((_resolve, reject) => {
        const signal = init?.signal;
        signal?.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
      });
    const started = performance.now();
    const { promise } = run([ready('node-a', '10.0.0.1')], neverAnswers, { deadlineMs: 50 });
    const [report] = await promise;
    expect(performance.now() - started).toBeGreaterThanOrEqual(45);
    expect(report).toMatchObject({
      outcome: 'unreachable',
      httpStatus: undefined,
      detail: 'no answer within 0.1 s',
    });
  });

  test('a 200 that is not Autopilot JSON is refused', async () => {
    const { promise } = run([ready('node-a', '10.0.0.1')], () =>
      Promise.resolve(new Response('<html>Hello</html>', { status: 200 })),
    );
    const [report] = await promise;
    expect(report).toMatchObject({
      outcome: 'refused',
      httpStatus: 200,
      detail: 'answered 200 with something that is not Autopilot JSON',
    });
  });

  test('this node answers in process, without fetch', async () => {
    const signals: AbortSignal[] = [];
    const { promise, requests } = run(
      [ready('this-node', '10.0.0.5')],
      () => Promise.reject(new Error('must not fetch')),
      {
        askSelf: (signal) => {
          signals.push(signal);
          return Promise.resolve(SELF);
        },
      },
    );
    expect(await promise).toEqual([
      {
        node: 'this-node',
        endpoint: '10.0.0.5:3333',
        url: urlOf('10.0.0.5', 'this-node'),
        outcome: 'answered',
        httpStatus: undefined,
        detail: '',
        health: SELF.health,
        runs: SELF.runs,
        durationSeconds: 0,
      },
    ]);
    expect(requests).toEqual([]);
    expect(signals).toHaveLength(1);
  });

  test('this node failing in process is refused with the error', async () => {
    const { promise } = run([ready('this-node', '10.0.0.5')], () => Promise.reject(new Error()), {
      askSelf: () => Promise.reject(new Error('check runner is shutting down')),
    });
    const [report] = await promise;
    expect(report).toMatchObject({ outcome: 'refused', detail: 'check runner is shutting down' });
  });

  test('no more requests are in flight than the concurrency allows', async () => {
    let inFlight = 0;
    let most = 0;
    const slow: Handler = async () => {
      inFlight += 1;
      most = Math.max(most, inFlight);
      await new Promise<void>((resolve) => setImmediate(resolve));
      inFlight -= 1;
      return json(ANSWER);
    };
    const planned = ['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((n, i) =>
      ready(`node-${n}`, `10.0.0.${i + 1}`),
    );
    const { promise } = run(planned, slow, { concurrency: 3 });
    const reports = await promise;
    expect(most).toBe(3);
    expect(reports.map((r) => r.outcome)).toEqual(Array(7).fill('answered'));
  });

  test('every node is reported once, through onReport too, those not asked included', async () => {
    const peers = [
      peer('node-b', '10.0.0.2', { ready: false, pod: 'autopilot-b' }),
      peer('node-c', '10.0.0.3'),
    ];
    const planned = planNodes(['node-a', 'node-b', 'node-c'], peers, QUERY, DEFAULT_PORT);
    const { counted, requests, seen } = run(planned, () => Promise.resolve(json(ANSWER)));
    const reported = await counted;

    expect(reported).toBe(3);
    const reports = seen;
    expect(reports.map((r) => [r.node, r.outcome, r.detail, r.endpoint])).toEqual([
      ['node-a', 'no-endpoint', 'no Autopilot pod on this node', undefined],
      ['node-b', 'not-ready', 'pod autopilot-b is not ready', '10.0.0.2:3333'],
      ['node-c', 'answered', '', '10.0.0.3:3333'],
    ]);
    expect(requests.map((r) => r.url)).toEqual([urlOf('10.0.0.3', 'node-c')]);
  });

  test('an IPv6 endpoint is reported bracketed', async () => {
    const { promise } = run([ready('node-a', 'fd00::5')], () => Promise.resolve(json(ANSWER)));
    const [report] = await promise;
    expect(report?.endpoint).toBe('[fd00::5]:3333');
    expect(report?.url).toBe('http://[fd00::5]:3333/status?host=node-a&check=ping%2Cpciebw');
  });
});
