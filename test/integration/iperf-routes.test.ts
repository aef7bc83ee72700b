/**
 * Autopilot's node-local iperf endpoints (/iperfservers, /iperfclients, /iperfstopservers) on the
 * real API app, with a static bearer token and a fake iperf service that records exactly what
 * reached it: nothing a caller sends may get there unchecked.
 */

import { describe, expect, test } from '@jest/globals';
import { once } from 'node:events';
import { createServer, get } from 'node:http';
import type { AddressInfo } from 'node:net';
import type Koa from 'koa';
import request from 'supertest';
import type { Response } from 'supertest';
import { MISSING_TOKEN_MESSAGE, openAccessHint } from '../../exporter/api/auth.js';
import type {
  ClientRun,
  ClientsOutcome,
  ClientsRequest,
  IperfService,
  ServerStart,
  ServersRequest,
} from '../../exporter/network/iperf-service.js';
import { clientsToAutopilotJson, summariseClients } from '../../exporter/network/iperf-service.js';
import type { PodInterface } from '../../exporter/network/interfaces.js';
import { apiAppOver } from '../fakes/api-app.js';
import { createRealRunner } from '../fakes/checks.js';

const NODE = 'node-a';
const POD = 'autopilot-healthchecks-x7k2p';
const TOKEN = 'standalone-secret';
const AUTH = { Authorization: `Bearer ${TOKEN}` };
const TEXT = 'text/plain; charset=utf-8';
const JSON_TYPE = 'application/json; charset=utf-8';

const LOCAL: readonly PodInterface[] = [
  { name: 'eth0', address: '10.128.0.5' },
  { name: 'net1-0', address: '192.168.10.5' },
];

interface ClientsCall {
  readonly request: Omit<ClientsRequest, 'signal'>;
  readonly signal: AbortSignal;
  readonly abortedWhenCalled: boolean;
}

interface FakeService extends IperfService {
  readonly serverRequests: ServersRequest[];
  readonly clientCalls: ClientsCall[];
  stopCalls: number;
}

const BIND_FAILURE =
  'iperf3 exited with code 1: iperf3: error - unable to start listener for connections: Address already in use';

/** Servers start on every address and port, except net1-0's second port; clients move 3 + 4 Gb/s. */
function fakeService(outcome: ClientsOutcome = twoClients()): FakeService {
  const fake: FakeService = {
    serverRequests: [],
    clientCalls: [],
    stopCalls: 0,
    startServers(req) {
      fake.serverRequests.push(req);
      return Promise.resolve(
        req.addresses.flatMap((local) =>
          Array.from({ length: req.numservers }, (_, i): ServerStart => {
            const failing = local.interface === 'net1-0' && i === 1;
            return {
              interface: local.interface,
              address: local.address,
              port: req.startport + i,
              ok: !failing,
              error: failing ? BIND_FAILURE : undefined,
              pid: failing ? undefined : 4000 + i,
            };
          }),
        ),
      );
    },
    runClients({ signal, ...rest }) {
      fake.clientCalls.push({ request: rest, signal, abortedWhenCalled: signal.aborted });
      return Promise.resolve(outcome);
    },
    stopServers() {
      fake.stopCalls += 1;
      return Promise.resolve(3);
    },
    servers: () => [],
  };
  return fake;
}

function twoClients(): ClientsOutcome {
  const client = (port: number, bits: number): ClientRun => ({
    port,
    outcome: {
      ok: true,
      receivedBitsPerSecond: bits,
      sentBitsPerSecond: bits + 1e7,
      receivedBytes: (bits / 8) * 5,
      sentBytes: ((bits + 1e7) / 8) * 5,
      retransmits: 12,
      seconds: 5,
    },
  });
  return summariseClients([client(5200, 3e9), client(5201, 4e9)]);
}

interface Rig {
  readonly app: Koa;
  readonly service: FakeService;
  get(path: string, headers?: Readonly<Record<string, string>>): Promise<Response>;
}

function setup(options: { service?: FakeService; withIperf?: boolean } = {}): Rig {
  const service = options.service ?? fakeService();
  const real = createRealRunner([]);
  const app = apiAppOver(
    real,
    { nodeName: NODE, token: TOKEN, periodicChecks: [] },
    options.withIperf === false
      ? {}
      : { iperf: { service, localAddresses: () => LOCAL, podName: POD, nodeName: NODE } },
  );
  return {
    app,
    service,
    get: (path, headers = {}) => {
      let req = request(app.callback()).get(path);
      for (const [name, value] of Object.entries(headers)) req = req.set(name, value);
      return req.then((response) => response);
    },
  };
}

/** A refused request reaches nothing: no server, no client, no stop. */
function expectUntouched(service: FakeService): void {
  expect(service.serverRequests).toEqual([]);
  expect(service.clientCalls).toEqual([]);
  expect(service.stopCalls).toBe(0);
}

describe('without the iperf deps', () => {
  test.each(['/iperfservers', '/iperfclients', '/iperfstopservers'])('%s is 404', async (path) => {
    const rig = setup({ withIperf: false });
    expect((await rig.get(path, AUTH)).status).toBe(404);
  });
});

describe('authorisation', () => {
  test.each([
    '/iperfservers',
    '/iperfclients?dstip=10.0.0.7&dstport=5200&numclients=2',
    '/iperfstopservers',
  ])('%s without a token is 401 and touches nothing', async (path) => {
    const rig = setup();
    const response = await rig.get(path);
    expect(response.status).toBe(401);
    expect(response.headers['www-authenticate']).toBe('Bearer');
    expect(response.text).toBe(`error: ${MISSING_TOKEN_MESSAGE}; ${openAccessHint('iperf')}\n`);
    expectUntouched(rig.service);
  });

  test('a wrong token is 401 too', async () => {
    const rig = setup();
    const response = await rig.get('/iperfservers', { Authorization: 'Bearer not-the-token' });
    expect(response.status).toBe(401);
    expect(response.text).toBe(
      `error: bearer token does not match AUTOPILOT_API_TOKEN; ${openAccessHint('iperf')}\n`,
    );
    expectUntouched(rig.service);
  });
});

describe('/iperfservers', () => {
  test("text: Autopilot's start lines, an ERROR line for a server that could not bind", async () => {
    const rig = setup();
    const response = await rig.get('/iperfservers?numservers=2&startport=5300', AUTH);
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe(TEXT);
    expect(response.text).toBe(
      [
        `[NETWORK] - [IPERF] - [INFO] : Starting iperf3 server 10.128.0.5:5300 using eth0 in ${POD} on ${NODE}...`,
        `[NETWORK] - [IPERF] - [INFO] : Starting iperf3 server 10.128.0.5:5301 using eth0 in ${POD} on ${NODE}...`,
        `[NETWORK] - [IPERF] - [INFO] : Starting iperf3 server 192.168.10.5:5300 using net1-0 in ${POD} on ${NODE}...`,
        `[NETWORK] - [IPERF] - [INFO] : Starting iperf3 server 192.168.10.5:5301 using net1-0 in ${POD} on ${NODE}...`,
        `[NETWORK] - [IPERF] - [ERROR] : Server failed to start on 192.168.10.5:5301 using net1-0 in ${POD} on ${NODE}. Exited with error: ${BIND_FAILURE}`,
        '',
      ].join('\n'),
    );
  });

  test("the service gets this pod's addresses, the count, the ports and the lifetime", async () => {
    const rig = setup();
    await rig.get('/iperfservers?numservers=2&startport=5300&lifetime=90', AUTH);
    expect(rig.service.serverRequests).toEqual([
      {
        addresses: [
          { interface: 'eth0', address: '10.128.0.5' },
          { interface: 'net1-0', address: '192.168.10.5' },
        ],
        numservers: 2,
        startport: 5300,
        lifetimeMs: 90_000,
      },
    ]);
  });

  test("defaults: Autopilot's 8 servers from 5200, stopping by themselves after 10 minutes", async () => {
    const rig = setup();
    expect((await rig.get('/iperfservers', AUTH)).status).toBe(200);
    expect(rig.service.serverRequests).toEqual([
      expect.objectContaining({ numservers: 8, startport: 5200, lifetimeMs: 600_000 }),
    ]);
  });

  test('JSON with format=json or Accept: application/json', async () => {
    const rig = setup();
    const expected = {
      node: NODE,
      servers: [
        { interface: 'eth0', address: '10.128.0.5', port: 5200, ok: true, pid: 4000 },
        { interface: 'net1-0', address: '192.168.10.5', port: 5200, ok: true, pid: 4000 },
      ],
    };
    const byQuery = await rig.get('/iperfservers?numservers=1&format=json', AUTH);
    expect(byQuery.status).toBe(200);
    expect(byQuery.headers['content-type']).toBe(JSON_TYPE);
    expect(byQuery.body).toEqual(expected);
    const byHeader = await rig.get('/iperfservers?numservers=1', {
      ...AUTH,
      Accept: 'application/json',
    });
    expect(byHeader.body).toEqual(expected);
  });

  test.each([
    ['numservers=0', 'numservers "0" is not a whole number from 1 to 64'],
    ['numservers=65', 'numservers "65" is not a whole number from 1 to 64'],
    ['numservers=2x', 'numservers "2x" is not a whole number from 1 to 64'],
    ['startport=1023', 'startport "1023" is not a whole number from 1024 to 65528'],
    ['startport=65529', 'startport "65529" is not a whole number from 1024 to 65528'],
    ['numservers=64&startport=65473', 'startport "65473" is not a whole number from 1024 to 65472'],
    ['lifetime=0', 'lifetime "0" is not a whole number from 1 to 86400'],
    ['lifetime=86401', 'lifetime "86401" is not a whole number from 1 to 86400'],
    ['lifetime=-5', 'lifetime "-5" is not a whole number from 1 to 86400'],
    ['numservers=1&numservers=2', 'parameter numservers is given more than once'],
  ])('%s is 400: %s', async (query, message) => {
    const rig = setup();
    const response = await rig.get(`/iperfservers?${query}`, AUTH);
    expect(response.status).toBe(400);
    expect(response.text).toBe(`error: ${message}\n`);
    expectUntouched(rig.service);
  });

  test('the highest port range that fits is accepted', async () => {
    const rig = setup();
    expect((await rig.get('/iperfservers?numservers=64&startport=65472', AUTH)).status).toBe(200);
    expect(rig.service.serverRequests[0]).toMatchObject({ numservers: 64, startport: 65472 });
  });

  test('a 400 in JSON when JSON was asked for', async () => {
    const rig = setup();
    const response = await rig.get('/iperfservers?numservers=0&format=json', AUTH);
    expect(response.status).toBe(400);
    expect(response.body).toEqual({ error: 'numservers "0" is not a whole number from 1 to 64' });
  });
});

describe('/iperfclients', () => {
  const GOOD = 'dstip=10.128.0.7&dstport=5200&numclients=2';

  test("a good request answers Autopilot's JSON of the clients' figures", async () => {
    const rig = setup();
    const response = await rig.get(`/iperfclients?${GOOD}&duration=3&bindip=10.128.0.5`, AUTH);
    expect(response.status).toBe(200);
    // JSON whatever was asked, as Autopilot answered.
    expect(response.headers['content-type']).toBe(JSON_TYPE);
    expect(response.body).toEqual(clientsToAutopilotJson(twoClients()));
    expect(response.body).toMatchObject({
      totalBitsPerSecond: 7e9,
      numclients: 2,
      failed: 0,
      receiver: { aggregate: { bitrate: 7 } },
      units: { transfer: 'GBytes', bitrate: 'Gbits/sec' },
    });
  });

  test('the service gets exactly the values sent, as numbers and addresses', async () => {
    const rig = setup();
    await rig.get(`/iperfclients?${GOOD}&duration=3&bindip=192.168.10.5`, AUTH);
    expect(rig.service.clientCalls).toHaveLength(1);
    const call = rig.service.clientCalls[0]!;
    expect(call.request).toEqual({
      dstip: '10.128.0.7',
      dstport: 5200,
      numclients: 2,
      durationSeconds: 3,
      bindAddress: '192.168.10.5',
    });
    expect(call.abortedWhenCalled).toBe(false);
    expect(call.signal.aborted).toBe(false);
  });

  test('duration defaults to 5 seconds; without bindip the service binds nothing', async () => {
    const rig = setup();
    expect((await rig.get(`/iperfclients?${GOOD}`, AUTH)).status).toBe(200);
    expect(rig.service.clientCalls.map((c) => c.request)).toEqual([
      { dstip: '10.128.0.7', dstport: 5200, numclients: 2, durationSeconds: 5 },
    ]);
  });

  test('an IPv6 destination is an IP address too', async () => {
    const rig = setup();
    expect(
      (await rig.get('/iperfclients?dstip=fd00::7&dstport=5200&numclients=1', AUTH)).status,
    ).toBe(200);
    expect(rig.service.clientCalls[0]?.request.dstip).toBe('fd00::7');
  });

  test.each([
    ['dstport=5200&numclients=2', 'dstip is required'],
    ['dstip=&dstport=5200&numclients=2', 'dstip is required'],
    ['dstip=10.128.0.7&numclients=2', 'dstport is required'],
    ['dstip=10.128.0.7&dstport=5200', 'numclients is required'],
    ['dstip=node-b&dstport=5200&numclients=2', 'dstip "node-b" is not an IP address'],
    ['dstip=10.128.0.256&dstport=5200&numclients=2', 'dstip "10.128.0.256" is not an IP address'],
    [
      'dstip=10.128.0.7&dstport=0&numclients=2',
      'dstport "0" is not a whole number from 1 to 65535',
    ],
    [
      'dstip=10.128.0.7&dstport=5200&numclients=65',
      'numclients "65" is not a whole number from 1 to 64',
    ],
    [
      'dstip=10.128.0.7&dstport=65530&numclients=8',
      'dstport 65530 with numclients 8 goes past port 65535',
    ],
    [`${GOOD}&duration=0`, 'duration "0" is not a whole number from 1 to 300'],
    [`${GOOD}&duration=301`, 'duration "301" is not a whole number from 1 to 300'],
    [`${GOOD}&bindip=10.128.0.9`, 'bindip 10.128.0.9 is not an address of this pod'],
    [`${GOOD}&bindip=127.0.0.1`, 'bindip 127.0.0.1 is not an address of this pod'],
    [`${GOOD}&bindip=`, 'bindip is required'],
  ])('%s is 400: %s', async (query, message) => {
    const rig = setup();
    const response = await rig.get(`/iperfclients?${query}`, AUTH);
    expect(response.status).toBe(400);
    expect(response.text).toBe(`error: ${message}\n`);
    expectUntouched(rig.service);
  });
});

describe('/iperfclients when the caller goes away', () => {
  test('the clients are told to stop: their signal aborts', async () => {
    let reached: (signal: AbortSignal) => void = () => undefined;
    const called = new Promise<AbortSignal>((resolve) => (reached = resolve));
    const base = fakeService();
    const service: FakeService = {
      ...base,
      runClients: ({ signal }) => {
        reached(signal);
        // Like the real clients: they run until killed.
        return new Promise<ClientsOutcome>((resolve) => {
          signal.addEventListener('abort', () =>
            resolve(summariseClients([{ port: 5200, outcome: { ok: false, error: 'aborted' } }])),
          );
        });
      },
    };
    const rig = setup({ service });
    const handle = rig.app.callback();
    const server = createServer((req, res) => void handle(req, res)).listen(0, '127.0.0.1');
    try {
      await once(server, 'listening');
      const { port } = server.address() as AddressInfo;
      const caller = get({
        host: '127.0.0.1',
        port,
        path: '/iperfclients?dstip=10.128.0.7&dstport=5200&numclients=1',
        headers: AUTH,
      });
      caller.on('error', () => undefined);
      const signal = await called;
      expect(signal.aborted).toBe(false);
      caller.destroy();
      await once(signal, 'abort');
      expect(signal.reason).toEqual(new Error('the caller closed the connection'));
    } finally {
      server.close();
    }
  });
});

describe('nothing a caller sends reaches a shell', () => {
  test.each([
    ['dstip', '127.0.0.1;rm -rf /', 'dstip "127.0.0.1;rm -rf /" is not an IP address'],
    ['dstip', '$(reboot)', 'dstip "$(reboot)" is not an IP address'],
    ['dstip', '10.128.0.7 -D', 'dstip "10.128.0.7 -D" is not an IP address'],
    ['dstip', '-c10.128.0.7', 'dstip "-c10.128.0.7" is not an IP address'],
    ['bindip', '10.128.0.5`id`', 'bindip "10.128.0.5`id`" is not an IP address'],
    ['dstport', '5200;ls', 'dstport "5200;ls" is not a whole number from 1 to 65535'],
    [
      'numclients',
      '2 --logfile /etc/passwd',
      'numclients "2 --logfile /etc/passwd" is not a whole number from 1 to 64',
    ],
    ['duration', '5|sh', 'duration "5|sh" is not a whole number from 1 to 300'],
  ])('%s=%s is 400', async (name, value, message) => {
    const rig = setup();
    const params = new URLSearchParams({
      dstip: '10.128.0.7',
      dstport: '5200',
      numclients: '2',
      [name]: value,
    });
    const response = await rig.get(`/iperfclients?${params.toString()}`, AUTH);
    expect(response.status).toBe(400);
    expect(response.text).toBe(`error: ${message}\n`);
    expectUntouched(rig.service);
  });

  test('/iperfservers takes no address from the caller: only the pod’s own', async () => {
    const rig = setup();
    const response = await rig.get(
      '/iperfservers?numservers=1&address=1.2.3.4%3Bsh&interface=eth0%3Bsh',
      AUTH,
    );
    expect(response.status).toBe(200);
    expect(rig.service.serverRequests.map((r) => r.addresses)).toEqual([
      [
        { interface: 'eth0', address: '10.128.0.5' },
        { interface: 'net1-0', address: '192.168.10.5' },
      ],
    ]);
  });
});

describe('/iperfstopservers', () => {
  test("text: Autopilot's line, with how many were stopped", async () => {
    const rig = setup();
    const response = await rig.get('/iperfstopservers', AUTH);
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe(TEXT);
    expect(response.text).toBe(
      '[NETWORK] - [IPERF] - [INFO] : All iperf servers have been removed (not deleting default iperf server): 3 stopped\n',
    );
    expect(rig.service.stopCalls).toBe(1);
  });

  test('JSON with format=json', async () => {
    const rig = setup();
    const response = await rig.get('/iperfstopservers?format=json', AUTH);
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe(JSON_TYPE);
    expect(response.body).toEqual({ node: NODE, stopped: 3 });
  });
});

describe('format', () => {
  test.each([
    ['/iperfservers?format=yaml', 'format "yaml" is not supported'],
    ['/iperfstopservers?format=yaml', 'format "yaml" is not supported'],
    ['/iperfstopservers?format=json&format=text', 'format is given more than once'],
  ])('%s is a 400 before anything starts or stops', async (path, message) => {
    const rig = setup();
    const response = await rig.get(path, AUTH);
    expect(response.status).toBe(400);
    expect(response.text).toContain(message);
    expect(rig.service.serverRequests).toEqual([]);
    expect(rig.service.stopCalls).toBe(0);
  });
});
