/**
 * ping at cluster scale: every interface of every peer, a rotating sample with carried-over
 * results, bounded series, job/nodelabel selection, and the interface parser behind it.
 */

import { describe, expect, test } from '@jest/globals';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CheckContext, CheckParams, DeviceResult } from '../../exporter/checks/check.js';
import { ParamError } from '../../exporter/checks/check.js';
import {
  capCompatSeries,
  combineInterfaces,
  coverageSamples,
  createPingCheck,
  degradedInterfaceSamples,
  interfaceSamples,
  longestUnpinged,
  peersPerRound,
  type PingTarget,
} from '../../exporter/checks/ping.js';
import type { PingSettings } from '../../exporter/checks/ping.js';
import type { CommandResult, RunCommand } from '../../exporter/exec/run-command.js';
import { silentLogger } from '../../exporter/log.js';
import { parseNetworkStatus, podInterfaces } from '../../exporter/network/interfaces.js';
import { apiRun } from '../fakes/api-run.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'ping', 'iputils-20221126');

function fixture(name: 'reply' | 'no-reply' | 'synthetic-partial-loss'): CommandResult {
  const stderr = join(FIXTURES, `${name}.stderr`);
  return {
    end: 'exited',
    exitCode: name === 'no-reply' ? 1 : 0,
    signal: null,
    stdout: readFileSync(join(FIXTURES, `${name}.txt`), 'utf8'),
    stderr: existsSync(stderr) ? readFileSync(stderr, 'utf8') : '',
    durationMs: 10,
  };
}

/** Answers by address: addresses listed in `down` get no reply, the others reply. */
function network(down: readonly string[] = []): { run: RunCommand; pinged: string[] } {
  const pinged: string[] = [];
  return {
    pinged,
    run: (spec) => {
      const address = spec.args[spec.args.length - 1]!;
      pinged.push(address);
      return Promise.resolve(fixture(down.includes(address) ? 'no-reply' : 'reply'));
    },
  };
}

const SETTINGS: PingSettings = { command: 'ping', count: 3, replyTimeoutMs: 1000, concurrency: 8 };
const context = (params: CheckParams = {}): CheckContext => ({
  signal: new AbortController().signal,
  logger: silentLogger,
  params,
});

/** node-b and node-c with two interfaces each; node-d with the pod IP only. */
const TARGETS: readonly PingTarget[] = [
  { peer: 'node-b', interface: 'eth0', address: '198.18.0.2' },
  { peer: 'node-b', interface: 'net1', address: '198.19.0.2' },
  { peer: 'node-c', interface: 'eth0', address: '198.18.0.3' },
  { peer: 'node-c', interface: 'net1', address: '198.19.0.3' },
  { peer: 'node-d', interface: 'default', address: '198.18.0.4' },
];
const targetsOf = (names: readonly string[]) =>
  Promise.resolve(TARGETS.filter((t) => names.includes(t.peer)));

describe('every interface of every peer', () => {
  test('one device per peer, failing when any interface fails; Autopilot lines per interface', async () => {
    const net = network(['198.19.0.3']);
    const check = createPingCheck({
      settings: SETTINGS,
      peers: () => ['node-b', 'node-c', 'node-d'],
      clusterMode: true,
      targetsOf,
      run: net.run,
    });
    const outcome = await check.run(context());
    expect(net.pinged.sort()).toEqual(TARGETS.map((t) => t.address).sort());
    expect(outcome.devices.map((d) => [d.id, d.verdict, d.compatValue])).toEqual([
      ['node-b', 'PASS', 0],
      ['node-c', 'FAIL', 1],
      ['node-d', 'PASS', 0],
    ]);
    expect(outcome.devices[1]!.reason).toBe(
      'net1 198.19.0.3: unreachable: no reply to 12 echo requests',
    );
    const text = check.formatText(apiRun('ping', outcome, []), 'node-a');
    expect(text.split('\n').filter((line) => line.startsWith('Node '))).toEqual([
      'Node node-b 198.18.0.2 eth0 0',
      'Node node-b 198.19.0.2 net1 0',
      'Node node-c 198.18.0.3 eth0 0',
      'Node node-c 198.19.0.3 net1 1',
      // One interface: the address ping printed (the canned capture pinged 127.0.0.1).
      'Node node-d 127.0.0.1 default 0',
    ]);
    // Series for the one interface that lost packets, not for every interface of every peer.
    expect(
      (outcome.samples ?? []).filter((s) => s.metric === 'autopilot_peer_interface_loss_ratio'),
    ).toEqual([
      {
        metric: 'autopilot_peer_interface_loss_ratio',
        labels: { check: 'ping', peer: 'node-c', interface: 'net1' },
        value: 1,
      },
    ]);
  });

  test('a peer whose pod has no address yet is an ERROR, not a silent gap', async () => {
    const check = createPingCheck({
      settings: SETTINGS,
      peers: () => ['node-b', 'node-x'],
      clusterMode: true,
      targetsOf,
      run: network().run,
    });
    const outcome = await check.run(context());
    expect(outcome.devices.map((d) => [d.id, d.verdict, d.reason])).toEqual([
      ['node-b', 'PASS', '2 interfaces, all replied'],
      ['node-x', 'ERROR', 'its Autopilot pod has no address yet'],
    ]);
  });

  test('combineInterfaces keeps a single interface as it is and names it', () => {
    const device: DeviceResult = {
      id: 'node-b',
      verdict: 'PASS',
      reason: '3/3 replies',
      evidence: { address: '198.18.0.2', lossRatio: 0 },
      compatValue: 0,
    };
    expect(
      combineInterfaces('node-b', [
        { target: { peer: 'node-b', interface: 'eth0', address: '198.18.0.2' }, device },
      ]),
    ).toEqual({ ...device, evidence: { address: '198.18.0.2', lossRatio: 0, interface: 'eth0' } });
  });
});

describe('sample: the peers pinged longest ago', () => {
  const peers = Array.from({ length: 10 }, (_, i) => `p${i}`);

  test('with a steady peer list every peer is pinged within ceil(peers / size) runs', () => {
    const last = new Map<string, number>();
    const since = (peer: string) => last.get(peer) ?? 0;
    const runs: string[][] = [];
    for (let run = 1; run <= 8; run++) {
      const picked = longestUnpinged(peers, 3, since, 'node-a');
      for (const peer of picked) last.set(peer, run);
      runs.push(picked);
    }
    // Any 4 consecutive runs (ceil(10 / 3)) reach all 10 peers.
    for (let first = 0; first + 4 <= runs.length; first++) {
      expect(new Set(runs.slice(first, first + 4).flat()).size).toBe(10);
    }
  });

  test('peers joining never push an old one back: the longest-unpinged goes first', () => {
    const since = (peer: string) => ({ old: 5, joined: 9, fresh: 20 })[peer] ?? 0;
    expect(longestUnpinged(['fresh', 'joined', 'old'], 2, since, 'x')).toEqual(['old', 'joined']);
    // Two runs in the same millisecond: the peers never pinged go first, whatever the hash order.
    const sameMs = longestUnpinged(
      ['a', 'b', 'c', 'd'],
      2,
      () => 5,
      'x',
      (p) => 'ab'.includes(p),
    );
    expect(sameMs.sort()).toEqual(['c', 'd']);
  });

  test('ties go in a per-node order, so nodes start at different peers', () => {
    const first = (seed: string) => longestUnpinged(peers, 3, () => 0, seed).join(',');
    const starts = new Set(['node-a', 'node-b', 'node-c', 'node-d'].map(first));
    expect(starts.size).toBeGreaterThan(1);
    expect(first('node-a')).toBe(first('node-a'));
  });

  test('peers per round: a number, 0 for all, or auto sized to the coverage period', () => {
    const hour = 3600_000;
    expect(peersPerRound(0, 10_000, 2 * hour, hour)).toBe(10_000);
    expect(peersPerRound(100, 10_000, 2 * hour, hour)).toBe(100);
    expect(peersPerRound(100, 50, 2 * hour, hour)).toBe(50);
    // 9,999 peers, 1h rounds, 2h stated: two rounds of 5,000 (the arithmetic of docs/checks.md).
    expect(peersPerRound('auto', 9_999, 2 * hour, hour)).toBe(5_000);
    expect(
      Math.ceil(9_999 / peersPerRound('auto', 9_999, 2 * hour, hour)) * hour,
    ).toBeLessThanOrEqual(2 * hour);
    // Up to 1,000 peers, all of them, as Autopilot; no round (on demand only): all.
    expect(peersPerRound('auto', 800, 2 * hour, hour)).toBe(800);
    expect(peersPerRound('auto', 2_500, 2 * hour, hour)).toBe(1_250);
    expect(peersPerRound('auto', 2_500, 2 * hour, undefined)).toBe(2_500);
    // Rounds further apart than the period: every peer every round.
    expect(peersPerRound('auto', 5_000, 2 * hour, 4 * hour)).toBe(5_000);
  });

  test('a round pings the sample and carries the other peers’ last results', async () => {
    const names = ['n0', 'n1', 'n2', 'n3'];
    const net = network(['n3']);
    const check = createPingCheck({
      settings: { ...SETTINGS, sampleSize: 2 },
      peers: () => names,
      rotationSeed: '',
      run: net.run,
    });
    const first = await check.run(context());
    const second = await check.run(context());
    expect(net.pinged).toHaveLength(4);
    expect(new Set(net.pinged)).toEqual(new Set(names));
    // The second round reports all four: two fresh, two carried with the time they were observed.
    expect(second.devices.map((d) => d.id).sort()).toEqual(names);
    const carried = second.devices.filter((d) => d.observedAt !== undefined);
    expect(carried.map((d) => d.id).sort()).toEqual(first.devices.map((d) => d.id).sort());
    expect(second.devices.find((d) => d.id === 'n3')?.verdict).toBe('FAIL');
    expect(first.reason ?? second.reason).toMatch(
      /pinged 2 of 4 peers this round, each at least every 2 rounds$/,
    );
  });

  test('a caller who names peers gets exactly those, unsampled', async () => {
    const net = network();
    const check = createPingCheck({
      settings: { ...SETTINGS, sampleSize: 1 },
      peers: () => ['a', 'b', 'c'],
      run: net.run,
    });
    const outcome = await check.run(context(check.parseParams({ pingnodes: 'a,c' })));
    expect(outcome.devices.map((d) => d.id)).toEqual(['a', 'c']);
    expect(outcome.reason).toBeUndefined();
  });
});

/** A reply of a given loss and average round trip, as judgePeer leaves it. */
function answered(peer: string, loss: number, rtt: number | null): DeviceResult {
  return {
    id: peer,
    verdict: loss === 1 ? 'FAIL' : loss > 0 ? 'WARN' : 'PASS',
    reason: '',
    evidence: { transmitted: 3, received: 3 - loss * 3, lossRatio: loss, rttAvgSeconds: rtt },
    compatValue: loss === 1 ? 1 : 0,
  };
}

const valuesOf = (
  samples: readonly { metric: string; labels: object; value: number }[],
  metric: string,
) => samples.filter((s) => s.metric === metric).map((s) => [s.labels, s.value]);

describe('series bounded at any cluster size (issue 21)', () => {
  test('per interface: peers probed and unreachable, quantiles of loss and round trip', () => {
    const results = [
      ...Array.from({ length: 100 }, (_, i) => ({
        target: { peer: `p${i}`, interface: 'eth0', address: `10.0.0.${i}` },
        device: answered(`p${i}`, i === 7 ? 1 : i < 3 ? 1 / 3 : 0, i === 7 ? null : (i + 1) / 1e4),
      })),
      {
        target: { peer: 'p0', interface: 'net1', address: '10.1.0.0' },
        device: answered('p0', 0, 0.002),
      },
    ];
    const samples = interfaceSamples(results);
    // 2 counts + 4 loss + 4 round-trip quantiles per interface, whatever the number of peers.
    expect(samples).toHaveLength(20);
    expect(valuesOf(samples, 'autopilot_ping_peers_probed')).toEqual([
      [{ check: 'ping', interface: 'eth0' }, 100],
      [{ check: 'ping', interface: 'net1' }, 1],
    ]);
    expect(valuesOf(samples, 'autopilot_ping_peers_unreachable')[0]).toEqual([
      { check: 'ping', interface: 'eth0' },
      1,
    ]);
    const eth0 = (metric: string) =>
      samples
        .filter((s) => s.metric === metric && s.labels.interface === 'eth0')
        .map((s) => [s.labels.stat, s.value]);
    // Nearest rank over 100 losses: 96 at 0, 3 at 1/3, 1 at 1.
    expect(eth0('autopilot_ping_loss_ratio')).toEqual([
      ['p50', 0],
      ['p90', 0],
      ['p99', 1 / 3],
      ['max', 1],
    ]);
    // 99 round trips, 0.1 ms to 10 ms without p7 (no reply): ranks 50, 90 and 99 of 99.
    expect(eth0('autopilot_ping_rtt_seconds')).toEqual([
      ['p50', 0.0051],
      ['p90', 0.0091],
      ['p99', 0.01],
      ['max', 0.01],
    ]);
  });

  test('per-peer loss series: only the K worst, by loss then round trip', () => {
    const results = Array.from({ length: 30 }, (_, i) => ({
      target: { peer: `p${String(i).padStart(2, '0')}`, interface: 'eth0', address: `10.0.0.${i}` },
      device: answered(`p${i}`, i < 5 ? 1 : 1 / 3, i < 5 ? null : i / 1000),
    }));
    const samples = degradedInterfaceSamples(results, 7);
    expect(samples.map((s) => s.labels.peer)).toEqual([
      // The 5 unreachable (no round trip to rank them by: by name), then the slowest lossy ones.
      'p00',
      'p01',
      'p02',
      'p03',
      'p04',
      'p29',
      'p28',
    ]);
  });

  test('compatibility series: every peer up to the cap, above it only the K worst failing', () => {
    const devices = [answered('a', 0, 0.001), answered('b', 1, null), answered('c', 1 / 3, 0.002)];
    expect(capCompatSeries(devices, 3, 3, 20)).toEqual(devices);
    const capped = capCompatSeries(devices, 4, 3, 20);
    expect(capped.map((d) => [d.id, d.verdict, d.compatValue])).toEqual([
      ['a', 'PASS', undefined],
      ['b', 'FAIL', 1],
      ['c', 'WARN', undefined],
    ]);
    const many = Array.from({ length: 50 }, (_, i) => answered(`f${i}`, 1, null));
    expect(capCompatSeries(many, 5000, 500, 20).filter((d) => d.compatValue === 1)).toHaveLength(
      20,
    );
  });

  test('a run over 600 peers with two unreachable: 2 compatibility series, the peers named', async () => {
    const names = Array.from({ length: 600 }, (_, i) => `10.9.${Math.floor(i / 250)}.${i % 250}`);
    const check = createPingCheck({
      settings: { ...SETTINGS, concurrency: 64, compatMaxPeers: 500, topK: 20 },
      peers: () => names,
      run: network(['10.9.1.5', '10.9.2.9']).run,
    });
    const outcome = await check.run(context());
    expect(outcome.devices).toHaveLength(600);
    expect(
      outcome.devices.filter((d) => d.compatValue !== undefined).map((d) => [d.id, d.compatValue]),
    ).toEqual([
      ['10.9.1.5', 1],
      ['10.9.2.9', 1],
    ]);
    const perPeer = (outcome.samples ?? []).filter((s) => 'peer' in s.labels);
    expect(perPeer.map((s) => s.labels.peer)).toEqual(['10.9.1.5', '10.9.2.9']);
  });
});

describe('coverage: the stated period and the oldest probe', () => {
  const HOUR = 3600_000;

  /** Hourly runs of a check over 4 peers; the oldest-probe age after each. */
  async function agesOver(runs: number, sampleSize: number | 'auto') {
    let now = 1_000_000;
    const net = network();
    const check = createPingCheck({
      settings: { ...SETTINGS, sampleSize, coverageMs: 2 * HOUR },
      peers: () => ['n0', 'n1', 'n2', 'n3'],
      run: net.run,
      now: () => now,
      roundIntervalMs: () => HOUR,
    });
    const ages: number[] = [];
    let stated: number | undefined;
    for (let run = 0; run < runs; run++) {
      const outcome = await check.run(context());
      const get = (metric: string) => outcome.samples?.find((s) => s.metric === metric)?.value;
      ages.push(get('autopilot_ping_oldest_probe_age_seconds')!);
      stated = get('autopilot_ping_coverage_seconds');
      now += HOUR;
    }
    return { ages, stated, pinged: net.pinged.length };
  }

  test('auto at 4 peers pings all every round: nothing older than the run', async () => {
    expect(await agesOver(3, 'auto')).toEqual({ ages: [0, 0, 0], stated: 7200, pinged: 12 });
  });

  test('a sample forced to 1 of 4 peers: a peer waits 3 rounds, past the stated 2 hours', async () => {
    const { ages, stated } = await agesOver(5, 1);
    expect(stated).toBe(7200);
    // Peers never pinged count from when they were first listed (the first run).
    expect(ages).toEqual([0, 3600, 7200, 10800, 10800]);
    expect(Math.max(...ages)).toBeGreaterThan(stated!);
  });

  test('a sample of 2 of 4 meets the period: the oldest probe is one round old', async () => {
    const { ages } = await agesOver(4, 2);
    expect(ages).toEqual([0, 3600, 3600, 3600]);
  });

  test('no period without rounds that run ping; the age counts from the first listing', () => {
    const since = (peer: string) => ({ a: 1000, b: 4000 })[peer] ?? 0;
    expect(coverageSamples(['a', 'b'], since, 11_500, undefined)).toEqual([
      { metric: 'autopilot_ping_oldest_probe_age_seconds', labels: { check: 'ping' }, value: 10 },
    ]);
  });
});

describe('job and nodelabel select ping targets in Kubernetes mode', () => {
  test('the union of the selection, limited to peers, is pinged', async () => {
    const net = network();
    const asked: unknown[] = [];
    const check = createPingCheck({
      settings: SETTINGS,
      peers: () => ['node-b', 'node-c', 'node-d'],
      clusterMode: true,
      targetsOf,
      selectNodes: (selection) => {
        asked.push(selection);
        return Promise.resolve(['node-c', 'node-z']);
      },
      run: net.run,
    });
    const params = check.parseParams({ job: 'ml:app=trainer', host: 'node-d' });
    expect(params).toEqual({ job: 'ml:app=trainer', host: 'node-d' });
    const outcome = await check.run(context(params));
    expect(asked).toEqual([{ job: 'ml:app=trainer', nodelabel: undefined }]);
    expect(outcome.devices.map((d) => d.id)).toEqual(['node-d', 'node-c']);
  });

  test('a malformed job is a ParamError; standalone mode refuses selectors', () => {
    const cluster = createPingCheck({
      settings: SETTINGS,
      peers: () => [],
      clusterMode: true,
      selectNodes: () => Promise.resolve([]),
      run: network().run,
    });
    expect(() => cluster.parseParams({ job: 'nocolon' })).toThrow(
      new ParamError('job "nocolon" is not namespace:label-selector, such as default:app=trainer'),
    );
    const standalone = createPingCheck({ settings: SETTINGS, peers: () => [], run: network().run });
    expect(() => standalone.parseParams({ nodelabel: 'a=b' })).toThrow(/standalone mode/);
  });
});

describe('pod interfaces (Multus network-status)', () => {
  const annotation = JSON.stringify([
    { name: 'k8s-pod-network', interface: 'eth0', ips: ['10.128.0.5'], default: true },
    { name: 'autopilot/multi-nic', interface: 'net1', ips: ['192.168.1.5', '192.168.2.5'] },
    { name: 'no-interface-key', ips: ['172.16.0.5'] },
    { name: 'no-ips', interface: 'net9' },
  ]);

  test('named as Autopilot named them', () => {
    expect(
      podInterfaces({
        annotations: { 'k8s.v1.cni.cncf.io/network-status': annotation },
        podIPs: ['10.128.0.5'],
      }),
    ).toEqual([
      { name: 'eth0', address: '10.128.0.5' },
      { name: 'net1-0', address: '192.168.1.5' },
      { name: 'net1-1', address: '192.168.2.5' },
      { name: 'k8s-pod-network', address: '172.16.0.5' },
    ]);
  });

  test('without the annotation the pod IPs are the default interface', () => {
    expect(podInterfaces({ annotations: {}, podIPs: ['10.0.0.1'] })).toEqual([
      { name: 'default', address: '10.0.0.1' },
    ]);
  });

  test('an annotation that is not JSON, or not a list, counts as absent', () => {
    expect(parseNetworkStatus('{not json')).toBeUndefined();
    expect(parseNetworkStatus('{"a":1}')).toBeUndefined();
    expect(
      podInterfaces({
        annotations: { 'k8s.v1.cni.cncf.io/network-status': '{not json' },
        podIPs: ['10.0.0.1', 'fd00::1'],
      }),
    ).toEqual([
      { name: 'default-0', address: '10.0.0.1' },
      { name: 'default-1', address: 'fd00::1' },
    ]);
  });
});
