/**
 * ping: reachability, round-trip time and loss from this node to each peer.
 *
 * Real iputils `ping` with a per-reply timeout (-W; Autopilot passed -t, which is the TTL), a few
 * packets, a deadline, and bounded concurrency. Verdict per peer: every reply PASS, some lost WARN,
 * none FAIL (the compatibility gauge's 1), no statistics at all ERROR (unknown name, no socket).
 */

import { fnv1a, median } from '../math.js';
import { duration, integer, setting, text, type SettingValues } from '../config/setting.js';
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
  /** Peers pinged per round; 0 pings every peer every round. */
  readonly sampleSize?: number;
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
    fallback: '0',
    help: 'peers pinged per round, in turns so each is reached every ceil(peers/sample) rounds; 0 = all',
    parse: integer('AUTOPILOT_PING_SAMPLE', 0, 100_000),
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
  /** Spreads the rotating sample: nodes with different seeds start at different peers. */
  readonly rotationSeed?: string;
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
 * Pure: the peers of one round. With no sample size, or as many peers as that, all of them; else
 * `size` consecutive peers in name order from a start that moves by `size` each round, so every
 * peer is pinged at least once every ceil(peers / size) rounds.
 */
export function rotatingSample(
  peers: readonly string[],
  size: number,
  round: number,
  seed: number,
): string[] {
  const sorted = [...peers].sort();
  if (size <= 0 || sorted.length <= size) return sorted;
  const start = (seed + round * size) % sorted.length;
  return Array.from({ length: size }, (_, i) => sorted[(start + i) % sorted.length]!);
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

/** Pure: per-interface loss, only where some was lost, so series grow with faults, not with peers. */
export function degradedInterfaceSamples(
  results: readonly { readonly target: PingTarget; readonly device: DeviceResult }[],
): Sample[] {
  return results.flatMap(({ target, device }) => {
    const loss = device.evidence.lossRatio;
    if (typeof loss !== 'number' || loss === 0) return [];
    return [
      {
        metric: 'autopilot_peer_interface_loss_ratio' as const,
        labels: { check: 'ping', peer: target.peer, interface: target.interface },
        value: loss,
      },
    ];
  });
}

export function createPingCheck(deps: PingCheckDeps): Check {
  const { settings } = deps;
  const replyTimeoutSeconds = settings.replyTimeoutMs / 1000;
  // ping exits at the deadline even if replies are still missing, so a lost packet cannot hang it.
  const deadlineSeconds = Math.ceil(settings.count * INTERVAL_SECONDS + replyTimeoutSeconds) + 1;
  const sampleSize = settings.sampleSize ?? 0;
  const seed = fnv1a(deps.rotationSeed ?? '');
  let round = 0;
  /** The last result of each peer, carried into rounds whose sample leaves it out. */
  const lastByPeer = new Map<string, DeviceResult & { observedAt: number }>();
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
      const peers = deps.peers().length;
      const perRound = sampleSize > 0 ? Math.min(sampleSize, peers) : peers;
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
      // A round the caller did not narrow covers the peers in turns when a sample size is set.
      const sampling = selected === undefined && sampleSize > 0 && names.length > sampleSize;
      const pinged = sampling ? rotatingSample(names, sampleSize, round++, seed) : names;
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
      const now = Date.now();
      const devices: DeviceResult[] = pinged.map((peer) => {
        const own = results.filter((r) => r.target.peer === peer);
        if (own.length === 0) {
          return {
            id: peer,
            verdict: 'ERROR',
            reason: 'its Autopilot pod has no address yet',
            evidence: {},
          };
        }
        const device = combineInterfaces(peer, own);
        lastByPeer.set(peer, { ...device, observedAt: now });
        return device;
      });
      if (sampling) {
        const fresh = new Set(pinged);
        for (const name of names) {
          const last = lastByPeer.get(name);
          if (!fresh.has(name) && last !== undefined) devices.push(last);
        }
      }
      for (const peer of lastByPeer.keys()) if (!knownNames.includes(peer)) lastByPeer.delete(peer);
      const outcome: CheckOutcome = {
        devices,
        samples: [
          ...pingSamples(results.map((r) => r.device)),
          ...degradedInterfaceSamples(results),
        ],
      };
      if (!sampling) return outcome;
      const { verdict, reason } = summariseOutcome(outcome);
      const rounds = Math.ceil(names.length / sampleSize);
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
      ...(extras.targetsOf === undefined ? {} : { targetsOf: extras.targetsOf }),
      ...(extras.selectNodes === undefined ? {} : { selectNodes: extras.selectNodes }),
    }),
};
