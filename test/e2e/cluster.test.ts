/**
 * Cluster-wide /status across three real exporter processes on loopback. Each one runs in
 * Kubernetes mode against the fake API server (a kubeconfig file), which lists the three as the
 * endpoints of the autopilot-healthchecks Service. One exporter is stopped half-way: the fan-out
 * must report it as unreachable, not drop it.
 */

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
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

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
const NAMESPACE = 'autopilot';
const SERVICE = 'autopilot-healthchecks';
const NODES = ['node-a', 'node-b', 'node-c'] as const;

interface Running {
  readonly node: string;
  readonly process: ChildProcess;
  readonly apiPort: number;
  stderr: string;
}

let api: FakeKubeApi;
let workDir: string;
const exporters = new Map<string, Running>();

function start(node: string, kubeconfig: string): Promise<Running> {
  const child = spawn(process.execPath, [MAIN, '--port', '0', '--w', '0'], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/root',
      NODE_NAME: node,
      NAMESPACE,
      POD_NAME: `autopilot-${node}`,
      KUBECONFIG: kubeconfig,
      PERIODIC_CHECKS: 'ping',
      AUTOPILOT_PING_COUNT: '1',
      AUTOPILOT_METRICS_PORT: '0',
      AUTOPILOT_READINESS_PORT: '0',
      AUTOPILOT_LISTEN_ADDRESS: '127.0.0.1',
      AUTOPILOT_NVML_LIBRARY: '',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const running: Running = { node, process: child, apiPort: 0, stderr: '' };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${node}: no "exporter listening" line: ${running.stderr}`)),
      15_000,
    );
    child.stderr.on('data', (chunk: Buffer) => {
      running.stderr += chunk.toString();
      const line = running.stderr.split('\n').find((l) => l.includes('"exporter listening"'));
      if (line === undefined || running.apiPort !== 0) return;
      clearTimeout(timer);
      resolve({ ...running, apiPort: (JSON.parse(line) as { api: number }).api });
    });
  });
}

async function get(node: string, path: string): Promise<Response> {
  return fetch(`http://127.0.0.1:${exporters.get(node)!.apiPort}${path}`);
}

async function waitUntil(what: string, condition: () => Promise<boolean>, withinMs: number) {
  const started = Date.now();
  while (!(await condition())) {
    if (Date.now() - started > withinMs) throw new Error(`${what} not within ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

beforeAll(async () => {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
  api = await startFakeKubeApi();
  workDir = mkdtempSync(join(tmpdir(), 'autopilot-cluster-'));
  const kubeconfig = writeKubeconfig(workDir, api.url);
  api.addNode({ name: 'node-a', labels: { pool: 'blue' } });
  api.addNode({ name: 'node-b', labels: { pool: 'green' } });
  api.addNode({ name: 'node-c', labels: { pool: 'green' } });
  api.addPod({
    namespace: 'ml',
    name: 'trainer-0',
    labels: { app: 'trainer' },
    nodeName: 'node-b',
  });
  for (const node of NODES) {
    // The DaemonSet's pod on the node: ping reaches its addresses (all loopback here).
    api.addExporterPod(NAMESPACE, node);
    const running = await start(node, kubeconfig);
    exporters.set(node, running);
    api.upsertEndpointSlice(
      NAMESPACE,
      endpointSlice({
        name: `${SERVICE}-${node}`,
        service: SERVICE,
        ports: [{ name: 'healthcheck', port: running.apiPort }],
        endpoints: [{ address: '127.0.0.1', nodeName: node, podName: `autopilot-${node}` }],
      }),
    );
  }
  await waitUntil(
    'node-a sees three peers',
    async () => {
      const body = (await (await get('node-a', '/results?format=json')).json()) as {
        kubernetes: { peers: { known: number } };
      };
      return body.kubernetes.peers.known === 3;
    },
    30_000,
  );
}, 90_000);

afterAll(async () => {
  for (const running of exporters.values()) {
    if (running.process.exitCode === null) running.process.kill('SIGKILL');
  }
  await api?.close();
  rmSync(workDir, { recursive: true, force: true });
});

describe('cluster-wide /status over three exporters', () => {
  test('host=all&check=ping: one block per node, the summary and the runtime', async () => {
    const response = await get('node-a', '/status?host=all&check=ping');
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text).toMatch(/^Asking to run on remote node\(s\) all or with node label None\n/);
    for (const node of NODES) {
      const port = exporters.get(node)!.apiPort;
      expect(text).toContain(
        `Initiated connection to ['http://127.0.0.1:${port}/status?host=${node}&check=ping'].`,
      );
      expect(text).toContain(`Autopilot Endpoint: 127.0.0.1\nNode: ${node}\n`);
    }
    expect(text.match(/^Node Status: OK$/gm)).toHaveLength(3);
    expect(text).toContain(
      "Node Summary:\n\n{'node-a': ['OK'], 'node-b': ['OK'], 'node-c': ['OK']}",
    );
    expect(text).toMatch(/\nruntime: \d+(\.\d+)? sec\n$/);
  });

  test('job and nodelabel select the nodes through the API, as a union', async () => {
    const byJob = (await (
      await get('node-a', '/status?job=ml:app=trainer&check=ping&format=json')
    ).json()) as { nodes: { node: string; outcome: string }[] };
    expect(byJob.nodes.map((n) => [n.node, n.outcome])).toEqual([['node-b', 'answered']]);

    const union = (await (
      await get('node-b', '/status?nodelabel=pool=blue&job=ml:app=trainer&check=ping&format=json')
    ).json()) as { nodes: { node: string }[] };
    // Nodes stream in the order they answer; the set is what the selection says.
    expect(union.nodes.map((n) => n.node).sort()).toEqual(['node-a', 'node-b']);
  });

  test('a malformed job is a 400 that names it, and nothing runs', async () => {
    const response = await get('node-a', '/status?job=no-colon&check=ping');
    expect(response.status).toBe(400);
    expect(await response.text()).toBe(
      'error: job "no-colon" is not namespace:label-selector, such as default:app=trainer\n',
    );
  });

  test('a stopped exporter is reported as unreachable, streamed as NDJSON', async () => {
    const stopped = exporters.get('node-c')!;
    stopped.process.kill('SIGTERM');
    await new Promise((resolve) => stopped.process.once('exit', resolve));

    const response = await get('node-a', '/status?host=all&check=ping&format=ndjson');
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('application/x-ndjson');
    const lines = (await response.text())
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines).toHaveLength(4);
    const byNode = new Map(lines.slice(0, 3).map((line) => [line.node, line]));
    expect(byNode.get('node-c')).toMatchObject({
      type: 'node',
      outcome: 'unreachable',
      status: ['Connection to Server Failed'],
    });
    expect(String(byNode.get('node-c')!.detail)).toContain('ECONNREFUSED');
    expect(byNode.get('node-a')).toMatchObject({ outcome: 'answered', status: ['OK'] });
    expect(byNode.get('node-b')).toMatchObject({ outcome: 'answered', status: ['OK'] });
    expect(lines[3]).toMatchObject({ type: 'summary', nodes: 3, ok: 2, notOk: 1 });

    const text = await (await get('node-b', '/status?check=ping')).text();
    expect(text).toContain('Node: node-c\n');
    expect(text).toContain("'node-c': ['Connection to Server Failed']");
  });

  test('a pod the Service lists as not ready is reported, not skipped', async () => {
    api.upsertEndpointSlice(
      NAMESPACE,
      endpointSlice({
        name: `${SERVICE}-node-d`,
        service: SERVICE,
        ports: [{ name: 'healthcheck', port: 1 }],
        endpoints: [{ address: '127.0.0.9', nodeName: 'node-d', ready: false }],
      }),
    );
    await waitUntil(
      'node-a sees node-d',
      async () => (await get('node-a', '/status?host=node-d&check=ping')).status === 200,
      20_000,
    );
    const text = await (await get('node-a', '/status?host=node-d&check=ping')).text();
    expect(text).toContain('Node: node-d\n');
    expect(text).toContain("{'node-d': ['Not Ready']}");
  });
});
