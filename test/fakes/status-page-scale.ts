/**
 * The status page at scale: one real exporter (dist/) in Kubernetes mode whose peers are 999
 * simulated nodes in EndpointSlices of 100, 1,000 rows with its own. One HTTP server in this
 * process plays every simulated node on its own loopback address (127.0.x.y: Linux answers for all
 * of 127/8) and answers GET /node/<name>/summary, what the cluster view asks each node, with a
 * summary in which every check has run (the widest row). Shared by test/e2e/status-page.test.ts
 * (size and row count) and bench/status-page.ts (the timings).
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'puppeteer-core';
import {
  FAKE_NVML,
  FAKE_PING_ENV,
  startExporter,
  startupRound,
  type ExporterProcess,
} from '../../bench/lib/exporter-process.js';
import { CHECK_NAMES, CHECK_TABLE } from '../../exporter/checks/index.js';
import type { DomElement } from './browser.js';
import {
  endpointSlice,
  startFakeKubeApi,
  writeKubeconfig,
  type FakeKubeApi,
} from './kube-api-server.js';

const NAMESPACE = 'autopilot';
const SERVICE = 'autopilot-healthchecks';
const SELF = 'page-node';
/** The default periodic round (PERIODIC_CHECKS unset): the page's check columns. */
const PERIODIC = CHECK_TABLE.periodic;
/** The EndpointSlice controller's default maximum of endpoints per slice. */
const ENDPOINTS_PER_SLICE = 100;

interface SimulatedNode {
  readonly name: string;
  readonly address: string;
}

function simulatedNodes(count: number): SimulatedNode[] {
  return Array.from({ length: count }, (_, i) => ({
    name: `gpu-node-${String(i + 1).padStart(4, '0')}`,
    address: `127.0.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`,
  }));
}

/** A summary as a node's exporter gives it: one in ten WARN (a GPU slow), one in fifty EVICT. */
export function simulatedSummary(name: string, index: number): string {
  const state = index % 50 === 7 ? 'EVICT' : index % 10 === 3 ? 'WARN' : 'PASS';
  const failing = state === 'EVICT' ? 'remapped' : state === 'WARN' ? 'pciebw' : '';
  const checks = CHECK_NAMES.map((check, i) => ({
    check,
    verdict: check === failing ? (state === 'EVICT' ? 'FAIL' : 'WARN') : 'PASS',
    reason:
      check === failing
        ? `GPU ${index % 8}: ${state === 'EVICT' ? 'a row remapping failed: replace the GPU' : 'host to device 9.8 GB/s, below 80 % of the node median'}`
        : '8 PASS',
    ageSeconds: 30 + ((index * 7 + i * 13) % 3500),
  }));
  return JSON.stringify({
    node: name,
    state,
    reasons: failing === '' ? [] : [`${failing}: failing`],
    detail: '',
    gpu: { model: 'NVIDIA H100 80GB HBM3', count: 8 },
    checks,
  });
}

async function startSimulatedNodes(
  nodes: readonly SimulatedNode[],
): Promise<{ port: number; close: () => Promise<void> }> {
  const bodies = new Map(nodes.map((n, i) => [n.name, simulatedSummary(n.name, i)]));
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const match = /^\/node\/([^/]+)\/summary$/.exec(new URL(req.url ?? '/', 'http://sim').pathname);
    const body = match === null ? undefined : bodies.get(decodeURIComponent(match[1]!));
    if (body === undefined) {
      res.writeHead(404).end('not a simulated node\n');
      return;
    }
    res.writeHead(200, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '0.0.0.0', resolve);
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function addSlices(api: FakeKubeApi, nodes: readonly SimulatedNode[], port: number): void {
  for (let start = 0; start < nodes.length; start += ENDPOINTS_PER_SLICE) {
    const chunk = nodes.slice(start, start + ENDPOINTS_PER_SLICE);
    api.upsertEndpointSlice(
      NAMESPACE,
      endpointSlice({
        name: `${SERVICE}-sim-${start / ENDPOINTS_PER_SLICE}`,
        service: SERVICE,
        ports: [{ name: 'healthcheck', port }],
        endpoints: chunk.map((n) => ({ address: n.address, nodeName: n.name })),
      }),
    );
  }
}

export interface ScaleCluster {
  /** The exporter's API, whose GET / is the page of every node. */
  readonly url: string;
  /** Rows the page has: the simulated nodes and the exporter's own. */
  readonly nodes: number;
  close(): Promise<void>;
}

async function knownPeers(url: string): Promise<number> {
  const body = (await (await fetch(`${url}/results?format=json`)).json()) as {
    kubernetes?: { peers?: { known?: number } };
  };
  return body.kubernetes?.peers?.known ?? 0;
}

/** Resolves once the exporter knows every node as a peer. */
export async function startScaleCluster(nodes = 1000): Promise<ScaleCluster> {
  const api = await startFakeKubeApi();
  const dir = mkdtempSync(join(tmpdir(), 'autopilot-page-scale-'));
  const simulated = simulatedNodes(nodes - 1);
  const sim = await startSimulatedNodes(simulated);
  let exporter: ExporterProcess | undefined;
  const close = async (): Promise<void> => {
    await exporter?.stop(2_000);
    await sim.close();
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    api.addNode({ name: SELF, allocatableGpus: 8 });
    exporter = await startExporter({
      NODE_NAME: SELF,
      NAMESPACE,
      POD_NAME: `autopilot-${SELF}`,
      KUBECONFIG: writeKubeconfig(dir, api.url),
      AUTOPILOT_KUBERNETES: 'on',
      AUTOPILOT_NVML_LIBRARY: FAKE_NVML,
      // The default periodic round, so the page has its usual columns; ping is the fake (a
      // captured reply), and the round is over before anything is measured.
      ...FAKE_PING_ENV,
    });
    const url = `http://127.0.0.1:${exporter.ports.api}`;
    api.upsertEndpointSlice(
      NAMESPACE,
      endpointSlice({
        name: `${SERVICE}-self`,
        service: SERVICE,
        ports: [{ name: 'healthcheck', port: exporter.ports.api }],
        endpoints: [{ address: '127.0.0.1', nodeName: SELF }],
      }),
    );
    addSlices(api, simulated, sim.port);
    const started = Date.now();
    while ((await knownPeers(url)) < nodes) {
      if (Date.now() - started > 20_000)
        throw new Error(`the exporter did not learn ${nodes} peers`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await startupRound(exporter.ports.api, PERIODIC);
    return { url, nodes, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/** One load of the page in the browser, timed by the browser's own Navigation Timing. */
export interface PageTiming {
  /** Navigation start to the first byte of the HTML, in milliseconds. */
  readonly firstByteMs: number;
  /** To the last byte of the HTML: every row has arrived. */
  readonly lastByteMs: number;
  /** To DOMContentLoaded: every row parsed, the deferred script run. */
  readonly domReadyMs: number;
  /** To the load event: the stylesheet applied, the page rendered. */
  readonly loadMs: number;
  /** The HTML as transferred (no compression here). */
  readonly htmlBytes: number;
  /** tr[data-node] rows in table#nodes once loaded. */
  readonly rows: number;
}

export async function timePageLoad(page: Page, url: string): Promise<PageTiming> {
  await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
  const entry = (await page.evaluate(
    'JSON.parse(JSON.stringify(performance.getEntriesByType("navigation")[0]))',
  )) as Record<string, number>;
  const rows = await page.$$eval(
    'table#nodes tbody tr[data-node]',
    (found: DomElement[]) => found.length,
  );
  return {
    firstByteMs: entry.responseStart ?? NaN,
    lastByteMs: entry.responseEnd ?? NaN,
    domReadyMs: entry.domContentLoadedEventEnd ?? NaN,
    loadMs: entry.loadEventEnd ?? NaN,
    htmlBytes: entry.encodedBodySize ?? NaN,
    rows,
  };
}
