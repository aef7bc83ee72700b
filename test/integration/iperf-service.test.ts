import { describe, test, expect, afterAll, afterEach } from '@jest/globals';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRunCommand } from '../../exporter/exec/run-command.js';
import { createStartProcess } from '../../exporter/exec/start-process.js';
import { createIperfService } from '../../exporter/network/iperf-service.js';
import type { IperfService, LocalAddress } from '../../exporter/network/iperf-service.js';
import { silentLogger } from '../../exporter/log.js';

// Real iperf3 (3.12 on Debian 12) on loopback only.

const PATH = process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin';
const baseEnv = { PATH };
const LOOPBACK: LocalAddress = { interface: 'lo', address: '127.0.0.1' };
const scratch = mkdtempSync(join(tmpdir(), 'autopilot-iperf-service-'));

const services: IperfService[] = [];
function newService(command = 'iperf3', readyTimeoutMs?: number): IperfService {
  const service = createIperfService({
    startProcess: createStartProcess({ baseEnv }),
    runCommand: createRunCommand({ baseEnv }),
    command,
    logger: silentLogger,
    ...(readyTimeoutMs === undefined ? {} : { readyTimeoutMs }),
  });
  services.push(service);
  return service;
}

afterEach(async () => {
  await Promise.all(services.map((s) => s.stopServers()));
});

afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

/** iperf3 processes whose parent is this test process: the service's servers and clients. */
function ourIperf3Pids(): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .flatMap((name) => {
      try {
        const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
        const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
        const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        return comm === 'iperf3' && Number(ppid) === process.pid && state !== 'Z'
          ? [Number(name)]
          : [];
      } catch {
        return []; // gone while we looked
      }
    });
}

function listen(port: number): Promise<Server | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(undefined));
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

const close = (server: Server): Promise<void> =>
  new Promise((resolve) => server.close(() => resolve()));

/**
 * `count` consecutive ports on 127.0.0.1 that nobody holds right now, from a range that depends on
 * the pid so that parallel jest workers rarely look at the same ports.
 */
async function freePorts(count: number): Promise<number> {
  let base = 20_000 + ((process.pid * 7) % 10_000);
  for (let attempt = 0; attempt < 50; attempt += 1, base += 97) {
    const held = await Promise.all(Array.from({ length: count }, (_, i) => listen(base + i)));
    await Promise.all(held.flatMap((s) => (s === undefined ? [] : [close(s)])));
    if (held.every((s) => s !== undefined)) return base;
  }
  throw new Error('no free port range on 127.0.0.1');
}

const never = new AbortController().signal;

/** A new service that has started `numservers` servers on loopback, from a free port up. */
async function serversOnLoopback(numservers: number, lifetimeMs = 60_000) {
  const service = newService();
  const port = await freePorts(numservers);
  const starts = await service.startServers({
    addresses: [LOOPBACK],
    numservers,
    startport: port,
    lifetimeMs,
  });
  return { service, port, starts };
}

/** One 1-second client against the first server of `port`. */
const runOne = (service: ReturnType<typeof newService>, port: number) =>
  service.runClients({
    dstip: '127.0.0.1',
    dstport: port,
    numclients: 1,
    durationSeconds: 1,
    signal: never,
  });

describe('iperf service on 127.0.0.1', () => {
  test('two servers, two clients for 1 s, then stopServers leaves no iperf3 of ours', async () => {
    const { service, port, starts } = await serversOnLoopback(2);
    expect(starts).toStrictEqual([
      {
        interface: 'lo',
        address: '127.0.0.1',
        port,
        ok: true,
        error: undefined,
        pid: expect.any(Number),
      },
      {
        interface: 'lo',
        address: '127.0.0.1',
        port: port + 1,
        ok: true,
        error: undefined,
        pid: expect.any(Number),
      },
    ]);
    const pids = starts.map((s) => s.pid as number);
    expect(ourIperf3Pids()).toEqual(expect.arrayContaining(pids));
    expect(service.servers().map((s) => s.port)).toStrictEqual([port, port + 1]);

    const clients = await service.runClients({
      dstip: '127.0.0.1',
      dstport: port,
      numclients: 2,
      durationSeconds: 1,
      signal: never,
    });
    expect(clients.failed).toBe(0);
    expect(clients.runs.map((r) => r.port)).toStrictEqual([port, port + 1]);
    for (const run of clients.runs) {
      expect(run.outcome).toMatchObject({ ok: true });
      if (!run.outcome.ok) continue;
      expect(run.outcome.receivedBitsPerSecond).toBeGreaterThan(0);
      expect(run.outcome.receivedBytes).toBeGreaterThan(0);
      expect(run.outcome.seconds).toBeGreaterThan(0.9);
    }
    const sum = clients.runs.reduce(
      (t, r) => t + (r.outcome.ok ? r.outcome.receivedBitsPerSecond : 0),
      0,
    );
    expect(clients.totalBitsPerSecond).toBe(sum);
    expect(clients.totalBitsPerSecond).toBeGreaterThan(0);

    expect(await service.stopServers()).toBe(2);
    expect(service.servers()).toStrictEqual([]);
    expect(ourIperf3Pids()).toStrictEqual([]);
    expect(await service.stopServers()).toBe(0);
  });

  test('a client to a port without a server fails with iperf3 own words', async () => {
    const service = newService();
    const port = await freePorts(1);
    const clients = await service.runClients({
      dstip: '127.0.0.1',
      dstport: port,
      numclients: 1,
      durationSeconds: 1,
      signal: never,
    });
    expect(clients).toStrictEqual({
      runs: [
        { port, outcome: { ok: false, error: 'unable to connect to server: Connection refused' } },
      ],
      totalBitsPerSecond: 0,
      failed: 1,
    });
  });

  test('a port already taken is reported, the free one still starts', async () => {
    const service = newService();
    const port = await freePorts(2);
    const squatter = await listen(port);
    expect(squatter).toBeDefined();
    try {
      const starts = await service.startServers({
        addresses: [LOOPBACK],
        numservers: 2,
        startport: port,
        lifetimeMs: 60_000,
      });
      expect(starts[0]).toMatchObject({ port, ok: false, pid: undefined });
      expect(starts[0]?.error).toMatch(
        /^iperf3 exited with code 1: .*unable to start listener for connections: Address already in use/,
      );
      expect(starts[1]).toMatchObject({ port: port + 1, ok: true, error: undefined });
      expect(service.servers().map((s) => s.port)).toStrictEqual([port + 1]);
    } finally {
      if (squatter !== undefined) await close(squatter);
    }
  });

  test('starting again on the same address and port replaces our earlier server', async () => {
    const service = newService();
    const port = await freePorts(1);
    const request = { addresses: [LOOPBACK], numservers: 1, startport: port, lifetimeMs: 60_000 };
    const [first] = await service.startServers(request);
    const [second] = await service.startServers(request);
    expect(first?.ok).toBe(true);
    expect(second?.ok).toBe(true);
    expect(second?.pid).not.toBe(first?.pid);
    expect(ourIperf3Pids()).toStrictEqual([second?.pid]);
    expect(service.servers()).toHaveLength(1);
  });

  test('a server stops by itself when its lifetime ends', async () => {
    const {
      service,
      starts: [server],
    } = await serversOnLoopback(1, 400);
    expect(server?.ok).toBe(true);
    expect(service.servers()).toHaveLength(1);
    const deadline = performance.now() + 15_000;
    while (service.servers().length > 0 && performance.now() < deadline) await sleep(25);
    expect(service.servers()).toStrictEqual([]);
    expect(ourIperf3Pids()).toStrictEqual([]);
    expect(await service.stopServers()).toBe(0);
  });

  test('abort kills running clients at once, and the servers serve the next client', async () => {
    const { service, port, starts } = await serversOnLoopback(2);
    expect(starts.every((s) => s.ok)).toBe(true);
    const serverPids = starts.map((s) => s.pid);

    const controller = new AbortController();
    const running = service.runClients({
      dstip: '127.0.0.1',
      dstport: port,
      numclients: 2,
      durationSeconds: 30,
      signal: controller.signal,
    });
    // Both clients running (they start in parallel; a loaded machine may take a while).
    const clientPids = (): number[] => ourIperf3Pids().filter((pid) => !serverPids.includes(pid));
    const deadline = performance.now() + 10_000;
    while (clientPids().length < 2 && performance.now() < deadline) await sleep(25);
    expect(clientPids()).toHaveLength(2);
    // Into their test, so that the servers are mid-test when the clients die.
    await sleep(400);
    const began = performance.now();
    controller.abort();
    const aborted = await running;
    // At once, not at the end of the clients' 30 s, with room for a loaded machine.
    expect(performance.now() - began).toBeLessThan(5000);
    expect(aborted.failed).toBe(2);
    expect(aborted.runs.map((r) => r.outcome)).toStrictEqual([
      { ok: false, error: 'aborted' },
      { ok: false, error: 'aborted' },
    ]);
    expect(ourIperf3Pids().sort()).toStrictEqual([...serverPids].sort());

    // A server whose client was killed mid-test must not stay "busy running a test". It sees the
    // killed client's connections close at once on an idle machine; under load that may take a
    // moment, and the server's --rcv-timeout (10 s) bounds it: a client within it must succeed.
    const until = performance.now() + 12_000;
    let next = await runOne(service, port);
    while (next.failed > 0 && performance.now() < until) {
      await sleep(500);
      next = await runOne(service, port);
    }
    expect(next.failed).toBe(0);
  });

  test('a command that never says it listens is stopped and reported', async () => {
    const silent = join(scratch, 'silent-iperf3');
    writeFileSync(silent, '#!/bin/sh\nexec sleep 30\n');
    chmodSync(silent, 0o755);
    const service = newService(silent, 300);
    const [start] = await service.startServers({
      addresses: [LOOPBACK],
      numservers: 1,
      startport: 5201,
      lifetimeMs: 60_000,
    });
    expect(start).toMatchObject({
      ok: false,
      error: 'iperf3 did not report listening within 300 ms',
    });
    expect(service.servers()).toStrictEqual([]);
  });

  test('a missing iperf3 is reported for servers and clients alike', async () => {
    const service = newService(join(scratch, 'no-iperf3'));
    const [start] = await service.startServers({
      addresses: [LOOPBACK],
      numservers: 1,
      startport: 5201,
      lifetimeMs: 60_000,
    });
    expect(start).toMatchObject({ ok: false, error: 'could not start iperf3: ENOENT' });
    const clients = await service.runClients({
      dstip: '127.0.0.1',
      dstport: 5201,
      numclients: 1,
      durationSeconds: 1,
      signal: never,
    });
    expect(clients.runs[0]?.outcome).toStrictEqual({
      ok: false,
      error: 'could not start iperf3: ENOENT',
    });
  });

  test('requests out of range are refused before anything starts', async () => {
    const service = newService();
    const servers = (numservers: number, startport: number) =>
      service.startServers({ addresses: [LOOPBACK], numservers, startport, lifetimeMs: 1000 });
    await expect(servers(65, 5200)).rejects.toThrow(RangeError);
    await expect(servers(2, 65535)).rejects.toThrow(RangeError);
    await expect(servers(1, 0)).rejects.toThrow(RangeError);
    const clients = (numclients: number, dstport: number) =>
      service.runClients({
        dstip: '127.0.0.1',
        dstport,
        numclients,
        durationSeconds: 1,
        signal: never,
      });
    await expect(clients(0, 5200)).rejects.toThrow(RangeError);
    await expect(clients(2, 65535)).rejects.toThrow(RangeError);
    expect(ourIperf3Pids()).toStrictEqual([]);
    expect(await servers(0, 5200)).toStrictEqual([]);
  });
});
