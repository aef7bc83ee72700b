/**
 * iperf: TCP throughput between the Autopilot pods of several nodes, on every interface, run on
 * demand from the node that was asked. That node starts iperf3 servers on every selected node
 * through their APIs (/iperfservers), has each source run its clients against its destination of
 * the step (/iperfclients), and always stops the servers afterwards (/iperfstopservers), also
 * after a timeout, an abort or an error: Autopilot left them running unless told to clean up.
 *
 * Workloads: ring (Autopilot's: step t sends node i to node i+t, so every ordered pair runs once),
 * pairs (each step pairs every node with one partner, both ways) and pair (one source and one
 * destination). The result is a throughput matrix per interface. A pair that could not transfer
 * is FAIL; a pair under half the interface's median is WARN (the slow link). The verdicts describe
 * links between nodes, so they do not change the asking node's health label.
 */

import { median } from '../math.js';
import { mapBounded } from '../concurrency.js';
import type {
  Check,
  CheckOutcome,
  CheckParams,
  CheckRun,
  DeviceResult,
  RawParams,
  Sample,
} from './check.js';
import { ParamError, wholeNumberParam } from './check.js';
import { firstLine, formatCheckLevelText } from './text.js';
import type { CheckExtras, CheckModule } from './module.js';

export const IPERF_SUMMARY =
  'TCP throughput between nodes on every interface with iperf3 (ring, pairs or one pair), on demand';

/**
 * The line Autopilot's /status writes before an iperf run, byte for byte: `host` and `job` as the
 * query gave them, `all` and `None` when absent or empty (Go's Query().Get gives "" for both).
 */
export function iperfRunningLine(host: string | undefined, job: string | undefined): string {
  const hosts = host === undefined || host === '' ? 'all' : host;
  const jobName = job === undefined || job === '' ? 'None' : job;
  return `Running iperf3 on hosts ${hosts} or job ${jobName}\n\n`;
}

export const IPERF_WORKLOADS = ['ring', 'pairs', 'pair'] as const;
export type IperfWorkload = (typeof IPERF_WORKLOADS)[number];

/** A node taking part: its name, its API and the address of each of its interfaces. */
export interface IperfNode {
  readonly node: string;
  /** Base URL of its Autopilot API, e.g. http://10.0.0.5:3333. */
  readonly api: string;
  /** interface name -> address */
  readonly interfaces: Readonly<Record<string, string>>;
}

export interface IperfPorts {
  /** The nodes with an Autopilot pod and a reachable API; undefined in standalone mode. */
  readonly nodes: (() => Promise<readonly IperfNode[]>) | undefined;
  /** GET a node's API path; resolves to the status and body. Authenticated as this exporter. */
  readonly ask: (
    url: string,
    signal: AbortSignal,
  ) => Promise<{ readonly status: number; readonly body: string }>;
}

/** Pure: Autopilot's ring: step t (1..n-1) sends node i to node (i+t) mod n. */
export function ringSteps(nodes: readonly string[]): [string, string][][] {
  const steps: [string, string][][] = [];
  for (let t = 1; t < nodes.length; t++) {
    steps.push(nodes.map((source, i) => [source, nodes[(i + t) % nodes.length]!]));
  }
  return steps;
}

/**
 * Pure: the circle method: every step pairs each node with one partner (one sits out when the
 * count is odd), both directions at once; after n-1 steps (n when odd) every pair has met.
 */
export function pairSteps(nodes: readonly string[]): [string, string][][] {
  const seats: (string | undefined)[] = [...nodes];
  if (seats.length % 2 === 1) seats.push(undefined);
  const steps: [string, string][][] = [];
  for (let round = 0; round < seats.length - 1; round++) {
    const step: [string, string][] = [];
    for (let i = 0; i < seats.length / 2; i++) {
      const a = seats[i];
      const b = seats[seats.length - 1 - i];
      if (a !== undefined && b !== undefined) step.push([a, b], [b, a]);
    }
    steps.push(step);
    // Keep the first seat, rotate the others.
    seats.splice(1, 0, seats.pop());
  }
  return steps;
}

export interface PairResult {
  readonly source: string;
  readonly destination: string;
  readonly interface: string;
  /** Received bits per second over all clients; undefined when the transfer failed. */
  readonly bitsPerSecond: number | undefined;
  readonly error: string | undefined;
}

/** Pure: verdicts per pair; slow is below half the interface's median of the pairs that ran. */
export function judgePairs(pairs: readonly PairResult[]): DeviceResult[] {
  const medians = new Map<string, number>();
  for (const name of new Set(pairs.map((p) => p.interface))) {
    const values = pairs
      .filter((p) => p.interface === name && p.bitsPerSecond !== undefined)
      .map((p) => p.bitsPerSecond!)
      .sort((a, b) => a - b);
    if (values.length > 0) medians.set(name, median(values));
  }
  return pairs.map((pair) => {
    const id = `${pair.source}->${pair.destination}/${pair.interface}`;
    const evidence = {
      source: pair.source,
      destination: pair.destination,
      interface: pair.interface,
      bytesPerSecond: pair.bitsPerSecond === undefined ? null : pair.bitsPerSecond / 8,
    };
    if (pair.bitsPerSecond === undefined) {
      return {
        id,
        verdict: 'FAIL',
        reason: `no transfer: ${pair.error ?? 'unknown error'}`,
        evidence,
      };
    }
    const median = medians.get(pair.interface)!;
    const gbps = (pair.bitsPerSecond / 1e9).toFixed(2);
    if (pair.bitsPerSecond < median / 2) {
      return {
        id,
        verdict: 'WARN',
        reason: `${gbps} Gb/s, under half the median of ${pair.interface} (${(median / 1e9).toFixed(2)} Gb/s)`,
        evidence,
      };
    }
    return { id, verdict: 'PASS', reason: `${gbps} Gb/s`, evidence };
  });
}

/** Pure: per interface, the median, slowest and fastest pair, and each source's mean, in bytes/s. */
export function iperfSamples(pairs: readonly PairResult[]): Sample[] {
  const samples: Sample[] = [];
  for (const name of [...new Set(pairs.map((p) => p.interface))].sort()) {
    const ran = pairs.filter((p) => p.interface === name && p.bitsPerSecond !== undefined);
    const values = ran.map((p) => p.bitsPerSecond! / 8).sort((a, b) => a - b);
    if (values.length > 0) {
      for (const [stat, value] of [
        ['min', values[0]!],
        ['median', median(values)],
        ['max', values[values.length - 1]!],
      ] as const) {
        samples.push({
          metric: 'autopilot_iperf_bandwidth_bytes_per_second',
          labels: { interface: name, stat },
          value,
        });
      }
    }
    for (const source of [...new Set(ran.map((p) => p.source))].sort()) {
      const own = ran.filter((p) => p.source === source).map((p) => p.bitsPerSecond! / 8);
      samples.push({
        metric: 'autopilot_iperf_node_bandwidth_bytes_per_second',
        labels: { node: source, interface: name },
        value: own.reduce((a, b) => a + b, 0) / own.length,
      });
    }
  }
  return samples;
}

/** Pure: Autopilot's report: a grid per interface in Gb/s (0.0 for a failed pair), then averages. */
export function renderMatrix(pairs: readonly PairResult[]): string {
  const lines: string[] = [];
  const interfaces = [...new Set(pairs.map((p) => p.interface))].sort();
  const cell = (text: string): string => text.padEnd(40);
  const averages: string[] = [];
  for (const name of interfaces) {
    const own = pairs.filter((p) => p.interface === name);
    const nodes = [...new Set(own.flatMap((p) => [p.source, p.destination]))].sort();
    lines.push(`Network Throughput ${name}:`);
    lines.push(cell('') + nodes.map(cell).join('').trimEnd());
    for (const source of nodes) {
      const row = nodes.map((destination) => {
        if (destination === source) return cell('-');
        const pair = own.find((p) => p.source === source && p.destination === destination);
        if (pair === undefined) return cell('');
        return cell(((pair.bitsPerSecond ?? 0) / 1e9).toFixed(2));
      });
      lines.push((cell(source) + row.join('')).trimEnd());
    }
    lines.push('');
    const ran = own.map((p) => (p.bitsPerSecond ?? 0) / 1e9);
    const average = ran.length === 0 ? 0 : ran.reduce((a, b) => a + b, 0) / ran.length;
    averages.push(`${name} Average Bandwidth Gb/s: ${average.toFixed(2)}`);
  }
  lines.push('Overall Network Interface Average Bandwidth:', ...averages);
  return `${lines.join('\n')}\n`;
}

export interface IperfSettings {
  readonly defaultPclients: number;
  readonly defaultStartport: number;
  readonly defaultDurationSeconds: number;
}

export function createIperfCheck(ports: IperfPorts, settings: IperfSettings): Check {
  const defaults = (): CheckParams => check.parseParams({});
  const check: Check = {
    name: 'iperf',
    summary: IPERF_SUMMARY,
    banner: 'Network throughput test (iperf3)',
    compatHealth: 'iperf',
    deviceKind: 'peer',
    usesGpu: false,
    exclusive: false,
    affectsNodeHealth: false,
    // Ring over many nodes takes n-1 steps per interface; the API caller's deadline governs.
    timeoutMs: 60 * 60 * 1000,

    parseParams(raw: RawParams) {
      const workload = (raw.workload ?? 'ring').toLowerCase();
      if (!(IPERF_WORKLOADS as readonly string[]).includes(workload)) {
        throw new ParamError(
          `workload ${JSON.stringify(raw.workload)} is not supported; use ${IPERF_WORKLOADS.join(', ')}`,
        );
      }
      const pclients = wholeNumberParam('pclients', raw.pclients, settings.defaultPclients, 1, 64);
      const startport = wholeNumberParam(
        'startport',
        raw.startport,
        settings.defaultStartport,
        1024,
        65000,
      );
      if (startport + pclients - 1 > 65535) {
        throw new ParamError(
          `startport ${startport} with pclients ${pclients} goes past port 65535`,
        );
      }
      const duration = wholeNumberParam(
        'duration',
        raw.duration,
        settings.defaultDurationSeconds,
        1,
        300,
      );
      const params: Record<string, string> = {
        workload,
        pclients: String(pclients),
        startport: String(startport),
        duration: String(duration),
      };
      if (workload === 'pair') {
        if (raw.src === undefined || raw.dst === undefined || raw.src === raw.dst) {
          throw new ParamError('workload pair needs src and dst, two different node names');
        }
        params.src = raw.src;
        params.dst = raw.dst;
      }
      const nodes = (raw.nodes ?? '')
        .split(',')
        .map((node) => node.trim())
        .filter((node) => node !== '' && node !== 'all');
      if (nodes.length > 0) params.nodes = nodes.join(',');
      return params;
    },

    async run(ctx): Promise<CheckOutcome> {
      if (ports.nodes === undefined) {
        return {
          devices: [],
          verdict: 'SKIP',
          reason: 'iperf runs between nodes through their APIs: Kubernetes mode only',
        };
      }
      // A run not from the API (PERIODIC_CHECKS, autopilot check) gets the defaults.
      const p = { ...defaults(), ...ctx.params };
      const all = await ports.nodes();
      const wanted =
        p.workload === 'pair'
          ? [p.src!, p.dst!]
          : p.nodes === undefined
            ? all.map((n) => n.node)
            : p.nodes.split(',');
      const missing = wanted.filter((name) => !all.some((n) => n.node === name));
      if (missing.length > 0) {
        return {
          devices: [],
          verdict: 'ERROR',
          reason: `no reachable Autopilot pod on ${missing.join(', ')}`,
        };
      }
      const nodes = all.filter((n) => wanted.includes(n.node));
      if (nodes.length < 2) {
        return { devices: [], verdict: 'SKIP', reason: 'iperf needs at least two nodes' };
      }
      const names = nodes.map((n) => n.node);
      const steps =
        p.workload === 'ring'
          ? ringSteps(names)
          : p.workload === 'pairs'
            ? pairSteps(names)
            : [[[p.src!, p.dst!] as [string, string]]];
      const byName = new Map(nodes.map((n) => [n.node, n]));
      const interfaces = [...new Set(nodes.flatMap((n) => Object.keys(n.interfaces)))].sort();
      const pclients = Number(p.pclients);
      const startport = Number(p.startport);
      const duration = Number(p.duration);
      const lifetime = steps.length * interfaces.length * (duration + 15) + 60;

      const ask = async (node: IperfNode, path: string, signal: AbortSignal) => {
        const answer = await ports.ask(`${node.api}${path}`, signal);
        if (answer.status !== 200) {
          throw new Error(
            `${node.node} answered ${answer.status}: ${firstLine(answer.body).slice(0, 300)}`,
          );
        }
        return answer.body;
      };
      const pairs: PairResult[] = [];
      try {
        const started = await Promise.allSettled(
          nodes.map((node) =>
            ask(
              node,
              `/iperfservers?numservers=${pclients}&startport=${startport}&lifetime=${lifetime}&format=json`,
              ctx.signal,
            ),
          ),
        );
        const refused = started.flatMap((s, i) =>
          s.status === 'rejected'
            ? [`${nodes[i]!.node}: ${errorText(s.reason)}`]
            : failedServers(s.value).map((failure) => `${nodes[i]!.node}: ${failure}`),
        );
        if (refused.length > 0) {
          return {
            devices: [],
            verdict: 'ERROR',
            reason: `could not start iperf3 servers: ${refused.join('; ')}`,
          };
        }
        for (const name of interfaces) {
          if (ctx.signal.aborted) break;
          for (const step of steps) {
            const ran = await mapBounded(step, step.length, async ([source, destination]) => {
              const from = byName.get(source)!;
              const to = byName.get(destination)!;
              const dstip = to.interfaces[name];
              if (dstip === undefined) return undefined;
              const bind = from.interfaces[name];
              const query = new URLSearchParams({
                dstip,
                dstport: String(startport),
                numclients: String(pclients),
                duration: String(duration),
                format: 'json',
                ...(bind === undefined ? {} : { bindip: bind }),
              });
              try {
                const body = await ask(from, `/iperfclients?${query.toString()}`, ctx.signal);
                return readClients(source, destination, name, body);
              } catch (error) {
                return {
                  source,
                  destination,
                  interface: name,
                  bitsPerSecond: undefined,
                  error: errorText(error),
                };
              }
            });
            for (const pair of ran) if (pair !== undefined) pairs.push(pair);
            if (ctx.signal.aborted) break;
          }
        }
      } finally {
        // Never with the run's signal: the servers must stop also when the run was aborted.
        const cleanup = AbortSignal.timeout(15_000);
        await Promise.allSettled(nodes.map((node) => ask(node, '/iperfstopservers', cleanup)));
      }
      return { devices: judgePairs(pairs), samples: iperfSamples(pairs) };
    },

    formatText: formatIperfText,
  };
  return check;
}

function formatIperfText(run: CheckRun): string {
  if (run.devices.length === 0) return formatCheckLevelText('[NETWORK] - [IPERF]', run);
  const pairs: PairResult[] = run.devices.map((d) => ({
    source: String(d.evidence.source),
    destination: String(d.evidence.destination),
    interface: String(d.evidence.interface),
    bitsPerSecond:
      typeof d.evidence.bytesPerSecond === 'number' ? d.evidence.bytesPerSecond * 8 : undefined,
    error: d.verdict === 'FAIL' ? d.reason : undefined,
  }));
  const problems = run.devices
    .filter((d) => d.verdict !== 'PASS')
    .map((d) => `[NETWORK] - [IPERF] - [${d.verdict}] : ${d.id} ${d.reason}`);
  return `${renderMatrix(pairs)}${problems.length === 0 ? '' : `${problems.join('\n')}\n`}`;
}

/** Pure: the servers a node's /iperfservers JSON answer says could not start. */
export function failedServers(body: string): string[] {
  try {
    const { servers } = JSON.parse(body) as { servers?: unknown };
    if (!Array.isArray(servers)) return [];
    return (servers as { ok?: unknown; address?: unknown; port?: unknown; error?: unknown }[])
      .filter((server) => server.ok === false)
      .map((server) => `${String(server.address)}:${String(server.port)} ${String(server.error)}`);
  } catch {
    return [];
  }
}

/** Pure: a node's /iperfclients JSON answer as one pair's result. */
export function readClients(
  source: string,
  destination: string,
  name: string,
  body: string,
): PairResult {
  try {
    const parsed = JSON.parse(body) as { totalBitsPerSecond?: unknown; clients?: unknown };
    const total = parsed.totalBitsPerSecond;
    if (typeof total !== 'number') throw new Error('no totalBitsPerSecond in the answer');
    const clients = Array.isArray(parsed.clients) ? (parsed.clients as { error?: unknown }[]) : [];
    const errors = clients.flatMap((c) => (typeof c.error === 'string' ? [c.error] : []));
    if (total === 0 && errors.length > 0) {
      return { source, destination, interface: name, bitsPerSecond: undefined, error: errors[0] };
    }
    return { source, destination, interface: name, bitsPerSecond: total, error: undefined };
  } catch (error) {
    return {
      source,
      destination,
      interface: name,
      bitsPerSecond: undefined,
      error: errorText(error),
    };
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Without Kubernetes there are no nodes to reach: the check says SKIP. */
const STANDALONE: IperfPorts = {
  nodes: undefined,
  ask: () => Promise.reject(new Error('not in Kubernetes mode')),
};

export const iperfModule: CheckModule = {
  name: 'iperf',
  summary: IPERF_SUMMARY,
  // It loads the fabric other nodes' jobs share: protected whatever its parameters.
  policy: { protectedAs: 'iperf', exclusive: false },
  metrics: [
    'autopilot_iperf_bandwidth_bytes_per_second',
    'autopilot_iperf_node_bandwidth_bytes_per_second',
  ],
  formatText: formatIperfText,
  statusName: 'IPERF',
  create: (_config, _ports, extras: Pick<CheckExtras, 'iperf'>) =>
    createIperfCheck(extras.iperf ?? STANDALONE, {
      defaultPclients: 8,
      defaultStartport: 5200,
      defaultDurationSeconds: 5,
    }),
};
