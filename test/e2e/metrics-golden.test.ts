/**
 * The whole /metrics exposition against one golden file, as node_exporter's e2e-output.txt: the real
 * buildExporter in Kubernetes mode (the real client-node adapter against the fake API server) over
 * the C fake libnvidia-ml, the probe library on the fake CUDA runtime, fake-dcgmi, fake-ping behind
 * a per-address wrapper, and fake peer APIs answering the iperf calls. Every check of the catalogue
 * runs exactly once: xid from the XID listener (its events are queued in the fake NVML), the others
 * in catalogue order as /status would run them. Regenerate with UPDATE_GOLDEN=1 and review the diff.
 *
 * Nothing is normalised, because nothing varies from run to run: the exporter's clock is frozen at T
 * (now() never moves; its timers run in real time, so the pvc poll, the peer list's retry and the
 * XID listener proceed), so every timestamp is T and every duration 0; the fake CUDA runtime times
 * copies and kernels on a virtual clock, so measured bandwidths and FLOPS are the configured figures
 * (to the float rounding of that arithmetic, the same on every run); the fake NVML's UUIDs are
 * fixed; ping output comes from the iputils fixtures and iperf throughput from the fake peers;
 * build_info and the host labels are fixed strings; the registry has no process metrics. A family
 * that starts to vary must get a narrow rule here (its values replaced by a placeholder, its series
 * kept), not be dropped.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { KubeConfig } from '@kubernetes/client-node';
import koffi from 'koffi';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { CHECK_NAMES } from '../../exporter/checks/index.js';
import type { Clock } from '../../exporter/clock.js';
import { parseConfig } from '../../exporter/config/config.js';
import { createRunCommand } from '../../exporter/exec/run-command.js';
import { buildExporter, type Exporter } from '../../exporter/exporter.js';
import { createKubeApi } from '../../exporter/k8s/kube-api.js';
import { silentLogger } from '../../exporter/log.js';
import { ALL_METRICS } from '../../exporter/metrics/catalogue.js';
import { loadCudaProbe } from '../../exporter/native/cuda-probe.js';
import { loadNvml } from '../../exporter/native/nvml.js';
import type { NvmlLoad } from '../../exporter/native/ports.js';
import { endpointSlice, startFakeKubeApi, type FakeKubeApi } from '../fakes/kube-api-server.js';

const ROOT = join(import.meta.dirname, '..', '..');
const BUILD = join(ROOT, 'build', 'fakes');
const NVML = join(BUILD, 'nvml', 'libnvidia-ml.so.1');
const GOLDEN = join(ROOT, 'test', 'golden', 'metrics-e2e.prom');
const PING_FIXTURES = join(ROOT, 'test', 'fixtures', 'ping', 'iputils-20221126');
const FAKE_PING = join(ROOT, 'test', 'fakes', 'bin', 'fake-ping');
const FAKE_DCGMI = join(ROOT, 'test', 'fakes', 'bin', 'fake-dcgmi');

/** The frozen instant: 2026-01-01T12:00:00Z. */
const T = Date.UTC(2026, 0, 1, 12);
const NS = 'autopilot';
const ENDPOINT_SLICES = `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`;
const NODE = 'node-a';

/**
 * The node: GPU 1 under a power brake (gpupower WARN), GPU 2 with uncorrectable remapped rows and a
 * remap waiting for a reset, GPU 3 on a Gen3 x8 link (pciebw FAIL) and with pages waiting for
 * retirement, GPU 0 with two lifetime double-bit errors from before the driver loaded; XIDs queued: 13 on GPU 0 (an application's,
 * counted but healthy) and 63 on GPU 2 (a row-remapping event: WARN). GPU 1's NVLink 5 has 3
 * replays: the one NVLink error counter not at 0, so the only one with a series.
 */
const NVML_SCENARIO =
  'gpus=4;powerbrake=1;uncorrectable=2:3;pending=2;link=3:3x8;aggdbe=0:2;retirepending=3;xid=0:13,2:63;nvlinkerr=1:5:replay:3';
/** GPU 3's copies at the speed of its narrow link; GPU 1's HBM at half speed. */
const CUDA_BANDWIDTHS: readonly (readonly [number, number, number])[] = [
  [3, 0, 6.5],
  [3, 1, 6.6],
  [1, 2, 2100],
];
/** DCGM level 1: PCIe fails on GPU 2 (fatal), memory bandwidth on GPU 0. */
const DCGM_SCENARIO = 'fail-4x';

/** Every node of the cluster: its pod's two interfaces, and what ping and iperf meet there. */
const NODES = [
  { node: 'node-a', eth0: '10.0.0.1', net1: '192.168.1.1' },
  { node: 'node-b', eth0: '10.0.0.2', net1: '192.168.1.2' },
  { node: 'node-c', eth0: '10.0.0.3', net1: '192.168.1.3' },
  { node: 'node-d', eth0: '10.0.0.4', net1: '192.168.1.4' },
] as const;
/** ping: node-b answers everywhere, node-c loses a third on net1, node-d answers nowhere. */
const PING_WRAPPER = `#!/bin/sh
for last; do :; done
case "$last" in
  192.168.1.3) FAKE_PING_OUTPUT='${PING_FIXTURES}/synthetic-partial-loss.txt' ;;
  10.0.0.4|192.168.1.4) FAKE_PING_OUTPUT='${PING_FIXTURES}/no-reply.txt'; FAKE_PING_EXIT=1 ;;
  *) FAKE_PING_OUTPUT='${PING_FIXTURES}/reply.txt' ;;
esac
export FAKE_PING_OUTPUT FAKE_PING_EXIT
exec '${FAKE_PING}' "$@"
`;

/** now() frozen at T; timers in real time. */
const frozenClock: Clock = {
  now: () => T,
  setTimer: (callback, delayMs) => {
    const handle = setTimeout(callback, Math.max(0, delayMs));
    return () => clearTimeout(handle);
  },
};

const nvmlControl = koffi.load(NVML);
const nvmlReset = nvmlControl.func('void fakenvml_reset(void)');
const nvmlApply = nvmlControl.func('int fakenvml_apply(const char *scenario)');
const cudart = koffi.load(join(BUILD, 'cuda', 'libcudart.so.13'));
const cudaReset = cudart.func('void fakecuda_reset(void)');
const cudaSetDevices = cudart.func('int fakecuda_set_devices(int n)');
const cudaSetBandwidth = cudart.func(
  'int fakecuda_set_bandwidth(int device, int direction, double gbps)',
);

function prepareFakeGpus(): void {
  nvmlReset();
  cudaReset();
  expect(nvmlApply(NVML_SCENARIO)).toBe(0);
  expect(Number(cudaSetDevices(4))).toBe(0);
  for (const [device, direction, gbps] of CUDA_BANDWIDTHS) {
    expect(Number(cudaSetBandwidth(device, direction, gbps))).toBe(0);
  }
}

async function startCluster(): Promise<FakeKubeApi> {
  const api = await startFakeKubeApi();
  for (const { node, eth0, net1 } of NODES) {
    api.addNode({ name: node, allocatableGpus: 4 });
    api.addPod({
      namespace: NS,
      name: `autopilot-${node}`,
      labels: { app: 'autopilot' },
      nodeName: node,
      podIP: eth0,
      annotations: {
        'k8s.v1.cni.cncf.io/network-status': JSON.stringify([
          { interface: 'eth0', ips: [eth0] },
          { interface: 'net1', ips: [net1] },
        ]),
      },
    });
  }
  api.upsertEndpointSlice(
    NS,
    endpointSlice({
      name: 'autopilot-healthchecks-golden',
      service: 'autopilot-healthchecks',
      ports: [{ name: 'healthcheck', port: 3333 }],
      endpoints: NODES.map(({ node, eth0 }) => ({
        address: eth0,
        nodeName: node,
        podName: `autopilot-${node}`,
      })),
    }),
  );
  api.addStorageClass('standard');
  // One failed list of the peers (retried after a second) gives autopilot_kubernetes_api_errors_total a value.
  api.failNext({ pathPrefix: ENDPOINT_SLICES, watch: false, status: 503 });
  return api;
}

function kubeConfigFor(url: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server: url, skipTLSVerify: true }],
    users: [{ name: 'autopilot', token: 'exporter-sa-token' }],
    contexts: [{ name: 'fake', cluster: 'fake', user: 'autopilot' }],
    currentContext: 'fake',
  });
  return kc;
}

/** Gb/s a source reaches a destination on an interface: net1 into node-d is slow, node-c→node-b refused. */
function throughput(source: string, destination: string, iface: string): number | string {
  if (source === 'node-c' && destination === 'node-b' && iface === 'net1') {
    return 'unable to connect to server: Connection refused';
  }
  if (destination === 'node-d' && iface === 'net1') return 9.5;
  return iface === 'eth0' ? 24.5 : 98.25;
}

/** The other nodes' APIs as the iperf check meets them (this exporter's `fetch` port). */
function fakePeerApis(): (url: string) => Promise<Response> {
  const owner = new Map<string, { readonly node: string; readonly iface: string }>(
    NODES.flatMap(({ node, eth0, net1 }) => [
      [eth0, { node, iface: 'eth0' }],
      [net1, { node, iface: 'net1' }],
    ]),
  );
  return (url) => {
    const { hostname, pathname, searchParams } = new URL(url);
    const source = owner.get(hostname)?.node ?? hostname;
    const json = (body: unknown) => Promise.resolve(new Response(JSON.stringify(body)));
    if (pathname === '/iperfservers') return json({ servers: [] });
    if (pathname === '/iperfstopservers') return json({ stopped: 8 });
    const target = owner.get(searchParams.get('dstip') ?? '');
    if (pathname !== '/iperfclients' || target === undefined) {
      return Promise.resolve(new Response('Not Found', { status: 404 }));
    }
    const gbps = throughput(source, target.node, target.iface);
    return json(
      typeof gbps === 'string'
        ? { totalBitsPerSecond: 0, clients: [{ port: 5200, error: gbps }] }
        : { totalBitsPerSecond: gbps * 1e9, clients: [{ port: 5200 }] },
    );
  };
}

interface Rig {
  readonly api: FakeKubeApi;
  readonly exporter: Exporter;
  readonly nvml: NvmlLoad;
  readonly bin: string;
}

async function waitFor(what: string, done: () => boolean): Promise<void> {
  for (let i = 0; i < 1500; i++) {
    if (done()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function setup(): Promise<Rig> {
  prepareFakeGpus();
  const bin = mkdtempSync(join(tmpdir(), 'autopilot-golden-'));
  writeFileSync(join(bin, 'ping'), PING_WRAPPER);
  chmodSync(join(bin, 'ping'), 0o755);
  const api = await startCluster();
  // The scheduler is never started here; the schedules only feed autopilot_check_interval_seconds
  // (the round's checks every 1h, the deep check's dcgm and gpumem every 4h, dcgm the shorter).
  const config = parseConfig({
    flags: new Map([
      ['w', '1h'],
      ['invasive-check-timer', '4h'],
    ]),
    env: {
      NODE_NAME: NODE,
      NAMESPACE: NS,
      POD_NAME: `autopilot-${NODE}`,
      AUTOPILOT_PING_COMMAND: join(bin, 'ping'),
      AUTOPILOT_DCGMI_COMMAND: FAKE_DCGMI,
      PVC_TEST_STORAGE_CLASS: 'standard',
      AUTOPILOT_DEEPCHECK_IMAGE: 'registry.example/autopilot:golden',
    },
    hostname: NODE,
    knownChecks: CHECK_NAMES,
  });
  const nvml = await loadNvml(NVML);
  if (!nvml.ok) throw new Error(nvml.reason);
  const exporter = buildExporter(config, {
    runCommand: createRunCommand({
      baseEnv: { PATH: process.env.PATH ?? '/usr/bin:/bin', FAKE_DCGMI_SCENARIO: DCGM_SCENARIO },
    }),
    nvml,
    cuda: loadCudaProbe(join(BUILD, 'cuda', 'libautopilot-probe.so')),
    clock: frozenClock,
    logger: silentLogger,
    cpuModel: 'Intel(R) Xeon(R) Platinum 8480+',
    gpuModel: 'NVIDIA H200',
    build: { version: '0.0.0-golden', nodejs: '20.19.0' },
    kube: createKubeApi(kubeConfigFor(api.url), 2000),
    fetch: fakePeerApis(),
  });
  return { api, exporter, nvml, bin };
}

/** xid once from its listener, then every other check once, in catalogue order. */
async function runEveryCheckOnce(exporter: Exporter): Promise<void> {
  const cluster = exporter.cluster!;
  await cluster.labeler.start();
  cluster.peers.start();
  await waitFor('the peers', () => cluster.peers.peers().length === NODES.length);
  exporter.checkListener.start();
  await waitFor('the XID run', () => exporter.store.latest('xid') !== undefined);
  await exporter.checkListener.stop();
  for (const name of exporter.checks.keys()) {
    if (name !== 'xid') await exporter.runner.run(name, {}, 'api');
  }
  await cluster.labeler.idle();
}

let rig: Rig | undefined;

beforeAll(async () => {
  rig = await setup();
});

afterAll(async () => {
  if (rig === undefined) return;
  rig.exporter.cluster?.peers.stop();
  rig.exporter.cluster?.labeler.stop();
  await rig.exporter.runner.shutdown(1000);
  if (rig.nvml.ok) await rig.nvml.nvml.close();
  await rig.api.close();
  rmSync(rig.bin, { recursive: true, force: true });
});

describe('the golden /metrics', () => {
  test('every check once over the fakes renders exactly as test/golden/metrics-e2e.prom', async () => {
    const { exporter } = rig!;
    await runEveryCheckOnce(exporter);
    const runs = [...exporter.checks.keys()].map((name) => exporter.store.latest(name));
    expect(runs.map((run) => run?.trigger)).toEqual(
      [...exporter.checks.keys()].map((name) => (name === 'xid' ? 'event' : 'api')),
    );
    const response = await request(exporter.metricsApp.callback()).get('/metrics');
    expect(response.status).toBe(200);
    const actual = response.text;
    if (process.env.UPDATE_GOLDEN === '1') writeFileSync(GOLDEN, actual);
    expect(actual).toBe(readFileSync(GOLDEN, 'utf8'));
    // The scenario must keep giving every family of the catalogue a series with a value.
    const withSeries = new Set(
      actual.split('\n').map((line) => /^[a-z0-9_]+(?=[{ ])/.exec(line)?.[0]),
    );
    expect(Object.keys(ALL_METRICS).filter((name) => !withSeries.has(name))).toEqual([]);
    expect(
      execFileSync('promtool', ['check', 'metrics'], { input: actual, encoding: 'utf8' }),
    ).toBe('');
  });
});
