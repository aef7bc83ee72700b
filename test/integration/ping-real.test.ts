/**
 * The ping check with the real iputils ping. Traffic goes only to 127.0.0.1 and, inside a network
 * namespace this file creates, to 198.18.0.0/15 (RFC 2544 benchmarking space). Needs root for
 * `ip netns`.
 */
import { describe, test, expect, beforeAll, afterAll } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { createPingCheck } from '../../exporter/checks/ping.js';
import type { CheckContext } from '../../exporter/checks/check.js';
import type { PingSettings } from '../../exporter/checks/ping.js';
import { createRunCommand } from '../../exporter/exec/run-command.js';
import { silentLogger } from '../../exporter/log.js';
import { apiRun } from '../fakes/api-run.js';

const PATH = process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const PING_IN_NETNS = join(import.meta.dirname, '..', 'fakes', 'bin', 'ping-in-netns');
const NS = `apt-${process.pid}`;

const context = (): CheckContext => ({
  signal: new AbortController().signal,
  logger: silentLogger,
  params: {},
});

const settings = (command: string): PingSettings => ({
  command,
  count: 2,
  replyTimeoutMs: 500,
  concurrency: 4,
});

const ip = (...args: string[]): string =>
  execFileSync('ip', args, { encoding: 'utf8', env: { PATH }, stdio: ['ignore', 'pipe', 'pipe'] });

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('ping check against the loopback address', () => {
  test('127.0.0.1 is a PASS with round-trip times', async () => {
    const check = createPingCheck({
      settings: settings('ping'),
      peers: () => ['127.0.0.1'],
      run: createRunCommand({ baseEnv: { PATH } }),
    });
    const outcome = await check.run(context());
    expect(outcome.verdict).toBeUndefined();
    expect(outcome.devices).toHaveLength(1);
    const [device] = outcome.devices;
    expect(device?.id).toBe('127.0.0.1');
    expect(device?.verdict).toBe('PASS');
    expect(device?.compatValue).toBe(0);
    const reason = /^2\/2 replies, rtt avg (\d+(?:\.\d+)?) ms$/.exec(device?.reason ?? '');
    expect(reason).not.toBeNull();
    const evidence = device?.evidence ?? {};
    expect(Number(reason?.[1]) / 1000).toBeCloseTo(evidence.rttAvgSeconds as number, 9);
    expect(evidence.address).toBe('127.0.0.1');
    expect(evidence.transmitted).toBe(2);
    expect(evidence.received).toBe(2);
    expect(evidence.lossRatio).toBe(0);
    for (const key of ['rttMinSeconds', 'rttAvgSeconds', 'rttMaxSeconds']) {
      expect(typeof evidence[key]).toBe('number');
      expect(evidence[key] as number).toBeGreaterThan(0);
      expect(evidence[key] as number).toBeLessThan(0.1);
    }
    expect(evidence.rttMinSeconds as number).toBeLessThanOrEqual(evidence.rttAvgSeconds as number);
    expect(evidence.rttAvgSeconds as number).toBeLessThanOrEqual(evidence.rttMaxSeconds as number);
    expect(outcome.samples?.map((s) => s.metric).slice(0, 3)).toStrictEqual([
      'autopilot_peer_loss_ratio',
      'autopilot_peer_rtt_median_seconds',
      'autopilot_peer_rtt_max_seconds',
    ]);
    // The per-interface aggregates: one peer probed, none unreachable.
    const value = (metric: string): number | undefined =>
      outcome.samples?.find((s) => s.metric === metric)?.value;
    expect(value('autopilot_ping_peers_probed')).toBe(1);
    expect(value('autopilot_ping_peers_unreachable')).toBe(0);
    expect(outcome.samples?.[0]?.value).toBe(0);
    expect(outcome.samples?.[1]?.value).toBe(evidence.rttAvgSeconds);
    expect(outcome.samples?.[2]?.value).toBe(evidence.rttMaxSeconds);
  });
});

describe('ping check inside a network namespace', () => {
  beforeAll(() => {
    // Namespaces left behind by earlier runs of this file whose process is gone.
    for (const line of ip('netns', 'list').split('\n')) {
      const name = line.split(' ')[0] ?? '';
      const owner = /^apt-(\d+)$/.exec(name);
      if (owner !== null && (name === NS || !isAlive(Number(owner[1])))) ip('netns', 'del', name);
    }
    ip('netns', 'add', NS);
    ip('-n', NS, 'link', 'set', 'lo', 'up');
    ip('-n', NS, 'link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb');
    ip('-n', NS, 'addr', 'add', '198.18.0.1/24', 'dev', 'va');
    ip('-n', NS, 'link', 'set', 'va', 'up');
    ip('-n', NS, 'link', 'set', 'vb', 'up');
  });

  afterAll(() => {
    ip('netns', 'del', NS);
  });

  const check = () =>
    createPingCheck({
      settings: settings(PING_IN_NETNS),
      peers: () => ['198.18.0.2', '198.19.5.5', '127.0.0.1'],
      run: createRunCommand({ baseEnv: { PATH, AUTOPILOT_TEST_NETNS: NS } }),
    });

  test('an address nobody answers for is a FAIL, no route is a FAIL, loopback still PASSes', async () => {
    const ping = check();
    const started = performance.now();
    const outcome = await ping.run(context());
    // Concurrency 4: the three peers run side by side within the 2 s deadline.
    expect(performance.now() - started).toBeLessThan(15_000); // bounded by the deadline, not hung

    const [silentPeer, noRoute, loopback] = outcome.devices;
    expect(outcome.devices).toHaveLength(3);

    expect(silentPeer?.id).toBe('198.18.0.2');
    expect(silentPeer?.verdict).toBe('FAIL');
    expect(silentPeer?.compatValue).toBe(1);
    expect(silentPeer?.evidence.address).toBe('198.18.0.2');
    expect(silentPeer?.evidence.received).toBe(0);
    expect(silentPeer?.evidence.lossRatio).toBe(1);
    expect(silentPeer?.evidence.rttAvgSeconds).toBeNull();
    expect(silentPeer?.evidence.transmitted as number).toBeGreaterThanOrEqual(2);
    expect(silentPeer?.reason).toBe(
      `unreachable: no reply to ${String(silentPeer?.evidence.transmitted)} echo requests`,
    );

    expect(noRoute).toStrictEqual({
      id: '198.19.5.5',
      verdict: 'FAIL',
      reason: 'unreachable: ping: connect: Network is unreachable',
      evidence: {},
      compatValue: 1,
    });

    expect(loopback?.verdict).toBe('PASS');
    expect(loopback?.compatValue).toBe(0);

    const text = ping.formatText(apiRun('ping', outcome), 'node-x');
    expect(text).toContain('Node 198.18.0.2 198.18.0.2 default 1\n');
    expect(text).toContain('Node 198.19.5.5 198.19.5.5 default 1\n');
    expect(text).toContain('Node 127.0.0.1 127.0.0.1 default 0\n');
    expect(text.endsWith('[PING] At least one node unreachable. FAIL\n')).toBe(true);
  });
});
