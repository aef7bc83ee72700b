/**
 * ping: reachability, round-trip time and loss from this node to each peer.
 *
 * Real iputils `ping` with a per-reply timeout (-W; Autopilot passed -t, which is the TTL), a few
 * packets, a deadline, and bounded concurrency. Verdict per peer: every reply PASS, some lost WARN,
 * none FAIL (the compatibility gauge's 1), no statistics at all ERROR (unknown name, no socket).
 */

import { fnv1a, median } from '../math.js';
import {
  duration,
  integer,
  parseInteger,
  setting,
  text,
  type SettingValues,
} from '../config/setting.js';
import { scheduleIntervalMs } from '../config/schedule.js';
import { isHostOrAddress } from '../net-names.js';
import { mapBounded } from '../concurrency.js';
import { describeEnd, type CommandResult, type RunCommand } from '../exec/run-command.js';
import { givenSelector } from '../params.js';
import { checkSelector, parseJob } from '../selectors.js';
import type {
  Check,
  CheckOutcome,
  CheckRun,
  DeviceResult,
  EvidenceValue,
  RawParams,
  Sample,
} from './check.js';
import { ParamError, summariseOutcome, worstVerdict } from './check.js';
import { firstLine, formatCheckLevelText } from './text.js';
import type { CheckExtras, CheckModule, Peer, PeerTarget } from './module.js';
import type { SampleMetricName } from '../metrics/catalogue.js';

export interface PingSummary {
  /** The numeric address ping resolved the target to. */
  readonly address: string | undefined;
  readonly transmitted: number;
  readonly received: number;
  /** Round-trip times in milliseconds, absent when nothing came back. */
  readonly rttMs: { readonly min: number; readonly avg: number; readonly max: number } | undefined;
}

const HEADER = /^PING \S+ \(([^)]+)\)/m;
const TOTALS = /^(\d+) packets transmitted, (\d+) (?:packets )?received/m;
const RTT =
  /^(?:rtt|round-trip) min\/avg\/max(?:\/(?:mdev|stddev))? = ([\d.]+)\/([\d.]+)\/([\d.]+)/m;

/** Pure. Reads iputils (and BusyBox) output in the C locale; undefined without a statistics line. */
export function parsePing(stdout: string): PingSummary | undefined {
  const totals = TOTALS.exec(stdout);
  if (totals === null) return undefined;
  const rtt = RTT.exec(stdout);
  return {
    address: HEADER.exec(stdout)?.[1],
    transmitted: Number(totals[1]),
    received: Number(totals[2]),
    rttMs:
      rtt === null ? undefined : { min: Number(rtt[1]), avg: Number(rtt[2]), max: Number(rtt[3]) },
  };
}

/** This node has no path to the peer: a network fault, unlike a name that does not resolve. */
const NO_ROUTE = /Network is unreachable|No route to host/;

/**
 * ping may not open its socket: iputils says "socket: Operation not permitted" (and, when the
 * kernel refuses the ICMP datagram socket, "socket: Permission denied"). Its first stderr line is
 * "ping: socktype: SOCK_RAW", which names no fix, so the reason quotes the socket line and names both.
 */
const NO_SOCKET = /^.*socket: (?:Operation not permitted|Permission denied).*$/m;

/** The reason for a peer ping could not even try: the remedy first, ping's own line after it. */
function noSocketReason(socketLine: string): string {
  return (
    'ping may not open a socket (no CAP_NET_RAW): add the CAP_NET_RAW capability to the container, ' +
    `or include its group in the sysctl net.ipv4.ping_group_range (${socketLine.trim()})`
  );
}

/** Pure: the verdict for one peer from the command's result. */
export function judgePeer(peer: string, result: CommandResult): DeviceResult {
  const summary = parsePing(result.stdout);
  const noSocket = NO_SOCKET.exec(result.stderr);
  if ((summary === undefined || summary.transmitted === 0) && noSocket !== null) {
    // Could not tell: the peer was never asked, so ERROR, not FAIL.
    return { id: peer, verdict: 'ERROR', reason: noSocketReason(noSocket[0]), evidence: {} };
  }
  if ((summary === undefined || summary.transmitted === 0) && NO_ROUTE.test(result.stderr)) {
    return {
      id: peer,
      verdict: 'FAIL',
      reason: `unreachable: ${firstLine(result.stderr)}`,
      evidence: {},
      compatValue: 1,
    };
  }
  if (summary === undefined || summary.transmitted === 0) {
    const detail =
      result.end === 'exited'
        ? firstLine(result.stderr) ||
          `ping exited with ${result.exitCode} and printed no statistics`
        : `ping ${describeEnd(result)}`;
    return { id: peer, verdict: 'ERROR', reason: detail, evidence: {} };
  }
  const lost = summary.transmitted - summary.received;
  const evidence = {
    address: summary.address ?? null,
    transmitted: summary.transmitted,
    received: summary.received,
    lossRatio: round(lost / summary.transmitted),
    rttMinSeconds: summary.rttMs === undefined ? null : msToSeconds(summary.rttMs.min),
    rttAvgSeconds: summary.rttMs === undefined ? null : msToSeconds(summary.rttMs.avg),
    rttMaxSeconds: summary.rttMs === undefined ? null : msToSeconds(summary.rttMs.max),
  };
  if (summary.received === 0) {
    return {
      id: peer,
      verdict: 'FAIL',
      reason: `unreachable: no reply to ${summary.transmitted} echo requests`,
      evidence,
      compatValue: 1,
    };
  }
  const rtt = summary.rttMs === undefined ? '' : `, rtt avg ${summary.rttMs.avg} ms`;
  if (lost > 0) {
    return {
      id: peer,
      verdict: 'WARN',
      reason: `${lost} of ${summary.transmitted} echo requests lost${rtt}`,
      evidence,
      compatValue: 0,
    };
  }
  return {
    id: peer,
    verdict: 'PASS',
    reason: `${summary.received}/${summary.transmitted} replies${rtt}`,
    evidence,
    compatValue: 0,
  };
}

/** Pure: node-level aggregates, so that per-peer detail need not become per-peer series. */
export function pingSamples(devices: readonly DeviceResult[]): Sample[] {
  const measured = devices.filter((d) => typeof d.evidence.transmitted === 'number');
  if (measured.length === 0) return [];
  const sent = sum(measured.map((d) => d.evidence.transmitted as number));
  const received = sum(measured.map((d) => d.evidence.received as number));
  const averages = measured
    .map((d) => d.evidence.rttAvgSeconds)
    .filter((v): v is number => typeof v === 'number')
    .sort((a, b) => a - b);
  const maxima = measured
    .map((d) => d.evidence.rttMaxSeconds)
    .filter((v): v is number => typeof v === 'number');
  const samples: Sample[] = [
    {
      metric: 'autopilot_peer_loss_ratio',
      labels: { check: 'ping' },
      value: round((sent - received) / sent),
    },
  ];
  if (averages.length > 0) {
    samples.push(
      {
        metric: 'autopilot_peer_rtt_median_seconds',
        labels: { check: 'ping' },
        value: median(averages),
      },
      {
        metric: 'autopilot_peer_rtt_max_seconds',
        labels: { check: 'ping' },
        value: Math.max(...maxima),
      },
    );
  }
  return samples;
}

/** A peer to ping (checks/module.ts, Peer). */
export type PingPeer = Peer;

export interface PingSettings {
  readonly command: string;
  readonly count: number;
  readonly replyTimeoutMs: number;
  readonly concurrency: number;
  /** Peers pinged per round; 0 (the default here) every peer; 'auto' enough for coverageMs. */
  readonly sampleSize?: number | 'auto';
  /** The stated period within which every peer is pinged; default DEFAULT_COVERAGE_MS. */
  readonly coverageMs?: number;
  /** Failing peers named in series (the top-K); default DEFAULT_TOPK. */
  readonly topK?: number;
  /** Above this many peers only failing ones keep a compatibility series; default 500. */
  readonly compatMaxPeers?: number;
}

export const DEFAULT_COVERAGE_MS = 2 * 3600_000;
export const DEFAULT_TOPK = 20;
export const DEFAULT_COMPAT_MAX_PEERS = 500;

/**
 * 'auto' never samples fewer peers than this: up to 1,000 peers every round pings all of them, as
 * Autopilot did (3,000 echo requests an hour, and the 1,000-peer round is the one benchmarked).
 */
export const AUTO_SAMPLE_FLOOR = 1000;

/** 'auto', or a whole number of peers per round (0: every peer). */
function parseSample(value: string): number | 'auto' {
  if (value.trim() === 'auto') return 'auto';
  return parseInteger(
    'AUTOPILOT_PING_SAMPLE',
    value,
    0,
    100_000,
    'auto, or a whole number of peers from 0 (every peer) to 100000',
  );
}

/**
 * The ping check's own settings, after AUTOPILOT_PEERS in --help and the docs (the peers stay in
 * config.ts: the cluster layer reads them too).
 */
const PING_SETTINGS = {
  AUTOPILOT_PING_COUNT: setting({
    fallback: '3',
    help: 'echo requests per peer',
    parse: integer('AUTOPILOT_PING_COUNT', 1, 100),
  }),
  AUTOPILOT_PING_REPLY_TIMEOUT: setting({
    fallback: '1s',
    help: 'how long to wait for each reply (100ms to 1m)',
    parse: duration('AUTOPILOT_PING_REPLY_TIMEOUT', 100, 60_000),
  }),
  AUTOPILOT_PING_CONCURRENCY: setting({
    fallback: '64',
    help: 'peers pinged at once',
    parse: integer('AUTOPILOT_PING_CONCURRENCY', 1, 1024),
  }),
  AUTOPILOT_PING_COMMAND: setting({
    fallback: 'ping',
    help: 'the iputils ping executable',
    parse: text,
  }),
  AUTOPILOT_PING_SAMPLE: setting({
    fallback: 'auto',
    help: 'peers pinged per round, the longest-unpinged first; auto = all up to 1000 peers, else enough to reach every peer within AUTOPILOT_PING_COVERAGE; 0 = all',
    parse: parseSample,
  }),
  AUTOPILOT_PING_COVERAGE: setting({
    fallback: '2h',
    help: 'the stated period: every peer is pinged at least once within it (autopilot_ping_coverage_seconds; 1m to 7d)',
    parse: duration('AUTOPILOT_PING_COVERAGE', 60_000, 7 * 24 * 3600_000),
  }),
  AUTOPILOT_PING_TOPK: setting({
    fallback: String(DEFAULT_TOPK),
    help: 'failing peers named in per-peer series, the worst by loss then round-trip time',
    parse: integer('AUTOPILOT_PING_TOPK', 1, 1000),
  }),
  AUTOPILOT_PING_COMPAT_MAX_PEERS: setting({
    fallback: String(DEFAULT_COMPAT_MAX_PEERS),
    help: 'peers up to which autopilot_health_checks{health="ping"} has a series per peer; above, only failing peers (the top-K)',
    parse: integer('AUTOPILOT_PING_COMPAT_MAX_PEERS', 0, 1_000_000),
  }),
};

/** PING_SETTINGS parsed, by setting name, as parseConfig hands them to the module. */
export type PingSettingValues = SettingValues<typeof PING_SETTINGS>;

/** What the check reads of its settings. */
export function pingSettings(values: PingSettingValues): PingSettings {
  return {
    command: values.AUTOPILOT_PING_COMMAND,
    count: values.AUTOPILOT_PING_COUNT,
    replyTimeoutMs: values.AUTOPILOT_PING_REPLY_TIMEOUT,
    concurrency: values.AUTOPILOT_PING_CONCURRENCY,
    sampleSize: values.AUTOPILOT_PING_SAMPLE,
    coverageMs: values.AUTOPILOT_PING_COVERAGE,
    topK: values.AUTOPILOT_PING_TOPK,
    compatMaxPeers: values.AUTOPILOT_PING_COMPAT_MAX_PEERS,
  };
}

const nameOf = (peer: PingPeer): string => (typeof peer === 'string' ? peer : peer.name);
const addressOf = (peer: PingPeer): string => (typeof peer === 'string' ? peer : peer.address);

/** One address of a peer: Kubernetes mode pings every interface of every peer's pod. */
export type PingTarget = PeerTarget;

export interface PingCheckDeps {
  readonly settings: PingSettings;
  /** The peers to ping when the caller names none. */
  readonly peers: () => readonly PingPeer[];
  /** Kubernetes mode: peers come from the Service, and messages say so. */
  readonly clusterMode?: boolean;
  /** Kubernetes mode: every address of these peers' pods (their interfaces). */
  readonly targetsOf?: (peers: readonly string[]) => Promise<readonly PingTarget[]>;
  /** Kubernetes mode: the nodes a job (namespace:selector) or a node label selector picks. */
  readonly selectNodes?: (selection: {
    readonly job: string | undefined;
    readonly nodelabel: string | undefined;
  }) => Promise<readonly string[]>;
  /** Spreads the sample: nodes with different seeds start at different peers. */
  readonly rotationSeed?: string;
  /** Milliseconds between periodic rounds that run ping at this moment; undefined: none do. */
  readonly roundIntervalMs?: (now: number) => number | undefined;
  /** Epoch milliseconds; dates probes for the coverage figures. */
  readonly now?: () => number;
  readonly run: RunCommand;
  /** Overrides the deadline derived from the peers and the settings. */
  readonly timeoutMs?: number;
}

export const PING_SUMMARY = 'ICMP reachability, round-trip time and loss to every peer';

/** Interval between echo requests; 200 ms is the shortest iputils allows a non-root user. */
const INTERVAL_SECONDS = 0.2;

/** Budget for peers with several interfaces when the deadline is computed before they are known. */
const INTERFACES_PER_PEER_BUDGET = 2;

/**
 * Pure: how many peers an unnarrowed run pings. 'auto' takes every peer while there is no round
 * (ping only on demand) or at most AUTO_SAMPLE_FLOOR peers, else the fewest that reach every peer in
 * the rounds that fit in the coverage period: ceil(peers / floor(coverage / interval)).
 */
export function peersPerRound(
  sample: number | 'auto',
  peers: number,
  coverageMs: number,
  intervalMs: number | undefined,
): number {
  if (sample !== 'auto') return sample <= 0 ? peers : Math.min(sample, peers);
  if (intervalMs === undefined) return peers;
  const rounds = Math.max(1, Math.floor(coverageMs / intervalMs));
  return Math.min(peers, Math.max(AUTO_SAMPLE_FLOOR, Math.ceil(peers / rounds)));
}

/**
 * Pure: the `size` peers pinged longest ago (`since`: the last ping, or when a peer never pinged
 * was first listed). With a steady peer list that is a rotation reaching every peer once every
 * ceil(peers / size) runs; unlike an offset into the sorted names, peers joining or leaving never
 * push a peer back, so none can starve. Ties (the first run) go in a per-node hash order, so the
 * nodes of a cluster do not all start with the same peers.
 */
export function longestUnpinged(
  peers: readonly string[],
  size: number,
  since: (peer: string) => number,
  seed: string,
  pinged: (peer: string) => boolean = () => false,
): string[] {
  const order = new Map(peers.map((peer) => [peer, fnv1a(`${seed}/${peer}`)]));
  // A peer never pinged goes before one pinged in the same millisecond it was listed (two runs
  // back to back): otherwise the hash order could pick the same peers twice and starve the rest.
  const neverFirst = (a: string, b: string): number => Number(pinged(a)) - Number(pinged(b));
  return [...peers]
    .sort(
      (a, b) =>
        since(a) - since(b) ||
        neverFirst(a, b) ||
        order.get(a)! - order.get(b)! ||
        (a < b ? -1 : a > b ? 1 : 0),
    )
    .slice(0, Math.max(0, size));
}

/** Pure: one device per peer from its interfaces' results (a single interface is kept as it is). */
export function combineInterfaces(
  peer: string,
  results: readonly { readonly target: PingTarget; readonly device: DeviceResult }[],
): DeviceResult {
  const only = results.length === 1 ? results[0]! : undefined;
  if (only !== undefined) {
    const named = only.target.interface === 'default' ? {} : { interface: only.target.interface };
    return { ...only.device, id: peer, evidence: { ...only.device.evidence, ...named } };
  }
  const evidence: Record<string, EvidenceValue> = { interfaces: results.length };
  for (const { target, device } of results) {
    evidence[`${target.interface}.address`] = target.address;
    evidence[`${target.interface}.verdict`] = device.verdict;
    evidence[`${target.interface}.lossRatio`] = device.evidence.lossRatio ?? null;
    evidence[`${target.interface}.rttAvgSeconds`] = device.evidence.rttAvgSeconds ?? null;
  }
  const verdict = worstVerdict(results.map((r) => r.device.verdict)) ?? 'ERROR';
  const troubled = results.filter((r) => r.device.verdict !== 'PASS');
  const reason =
    troubled.length === 0
      ? `${results.length} interfaces, all replied`
      : troubled
          .map((r) => `${r.target.interface} ${r.target.address}: ${r.device.reason}`)
          .join('; ');
  const measured = results.filter((r) => r.device.compatValue !== undefined);
  return {
    id: peer,
    verdict,
    reason,
    evidence,
    ...(measured.length === 0
      ? {}
      : { compatValue: measured.some((r) => r.device.compatValue === 1) ? 1 : 0 }),
  };
}

type TargetResult = { readonly target: PingTarget; readonly device: DeviceResult };

/** Loss of one address: its measured share, or all of it when ping found no route. */
function lossOf(device: DeviceResult): number | undefined {
  const loss = device.evidence.lossRatio;
  if (typeof loss === 'number') return loss;
  return device.compatValue === 1 ? 1 : undefined;
}

/** Worst first: more loss, then a slower (or no) round trip, then by name for a stable order. */
function worseFirst(
  a: { loss: number; rtt: number | undefined; name: string },
  b: { loss: number; rtt: number | undefined; name: string },
): number {
  const rtt = (x: typeof a) => x.rtt ?? Infinity;
  return b.loss - a.loss || rtt(b) - rtt(a) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}

/**
 * Pure: per-interface loss of the K worst addresses that lost some (by loss, then round-trip time),
 * so the series grow with faults up to K, never with peers.
 */
export function degradedInterfaceSamples(
  results: readonly TargetResult[],
  topK: number = DEFAULT_TOPK,
): Sample[] {
  return results
    .flatMap(({ target, device }) => {
      const loss = lossOf(device);
      if (loss === undefined || loss === 0) return [];
      const rtt = device.evidence.rttAvgSeconds;
      return [{ target, loss, rtt: typeof rtt === 'number' ? rtt : undefined, name: target.peer }];
    })
    .sort((a, b) => worseFirst(a, b) || (a.target.interface < b.target.interface ? -1 : 1))
    .slice(0, topK)
    .map(({ target, loss }) => ({
      metric: 'autopilot_peer_interface_loss_ratio' as const,
      labels: { check: 'ping', peer: target.peer, interface: target.interface },
      value: loss,
    }));
}

/**
 * The quantiles each per-interface distribution is exported at, by their `stat` label (iperf's
 * label name: promtool refuses `quantile` outside a summary).
 */
export const PING_QUANTILES = [
  ['p50', 0.5],
  ['p90', 0.9],
  ['p99', 0.99],
  ['max', 1],
] as const;

/** Nearest rank: the smallest value with at least q of the values at or below it. */
function nearestRank(sorted: readonly number[], q: number): number {
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)]!;
}

/**
 * Pure: per interface, the addresses pinged and unreachable, and quantiles of their loss and of
 * their average round-trip time: 2 + 4 + 4 series per interface whatever the number of peers.
 */
export function interfaceSamples(results: readonly TargetResult[]): Sample[] {
  const byInterface = new Map<string, DeviceResult[]>();
  for (const { target, device } of results) {
    const list = byInterface.get(target.interface) ?? [];
    list.push(device);
    byInterface.set(target.interface, list);
  }
  const samples: Sample[] = [];
  for (const [name, devices] of [...byInterface].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const labels = { check: 'ping', interface: name };
    samples.push(
      { metric: 'autopilot_ping_peers_probed', labels, value: devices.length },
      {
        metric: 'autopilot_ping_peers_unreachable',
        labels,
        value: devices.filter((d) => d.compatValue === 1).length,
      },
    );
    const distributions: readonly (readonly [SampleMetricName, readonly unknown[]])[] = [
      ['autopilot_ping_loss_ratio', devices.map(lossOf)],
      ['autopilot_ping_rtt_seconds', devices.map((d) => d.evidence.rttAvgSeconds)],
    ];
    for (const [metric, values] of distributions) {
      const sorted = values.filter((v): v is number => typeof v === 'number').sort((a, b) => a - b);
      if (sorted.length === 0) continue;
      for (const [stat, q] of PING_QUANTILES) {
        samples.push({
          metric,
          labels: { ...labels, stat },
          value: nearestRank(sorted, q),
        });
      }
    }
  }
  return samples;
}

/** Worst loss and round-trip time of a peer over its interfaces. */
function peerSeverity(device: DeviceResult): { loss: number; rtt: number | undefined } {
  const numbers = (suffix: string, single: string): number[] =>
    Object.entries(device.evidence)
      .filter(([key]) => key === single || key.endsWith(`.${suffix}`))
      .map(([, value]) => value)
      .filter((v): v is number => typeof v === 'number');
  const losses = numbers('lossRatio', 'lossRatio');
  const rtts = numbers('rttAvgSeconds', 'rttAvgSeconds');
  // A failing peer without statistics found no route: as bad as no reply at all.
  const loss = losses.length === 0 ? (device.compatValue === 1 ? 1 : 0) : Math.max(...losses);
  return { loss, rtt: rtts.length === 0 ? undefined : Math.max(...rtts) };
}

/**
 * Pure: the compatibility gauge's values within bounds. Up to `maxPeers` peers every peer keeps
 * its value (a series, as in Autopilot); above, only failing peers do, the `topK` worst, so a
 * cluster of any size costs a node at most K series there.
 */
export function capCompatSeries(
  devices: readonly DeviceResult[],
  peers: number,
  maxPeers: number,
  topK: number,
): DeviceResult[] {
  if (peers <= maxPeers) return [...devices];
  const kept = new Set(
    devices
      .filter((d) => d.compatValue === 1)
      .map((d) => ({ ...peerSeverity(d), name: d.id }))
      .sort(worseFirst)
      .slice(0, topK)
      .map((d) => d.name),
  );
  return devices.map((device) => {
    if (device.compatValue === undefined || kept.has(device.id)) return device;
    const rest: DeviceResult = { ...device };
    delete (rest as { compatValue?: number }).compatValue;
    return rest;
  });
}

/**
 * Pure: the coverage figures: the age of the oldest probe among the current peers (a peer never
 * pinged counts from when it was first listed), and the stated period when rounds run ping.
 */
export function coverageSamples(
  peers: readonly string[],
  since: (peer: string) => number,
  now: number,
  statedMs: number | undefined,
): Sample[] {
  const labels = { check: 'ping' };
  const oldest = Math.max(0, ...peers.map((peer) => now - since(peer)));
  const samples: Sample[] = [
    {
      metric: 'autopilot_ping_oldest_probe_age_seconds',
      labels,
      value: Math.floor(oldest / 1000),
    },
  ];
  if (statedMs !== undefined) {
    samples.push({ metric: 'autopilot_ping_coverage_seconds', labels, value: statedMs / 1000 });
  }
  return samples;
}

/** One device per peer from its addresses' results; none means its pod has no address yet. */
function peerDevice(peer: string, results: readonly TargetResult[]): DeviceResult {
  const own = results.filter((r) => r.target.peer === peer);
  if (own.length === 0) {
    return {
      id: peer,
      verdict: 'ERROR',
      reason: 'its Autopilot pod has no address yet',
      evidence: {},
    };
  }
  return combineInterfaces(peer, own);
}

/**
 * What the check remembers between runs: each peer's last result and when it was pinged, and
 * when peers never pinged were first listed. From these come the sample of a run, the results
 * carried for the peers it left out, and the coverage figures.
 */
function createCoverage(deps: PingCheckDeps) {
  const { settings } = deps;
  const now = deps.now ?? Date.now;
  const coverageMs = settings.coverageMs ?? DEFAULT_COVERAGE_MS;
  const seed = deps.rotationSeed ?? '';
  const lastByPeer = new Map<string, DeviceResult & { observedAt: number }>();
  const firstListed = new Map<string, number>();
  const since = (peer: string): number =>
    lastByPeer.get(peer)?.observedAt ?? firstListed.get(peer) ?? now();
  const intervalMs = (): number | undefined => deps.roundIntervalMs?.(now());
  return {
    perRound: (peers: number): number =>
      peersPerRound(settings.sampleSize ?? 0, peers, coverageMs, intervalMs()),
    pick(peers: readonly string[], size: number): string[] {
      const at = now();
      for (const peer of peers) if (!firstListed.has(peer)) firstListed.set(peer, at);
      return longestUnpinged(peers, size, since, seed, (peer) => lastByPeer.has(peer));
    },
    record(devices: readonly DeviceResult[]): void {
      const at = now();
      for (const device of devices) lastByPeer.set(device.id, { ...device, observedAt: at });
    },
    /** The last results of the peers a sampled run left out; a peer not pinged yet has none. */
    carried(peers: readonly string[], pinged: readonly string[]): DeviceResult[] {
      const fresh = new Set(pinged);
      return peers.flatMap((peer) => {
        const last = lastByPeer.get(peer);
        return fresh.has(peer) || last === undefined ? [] : [last];
      });
    },
    forgetOthers(known: readonly string[]): void {
      const current = new Set(known);
      for (const map of [lastByPeer, firstListed])
        for (const peer of map.keys()) if (!current.has(peer)) map.delete(peer);
    },
    samples(known: readonly string[]): Sample[] {
      const at = now();
      for (const peer of known) if (!firstListed.has(peer)) firstListed.set(peer, at);
      const interval = intervalMs();
      const stated = interval === undefined ? undefined : Math.max(coverageMs, interval);
      return coverageSamples(known, since, at, stated);
    },
  };
}

export function createPingCheck(deps: PingCheckDeps): Check {
  const { settings } = deps;
  const replyTimeoutSeconds = settings.replyTimeoutMs / 1000;
  // ping exits at the deadline even if replies are still missing, so a lost packet cannot hang it.
  const deadlineSeconds = Math.ceil(settings.count * INTERVAL_SECONDS + replyTimeoutSeconds) + 1;
  const coverage = createCoverage(deps);
  const topK = settings.topK ?? DEFAULT_TOPK;
  const noPeers =
    deps.clusterMode === true
      ? 'none (the Service lists no other Autopilot pod)'
      : 'none (AUTOPILOT_PEERS is empty)';

  const pingOne = async (target: PingTarget, signal: AbortSignal) => {
    const result = await deps.run(
      {
        file: settings.command,
        args: [
          '-n',
          '-c',
          String(settings.count),
          '-i',
          String(INTERVAL_SECONDS),
          '-W',
          String(replyTimeoutSeconds),
          '-w',
          String(deadlineSeconds),
          '--',
          target.address,
        ],
        timeoutMs: (deadlineSeconds + 5) * 1000,
        maxOutputBytes: 64 * 1024,
      },
      signal,
    );
    return {
      target,
      device: judgePeer(target.peer, result),
      missing: result.spawnError === 'ENOENT',
    };
  };

  return {
    name: 'ping',
    summary: PING_SUMMARY,
    banner: 'Ping test',
    compatHealth: 'ping',
    deviceKind: 'peer',
    usesGpu: false,
    exclusive: false,
    // Long enough for every wave of pings to reach its deadline, so a valid configuration (many
    // peers, low concurrency, many packets) can always finish.
    get timeoutMs() {
      if (deps.timeoutMs !== undefined) return deps.timeoutMs;
      const perRound = coverage.perRound(deps.peers().length);
      const targets = perRound * (deps.targetsOf === undefined ? 1 : INTERFACES_PER_PEER_BUDGET);
      const waves = Math.ceil(targets / settings.concurrency);
      return Math.max(60_000, waves * (deadlineSeconds + 5) * 1000 + targets * 10);
    },

    parseParams(raw: RawParams) {
      const params: Record<string, string> = {};
      for (const name of ['job', 'nodelabel'] as const) {
        const value = givenSelector(raw[name]);
        if (value === undefined) continue;
        if (deps.selectNodes === undefined) {
          throw new ParamError(
            `${name} selects peers through Kubernetes, which this exporter is not connected to (standalone mode)`,
          );
        }
        if (name === 'job') parseJob(value);
        else checkSelector(name, value);
        params[name] = value;
      }
      const parameter = raw.host !== undefined ? 'host' : 'pingnodes';
      const host = raw.host ?? raw.pingnodes;
      if (host === undefined || host === 'all') return params;
      const wanted = [
        ...new Set(
          host
            .split(',')
            .map((h) => h.trim())
            .filter((h) => h !== ''),
        ),
      ];
      // Only commas and blanks name no peer, like an empty value: every peer, never ping ''.
      if (wanted.length === 0) return params;
      const configured = deps.peers().map(nameOf);
      for (const peer of wanted) {
        if (!isHostOrAddress(peer) || !configured.includes(peer)) {
          throw new ParamError(
            `${parameter} ${JSON.stringify(peer)} is not a peer of this node; peers: ${configured.join(', ') || noPeers}`,
          );
        }
      }
      return { ...params, host: wanted.join(',') };
    },

    async run(ctx): Promise<CheckOutcome> {
      const known = deps.peers();
      const knownNames = known.map(nameOf);
      let selected = ctx.params.host?.split(',');
      if (ctx.params.job !== undefined || ctx.params.nodelabel !== undefined) {
        const nodes = await deps.selectNodes!({
          job: ctx.params.job,
          nodelabel: ctx.params.nodelabel,
        });
        selected = [
          ...new Set([...(selected ?? []), ...nodes.filter((n) => knownNames.includes(n))]),
        ];
      }
      const names = selected ?? knownNames;
      if (names.length === 0) {
        return {
          devices: [],
          verdict: 'SKIP',
          reason:
            selected !== undefined
              ? 'the selection names no peer of this node'
              : deps.clusterMode === true
                ? 'no peers to ping (the Service lists no other Autopilot pod)'
                : 'no peers to ping (set AUTOPILOT_PEERS)',
        };
      }
      // A run the caller did not narrow covers the peers in turns when it samples.
      const size = coverage.perRound(names.length);
      const sampling = selected === undefined && names.length > size;
      const pinged = sampling ? coverage.pick(names, size) : names;
      const targets: readonly PingTarget[] =
        deps.targetsOf === undefined
          ? pinged.map((name) => {
              const peer = known.find((p) => nameOf(p) === name) ?? name;
              return { peer: name, interface: 'default', address: addressOf(peer) };
            })
          : await deps.targetsOf(pinged);
      const results = await mapBounded(targets, settings.concurrency, (target) =>
        pingOne(target, ctx.signal),
      );
      if (results.some((r) => r.missing)) {
        return { devices: [], verdict: 'SKIP', reason: `${settings.command} is not installed` };
      }
      const fresh = pinged.map((peer) => peerDevice(peer, results));
      // A peer whose pod has no address was not pinged: it keeps its age.
      const reached = new Set(results.map((r) => r.target.peer));
      coverage.record(fresh.filter((device) => reached.has(device.id)));
      const devices = sampling ? [...fresh, ...coverage.carried(names, pinged)] : fresh;
      coverage.forgetOthers(knownNames);
      const outcome: CheckOutcome = {
        devices: capCompatSeries(
          devices,
          knownNames.length,
          settings.compatMaxPeers ?? DEFAULT_COMPAT_MAX_PEERS,
          topK,
        ),
        samples: [
          ...pingSamples(results.map((r) => r.device)),
          ...interfaceSamples(results),
          ...degradedInterfaceSamples(results, topK),
          ...coverage.samples(knownNames),
        ],
      };
      if (!sampling) return outcome;
      const { verdict, reason } = summariseOutcome(outcome);
      const rounds = Math.ceil(names.length / size);
      return {
        ...outcome,
        verdict,
        reason: `${reason}; pinged ${pinged.length} of ${names.length} peers this round, each at least every ${rounds} rounds`,
      };
    },

    formatText: formatPingText,
  };
}

/** Autopilot's text: a "Node <node> <ip> <interface> <0|1>" line per interface, then a verdict. */
function formatPingText(run: CheckRun, nodeName: string): string {
  if (run.devices.length === 0) return formatCheckLevelText('[PING]', run);
  const lines = [`[PING] Node ${nodeName} pinged ${run.devices.length} peer(s)`];
  // Autopilot's 0/1 says reachable or not; a peer that could not be checked is neither, and is
  // listed with its reason below instead.
  for (const device of run.devices.filter((d) => d.verdict !== 'ERROR')) {
    lines.push(...autopilotLines(device));
  }
  for (const device of run.devices.filter((d) => d.verdict !== 'PASS')) {
    lines.push(`[PING] ${device.id}: ${device.verdict} ${device.reason}`);
  }
  lines.push(
    run.devices.some((d) => d.verdict === 'FAIL')
      ? '[PING] At least one node unreachable. FAIL'
      : run.devices.some((d) => d.verdict === 'ERROR')
        ? '[PING] At least one node could not be checked. ERROR'
        : '[PING] all nodes reachable. success',
  );
  return `${lines.join('\n')}\n`;
}

/** Autopilot's "Node <node> <ip> <interface> <0|1>" lines, one per interface. */
function autopilotLines(device: DeviceResult): string[] {
  const interfaces = Object.keys(device.evidence)
    .filter((key) => key.endsWith('.address'))
    .map((key) => key.slice(0, -'.address'.length));
  if (interfaces.length === 0) {
    const address =
      typeof device.evidence.address === 'string' ? device.evidence.address : device.id;
    const name =
      typeof device.evidence.interface === 'string' ? device.evidence.interface : 'default';
    return [`Node ${device.id} ${address} ${name} ${device.verdict === 'FAIL' ? 1 : 0}`];
  }
  return interfaces.map((name) => {
    const failed = device.evidence[`${name}.verdict`] === 'FAIL' ? 1 : 0;
    return `Node ${device.id} ${String(device.evidence[`${name}.address`])} ${name} ${failed}`;
  });
}

function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function round(value: number): number {
  return Number(value.toFixed(6));
}

/** ping prints three decimals of milliseconds; more digits would be floating-point noise. */
function msToSeconds(ms: number): number {
  return Number((ms / 1000).toFixed(9));
}

export const pingModule: CheckModule<PingSettingValues> = {
  name: 'ping',
  summary: PING_SUMMARY,
  policy: { periodic: 4, exclusive: false },
  metrics: [
    'autopilot_peer_rtt_median_seconds',
    'autopilot_peer_rtt_max_seconds',
    'autopilot_peer_loss_ratio',
    'autopilot_peer_interface_loss_ratio',
    'autopilot_ping_peers_probed',
    'autopilot_ping_peers_unreachable',
    'autopilot_ping_loss_ratio',
    'autopilot_ping_rtt_seconds',
    'autopilot_ping_coverage_seconds',
    'autopilot_ping_oldest_probe_age_seconds',
  ],
  formatText: formatPingText,
  statusName: 'PING',
  settings: { after: 'AUTOPILOT_PEERS', specs: PING_SETTINGS },
  create: (
    config,
    ports,
    extras: Pick<CheckExtras, 'peers' | 'targetsOf' | 'selectNodes'>,
    settings,
  ) =>
    createPingCheck({
      settings: pingSettings(settings),
      peers: extras.peers,
      run: ports.run,
      clusterMode: ports.kube !== undefined,
      rotationSeed: config.nodeName,
      now: () => ports.clock.now(),
      // Only rounds that run ping promise coverage; cron rounds are as far apart as their next two.
      roundIntervalMs: (now) =>
        config.periodicChecks.includes('ping')
          ? scheduleIntervalMs(config.periodic, now)
          : undefined,
      ...(extras.targetsOf === undefined ? {} : { targetsOf: extras.targetsOf }),
      ...(extras.selectNodes === undefined ? {} : { selectNodes: extras.selectNodes }),
    }),
};
