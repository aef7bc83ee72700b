/**
 * Benchmark of the cluster-wide /status fan-out: the real exporter process in Kubernetes mode, with
 * the fake API server listing 1,000 simulated nodes. One HTTP server in this process plays all of
 * them on distinct loopback addresses (127.0.x.y, which Linux answers for without any set-up) and
 * answers each /status after 100 ms. It measures the time to the last node's reply (target ≤ 5 s)
 * and the exporter's RSS while it fans out (target ≤ 100 MB). No assertions: it prints.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, get, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  endpointSlice,
  startFakeKubeApi,
  writeKubeconfig,
  type FakeKubeApi,
} from '../test/fakes/kube-api-server.js';

const NODES = 1_000;
const REPLY_AFTER_MS = 100;
const REPETITIONS = 5;
const REALISTIC_REPETITIONS = 3;
/** The EndpointSlice controller's default maximum of endpoints per slice. */
const ENDPOINTS_PER_SLICE = 100;
const RSS_EVERY_MS = 50;
const TARGET_LAST_REPLY_S = 5;
const TARGET_RSS_MB = 100;
const NAMESPACE = 'autopilot';
const SERVICE = 'autopilot-healthchecks';
const SELF = 'bench-node';
const SIM_SELECTOR = 'pool=sim';
const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
/** The flags and thread pool `npm start` gives node; keep them in step with package.json. */
const NODE_FLAGS = ['--max-semi-space-size=2'];
/**
 * V8 prints one line on stdout per collection, which says what RSS cannot: how much of the heap is
 * live after a full collection (a leak) and how much is garbage not yet collected.
 */
const DIAGNOSTIC_FLAGS = ['--trace-gc'];
const UV_THREADPOOL_SIZE = '16';

interface SimulatedNode {
  readonly name: string;
  readonly address: string;
}

function simulatedNodes(): SimulatedNode[] {
  return Array.from({ length: NODES }, (_, i) => ({
    name: `sim-${String(i + 1).padStart(4, '0')}`,
    address: `127.0.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`,
  }));
}

/** What the simulated nodes saw during one fan-out. */
interface ServedCounts {
  requests: number;
  connections: number;
  inFlight: number;
  maxInFlight: number;
  /** Asked on the address of another node than the one named in `host`. */
  misrouted: number;
  /** Without the header that marks a fan-out request. */
  unmarked: number;
}

/** The body a node's /status?format=json gives; `node` is replaced per node. */
type AnswerFor = (node: string) => string;

function smallAnswer(node: string): string {
  return JSON.stringify({
    node,
    cached: false,
    health: { state: 'PASS', since: null, reasons: [] },
    results: [
      {
        check: 'ping',
        verdict: 'PASS',
        reason: '1 PASS',
        trigger: 'api',
        params: {},
        startedAt: new Date().toISOString(),
        finishedAt: new Date().toISOString(),
        durationSeconds: REPLY_AFTER_MS / 1000,
        devices: [],
        text: '[PING] SUCCESS\n',
      },
    ],
  });
}

/** One server for every simulated node: it listens on 0.0.0.0, so 127.0.x.y all reach it. */
async function startSimulatedNodes(nodes: readonly SimulatedNode[]): Promise<{
  port: number;
  counts: ServedCounts;
  reset: () => void;
  answer: { for: AnswerFor };
  close: () => Promise<void>;
}> {
  const addressOf = new Map(nodes.map((n) => [n.name, n.address]));
  const counts: ServedCounts = {
    requests: 0,
    connections: 0,
    inFlight: 0,
    maxInFlight: 0,
    misrouted: 0,
    unmarked: 0,
  };
  const answer = { for: smallAnswer };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://sim');
    const node = url.searchParams.get('host') ?? '';
    if (url.pathname !== '/status' || !addressOf.has(node)) {
      res.writeHead(404).end('not a simulated node\n');
      return;
    }
    counts.requests++;
    counts.inFlight++;
    counts.maxInFlight = Math.max(counts.maxInFlight, counts.inFlight);
    if (req.socket.localAddress !== addressOf.get(node)) counts.misrouted++;
    if (req.headers['x-autopilot-fanout-from'] === undefined) counts.unmarked++;
    res.on('close', () => counts.inFlight--);
    setTimeout(() => {
      const body = answer.for(node);
      res.writeHead(200, {
        'content-type': 'application/json; charset=utf-8',
        'content-length': Buffer.byteLength(body),
      });
      res.end(body);
    }, REPLY_AFTER_MS);
  });
  server.on('connection', () => counts.connections++);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '0.0.0.0', resolve);
  });
  return {
    port: (server.address() as AddressInfo).port,
    counts,
    reset: () => {
      counts.requests = 0;
      counts.connections = 0;
      counts.maxInFlight = counts.inFlight;
      counts.misrouted = 0;
      counts.unmarked = 0;
    },
    answer,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** What the exporter's --trace-gc lines said so far; heap figures in MB. */
interface GcTrace {
  fullCollections: number;
  /** Live heap after the latest full (mark-compact) collection. */
  liveAfterFull: number;
  /** The largest heap seen before a collection since the last reset. */
  peakBefore: number;
}

const GC_LINE =
  /: (Scavenge|Mark-Compact|Minor Mark-Sweep)\b.*? ([\d.]+) \(([\d.]+)\) -> ([\d.]+) \(([\d.]+)\) MB/;

function readGcLine(trace: GcTrace, line: string): void {
  const m = GC_LINE.exec(line);
  if (m === null) return;
  trace.peakBefore = Math.max(trace.peakBefore, Number(m[2]));
  if (m[1] === 'Mark-Compact') {
    trace.fullCollections++;
    trace.liveAfterFull = Number(m[4]);
  }
}

interface Exporter {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly apiPort: number;
  readonly gc: GcTrace;
  /** Durations of the ping runs finished so far, in seconds. */
  readonly pingSeconds: number[];
  /** Log lines at warn or error, by message. */
  readonly complaints: Map<string, number>;
}

function startExporter(kubeconfig: string): Promise<Exporter> {
  const args = [...NODE_FLAGS, ...DIAGNOSTIC_FLAGS, MAIN, '--port', '0', '--w', '0'];
  const child = spawn(process.execPath, args, {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/root',
      UV_THREADPOOL_SIZE,
      NODE_NAME: SELF,
      NAMESPACE,
      POD_NAME: `autopilot-${SELF}`,
      KUBECONFIG: kubeconfig,
      PERIODIC_CHECKS: 'ping',
      AUTOPILOT_PING_COUNT: '1',
      AUTOPILOT_METRICS_PORT: '0',
      AUTOPILOT_READINESS_PORT: '0',
      AUTOPILOT_LISTEN_ADDRESS: '127.0.0.1',
      AUTOPILOT_NVML_LIBRARY: '',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const gc: GcTrace = { fullCollections: 0, liveAfterFull: Number.NaN, peakBefore: 0 };
  let gcTail = '';
  child.stdout.on('data', (chunk: Buffer) => {
    gcTail += chunk.toString();
    const lines = gcTail.split('\n');
    gcTail = lines.pop() ?? '';
    for (const line of lines) readGcLine(gc, line);
  });
  const pingSeconds: number[] = [];
  const complaints = new Map<string, number>();
  let tail = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error('no "exporter listening" line in 20 s')),
      20_000,
    );
    child.once('exit', (code) => reject(new Error(`the exporter exited with ${code}`)));
    child.stderr.on('data', (chunk: Buffer) => {
      tail += chunk.toString();
      const lines = tail.split('\n');
      tail = lines.pop() ?? '';
      for (const line of lines) {
        if (!line.startsWith('{')) {
          console.log(`exporter stderr: ${line}`);
          continue;
        }
        const entry = JSON.parse(line) as {
          level?: string;
          msg?: string;
          check?: string;
          api?: number;
          durationSeconds?: number;
        };
        if (entry.msg === 'check finished' && entry.check === 'ping') {
          pingSeconds.push(entry.durationSeconds ?? Number.NaN);
        }
        if (entry.level === 'warn' || entry.level === 'error') {
          const msg = entry.msg ?? line;
          complaints.set(msg, (complaints.get(msg) ?? 0) + 1);
        }
        if (entry.msg === 'exporter listening' && entry.api !== undefined) {
          clearTimeout(timer);
          resolve({
            child,
            pid: child.pid ?? 0,
            apiPort: entry.api,
            gc,
            pingSeconds,
            complaints,
          });
        }
      }
    });
  });
}

async function stopExporter(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const forced = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(forced);
}

function rssMB(pid: number): number {
  const line = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return line === null ? Number.NaN : Number(line[1]) / 1024;
}

/** A streamed answer, each complete line stamped with when it arrived. */
interface TimedAnswer {
  readonly status: number;
  readonly headersMs: number;
  readonly lines: readonly { readonly text: string; readonly ms: number }[];
  readonly endMs: number;
  readonly bytes: number;
}

function timedGet(url: string): Promise<TimedAnswer> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const request = get(url, (res) => {
      const headersMs = performance.now() - started;
      const lines: { text: string; ms: number }[] = [];
      let pending = '';
      let bytes = 0;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        const ms = performance.now() - started;
        bytes += Buffer.byteLength(chunk);
        pending += chunk;
        const complete = pending.split('\n');
        pending = complete.pop() ?? '';
        for (const text of complete) lines.push({ text, ms });
      });
      res.on('end', () => {
        const endMs = performance.now() - started;
        if (pending !== '') lines.push({ text: pending, ms: endMs });
        resolve({ status: res.statusCode ?? 0, headersMs, lines, endMs, bytes });
      });
      res.on('error', reject);
    });
    request.on('error', reject);
  });
}

/** Samples the process's RSS until stopped; the peak is what a memory limit would meet. */
function sampleRss(pid: number): () => { peak: number; samples: number } {
  let peak = rssMB(pid);
  let samples = 1;
  const timer = setInterval(() => {
    peak = Math.max(peak, rssMB(pid));
    samples++;
  }, RSS_EVERY_MS);
  return () => {
    clearInterval(timer);
    peak = Math.max(peak, rssMB(pid));
    return { peak, samples: samples + 1 };
  };
}

interface NodeLine {
  readonly type: string;
  readonly node?: string;
  readonly outcome?: string;
  readonly detail?: string;
  readonly runtimeSeconds?: number;
  readonly ok?: number;
  readonly notOk?: number;
}

interface FanoutFigures {
  readonly label: string;
  readonly status: number;
  readonly headersMs: number;
  readonly firstNodeMs: number;
  readonly medianNodeMs: number;
  /** The last node line other than this exporter's own. */
  readonly lastSimulatedMs: number;
  readonly selfMs: number | undefined;
  readonly endMs: number;
  readonly runtimeSeconds: number;
  readonly nodes: number;
  readonly answered: number;
  readonly otherOutcomes: ReadonlyMap<string, { count: number; detail: string }>;
  readonly bytes: number;
  readonly served: ServedCounts;
  readonly rssBefore: number;
  readonly rssPeak: number;
  readonly rssAfter: number;
  readonly heapPeak: number;
  readonly fullCollections: number;
  readonly liveAfterFull: number;
}

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

async function measureNdjson(
  label: string,
  url: string,
  exporter: Exporter,
  served: { counts: ServedCounts; reset: () => void },
): Promise<FanoutFigures> {
  const pid = exporter.pid;
  served.reset();
  exporter.gc.peakBefore = 0;
  const fullBefore = exporter.gc.fullCollections;
  const rssBefore = rssMB(pid);
  const stop = sampleRss(pid);
  const answer = await timedGet(url);
  const { peak } = stop();
  const rssAfter = rssMB(pid);
  const nodeTimes: number[] = [];
  let lastSimulatedMs = Number.NaN;
  let selfMs: number | undefined;
  let answered = 0;
  let summary: NodeLine | undefined;
  const otherOutcomes = new Map<string, { count: number; detail: string }>();
  for (const { text, ms } of answer.lines) {
    if (text === '') continue;
    const line = JSON.parse(text) as NodeLine;
    if (line.type === 'summary') summary = line;
    if (line.type !== 'node') continue;
    nodeTimes.push(ms);
    if (line.node === SELF) selfMs = ms;
    else lastSimulatedMs = Number.isNaN(lastSimulatedMs) ? ms : Math.max(lastSimulatedMs, ms);
    if (line.outcome === 'answered') answered++;
    else {
      const key = line.outcome ?? '?';
      const seen = otherOutcomes.get(key);
      otherOutcomes.set(key, {
        count: (seen?.count ?? 0) + 1,
        detail: seen?.detail ?? line.detail ?? '',
      });
    }
  }
  return {
    label,
    status: answer.status,
    headersMs: answer.headersMs,
    firstNodeMs: nodeTimes.length === 0 ? Number.NaN : Math.min(...nodeTimes),
    medianNodeMs: percentile(nodeTimes, 50),
    lastSimulatedMs,
    selfMs,
    endMs: answer.endMs,
    runtimeSeconds: summary?.runtimeSeconds ?? Number.NaN,
    nodes: nodeTimes.length,
    answered,
    otherOutcomes,
    bytes: answer.bytes,
    served: { ...served.counts },
    rssBefore,
    rssPeak: peak,
    rssAfter,
    heapPeak: exporter.gc.peakBefore,
    fullCollections: exporter.gc.fullCollections - fullBefore,
    liveAfterFull: exporter.gc.liveAfterFull,
  };
}

interface TextFigures {
  readonly status: number;
  readonly firstByteMs: number;
  readonly lastBlockMs: number;
  readonly blocks: number;
  readonly endMs: number;
  readonly bytes: number;
  readonly served: ServedCounts;
  readonly rssBefore: number;
  readonly rssPeak: number;
  readonly heapPeak: number;
}

/** Autopilot's text report: one block per node, each ending in its `Node Status:` line. */
async function measureText(
  url: string,
  exporter: Exporter,
  served: { counts: ServedCounts; reset: () => void },
): Promise<TextFigures> {
  served.reset();
  exporter.gc.peakBefore = 0;
  const rssBefore = rssMB(exporter.pid);
  const stop = sampleRss(exporter.pid);
  const answer = await timedGet(url);
  const { peak } = stop();
  const blocks = answer.lines.filter((l) => l.text.startsWith('Node Status:'));
  return {
    status: answer.status,
    firstByteMs: answer.headersMs,
    lastBlockMs: blocks.at(-1)?.ms ?? Number.NaN,
    blocks: blocks.length,
    endMs: answer.endMs,
    bytes: answer.bytes,
    served: { ...served.counts },
    rssBefore,
    rssPeak: peak,
    heapPeak: exporter.gc.peakBefore,
  };
}

function reportText(label: string, f: TextFigures): void {
  row(
    `${label}: last node block`,
    s(f.lastBlockMs),
    against(f.lastBlockMs / 1000, TARGET_LAST_REPLY_S, ' s'),
  );
  row(
    '',
    '',
    `HTTP ${f.status}, first byte ${ms(f.firstByteMs)}, ${f.blocks} node blocks, end ${ms(f.endMs)}, ${(f.bytes / 1024 / 1024).toFixed(1)} MiB; served ${f.served.requests}, max in flight ${f.served.maxInFlight}`,
  );
  row(
    `${label}: exporter RSS peak`,
    mb(f.rssPeak),
    `before ${mb(f.rssBefore)}, V8 heap peak ${mb(f.heapPeak)}; ${against(f.rssPeak, TARGET_RSS_MB, ' MB')}`,
  );
}

function row(label: string, value: string, note = ''): void {
  console.log(`  ${label.padEnd(52)} ${value.padStart(14)}   ${note}`);
}

function against(value: number, target: number, unit: string): string {
  const ratio = value / target;
  return `target ≤ ${target}${unit}: ratio ${ratio.toFixed(2)}, ${ratio <= 1 ? 'within target' : 'OVER TARGET'}`;
}

const ms = (value: number): string => `${value.toFixed(0)} ms`;
const s = (value: number): string => `${(value / 1000).toFixed(2)} s`;
const mb = (value: number): string => `${value.toFixed(1)} MB`;

function reportRun(f: FanoutFigures): void {
  const others = [...f.otherOutcomes].map(([k, v]) => `${v.count} ${k} (${v.detail})`).join(', ');
  row(
    f.label,
    s(f.lastSimulatedMs),
    `first ${ms(f.firstNodeMs)}, median ${ms(f.medianNodeMs)}, end ${ms(f.endMs)}, exporter runtime ${f.runtimeSeconds.toFixed(2)} s`,
  );
  row(
    '',
    '',
    `HTTP ${f.status}, headers at ${ms(f.headersMs)}, ${f.nodes} node lines, ${f.answered} answered${others === '' ? '' : `, ${others}`}`,
  );
  row(
    '',
    '',
    `served ${f.served.requests} requests on ${f.served.connections} new connections, max in flight ${f.served.maxInFlight}, misrouted ${f.served.misrouted}, unmarked ${f.served.unmarked}`,
  );
  row(
    '',
    '',
    `RSS ${mb(f.rssBefore)} before, ${mb(f.rssPeak)} peak, ${mb(f.rssAfter)} after; V8 heap peak ${mb(f.heapPeak)}, ${f.fullCollections} full GCs, live after the last ${mb(f.liveAfterFull)}`,
  );
}

function reportSeries(label: string, runs: readonly FanoutFigures[]): void {
  const last = runs.map((r) => r.lastSimulatedMs);
  const peaks = runs.map((r) => r.rssPeak);
  row(
    `${label}: last reply, median of ${runs.length}`,
    s(percentile(last, 50)),
    against(percentile(last, 50) / 1000, TARGET_LAST_REPLY_S, ' s'),
  );
  row(
    `${label}: last reply, max of ${runs.length}`,
    s(Math.max(...last)),
    against(Math.max(...last) / 1000, TARGET_LAST_REPLY_S, ' s'),
  );
  row(
    `${label}: max in flight at the nodes`,
    String(Math.max(...runs.map((r) => r.served.maxInFlight))),
  );
  row(
    `${label}: exporter RSS peak, max of ${runs.length}`,
    mb(Math.max(...peaks)),
    against(Math.max(...peaks), TARGET_RSS_MB, ' MB'),
  );
  row(
    `${label}: V8 heap peak, max of ${runs.length}`,
    mb(Math.max(...runs.map((r) => r.heapPeak))),
  );
}

async function waitFor(what: string, condition: () => Promise<boolean>, withinMs: number) {
  const started = performance.now();
  while (!(await condition())) {
    if (performance.now() - started > withinMs)
      throw new Error(`${what}: not within ${withinMs} ms`);
    await sleep(100);
  }
}

async function main(): Promise<void> {
  const nodes = simulatedNodes();
  const api: FakeKubeApi = await startFakeKubeApi();
  const simulated = await startSimulatedNodes(nodes);
  const workDir = mkdtempSync(join(tmpdir(), 'autopilot-fanout-bench-'));
  let exporter: Exporter | undefined;
  try {
    for (const node of nodes) api.addNode({ name: node.name, labels: { pool: 'sim' } });
    api.addNode({ name: SELF, labels: { pool: 'exporter' } });
    for (let first = 0; first < nodes.length; first += ENDPOINTS_PER_SLICE) {
      api.upsertEndpointSlice(
        NAMESPACE,
        endpointSlice({
          name: `${SERVICE}-sim-${String(first / ENDPOINTS_PER_SLICE + 1).padStart(2, '0')}`,
          service: SERVICE,
          ports: [{ name: 'healthcheck', port: simulated.port }],
          endpoints: nodes.slice(first, first + ENDPOINTS_PER_SLICE).map((n) => ({
            address: n.address,
            nodeName: n.name,
            podName: `autopilot-${n.name}`,
            ready: true,
          })),
        }),
      );
    }
    const spawned = performance.now();
    exporter = await startExporter(writeKubeconfig(workDir, api.url));
    const listeningMs = performance.now() - spawned;
    api.upsertEndpointSlice(
      NAMESPACE,
      endpointSlice({
        name: `${SERVICE}-${SELF}`,
        service: SERVICE,
        ports: [{ name: 'healthcheck', port: exporter.apiPort }],
        endpoints: [{ address: '127.0.0.1', nodeName: SELF, podName: `autopilot-${SELF}` }],
      }),
    );
    const base = `http://127.0.0.1:${exporter.apiPort}`;
    const running = exporter;
    await waitFor(
      'the exporter knows 1,001 peers and its start-up ping round is over',
      async () => {
        const body = (await (await fetch(`${base}/results?format=json`)).json()) as {
          kubernetes?: { peers?: { known?: number } };
        };
        return body.kubernetes?.peers?.known === NODES + 1 && running.pingSeconds.length >= 1;
      },
      60_000,
    );
    const peersKnownMs = performance.now() - spawned;
    await sleep(1000);
    const rssIdle = rssMB(exporter.pid);
    const liveIdle = exporter.gc.liveAfterFull;

    const bySelector = `${base}/status?nodelabel=${encodeURIComponent(SIM_SELECTOR)}&check=ping`;
    const bounded: FanoutFigures[] = [];
    for (let i = 1; i <= REPETITIONS; i++) {
      bounded.push(
        await measureNdjson(
          `batch=0 (256), run ${i}`,
          `${bySelector}&format=ndjson`,
          exporter,
          simulated,
        ),
      );
      await sleep(500);
    }
    const unbounded: FanoutFigures[] = [];
    for (let i = 1; i <= REPETITIONS; i++) {
      unbounded.push(
        await measureNdjson(
          `batch=1000, run ${i}`,
          `${bySelector}&format=ndjson&batch=1000`,
          exporter,
          simulated,
        ),
      );
      await sleep(500);
    }

    const text = await measureText(bySelector, exporter, simulated);

    const withSelf = await measureNdjson(
      'host=all (bench-node pings 1,000 peers itself)',
      `${base}/status?host=all&check=ping&format=ndjson`,
      exporter,
      simulated,
    );

    // A real node's ping answer in a 1,000-node cluster lists every peer it pinged in its text
    // (and, unless asked by another node as here, in its devices): this exporter's own answer to a
    // fanned-out request is one, so the simulated nodes send copies of it.
    const own = await (
      await fetch(`${base}/status?host=${SELF}&check=ping&format=json`, {
        headers: { 'x-autopilot-fanout-from': 'bench' },
      })
    ).text();
    const realistic = own.split(SELF);
    simulated.answer.for = (node) => realistic.join(node);
    await sleep(500);
    const large: FanoutFigures[] = [];
    for (let i = 1; i <= REALISTIC_REPETITIONS; i++) {
      large.push(
        await measureNdjson(
          `batch=0, real-size answers, run ${i}`,
          `${bySelector}&format=ndjson`,
          exporter,
          simulated,
        ),
      );
      await sleep(500);
    }
    const largeText = await measureText(bySelector, exporter, simulated);

    // Long enough for the idle keep-alive sockets to the 1,000 nodes to close (5 s on both sides).
    await sleep(7000);
    const rssSettled = rssMB(exporter.pid);
    const liveSettled = exporter.gc.liveAfterFull;

    console.log('Autopilot cluster-wide /status fan-out benchmark');
    console.log('================================================');
    row(
      'load',
      `${NODES} nodes`,
      `simulated on 127.0.1.1–127.0.4.250, each answering after ${REPLY_AFTER_MS} ms; ${Math.ceil(NODES / ENDPOINTS_PER_SLICE)} EndpointSlices + 1 for the exporter`,
    );
    row(
      'exporter',
      `node ${NODE_FLAGS.join(' ')}`,
      `UV_THREADPOOL_SIZE=${UV_THREADPOOL_SIZE}, --w 0, ping count 1`,
    );
    row('listening after spawn', ms(listeningMs));
    row('1,001 peers known, start-up ping round over', s(peersKnownMs));
    row(
      'RSS idle, peers known',
      mb(rssIdle),
      `V8 live heap after the last full GC ${mb(liveIdle)}; ${against(rssIdle, TARGET_RSS_MB, ' MB')}`,
    );
    console.log('');
    console.log(`nodelabel=${SIM_SELECTOR}&check=ping&format=ndjson: time to the last node line`);
    for (const run of [...bounded, ...unbounded]) reportRun(run);
    console.log('');
    reportSeries('batch=0 (256 at a time)', bounded);
    reportSeries('batch=1000 (all at once)', unbounded);
    console.log('');
    console.log(`nodelabel=${SIM_SELECTOR}&check=ping (text), once`);
    reportText('text', text);
    console.log('');
    console.log('host=all&check=ping&format=ndjson, once: includes bench-node running ping itself');
    reportRun(withSelf);
    row(
      'host=all: bench-node own line (local ping of 1,000)',
      s(withSelf.selfMs ?? Number.NaN),
      against((withSelf.selfMs ?? Number.NaN) / 1000, TARGET_LAST_REPLY_S, ' s'),
    );
    row(
      'host=all: end of the answer',
      s(withSelf.endMs),
      against(withSelf.endMs / 1000, TARGET_LAST_REPLY_S, ' s'),
    );
    console.log('');
    console.log(
      `real-size answers: each node sends a copy of bench-node's own ping answer (${(Buffer.byteLength(own) / 1024).toFixed(0)} KiB, 1,000 peers)`,
    );
    for (const run of large) reportRun(run);
    reportSeries('real-size, batch=0', large);
    reportText('real-size, text', largeText);
    console.log('');
    row(
      'exporter RSS after everything, 7 s idle',
      mb(rssSettled),
      against(rssSettled, TARGET_RSS_MB, ' MB'),
    );
    row(
      'V8 live heap after the last full GC',
      mb(liveSettled),
      `${exporter.gc.fullCollections} full GCs in all`,
    );
    row(
      'local ping runs (start-up, host=all, own answer)',
      exporter.pingSeconds.map((v) => `${v.toFixed(1)} s`).join(', '),
    );
    row(
      'exporter warn/error log lines',
      String([...exporter.complaints.values()].reduce((a, b) => a + b, 0)),
      [...exporter.complaints].map(([msg, n]) => `${n}× ${msg}`).join('; '),
    );
  } finally {
    if (exporter !== undefined) await stopExporter(exporter.child);
    await simulated.close();
    await api.close();
    rmSync(workDir, { recursive: true, force: true });
  }
}

await main();
