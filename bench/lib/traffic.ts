/**
 * Traffic against a running exporter: an open-loop load generator (requests leave on a fixed
 * schedule whatever the answers do, so a slow server shows as latency instead of a lower rate)
 * and a soak driver that counts check runs and samples the process. Shared by bench/load.ts,
 * bench/soak.ts and test/e2e/load-soak.test.ts.
 */

import { Agent, request } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import {
  procSample,
  type ExporterProcess,
  type Ports,
  type ProcSample,
} from './exporter-process.js';
import { sleep } from './measure.js';

export interface Reply {
  readonly status: number;
  readonly contentType: string;
  readonly body: string;
}

export interface HttpClient {
  get(port: number, path: string, timeoutMs: number): Promise<Reply>;
  close(): void;
}

/** Below the 5 s that node:http servers announce for idle keep-alive connections. */
const KEEP_ALIVE_IDLE_MS = 4_000;

/**
 * GET over keep-alive connections, at most maxSockets per port: a burst waits for a free
 * connection in the agent's queue (and that wait counts in its latency) instead of opening
 * hundreds of sockets. The timeout covers the whole request, the queue included.
 */
export function createClient(maxSockets: number): HttpClient {
  // The exporter's servers (node:http) announce Keep-Alive: timeout=5 and close an idle connection
  // after 6 s, and Node 20's agent ignores the hint unless it has a timeout of its own: an idle
  // pooled connection was then now and again reused at the instant the server closed it, an
  // ECONNRESET on the client's side (nodejs/node#47130). With a timeout it drops them at 4 s.
  const agent = new Agent({ keepAlive: true, maxSockets, timeout: KEEP_ALIVE_IDLE_MS });
  /** When each pooled connection last finished an answer: a reset says how long it had idled. */
  const idleSince = new WeakMap<Socket, number>();
  return {
    get: (port, path, timeoutMs) =>
      new Promise<Reply>((resolve, reject) => {
        let connection = 'a new connection';
        let pooled: Socket | undefined;
        const fail = (error: unknown): void => {
          const code = (error as { code?: string }).code;
          const what = code ?? (error instanceof Error ? error.message : String(error));
          reject(new Error(`${what} on ${connection}`));
        };
        const req = request({ host: '127.0.0.1', port, path, agent }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', fail);
          // A connection that closes mid-body ends the response without `complete`.
          res.on('close', () => {
            if (!res.complete) {
              fail(new Error('answer cut short'));
              return;
            }
            if (pooled !== undefined) idleSince.set(pooled, performance.now());
            resolve({
              status: res.statusCode ?? 0,
              contentType: res.headers['content-type'] ?? '',
              body: Buffer.concat(chunks).toString(),
            });
          });
        });
        req.on('socket', (socket) => {
          pooled = socket;
          const since = idleSince.get(socket);
          if (since !== undefined) {
            connection = `a connection reused after ${((performance.now() - since) / 1000).toFixed(1)} s idle`;
          }
        });
        const timer = setTimeout(
          () => req.destroy(new Error(`timeout: no complete answer within ${timeoutMs} ms`)),
          timeoutMs,
        );
        req.on('close', () => clearTimeout(timer));
        req.on('error', fail);
        req.end();
      }),
    close: () => agent.destroy(),
  };
}

/** undefined when the answer is complete and sane, else what is wrong with it. */
export type Verify = (reply: Reply) => string | undefined;

/** /metrics: 200, the exposition content type, and the families every node exports, whole. */
export const verifyMetrics: Verify = (reply) => {
  if (reply.status !== 200) return `HTTP ${reply.status}`;
  if (!reply.contentType.startsWith('text/plain')) return `content type ${reply.contentType}`;
  for (const family of ['autopilot_node_health_state{', 'autopilot_check_runs_total{']) {
    if (!reply.body.includes(family)) return `no ${family.slice(0, -1)} in the exposition`;
  }
  return reply.body.endsWith('\n') ? undefined : 'exposition does not end with a newline';
};

/** /status?format=json on this node: 200, parseable, one result per named check, none ERROR. */
export function verifyStatus(checks: readonly string[]): Verify {
  return (reply) => {
    if (reply.status !== 200) return `HTTP ${reply.status}`;
    let body: { results?: { check: string; verdict: string; reason: string }[] };
    try {
      body = JSON.parse(reply.body) as typeof body;
    } catch {
      return 'body is not JSON';
    }
    const got = (body.results ?? []).map((r) => r.check).join(',');
    if (got !== checks.join(',')) return `results for [${got}], asked for [${checks.join(',')}]`;
    const error = body.results?.find((r) => r.verdict === 'ERROR');
    return error === undefined ? undefined : `ERROR verdict: ${error.check}: ${error.reason}`;
  };
}

/**
 * The checks the load benchmark's exporter runs at start-up (and /status answers from with
 * maxage): every GPU check the fakes serve without an exclusive lock, dcgm level 1 and ping, then
 * gpucount, which joins every periodic round whatever PERIODIC_CHECKS lists.
 */
export const LOAD_CHECKS = [
  'pciebw',
  'remapped',
  'gpupower',
  'ecc',
  'xid',
  'dcgm',
  'ping',
  'gpucount',
];
/** The light NVML checks that a share of /status requests runs for real. */
export const LIGHT_CHECKS = ['remapped', 'gpupower', 'ecc'];

export interface Endpoint {
  readonly name: string;
  readonly port: number;
  readonly path: string;
  /** Share of the requests, relative to the other endpoints' weights. */
  readonly weight: number;
  readonly verify: Verify;
}

/**
 * The load mix. 10 requests in 20: /metrics as Prometheus scrapes it. 8 in 20: /status with
 * maxage=1h, which pre-flight sends and which answers from the start-up round's results without
 * running anything (a plain /status would run pciebw, 3.6 s, and every request would wait for it).
 * 2 in 20: a plain /status of the light NVML checks, which runs them. Concurrent identical requests join the
 * run in progress, so that share produces a run whenever the previous one has ended, and each run
 * makes the next /metrics render the exposition afresh: scrapes while checks run.
 */
export function loadEndpoints(ports: Ports): Endpoint[] {
  return [
    { name: '/metrics', port: ports.metrics, path: '/metrics', weight: 10, verify: verifyMetrics },
    {
      name: '/status maxage=1h',
      port: ports.api,
      path: '/status?maxage=1h&format=json',
      weight: 8,
      verify: verifyStatus(LOAD_CHECKS),
    },
    {
      name: '/status light checks',
      port: ports.api,
      path: `/status?check=${LIGHT_CHECKS.join(',')}&format=json`,
      weight: 2,
      verify: verifyStatus(LIGHT_CHECKS),
    },
  ];
}

export interface LoadOptions {
  readonly rate: number;
  readonly durationS: number;
  /** Keep-alive connections per endpoint, at most. */
  readonly maxSockets: number;
  readonly timeoutMs: number;
  readonly endpoints: readonly Endpoint[];
}

export interface EndpointStats {
  readonly name: string;
  readonly path: string;
  requests: number;
  errors: number;
  /** From the scheduled start, so time queued behind a slow answer counts (no coordinated omission). */
  readonly latenciesMs: number[];
  /** Error kinds and how often each happened. */
  readonly errorKinds: Map<string, number>;
}

export interface LoadReport {
  readonly scheduled: number;
  readonly answered: number;
  readonly errors: number;
  /** Answers per second from the first scheduled request to the last answer. */
  readonly achievedRate: number;
  readonly elapsedS: number;
  /** How late the client itself sent a request at worst: a busy client adds its own delay. */
  readonly maxSendLagMs: number;
  readonly endpoints: readonly EndpointStats[];
}

/** Interleaves the endpoints by weight (smooth weighted round robin), the same order every run. */
function schedule(endpoints: readonly Endpoint[], count: number): number[] {
  const total = endpoints.reduce((sum, e) => sum + e.weight, 0);
  const current = endpoints.map(() => 0);
  const order: number[] = [];
  for (let n = 0; n < count; n++) {
    let best = 0;
    for (const [i, endpoint] of endpoints.entries()) {
      current[i] = (current[i] ?? 0) + endpoint.weight;
      if ((current[i] ?? 0) > (current[best] ?? 0)) best = i;
    }
    current[best] = (current[best] ?? 0) - total;
    order.push(best);
  }
  return order;
}

function countKind(kinds: Map<string, number>, kind: string): void {
  kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
}

export async function runOpenLoop(options: LoadOptions): Promise<LoadReport> {
  // A pool per endpoint: requests that wait for a check run would otherwise hold the connections
  // that cheap answers queue for, and the client would measure its own queue.
  const clients = options.endpoints.map(() => createClient(options.maxSockets));
  const stats: EndpointStats[] = options.endpoints.map((e) => ({
    name: e.name,
    path: e.path,
    requests: 0,
    errors: 0,
    latenciesMs: [],
    errorKinds: new Map(),
  }));
  const total = Math.round(options.rate * options.durationS);
  const order = schedule(options.endpoints, total);
  const intervalMs = 1000 / options.rate;
  const inFlight = new Set<Promise<void>>();
  let lastAnswer = 0;
  let maxSendLagMs = 0;

  const send = (index: number, dueAt: number): void => {
    const which = order[index] ?? 0;
    const endpoint = options.endpoints[which];
    const stat = stats[which];
    const client = clients[which];
    if (endpoint === undefined || stat === undefined || client === undefined) return;
    stat.requests++;
    const done = client.get(endpoint.port, endpoint.path, options.timeoutMs).then(
      (reply) => {
        lastAnswer = performance.now();
        stat.latenciesMs.push(lastAnswer - dueAt);
        const wrong = endpoint.verify(reply);
        if (wrong === undefined) return;
        stat.errors++;
        countKind(stat.errorKinds, wrong);
      },
      (error: unknown) => {
        lastAnswer = performance.now();
        stat.errors++;
        countKind(stat.errorKinds, error instanceof Error ? error.message : String(error));
      },
    );
    inFlight.add(done);
    void done.finally(() => inFlight.delete(done));
  };

  const started = performance.now();
  // One timer per turn rather than one per request: all requests due by now leave together.
  for (let next = 0; next < total;) {
    const now = performance.now();
    if (started + next * intervalMs <= now) {
      maxSendLagMs = Math.max(maxSendLagMs, now - (started + next * intervalMs));
    }
    for (; next < total && started + next * intervalMs <= now; next++) {
      send(next, started + next * intervalMs);
    }
    await sleep(1);
  }
  await Promise.all(inFlight);
  for (const client of clients) client.close();
  const elapsedS = (lastAnswer - started) / 1000;
  const errors = stats.reduce((sum, s) => sum + s.errors, 0);
  const answered = stats.reduce((sum, s) => sum + s.latenciesMs.length, 0);
  return {
    scheduled: total,
    answered,
    errors,
    achievedRate: answered / elapsedS,
    elapsedS,
    maxSendLagMs,
    endpoints: stats,
  };
}

/** A loop of identical /status requests; the lanes run side by side and never share a check. */
export interface SoakLane {
  readonly name: string;
  readonly checks: readonly string[];
  /** Fraction of the runs this lane makes. */
  readonly share: number;
}

/**
 * NVML checks in process (koffi calls on the thread pool) beside checks that spawn: ping runs the
 * ping command once per peer, dcgm runs dcgmi (the fakes: a shell script each, which runs cat).
 * Half the runs each: left alone, the NVML lane is about twenty times faster and the runs that
 * can leak processes and pipes would be a few percent of the soak.
 */
export const SOAK_LANES: readonly SoakLane[] = [
  { name: 'NVML', checks: ['remapped', 'gpupower', 'ecc'], share: 0.5 },
  { name: 'subprocesses', checks: ['ping', 'dcgm'], share: 0.5 },
];

/**
 * Open fds the idle exporter may hold at the end above its idle baseline without it being called a
 * leak: descriptors opened once, late and for good (a thread pool's, a lazily opened file), not per
 * run. A leak per run shows as hundreds.
 */
export const FD_TOLERANCE = 2;

/** What the soak's exporter runs at start-up: every check of the lanes. */
export const SOAK_CHECKS = SOAK_LANES.flatMap((lane) => lane.checks);

export interface SoakOptions {
  /** Check runs measured, after the warm-up. */
  readonly runs: number;
  readonly warmupRuns: number;
  readonly sampleEvery: number;
  readonly timeoutMs: number;
  /** How long to wait at most for the process to become idle (fds and children steady). */
  readonly settleMs: number;
}

export interface SoakSample {
  /** Runs since the end of the warm-up. */
  readonly runs: number;
  readonly seconds: number;
  readonly rssMB: number;
  readonly fds: number;
  readonly children: number;
}

export interface SoakReport {
  /** Idle, after the warm-up. */
  readonly baseline: ProcSample;
  /** Idle, after the last run. */
  readonly end: ProcSample;
  readonly samples: readonly SoakSample[];
  /** Runs after the warm-up, counted from the results the API answered. */
  readonly runs: number;
  readonly seconds: number;
  readonly requests: number;
  /** Requests that failed or answered wrong (ERROR verdicts included). */
  readonly errors: number;
  readonly errorKinds: ReadonlyMap<string, number>;
  /** Runs by verdict and by check, the warm-up included. */
  readonly verdicts: ReadonlyMap<string, number>;
  readonly byCheck: ReadonlyMap<string, number>;
}

/** Polls until fd and child counts hold still for 300 ms (or settleMs passes): no run in flight. */
async function settle(pid: number, settleMs: number): Promise<ProcSample> {
  const started = Date.now();
  let last = procSample(pid);
  let steadySince = Date.now();
  while (Date.now() - started < settleMs) {
    await sleep(50);
    const now = procSample(pid);
    if (now.fds !== last.fds || now.descendants.length !== last.descendants.length) {
      steadySince = Date.now();
    } else if (Date.now() - steadySince >= 300) {
      return now;
    }
    last = now;
  }
  return last;
}

export async function runSoak(
  exporter: ExporterProcess,
  options: SoakOptions,
  onSample: (sample: SoakSample) => void = () => undefined,
): Promise<SoakReport> {
  // One connection per lane, so that the lanes really run side by side.
  const client = createClient(SOAK_LANES.length);
  const errorKinds = new Map<string, number>();
  const verdicts = new Map<string, number>();
  const byCheck = new Map<string, number>();
  let runs = 0;
  let requests = 0;
  let errors = 0;
  let consecutiveErrors = 0;

  const laneRuns = SOAK_LANES.map(() => 0);
  /** Runs `total` more, shared between the lanes; a lane ahead of the others waits for them. */
  const drive = async (total: number, afterRequest: () => void): Promise<void> => {
    const from = [...laneRuns];
    const goals = SOAK_LANES.map((lane) => Math.ceil(total * lane.share));
    const progress = (i: number): number => ((laneRuns[i] ?? 0) - (from[i] ?? 0)) / (goals[i] ?? 1);
    const slowest = (): number => Math.min(...SOAK_LANES.map((_, i) => progress(i)));
    await Promise.all(
      SOAK_LANES.map(async (lane, i) => {
        const path = `/status?check=${lane.checks.join(',')}&format=json`;
        const verify = verifyStatus(lane.checks);
        // A dead or wedged exporter would otherwise be asked forever.
        while (progress(i) < 1 && consecutiveErrors < 20) {
          // Evenly mixed all along, so that the first and the last samples see the same load.
          if (progress(i) > slowest() + 0.01) {
            await sleep(2);
            continue;
          }
          requests++;
          try {
            const reply = await client.get(exporter.ports.api, path, options.timeoutMs);
            const wrong = verify(reply);
            if (wrong === undefined) consecutiveErrors = 0;
            else {
              errors++;
              consecutiveErrors++;
              countKind(errorKinds, wrong);
            }
            for (const result of resultsIn(reply)) {
              countKind(verdicts, result.verdict);
              countKind(byCheck, result.check);
              laneRuns[i] = (laneRuns[i] ?? 0) + 1;
              runs++;
            }
          } catch (error) {
            errors++;
            consecutiveErrors++;
            countKind(errorKinds, error instanceof Error ? error.message : String(error));
          }
          afterRequest();
        }
      }),
    );
  };

  await drive(options.warmupRuns, () => undefined);
  const baseline = await settle(exporter.pid, options.settleMs);
  const base = runs;
  const started = performance.now();
  const sample = (): SoakSample => {
    const now = procSample(exporter.pid);
    const taken = {
      runs: runs - base,
      seconds: (performance.now() - started) / 1000,
      rssMB: now.rssMB,
      fds: now.fds,
      children: now.descendants.length,
    };
    onSample(taken);
    return taken;
  };
  const samples = [sample()];
  let nextSample = options.sampleEvery;
  await drive(options.runs, () => {
    if (runs - base < nextSample) return;
    samples.push(sample());
    while (nextSample <= runs - base) nextSample += options.sampleEvery;
  });
  const seconds = (performance.now() - started) / 1000;
  // The keep-alive connection stays open: it was open at the baseline too.
  const end = await settle(exporter.pid, options.settleMs);
  client.close();
  return {
    baseline,
    end,
    samples,
    runs: runs - base,
    seconds,
    requests,
    errors,
    errorKinds,
    verdicts,
    byCheck,
  };
}

/** The results in a /status answer: one per check run. */
function resultsIn(reply: Reply): { check: string; verdict: string }[] {
  if (reply.status !== 200) return [];
  try {
    const body = JSON.parse(reply.body) as { results?: { check: string; verdict: string }[] };
    return body.results ?? [];
  } catch {
    return [];
  }
}

/** The sum of autopilot_check_runs_total over checks and verdicts, from /metrics. */
export async function checkRunsTotal(metricsPort: number): Promise<number> {
  const body = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  return [...body.matchAll(/^autopilot_check_runs_total\{[^}]*\} (\d+)$/gm)].reduce(
    (sum, match) => sum + Number(match[1]),
    0,
  );
}
