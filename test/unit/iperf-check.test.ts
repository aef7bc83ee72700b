/**
 * The iperf check: the pure pieces (step plans, verdicts, samples, Autopilot's matrix) and the
 * orchestration of servers, clients and cleanup across nodes, through fake node APIs.
 */

import { describe, expect, test } from '@jest/globals';
import {
  createIperfCheck,
  failedServers,
  iperfRunningLine,
  iperfSamples,
  judgePairs,
  pairSteps,
  readClients,
  renderMatrix,
  ringSteps,
} from '../../exporter/checks/iperf.js';
import type {
  IperfNode,
  IperfPorts,
  IperfSettings,
  PairResult,
} from '../../exporter/checks/iperf.js';
import { ParamError, summariseOutcome } from '../../exporter/checks/check.js';
import type {
  Check,
  CheckOutcome,
  CheckParams,
  CheckRun,
  RawParams,
} from '../../exporter/checks/check.js';
import { silentLogger } from '../../exporter/log.js';
import type { ClientRun } from '../../exporter/network/iperf-service.js';
import { clientsToAutopilotJson, summariseClients } from '../../exporter/network/iperf-service.js';
import { createResultStore } from '../../exporter/store.js';

const SETTINGS: IperfSettings = {
  defaultPclients: 8,
  defaultStartport: 5200,
  defaultDurationSeconds: 5,
};

const GBIT = 1e9;

// ---- step plans ---------------------------------------------------------------------------------

const names = (count: number): string[] => Array.from({ length: count }, (_, i) => `n${i + 1}`);

/** Every step is a matching: no node sends twice or receives twice in it. */
function expectEachNodeOncePerDirection(step: readonly [string, string][]): void {
  const sources = step.map(([source]) => source);
  const destinations = step.map(([, destination]) => destination);
  expect(new Set(sources).size).toBe(sources.length);
  expect(new Set(destinations).size).toBe(destinations.length);
}

function allOrderedPairs(nodes: readonly string[]): string[] {
  return nodes.flatMap((a) => nodes.filter((b) => b !== a).map((b) => `${a}->${b}`)).sort();
}

describe('ringSteps', () => {
  test('one node has nothing to send to', () => {
    expect(ringSteps(['n1'])).toEqual([]);
  });

  test('two nodes: one step, both directions', () => {
    expect(ringSteps(['n1', 'n2'])).toEqual([
      [
        ['n1', 'n2'],
        ['n2', 'n1'],
      ],
    ]);
  });

  test("three nodes: Autopilot's steps i -> i+1, then i -> i+2", () => {
    expect(ringSteps(['n1', 'n2', 'n3'])).toEqual([
      [
        ['n1', 'n2'],
        ['n2', 'n3'],
        ['n3', 'n1'],
      ],
      [
        ['n1', 'n3'],
        ['n2', 'n1'],
        ['n3', 'n2'],
      ],
    ]);
  });

  test.each([2, 3, 4])(
    '%i nodes: every ordered pair exactly once, every node sends and receives once per step',
    (count) => {
      const nodes = names(count);
      const steps = ringSteps(nodes);
      expect(steps).toHaveLength(count - 1);
      for (const step of steps) {
        expect(step).toHaveLength(count);
        expectEachNodeOncePerDirection(step);
        expect(new Set(step.map(([source]) => source))).toEqual(new Set(nodes));
        expect(new Set(step.map(([, destination]) => destination))).toEqual(new Set(nodes));
      }
      const ran = steps.flat().map(([a, b]) => `${a}->${b}`);
      expect(ran.sort()).toEqual(allOrderedPairs(nodes));
    },
  );
});

describe('pairSteps', () => {
  test('two nodes: one step, both directions', () => {
    expect(pairSteps(['n1', 'n2'])).toEqual([
      [
        ['n1', 'n2'],
        ['n2', 'n1'],
      ],
    ]);
  });

  test.each([
    [2, 1],
    [3, 3],
    [4, 3],
    [5, 5],
  ])(
    '%i nodes in %i steps: partners both ways, every unordered pair meets exactly once',
    (count, stepCount) => {
      const nodes = names(count);
      const steps = pairSteps(nodes);
      expect(steps).toHaveLength(stepCount);
      const met: string[] = [];
      for (const step of steps) {
        expectEachNodeOncePerDirection(step);
        const partner = new Map<string, string>();
        for (const [source, destination] of step) {
          expect(source).not.toBe(destination);
          // One partner per node per step, in both directions.
          expect(partner.get(source) ?? destination).toBe(destination);
          partner.set(source, destination);
          expect(step).toContainEqual([destination, source]);
          if (source < destination) met.push(`${source}-${destination}`);
        }
        // With an odd count exactly one node sits the step out; with an even one nobody does.
        expect(nodes.length - partner.size).toBe(count % 2);
      }
      const unordered = nodes.flatMap((a) => nodes.filter((b) => a < b).map((b) => `${a}-${b}`));
      expect(met.sort()).toEqual(unordered.sort());
    },
  );
});

// ---- verdicts, samples and the matrix -----------------------------------------------------------

function pair(
  source: string,
  destination: string,
  name: string,
  bitsPerSecond: number | undefined,
  error?: string,
): PairResult {
  return { source, destination, interface: name, bitsPerSecond, error };
}

describe('judgePairs', () => {
  const pairs = [
    pair('a', 'b', 'eth0', 10 * GBIT),
    pair('a', 'c', 'eth0', 8 * GBIT),
    pair('b', 'a', 'eth0', 2.5 * GBIT),
    pair('b', 'c', 'eth0', 4 * GBIT),
    pair('c', 'a', 'eth0', undefined, 'unable to connect to server: Connection refused'),
    // Alone these are healthy; judged against eth0's median they would look slow.
    pair('a', 'b', 'net1', 1 * GBIT),
    pair('b', 'a', 'net1', 1 * GBIT),
  ];
  const judged = judgePairs(pairs);

  test('a pair that did not transfer is FAIL with the error', () => {
    expect(judged[4]).toEqual({
      id: 'c->a/eth0',
      verdict: 'FAIL',
      reason: 'no transfer: unable to connect to server: Connection refused',
      evidence: { source: 'c', destination: 'a', interface: 'eth0', bytesPerSecond: null },
    });
  });

  test("a pair under half its interface's median is WARN, naming both figures", () => {
    // eth0 ran 2.5, 4, 8, 10 Gb/s: the median is 6, half of it 3; the failed pair is not counted.
    expect(judged[2]).toEqual({
      id: 'b->a/eth0',
      verdict: 'WARN',
      reason: '2.50 Gb/s, under half the median of eth0 (6.00 Gb/s)',
      evidence: { source: 'b', destination: 'a', interface: 'eth0', bytesPerSecond: 2.5e9 / 8 },
    });
  });

  test('the other pairs PASS with their throughput; medians are per interface', () => {
    expect(judged.map((d) => [d.id, d.verdict, d.reason])).toEqual([
      ['a->b/eth0', 'PASS', '10.00 Gb/s'],
      ['a->c/eth0', 'PASS', '8.00 Gb/s'],
      ['b->a/eth0', 'WARN', '2.50 Gb/s, under half the median of eth0 (6.00 Gb/s)'],
      ['b->c/eth0', 'PASS', '4.00 Gb/s'],
      ['c->a/eth0', 'FAIL', 'no transfer: unable to connect to server: Connection refused'],
      ['a->b/net1', 'PASS', '1.00 Gb/s'],
      ['b->a/net1', 'PASS', '1.00 Gb/s'],
    ]);
  });

  test('exactly half of the median passes: under half means strictly below', () => {
    const verdicts = judgePairs([
      pair('x', 'y', 'eth0', 4 * GBIT),
      pair('y', 'x', 'eth0', 8 * GBIT),
      pair('x', 'z', 'eth0', 8 * GBIT),
    ]).map((d) => d.verdict);
    expect(verdicts).toEqual(['PASS', 'PASS', 'PASS']);
  });

  test('an interface on which every pair failed has only FAILs', () => {
    expect(
      judgePairs([
        pair('x', 'y', 'net1', undefined, 'e1'),
        pair('y', 'x', 'net1', undefined, 'e2'),
      ]),
    ).toEqual([
      expect.objectContaining({ verdict: 'FAIL', reason: 'no transfer: e1' }),
      expect.objectContaining({ verdict: 'FAIL', reason: 'no transfer: e2' }),
    ]);
  });
});

describe('iperfSamples', () => {
  test('per interface min, median, max in bytes/s, then each source’s mean; failures left out', () => {
    const samples = iperfSamples([
      pair('n2', 'n1', 'net1', 80 * GBIT),
      pair('n1', 'n2', 'eth0', 8 * GBIT),
      pair('n1', 'n3', 'eth0', 16 * GBIT),
      pair('n2', 'n1', 'eth0', 24 * GBIT),
      pair('n2', 'n3', 'eth0', undefined, 'refused'),
      pair('n3', 'n1', 'eth0', undefined, 'refused'),
    ]);
    const bandwidth = 'autopilot_iperf_bandwidth_bytes_per_second';
    const perNode = 'autopilot_iperf_node_bandwidth_bytes_per_second';
    expect(samples).toEqual([
      { metric: bandwidth, labels: { interface: 'eth0', stat: 'min' }, value: 1e9 },
      { metric: bandwidth, labels: { interface: 'eth0', stat: 'median' }, value: 2e9 },
      { metric: bandwidth, labels: { interface: 'eth0', stat: 'max' }, value: 3e9 },
      { metric: perNode, labels: { node: 'n1', interface: 'eth0' }, value: 1.5e9 },
      // n2's failed pair does not pull its mean down; n3 transferred nothing, so has no sample.
      { metric: perNode, labels: { node: 'n2', interface: 'eth0' }, value: 3e9 },
      { metric: bandwidth, labels: { interface: 'net1', stat: 'min' }, value: 10e9 },
      { metric: bandwidth, labels: { interface: 'net1', stat: 'median' }, value: 10e9 },
      { metric: bandwidth, labels: { interface: 'net1', stat: 'max' }, value: 10e9 },
      { metric: perNode, labels: { node: 'n2', interface: 'net1' }, value: 10e9 },
    ]);
  });

  test('an interface where everything failed has no samples', () => {
    expect(iperfSamples([pair('n1', 'n2', 'eth0', undefined, 'refused')])).toEqual([]);
  });
});

describe('renderMatrix', () => {
  test("Autopilot's grids in 40-character columns, failed pair as 0.00, then the averages", () => {
    const pairs = [
      pair('node-c', 'node-b', 'net1-0', 24.994 * GBIT),
      pair('node-a', 'node-b', 'net1-0', 25 * GBIT),
      pair('node-a', 'node-c', 'net1-0', 25 * GBIT),
      pair('node-b', 'node-a', 'net1-0', 25 * GBIT),
      pair('node-b', 'node-c', 'net1-0', 25 * GBIT),
      pair('node-c', 'node-a', 'net1-0', 25 * GBIT),
      pair('node-c', 'node-a', 'eth0', 11 * GBIT),
      pair('node-a', 'node-b', 'eth0', 12.5 * GBIT),
      pair('node-a', 'node-c', 'eth0', 9.87 * GBIT),
      pair('node-b', 'node-a', 'eth0', 10 * GBIT),
      pair('node-b', 'node-c', 'eth0', undefined, 'Connection refused'),
      pair('node-c', 'node-b', 'eth0', 10.004 * GBIT),
    ];
    expect(renderMatrix(pairs)).toBe(
      [
        'Network Throughput eth0:',
        '                                        node-a                                  node-b                                  node-c',
        'node-a                                  -                                       12.50                                   9.87',
        'node-b                                  10.00                                   -                                       0.00',
        'node-c                                  11.00                                   10.00                                   -',
        '',
        'Network Throughput net1-0:',
        '                                        node-a                                  node-b                                  node-c',
        'node-a                                  -                                       25.00                                   25.00',
        'node-b                                  25.00                                   -                                       25.00',
        'node-c                                  25.00                                   24.99                                   -',
        '',
        'Overall Network Interface Average Bandwidth:',
        // The failed pair counts as 0 in the average, as in Autopilot: (12.5+9.87+10+0+11+10.004)/6.
        'eth0 Average Bandwidth Gb/s: 8.90',
        'net1-0 Average Bandwidth Gb/s: 25.00',
        '',
      ].join('\n'),
    );
  });
});

// ---- one node's /iperfclients answer ------------------------------------------------------------

function okClient(port: number, receivedBitsPerSecond: number): ClientRun {
  return {
    port,
    outcome: {
      ok: true,
      receivedBitsPerSecond,
      sentBitsPerSecond: receivedBitsPerSecond * 1.01,
      receivedBytes: (receivedBitsPerSecond / 8) * 5,
      sentBytes: (receivedBitsPerSecond / 8) * 5.05,
      retransmits: 0,
      seconds: 5,
    },
  };
}

function failedClient(port: number, error: string): ClientRun {
  return { port, outcome: { ok: false, error } };
}

const clientsBody = (runs: readonly ClientRun[]): string =>
  JSON.stringify(clientsToAutopilotJson(summariseClients(runs)));

describe('readClients', () => {
  test("the clients' received total is the pair's throughput", () => {
    const body = clientsBody([okClient(5200, 3 * GBIT), okClient(5201, 4 * GBIT)]);
    expect(readClients('n1', 'n2', 'eth0', body)).toEqual({
      source: 'n1',
      destination: 'n2',
      interface: 'eth0',
      bitsPerSecond: 7 * GBIT,
      error: undefined,
    });
  });

  test('some clients failed: what the others moved still counts', () => {
    const body = clientsBody([okClient(5200, 3 * GBIT), failedClient(5201, 'refused')]);
    expect(readClients('n1', 'n2', 'eth0', body)).toMatchObject({
      bitsPerSecond: 3 * GBIT,
      error: undefined,
    });
  });

  test("every client failed: no transfer, with the first client's error", () => {
    const body = clientsBody([
      failedClient(5200, 'unable to connect to server - server may have stopped running'),
      failedClient(5201, 'aborted'),
    ]);
    expect(readClients('n1', 'n2', 'eth0', body)).toEqual({
      source: 'n1',
      destination: 'n2',
      interface: 'eth0',
      bitsPerSecond: undefined,
      error: 'unable to connect to server - server may have stopped running',
    });
  });

  test('an answer that is not JSON is an error, not a throughput', () => {
    const result = readClients('n1', 'n2', 'eth0', 'error: bindip is not an address of this pod');
    expect(result.bitsPerSecond).toBeUndefined();
    expect(result.error).toMatch(/JSON/);
  });

  test('JSON without a total is an error', () => {
    expect(readClients('n1', 'n2', 'eth0', '{"receiver":{}}')).toMatchObject({
      bitsPerSecond: undefined,
      error: 'no totalBitsPerSecond in the answer',
    });
  });
});

// ---- parameters ---------------------------------------------------------------------------------

describe('parseParams', () => {
  const check = createIperfCheck({ nodes: undefined, ask: unexpectedAsk }, SETTINGS);
  const paramError = (raw: RawParams): ParamError => {
    try {
      check.parseParams(raw);
    } catch (error) {
      if (error instanceof ParamError) return error;
      throw error;
    }
    throw new Error(`parseParams accepted ${JSON.stringify(raw)}`);
  };

  test('defaults: ring, 8 clients from port 5200, 5 seconds', () => {
    expect(check.parseParams({})).toEqual({
      workload: 'ring',
      pclients: '8',
      startport: '5200',
      duration: '5',
    });
  });

  test('the workload is case-insensitive, as in Autopilot', () => {
    expect(check.parseParams({ workload: 'RING' }).workload).toBe('ring');
    expect(check.parseParams({ workload: 'Pairs' }).workload).toBe('pairs');
  });

  test('an unknown workload is refused naming the supported ones', () => {
    expect(paramError({ workload: 'mesh' }).message).toBe(
      'workload "mesh" is not supported; use ring, pairs, pair',
    );
  });

  test.each(['0', '65', '-1', '8.5', 'eight'])('pclients %s is refused', (value) => {
    expect(paramError({ pclients: value }).message).toBe(
      `pclients ${JSON.stringify(value)} is not a whole number from 1 to 64`,
    );
  });

  test('startport, duration out of range are refused', () => {
    expect(paramError({ startport: '1023' }).message).toBe(
      'startport "1023" is not a whole number from 1024 to 65000',
    );
    expect(paramError({ startport: '65001' }).message).toBe(
      'startport "65001" is not a whole number from 1024 to 65000',
    );
    expect(paramError({ duration: '0' }).message).toBe(
      'duration "0" is not a whole number from 1 to 300',
    );
    expect(paramError({ duration: '301' }).message).toBe(
      'duration "301" is not a whole number from 1 to 300',
    );
  });

  test('the highest start port and client count the query allows still fit below 65536', () => {
    expect(check.parseParams({ startport: '65000', pclients: '64' })).toMatchObject({
      startport: '65000',
      pclients: '64',
    });
  });

  test('a port range past 65535 is refused', () => {
    // The query bounds (startport <= 65000, pclients <= 64) cannot reach it; a configured
    // default start port can.
    const high = createIperfCheck(
      { nodes: undefined, ask: unexpectedAsk },
      { ...SETTINGS, defaultStartport: 65530 },
    );
    expect(() => high.parseParams({})).toThrow(
      new ParamError('startport 65530 with pclients 8 goes past port 65535'),
    );
    expect(high.parseParams({ pclients: '6' }).startport).toBe('65530');
  });

  test.each<[string, RawParams]>([
    ['without src or dst', { workload: 'pair' }],
    ['without dst', { workload: 'pair', src: 'n1' }],
    ['without src', { workload: 'pair', dst: 'n2' }],
    ['with src equal to dst', { workload: 'pair', src: 'n1', dst: 'n1' }],
  ])('workload pair %s is refused', (_, raw) => {
    expect(paramError(raw).message).toBe(
      'workload pair needs src and dst, two different node names',
    );
  });

  test('workload pair keeps src and dst; other workloads drop them', () => {
    expect(check.parseParams({ workload: 'pair', src: 'n1', dst: 'n2' })).toEqual({
      workload: 'pair',
      pclients: '8',
      startport: '5200',
      duration: '5',
      src: 'n1',
      dst: 'n2',
    });
    expect(check.parseParams({ src: 'n1', dst: 'n2' })).not.toHaveProperty('src');
  });

  test('nodes passes through; empty and "all" mean every node', () => {
    expect(check.parseParams({ nodes: 'n1,n3' }).nodes).toBe('n1,n3');
    expect(check.parseParams({ nodes: '' })).not.toHaveProperty('nodes');
    expect(check.parseParams({ nodes: 'all' })).not.toHaveProperty('nodes');
  });
});

// ---- the run, through fake node APIs ------------------------------------------------------------

const NODES: readonly IperfNode[] = [1, 2, 3].map((i) => ({
  node: `n${i}`,
  api: `http://n${i}`,
  interfaces: { eth0: `10.0.0.${i}`, net1: `10.1.0.${i}` },
}));

/** address -> which node and interface has it */
const OWNER = new Map(
  NODES.flatMap((node) =>
    Object.entries(node.interfaces).map(([name, address]) => [
      address,
      { node: node.node, interface: name },
    ]),
  ),
);

interface Call {
  readonly node: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly signal: AbortSignal;
  readonly abortedWhenAsked: boolean;
}

interface Answer {
  readonly status: number;
  readonly body: string;
}

interface FakeNetwork {
  readonly ports: IperfPorts;
  readonly calls: Call[];
  readonly clientCalls: () => Call[];
}

interface FakeNetworkOptions {
  /** bits/s of the one client each pair runs; 10 Gb/s unless given. */
  readonly throughput?: (source: string, destination: string, name: string) => number;
  /** Overrides the answer to a call; undefined keeps the usual one. */
  readonly answer?: (call: Call) => Answer | Promise<Answer> | undefined;
  readonly nodes?: readonly IperfNode[];
}

function fakeNetwork(options: FakeNetworkOptions = {}): FakeNetwork {
  const calls: Call[] = [];
  const throughput = options.throughput ?? (() => 10 * GBIT);
  const usual = (call: Call): Answer => {
    switch (call.path) {
      case '/iperfservers':
        return { status: 200, body: '{"servers":[]}' };
      case '/iperfstopservers':
        return { status: 200, body: '{"stopped":8}' };
      case '/iperfclients': {
        const target = OWNER.get(call.query.get('dstip') ?? '');
        if (target === undefined) return { status: 400, body: 'error: unknown dstip' };
        return {
          status: 200,
          body: clientsBody([okClient(5200, throughput(call.node, target.node, target.interface))]),
        };
      }
      default:
        return { status: 404, body: 'Not Found' };
    }
  };
  const ports: IperfPorts = {
    nodes: () => Promise.resolve(options.nodes ?? NODES),
    ask: async (url, signal) => {
      const parsed = new URL(url);
      const call: Call = {
        node: parsed.hostname,
        path: parsed.pathname,
        query: parsed.searchParams,
        signal,
        abortedWhenAsked: signal.aborted,
      };
      calls.push(call);
      return (await options.answer?.(call)) ?? usual(call);
    },
  };
  return { ports, calls, clientCalls: () => calls.filter((c) => c.path === '/iperfclients') };
}

function unexpectedAsk(url: string): Promise<Answer> {
  return Promise.reject(new Error(`no node should be asked, but ${url} was`));
}

async function runCheck(
  check: Check,
  raw: RawParams = {},
  signal: AbortSignal = new AbortController().signal,
): Promise<{ outcome: CheckOutcome; params: CheckParams }> {
  const params = check.parseParams(raw);
  const outcome = await check.run({ signal, logger: silentLogger, params });
  return { outcome, params };
}

function toRun(outcome: CheckOutcome, params: CheckParams): CheckRun {
  return {
    check: 'iperf',
    trigger: 'api',
    params,
    startedAt: 1_000,
    finishedAt: 2_000,
    ...summariseOutcome(outcome),
    devices: outcome.devices,
    samples: outcome.samples ?? [],
  };
}

const pairKey = (call: Call): string => {
  const target = OWNER.get(call.query.get('dstip') ?? '');
  return `${call.node}->${target?.node}/${target?.interface}`;
};

describe('iperf run', () => {
  test('ring over 3 nodes and 2 interfaces: 12 pairs, all PASS', async () => {
    const network = fakeNetwork();
    const { outcome } = await runCheck(createIperfCheck(network.ports, SETTINGS));
    expect(outcome.verdict).toBeUndefined();
    expect(outcome.devices.map((d) => d.id).sort()).toEqual(
      ['eth0', 'net1']
        .flatMap((name) => allOrderedPairs(['n1', 'n2', 'n3']).map((p) => `${p}/${name}`))
        .sort(),
    );
    expect(outcome.devices.every((d) => d.verdict === 'PASS' && d.reason === '10.00 Gb/s')).toBe(
      true,
    );
    expect(network.clientCalls().map(pairKey).sort()).toEqual(
      outcome.devices.map((d) => d.id).sort(),
    );
    expect(outcome.samples).toContainEqual({
      metric: 'autopilot_iperf_bandwidth_bytes_per_second',
      labels: { interface: 'net1', stat: 'median' },
      value: 10e9 / 8,
    });
  });

  test('servers start everywhere before any client; every node is told to stop at the end', async () => {
    const network = fakeNetwork();
    await runCheck(createIperfCheck(network.ports, SETTINGS));
    const paths = network.calls.map((c) => c.path);
    const servers = network.calls.filter((c) => c.path === '/iperfservers');
    expect(servers.map((c) => c.node)).toEqual(['n1', 'n2', 'n3']);
    expect(paths.slice(0, 3)).toEqual(['/iperfservers', '/iperfservers', '/iperfservers']);
    expect(paths.slice(3, -3).every((p) => p === '/iperfclients')).toBe(true);
    expect(paths.slice(3, -3)).toHaveLength(12);
    const stops = network.calls.slice(-3);
    expect(stops.map((c) => c.path)).toEqual(Array(3).fill('/iperfstopservers'));
    expect(stops.map((c) => c.node).sort()).toEqual(['n1', 'n2', 'n3']);
  });

  test('the servers get the ports, count and a lifetime covering every step', async () => {
    const network = fakeNetwork();
    await runCheck(createIperfCheck(network.ports, SETTINGS), { pclients: '4', startport: '6000' });
    const servers = network.calls.filter((c) => c.path === '/iperfservers');
    // 2 ring steps x 2 interfaces x (5 s + 15 s) + 60 s.
    for (const call of servers) {
      expect(Object.fromEntries(call.query)).toEqual({
        numservers: '4',
        startport: '6000',
        lifetime: '140',
        format: 'json',
      });
    }
  });

  test("each client binds to the source's own address on the destination's interface", async () => {
    const network = fakeNetwork();
    await runCheck(createIperfCheck(network.ports, SETTINGS), { duration: '7', pclients: '3' });
    const clients = network.clientCalls();
    expect(clients).toHaveLength(12);
    for (const call of clients) {
      const target = OWNER.get(call.query.get('dstip')!)!;
      const source = NODES.find((n) => n.node === call.node)!;
      expect(target.node).not.toBe(call.node);
      expect(Object.fromEntries(call.query)).toEqual({
        dstip: call.query.get('dstip'),
        dstport: '5200',
        numclients: '3',
        duration: '7',
        format: 'json',
        bindip: source.interfaces[target.interface],
      });
    }
  });

  test('interfaces run one after the other; a ring step runs its pairs together', async () => {
    const network = fakeNetwork();
    await runCheck(createIperfCheck(network.ports, SETTINGS));
    expect(network.clientCalls().map(pairKey)).toEqual([
      'n1->n2/eth0',
      'n2->n3/eth0',
      'n3->n1/eth0',
      'n1->n3/eth0',
      'n2->n1/eth0',
      'n3->n2/eth0',
      'n1->n2/net1',
      'n2->n3/net1',
      'n3->n1/net1',
      'n1->n3/net1',
      'n2->n1/net1',
      'n3->n2/net1',
    ]);
  });

  test('one slow link is WARN, and only that one', async () => {
    const network = fakeNetwork({
      throughput: (source, destination, name) =>
        source === 'n2' && destination === 'n3' && name === 'net1' ? 1 * GBIT : 10 * GBIT,
    });
    const { outcome } = await runCheck(createIperfCheck(network.ports, SETTINGS));
    const notPassing = outcome.devices.filter((d) => d.verdict !== 'PASS');
    expect(notPassing).toEqual([
      {
        id: 'n2->n3/net1',
        verdict: 'WARN',
        reason: '1.00 Gb/s, under half the median of net1 (10.00 Gb/s)',
        evidence: { source: 'n2', destination: 'n3', interface: 'net1', bytesPerSecond: 1e9 / 8 },
      },
    ]);
    expect(summariseOutcome(outcome)).toEqual({ verdict: 'WARN', reason: '1 WARN, 11 PASS' });
  });

  test('a client call that fails is FAIL for that pair, with what the node said', async () => {
    const network = fakeNetwork({
      answer: (call) =>
        call.path === '/iperfclients' && pairKey(call) === 'n3->n1/eth0'
          ? { status: 500, body: 'error: internal error: boom\nstack' }
          : undefined,
    });
    const { outcome } = await runCheck(createIperfCheck(network.ports, SETTINGS));
    expect(outcome.devices.filter((d) => d.verdict !== 'PASS')).toEqual([
      expect.objectContaining({
        id: 'n3->n1/eth0',
        verdict: 'FAIL',
        reason: 'no transfer: n3 answered 500: error: internal error: boom',
      }),
    ]);
  });

  test('a node refusing to start servers is ERROR naming it; no client runs; all are stopped', async () => {
    const network = fakeNetwork({
      answer: (call) =>
        call.path === '/iperfservers' && call.node === 'n2'
          ? { status: 403, body: 'error: forbidden: caller may not run iperf\nsecond line' }
          : undefined,
    });
    const { outcome } = await runCheck(createIperfCheck(network.ports, SETTINGS));
    expect(outcome).toEqual({
      devices: [],
      verdict: 'ERROR',
      reason:
        'could not start iperf3 servers: n2: n2 answered 403: error: forbidden: caller may not run iperf',
    });
    expect(network.clientCalls()).toEqual([]);
    const stops = network.calls.filter((c) => c.path === '/iperfstopservers');
    expect(stops.map((c) => c.node).sort()).toEqual(['n1', 'n2', 'n3']);
  });

  test('a node that cannot be reached to start servers is ERROR too', async () => {
    const network = fakeNetwork({
      answer: (call) =>
        call.path === '/iperfservers' && call.node === 'n3'
          ? Promise.reject(new Error('connect ECONNREFUSED 10.0.0.3:3333'))
          : undefined,
    });
    const { outcome } = await runCheck(createIperfCheck(network.ports, SETTINGS));
    expect(outcome.verdict).toBe('ERROR');
    expect(outcome.reason).toBe(
      'could not start iperf3 servers: n3: connect ECONNREFUSED 10.0.0.3:3333',
    );
    expect(network.calls.filter((c) => c.path === '/iperfstopservers')).toHaveLength(3);
  });

  /** Aborts the run when the first client is asked; clients then fail as fetch would. */
  function abortingNetwork(controller: AbortController): FakeNetwork {
    return fakeNetwork({
      answer: (call) => {
        if (call.path !== '/iperfclients') return undefined;
        controller.abort(new Error('the run timed out'));
        return Promise.reject(new Error('This operation was aborted'));
      },
    });
  }

  test('an abort during the clients still stops every server, with a live signal', async () => {
    const controller = new AbortController();
    const network = abortingNetwork(controller);
    await runCheck(createIperfCheck(network.ports, SETTINGS), {}, controller.signal);
    expect(controller.signal.aborted).toBe(true);
    const stops = network.calls.filter((c) => c.path === '/iperfstopservers');
    expect(stops.map((c) => c.node).sort()).toEqual(['n1', 'n2', 'n3']);
    for (const stop of stops) {
      expect(stop.abortedWhenAsked).toBe(false);
      expect(stop.signal.aborted).toBe(false);
    }
    expect(network.calls.at(-1)?.path).toBe('/iperfstopservers');
  });

  test('after an abort no further client is asked (the next interface neither)', async () => {
    const controller = new AbortController();
    const network = abortingNetwork(controller);
    await runCheck(createIperfCheck(network.ports, SETTINGS), {}, controller.signal);
    // The first step's three pairs were already under way together when the abort came.
    expect(network.clientCalls().map(pairKey)).toEqual([
      'n1->n2/eth0',
      'n2->n3/eth0',
      'n3->n1/eth0',
    ]);
  });

  test('standalone mode (no node list) is SKIP and asks nobody', async () => {
    const check = createIperfCheck({ nodes: undefined, ask: unexpectedAsk }, SETTINGS);
    const { outcome } = await runCheck(check);
    expect(outcome).toEqual({
      devices: [],
      verdict: 'SKIP',
      reason: 'iperf runs between nodes through their APIs: Kubernetes mode only',
    });
  });

  test('a named node without a reachable pod is ERROR naming it, before anything starts', async () => {
    const network = fakeNetwork();
    const { outcome } = await runCheck(createIperfCheck(network.ports, SETTINGS), {
      nodes: 'n1,n9,n3',
    });
    expect(outcome).toEqual({
      devices: [],
      verdict: 'ERROR',
      reason: 'no reachable Autopilot pod on n9',
    });
    expect(network.calls).toEqual([]);
  });

  test('nodes narrows the ring to the named nodes', async () => {
    const network = fakeNetwork();
    const { outcome } = await runCheck(createIperfCheck(network.ports, SETTINGS), {
      nodes: 'n3,n1',
    });
    expect(outcome.devices.map((d) => d.id).sort()).toEqual([
      'n1->n3/eth0',
      'n1->n3/net1',
      'n3->n1/eth0',
      'n3->n1/net1',
    ]);
    expect(new Set(network.calls.map((c) => c.node))).toEqual(new Set(['n1', 'n3']));
  });

  test('fewer than two nodes is SKIP', async () => {
    const network = fakeNetwork({ nodes: NODES.slice(0, 1) });
    const { outcome } = await runCheck(createIperfCheck(network.ports, SETTINGS));
    expect(outcome).toEqual({
      devices: [],
      verdict: 'SKIP',
      reason: 'iperf needs at least two nodes',
    });
    expect(network.calls).toEqual([]);
  });

  test('workload pair runs one direction between the two nodes only', async () => {
    const network = fakeNetwork();
    const { outcome } = await runCheck(createIperfCheck(network.ports, SETTINGS), {
      workload: 'pair',
      src: 'n3',
      dst: 'n1',
    });
    expect(outcome.devices.map((d) => d.id)).toEqual(['n3->n1/eth0', 'n3->n1/net1']);
    expect(new Set(network.calls.map((c) => c.node))).toEqual(new Set(['n1', 'n3']));
  });

  test('workload pairs runs every ordered pair, two partners at a time', async () => {
    const network = fakeNetwork();
    const { outcome } = await runCheck(createIperfCheck(network.ports, SETTINGS), {
      workload: 'pairs',
    });
    expect(outcome.devices.map((d) => d.id).sort()).toEqual(
      ['eth0', 'net1']
        .flatMap((name) => allOrderedPairs(['n1', 'n2', 'n3']).map((p) => `${p}/${name}`))
        .sort(),
    );
  });
});

describe("Autopilot's iperf line in /status", () => {
  test.each([
    [undefined, undefined, 'Running iperf3 on hosts all or job None\n\n'],
    ['', '', 'Running iperf3 on hosts all or job None\n\n'],
    ['n1,n2', undefined, 'Running iperf3 on hosts n1,n2 or job None\n\n'],
    [undefined, 'ml:app=trainer', 'Running iperf3 on hosts all or job ml:app=trainer\n\n'],
  ])('host %j, job %j', (host, job, line) => {
    expect(iperfRunningLine(host, job)).toBe(line);
  });
});

describe('iperf formatText', () => {
  test('the matrix of a run, then one line per pair that did not pass', async () => {
    const network = fakeNetwork({
      throughput: (source, destination, name) =>
        source === 'n2' && destination === 'n3' && name === 'net1' ? 1 * GBIT : 10 * GBIT,
    });
    const check = createIperfCheck(network.ports, SETTINGS);
    const { outcome, params } = await runCheck(check);
    expect(check.formatText(toRun(outcome, params), 'n1')).toBe(
      [
        'Network Throughput eth0:',
        '                                        n1                                      n2                                      n3',
        'n1                                      -                                       10.00                                   10.00',
        'n2                                      10.00                                   -                                       10.00',
        'n3                                      10.00                                   10.00                                   -',
        '',
        'Network Throughput net1:',
        '                                        n1                                      n2                                      n3',
        'n1                                      -                                       10.00                                   10.00',
        'n2                                      10.00                                   -                                       1.00',
        'n3                                      10.00                                   10.00                                   -',
        '',
        'Overall Network Interface Average Bandwidth:',
        'eth0 Average Bandwidth Gb/s: 10.00',
        'net1 Average Bandwidth Gb/s: 8.50',
        '[NETWORK] - [IPERF] - [WARN] : n2->n3/net1 1.00 Gb/s, under half the median of net1 (10.00 Gb/s)',
        '',
      ].join('\n'),
    );
  });

  test('a failed pair shows 0.00 in the grid and its error below', () => {
    const check = createIperfCheck({ nodes: undefined, ask: unexpectedAsk }, SETTINGS);
    const outcome: CheckOutcome = {
      devices: judgePairs([
        pair('n1', 'n2', 'eth0', 10 * GBIT),
        pair('n2', 'n1', 'eth0', undefined, 'Connection refused'),
      ]),
    };
    expect(check.formatText(toRun(outcome, {}), 'n1')).toBe(
      [
        'Network Throughput eth0:',
        '                                        n1                                      n2',
        'n1                                      -                                       10.00',
        'n2                                      0.00                                    -',
        '',
        'Overall Network Interface Average Bandwidth:',
        'eth0 Average Bandwidth Gb/s: 5.00',
        '[NETWORK] - [IPERF] - [FAIL] : n2->n1/eth0 no transfer: Connection refused',
        '',
      ].join('\n'),
    );
  });

  test('a run without pairs is one line with its verdict and reason', async () => {
    const check = createIperfCheck({ nodes: undefined, ask: unexpectedAsk }, SETTINGS);
    const { outcome, params } = await runCheck(check);
    expect(check.formatText(toRun(outcome, params), 'n1')).toBe(
      '[NETWORK] - [IPERF] SKIP: iperf runs between nodes through their APIs: Kubernetes mode only. ABORT\n',
    );
  });
});

// ---- the node's health --------------------------------------------------------------------------

describe('iperf and the node health', () => {
  const iperf = createIperfCheck({ nodes: undefined, ask: unexpectedAsk }, SETTINGS);
  const checks = new Map<string, Check>([[iperf.name, iperf]]);
  const gpuPass: CheckRun = {
    check: 'remapped',
    trigger: 'periodic',
    params: {},
    startedAt: 1_000,
    finishedAt: 1_500,
    verdict: 'PASS',
    reason: '1 PASS',
    devices: [{ id: '0', verdict: 'PASS', reason: 'no remapped rows', evidence: {} }],
    samples: [],
  };
  const iperfFail = toRun(
    {
      devices: judgePairs([
        pair('n1', 'n2', 'eth0', undefined, 'Connection refused'),
        pair('n2', 'n1', 'eth0', 10 * GBIT),
      ]),
    },
    {},
  );

  test('iperf findings are about links, not this node', () => {
    expect(iperf.affectsNodeHealth).toBe(false);
    expect(iperfFail.verdict).toBe('FAIL');
  });

  test('a FAILing iperf run leaves the node health as it was', () => {
    const store = createResultStore({
      historySize: 5,
      // As the exporter wires it.
      countsForHealth: (name) => checks.get(name)?.affectsNodeHealth !== false,
    });
    store.record(gpuPass);
    const before = store.health();
    expect(before.state).toBe('PASS');
    store.record({ ...iperfFail, startedAt: 3_000, finishedAt: 4_000 });
    expect(store.health()).toEqual(before);
    expect(store.latest('iperf')?.verdict).toBe('FAIL');
  });

  test('without countsForHealth the same run would have made the node WARN', () => {
    const store = createResultStore({ historySize: 5 });
    store.record(gpuPass);
    store.record({ ...iperfFail, startedAt: 3_000, finishedAt: 4_000 });
    expect(store.health().state).toBe('WARN');
  });
});

describe('failedServers', () => {
  test('lists the servers an /iperfservers answer says could not start', () => {
    const body = JSON.stringify({
      node: 'n1',
      servers: [
        { interface: 'eth0', address: '10.0.0.1', port: 5200, ok: true, error: null },
        {
          interface: 'eth0',
          address: '10.0.0.1',
          port: 5201,
          ok: false,
          error: 'Address already in use',
        },
      ],
    });
    expect(failedServers(body)).toEqual(['10.0.0.1:5201 Address already in use']);
    expect(failedServers('not json')).toEqual([]);
  });
});
