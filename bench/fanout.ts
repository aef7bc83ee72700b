/**
 * Benchmark of the cluster-wide /status fan-out at 1,000 and 10,000 simulated nodes: the real
 * exporter process in Kubernetes mode, the fake API server listing the nodes in EndpointSlices of
 * 100 (as the peer directory reads them). One HTTP server in this process plays every node on
 * its own loopback address (127.0.x.y, which Linux answers for without any set-up) and answers each
 * /status after 100 ms. Per scale it measures the time to the first byte, the time to the last
 * node's answer (targets at 10,000: ≤ 1 s and ≤ 60 s) and the exporter process's RSS while it
 * fans out (target ≤ 256 MB), in the three streamed forms. No assertions: it prints.
 *
 *   node dist/bench/fanout.js [--nodes 1000,10000] [--runs 3]
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

const REPLY_AFTER_MS = 100;
/** The EndpointSlice controller's default maximum of endpoints per slice. */
const ENDPOINTS_PER_SLICE = 100;
const RSS_EVERY_MS = 50;
const TARGET_FIRST_BYTE_S = 1;
const TARGET_ALL_ANSWERS_S = 60;
const TARGET_RSS_MB = 256;
const NAMESPACE = 'autopilot';
const SERVICE = 'autopilot-healthchecks';
const SELF = 'bench-node';
const SIM_SELECTOR = 'pool=sim';
const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
/** The flags and thread pool `npm start` gives node; keep them in step with package.json. */
const NODE_FLAGS = ['--max-semi-space-size=2', '--optimize-for-size'];
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

function simulatedNodes(count: number): SimulatedNode[] {
  return Array.from({ length: count }, (_, i) => ({
    name: `sim-${String(i + 1).padStart(5, '0')}`,
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

function startExporter(kubeconfig: string, concurrency: number): Promise<Exporter> {
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
      AUTOPILOT_FANOUT_CONCURRENCY: String(concurrency),
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

/** A streamed answer: when its headers and first byte came, and each node's entry. */
interface TimedAnswer {
  readonly status: number;
  readonly headersMs: number;
  readonly firstByteMs: number;
  /** When each node's entry arrived, in arrival order. */
  readonly nodeMs: readonly number[];
  readonly nodes: number;
  readonly answered: number;
  readonly otherOutcomes: ReadonlyMap<string, { count: number; detail: string }>;
  readonly endMs: number;
  readonly bytes: number;
}

type Form = 'ndjson' | 'text' | 'json';

/**
 * Reads the answer as it streams, line by line, without keeping it (10,000 text blocks are tens
 * of MB): a node entry is an NDJSON node line, a text `Node Status:` line, or a line of the JSON
 * document's nodes array (the exporter writes one node per line).
 */
function timedGet(url: string, form: Form): Promise<TimedAnswer> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const request = get(url, (res) => {
      const headersMs = performance.now() - started;
      let firstByteMs = Number.NaN;
      const nodeMs: number[] = [];
      let answered = 0;
      const otherOutcomes = new Map<string, { count: number; detail: string }>();
      let pending = '';
      let bytes = 0;
      const line = (text: string, ms: number): void => {
        const entry = nodeEntry(text, form);
        if (entry === undefined) return;
        nodeMs.push(ms);
        if (entry.outcome === 'answered') answered++;
        else {
          const seen = otherOutcomes.get(entry.outcome);
          otherOutcomes.set(entry.outcome, {
            count: (seen?.count ?? 0) + 1,
            detail: seen?.detail ?? entry.detail,
          });
        }
      };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        const ms = performance.now() - started;
        if (Number.isNaN(firstByteMs)) firstByteMs = ms;
        bytes += Buffer.byteLength(chunk);
        pending += chunk;
        const complete = pending.split('\n');
        pending = complete.pop() ?? '';
        for (const text of complete) line(text, ms);
      });
      res.on('end', () => {
        const endMs = performance.now() - started;
        if (pending !== '') line(pending, endMs);
        resolve({
          status: res.statusCode ?? 0,
          headersMs,
          firstByteMs,
          nodeMs,
          nodes: nodeMs.length,
          answered,
          otherOutcomes,
          endMs,
          bytes,
        });
      });
      res.on('error', reject);
    });
    request.on('error', reject);
  });
}

function nodeEntry(text: string, form: Form): { outcome: string; detail: string } | undefined {
  if (form === 'text') {
    if (!text.startsWith('Node Status:')) return undefined;
    return text === 'Node Status: OK'
      ? { outcome: 'answered', detail: '' }
      : { outcome: text.slice('Node Status: '.length), detail: '' };
  }
  // The JSON document's nodes array has one node a line, each but the last followed by a comma.
  const json = form === 'json' ? text.replace(/,$/, '') : text;
  if (!json.startsWith('{"type":"node"')) return undefined;
  const node = JSON.parse(json) as { outcome: string; detail: string };
  return { outcome: node.outcome, detail: node.detail };
}

/** Samples the process's RSS until stopped; the peak is what a memory limit would meet. */
function sampleRss(pid: number): () => number {
  let peak = rssMB(pid);
  const timer = setInterval(() => {
    peak = Math.max(peak, rssMB(pid));
  }, RSS_EVERY_MS);
  return () => {
    clearInterval(timer);
    return Math.max(peak, rssMB(pid));
  };
}

interface FanoutFigures {
  readonly label: string;
  readonly answer: TimedAnswer;
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

async function measure(
  label: string,
  url: string,
  form: Form,
  exporter: Exporter,
  served: { counts: ServedCounts; reset: () => void },
): Promise<FanoutFigures> {
  served.reset();
  exporter.gc.peakBefore = 0;
  const fullBefore = exporter.gc.fullCollections;
  const rssBefore = rssMB(exporter.pid);
  const stop = sampleRss(exporter.pid);
  const answer = await timedGet(url, form);
  const rssPeak = stop();
  return {
    label,
    answer,
    served: { ...served.counts },
    rssBefore,
    rssPeak,
    rssAfter: rssMB(exporter.pid),
    heapPeak: exporter.gc.peakBefore,
    fullCollections: exporter.gc.fullCollections - fullBefore,
    liveAfterFull: exporter.gc.liveAfterFull,
  };
}

function row(label: string, value: string, note = ''): void {
  console.log(`  ${label.padEnd(52)} ${value.padStart(14)}   ${note}`);
}

function against(value: number, target: number, unit: string): string {
  const ratio = value / target;
  return `target ≤ ${target}${unit}: ratio ${ratio.toFixed(3)}, ${ratio <= 1 ? 'within target' : 'OVER TARGET'}`;
}

const ms = (value: number): string => `${value.toFixed(0)} ms`;
const s = (value: number): string => `${(value / 1000).toFixed(2)} s`;
const mb = (value: number): string => `${value.toFixed(1)} MB`;

function lastNodeMs(f: FanoutFigures): number {
  return f.answer.nodeMs.length === 0 ? Number.NaN : Math.max(...f.answer.nodeMs);
}

function reportRun(f: FanoutFigures): void {
  const a = f.answer;
  const others = [...a.otherOutcomes].map(([k, v]) => `${v.count} ${k} (${v.detail})`).join(', ');
  row(
    f.label,
    s(lastNodeMs(f)),
    `first byte ${ms(a.firstByteMs)} (headers ${ms(a.headersMs)}), first node ${ms(a.nodeMs[0] ?? Number.NaN)}, median ${ms(percentile(a.nodeMs, 50))}, end ${ms(a.endMs)}`,
  );
  row(
    '',
    '',
    `HTTP ${a.status}, ${a.nodes} node entries, ${a.answered} answered${others === '' ? '' : `, ${others}`}, ${(a.bytes / 1024 / 1024).toFixed(1)} MiB`,
  );
  row(
    '',
    '',
    `served ${f.served.requests} requests on ${f.served.connections} connections, max in flight ${f.served.maxInFlight}, misrouted ${f.served.misrouted}, unmarked ${f.served.unmarked}`,
  );
  row(
    '',
    '',
    `RSS ${mb(f.rssBefore)} before, ${mb(f.rssPeak)} peak, ${mb(f.rssAfter)} after; V8 heap peak ${mb(f.heapPeak)}, ${f.fullCollections} full GCs, live after the last ${mb(f.liveAfterFull)}`,
  );
}

function reportScale(scale: ScaleFigures): void {
  // The targets are read on host=all; the nodelabel run adds the API server's list before it.
  const all = scale.runs.filter((r) => r.label.startsWith('host=all'));
  const firstBytes = all.map((r) => r.answer.firstByteMs);
  const lasts = all.map(lastNodeMs);
  const peaks = all.map((r) => r.rssPeak);
  console.log('');
  console.log(
    `${scale.nodes.toLocaleString('en')} simulated nodes (${Math.ceil(scale.nodes / ENDPOINTS_PER_SLICE)} EndpointSlices), AUTOPILOT_FANOUT_CONCURRENCY=${scale.concurrency}`,
  );
  row(
    'listening after spawn; peers known, ping round over',
    `${ms(scale.listeningMs)}`,
    s(scale.peersKnownMs),
  );
  row(
    'RSS idle, peers known',
    mb(scale.rssIdle),
    `V8 live heap after the last full GC ${mb(scale.liveIdle)}`,
  );
  for (const run of scale.runs) reportRun(run);
  row(
    `time to first byte, max of ${all.length}`,
    ms(Math.max(...firstBytes)),
    against(Math.max(...firstBytes) / 1000, TARGET_FIRST_BYTE_S, ' s'),
  );
  row(
    `time to all answers, median of ${all.length}`,
    s(percentile(lasts, 50)),
    against(percentile(lasts, 50) / 1000, TARGET_ALL_ANSWERS_S, ' s'),
  );
  row(
    `time to all answers, max of ${all.length}`,
    s(Math.max(...lasts)),
    against(Math.max(...lasts) / 1000, TARGET_ALL_ANSWERS_S, ' s'),
  );
  row(
    'most requests in flight at the nodes',
    String(Math.max(...all.map((r) => r.served.maxInFlight))),
    `bound ${scale.concurrency}`,
  );
  row(
    `exporter RSS peak, max of ${all.length}`,
    mb(Math.max(...peaks)),
    against(Math.max(...peaks), TARGET_RSS_MB, ' MB'),
  );
  row(
    'exporter warn/error log lines',
    String([...scale.complaints.values()].reduce((a, b) => a + b, 0)),
    [...scale.complaints].map(([msg, n]) => `${n}× ${msg}`).join('; '),
  );
}

async function waitFor(what: string, condition: () => Promise<boolean>, withinMs: number) {
  const started = performance.now();
  while (!(await condition())) {
    if (performance.now() - started > withinMs)
      throw new Error(`${what}: not within ${withinMs} ms`);
    await sleep(200);
  }
}

interface ScaleFigures {
  readonly nodes: number;
  readonly concurrency: number;
  readonly listeningMs: number;
  readonly peersKnownMs: number;
  readonly rssIdle: number;
  readonly liveIdle: number;
  readonly runs: readonly FanoutFigures[];
  readonly complaints: ReadonlyMap<string, number>;
}

/** The fake API server's view: the nodes, and the Service's EndpointSlices of 100 endpoints. */
function listNodes(api: FakeKubeApi, nodes: readonly SimulatedNode[], port: number): void {
  for (const node of nodes) api.addNode({ name: node.name, labels: { pool: 'sim' } });
  api.addNode({ name: SELF, labels: { pool: 'exporter' } });
  for (let first = 0; first < nodes.length; first += ENDPOINTS_PER_SLICE) {
    api.upsertEndpointSlice(
      NAMESPACE,
      endpointSlice({
        name: `${SERVICE}-sim-${String(first / ENDPOINTS_PER_SLICE + 1).padStart(3, '0')}`,
        service: SERVICE,
        ports: [{ name: 'healthcheck', port }],
        endpoints: nodes.slice(first, first + ENDPOINTS_PER_SLICE).map((n) => ({
          address: n.address,
          nodeName: n.name,
          podName: `autopilot-${n.name}`,
          ready: true,
        })),
      }),
    );
  }
}

/** One exporter process against `count` simulated nodes: NDJSON `runs` times, then text and JSON. */
async function runScale(count: number, runs: number, concurrency: number): Promise<ScaleFigures> {
  const nodes = simulatedNodes(count);
  const api: FakeKubeApi = await startFakeKubeApi();
  const simulated = await startSimulatedNodes(nodes);
  const workDir = mkdtempSync(join(tmpdir(), 'autopilot-fanout-bench-'));
  let exporter: Exporter | undefined;
  try {
    listNodes(api, nodes, simulated.port);
    const spawned = performance.now();
    exporter = await startExporter(writeKubeconfig(workDir, api.url), concurrency);
    const listeningMs = performance.now() - spawned;
    // No EndpointSlice names bench-node itself: host=all is then the simulated nodes alone, as
    // the peer directory lists them (with itself in, it would ping 10,000 peers in process and
    // measure the ping check rather than the fan-out).
    const base = `http://127.0.0.1:${exporter.apiPort}`;
    const running = exporter;
    await waitFor(
      `the exporter knows ${count} peers and its start-up ping round is over`,
      async () => {
        const body = (await (await fetch(`${base}/results?format=json`)).json()) as {
          kubernetes?: { peers?: { known?: number } };
        };
        return body.kubernetes?.peers?.known === count && running.pingSeconds.length >= 1;
      },
      180_000,
    );
    const peersKnownMs = performance.now() - spawned;
    await sleep(1000);
    const rssIdle = rssMB(exporter.pid);
    const liveIdle = exporter.gc.liveAfterFull;
    // host=all, the default: the nodes come from the peer directory, no API call before the
    // answer starts. nodelabel lists the nodes through the API server first.
    const all = `${base}/status?check=ping`;
    const bySelector = `${all}&nodelabel=${encodeURIComponent(SIM_SELECTOR)}`;
    const figures: FanoutFigures[] = [];
    const forms: [string, string, Form][] = [
      ...Array.from({ length: runs }, (_, i): [string, string, Form] => [
        `host=all, ndjson, run ${i + 1}`,
        `${all}&format=ndjson`,
        'ndjson',
      ]),
      ['host=all, text (Autopilot report)', all, 'text'],
      ['host=all, json (one document)', `${all}&format=json`, 'json'],
      [
        `nodelabel=${SIM_SELECTOR} (API list first), ndjson`,
        `${bySelector}&format=ndjson`,
        'ndjson',
      ],
    ];
    for (const [label, url, form] of forms) {
      figures.push(await measure(label, url, form, exporter, simulated));
      await sleep(500);
    }
    return {
      nodes: count,
      concurrency,
      listeningMs,
      peersKnownMs,
      rssIdle,
      liveIdle,
      runs: figures,
      complaints: exporter.complaints,
    };
  } finally {
    if (exporter !== undefined) await stopExporter(exporter.child);
    await simulated.close();
    await api.close();
    rmSync(workDir, { recursive: true, force: true });
  }
}

function numbers(flag: string, fallback: string): number[] {
  const at = process.argv.indexOf(flag);
  const value = at < 0 ? fallback : (process.argv[at + 1] ?? '');
  const parsed = value.split(',').map(Number);
  if (parsed.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new Error(
      `${flag} ${JSON.stringify(value)} is not positive whole numbers, comma-separated`,
    );
  }
  return parsed;
}

async function main(): Promise<void> {
  const scales = numbers('--nodes', '1000,10000');
  const [runs] = numbers('--runs', '3');
  const [concurrency] = numbers('--concurrency', '128');
  const results: ScaleFigures[] = [];
  for (const count of scales) results.push(await runScale(count, runs!, concurrency!));
  console.log('Autopilot cluster-wide /status fan-out benchmark');
  console.log('================================================');
  row(
    'simulated nodes',
    scales.map((n) => n.toLocaleString('en')).join(', '),
    `one server on 127.0.x.y, each /status answered after ${REPLY_AFTER_MS} ms; RSS is the exporter process's (VmRSS every ${RSS_EVERY_MS} ms)`,
  );
  row(
    'exporter',
    `node ${NODE_FLAGS.join(' ')}`,
    `UV_THREADPOOL_SIZE=${UV_THREADPOOL_SIZE}, --w 0, ping count 1`,
  );
  for (const scale of results) reportScale(scale);
}

await main();
