import { describe, test, expect } from '@jest/globals';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createPingCheck, judgePeer, parsePing, pingSamples } from '../../exporter/checks/ping.js';
import type { PingSummary } from '../../exporter/checks/ping.js';
import { ParamError } from '../../exporter/checks/check.js';
import type {
  CheckContext,
  CheckOutcome,
  CheckParams,
  CheckRun,
  DeviceResult,
} from '../../exporter/checks/check.js';
import type { PingSettings } from '../../exporter/checks/ping.js';
import type { CommandResult, CommandSpec, RunCommand } from '../../exporter/exec/run-command.js';
import { silentLogger } from '../../exporter/log.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'ping', 'iputils-20221126');

const FIXTURE_NAMES = [
  'reply',
  'no-reply',
  'no-route',
  'unknown-host',
  'no-cap-net-raw',
  'synthetic-partial-loss',
] as const;
type FixtureName = (typeof FIXTURE_NAMES)[number];

/** Exit codes from capture.md. */
const EXIT_CODES: Record<FixtureName, number> = {
  reply: 0,
  'no-reply': 1,
  'no-route': 2,
  'unknown-host': 2,
  'no-cap-net-raw': 2,
  'synthetic-partial-loss': 0,
};

function fixtureResult(name: FixtureName): CommandResult {
  const stderrFile = join(FIXTURES, `${name}.stderr`);
  return {
    end: 'exited',
    exitCode: EXIT_CODES[name],
    signal: null,
    stdout: readFileSync(join(FIXTURES, `${name}.txt`), 'utf8'),
    stderr: existsSync(stderrFile) ? readFileSync(stderrFile, 'utf8') : '',
    durationMs: 10,
  };
}

const PARSED: Record<FixtureName, PingSummary | undefined> = {
  reply: {
    address: '127.0.0.1',
    transmitted: 3,
    received: 3,
    rttMs: { min: 0.039, avg: 0.044, max: 0.048 },
  },
  'no-reply': { address: '198.18.0.2', transmitted: 12, received: 0, rttMs: undefined },
  'no-route': undefined,
  'unknown-host': undefined,
  'no-cap-net-raw': undefined,
  'synthetic-partial-loss': {
    address: '198.18.0.2',
    transmitted: 3,
    received: 2,
    rttMs: { min: 0.412, avg: 0.471, max: 0.53 },
  },
};

const JUDGED: Record<FixtureName, DeviceResult> = {
  reply: {
    id: 'peer',
    verdict: 'PASS',
    reason: '3/3 replies, rtt avg 0.044 ms',
    evidence: {
      address: '127.0.0.1',
      transmitted: 3,
      received: 3,
      lossRatio: 0,
      rttMinSeconds: 0.000039,
      rttAvgSeconds: 0.000044,
      rttMaxSeconds: 0.000048,
    },
    compatValue: 0,
  },
  'no-reply': {
    id: 'peer',
    verdict: 'FAIL',
    reason: 'unreachable: no reply to 12 echo requests',
    evidence: {
      address: '198.18.0.2',
      transmitted: 12,
      received: 0,
      lossRatio: 1,
      rttMinSeconds: null,
      rttAvgSeconds: null,
      rttMaxSeconds: null,
    },
    compatValue: 1,
  },
  'no-route': {
    id: 'peer',
    verdict: 'FAIL',
    reason: 'unreachable: ping: connect: Network is unreachable',
    evidence: {},
    compatValue: 1,
  },
  'unknown-host': {
    id: 'peer',
    verdict: 'ERROR',
    reason: 'ping: no-such-host.invalid: Name or service not known',
    evidence: {},
  },
  'no-cap-net-raw': {
    id: 'peer',
    verdict: 'ERROR',
    reason:
      'ping may not open a socket (no CAP_NET_RAW): add the CAP_NET_RAW capability to the ' +
      'container, or include its group in the sysctl net.ipv4.ping_group_range ' +
      '(ping: socket: Operation not permitted)',
    evidence: {},
  },
  'synthetic-partial-loss': {
    id: 'peer',
    verdict: 'WARN',
    reason: '1 of 3 echo requests lost, rtt avg 0.471 ms',
    evidence: {
      address: '198.18.0.2',
      transmitted: 3,
      received: 2,
      lossRatio: 0.333333,
      rttMinSeconds: 0.000412,
      rttAvgSeconds: 0.000471,
      rttMaxSeconds: 0.00053,
    },
    compatValue: 0,
  },
};

const judged = (name: FixtureName, peer = 'peer'): DeviceResult =>
  judgePeer(peer, fixtureResult(name));

describe('fixtures', () => {
  test('every captured stdout file has an expectation here', () => {
    const files = readdirSync(FIXTURES)
      .filter((f) => f.endsWith('.txt'))
      .map((f) => f.slice(0, -'.txt'.length))
      .sort();
    expect(files).toStrictEqual([...FIXTURE_NAMES].sort());
  });
});

describe('parsePing', () => {
  test.each(FIXTURE_NAMES.map((name) => [name]))('%s.txt', (name) => {
    const stdout = readFileSync(join(FIXTURES, `${name}.txt`), 'utf8');
    expect(parsePing(stdout)).toStrictEqual(PARSED[name]);
  });

  test('reads the BusyBox round-trip line', () => {
    const busybox = [
      'PING 10.1.2.3 (10.1.2.3): 56 data bytes',
      '64 bytes from 10.1.2.3: seq=0 ttl=64 time=0.100 ms',
      '',
      '--- 10.1.2.3 ping statistics ---',
      '1 packets transmitted, 1 packets received, 0% packet loss',
      'round-trip min/avg/max = 0.100/0.100/0.100 ms',
      '',
    ].join('\n');
    expect(parsePing(busybox)).toStrictEqual({
      address: '10.1.2.3',
      transmitted: 1,
      received: 1,
      rttMs: { min: 0.1, avg: 0.1, max: 0.1 },
    });
  });
});

describe('judgePeer', () => {
  test.each(FIXTURE_NAMES.map((name) => [name]))('%s', (name) => {
    expect(judged(name)).toStrictEqual(JUDGED[name]);
  });

  test('an unknown host carries no compatibility value', () => {
    expect('compatValue' in judged('unknown-host')).toBe(false);
  });

  test('"socket: Permission denied" names the capability and the sysctl too', () => {
    const result: CommandResult = {
      ...fixtureResult('no-cap-net-raw'),
      stderr: 'ping: socket: Permission denied\n',
    };
    const judgedPeer = judgePeer('p', result);
    expect(judgedPeer.verdict).toBe('ERROR');
    expect(judgedPeer.reason).toContain('CAP_NET_RAW');
    expect(judgedPeer.reason).toContain('net.ipv4.ping_group_range');
    expect(judgedPeer.reason).toContain('(ping: socket: Permission denied)');
    expect('compatValue' in judgedPeer).toBe(false);
  });

  test('the peer name becomes the device id', () => {
    expect(judged('reply', 'node-7').id).toBe('node-7');
  });

  test('"No route to host" on stderr is a FAIL too', () => {
    const result: CommandResult = {
      ...fixtureResult('no-route'),
      stderr: 'ping: connect: No route to host\n',
    };
    expect(judgePeer('p', result)).toStrictEqual({
      id: 'p',
      verdict: 'FAIL',
      reason: 'unreachable: ping: connect: No route to host',
      evidence: {},
      compatValue: 1,
    });
  });

  const stopped = (overrides: Partial<CommandResult>): CommandResult => ({
    end: 'exited',
    exitCode: null,
    signal: null,
    stdout: '',
    stderr: '',
    durationMs: 1,
    ...overrides,
  });

  test.each([
    [stopped({ end: 'timeout', signal: 'SIGKILL' }), 'ping did not finish in time'],
    [stopped({ end: 'aborted', signal: 'SIGKILL' }), 'ping was stopped'],
    [stopped({ end: 'output-limit', signal: 'SIGKILL' }), 'ping printed more output than expected'],
    [stopped({ end: 'signal', signal: 'SIGSEGV' }), 'ping was killed by SIGSEGV'],
    [stopped({ end: 'spawn-failed', spawnError: 'EACCES' }), 'ping could not start (EACCES)'],
    [stopped({ end: 'exited', exitCode: 2 }), 'ping exited with 2 and printed no statistics'],
  ])('a run without statistics is an ERROR: %#', (result, reason) => {
    expect(judgePeer('p', result)).toStrictEqual({
      id: 'p',
      verdict: 'ERROR',
      reason,
      evidence: {},
    });
  });

  test('a timeout with half the header printed is an ERROR, not a verdict on the peer', () => {
    const result = stopped({
      end: 'timeout',
      signal: 'SIGKILL',
      stdout: 'PING 10.0.0.1 (10.0.0.1) 56(84) bytes of data.\n',
    });
    expect(judgePeer('p', result).verdict).toBe('ERROR');
    expect(judgePeer('p', result).reason).toBe('ping did not finish in time');
  });
});

describe('pingSamples', () => {
  test('loss ratio over all packets, median of the averages, max of the maxima', () => {
    const devices = [
      judged('reply', 'a'),
      judged('synthetic-partial-loss', 'b'),
      judged('no-reply', 'c'),
      judged('unknown-host', 'd'),
      judged('no-route', 'e'),
    ];
    expect(pingSamples(devices)).toStrictEqual([
      // 18 sent, 5 received
      { metric: 'autopilot_peer_loss_ratio', labels: { check: 'ping' }, value: 0.722222 },
      {
        metric: 'autopilot_peer_rtt_median_seconds',
        labels: { check: 'ping' },
        value: (0.000044 + 0.000471) / 2,
      },
      { metric: 'autopilot_peer_rtt_max_seconds', labels: { check: 'ping' }, value: 0.00053 },
    ]);
  });

  test('the median of an odd number of peers is the middle one, whatever the order', () => {
    const peer = (id: string, avg: number, max: number): DeviceResult => ({
      id,
      verdict: 'PASS',
      reason: '',
      evidence: { transmitted: 4, received: 4, rttAvgSeconds: avg, rttMaxSeconds: max },
      compatValue: 0,
    });
    expect(
      pingSamples([peer('a', 0.003, 0.004), peer('b', 0.001, 0.009), peer('c', 0.002, 0.002)]),
    ).toStrictEqual([
      { metric: 'autopilot_peer_loss_ratio', labels: { check: 'ping' }, value: 0 },
      { metric: 'autopilot_peer_rtt_median_seconds', labels: { check: 'ping' }, value: 0.002 },
      { metric: 'autopilot_peer_rtt_max_seconds', labels: { check: 'ping' }, value: 0.009 },
    ]);
  });

  test('no reply at all gives the loss ratio only', () => {
    expect(pingSamples([judged('no-reply')])).toStrictEqual([
      { metric: 'autopilot_peer_loss_ratio', labels: { check: 'ping' }, value: 1 },
    ]);
  });

  test('nothing measured gives no samples', () => {
    expect(pingSamples([])).toStrictEqual([]);
    expect(pingSamples([judged('unknown-host'), judged('no-route')])).toStrictEqual([]);
  });
});

// createPingCheck with a fake RunCommand ------------------------------------------------------

const SETTINGS: PingSettings = { command: 'ping', count: 3, replyTimeoutMs: 1000, concurrency: 4 };

function context(params: CheckParams = {}, signal = new AbortController().signal): CheckContext {
  return { signal, logger: silentLogger, params };
}

interface Fake {
  readonly run: RunCommand;
  readonly calls: { spec: CommandSpec; signal: AbortSignal | undefined }[];
  maxInFlight: number;
}

/** Answers each peer (the last argument) with a canned fixture result. */
function fakeRun(
  answers: Readonly<Record<string, FixtureName | CommandResult>>,
  delayMs = 0,
): Fake {
  let inFlight = 0;
  const fake: Fake = {
    calls: [],
    maxInFlight: 0,
    run: async (spec, signal) => {
      fake.calls.push({ spec, signal });
      inFlight += 1;
      fake.maxInFlight = Math.max(fake.maxInFlight, inFlight);
      try {
        if (delayMs > 0) await sleep(delayMs);
        const peer = spec.args[spec.args.length - 1] ?? '';
        const answer = answers[peer];
        if (answer === undefined) throw new Error(`the fake has no answer for ${peer}`);
        return typeof answer === 'string' ? fixtureResult(answer) : answer;
      } finally {
        inFlight -= 1;
      }
    },
  };
  return fake;
}

function runRecord(outcome: CheckOutcome, verdict: CheckRun['verdict'], reason = ''): CheckRun {
  return {
    check: 'ping',
    trigger: 'api',
    params: {},
    startedAt: 1_000,
    finishedAt: 2_000,
    verdict,
    reason,
    devices: outcome.devices,
    samples: outcome.samples ?? [],
  };
}

describe('createPingCheck: run', () => {
  test('runs ping with the captured argv, never through a shell', async () => {
    const fake = fakeRun({ 'node-a': 'reply' });
    const check = createPingCheck({ settings: SETTINGS, peers: () => ['node-a'], run: fake.run });
    const ctx = context();
    await check.run(ctx);
    expect(fake.calls).toHaveLength(1);
    const { spec, signal } = fake.calls[0]!;
    expect(spec.file).toBe('ping');
    // capture.md: ping -n -c 3 -i 0.2 -W 1 -w 3 -- <target>
    expect(spec.args).toStrictEqual([
      '-n',
      '-c',
      '3',
      '-i',
      '0.2',
      '-W',
      '1',
      '-w',
      '3',
      '--',
      'node-a',
    ]);
    expect(spec.args.indexOf('--')).toBe(spec.args.length - 2);
    expect(spec.timeoutMs).toBe(8000);
    expect(spec.maxOutputBytes).toBe(64 * 1024);
    expect(['sh', 'bash', '/bin/sh', '/bin/bash']).not.toContain(spec.file);
    expect(spec.args).not.toContain('-c ping');
    expect(signal).toBe(ctx.signal);
  });

  test('the reply timeout goes to -W in seconds and widens the -w deadline', async () => {
    const fake = fakeRun({ p: 'reply' });
    const settings: PingSettings = {
      command: '/usr/bin/ping',
      count: 2,
      replyTimeoutMs: 500,
      concurrency: 1,
    };
    const check = createPingCheck({ settings, peers: () => ['p'], run: fake.run });
    await check.run(context());
    const { spec } = fake.calls[0]!;
    expect(spec.file).toBe('/usr/bin/ping');
    expect(spec.args).toStrictEqual([
      '-n',
      '-c',
      '2',
      '-i',
      '0.2',
      '-W',
      '0.5',
      '-w',
      '2',
      '--',
      'p',
    ]);
    expect(spec.timeoutMs).toBe(7000);
  });

  test('judges every peer, in order, and adds the samples', async () => {
    const fake = fakeRun({ a: 'reply', b: 'no-reply', c: 'unknown-host' });
    const check = createPingCheck({
      settings: SETTINGS,
      peers: () => ['a', 'b', 'c'],
      run: fake.run,
    });
    const outcome = await check.run(context());
    expect(outcome.devices).toStrictEqual([
      { ...JUDGED.reply, id: 'a' },
      { ...JUDGED['no-reply'], id: 'b' },
      { ...JUDGED['unknown-host'], id: 'c' },
    ]);
    expect(outcome.verdict).toBeUndefined();
    // The aggregates, per node and per interface, the loss of the one peer that lost something
    // (b, unreachable), and the coverage (no periodic round here: only the oldest probe's age).
    const samples = outcome.samples ?? [];
    const on = { check: 'ping', interface: 'default' };
    expect(samples.slice(0, 3)).toStrictEqual(pingSamples(outcome.devices));
    expect(samples.filter((s) => s.metric.startsWith('autopilot_ping_peers'))).toStrictEqual([
      { metric: 'autopilot_ping_peers_probed', labels: on, value: 3 },
      { metric: 'autopilot_ping_peers_unreachable', labels: on, value: 1 },
    ]);
    // c (unknown host) has no loss to rank: a at 0, b at 1.
    expect(
      samples
        .filter((s) => s.metric === 'autopilot_ping_loss_ratio')
        .map((s) => [s.labels.stat, s.value]),
    ).toStrictEqual([
      ['p50', 0],
      ['p90', 1],
      ['p99', 1],
      ['max', 1],
    ]);
    expect(samples.slice(-2)).toStrictEqual([
      {
        metric: 'autopilot_peer_interface_loss_ratio',
        labels: { check: 'ping', peer: 'b', interface: 'default' },
        value: 1,
      },
      { metric: 'autopilot_ping_oldest_probe_age_seconds', labels: { check: 'ping' }, value: 0 },
    ]);
    expect(samples).toHaveLength(3 + 2 + 4 + 4 + 2);
  });

  test('pings only the hosts named in params', async () => {
    const fake = fakeRun({ a: 'reply', b: 'reply', c: 'reply' });
    const check = createPingCheck({
      settings: SETTINGS,
      peers: () => ['a', 'b', 'c'],
      run: fake.run,
    });
    const outcome = await check.run(context({ host: 'c,a' }));
    expect(fake.calls.map((c) => c.spec.args.at(-1))).toStrictEqual(['c', 'a']);
    expect(outcome.devices.map((d) => d.id)).toStrictEqual(['c', 'a']);
  });

  test('SKIP with no peers, without running anything', async () => {
    const fake = fakeRun({});
    const check = createPingCheck({ settings: SETTINGS, peers: () => [], run: fake.run });
    expect(await check.run(context())).toStrictEqual({
      devices: [],
      verdict: 'SKIP',
      reason: 'no peers to ping (set AUTOPILOT_PEERS)',
    });
    expect(fake.calls).toHaveLength(0);
  });

  test('SKIP when the ping command is missing', async () => {
    const missing: CommandResult = {
      end: 'spawn-failed',
      exitCode: null,
      signal: null,
      stdout: '',
      stderr: '',
      durationMs: 1,
      spawnError: 'ENOENT',
    };
    const fake = fakeRun({ a: missing, b: missing });
    const check = createPingCheck({ settings: SETTINGS, peers: () => ['a', 'b'], run: fake.run });
    expect(await check.run(context())).toStrictEqual({
      devices: [],
      verdict: 'SKIP',
      reason: 'ping is not installed',
    });
  });

  test('at most `concurrency` pings run at once', async () => {
    const peers = ['p1', 'p2', 'p3', 'p4', 'p5'];
    const fake = fakeRun(Object.fromEntries(peers.map((p) => [p, 'reply' as const])), 30);
    const check = createPingCheck({
      settings: { ...SETTINGS, concurrency: 2 },
      peers: () => peers,
      run: fake.run,
    });
    const outcome = await check.run(context());
    expect(fake.calls).toHaveLength(5);
    expect(fake.maxInFlight).toBe(2);
    expect(outcome.devices.map((d) => d.id)).toStrictEqual(peers);
  });

  test('concurrency above the peer count runs them all at once', async () => {
    const peers = ['p1', 'p2', 'p3'];
    const fake = fakeRun(Object.fromEntries(peers.map((p) => [p, 'reply' as const])), 30);
    const check = createPingCheck({
      settings: { ...SETTINGS, concurrency: 8 },
      peers: () => peers,
      run: fake.run,
    });
    await check.run(context());
    expect(fake.maxInFlight).toBe(3);
  });
});

describe('createPingCheck: parseParams', () => {
  const check = createPingCheck({
    settings: SETTINGS,
    peers: () => ['node-a', 'node-b', '10.0.0.7'],
    run: fakeRun({}).run,
  });

  test.each([
    [{}, {}],
    [{ host: '' }, {}],
    [{ host: 'all' }, {}],
    [{ host: 'node-b' }, { host: 'node-b' }],
    [{ host: 'node-b, node-a,node-b' }, { host: 'node-b,node-a' }],
    [{ host: '10.0.0.7' }, { host: '10.0.0.7' }],
    [{ pingnodes: 'node-a' }, { host: 'node-a' }],
    [{ job: 'None', nodelabel: '' }, {}],
    // Only separators name no peer: every peer, as an empty value; never a ping of ''.
    [{ host: ',' }, {}],
    [{ pingnodes: ' , ,' }, {}],
  ])('%j → %j', (raw, expected) => {
    expect(check.parseParams(raw)).toStrictEqual(expected);
  });

  test.each([
    [
      { host: 'node-z' },
      /host "node-z" is not a peer of this node; peers: node-a, node-b, 10.0.0.7/,
    ],
    [{ host: 'node-a,node-z' }, /host "node-z"/],
    [{ pingnodes: 'node-z' }, /^pingnodes "node-z" is not a peer/],
    [{ host: 'node-a;id' }, /is not a peer/],
    [{ host: '-f' }, /is not a peer/],
    [{ job: 'default:training' }, /^job selects peers through Kubernetes/],
    [{ nodelabel: 'gpu=true' }, /^nodelabel selects peers through Kubernetes/],
  ])('%j is a ParamError', (raw, message) => {
    expect(() => check.parseParams(raw)).toThrow(ParamError);
    expect(() => check.parseParams(raw)).toThrow(message);
  });

  test('with no peers configured the error says so', () => {
    const lonely = createPingCheck({ settings: SETTINGS, peers: () => [], run: fakeRun({}).run });
    expect(() => lonely.parseParams({ host: 'node-a' })).toThrow(
      'host "node-a" is not a peer of this node; peers: none (AUTOPILOT_PEERS is empty)',
    );
  });
});

describe('createPingCheck: formatText', () => {
  test('one Autopilot line per peer, and FAIL when one is unreachable', async () => {
    const fake = fakeRun({ a: 'reply', b: 'no-reply', c: 'no-route' });
    const check = createPingCheck({
      settings: SETTINGS,
      peers: () => ['a', 'b', 'c'],
      run: fake.run,
    });
    const outcome = await check.run(context());
    expect(check.formatText(runRecord(outcome, 'FAIL'), 'node-x')).toBe(
      [
        '[PING] Node node-x pinged 3 peer(s)',
        'Node a 127.0.0.1 default 0',
        'Node b 198.18.0.2 default 1',
        'Node c c default 1',
        '[PING] b: FAIL unreachable: no reply to 12 echo requests',
        '[PING] c: FAIL unreachable: ping: connect: Network is unreachable',
        '[PING] At least one node unreachable. FAIL',
        '',
      ].join('\n'),
    );
  });

  test('success when every peer replies, with lost packets only noted', async () => {
    const fake = fakeRun({ a: 'reply', b: 'synthetic-partial-loss' });
    const check = createPingCheck({ settings: SETTINGS, peers: () => ['a', 'b'], run: fake.run });
    const outcome = await check.run(context());
    expect(check.formatText(runRecord(outcome, 'WARN'), 'node-x')).toBe(
      [
        '[PING] Node node-x pinged 2 peer(s)',
        'Node a 127.0.0.1 default 0',
        'Node b 198.18.0.2 default 0',
        '[PING] b: WARN 1 of 3 echo requests lost, rtt avg 0.471 ms',
        '[PING] all nodes reachable. success',
        '',
      ].join('\n'),
    );
  });

  test('a peer that could not be checked is not reported as success', async () => {
    const fake = fakeRun({ a: 'reply', b: 'unknown-host' });
    const check = createPingCheck({ settings: SETTINGS, peers: () => ['a', 'b'], run: fake.run });
    const outcome = await check.run(context());
    expect(check.formatText(runRecord(outcome, 'ERROR'), 'node-x')).toBe(
      [
        '[PING] Node node-x pinged 2 peer(s)',
        'Node a 127.0.0.1 default 0',
        '[PING] b: ERROR ping: no-such-host.invalid: Name or service not known',
        '[PING] At least one node could not be checked. ERROR',
        '',
      ].join('\n'),
    );
  });

  test('a run with no devices is one line', () => {
    const check = createPingCheck({ settings: SETTINGS, peers: () => [], run: fakeRun({}).run });
    const outcome: CheckOutcome = { devices: [] };
    expect(
      check.formatText(runRecord(outcome, 'SKIP', 'no peers to ping (set AUTOPILOT_PEERS)'), 'n'),
    ).toBe('[PING] SKIP: no peers to ping (set AUTOPILOT_PEERS). ABORT\n');
  });

  test('describes itself as the ping check for peers', () => {
    const check = createPingCheck({ settings: SETTINGS, peers: () => [], run: fakeRun({}).run });
    expect(check.name).toBe('ping');
    expect(check.banner).toBe('Ping test');
    expect(check.compatHealth).toBe('ping');
    expect(check.deviceKind).toBe('peer');
    expect(check.usesGpu).toBe(false);
    expect(check.exclusive).toBe(false);
    expect(check.timeoutMs).toBe(60_000);
  });

  test('the deadline grows with the waves of pings the peers need', () => {
    const peers = Array.from({ length: 1000 }, (_, i) => `p${i}`);
    // settings: count 3, reply timeout 1 s → each ping ends by its 3 s deadline (+5 s kill margin).
    const check = createPingCheck({
      settings: { ...SETTINGS, concurrency: 10 },
      peers: () => peers,
      run: fakeRun({}).run,
    });
    expect(check.timeoutMs).toBe(100 * 8_000 + 1000 * 10);
    const fixed = createPingCheck({
      settings: SETTINGS,
      peers: () => peers,
      run: fakeRun({}).run,
      timeoutMs: 5,
    });
    expect(fixed.timeoutMs).toBe(5);
  });
});
