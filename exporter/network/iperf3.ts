/**
 * iperf3 command lines and the client's JSON report. Pure.
 *
 * Written against iperf3 3.12 (Debian 12), which behaves differently from newer releases in ways
 * that matter here: with -J it exits 0 even when the test failed (only the document's "error" key
 * says so), and a server whose stdout is a pipe holds its "Server listening" banner in the stdio
 * buffer unless --forceflush is given.
 */

/** iperf3's own default for --rcv-timeout is 120 s; a peer silent this long has gone. */
const SERVER_RECEIVE_TIMEOUT_MS = 10_000;

/** Without it, a SYN to an address nobody answers waits for the kernel's ~2 min TCP timeout. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;

/**
 * A server we own (no -D: a daemon would leave our process group and could only be found again
 * with `ps | grep`, as Autopilot did). It serves test after test until stopped.
 */
export function iperfServerArgs(address: string, port: number): string[] {
  checkPort(port);
  return [
    '-s',
    '-B',
    address,
    '-p',
    String(port),
    // The readiness banner must reach the pipe at once (see the module comment).
    '--forceflush',
    // A client that vanishes mid-test (its node lost) would otherwise keep the server "busy running
    // a test" for two minutes, failing every later client of the ring with "server is busy".
    '--rcv-timeout',
    String(SERVER_RECEIVE_TIMEOUT_MS),
  ];
}

export interface IperfClientOptions {
  readonly address: string;
  readonly port: number;
  /** Whole seconds: iperf3 reads -t with atoi. */
  readonly durationSeconds: number;
  /** Source address, to pick the interface the traffic leaves by. */
  readonly bindAddress?: string;
  readonly connectTimeoutMs?: number;
}

export function iperfClientArgs(o: IperfClientOptions): string[] {
  checkPort(o.port);
  if (!Number.isInteger(o.durationSeconds) || o.durationSeconds < 1) {
    throw new RangeError(
      `iperf3 duration must be a whole number of seconds >= 1, not ${o.durationSeconds}`,
    );
  }
  const connectTimeoutMs = o.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  if (!Number.isInteger(connectTimeoutMs) || connectTimeoutMs < 1) {
    throw new RangeError(
      `iperf3 connect timeout must be a whole number of ms >= 1, not ${connectTimeoutMs}`,
    );
  }
  return [
    '-c',
    o.address,
    '-p',
    String(o.port),
    '-t',
    String(o.durationSeconds),
    '-J',
    '-Z', // zero copy (sendfile), as Autopilot ran it, so the sender's CPU is not what is measured
    '--connect-timeout',
    String(connectTimeoutMs),
    ...(o.bindAddress === undefined ? [] : ['-B', o.bindAddress]),
  ];
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(`port must be an integer in 1..65535, not ${port}`);
  }
}

export interface IperfClientResult {
  readonly ok: true;
  /** end.sum_received: what the server got. */
  readonly receivedBitsPerSecond: number;
  /** end.sum_sent: what the client wrote. */
  readonly sentBitsPerSecond: number;
  readonly receivedBytes: number;
  readonly sentBytes: number;
  /** TCP retransmits of the sender; undefined where the platform does not report them. */
  readonly retransmits: number | undefined;
  /** Length of the receiver's measurement. */
  readonly seconds: number;
}

export type IperfClientOutcome = IperfClientResult | { readonly ok: false; readonly error: string };

/**
 * Pure: the outcome of one `iperf3 -c … -J` run from its stdout. The "error" key wins over
 * everything else, since 3.12 fills in what it can before failing and exits 0 either way.
 */
export function parseIperfClientJson(stdout: string): IperfClientOutcome {
  const text = stdout.trim();
  if (text === '') return failure('iperf3 printed nothing');
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch {
    if (text.startsWith('{')) {
      return failure(
        `iperf3 JSON output is incomplete (${Buffer.byteLength(text)} bytes, ends with ${JSON.stringify(lastLine(text))})`,
      );
    }
    return failure(`iperf3 output is not JSON: ${JSON.stringify(firstLine(text))}`);
  }
  if (!isRecord(document)) return failure('iperf3 JSON output is not an object');
  if (document.error !== undefined) {
    return failure(
      typeof document.error === 'string' ? document.error : JSON.stringify(document.error),
    );
  }
  const end = document.end;
  if (!isRecord(end)) return failure('iperf3 JSON output has no "end" object');
  const received = end.sum_received;
  const sent = end.sum_sent;
  if (!isRecord(received)) return failure('iperf3 JSON output has no end.sum_received');
  if (!isRecord(sent)) return failure('iperf3 JSON output has no end.sum_sent');
  const missing = [
    ...missingNumbers(received, 'end.sum_received', ['bits_per_second', 'bytes', 'seconds']),
    ...missingNumbers(sent, 'end.sum_sent', ['bits_per_second', 'bytes']),
  ];
  if (missing.length > 0) return failure(`iperf3 JSON output lacks ${missing.join(', ')}`);
  return {
    ok: true,
    receivedBitsPerSecond: received.bits_per_second as number,
    sentBitsPerSecond: sent.bits_per_second as number,
    receivedBytes: received.bytes as number,
    sentBytes: sent.bytes as number,
    retransmits: isFiniteNumber(sent.retransmits) ? sent.retransmits : undefined,
    seconds: received.seconds as number,
  };
}

function missingNumbers(
  object: Readonly<Record<string, unknown>>,
  path: string,
  keys: readonly string[],
): string[] {
  return keys.filter((key) => !isFiniteNumber(object[key])).map((key) => `${path}.${key}`);
}

function failure(error: string): { readonly ok: false; readonly error: string } {
  return { ok: false, error };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isFiniteNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

function firstLine(text: string): string {
  return text.split('\n', 1)[0]?.trim() ?? '';
}

function lastLine(text: string): string {
  return text.slice(text.lastIndexOf('\n') + 1).trim();
}
