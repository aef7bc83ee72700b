/**
 * ping: reachability, round-trip time and loss from this node to each peer.
 *
 * Real iputils `ping` with a per-reply timeout (-W; Autopilot passed -t, which is the TTL), a few
 * packets, a deadline, and bounded concurrency. Verdict per peer: every reply PASS, some lost WARN,
 * none FAIL (the compatibility gauge's 1), no statistics at all ERROR (unknown name, no socket).
 */

import type { PingSettings } from '../config/config.js';
import { isHostOrAddress } from '../net-names.js';
import { mapBounded } from '../concurrency.js';
import type { CommandResult, RunCommand } from '../exec/run-command.js';
import type { Check, CheckOutcome, CheckRun, DeviceResult, RawParams, Sample } from './check.js';
import { ParamError } from './check.js';
import { formatCheckLevelText } from './text.js';

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

/** Pure: the verdict for one peer from the command's result. */
export function judgePeer(peer: string, result: CommandResult): DeviceResult {
  const summary = parsePing(result.stdout);
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

/**
 * A peer: a host name or address, or in Kubernetes mode a node and its Autopilot pod's address
 * (reported under the node name, as Autopilot does since its #38, so a rescheduled pod's new IP
 * does not start a new series).
 */
export type PingPeer = string | { readonly name: string; readonly address: string };

const nameOf = (peer: PingPeer): string => (typeof peer === 'string' ? peer : peer.name);
const addressOf = (peer: PingPeer): string => (typeof peer === 'string' ? peer : peer.address);

export interface PingCheckDeps {
  readonly settings: PingSettings;
  /** The peers to ping when the caller names none. */
  readonly peers: () => readonly PingPeer[];
  /** Kubernetes mode: peers come from the Service, and messages say so. */
  readonly clusterMode?: boolean;
  readonly run: RunCommand;
  /** Overrides the deadline derived from the peers and the settings. */
  readonly timeoutMs?: number;
}

export const PING_SUMMARY = 'ICMP reachability, round-trip time and loss to every peer';

/** Interval between echo requests; 200 ms is the shortest iputils allows a non-root user. */
const INTERVAL_SECONDS = 0.2;

export function createPingCheck(deps: PingCheckDeps): Check {
  const { settings } = deps;
  const replyTimeoutSeconds = settings.replyTimeoutMs / 1000;
  // ping exits at the deadline even if replies are still missing, so a lost packet cannot hang it.
  const deadlineSeconds = Math.ceil(settings.count * INTERVAL_SECONDS + replyTimeoutSeconds) + 1;

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
      const waves = Math.ceil(deps.peers().length / settings.concurrency);
      return Math.max(60_000, waves * (deadlineSeconds + 5) * 1000 + deps.peers().length * 10);
    },

    parseParams(raw: RawParams) {
      for (const name of ['job', 'nodelabel'] as const) {
        if (raw[name] !== undefined && raw[name] !== '' && raw[name] !== 'None') {
          throw new ParamError(
            deps.clusterMode === true
              ? `${name} does not select ping targets on /ping; name peers with host= or pingnodes=, or ask /status?${name}=...&check=ping to ping from the nodes it selects`
              : `${name} selects peers through Kubernetes, which this exporter is not connected to (standalone mode)`,
          );
        }
      }
      const host = raw.host ?? raw.pingnodes;
      if (host === undefined || host === '' || host === 'all') return {};
      const configured = deps.peers().map(nameOf);
      const wanted = [
        ...new Set(
          host
            .split(',')
            .map((h) => h.trim())
            .filter((h) => h !== ''),
        ),
      ];
      for (const peer of wanted) {
        if (!isHostOrAddress(peer) || !configured.includes(peer)) {
          throw new ParamError(
            `host ${JSON.stringify(peer)} is not a peer of this node; peers: ${configured.join(', ') || (deps.clusterMode === true ? 'none (the Service lists no other Autopilot pod)' : 'none (AUTOPILOT_PEERS is empty)')}`,
          );
        }
      }
      return { host: wanted.join(',') };
    },

    async run(ctx): Promise<CheckOutcome> {
      const known = deps.peers();
      const wanted = ctx.params.host?.split(',');
      const peers =
        wanted === undefined
          ? known
          : wanted.map((name) => known.find((p) => nameOf(p) === name) ?? name);
      if (peers.length === 0) {
        return {
          devices: [],
          verdict: 'SKIP',
          reason:
            deps.clusterMode === true
              ? 'no peers to ping (the Service lists no other Autopilot pod)'
              : 'no peers to ping (set AUTOPILOT_PEERS)',
        };
      }
      let missingTool: string | undefined;
      const devices = await mapBounded(peers, settings.concurrency, async (peer) => {
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
              addressOf(peer),
            ],
            timeoutMs: (deadlineSeconds + 5) * 1000,
            maxOutputBytes: 64 * 1024,
          },
          ctx.signal,
        );
        if (result.spawnError === 'ENOENT') missingTool = settings.command;
        return judgePeer(nameOf(peer), result);
      });
      if (missingTool !== undefined) {
        return { devices: [], verdict: 'SKIP', reason: `${missingTool} is not installed` };
      }
      return { devices, samples: pingSamples(devices) };
    },

    formatText(run: CheckRun, nodeName: string) {
      if (run.devices.length === 0) return formatCheckLevelText('[PING]', run);
      const lines = [`[PING] Node ${nodeName} pinged ${run.devices.length} peer(s)`];
      // Autopilot's 0/1 says reachable or not; a peer that could not be checked is neither, and is
      // listed with its reason below instead.
      for (const device of run.devices.filter((d) => d.verdict !== 'ERROR')) {
        const address =
          typeof device.evidence.address === 'string' ? device.evidence.address : device.id;
        lines.push(`Node ${device.id} ${address} default ${device.verdict === 'FAIL' ? 1 : 0}`);
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
    },
  };
}

function describeEnd(result: CommandResult): string {
  switch (result.end) {
    case 'timeout':
      return 'did not finish in time';
    case 'aborted':
      return 'was stopped';
    case 'output-limit':
      return 'printed more output than expected';
    case 'signal':
      return `was killed by ${result.signal}`;
    case 'spawn-failed':
      return `could not start (${result.spawnError})`;
    case 'exited':
      return `exited with ${result.exitCode}`;
  }
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0] ?? '';
}

function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function median(sorted: readonly number[]): number {
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

function round(value: number): number {
  return Number(value.toFixed(6));
}

/** ping prints three decimals of milliseconds; more digits would be floating-point noise. */
function msToSeconds(ms: number): number {
  return Number((ms / 1000).toFixed(9));
}
