/**
 * No empty panels: every target of every shipped dashboard, its Grafana variables substituted,
 * returns data from Debian's real Prometheus scraping real exporters. Two "nodes" run in network
 * namespaces (iperf3 needs two hosts' addresses), in Kubernetes mode against the fake API server:
 * gpu-a with 8 fake GPUs carrying a few faults (fake NVML, fake CUDA probe, fake dcgmi), a ping
 * that loses some echo requests to every peer and all of them to one, and an iperf3 run to gpu-b.
 * Needs root (ip netns), like test/e2e/network.test.ts.
 */

import { execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import {
  endpointSlice,
  startFakeKubeApi,
  writeKubeconfig,
  type FakeKubeApi,
} from '../fakes/kube-api-server.js';
import { startMonitoring, type Monitoring } from '../fakes/monitoring.js';
import { createLab, type Lab, type NetNode } from '../fakes/netns.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
const DASHBOARDS = join(ROOT, 'dashboards');
const RULES = join(ROOT, 'rules', 'autopilot.rules.yaml');
const FAKE_NVML = join(ROOT, 'build', 'fakes', 'nvml', 'libnvidia-ml.so.1');
const FAKE_PROBE = join(ROOT, 'build', 'fakes', 'cuda', 'libautopilot-probe.so');
const FAKE_DCGMI = join(ROOT, 'test', 'fakes', 'bin', 'fake-dcgmi');
const PING_FIXTURES = join(ROOT, 'test', 'fixtures', 'ping', 'iputils-20221126');
const NAMESPACE = 'autopilot';
const SERVICE = 'autopilot-healthchecks';
const API_PORT = 3333;
const METRICS_PORT = 8081;
const OPERATOR = 'operator-token';
const EXPORTER_USER = 'system:serviceaccount:autopilot:autopilot';
/** gpu-a and gpu-b run exporters; gpu-c has a pod no ping reaches; gpu-d is listed not ready. */
const RUNNING = ['gpu-a', 'gpu-b'] as const;
/** An address of the lab's /24 that no namespace holds: the pod of gpu-c. */
const UNREACHABLE_HOST_NUMBER = 200;

/**
 * Faults that give every GPU panel data. On the GPU the node dashboard selects: an XID that only
 * warns (61) at start and again 15 s later (past the exporter's 10 s debounce, so the counter moves
 * while Prometheus scrapes and increase() sees it), and pages waiting for retirement (Hopper remaps
 * rows instead and has no such series, so a GPU that retires pages must stand in), and a CRC flit
 * counter of its NVLink 2 that climbs by 3 at every read (every 5 s round: 0.6 per second, under
 * the 100 per second nvlink warns at, so the panel has errors to draw and the GPU still passes).
 * On others: a power brake, a pending row remap, a Gen3 x8 link.
 */
const NVML_SCENARIO =
  'xid=0:61;xidafter=0:61:15000;retirepending=0;powerbrake=1;pending=2;link=3:3x8;' +
  'nvlinkerr=0:2:crc_flit:3';

/**
 * Panels that stay empty, with why. Compared exactly, so a panel that starts to show data (the
 * fake learnt to raise an XID later) fails the test until its entry is removed.
 */
const KNOWN_EMPTY: readonly string[] = [];

interface Target {
  readonly expr?: string;
}

interface Panel {
  readonly type: string;
  readonly title?: string;
  readonly targets?: readonly Target[];
  readonly panels?: readonly Panel[];
}

interface Dashboard {
  readonly panels: readonly Panel[];
}

interface PanelQuery {
  readonly dashboard: string;
  readonly panel: string;
  readonly expr: string;
}

function allPanels(panels: readonly Panel[]): Panel[] {
  return panels.flatMap((panel) => [panel, ...allPanels(panel.panels ?? [])]);
}

/** Every target expression of every dashboard, as the panels hold them. */
function panelQueries(): PanelQuery[] {
  return readdirSync(DASHBOARDS)
    .filter((name) => name.endsWith('.json'))
    .sort()
    .flatMap((name) => {
      const dashboard = JSON.parse(readFileSync(join(DASHBOARDS, name), 'utf8')) as Dashboard;
      return allPanels(dashboard.panels)
        .filter((panel) => panel.type !== 'row')
        .flatMap((panel) =>
          (panel.targets ?? []).map((target) => ({
            dashboard: name,
            panel: panel.title ?? '',
            expr: target.expr ?? '',
          })),
        );
    });
}

/** The same variable syntaxes test/unit/dashboards.test.ts recognises; an unknown one is an error. */
function substitute(expr: string, values: Readonly<Record<string, string>>): string {
  return expr.replace(
    /\$\{(\w+)(?::\w+)?\}|\$([a-zA-Z_]\w*)|\[\[(\w+)\]\]/g,
    (whole, braced?: string, bare?: string, bracketed?: string) => {
      const value = values[braced ?? bare ?? bracketed ?? ''];
      if (value === undefined) throw new Error(`no value for ${whole} in ${expr}`);
      return value;
    },
  );
}

let lab: Lab | undefined;
let api: FakeKubeApi | undefined;
let monitoring: Monitoring | undefined;
let workDir: string | undefined;
const exporters = new Map<string, { node: NetNode; process: ChildProcess; stderr: string }>();

const addressOf = (name: string): string => exporters.get(name)!.node.addresses.eth0!;

async function get(name: string, path: string, token?: string): Promise<Response> {
  return fetch(`http://${addressOf(name)}:${API_PORT}${path}`, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(30_000),
  });
}

async function waitUntil(what: () => string, condition: () => Promise<boolean>, withinMs: number) {
  const started = Date.now();
  for (;;) {
    try {
      if (await condition()) return;
    } catch {
      // Not up yet.
    }
    if (Date.now() - started > withinMs) throw new Error(`${what()} not within ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** A ping that answers from the captured outputs: all lost to one address, some to any other. */
function writeFakePing(dir: string, unreachable: string): string {
  const path = join(dir, 'ping');
  writeFileSync(
    path,
    [
      '#!/bin/sh',
      'for target; do :; done',
      `if [ "$target" = "${unreachable}" ]; then`,
      `  cat "${join(PING_FIXTURES, 'no-reply.txt')}"`,
      '  exit 1',
      'fi',
      `cat "${join(PING_FIXTURES, 'synthetic-partial-loss.txt')}"`,
      '',
    ].join('\n'),
  );
  chmodSync(path, 0o755);
  return path;
}

beforeAll(async () => {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
  const theLab = await createLab({ nodes: RUNNING.length, networks: ['eth0'], prefix: 'apdash' });
  lab = theLab;
  const kube = await startFakeKubeApi({ host: theLab.hostAddresses.eth0! });
  api = kube;
  const dir = mkdtempSync(join(tmpdir(), 'autopilot-dashboards-'));
  workDir = dir;
  const kubeconfig = writeKubeconfig(dir, kube.url);
  kube.addToken('exporter-sa-token', { username: EXPORTER_USER });
  kube.addToken(OPERATOR, { username: 'alice', groups: ['sre'] });
  kube.allow({
    user: EXPORTER_USER,
    verb: 'create',
    resource: 'healthchecks',
    apiGroup: 'autopilot.ibm.com',
    name: 'iperf',
  });
  kube.allow({
    group: 'sre',
    verb: 'create',
    resource: 'healthchecks',
    apiGroup: 'autopilot.ibm.com',
  });

  const subnet = theLab.nodes[0]!.addresses.eth0!.split('.').slice(0, 3).join('.');
  const unreachable = `${subnet}.${UNREACHABLE_HOST_NUMBER}`;
  const ping = writeFakePing(dir, unreachable);
  const pods: { name: string; address: string; port: number; ready: boolean }[] = [
    ...RUNNING.map((name, index) => ({
      name,
      address: theLab.nodes[index]!.addresses.eth0!,
      port: API_PORT,
      ready: true,
    })),
    { name: 'gpu-c', address: unreachable, port: API_PORT, ready: true },
    { name: 'gpu-d', address: `${subnet}.${UNREACHABLE_HOST_NUMBER + 1}`, port: 1, ready: false },
  ];
  for (const pod of pods) {
    kube.addNode({ name: pod.name });
    kube.addPod({
      namespace: NAMESPACE,
      name: `autopilot-${pod.name}`,
      labels: { app: 'autopilot' },
      nodeName: pod.name,
      podIP: pod.address,
    });
    kube.upsertEndpointSlice(
      NAMESPACE,
      endpointSlice({
        name: `${SERVICE}-${pod.name}`,
        service: SERVICE,
        ports: [{ name: 'healthcheck', port: pod.port }],
        endpoints: [
          {
            address: pod.address,
            nodeName: pod.name,
            podName: `autopilot-${pod.name}`,
            ready: pod.ready,
          },
        ],
      }),
    );
  }

  const common = {
    HOME: process.env.HOME ?? '/root',
    NAMESPACE,
    KUBECONFIG: kubeconfig,
    AUTOPILOT_PING_COMMAND: ping,
    AUTOPILOT_PING_COUNT: '1',
  };
  const environments: Record<(typeof RUNNING)[number], Record<string, string>> = {
    'gpu-a': {
      PERIODIC_CHECKS: 'pciebw,remapped,gpupower,ecc,xid,gpumem,dcgm,ping,nvlink',
      AUTOPILOT_NVML_LIBRARY: FAKE_NVML,
      AUTOPILOT_CUDA_PROBE_LIBRARY: FAKE_PROBE,
      FAKE_NVML_SCENARIO: NVML_SCENARIO,
      AUTOPILOT_DCGMI_COMMAND: FAKE_DCGMI,
      FAKE_DCGMI_SCENARIO: 'fail-4x',
    },
    'gpu-b': { PERIODIC_CHECKS: 'ping', AUTOPILOT_NVML_LIBRARY: '' },
  };
  for (const [index, name] of RUNNING.entries()) {
    const node = theLab.nodes[index]!;
    // A short round, so that the runs counters move while Prometheus watches.
    const child = theLab.spawnIn(
      node,
      process.execPath,
      [MAIN, '--port', String(API_PORT), '--w', '5s'],
      {
        env: { ...common, NODE_NAME: name, POD_NAME: `autopilot-${name}`, ...environments[name] },
      },
    );
    const entry = { node, process: child, stderr: '' };
    child.stderr?.on('data', (chunk: Buffer) => (entry.stderr += chunk.toString()));
    exporters.set(name, entry);
  }
  for (const name of RUNNING) {
    await waitUntil(
      () => `${name} knowing its peers (${exporters.get(name)!.stderr.slice(-1000)})`,
      async () => {
        const body = (await (await get(name, '/results?format=json')).json()) as {
          kubernetes: { peers: { known: number } };
        };
        return body.kubernetes.peers.known === pods.length;
      },
      20_000,
    );
  }
  monitoring = await startMonitoring({
    targets: RUNNING.map((name) => `${addressOf(name)}:${METRICS_PORT}`),
    // The chart's ServiceMonitor labels every series with the pod's node; the dashboards read it.
    nodeOf: Object.fromEntries(RUNNING.map((name) => [`${addressOf(name)}:${METRICS_PORT}`, name])),
    ruleFiles: [RULES],
  });
}, 90_000);

afterAll(async () => {
  await monitoring?.stop();
  await lab?.destroy();
  await api?.close();
  if (workDir !== undefined) rmSync(workDir, { recursive: true, force: true });
});

test('every dashboard panel shows data from the real exporter', async () => {
  const m = monitoring!;
  // iperf metrics exist only after an on-demand run; the exporter asks gpu-b over the lab network.
  const iperf = await get(
    'gpu-a',
    '/status?check=iperf&workload=pair&src=gpu-a&dst=gpu-b&duration=1&pclients=1&format=json',
    OPERATOR,
  );
  const iperfBody = await iperf.text();
  expect({ status: iperf.status, body: iperfBody }).toMatchObject({ status: 200 });
  expect(iperfBody).toContain('"verdict":"PASS"');
  // The P2P matrix needs a p2pbw run: exclusive, so on demand (in the round it would copy 56 pairs
  // every 5 s), at 64 MiB (56 pairs of the fake in seconds).
  const p2p = await get('gpu-a', '/p2pbw?mib=64&format=json', OPERATOR);
  const p2pBody = await p2p.text();
  expect({ status: p2p.status, body: p2pBody }).toMatchObject({ status: 200 });
  expect(p2pBody).toContain('"check":"p2pbw","verdict":"PASS"');

  const values = {
    __rate_interval: '1m',
    __range: '1h',
    job: 'autopilot-metrics-service',
    node: 'gpu-a',
    gpu: '0',
    gpumodel: 'NVIDIA H200',
    metric: 'hbm',
  };
  const queries = panelQueries().map((q) => ({ ...q, promql: substitute(q.expr, values) }));
  expect(queries.length).toBeGreaterThan(50);

  const emptyPanels = async (): Promise<string[]> => {
    const empty: string[] = [];
    for (const query of queries)
      if ((await m.query(query.promql)).length === 0)
        empty.push(`${query.dashboard} / ${query.panel}\n    ${query.promql}`);
    return empty;
  };
  const known = (line: string): boolean => KNOWN_EMPTY.includes(line.split('\n')[0]!);
  // Counters need a few scrapes and a second round before increase() sees them move.
  const deadline = Date.now() + 45_000;
  let empty = await emptyPanels();
  while (!empty.every(known) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    empty = await emptyPanels();
  }
  expect(empty.filter((line) => !known(line))).toEqual([]);
  expect(empty.map((line) => line.split('\n')[0])).toEqual(KNOWN_EMPTY);
}, 90_000);
