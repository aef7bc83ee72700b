import { describe, test, expect } from '@jest/globals';
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  iperfClientArgs,
  iperfServerArgs,
  parseIperfClientJson,
} from '../../exporter/network/iperf3.js';
import type { IperfClientResult } from '../../exporter/network/iperf3.js';
import {
  clientOutcome,
  clientsToAutopilotJson,
  formatServerStartLines,
  formatStopLine,
  summariseClients,
} from '../../exporter/network/iperf-service.js';
import type { ClientRun, ServerStart } from '../../exporter/network/iperf-service.js';
import type { CommandResult } from '../../exporter/exec/run-command.js';

// Real iperf3 3.12 output (Debian 12, loopback), tabs and all as cJSON prints it.

/** `iperf3 -c 127.0.0.1 -p 23462 -t 1 -J -Z --connect-timeout 5000`, exit code 0. */
const SUCCESS = `{
	"start":	{
		"connected":	[{
				"socket":	5,
				"local_host":	"127.0.0.1",
				"local_port":	34442,
				"remote_host":	"127.0.0.1",
				"remote_port":	23462
			}],
		"version":	"iperf 3.12",
		"system_info":	"Linux vm 6.18.44-fc-v782 #1 SMP PREEMPT_DYNAMIC @0 x86_64",
		"timestamp":	{
			"time":	"Sun, 29 Nov 2026 00:12:32 GMT",
			"timesecs":	1795911152
		},
		"connecting_to":	{
			"host":	"127.0.0.1",
			"port":	23462
		},
		"cookie":	"oaan3jlnqd53tvhot6rzl5lraffwnznxivna",
		"tcp_mss_default":	32768,
		"target_bitrate":	0,
		"sock_bufsize":	0,
		"sndbuf_actual":	16384,
		"rcvbuf_actual":	131072,
		"test_start":	{
			"protocol":	"TCP",
			"num_streams":	1,
			"blksize":	131072,
			"omit":	0,
			"duration":	1,
			"bytes":	0,
			"blocks":	0,
			"reverse":	0,
			"tos":	0,
			"target_bitrate":	0
		}
	},
	"intervals":	[{
			"streams":	[{
					"socket":	5,
					"start":	0,
					"end":	1.000504,
					"seconds":	1.0005040168762207,
					"bytes":	3916431360,
					"bits_per_second":	31315667255.213261,
					"retransmits":	17,
					"snd_cwnd":	4190912,
					"snd_wnd":	18361344,
					"rtt":	229,
					"rttvar":	283,
					"pmtu":	65535,
					"omitted":	false,
					"sender":	true
				}],
			"sum":	{
				"start":	0,
				"end":	1.000504,
				"seconds":	1.0005040168762207,
				"bytes":	3916431360,
				"bits_per_second":	31315667255.213261,
				"retransmits":	17,
				"omitted":	false,
				"sender":	true
			}
		}],
	"end":	{
		"streams":	[{
				"sender":	{
					"socket":	5,
					"start":	0,
					"end":	1.000504,
					"seconds":	1.000504,
					"bytes":	3916431360,
					"bits_per_second":	31315667783.437145,
					"retransmits":	17,
					"max_snd_cwnd":	4190912,
					"max_snd_wnd":	18361344,
					"max_rtt":	229,
					"min_rtt":	229,
					"mean_rtt":	229,
					"sender":	true
				},
				"receiver":	{
					"socket":	5,
					"start":	0,
					"end":	1.001428,
					"seconds":	1.000504,
					"bytes":	3916431360,
					"bits_per_second":	31286773367.631023,
					"sender":	true
				}
			}],
		"sum_sent":	{
			"start":	0,
			"end":	1.000504,
			"seconds":	1.000504,
			"bytes":	3916431360,
			"bits_per_second":	31315667783.437145,
			"retransmits":	17,
			"sender":	true
		},
		"sum_received":	{
			"start":	0,
			"end":	1.001428,
			"seconds":	1.001428,
			"bytes":	3916431360,
			"bits_per_second":	31286773367.631023,
			"sender":	true
		},
		"cpu_utilization_percent":	{
			"host_total":	79.746878382895076,
			"host_user":	1.9654090403428164,
			"host_system":	77.781768658615064,
			"remote_total":	77.763265371334541,
			"remote_user":	3.6482392390173368,
			"remote_system":	74.114926276309561
		},
		"sender_tcp_congestion":	"bbr",
		"receiver_tcp_congestion":	"bbr"
	}
}
`;

/** What iperf3 3.12 prints with -J when the client never got to run a test: only the error differs. */
const notStarted = (error: string): string => `{
	"start":	{
		"connected":	[],
		"version":	"iperf 3.12",
		"system_info":	"Linux vm 6.18.44-fc-v782 #1 SMP PREEMPT_DYNAMIC @0 x86_64"
	},
	"intervals":	[],
	"end":	{
	},
	"error":	"${error}"
}
`;

/** The same command with no server on the port: exit code 0 all the same. */
const CONNECT_REFUSED = notStarted('unable to connect to server: Connection refused');

/** A second client while the one-client server runs a test: exit code 0 too. */
const SERVER_BUSY = notStarted('the server is busy running a test. try again later');

describe('iperfServerArgs', () => {
  test('a foreground server on one address and port that flushes its banner', () => {
    expect(iperfServerArgs('10.0.0.5', 5200)).toStrictEqual([
      '-s',
      '-B',
      '10.0.0.5',
      '-p',
      '5200',
      '--forceflush',
      '--rcv-timeout',
      '10000',
    ]);
  });

  test('never a daemon and never one-off: the service owns the process and reuses it per test', () => {
    const args = iperfServerArgs('127.0.0.1', 5201);
    expect(args).not.toContain('-D');
    expect(args).not.toContain('--daemon');
    expect(args).not.toContain('-1');
  });

  test.each([0, 65536, 1.5, Number.NaN])('port %p is refused', (port) => {
    expect(() => iperfServerArgs('127.0.0.1', port)).toThrow(RangeError);
  });
});

describe('iperfClientArgs', () => {
  test('JSON, zero copy, duration and a connect timeout', () => {
    expect(iperfClientArgs({ address: '10.0.0.6', port: 5203, durationSeconds: 5 })).toStrictEqual([
      '-c',
      '10.0.0.6',
      '-p',
      '5203',
      '-t',
      '5',
      '-J',
      '-Z',
      '--connect-timeout',
      String(DEFAULT_CONNECT_TIMEOUT_MS),
    ]);
  });

  test('a bind address picks the source interface', () => {
    const args = iperfClientArgs({
      address: '10.0.0.6',
      port: 5200,
      durationSeconds: 1,
      bindAddress: '10.0.0.9',
      connectTimeoutMs: 2000,
    });
    expect(args.slice(-4)).toStrictEqual(['--connect-timeout', '2000', '-B', '10.0.0.9']);
  });

  test.each([0, -1, 1.5, Number.POSITIVE_INFINITY])('duration %p is refused', (durationSeconds) => {
    expect(() => iperfClientArgs({ address: '10.0.0.6', port: 5200, durationSeconds })).toThrow(
      RangeError,
    );
  });

  test('a port out of range is refused', () => {
    expect(() => iperfClientArgs({ address: '10.0.0.6', port: 70000, durationSeconds: 1 })).toThrow(
      RangeError,
    );
  });
});

describe('parseIperfClientJson', () => {
  test('a successful run: end.sum_received and end.sum_sent', () => {
    expect(parseIperfClientJson(SUCCESS)).toStrictEqual({
      ok: true,
      receivedBitsPerSecond: 31286773367.631023,
      sentBitsPerSecond: 31315667783.437145,
      receivedBytes: 3916431360,
      sentBytes: 3916431360,
      retransmits: 17,
      seconds: 1.001428,
    });
  });

  test('connection refused: the error key, although 3.12 exits 0', () => {
    expect(parseIperfClientJson(CONNECT_REFUSED)).toStrictEqual({
      ok: false,
      error: 'unable to connect to server: Connection refused',
    });
  });

  test('a busy server: the error key', () => {
    expect(parseIperfClientJson(SERVER_BUSY)).toStrictEqual({
      ok: false,
      error: 'the server is busy running a test. try again later',
    });
  });

  test('the error key wins over results that are present', () => {
    const document = JSON.parse(SUCCESS) as Record<string, unknown>;
    document.error = 'interrupt - the client has terminated';
    expect(parseIperfClientJson(JSON.stringify(document))).toStrictEqual({
      ok: false,
      error: 'interrupt - the client has terminated',
    });
  });

  test('output cut short (a killed client) says it is incomplete', () => {
    const truncated = SUCCESS.slice(0, 1500);
    const outcome = parseIperfClientJson(truncated);
    expect(outcome.ok).toBe(false);
    if (outcome.ok) return;
    expect(outcome.error).toMatch(
      /^iperf3 JSON output is incomplete \(\d+ bytes, ends with ".+"\)$/,
    );
  });

  test('text that is not JSON is quoted by its first line', () => {
    expect(parseIperfClientJson('iperf3: error - unable to connect\nmore\n')).toStrictEqual({
      ok: false,
      error: 'iperf3 output is not JSON: "iperf3: error - unable to connect"',
    });
  });

  test('empty output', () => {
    expect(parseIperfClientJson(' \n')).toStrictEqual({
      ok: false,
      error: 'iperf3 printed nothing',
    });
  });

  test('a document without end.sum_received names what is missing', () => {
    const document = JSON.parse(SUCCESS) as { end: Record<string, unknown> };
    delete document.end.sum_received;
    expect(parseIperfClientJson(JSON.stringify(document))).toStrictEqual({
      ok: false,
      error: 'iperf3 JSON output has no end.sum_received',
    });
  });

  test('the empty "end" of a failure without an error key is not a success', () => {
    const document = JSON.parse(CONNECT_REFUSED) as Record<string, unknown>;
    delete document.error;
    expect(parseIperfClientJson(JSON.stringify(document))).toStrictEqual({
      ok: false,
      error: 'iperf3 JSON output has no end.sum_received',
    });
  });

  test('non-numeric fields are named', () => {
    const document = JSON.parse(SUCCESS) as {
      end: { sum_received: Record<string, unknown>; sum_sent: Record<string, unknown> };
    };
    document.end.sum_received.bits_per_second = 'fast';
    delete document.end.sum_sent.bytes;
    expect(parseIperfClientJson(JSON.stringify(document))).toStrictEqual({
      ok: false,
      error: 'iperf3 JSON output lacks end.sum_received.bits_per_second, end.sum_sent.bytes',
    });
  });

  test('retransmits are optional (not every platform reports them)', () => {
    const document = JSON.parse(SUCCESS) as { end: { sum_sent: Record<string, unknown> } };
    delete document.end.sum_sent.retransmits;
    const outcome = parseIperfClientJson(JSON.stringify(document));
    expect(outcome.ok && outcome.retransmits).toBeUndefined();
  });

  test('JSON that is not an object', () => {
    expect(parseIperfClientJson('[1]')).toStrictEqual({
      ok: false,
      error: 'iperf3 JSON output is not an object',
    });
  });
});

function commandResult(overrides: Partial<CommandResult>): CommandResult {
  return {
    end: 'exited',
    exitCode: 0,
    signal: null,
    stdout: '',
    stderr: '',
    durationMs: 1000,
    ...overrides,
  };
}

describe('clientOutcome', () => {
  test('an exited client is judged by its JSON, not its exit code', () => {
    expect(clientOutcome(commandResult({ stdout: CONNECT_REFUSED })).ok).toBe(false);
    expect(clientOutcome(commandResult({ stdout: SUCCESS })).ok).toBe(true);
  });

  test('nothing on stdout: the first stderr line says why', () => {
    expect(
      clientOutcome(
        commandResult({ exitCode: 1, stderr: 'iperf3: parameter error - bad port\nUsage: …\n' }),
      ),
    ).toStrictEqual({ ok: false, error: 'iperf3: parameter error - bad port' });
  });

  test.each<[Partial<CommandResult>, string]>([
    [{ end: 'aborted', exitCode: null, signal: 'SIGKILL' }, 'aborted'],
    [
      { end: 'timeout', exitCode: null, signal: 'SIGKILL', durationMs: 20000.4 },
      'iperf3 timed out after 20000 ms',
    ],
    [
      { end: 'spawn-failed', exitCode: null, spawnError: 'ENOENT' },
      'could not start iperf3: ENOENT',
    ],
    [{ end: 'signal', exitCode: null, signal: 'SIGSEGV' }, 'iperf3 was killed by SIGSEGV'],
    [
      { end: 'output-limit', exitCode: null, signal: 'SIGKILL' },
      'iperf3 wrote more output than allowed',
    ],
  ])('%p → %p', (overrides, error) => {
    expect(clientOutcome(commandResult({ stdout: SUCCESS, ...overrides }))).toStrictEqual({
      ok: false,
      error,
    });
  });
});

const GBIT = 1e9;
const GBYTE = 2 ** 30;

function okRun(
  port: number,
  receivedGbit: number,
  sentGbit: number,
  receivedGByte: number,
): ClientRun {
  const result: IperfClientResult = {
    ok: true,
    receivedBitsPerSecond: receivedGbit * GBIT,
    sentBitsPerSecond: sentGbit * GBIT,
    receivedBytes: receivedGByte * GBYTE,
    sentBytes: (receivedGByte + 0.5) * GBYTE,
    retransmits: 3,
    seconds: 5,
  };
  return { port, outcome: result };
}

describe('summariseClients', () => {
  test('totals the received rate of the clients that succeeded and counts the rest', () => {
    const runs = [
      okRun(5200, 10, 11, 6),
      {
        port: 5201,
        outcome: { ok: false as const, error: 'unable to connect to server: Connection refused' },
      },
      okRun(5202, 20, 21, 12),
    ];
    expect(summariseClients(runs)).toStrictEqual({
      runs,
      totalBitsPerSecond: 30 * GBIT,
      failed: 1,
    });
  });

  test('no clients', () => {
    expect(summariseClients([])).toStrictEqual({ runs: [], totalBitsPerSecond: 0, failed: 0 });
  });
});

describe('clientsToAutopilotJson', () => {
  test("Autopilot's stats shape, in Gbits/sec and GBytes, over the clients that succeeded", () => {
    const outcome = summariseClients([
      okRun(5200, 10.004, 11, 6),
      okRun(5201, 30, 31, 18),
      {
        port: 5202,
        outcome: { ok: false, error: 'the server is busy running a test. try again later' },
      },
      okRun(5203, 20, 21, 12),
    ]);
    const json = clientsToAutopilotJson(outcome);
    expect(json.receiver).toStrictEqual({
      aggregate: { transfer: 36, bitrate: 60 },
      mean: { transfer: 12, bitrate: 20 },
      // Autopilot's elif left min at 1000 when values rose: here it is the real minimum.
      min: { transfer: 6, bitrate: 10 },
      max: { transfer: 18, bitrate: 30 },
    });
    expect(json.sender).toStrictEqual({
      aggregate: { transfer: 37.5, bitrate: 63 },
      mean: { transfer: 12.5, bitrate: 21 },
      min: { transfer: 6.5, bitrate: 11 },
      max: { transfer: 18.5, bitrate: 31 },
    });
    expect(json.units).toStrictEqual({ transfer: 'GBytes', bitrate: 'Gbits/sec' });
    expect(json.numclients).toBe(4);
    expect(json.failed).toBe(1);
    expect(json.totalBitsPerSecond).toBeCloseTo(60.004 * GBIT, 0);
    expect(json.clients[2]).toStrictEqual({
      port: 5202,
      ok: false,
      error: 'the server is busy running a test. try again later',
      receivedBitsPerSecond: null,
      sentBitsPerSecond: null,
      receivedBytes: null,
      sentBytes: null,
      retransmits: null,
      seconds: null,
    });
    expect(json.clients[0]).toMatchObject({ port: 5200, ok: true, error: null, retransmits: 3 });
    // Survives JSON: numbers, not Autopilot's strings, and nothing undefined.
    expect(JSON.parse(JSON.stringify(json))).toStrictEqual(json);
  });

  test('Mbit/s and Gbit/s clients add up in one unit (Autopilot summed 940 Mbits + 9.4 Gbits as 949.4)', () => {
    const json = clientsToAutopilotJson(
      summariseClients([okRun(5200, 0.94, 0.94, 1), okRun(5201, 9.4, 9.4, 1)]),
    );
    expect(json.receiver.aggregate.bitrate).toBe(10.34);
  });

  test('no successful client: zeros, not Infinity or NaN', () => {
    const json = clientsToAutopilotJson(
      summariseClients([{ port: 5200, outcome: { ok: false, error: 'aborted' } }]),
    );
    for (const stat of ['aggregate', 'mean', 'min', 'max'] as const) {
      expect(json.receiver[stat]).toStrictEqual({ transfer: 0, bitrate: 0 });
      expect(json.sender[stat]).toStrictEqual({ transfer: 0, bitrate: 0 });
    }
    expect(json.failed).toBe(1);
  });
});

describe('Autopilot text', () => {
  const starts: ServerStart[] = [
    { interface: 'net1-0', address: '10.0.0.5', port: 5200, ok: true, error: undefined, pid: 41 },
    {
      interface: 'net1-0',
      address: '10.0.0.5',
      port: 5201,
      ok: false,
      error:
        'iperf3 exited with code 1: iperf3: error - unable to start listener for connections: Address already in use\niperf3: exiting',
      pid: undefined,
    },
  ];

  test('one Starting line per server, and an ERROR line for one that failed', () => {
    expect(formatServerStartLines(starts, 'autopilot-x7k2p', 'node-a')).toBe(
      '[NETWORK] - [IPERF] - [INFO] : Starting iperf3 server 10.0.0.5:5200 using net1-0 in autopilot-x7k2p on node-a...\n' +
        '[NETWORK] - [IPERF] - [INFO] : Starting iperf3 server 10.0.0.5:5201 using net1-0 in autopilot-x7k2p on node-a...\n' +
        '[NETWORK] - [IPERF] - [ERROR] : Server failed to start on 10.0.0.5:5201 using net1-0 in autopilot-x7k2p on node-a. ' +
        'Exited with error: iperf3 exited with code 1: iperf3: error - unable to start listener for connections: Address already in use iperf3: exiting\n',
    );
  });

  test('no servers, no lines', () => {
    expect(formatServerStartLines([], 'pod', 'node')).toBe('');
  });

  test("the stop line keeps Autopilot's text and adds the count", () => {
    const line = formatStopLine(3);
    expect(line).toContain(
      'All iperf servers have been removed (not deleting default iperf server)',
    );
    expect(line).toBe(
      '[NETWORK] - [IPERF] - [INFO] : All iperf servers have been removed (not deleting default iperf server): 3 stopped\n',
    );
  });
});
