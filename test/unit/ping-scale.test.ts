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
  combineInterfaces,
  createPingCheck,
  rotatingSample,
  type PingTarget,
} from '../../exporter/checks/ping.js';
import type { PingSettings } from '../../exporter/checks/ping.js';
import type { CommandResult, RunCommand } from '../../exporter/exec/run-command.js';
import { silentLogger } from '../../exporter/log.js';
import { parseNetworkStatus, podInterfaces } from '../../exporter/network/interfaces.js';

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
    const text = check.formatText(
      {
        check: 'ping',
        trigger: 'api',
        params: {},
        startedAt: 0,
        finishedAt: 1,
        verdict: 'FAIL',
        reason: '',
        devices: outcome.devices,
        samples: [],
      },
      'node-a',
    );
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

describe('rotating sample', () => {
  const peers = Array.from({ length: 10 }, (_, i) => `p${i}`);

  test('consecutive rounds cover every peer within ceil(peers / size) rounds', () => {
    const covered = new Set<string>();
    for (let round = 0; round < Math.ceil(10 / 3); round++) {
      for (const peer of rotatingSample(peers, 3, round, 7)) covered.add(peer);
    }
    expect([...covered].sort()).toEqual([...peers].sort());
    expect(rotatingSample(peers, 3, 0, 7)).toEqual(['p7', 'p8', 'p9']);
    expect(rotatingSample(peers, 3, 1, 7)).toEqual(['p0', 'p1', 'p2']);
  });

  test('no sample size, or no more peers than it, is every peer', () => {
    expect(rotatingSample(peers, 0, 5, 1)).toHaveLength(10);
    expect(rotatingSample(peers, 10, 5, 1)).toHaveLength(10);
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
