/**
 * Fault matrix (issue 9, point 3): every check meets each of five faults of what it depends on,
 * in the built exporter (dist/exporter/main.js) as an operator runs it. Each row asserts the
 * verdict and a reason that names the cause; during a hang, that the readiness probe and /metrics
 * still answer within a second; afterwards, that the exporter has no child process left and holds
 * no more file descriptors than before (a small tolerance for sockets that come and go).
 *
 * What the five faults mean per kind of dependency:
 * - executables (ping, dcgmi, iperf3, each behind its AUTOPILOT_*_COMMAND path, which the test
 *   rewrites between rows so that one exporter meets every fault): hang = never exits, leaving a
 *   grandchild in its process group (test/fakes/bin/misbehave), so the deadline must kill the whole
 *   group; crash = killed by SIGSEGV, or exit 1 without a word; garbage = bytes that are neither text
 *   nor JSON on stdout, exit 0; missing = the path does not exist; permission denied = a file
 *   without execute permission (root cannot execve it either). iperf3 runs only under the
 *   node-local endpoints (/iperfservers, /iperfclients): the iperf check itself is SKIP in
 *   standalone mode, and those endpoints report per server or client instead of a verdict.
 * - native libraries (NVML for remapped, gpupower, ecc, xid; the CUDA probe for pciebw, gpumem;
 *   the C fakes, FAKE_NVML_SCENARIO and FAKE_CUDA_SCENARIO): hang = a call that sleeps past the
 *   check's deadline; crash = calls that return an error (NVML GPU_IS_LOST or UNKNOWN, CUDA
 *   cudaErrorUnknown). A real segfault inside the library kills the exporter, which the DaemonSet
 *   restarts: out of this matrix. Garbage = a GPU name full of quotes, backslashes and a newline,
 *   which must not break the verdicts nor the exposition; NVML and the probe hand over typed
 *   numbers, and the absurd numbers the fakes can make (a huge count of remapped rows or DBEs) are
 *   real findings, not garbage. Missing = the default library name not found: SKIP with the reason;
 *   a library named explicitly that cannot be loaded stops start-up with exit 2 (docs/checks.md,
 *   docs/configuration.md). Permission denied = nvmlInit refused (NVML_ERROR_NO_PERMISSION: SKIP),
 *   CUDA refusing every call (cudaErrorNotPermitted: ERROR), and a library file the exporter, run as
 *   nobody (65534), cannot read: exit 2 naming the cause.
 * - the Kubernetes API (pvc, Kubernetes mode through a kubeconfig): a proxy in front of the fake
 *   API server corrupts the read of the StorageClass, the check's first call: hang = never answers
 *   (AUTOPILOT_KUBE_TIMEOUT 1s); crash = the connection reset, or a 500; garbage = a 200 whose body
 *   is not JSON; missing = 404, which docs/checks.md makes a FAIL (the class does not exist);
 *   permission denied = 403.
 *
 * Hung dcgmi and CUDA probe calls meet deadlines shortened with AUTOPILOT_CHECK_TIMEOUTS (their
 * defaults are minutes). Left out: the CUDA probe's
 * default path not found (it is build/cuda/libautopilot-probe.so of this checkout, which other
 * tests use); the iperf check itself under faults (standalone: SKIP; Kubernetes mode: its faults
 * are the other nodes' iperf endpoints, whose iperf3 faults are the rows here).
 * xid under a hung wait, and SIGTERM while a driver call hangs, are the last describe block.
 */

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { startFakeKubeApi, writeKubeconfig, type FakeKubeApi } from '../fakes/kube-api-server.js';
import { waitUntilGone } from '../fakes/processes.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
const MISBEHAVE = join(ROOT, 'test', 'fakes', 'bin', 'misbehave');
const FAKE_NVML = join(ROOT, 'build', 'fakes', 'nvml', 'libnvidia-ml.so.1');
const FAKE_PROBE = join(ROOT, 'build', 'fakes', 'cuda', 'libautopilot-probe.so');
const TOKEN = 'fault-matrix-token';
const AUTH = { Authorization: `Bearer ${TOKEN}` };
/** Sockets and pipes come and go with the work in flight; a leak per fault grows past this. */
const FD_TOLERANCE = 3;

interface Ports {
  readonly api: number;
  readonly metrics: number;
  readonly readiness: number;
}

interface Running {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly ports: Ports;
}

interface Device {
  readonly id: string;
  readonly verdict: string;
  readonly reason: string;
}

interface CheckResult {
  readonly check: string;
  readonly verdict: string;
  readonly reason: string;
  readonly devices: readonly Device[];
}

const started: ChildProcess[] = [];

afterAll(() => {
  for (const child of started) if (child.exitCode === null) child.kill('SIGKILL');
});

beforeAll(() => {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
}, 120_000);

function baseEnv(extra: Record<string, string>): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/root',
    // As npm start sets it: hung driver calls must not starve libuv's pool (configuration.md).
    UV_THREADPOOL_SIZE: '16',
    NODE_NAME: 'fault-node',
    AUTOPILOT_METRICS_PORT: '0',
    AUTOPILOT_READINESS_PORT: '0',
    AUTOPILOT_LISTEN_ADDRESS: '127.0.0.1',
    AUTOPILOT_API_TOKEN: TOKEN,
    // A start-up round that touches nothing: no peers, so ping says SKIP at once.
    PERIODIC_CHECKS: 'ping',
    ...extra,
  };
}

async function startExporter(env: Record<string, string>): Promise<Running> {
  const child = spawn(process.execPath, [MAIN, '--port', '0', '--w', '0'], {
    cwd: ROOT,
    env: baseEnv(env),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  started.push(child);
  let stderr = '';
  const ports = await new Promise<Ports>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`exporter did not listen: ${stderr}`)), 20_000);
    child.on('exit', (code) => reject(new Error(`exporter exited with ${code}: ${stderr}`)));
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      const line = stderr.split('\n').find((l) => l.includes('"exporter listening"'));
      if (line === undefined) return;
      clearTimeout(timer);
      resolve(JSON.parse(line) as Ports);
    });
  });
  if (child.pid === undefined) throw new Error('the exporter has no pid');
  // The start-up round must not meet a fault meant for a row (nor leave a ping running into it).
  // A deadline for a loaded 2-CPU machine: the round itself is a ping that says SKIP at once.
  const roundBy = performance.now() + 30_000;
  while (!stderr.includes('"periodic round ended"') && performance.now() < roundBy) await sleep(50);
  if (!stderr.includes('"periodic round ended"')) throw new Error(`no start-up round: ${stderr}`);
  return { child, pid: child.pid, ports };
}

/** Runs the exporter to its end (a start-up that must fail). */
function runToExit(
  env: Record<string, string>,
  as?: { uid: number; gid: number },
): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, '--port', '0', '--w', '0'], {
      cwd: ROOT,
      env: baseEnv(env),
      stdio: ['ignore', 'ignore', 'pipe'],
      ...(as === undefined ? {} : { uid: as.uid, gid: as.gid }),
    });
    started.push(child);
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

async function getJson<T>(port: number, path: string, signal?: AbortSignal): Promise<T> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, {
    headers: AUTH,
    ...(signal === undefined ? {} : { signal }),
  });
  expect(response.status).toBe(200);
  return (await response.json()) as T;
}

/** An exporter on the C fakes of NVML and of the CUDA runtime, with the scenario in `env`. */
function startOnFakes(env: Record<string, string>): Promise<Running> {
  return startExporter({
    AUTOPILOT_NVML_LIBRARY: FAKE_NVML,
    AUTOPILOT_CUDA_PROBE_LIBRARY: FAKE_PROBE,
    ...env,
  });
}

function kill(exporter: Running): void {
  if (exporter.child.exitCode === null) exporter.child.kill('SIGKILL');
}

async function runCheck(exporter: Running, check: string): Promise<CheckResult> {
  const body = await getJson<{ results: CheckResult[] }>(
    exporter.ports.api,
    `/status?check=${check}&format=json`,
  );
  const result = body.results[0];
  if (result === undefined) throw new Error(`no result for ${check}: ${JSON.stringify(body)}`);
  return result;
}

/** One line per result, so that a row's expectation is one regular expression. */
function summary(result: CheckResult): string {
  const devices = result.devices.map((d) => `${d.id} ${d.verdict} ${d.reason}`);
  return [`${result.verdict}: ${result.reason}`, ...devices].join(' | ');
}

/** The readiness probe and /metrics answer within a second, whatever hangs. */
async function expectResponsive(exporter: Running): Promise<void> {
  const readiness = await fetch(`http://127.0.0.1:${exporter.ports.readiness}/readinessprobe`, {
    signal: AbortSignal.timeout(1000),
  });
  expect(readiness.status).toBe(201);
  const metrics = await fetch(`http://127.0.0.1:${exporter.ports.metrics}/metrics`, {
    signal: AbortSignal.timeout(1000),
  });
  expect(metrics.status).toBe(200);
  await metrics.text();
}

/** Children of pid, zombies included: a child the exporter did not reap is left behind too. */
function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // The command name may hold spaces and parentheses; the fields after the last ')' do not.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) children.push(Number(entry));
    } catch {
      // Gone while we looked.
    }
  }
  return children;
}

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Waits for the exporter to settle, then asserts it has no child and leaks no descriptor. */
async function expectClean(exporter: Running, fdsBefore: number): Promise<void> {
  const deadline = performance.now() + 15_000;
  while (
    performance.now() < deadline &&
    (childrenOf(exporter.pid).length > 0 || fdCount(exporter.pid) > fdsBefore + FD_TOLERANCE)
  ) {
    await sleep(50);
  }
  expect(exporter.child.exitCode).toBeNull();
  expect(childrenOf(exporter.pid)).toEqual([]);
  expect(fdCount(exporter.pid)).toBeLessThanOrEqual(fdsBefore + FD_TOLERANCE);
}

// ---------------------------------------------------------------------------------------------
// Executables: ping, dcgmi, iperf3

type ToolFault = 'hang' | 'crash (SIGSEGV)' | 'crash (exit 1)' | 'garbage' | 'missing' | 'no x bit';

describe('executables (ping, dcgmi, iperf3): one exporter, the tools swapped between rows', () => {
  let exporter: Running;
  let dir: string;
  const tools = { ping: '', dcgmi: '', iperf3: '' };
  const modeFile = (): string => join(dir, 'fault');
  const pidsFile = (): string => `${modeFile()}.pids`;

  /** Puts the fault in place of every tool: the same path, another file or none. */
  function install(fault: ToolFault): void {
    const mode: Record<ToolFault, string> = {
      hang: 'hang',
      'crash (SIGSEGV)': 'segv',
      'crash (exit 1)': 'exit1',
      garbage: 'garbage',
      missing: '',
      'no x bit': '',
    };
    writeFileSync(modeFile(), mode[fault]);
    writeFileSync(pidsFile(), '');
    for (const path of Object.values(tools)) {
      rmSync(path, { force: true });
      if (fault === 'missing') continue;
      if (fault === 'no x bit') {
        copyFileSync(MISBEHAVE, path);
        chmodSync(path, 0o644);
      } else {
        symlinkSync(MISBEHAVE, path);
      }
    }
  }

  /** "<pid> <grandchild pid>" per hung tool started since install(). */
  function hungPids(): number[] {
    return readFileSync(pidsFile(), 'utf8')
      .split(/\s+/)
      .filter((p) => p !== '')
      .map(Number);
  }

  /** Until `count` pids of hung tools are written (the fake writes its own and its grandchild's). */
  async function untilHung(count: number): Promise<void> {
    const deadline = performance.now() + 10_000;
    while (hungPids().length < count && performance.now() < deadline) await sleep(25);
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'autopilot-faults-'));
    tools.ping = join(dir, 'ping');
    tools.dcgmi = join(dir, 'dcgmi');
    tools.iperf3 = join(dir, 'iperf3');
    install('missing');
    exporter = await startExporter({
      AUTOPILOT_NVML_LIBRARY: '',
      AUTOPILOT_PEERS: '127.0.0.1',
      AUTOPILOT_PING_COUNT: '1',
      AUTOPILOT_PING_REPLY_TIMEOUT: '100ms',
      AUTOPILOT_PING_COMMAND: tools.ping,
      AUTOPILOT_DCGMI_COMMAND: tools.dcgmi,
      AUTOPILOT_IPERF_COMMAND: tools.iperf3,
      // dcgm's level 1 deadline is 5 min by default.
      // 8 s: the hung dcgmi must still run while the test looks at it, on a loaded machine too.
      AUTOPILOT_CHECK_TIMEOUTS: 'dcgm.1=8s',
      FAKE_FAULT_FILE: join(dir, 'fault'),
    });
  });

  afterAll(() => {
    kill(exporter);
    // After a failed row a hung tool may outlive its killed exporter: it is ours to end.
    for (const pid of hungPids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone, as it should be.
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  /** How each kind of call is made and summed up in one line. */
  const callers: Record<string, (e: Running) => Promise<string>> = {
    ping: async (e) => summary(await runCheck(e, 'ping')),
    dcgm: async (e) => summary(await runCheck(e, 'dcgm')),
    // Servers bind to every non-loopback IPv4 address; each one must fail the same way.
    'iperf3 server': async (e) => {
      const body = await getJson<{ servers: { ok: boolean; error?: string }[] }>(
        e.ports.api,
        '/iperfservers?numservers=1&startport=15200&lifetime=60&format=json',
      );
      expect(body.servers.length).toBeGreaterThan(0);
      return [...new Set(body.servers.map((s) => (s.ok ? 'ok' : `failed: ${s.error}`)))].join(
        ' | ',
      );
    },
    'iperf3 client': async (e) => {
      const body = await getJson<{ failed: number; clients: { ok: boolean; error?: string }[] }>(
        e.ports.api,
        '/iperfclients?dstip=127.0.0.1&dstport=15200&numclients=1&duration=1',
      );
      return `${body.failed} failed: ${body.clients.map((c) => c.error ?? 'ok').join(' | ')}`;
    },
  };

  // [caller, fault, expected summary]
  const rows: [string, ToolFault, RegExp][] = [
    [
      'ping',
      'crash (SIGSEGV)',
      /^ERROR: 1 ERROR \| 127\.0\.0\.1 ERROR ping was killed by SIGSEGV$/,
    ],
    [
      'ping',
      'crash (exit 1)',
      /^ERROR: 1 ERROR \| 127\.0\.0\.1 ERROR ping exited with 1 and printed no statistics$/,
    ],
    [
      'ping',
      'garbage',
      /^ERROR: 1 ERROR \| 127\.0\.0\.1 ERROR ping exited with 0 and printed no statistics$/,
    ],
    ['ping', 'missing', /^SKIP: \/.*\/ping is not installed$/],
    ['ping', 'no x bit', /^ERROR: 1 ERROR \| 127\.0\.0\.1 ERROR ping could not start \(EACCES\)$/],
    ['ping', 'hang', /^ERROR: 1 ERROR \| 127\.0\.0\.1 ERROR ping did not finish in time$/],
    ['dcgm', 'crash (SIGSEGV)', /^ERROR: \/.*\/dcgmi diag -r 1 was killed by SIGSEGV$/],
    ['dcgm', 'crash (exit 1)', /^ERROR: \/.*\/dcgmi diag -r 1 exited with 1 and printed nothing$/],
    [
      'dcgm',
      'garbage',
      /^ERROR: \/.*\/dcgmi diag -r 1 exited with 0 and printed no JSON document: /,
    ],
    ['dcgm', 'missing', /^SKIP: \/.*\/dcgmi is not installed$/],
    ['dcgm', 'no x bit', /^ERROR: \/.*\/dcgmi diag -r 1 could not start \(EACCES\)$/],
    ['iperf3 server', 'crash (SIGSEGV)', /^failed: iperf3 was killed by SIGSEGV$/],
    ['iperf3 server', 'crash (exit 1)', /^failed: iperf3 exited with code 1$/],
    ['iperf3 server', 'garbage', /^failed: iperf3 exited with code 0: /],
    ['iperf3 server', 'missing', /^failed: could not start iperf3: ENOENT$/],
    ['iperf3 server', 'no x bit', /^failed: could not start iperf3: EACCES$/],
    ['iperf3 server', 'hang', /^failed: iperf3 did not report listening within 5000 ms$/],
    ['iperf3 client', 'crash (SIGSEGV)', /^1 failed: iperf3 was killed by SIGSEGV$/],
    ['iperf3 client', 'crash (exit 1)', /^1 failed: iperf3 printed nothing$/],
    ['iperf3 client', 'garbage', /^1 failed: iperf3 output is not JSON: /],
    ['iperf3 client', 'missing', /^1 failed: could not start iperf3: ENOENT$/],
    ['iperf3 client', 'no x bit', /^1 failed: could not start iperf3: EACCES$/],
    // duration 1 s + 20 s: the client's deadline.
    ['iperf3 client', 'hang', /^1 failed: iperf3 timed out after 2\d{4} ms$/],
  ];

  test.each(rows)(
    '%s × %s',
    async (caller, fault, expected) => {
      install(fault);
      const call = callers[caller];
      if (call === undefined) throw new Error(`no caller ${caller}`);
      const fdsBefore = fdCount(exporter.pid);
      const pending = call(exporter);
      if (fault === 'hang') {
        // While the tool hangs, the exporter keeps answering.
        await untilHung(1);
        await expectResponsive(exporter);
        expect(hungPids().length).toBeGreaterThan(0);
      }
      expect(await pending).toMatch(expected);
      // The deadline killed the tool's whole process group, its grandchild included (SIGKILL
      // lands a moment after the answer may have gone out).
      for (const pid of hungPids()) expect(await waitUntilGone(pid)).toBe(true);
      await expectResponsive(exporter);
      await expectClean(exporter, fdsBefore);
    },
    // The client hang row takes its 21 s deadline: room for a loaded 2-CPU machine.
    90_000,
  );

  test('dcgm × hang: requests join the one run, ERROR at the deadline, the group killed', async () => {
    install('hang');
    const first = runCheck(exporter, 'dcgm');
    await untilHung(2);
    expect(hungPids()).toHaveLength(2);
    await expectResponsive(exporter);
    // A second request joins the running diagnostic instead of starting another dcgmi.
    await expect(
      fetch(`http://127.0.0.1:${exporter.ports.api}/status?check=dcgm&format=json`, {
        signal: AbortSignal.timeout(500),
      }),
    ).rejects.toThrow();
    expect(hungPids()).toHaveLength(2);
    expect(childrenOf(exporter.pid)).toHaveLength(1);
    expect(summary(await first)).toMatch(/^ERROR: \S+dcgmi diag -r 1 did not finish within 8 s$/);
    for (const pid of hungPids()) expect(await waitUntilGone(pid)).toBe(true);
    await expectResponsive(exporter);
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------
// Native libraries: NVML (remapped, gpupower, ecc, xid) and the CUDA probe (pciebw, gpumem)

/** The function each NVML check depends on alone, so that a fault hits that check only. */
const NVML_CALL: Record<string, string> = {
  remapped: 'nvmlDeviceGetRemappedRows',
  gpupower: 'nvmlDeviceGetCurrentClocksEventReasons',
  ecc: 'nvmlDeviceGetEccMode',
  xid: 'nvmlEventSetWait_v2',
};

function failEvery(code: number): string {
  return Object.values(NVML_CALL)
    .map((fn) => `fail=${fn}:${code}`)
    .join(';');
}

const GPU = (verdict: string, reason: string): string =>
  `0 ${verdict} ${reason} \\| 1 ${verdict} ${reason}`;

/** Both GPUs ERROR with the reason given (a regular expression's source). */
const BOTH_ERROR = (reason: string): RegExp =>
  RegExp(`^ERROR: 2 ERROR \\| ${GPU('ERROR', reason)}$`);

const NATIVE: {
  readonly fault: string;
  readonly env: Record<string, string>;
  readonly rows: readonly (readonly [string, RegExp])[];
}[] = [
  {
    fault: 'crash (NVML GPU_IS_LOST / UNKNOWN, cudaErrorUnknown)',
    env: {
      FAKE_NVML_SCENARIO: `gpus=2;${failEvery(999)};fail=nvmlDeviceGetRemappedRows:15`,
      FAKE_CUDA_SCENARIO: 'devices=2;error=999',
    },
    rows: [
      ['remapped', BOTH_ERROR('nvmlDeviceGetRemappedRows: GPU is lost \\(15\\)')],
      ['gpupower', BOTH_ERROR('nvmlDeviceGetCurrentClocksEventReasons: Unknown Error \\(999\\)')],
      ['ecc', BOTH_ERROR('nvmlDeviceGetEccMode: Unknown Error \\(999\\)')],
      ['xid', /^ERROR: the XID listener is failing: nvmlEventSetWait_v2: Unknown Error \(999\)$/],
      // pciebw reads every link through NVML before CUDA: the CUDA failure is each GPU's ERROR.
      ['pciebw', BOTH_ERROR('ap_device_count: unknown error \\(999\\)')],
      ['gpumem', /^ERROR: check crashed: ap_device_count: unknown error \(999\)$/],
    ],
  },
  {
    fault: 'garbage (a GPU name of quotes, backslashes, a newline and JSON)',
    env: {
      FAKE_NVML_SCENARIO: 'gpus=2;name=GPU "quoted" \\ back\nslash {"x":',
      FAKE_CUDA_SCENARIO: 'devices=2',
    },
    rows: [
      ['remapped', RegExp(`^PASS: 2 PASS \\| ${GPU('PASS', 'nothing pending .*')}$`)],
      ['gpupower', RegExp(`^PASS: 2 PASS \\| ${GPU('PASS', 'normal: gpu_idle')}$`)],
      ['ecc', RegExp(`^PASS: 2 PASS \\| ${GPU('PASS', 'no uncorrected ECC errors')}$`)],
      ['xid', RegExp(`^PASS: 2 PASS \\| ${GPU('PASS', 'no XID since the exporter started')}$`)],
      ['pciebw', /^PASS: 2 PASS \| 0 PASS h2d 54\.6 GB\/s, d2h 55\.1 GB\/s on Gen5 x16 \| 1 PASS /],
      ['gpumem', /^PASS: 2 PASS \| 0 PASS HBM 4260 GB\/s, .* \| 1 PASS /],
    ],
  },
  {
    fault: 'missing (the default libnvidia-ml.so.1 not found)',
    // Empty means the default name, which this machine (no NVIDIA driver) lacks.
    env: { AUTOPILOT_NVML_LIBRARY: '' },
    rows: ['remapped', 'gpupower', 'ecc', 'xid', 'pciebw', 'gpumem'].map(
      (check) =>
        [check, /^SKIP: cannot load libnvidia-ml\.so\.1: .*No such file or directory$/] as const,
    ),
  },
  {
    fault: 'permission denied (nvmlInit_v2 NO_PERMISSION)',
    env: { FAKE_NVML_SCENARIO: 'initfail=4' },
    rows: ['remapped', 'gpupower', 'ecc', 'xid', 'pciebw', 'gpumem'].map(
      (check) => [check, /^SKIP: nvmlInit_v2: Insufficient Permissions \(4\)$/] as const,
    ),
  },
  {
    fault: 'permission denied (every call: NVML NO_PERMISSION, cudaErrorNotPermitted)',
    env: {
      FAKE_NVML_SCENARIO: `gpus=2;${failEvery(4)}`,
      FAKE_CUDA_SCENARIO: 'devices=2;error=800',
    },
    rows: [
      ['remapped', BOTH_ERROR('nvmlDeviceGetRemappedRows: Insufficient Permissions \\(4\\)')],
      [
        'gpupower',
        BOTH_ERROR('nvmlDeviceGetCurrentClocksEventReasons: Insufficient Permissions \\(4\\)'),
      ],
      ['ecc', BOTH_ERROR('nvmlDeviceGetEccMode: Insufficient Permissions \\(4\\)')],
      [
        'xid',
        /^ERROR: the XID listener is failing: nvmlEventSetWait_v2: Insufficient Permissions \(4\)$/,
      ],
      ['pciebw', BOTH_ERROR('ap_device_count: operation not permitted \\(800\\)')],
      ['gpumem', /^ERROR: check crashed: ap_device_count: operation not permitted \(800\)$/],
    ],
  },
];

describe.each(NATIVE)('native libraries × $fault', ({ env, rows }) => {
  let exporter: Running;

  beforeAll(async () => {
    exporter = await startOnFakes({
      AUTOPILOT_NVML_CHECK_TIMEOUT: '2s',
      ...env,
    });
    // The XID listener's first wait (1 s) has to end before its failure shows.
    await sleep(1200);
  });

  afterAll(() => kill(exporter));

  test.each(rows)('%s', async (check, expected) => {
    const fdsBefore = fdCount(exporter.pid);
    expect(summary(await runCheck(exporter, check))).toMatch(expected);
    await expectResponsive(exporter);
    await expectClean(exporter, fdsBefore);
  });

  if (env.FAKE_NVML_SCENARIO?.includes('name=') === true) {
    test('the exposition stays valid: the name is escaped in every gpumodel label', async () => {
      const text = await (await fetch(`http://127.0.0.1:${exporter.ports.metrics}/metrics`)).text();
      const gpumodel = /gpumodel="((?:[^"\\]|\\.)*)"/.exec(text)?.[1];
      expect(gpumodel).toBe('GPU \\"quoted\\" \\\\ back\\nslash {\\"x\\":');
      for (const line of text.split('\n')) {
        if (line === '' || line.startsWith('#')) continue;
        expect(line).toMatch(/^[a-zA-Z_:][\w:]*(\{(\w+="(?:[^"\\\n]|\\.)*",?)*\})? \S+$/);
      }
    });
  }
});

describe('native libraries × hang: NVML (a call sleeps 2 s, past the 1 s deadline)', () => {
  let exporter: Running;

  beforeAll(async () => {
    exporter = await startOnFakes({
      AUTOPILOT_NVML_CHECK_TIMEOUT: '1s',
      // Every call of the function sleeps, not only the first: a driver stuck for good.
      FAKE_NVML_SCENARIO: `gpus=1;${['remapped', 'gpupower', 'ecc']
        .map((check) => `hang=${NVML_CALL[check]}:2000`)
        .join(';')}`,
    });
  });

  afterAll(() => kill(exporter));

  test.each(['remapped', 'gpupower', 'ecc'])(
    '%s: ERROR at the deadline, ERROR at once while the call hangs, a new run once it returned',
    async (check) => {
      const fdsBefore = fdCount(exporter.pid);
      const pending = runCheck(exporter, check);
      await sleep(500);
      await expectResponsive(exporter);
      expect(summary(await pending)).toBe('ERROR: timed out after 1s');
      const again = performance.now();
      expect(summary(await runCheck(exporter, check))).toMatch(
        /^ERROR: the previous run has not ended [\d.]+s after its deadline$/,
      );
      expect(performance.now() - again).toBeLessThan(1000);
      await expectResponsive(exporter);
      // When the hung call returns, the lane opens again: the next request runs the check anew
      // (and, the driver still hanging, times out anew).
      let last = '';
      for (let i = 0; i < 30 && last !== 'ERROR: timed out after 1s'; i++) {
        await sleep(100);
        last = summary(await runCheck(exporter, check));
      }
      expect(last).toBe('ERROR: timed out after 1s');
      // Let that call return too, so that the next row starts with NVML's call slots free.
      await sleep(1200);
      await expectClean(exporter, fdsBefore);
    },
    20_000,
  );
});

// pciebw's deadline is a fixed 120 s, gpumem's 900 s: the verdict at the deadline is out of reach
// here. What a hung probe must not do is stop the exporter, or (pciebw, which is not exclusive)
// the checks that only read NVML.
describe.each([
  ['pciebw', /^PASS: 1 PASS/],
  ['gpumem', undefined],
])(
  'native libraries × hang: CUDA probe under %s (every copy and kernel sleeps 60 s)',
  (check, nvmlOnly) => {
    let exporter: Running;

    beforeAll(async () => {
      exporter = await startOnFakes({
        AUTOPILOT_NVML_CHECK_TIMEOUT: '2s',
        // Their defaults are 2 and 15 minutes.
        AUTOPILOT_CHECK_TIMEOUTS: 'pciebw=3s,gpumem=3s',
        FAKE_NVML_SCENARIO: 'gpus=1',
        FAKE_CUDA_SCENARIO: 'devices=1;hang=60000',
      });
    });

    afterAll(() => kill(exporter));

    test('the exporter keeps answering while the probe hangs; ERROR at the deadline', async () => {
      const pending = fetch(
        `http://127.0.0.1:${exporter.ports.api}/status?check=${check}&format=json`,
        { headers: AUTH },
      ).then(async (response) => (await response.json()) as { results: CheckResult[] });
      let answered = false;
      void pending.then(() => (answered = true));
      await sleep(1000);
      await expectResponsive(exporter);
      if (nvmlOnly !== undefined) {
        for (const other of ['remapped', 'gpupower', 'ecc']) {
          expect(summary(await runCheck(exporter, other))).toMatch(nvmlOnly);
        }
      }
      const results = await fetch(`http://127.0.0.1:${exporter.ports.api}/results?format=json`, {
        signal: AbortSignal.timeout(1000),
      });
      expect(results.status).toBe(200);
      // The probe was hung all along, not done early.
      expect(answered).toBe(false);
      const result = (await pending).results[0];
      expect(result === undefined ? 'no result' : summary(result)).toBe(
        'ERROR: timed out after 3s',
      );
      await expectResponsive(exporter);
    });
  },
);

describe('native libraries × missing or unreadable, named explicitly: start-up stops', () => {
  let dir: string;

  beforeAll(() => {
    // Readable by nobody down to the directory; the library files themselves are not.
    dir = mkdtempSync(join(tmpdir(), 'autopilot-libs-'));
    chmodSync(dir, 0o755);
    for (const library of [FAKE_NVML, FAKE_PROBE]) {
      const copy = join(dir, library.split('/').at(-1) ?? 'lib.so');
      copyFileSync(library, copy);
      chmodSync(copy, 0o600);
    }
  });

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test.each([
    ['AUTOPILOT_NVML_LIBRARY', 'missing', '/nonexistent/libnvidia-ml.so.1', 'No such file'],
    [
      'AUTOPILOT_CUDA_PROBE_LIBRARY',
      'missing',
      '/nonexistent/libautopilot-probe.so',
      'No such file',
    ],
    ['AUTOPILOT_NVML_LIBRARY', 'unreadable', 'libnvidia-ml.so.1', 'Permission denied'],
    ['AUTOPILOT_CUDA_PROBE_LIBRARY', 'unreadable', 'libautopilot-probe.so', 'Permission denied'],
  ])(
    '%s %s: exit 2 naming the setting, the file and the cause',
    async (setting, _how, path, cause) => {
      const file = path.startsWith('/') ? path : join(dir, path);
      const unreadable = !path.startsWith('/');
      const result = await runToExit(
        {
          AUTOPILOT_NVML_LIBRARY: FAKE_NVML,
          AUTOPILOT_CUDA_PROBE_LIBRARY: FAKE_PROBE,
          [setting]: file,
        },
        // As root, chmod denies nothing.
        unreadable ? { uid: 65534, gid: 65534 } : undefined,
      );
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(
        RegExp(`^autopilot: invalid ${setting}: cannot load ${file}: .*${cause}`, 'm'),
      );
    },
  );
});

// ---------------------------------------------------------------------------------------------
// The Kubernetes API: pvc

type WireFault = 'hang' | 'reset' | 'garbage';

/**
 * Stands between the exporter and the fake API server, and answers requests that match the fault
 * rule in ways the fake server cannot: never, with a reset, with a body that is not JSON.
 */
class FaultyProxy {
  rule:
    { readonly fault: WireFault; readonly method: string; readonly pathPrefix: string } | undefined;
  readonly held = new Set<ServerResponse>();
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly upstream: URL) {
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('no proxy address');
    return `http://127.0.0.1:${address.port}`;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const rule = this.rule;
    if (
      rule !== undefined &&
      req.method === rule.method &&
      (req.url ?? '').startsWith(rule.pathPrefix)
    ) {
      if (rule.fault === 'hang') {
        this.held.add(res);
        res.on('close', () => this.held.delete(res));
      } else if (rule.fault === 'reset') {
        req.socket.destroy();
      } else {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end('{"kind": "StorageClass", "metadata": {"name": \u0000garbage');
      }
      return;
    }
    const forward = httpRequest(
      {
        host: this.upstream.hostname,
        port: this.upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    forward.on('error', () => res.destroy());
    res.on('close', () => forward.destroy());
    req.pipe(forward);
  }
}

describe('Kubernetes API (pvc): a proxy corrupts the read of the StorageClass', () => {
  const NAMESPACE = 'autopilot';
  const CLAIM = 'autopilot-fault';
  const STORAGE_CLASS_PATH = '/apis/storage.k8s.io/v1/storageclasses/standard';
  let api: FakeKubeApi;
  let proxy: FaultyProxy;
  let dir: string;
  let exporter: Running;

  beforeAll(async () => {
    api = await startFakeKubeApi();
    api.addNode({ name: 'fault-node' });
    api.addStorageClass('standard');
    api.addToken(TOKEN, { username: 'alice', groups: ['sre'] });
    api.allow({
      group: 'sre',
      verb: 'create',
      resource: 'healthchecks',
      apiGroup: 'autopilot.ibm.com',
    });
    proxy = new FaultyProxy(new URL(api.url));
    const url = await proxy.listen();
    dir = mkdtempSync(join(tmpdir(), 'autopilot-kube-'));
    const kubeconfig = writeKubeconfig(dir, url);
    exporter = await startExporter({
      KUBECONFIG: kubeconfig,
      NAMESPACE,
      POD_NAME: CLAIM,
      AUTOPILOT_NVML_LIBRARY: '',
      AUTOPILOT_KUBE_TIMEOUT: '1s',
      PVC_TEST_STORAGE_CLASS: 'standard',
      AUTOPILOT_PVC_BIND_TIMEOUT: '5s',
    });
  }, 30_000);

  afterAll(async () => {
    kill(exporter);
    await proxy.close();
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const pvc = async (): Promise<CheckResult> => {
    const body = await getJson<{ results: CheckResult[] }>(
      exporter.ports.api,
      '/status?host=fault-node&check=pvc&format=json',
    );
    const result = body.results[0];
    if (result === undefined) throw new Error(`no pvc result: ${JSON.stringify(body)}`);
    return result;
  };

  test('without a fault: PASS, the claim bound and deleted', async () => {
    expect(summary(await pvc())).toMatch(/^PASS: claim autopilot\/autopilot-fault bound in /);
    expect(api.pvc(NAMESPACE, CLAIM)).toBeUndefined();
  });

  const inject: Record<string, () => void> = {
    hang: () => (proxy.rule = { fault: 'hang', method: 'GET', pathPrefix: STORAGE_CLASS_PATH }),
    'crash (connection reset)': () =>
      (proxy.rule = { fault: 'reset', method: 'GET', pathPrefix: STORAGE_CLASS_PATH }),
    'crash (500)': () =>
      api.failNext({ method: 'GET', pathPrefix: STORAGE_CLASS_PATH, status: 500 }),
    'garbage (a 200 that is not JSON)': () =>
      (proxy.rule = { fault: 'garbage', method: 'GET', pathPrefix: STORAGE_CLASS_PATH }),
    'missing (404)': () =>
      api.failNext({ method: 'GET', pathPrefix: STORAGE_CLASS_PATH, status: 404 }),
    'permission denied (403)': () =>
      api.failNext({ method: 'GET', pathPrefix: STORAGE_CLASS_PATH, status: 403 }),
  };

  test.each([
    ['hang', /^ERROR: read storageclass standard: no answer within 1 s$/],
    ['crash (connection reset)', /^ERROR: read storageclass standard: socket hang up$/],
    ['crash (500)', /^ERROR: read storageclass standard: 500 injected failure 500$/],
    [
      'garbage (a 200 that is not JSON)',
      /^ERROR: read storageclass standard: .* is not valid JSON$/s,
    ],
    // The device of the node, id "".
    [
      'missing (404)',
      /^FAIL: StorageClass standard does not exist \| {2}FAIL StorageClass standard/,
    ],
    ['permission denied (403)', /^ERROR: read storageclass standard: 403 injected failure 403$/],
  ])('pvc × %s', async (fault, expected) => {
    const fdsBefore = fdCount(exporter.pid);
    inject[fault]?.();
    try {
      const pending = pvc();
      if (fault === 'hang') {
        // Authorising the caller comes first (TokenReview, SubjectAccessReview).
        for (let i = 0; i < 40 && proxy.held.size === 0; i++) await sleep(25);
        expect(proxy.held.size).toBe(1);
        await expectResponsive(exporter);
      }
      expect(summary(await pending)).toMatch(expected);
    } finally {
      proxy.rule = undefined;
      api.clearFaults();
    }
    // The exporter gave up on the hung request and closed its connection (which the proxy may
    // learn a moment after the answer).
    for (let i = 0; i < 40 && proxy.held.size > 0; i++) await sleep(25);
    expect(proxy.held.size).toBe(0);
    expect(api.pvc(NAMESPACE, CLAIM)).toBeUndefined();
    await expectResponsive(exporter);
    await expectClean(exporter, fdsBefore);
    // And the next run, the fault gone, passes again.
    expect((await pvc()).verdict).toBe('PASS');
  });
});

describe('native libraries × hang: shutting down', () => {
  // libuv joins its worker threads as the process exits, so a driver call hung on one would hold
  // even process.exit() for as long as it hangs; the exporter ends itself with SIGKILL instead.
  test('SIGTERM while an NVML call hangs ends the process within the grace', async () => {
    const exporter = await startOnFakes({
      AUTOPILOT_NVML_CHECK_TIMEOUT: '1s',
      FAKE_NVML_SCENARIO: 'gpus=1;hang=nvmlDeviceGetRemappedRows:60000',
    });
    try {
      expect(summary(await runCheck(exporter, 'remapped'))).toBe('ERROR: timed out after 1s');
      const exited = new Promise<NodeJS.Signals | null>((resolve) =>
        exporter.child.once('exit', (_code, signal) => resolve(signal)),
      );
      const sent = performance.now();
      exporter.child.kill('SIGTERM');
      expect(await exited).toBe('SIGKILL');
      // The shutdown grace is 10 s; the hung call would have held the process for 59 s more.
      expect(performance.now() - sent).toBeLessThan(30_000);
    } finally {
      if (exporter.child.exitCode === null && exporter.child.signalCode === null) {
        exporter.child.kill('SIGKILL');
      }
    }
  }, 60_000);

  test('xid × hang: a listener wait stuck in the driver is ERROR, and SIGTERM still ends it', async () => {
    const exporter = await startOnFakes({
      FAKE_NVML_SCENARIO: 'gpus=1;hang=nvmlEventSetWait_v2:120000',
    });
    try {
      // The listener's first wait hangs from start-up; past 10 s it counts as stuck.
      await sleep(11_500);
      await expectResponsive(exporter);
      expect(summary(await runCheck(exporter, 'xid'))).toMatch(
        /^ERROR: the XID listener is failing: nvmlEventSetWait_v2 has not returned for 1\d s \(a wait lasts 1 s\): the driver may be hung$/,
      );
      const exited = new Promise<NodeJS.Signals | null>((resolve) =>
        exporter.child.once('exit', (_code, signal) => resolve(signal)),
      );
      exporter.child.kill('SIGTERM');
      expect(await exited).toBe('SIGKILL');
    } finally {
      if (exporter.child.exitCode === null && exporter.child.signalCode === null) {
        exporter.child.kill('SIGKILL');
      }
    }
    // 32 s measured (11.5 s of waiting, then the 10 s shutdown grace and more).
  }, 120_000);
});
