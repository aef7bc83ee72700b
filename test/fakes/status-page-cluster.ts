/**
 * The status page's three-node cluster for the browser tests: three real exporter processes
 * (dist/) in Kubernetes mode against the fake API server, each with 8 fake GPUs (the C fake
 * libnvidia-ml) and its own fake ping, so each ends in a different state by its own checks:
 *
 * - node-a: every peer answers, GPUs healthy → PASS;
 * - node-b: GPU 5 waits for a row-remap reset (remapped FAIL, not fatal) → WARN; its peers do not
 *   answer (ping FAIL) until `recoverNodeB()`, after which ping passes;
 * - node-c: GPU 3's row remapping failed (remapped FAIL, fatal) → EVICT; its ping prints markup
 *   on stderr, which becomes the reason of every peer's ERROR: tool output the page must escape.
 */

import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  FAKE_NVML,
  ROOT,
  startExporter,
  type ExporterProcess,
} from '../../bench/lib/exporter-process.js';
import {
  endpointSlice,
  startFakeKubeApi,
  writeKubeconfig,
  type FakeKubeApi,
} from './kube-api-server.js';

const NAMESPACE = 'autopilot';
const SERVICE = 'autopilot-healthchecks';
const PING_FIXTURES = join(ROOT, 'test', 'fixtures', 'ping', 'iputils-20221126');

/** What node-c's ping prints: markup that would run or load something if the page did not escape it. */
export const INJECTED_REASON =
  '<script>window.__injected = "script"</script><img src="x" onerror="window.__injected = \'img\'">';

export const PAGE_NODES = ['node-a', 'node-b', 'node-c'] as const;
export type PageNode = (typeof PAGE_NODES)[number];

/** The state each node reaches once its checks have run. */
export const EXPECTED_STATES: Readonly<Record<PageNode, string>> = {
  'node-a': 'PASS',
  'node-b': 'WARN',
  'node-c': 'EVICT',
};

const NVML_SCENARIOS: Readonly<Record<PageNode, string>> = {
  'node-a': 'gpus=8',
  'node-b': 'gpus=8;pending=5',
  'node-c': 'gpus=8;remapfail=3',
};

function pingScript(node: PageNode, dir: string): string {
  const reply = `cat '${PING_FIXTURES}/reply.txt'; exit 0`;
  switch (node) {
    case 'node-a':
      return reply;
    case 'node-b':
      return [
        `if [ -e '${join(dir, 'node-b.recovered')}' ]; then ${reply}; fi`,
        `cat '${PING_FIXTURES}/no-reply.txt'; exit 1`,
      ].join('\n');
    case 'node-c':
      return `printf '%s\\n' 'ping: ${INJECTED_REASON.replaceAll("'", "'\\''")}' >&2; exit 2`;
  }
}

function writePing(node: PageNode, dir: string): string {
  const path = join(dir, `ping-${node}`);
  writeFileSync(path, `#!/bin/sh\n${pingScript(node, dir)}\n`);
  chmodSync(path, 0o755);
  return path;
}

export interface PageCluster {
  readonly api: FakeKubeApi;
  /** The API address of each node's exporter, e.g. http://127.0.0.1:41234. */
  readonly urls: Readonly<Record<PageNode, string>>;
  /** From now on node-b's ping gets every reply. */
  recoverNodeB(): void;
  close(): Promise<void>;
}

async function waitUntil(what: string, condition: () => Promise<boolean>, withinMs: number) {
  const started = Date.now();
  while (!(await condition())) {
    if (Date.now() - started > withinMs) throw new Error(`${what} not within ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function knownPeers(url: string): Promise<number> {
  const body = (await (await fetch(`${url}/results?format=json`)).json()) as {
    kubernetes?: { peers?: { known?: number } };
  };
  return body.kubernetes?.peers?.known ?? 0;
}

async function healthOf(url: string): Promise<string> {
  const body = (await (await fetch(`${url}/results?format=json`)).json()) as {
    health?: { state?: string };
  };
  return body.health?.state ?? 'none';
}

async function startNode(
  node: PageNode,
  api: FakeKubeApi,
  dir: string,
  kubeconfig: string,
): Promise<ExporterProcess> {
  api.addNode({ name: node, labels: { pool: 'page-test' }, allocatableGpus: 8 });
  api.addExporterPod(NAMESPACE, node);
  const exporter = await startExporter({
    NODE_NAME: node,
    NAMESPACE,
    POD_NAME: `autopilot-${node}`,
    KUBECONFIG: kubeconfig,
    AUTOPILOT_KUBERNETES: 'on',
    AUTOPILOT_NVML_LIBRARY: FAKE_NVML,
    FAKE_NVML_SCENARIO: NVML_SCENARIOS[node],
    PERIODIC_CHECKS: 'ping,remapped',
    AUTOPILOT_PING_COMMAND: writePing(node, dir),
    AUTOPILOT_PING_COUNT: '1',
  });
  api.upsertEndpointSlice(
    NAMESPACE,
    endpointSlice({
      name: `${SERVICE}-${node}`,
      service: SERVICE,
      ports: [{ name: 'healthcheck', port: exporter.ports.api }],
      endpoints: [{ address: '127.0.0.1', nodeName: node, podName: `autopilot-${node}` }],
    }),
  );
  return exporter;
}

/**
 * Starts the cluster and runs each node's checks once every node knows its two peers, so ping's
 * verdicts cover the whole cluster; resolves when every node is in its EXPECTED_STATES state.
 */
export async function startPageCluster(): Promise<PageCluster> {
  const api = await startFakeKubeApi();
  const dir = mkdtempSync(join(tmpdir(), 'autopilot-page-'));
  const kubeconfig = writeKubeconfig(dir, api.url);
  const exporters: ExporterProcess[] = [];
  const close = async (): Promise<void> => {
    await Promise.all(exporters.map((e) => e.stop(2_000)));
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const node of PAGE_NODES) exporters.push(await startNode(node, api, dir, kubeconfig));
    const urls = Object.fromEntries(
      PAGE_NODES.map((node, i) => [node, `http://127.0.0.1:${exporters[i]!.ports.api}`]),
    ) as Record<PageNode, string>;
    for (const node of PAGE_NODES) {
      await waitUntil(
        `${node} knows 3 peers`,
        async () => (await knownPeers(urls[node])) === 3,
        15_000,
      );
      const answer = await fetch(`${urls[node]}/status?check=ping,remapped&format=json`);
      if (!answer.ok)
        throw new Error(`${node}: /status answered ${answer.status}: ${await answer.text()}`);
      await waitUntil(
        `${node} ${EXPECTED_STATES[node]}`,
        async () => (await healthOf(urls[node])) === EXPECTED_STATES[node],
        10_000,
      );
    }
    return {
      api,
      urls,
      recoverNodeB: () => writeFileSync(join(dir, 'node-b.recovered'), ''),
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
