/**
 * The built exporter as an operator runs it (node dist/exporter/main.js, what `npm start` runs):
 * a real process, real ping, real ports.
 */

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { waitForListening } from '../fakes/exporter-ports.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
const FIXTURES = join(ROOT, 'test', 'fixtures', 'ping', 'iputils-20221126');

function baseEnv(extra: Record<string, string>): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', ...extra };
}

interface Finished {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function runToEnd(args: string[], env: Record<string, string>): Promise<Finished> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function waitFor(url: string, status: number, withinMs: number): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < withinMs) {
    try {
      const response = await fetch(url);
      if (response.status === status) return Date.now() - started;
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${url} did not answer ${status} within ${withinMs} ms`);
}

beforeAll(() => {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
}, 60_000);

describe('exporter process (serve)', () => {
  let exporter: ChildProcess;
  let stderr = '';
  const ports = { api: 0, metrics: 0, readiness: 0 };

  beforeAll(async () => {
    // Port 0 everywhere: each listener takes a free port and the log line says which.
    exporter = spawn(process.execPath, [MAIN, '--port', '0', '--w', '1h'], {
      env: baseEnv({
        NODE_NAME: 'e2e-node',
        AUTOPILOT_PEERS: '127.0.0.1',
        AUTOPILOT_METRICS_PORT: '0',
        AUTOPILOT_READINESS_PORT: '0',
        AUTOPILOT_LISTEN_ADDRESS: '127.0.0.1',
      }),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    await waitForListening(exporter, ports, (all) => (stderr = all));
  });

  afterAll(() => {
    if (exporter.exitCode === null) exporter.kill('SIGKILL');
  });

  test('the readiness probe answers 201 within 15 s', async () => {
    await waitFor(`http://127.0.0.1:${ports.readiness}/readinessprobe`, 201, 15_000);
    const response = await fetch(`http://127.0.0.1:${ports.readiness}/readinessprobe`);
    expect(await response.text()).toBe('{"Name":"readinessProbe","Body":"ready"}\n');
  });

  test('/metrics carries the compatibility gauge for ping after the start-up round', async () => {
    let text = '';
    // Room for a loaded machine: the round's ping takes a few seconds of its own.
    const deadline = performance.now() + 30_000;
    while (!text.includes('deviceid="127.0.0.1"') && performance.now() < deadline) {
      text = await (await fetch(`http://127.0.0.1:${ports.metrics}/metrics`)).text();
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(text).toMatch(
      /^autopilot_health_checks\{health="ping",node="e2e-node",cpumodel="[^"]*",gpumodel="N\/A",deviceid="127\.0\.0\.1"\} 0$/m,
    );
    expect(text).toContain('autopilot_check_runs_total{check="ping",verdict="PASS"} 1');
  });

  test('/status runs a ping and answers in Autopilot text', async () => {
    const response = await fetch(`http://127.0.0.1:${ports.api}/status?host=e2e-node&check=ping`);
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text).toContain('Node 127.0.0.1 127.0.0.1 default 0\n');
    expect(text).toContain('[PING] all nodes reachable. success\n');
  });

  test('/status answers JSON with format=json', async () => {
    const response = await fetch(
      `http://127.0.0.1:${ports.api}/status?host=e2e-node&check=ping&format=json`,
    );
    const body = (await response.json()) as {
      node: string;
      health: { state: string };
      results: {
        check: string;
        verdict: string;
        devices: { id: string; evidence: { received: number } }[];
      }[];
    };
    expect(body.node).toBe('e2e-node');
    expect(body.health.state).toBe('PASS');
    expect(body.results[0]).toMatchObject({ check: 'ping', verdict: 'PASS' });
    expect(body.results[0]?.devices[0]).toMatchObject({
      id: '127.0.0.1',
      evidence: { received: 3 },
    });
  });

  test('a bad request gets a 400 and the exporter keeps serving', async () => {
    const response = await fetch(`http://127.0.0.1:${ports.api}/status?check=nope`);
    expect(response.status).toBe(400);
    expect(await response.text()).toBe(
      'error: unknown check "nope"; known checks: pciebw, remapped, dcgm, gpupower, gpucount, ecc, xid, nvlink, gpumem, p2pbw, ping, pvc, iperf, all\n',
    );
    expect((await fetch(`http://127.0.0.1:${ports.readiness}/readinessprobe`)).status).toBe(201);
  });

  test('logs are JSON lines, and SIGTERM stops it cleanly', async () => {
    const exited = new Promise<number | null>((resolve) =>
      exporter.on('exit', (code) => resolve(code)),
    );
    exporter.kill('SIGTERM');
    expect(await exited).toBe(0);
    const lines = stderr.trim().split('\n');
    for (const line of lines) expect(() => JSON.parse(line) as unknown).not.toThrow();
    expect(lines.map((line) => (JSON.parse(line) as { msg: string }).msg)).toEqual(
      expect.arrayContaining(['exporter listening', 'check finished', 'shutting down']),
    );
  });
});

describe('exporter process (errors and the check command)', () => {
  test('a bad setting stops it with exit code 2 and one message naming it', async () => {
    const result = await runToEnd(['--w', '12x'], baseEnv({}));
    expect(result.code).toBe(2);
    expect(result.stderr).toBe(
      'autopilot: invalid --w "12x": expected a Go duration of at least 1s such as 1h, 30m, 90s or 1h30m, a whole number of hours as Autopilot 2.1 took it (1 is 1h), 0 to disable, or a cron expression such as "0 * * * *"\nRun "autopilot --help" for usage.\n',
    );
  });

  test('an unknown check in PERIODIC_CHECKS is an error', async () => {
    const result = await runToEnd([], baseEnv({ PERIODIC_CHECKS: 'ping,nonsense' }));
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('PERIODIC_CHECKS');
    expect(result.stderr).toContain('nonsense');
  });

  test('check prints a table and exits 0 when nothing failed', async () => {
    const result = await runToEnd(['check', 'ping'], baseEnv({ AUTOPILOT_PEERS: '127.0.0.1' }));
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(
      /^CHECK +DEVICE +VERDICT +REASON\nping +127\.0\.0\.1 +PASS +3\/3 replies/,
    );
  });

  test('check exits 1 when a peer is unreachable', async () => {
    const result = await runToEnd(
      ['check', 'ping'],
      baseEnv({
        AUTOPILOT_PEERS: 'node-b',
        AUTOPILOT_PING_COMMAND: join(ROOT, 'test', 'fakes', 'bin', 'fake-ping'),
        FAKE_PING_OUTPUT: join(FIXTURES, 'no-reply.txt'),
        FAKE_PING_EXIT: '1',
      }),
    );
    expect(result.code).toBe(1);
    expect(result.stdout).toContain(
      'ping   node-b  FAIL     unreachable: no reply to 12 echo requests',
    );
  });

  test('check with an unknown name is a usage error', async () => {
    const result = await runToEnd(['check', 'nope'], baseEnv({}));
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('unknown check "nope"');
  });

  test('--help works even when the environment holds a bad setting', async () => {
    const result = await runToEnd(['--help'], baseEnv({ PERIODIC_CHECKS: 'nonsense' }));
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('Usage:');
  });

  // Each listener's port in turn is the busy one; the other two are free (0).
  test.each([
    ['--port', 'AUTOPILOT_METRICS_PORT', 'AUTOPILOT_READINESS_PORT'],
    ['AUTOPILOT_METRICS_PORT', '--port', 'AUTOPILOT_READINESS_PORT'],
    ['AUTOPILOT_READINESS_PORT', '--port', 'AUTOPILOT_METRICS_PORT'],
  ])('a port in use is one line naming its setting (%s) and exit code 1', async (busy, ...free) => {
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const address = blocker.address();
    const port = typeof address === 'object' && address !== null ? address.port : 0;
    const value = (setting: string): string => (setting === busy ? String(port) : '0');
    try {
      const result = await runToEnd(
        ['--port', value('--port')],
        baseEnv({
          AUTOPILOT_METRICS_PORT: value('AUTOPILOT_METRICS_PORT'),
          AUTOPILOT_READINESS_PORT: value('AUTOPILOT_READINESS_PORT'),
          AUTOPILOT_LISTEN_ADDRESS: '127.0.0.1',
        }),
      );
      expect(result.code).toBe(1);
      // Log lines (JSON) may come first; the error is the one line of plain text.
      const plain = result.stderr
        .split('\n')
        .filter((line) => line !== '' && !line.startsWith('{'));
      expect(plain).toEqual([`autopilot: port ${port} is in use: set ${busy} to a free port`]);
      for (const setting of free) expect(plain[0]).not.toContain(setting);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });

  test('--help describes the commands and flags', async () => {
    const result = await runToEnd(['--help'], baseEnv({}));
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('autopilot check <checks…>');
    expect(result.stdout).toContain('--invasive-check-timer');
  });
});
