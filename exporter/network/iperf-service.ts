/**
 * The node-local half of the iperf workload: iperf3 servers on this pod's addresses, and clients
 * from here to a peer's servers (Autopilot's /iperfservers, /iperfclients, /iperfstopservers).
 *
 * Unlike Autopilot, servers are not daemons (-D) found again with `ps aux | grep iperf3`: each is a
 * child this service started and remembers, so stopping them touches nothing else on the node, a
 * server that cannot bind is reported instead of silently missing, and every server stops by itself
 * after its lifetime even when nobody asks.
 */

import type { RunCommand, CommandResult } from '../exec/run-command.js';
import type { StartProcess, StartedProcess } from '../exec/start-process.js';
import type { Logger } from '../log.js';
import type { IperfClientOutcome } from './iperf3.js';
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  iperfClientArgs,
  iperfServerArgs,
  parseIperfClientJson,
} from './iperf3.js';

export interface LocalAddress {
  readonly interface: string;
  readonly address: string;
}

export interface ServerStart {
  readonly interface: string;
  readonly address: string;
  readonly port: number;
  readonly ok: boolean;
  readonly error: string | undefined;
  /** The server's pid while it runs; undefined when it failed. */
  readonly pid: number | undefined;
}

export interface ClientRun {
  readonly port: number;
  readonly outcome: IperfClientOutcome;
}

export interface ClientsOutcome {
  readonly runs: readonly ClientRun[];
  /** Sum over ok clients, bits/s received. */
  readonly totalBitsPerSecond: number;
  readonly failed: number;
}

export interface RunningServer {
  readonly interface: string;
  readonly address: string;
  readonly port: number;
  readonly pid: number | undefined;
}

export interface ServersRequest {
  readonly addresses: readonly LocalAddress[];
  readonly numservers: number;
  readonly startport: number;
  readonly lifetimeMs: number;
}

export interface ClientsRequest {
  readonly dstip: string;
  readonly dstport: number;
  readonly numclients: number;
  readonly durationSeconds: number;
  readonly bindAddress?: string;
  readonly signal: AbortSignal;
}

export interface IperfService {
  /**
   * For every address, numservers servers on startport..startport+numservers-1; waits until each
   * says it listens (or fails). Servers started earlier on the same address:port are stopped first.
   * Each server stops by itself after lifetimeMs. Rejects with a RangeError for counts or ports out
   * of range.
   */
  startServers(request: ServersRequest): Promise<ServerStart[]>;
  /**
   * numclients concurrent clients to dstip:dstport+i for durationSeconds; a client that fails is
   * reported, never thrown. Honors signal (kills the clients). Rejects with a RangeError for counts
   * or ports out of range.
   */
  runClients(request: ClientsRequest): Promise<ClientsOutcome>;
  /** Stops every server this service started (only those); returns how many. */
  stopServers(): Promise<number>;
  /** Servers running now. */
  servers(): readonly RunningServer[];
}

export interface IperfServiceDeps {
  readonly startProcess: StartProcess;
  readonly runCommand: RunCommand;
  /** Usually 'iperf3'. */
  readonly command: string;
  readonly logger: Logger;
  /** How long a server may take to print its listening banner; 5 s when absent. */
  readonly readyTimeoutMs?: number;
}

/** Per address for servers, and per request for clients: Autopilot's default is 8. */
export const MAX_PARALLEL_IPERF = 64;

const DEFAULT_READY_TIMEOUT_MS = 5_000;
/** Past the test itself and the connect timeout: iperf3's exchange of results, process start. */
const CLIENT_TIMEOUT_SLACK_MS = 15_000;
/** iperf3 3.12 prints "Server listening on 5201 (test #1)"; older ones omit the test number. */
const LISTENING = /Server listening on \d+/;

interface ServerEntry extends RunningServer {
  readonly process: StartedProcess;
}

export function createIperfService(deps: IperfServiceDeps): IperfService {
  const running = new Map<string, ServerEntry>();
  const readyTimeoutMs = deps.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  // Starting and stopping are serialised so that two overlapping requests for the same ports cannot
  // both believe they own them.
  let serverOps: Promise<unknown> = Promise.resolve();
  const serialised = <T>(operation: () => Promise<T>): Promise<T> => {
    const next = serverOps.then(operation, operation);
    serverOps = next.catch(() => undefined);
    return next;
  };

  const startOne = async (local: LocalAddress, port: number, lifetimeMs: number) => {
    const key = serverKey(local.address, port);
    const earlier = running.get(key);
    if (earlier !== undefined) {
      deps.logger.info('stopping earlier iperf3 server on the same address and port', {
        address: local.address,
        port,
      });
      await earlier.process.stop();
    }
    const started = deps.startProcess(
      { file: deps.command, args: iperfServerArgs(local.address, port) },
      { maxLifetimeMs: lifetimeMs },
    );
    const entry: ServerEntry = { ...local, port, pid: started.pid, process: started };
    running.set(key, entry);
    void started.exited.then((end) => {
      if (running.get(key) === entry) running.delete(key);
      deps.logger.debug('iperf3 server ended', { address: local.address, port, ...end });
    });
    const listening = await started.waitForOutput(LISTENING, readyTimeoutMs);
    if (listening) return serverStart(local, port, started.pid, undefined);

    const error = await serverFailure(started, readyTimeoutMs);
    deps.logger.warn('iperf3 server failed to start', { address: local.address, port, error });
    return serverStart(local, port, undefined, error);
  };

  return {
    startServers: async (request) => {
      checkServersRequest(request);
      const ports = Array.from({ length: request.numservers }, (_, i) => request.startport + i);
      // The same address listed twice (under two names) would race itself for every port.
      const addresses = [...new Map(request.addresses.map((a) => [a.address, a])).values()];
      return serialised(() =>
        Promise.all(
          addresses.flatMap((local) =>
            ports.map((port) => startOne(local, port, request.lifetimeMs)),
          ),
        ),
      );
    },

    runClients: async (request) => {
      checkClientsRequest(request);
      const timeoutMs =
        request.durationSeconds * 1000 + DEFAULT_CONNECT_TIMEOUT_MS + CLIENT_TIMEOUT_SLACK_MS;
      const runs = await Promise.all(
        Array.from({ length: request.numclients }, async (_, i): Promise<ClientRun> => {
          const port = request.dstport + i;
          const args = iperfClientArgs({
            address: request.dstip,
            port,
            durationSeconds: request.durationSeconds,
            ...(request.bindAddress === undefined ? {} : { bindAddress: request.bindAddress }),
          });
          const result = await deps.runCommand(
            { file: deps.command, args, timeoutMs },
            request.signal,
          );
          return { port, outcome: clientOutcome(result) };
        }),
      );
      const outcome = summariseClients(runs);
      for (const run of runs) {
        if (!run.outcome.ok) {
          deps.logger.warn('iperf3 client failed', {
            dstip: request.dstip,
            port: run.port,
            error: run.outcome.error,
          });
        }
      }
      return outcome;
    },

    stopServers: () =>
      serialised(async () => {
        const entries = [...running.values()];
        await Promise.all(entries.map((entry) => entry.process.stop()));
        return entries.length;
      }),

    servers: () =>
      [...running.values()].map(({ interface: name, address, port, pid }) => ({
        interface: name,
        address,
        port,
        pid,
      })),
  };
}

function serverKey(address: string, port: number): string {
  return `${address}|${port}`;
}

function serverStart(
  local: LocalAddress,
  port: number,
  pid: number | undefined,
  error: string | undefined,
): ServerStart {
  return {
    interface: local.interface,
    address: local.address,
    port,
    ok: error === undefined,
    error,
    pid,
  };
}

/** Why a server that never said it listens failed; stops it if it is still there. */
async function serverFailure(started: StartedProcess, readyTimeoutMs: number): Promise<string> {
  // stop() on a process that has already ended only reports how it ended.
  const end = await started.stop();
  if (end.cause === 'stopped') {
    return `iperf3 did not report listening within ${readyTimeoutMs} ms${detail(started.output())}`;
  }
  if (end.spawnError !== undefined) return `could not start iperf3: ${end.spawnError}`;
  const how =
    end.signal !== null ? `was killed by ${end.signal}` : `exited with code ${end.exitCode}`;
  return `iperf3 ${how}${detail(started.output())}`;
}

/** iperf3's own words: "iperf3: error - unable to start listener …: Address already in use". */
function detail(output: string): string {
  const lines = output
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
  const errorLine = lines.find((line) => /\berror\b/i.test(line)) ?? lines.at(-1);
  return errorLine === undefined ? '' : `: ${errorLine}`;
}

/** Pure: one client's outcome from how its command ended. */
export function clientOutcome(result: CommandResult): IperfClientOutcome {
  switch (result.end) {
    case 'exited': {
      const parsed = parseIperfClientJson(result.stdout);
      const stderr = result.stderr.trim();
      if (parsed.ok || result.stdout.trim() !== '' || stderr === '') return parsed;
      return { ok: false, error: stderr.split('\n', 1)[0] ?? stderr };
    }
    case 'aborted':
      return { ok: false, error: 'aborted' };
    case 'timeout':
      return { ok: false, error: `iperf3 timed out after ${Math.round(result.durationMs)} ms` };
    case 'output-limit':
      return { ok: false, error: 'iperf3 wrote more output than allowed' };
    case 'signal':
      return { ok: false, error: `iperf3 was killed by ${result.signal ?? 'a signal'}` };
    case 'spawn-failed':
      return {
        ok: false,
        error: `could not start iperf3: ${result.spawnError ?? 'unknown error'}`,
      };
  }
}

/** Pure. */
export function summariseClients(runs: readonly ClientRun[]): ClientsOutcome {
  let totalBitsPerSecond = 0;
  let failed = 0;
  for (const run of runs) {
    if (run.outcome.ok) totalBitsPerSecond += run.outcome.receivedBitsPerSecond;
    else failed += 1;
  }
  return { runs, totalBitsPerSecond, failed };
}

function checkServersRequest(request: ServersRequest): void {
  checkCount('numservers', request.numservers, 0);
  checkPortRange('startport', request.startport, Math.max(request.numservers, 1));
  if (!(request.lifetimeMs > 0)) {
    throw new RangeError(`lifetimeMs must be positive, not ${request.lifetimeMs}`);
  }
}

function checkClientsRequest(request: ClientsRequest): void {
  checkCount('numclients', request.numclients, 1);
  checkPortRange('dstport', request.dstport, request.numclients);
}

function checkCount(name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min || value > MAX_PARALLEL_IPERF) {
    throw new RangeError(
      `${name} must be an integer in ${min}..${MAX_PARALLEL_IPERF}, not ${value}`,
    );
  }
}

function checkPortRange(name: string, first: number, count: number): void {
  if (!Number.isInteger(first) || first < 1 || first + count - 1 > 65535) {
    throw new RangeError(`${name} ${first} with ${count} consecutive ports leaves 1..65535`);
  }
}

// ---- Autopilot-compatible text and JSON ------------------------------------------------------

const LOG_PREFIX = '[NETWORK] - [IPERF] -';

/** Pure: Autopilot's iperf3_start_servers.py log lines, one "Starting" line per server, then an ERROR line for one that failed. */
export function formatServerStartLines(
  starts: readonly ServerStart[],
  podName: string,
  nodeName: string,
): string {
  return starts
    .map((start) => {
      const where = `${start.address}:${start.port} using ${start.interface} in ${podName} on ${nodeName}`;
      const starting = `${LOG_PREFIX} [INFO] : Starting iperf3 server ${where}...\n`;
      if (start.ok) return starting;
      const error = oneLine(start.error ?? 'unknown error');
      return `${starting}${LOG_PREFIX} [ERROR] : Server failed to start on ${where}. Exited with error: ${error}\n`;
    })
    .join('');
}

/** Pure: Autopilot's line (other tools grep it), with how many servers were stopped. */
export function formatStopLine(count: number): string {
  return `${LOG_PREFIX} [INFO] : All iperf servers have been removed (not deleting default iperf server): ${count} stopped\n`;
}

export interface AutopilotTransferBitrate {
  /** GBytes (2^30 bytes), the unit iperf3's text report uses for a transfer of that size. */
  readonly transfer: number;
  /** Gbits/sec (10^9 bits/s). */
  readonly bitrate: number;
}

export interface AutopilotSideStats {
  readonly aggregate: AutopilotTransferBitrate;
  readonly mean: AutopilotTransferBitrate;
  readonly min: AutopilotTransferBitrate;
  readonly max: AutopilotTransferBitrate;
}

export interface AutopilotClientsJson {
  readonly sender: AutopilotSideStats;
  readonly receiver: AutopilotSideStats;
  readonly units: { readonly transfer: 'GBytes'; readonly bitrate: 'Gbits/sec' };
  readonly numclients: number;
  readonly failed: number;
  /** Sum over ok clients of the bits/s their servers received. */
  readonly totalBitsPerSecond: number;
  readonly clients: readonly {
    readonly port: number;
    readonly ok: boolean;
    readonly error: string | null;
    readonly receivedBitsPerSecond: number | null;
    readonly sentBitsPerSecond: number | null;
    readonly receivedBytes: number | null;
    readonly sentBytes: number | null;
    readonly retransmits: number | null;
    readonly seconds: number | null;
  }[];
}

const BITS_PER_GBIT = 1e9;
const BYTES_PER_GBYTE = 2 ** 30;

/**
 * Pure: the stats Autopilot's /iperfclients returned (sender and receiver: aggregate, mean, min,
 * max of transfer and bitrate, 2 decimals), but as numbers in one stated unit each; Autopilot
 * summed iperf3's text values whatever their unit (Mbits and Gbits alike) and its min/max were
 * wrong for the first clients. Statistics are over the clients that succeeded (all zero when none
 * did); the failures are counted and listed.
 */
export function clientsToAutopilotJson(outcome: ClientsOutcome): AutopilotClientsJson {
  const ok = outcome.runs.flatMap((run) => (run.outcome.ok ? [run.outcome] : []));
  const side = (
    bytes: (r: (typeof ok)[number]) => number,
    bits: (r: (typeof ok)[number]) => number,
  ) =>
    sideStats(
      ok.map((r) => bytes(r) / BYTES_PER_GBYTE),
      ok.map((r) => bits(r) / BITS_PER_GBIT),
    );
  return {
    sender: side(
      (r) => r.sentBytes,
      (r) => r.sentBitsPerSecond,
    ),
    receiver: side(
      (r) => r.receivedBytes,
      (r) => r.receivedBitsPerSecond,
    ),
    units: { transfer: 'GBytes', bitrate: 'Gbits/sec' },
    numclients: outcome.runs.length,
    failed: outcome.failed,
    totalBitsPerSecond: outcome.totalBitsPerSecond,
    clients: outcome.runs.map(({ port, outcome: o }) => ({
      port,
      ok: o.ok,
      error: o.ok ? null : o.error,
      receivedBitsPerSecond: o.ok ? o.receivedBitsPerSecond : null,
      sentBitsPerSecond: o.ok ? o.sentBitsPerSecond : null,
      receivedBytes: o.ok ? o.receivedBytes : null,
      sentBytes: o.ok ? o.sentBytes : null,
      retransmits: o.ok ? (o.retransmits ?? null) : null,
      seconds: o.ok ? o.seconds : null,
    })),
  };
}

function sideStats(transfers: readonly number[], bitrates: readonly number[]): AutopilotSideStats {
  const stat = (pick: (values: readonly number[]) => number): AutopilotTransferBitrate => ({
    transfer: round2(pick(transfers)),
    bitrate: round2(pick(bitrates)),
  });
  const sum = (values: readonly number[]): number => values.reduce((a, b) => a + b, 0);
  const orZero =
    (pick: (values: readonly number[]) => number) =>
    (values: readonly number[]): number =>
      values.length === 0 ? 0 : pick(values);
  return {
    aggregate: stat(sum),
    mean: stat(orZero((values) => sum(values) / values.length)),
    min: stat(orZero((values) => Math.min(...values))),
    max: stat(orZero((values) => Math.max(...values))),
  };
}

function round2(value: number): number {
  return Math.round(value * 100) / 100;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
