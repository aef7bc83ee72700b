/**
 * The network checks across four "nodes": each a network namespace on two bridges (eth0 and
 * net1, as Multus gives a pod a secondary network), running the real exporter in Kubernetes mode
 * against the fake API server, with real ping and iperf3. Needs root (ip netns); every namespace,
 * link and process is removed afterwards, also when a test fails.
 */

import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import {
  endpointSlice,
  startFakeKubeApi,
  writeKubeconfig,
  type FakeKubeApi,
} from '../fakes/kube-api-server.js';
import { createLab, type Lab, type NetNode } from '../fakes/netns.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
const NAMESPACE = 'autopilot';
const SERVICE = 'autopilot-healthchecks';
const API_PORT = 3333;
const OPERATOR = 'operator-token';
const NAMES = ['net-a', 'net-b', 'net-c', 'net-d'] as const;

let lab: Lab;
let api: FakeKubeApi;
let workDir: string;
const exporters = new Map<string, { node: NetNode; process: ChildProcess; stderr: string }>();

const nodeOf = (name: string): NetNode => exporters.get(name)!.node;
const base = (name: string): string => `http://${nodeOf(name).addresses.eth0}:${API_PORT}`;

async function get(name: string, path: string, token?: string): Promise<Response> {
  return fetch(`${base(name)}${path}`, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(120_000),
  });
}

async function waitUntil(what: string, condition: () => Promise<boolean>, withinMs: number) {
  const started = Date.now();
  for (;;) {
    try {
      if (await condition()) return;
    } catch {
      // Not up yet.
    }
    if (Date.now() - started > withinMs) throw new Error(`${what} not within ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

interface PingJson {
  results: {
    devices: { id: string; verdict: string; reason: string; evidence: Record<string, unknown> }[];
  }[];
}

async function pingFrom(name: string): Promise<PingJson['results'][number]['devices']> {
  const response = await get(name, `/status?host=${name}&check=ping&format=json`);
  expect(response.status).toBe(200);
  return ((await response.json()) as PingJson).results[0]!.devices;
}

beforeAll(async () => {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
  lab = await createLab({ nodes: NAMES.length, networks: ['eth0', 'net1'] });
  api = await startFakeKubeApi({ host: lab.hostAddresses.eth0! });
  workDir = mkdtempSync(join(tmpdir(), 'autopilot-network-'));
  const kubeconfig = writeKubeconfig(workDir, api.url);
  const exporterUser = 'system:serviceaccount:autopilot:autopilot';
  api.addToken('exporter-sa-token', { username: exporterUser });
  api.addToken(OPERATOR, { username: 'alice', groups: ['sre'] });
  // What the chart grants: the exporter may drive iperf on its peers; operators may run checks.
  api.allow({
    user: exporterUser,
    verb: 'create',
    resource: 'healthchecks',
    apiGroup: 'autopilot.ibm.com',
    name: 'iperf',
  });
  api.allow({
    group: 'sre',
    verb: 'create',
    resource: 'healthchecks',
    apiGroup: 'autopilot.ibm.com',
  });

  for (const [index, name] of NAMES.entries()) {
    const node = lab.nodes[index]!;
    api.addNode({ name });
    api.addPod({
      namespace: NAMESPACE,
      name: `autopilot-${name}`,
      labels: { app: 'autopilot' },
      nodeName: name,
      podIP: node.addresses.eth0!,
      annotations: {
        'k8s.v1.cni.cncf.io/network-status': JSON.stringify([
          { name: 'k8s-pod-network', interface: 'eth0', ips: [node.addresses.eth0], default: true },
          { name: 'autopilot/net1', interface: 'net1', ips: [node.addresses.net1] },
        ]),
      },
    });
    api.upsertEndpointSlice(
      NAMESPACE,
      endpointSlice({
        name: `${SERVICE}-${name}`,
        service: SERVICE,
        ports: [{ name: 'healthcheck', port: API_PORT }],
        endpoints: [
          { address: node.addresses.eth0!, nodeName: name, podName: `autopilot-${name}` },
        ],
      }),
    );
    const child = lab.spawnIn(
      node,
      process.execPath,
      [MAIN, '--port', String(API_PORT), '--w', '0'],
      {
        env: {
          HOME: process.env.HOME ?? '/root',
          NODE_NAME: name,
          NAMESPACE,
          POD_NAME: `autopilot-${name}`,
          KUBECONFIG: kubeconfig,
          PERIODIC_CHECKS: 'ping',
          AUTOPILOT_PING_COUNT: '2',
          AUTOPILOT_PING_REPLY_TIMEOUT: '500ms',
          AUTOPILOT_NVML_LIBRARY: '',
        },
      },
    );
    const entry = { node, process: child, stderr: '' };
    child.stderr?.on('data', (chunk: Buffer) => (entry.stderr += chunk.toString()));
    exporters.set(name, entry);
  }
  for (const name of NAMES) {
    await waitUntil(
      `${name} knows its peers (${exporters.get(name)!.stderr.slice(-500)})`,
      async () => {
        const body = (await (await get(name, '/results?format=json')).json()) as {
          kubernetes: { peers: { known: number } };
        };
        return body.kubernetes.peers.known === NAMES.length;
      },
      20_000,
    );
  }
}, 120_000);

afterAll(async () => {
  await lab?.destroy();
  await api?.close();
  if (workDir !== undefined) rmSync(workDir, { recursive: true, force: true });
});

describe('ping across namespaces', () => {
  test('every interface of every peer is reachable', async () => {
    const devices = await pingFrom('net-a');
    expect(devices.map((d) => [d.id, d.verdict])).toEqual([
      ['net-b', 'PASS'],
      ['net-c', 'PASS'],
      ['net-d', 'PASS'],
    ]);
    expect(devices[0]!.evidence).toMatchObject({
      interfaces: 2,
      'eth0.address': nodeOf('net-b').addresses.eth0,
      'net1.address': nodeOf('net-b').addresses.net1,
    });
  });

  test('a cut link is unreachable within one round, with gauge 1 and loss 1, and recovers', async () => {
    lab.setLink(nodeOf('net-c'), 'net1', false);
    try {
      const devices = await pingFrom('net-a');
      const cut = devices.find((d) => d.id === 'net-c')!;
      expect(cut.verdict).toBe('FAIL');
      expect(cut.reason).toContain(`net1 ${nodeOf('net-c').addresses.net1}: unreachable`);
      expect(devices.filter((d) => d.id !== 'net-c').map((d) => d.verdict)).toEqual([
        'PASS',
        'PASS',
      ]);
      const metrics = await (
        await fetch(`http://${nodeOf('net-a').addresses.eth0}:8081/metrics`)
      ).text();
      expect(metrics).toMatch(
        /^autopilot_health_checks\{health="ping",node="net-a",[^}]*deviceid="net-c"\} 1$/m,
      );
      expect(metrics).toContain(
        'autopilot_peer_interface_loss_ratio{check="ping",peer="net-c",interface="net1"} 1',
      );
    } finally {
      lab.setLink(nodeOf('net-c'), 'net1', true);
    }
    const recovered = await pingFrom('net-a');
    expect(recovered.find((d) => d.id === 'net-c')?.verdict).toBe('PASS');
  });
});

describe('iperf across namespaces', () => {
  test('a ring gives the full matrix on both interfaces, and leaves no iperf3 behind', async () => {
    const anonymous = await get('net-a', '/status?check=iperf&workload=ring');
    expect(anonymous.status).toBe(401);

    const response = await get(
      'net-a',
      '/status?check=iperf&workload=ring&duration=1&pclients=2',
      OPERATOR,
    );
    expect(response.status).toBe(200);
    const text = await response.text();
    // Autopilot's first line, which scripts wait for.
    expect(text.startsWith('Running iperf3 on hosts all or job None\n\n')).toBe(true);
    expect(text).toContain('Network Throughput eth0:');
    expect(text).toContain('Network Throughput net1:');
    // 4 nodes: 12 ordered pairs per interface, each with a throughput above zero.
    const rows = text.split('\n').filter((line) => /^net-[a-d]\s/.test(line));
    expect(rows).toHaveLength(8);
    const values = rows.flatMap((row) => row.trim().split(/\s+/).slice(1)).filter((v) => v !== '-');
    expect(values).toHaveLength(24);
    for (const value of values) expect(Number(value)).toBeGreaterThan(0);

    expect(iperfChildren()).toEqual([]);
  }, 120_000);

  test('a link shaped with tbf shows up as the slow pairs', async () => {
    lab.shape(nodeOf('net-b'), 'eth0', 50);
    try {
      const response = await get(
        'net-a',
        '/status?check=iperf&workload=ring&duration=1&pclients=1&format=json',
        OPERATOR,
      );
      const body = (await response.json()) as {
        results: { devices: { id: string; verdict: string }[] }[];
      };
      const slow = body.results[0]!.devices.filter((d) => d.verdict === 'WARN').map((d) => d.id);
      // Every eth0 transfer to or from net-b, and nothing else.
      expect(slow.sort()).toEqual(
        [
          'net-a->net-b',
          'net-b->net-a',
          'net-b->net-c',
          'net-b->net-d',
          'net-c->net-b',
          'net-d->net-b',
        ]
          .map((pair) => `${pair}/eth0`)
          .sort(),
      );
    } finally {
      lab.shape(nodeOf('net-b'), 'eth0', undefined);
    }
    expect(iperfChildren()).toEqual([]);
  }, 120_000);
});

/** iperf3 processes the exporters started and left running. */
function iperfChildren(): string[] {
  const pids = [...exporters.values()].map(({ process: child }) => String(child.pid));
  const out = execFileSync('ps', ['-e', '-o', 'pid=,ppid=,comm='], { encoding: 'utf8' });
  return out
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter(([, ppid, comm]) => comm === 'iperf3' && pids.includes(ppid!))
    .map((fields) => fields.join(' '));
}
