/**
 * The HTTP API on :3333 and its two side listeners, driven over HTTP with a real check runner,
 * store and GPU lock, and fake checks whose runs the tests control.
 */

import { afterEach, describe, expect, test } from '@jest/globals';
import type Koa from 'koa';
import request from 'supertest';
import type { Response } from 'supertest';
import { createMetricsApp, createReadinessApp } from '../../exporter/api/side-apps.js';
import type { CheckRunner } from '../../exporter/check-runner.js';
import type { CheckRun } from '../../exporter/checks/check.js';
import { silentLogger } from '../../exporter/log.js';
import { createMetricsRegistry } from '../../exporter/metrics/registry.js';
import { apiAppOver } from '../fakes/api-app.js';
import {
  createFakeCheck,
  createRealRunner,
  type FakeCheck,
  type Hold,
  type RealRunner,
} from '../fakes/checks.js';

const NODE = 'node-a';
const TOKEN = 'standalone-secret';
const TEXT = 'text/plain; charset=utf-8';
const JSON_TYPE = 'application/json; charset=utf-8';
const STANDALONE = 'which this exporter is not connected to (standalone mode)';
const LEVEL_HINT = 'is not a level; use 1, 2, 3, 4';

interface Rig extends RealRunner {
  readonly app: Koa;
  readonly alpha: FakeCheck;
  readonly beta: FakeCheck;
  readonly slow: FakeCheck;
  readonly fast: FakeCheck;
  readonly crashy: FakeCheck;
  readonly fakes: readonly FakeCheck[];
  /** Check names in the order the API asked the runner for them. */
  readonly runnerCalls: readonly string[];
  /** Resolves once the API has asked the runner for `count` runs in total. */
  runnerCalled(count: number): Promise<void>;
  /** Holds the check's runs; the hold is released after the test whatever happens. */
  hold(check: FakeCheck): Hold;
  /** Runs of every fake check so far. */
  totalRuns(): number;
  get(path: string, headers?: Readonly<Record<string, string>>): Promise<Response>;
}

const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

function setup(periodicChecks: readonly string[] = ['alpha', 'beta']): Rig {
  const alpha = createFakeCheck({ name: 'alpha', tag: 'ALPHA' });
  // beta reads its level from `r`, the one check parameter /status forwards besides pingnodes.
  const beta = createFakeCheck({ name: 'beta', tag: 'BETA', levelParam: 'r', usesGpu: true });
  const slow = createFakeCheck({ name: 'slow', tag: 'SLOW', banner: 'Slow test' });
  const fast = createFakeCheck({ name: 'fast', tag: 'FAST', banner: 'Fast test' });
  const crashy = createFakeCheck({ name: 'crashy', tag: 'CRASHY', banner: 'Crashy test' });
  const fakes = [alpha, beta, slow, fast, crashy];
  const real = createRealRunner(fakes);

  const runnerCalls: string[] = [];
  const watchers: { readonly count: number; readonly resolve: () => void }[] = [];
  const runner: CheckRunner = {
    run: (name, params, trigger) => {
      runnerCalls.push(name);
      for (const watcher of watchers.filter((w) => runnerCalls.length >= w.count)) {
        watchers.splice(watchers.indexOf(watcher), 1);
        watcher.resolve();
      }
      return real.runner.run(name, params, trigger);
    },
    active: () => real.runner.active(),
    shutdown: (graceMs) => real.runner.shutdown(graceMs),
  };
  const app = apiAppOver(real, { nodeName: NODE, token: TOKEN, periodicChecks }, { runner });

  const holds: Hold[] = [];
  cleanups.push(async () => {
    for (const hold of holds) hold.release();
    await real.runner.shutdown(5_000);
  });

  return {
    ...real,
    app,
    alpha,
    beta,
    slow,
    fast,
    crashy,
    fakes,
    runnerCalls,
    runnerCalled: (count) =>
      new Promise<void>((resolve) => {
        if (runnerCalls.length >= count) resolve();
        else watchers.push({ count, resolve });
      }),
    hold(check) {
      const hold = check.hold();
      holds.push(hold);
      return hold;
    },
    totalRuns: () => fakes.reduce((sum, check) => sum + check.runCount, 0),
    get: (path, headers = {}) => {
      let req = request(app.callback()).get(path);
      for (const [name, value] of Object.entries(headers)) req = req.set(name, value);
      return req.then((response) => response);
    },
  };
}

const iso = (ms: number): string => new Date(ms).toISOString();

function latest(rig: Rig, check: string): CheckRun {
  const run = rig.store.latest(check);
  if (run === undefined) throw new Error(`${check} has no result in the store`);
  return run;
}

/** The JSON form of an API-triggered run: its times come from the stored run. */
function runJson(
  run: CheckRun,
  outcome: { verdict: string; reason: string; devices: readonly unknown[]; params?: object },
): unknown {
  return {
    check: run.check,
    verdict: outcome.verdict,
    reason: outcome.reason,
    trigger: 'api',
    params: outcome.params ?? {},
    startedAt: iso(run.startedAt),
    finishedAt: iso(run.finishedAt),
    durationSeconds: (run.finishedAt - run.startedAt) / 1000,
    devices: outcome.devices,
    text: `[[ ${run.check.toUpperCase()} ]] ${outcome.verdict}\n`,
  };
}

/** The JSON form of a PASS run of a fake check with its default outcome. */
function passJson(run: CheckRun, params: Readonly<Record<string, string>> = {}): unknown {
  return runJson(run, {
    verdict: 'PASS',
    reason: '1 PASS',
    params,
    devices: [
      { id: '0', verdict: 'PASS', reason: 'all good', fatal: false, evidence: { score: 1 } },
    ],
  });
}

/** The /status JSON answer for a single fresh PASS run. */
function freshPassAnswer(run: CheckRun, params: Readonly<Record<string, string>> = {}): unknown {
  return {
    node: NODE,
    cached: false,
    health: { state: 'PASS', since: iso(run.finishedAt), reasons: [] },
    results: [passJson(run, params)],
  };
}

/** Makes beta's next runs fail on device 1 with reason "broken". */
function breakBeta(rig: Rig): void {
  rig.beta.succeedWith({
    devices: [{ id: '1', verdict: 'FAIL', reason: 'broken', evidence: {} }],
  });
}

/** The JSON form of a run of beta after breakBeta. */
function brokenBetaJson(run: CheckRun): unknown {
  return runJson(run, {
    verdict: 'FAIL',
    reason: '1 FAIL',
    devices: [{ id: '1', verdict: 'FAIL', reason: 'broken', fatal: false, evidence: {} }],
  });
}

function body(response: Response): unknown {
  return JSON.parse(response.text) as unknown;
}

/** Fails instead of hanging when `promise` does not settle within `ms`. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe('readiness app', () => {
  test('GET /readinessprobe answers 201 with Autopilot’s exact JSON body', async () => {
    const response = await request(createReadinessApp().callback()).get('/readinessprobe');
    expect(response.status).toBe(201);
    expect(response.headers['content-type']?.split(';')[0]).toBe('application/json');
    expect(response.text).toBe('{"Name":"readinessProbe","Body":"ready"}\n');
  });

  test('any other path is 404', async () => {
    const response = await request(createReadinessApp().callback()).get('/status');
    expect(response.status).toBe(404);
    expect(response.text).toBe('not found: readiness is served on /readinessprobe\n');
  });
});

describe('metrics app', () => {
  function metricsRig(): { rig: Rig; app: Koa; contentType: string } {
    const rig = setup();
    const registry = createMetricsRegistry({
      store: rig.store,
      checks: rig.checks,
      host: { nodeName: NODE, cpuModel: 'Test CPU', gpuModel: 'Test GPU' },
      build: { version: '9.8.7', nodejs: 'v20.99.0' },
    });
    return {
      rig,
      app: createMetricsApp(registry, silentLogger),
      contentType: registry.contentType,
    };
  }

  test('GET /metrics answers 200 in the Prometheus text format with the known families', async () => {
    const { rig, app, contentType } = metricsRig();
    await rig.runner.run('alpha', {}, 'api');
    const response = await request(app.callback()).get('/metrics');
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe(contentType);
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    const lines = response.text.split('\n');
    expect(lines).toContain('# TYPE autopilot_build_info gauge');
    expect(lines).toContain('autopilot_build_info{version="9.8.7",nodejs="v20.99.0"} 1');
    expect(lines).toContain('autopilot_check_success{check="alpha"} 1');
    expect(lines).toContain('autopilot_node_health_state{state="PASS"} 1');
  });

  test('any other path is 404', async () => {
    const { app } = metricsRig();
    const response = await request(app.callback()).get('/status');
    expect(response.status).toBe(404);
    expect(response.text).toBe('not found: metrics are served on /metrics\n');
  });
});

describe('GET /status', () => {
  test('check=<name> runs that check and answers its Autopilot text', async () => {
    const rig = setup();
    const response = await rig.get('/status?check=alpha');
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe(TEXT);
    expect(response.text).toBe('[[ ALPHA ]] PASS\n');
    expect(rig.fakes.map((c) => [c.name, c.runCount])).toEqual([
      ['alpha', 1],
      ['beta', 0],
      ['slow', 0],
      ['fast', 0],
      ['crashy', 0],
    ]);
    expect(latest(rig, 'alpha').trigger).toBe('api');
  });

  test.each([
    { asked: 'format=json', path: '/status?check=alpha&format=json', headers: {} },
    {
      asked: 'Accept: application/json',
      path: '/status?check=alpha',
      headers: { Accept: 'application/json' },
    },
  ])('$asked answers JSON: the node, its health and the fresh results', async (c) => {
    const rig = setup();
    const response = await rig.get(c.path, c.headers);
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe(JSON_TYPE);
    expect(body(response)).toEqual(freshPassAnswer(latest(rig, 'alpha')));
  });

  test('format=text wins over Accept: application/json', async () => {
    const rig = setup();
    const response = await rig.get('/status?check=alpha&format=text', {
      Accept: 'application/json',
    });
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe(TEXT);
    expect(response.text).toBe('[[ ALPHA ]] PASS\n');
  });

  test('a failing check is reported in the health and results', async () => {
    const rig = setup();
    breakBeta(rig);
    const response = await rig.get('/status?check=beta&format=json');
    expect(response.status).toBe(200);
    const run = latest(rig, 'beta');
    expect(body(response)).toEqual({
      node: NODE,
      cached: false,
      health: { state: 'WARN', since: iso(run.finishedAt), reasons: ['beta 1: broken'] },
      results: [brokenBetaJson(run)],
    });
  });

  test.each(['/status', '/status?check=all'])(
    '%s runs the periodic checks, in their order',
    async (path) => {
      const rig = setup(['beta', 'alpha']);
      const response = await rig.get(path);
      expect(response.status).toBe(200);
      expect(response.text).toBe('[[ BETA ]] PASS\n[[ ALPHA ]] PASS\n');
      expect(rig.runnerCalls).toEqual(['beta', 'alpha']);
      expect(rig.totalRuns()).toBe(2);
    },
  );

  test('check=a,b runs both, in the order asked', async () => {
    const rig = setup();
    const response = await rig.get('/status?check=fast,alpha&format=json');
    expect(response.status).toBe(200);
    expect(rig.runnerCalls).toEqual(['fast', 'alpha']);
    expect(body(response)).toEqual({
      node: NODE,
      cached: false,
      health: { state: 'PASS', since: iso(latest(rig, 'fast').finishedAt), reasons: [] },
      results: [passJson(latest(rig, 'fast')), passJson(latest(rig, 'alpha'))],
    });
    // Sequential: alpha started after fast had finished.
    expect(latest(rig, 'alpha').startedAt).toBeGreaterThanOrEqual(latest(rig, 'fast').finishedAt);
  });

  test('a check named twice, or named and included by all, runs once', async () => {
    const rig = setup(['alpha', 'beta']);
    const response = await rig.get('/status?check=alpha,%20alpha,all,beta');
    expect(response.status).toBe(200);
    expect(response.text).toBe('[[ ALPHA ]] PASS\n[[ BETA ]] PASS\n');
    expect(rig.runnerCalls).toEqual(['alpha', 'beta']);
    expect(rig.alpha.runCount).toBe(1);
    expect(rig.beta.runCount).toBe(1);
  });

  test.each(['all', NODE, `${NODE},all`, ''])('host=%s is accepted', async (host) => {
    const rig = setup();
    const response = await rig.get(`/status?check=alpha&host=${host}`);
    expect(response.status).toBe(200);
    expect(response.text).toBe('[[ ALPHA ]] PASS\n');
    expect(rig.alpha.runCount).toBe(1);
  });

  test.each(['None', ''])(
    'job and nodelabel set to "%s" mean no selector and are accepted',
    async (v) => {
      const rig = setup();
      const response = await rig.get(`/status?check=alpha&job=${v}&nodelabel=${v}`);
      expect(response.status).toBe(200);
      expect(rig.alpha.runCount).toBe(1);
    },
  );

  test('batch within range is accepted', async () => {
    const rig = setup();
    const response = await rig.get('/status?check=alpha&batch=2');
    expect(response.status).toBe(200);
    expect(rig.alpha.runCount).toBe(1);
  });

  test('r is validated by the check and passed to its run', async () => {
    const rig = setup();
    const response = await rig.get('/status?check=beta&r=3&format=json');
    expect(response.status).toBe(200);
    expect(rig.beta.runParams).toEqual([{ r: '3' }]);
    expect(body(response)).toMatchObject({ results: [{ check: 'beta', params: { r: '3' } }] });
  });

  const rejected: readonly (readonly [string, string, string])[] = [
    [
      'an unknown check',
      'check=alpha,nope',
      'unknown check "nope"; known checks: alpha, beta, slow, fast, crashy, all',
    ],
    ['an empty check', 'check=', 'check is empty; name one or more checks, or all'],
    ['a check list of commas', 'check=,%20,', 'check is empty; name one or more checks, or all'],
    [
      'another host',
      'check=alpha&host=node-b',
      `host "node-b" is not this node (${NODE}); other nodes are reached through Kubernetes, ${STANDALONE}`,
    ],
    [
      'another host next to this one',
      `check=alpha&host=${NODE},node-b`,
      `host "node-b" is not this node (${NODE}); other nodes are reached through Kubernetes, ${STANDALONE}`,
    ],
    [
      'a job selector',
      'check=alpha&job=ns:app=x',
      `job selects nodes through Kubernetes, ${STANDALONE}`,
    ],
    [
      'a node label selector',
      'check=alpha&nodelabel=x',
      `nodelabel selects nodes through Kubernetes, ${STANDALONE}`,
    ],
    [
      'a DCGM level that is no number',
      'check=alpha&r=zz',
      'r "zz" is not a whole number from 1 to 4',
    ],
    ['a DCGM level out of range', 'check=alpha&r=5', 'r "5" is not a whole number from 1 to 4'],
    [
      'a batch that is no number',
      'check=alpha&batch=abc',
      'batch "abc" is not a whole number from 0 to 100000',
    ],
    [
      'a negative batch',
      'check=alpha&batch=-1',
      'batch "-1" is not a whole number from 0 to 100000',
    ],
    [
      'an unsupported format',
      'check=alpha&format=xml',
      'format "xml" is not supported; use text, json or (for /status across nodes) ndjson',
    ],
    ['a repeated parameter', 'check=alpha&check=beta', 'parameter check is given more than once'],
    // r is checked by /status itself, before any check sees it or runs.
    ['a bad check parameter', 'check=beta&r=9', 'r "9" is not a whole number from 1 to 4'],
    [
      'a bad parameter of a later check',
      'check=alpha,beta&r=0',
      'r "0" is not a whole number from 1 to 4',
    ],
  ];

  test.each(rejected)('400 in text for %s', async (_, query, message) => {
    const rig = setup();
    const response = await rig.get(`/status?${query}`);
    expect(response.status).toBe(400);
    expect(response.headers['content-type']).toBe(TEXT);
    expect(response.text).toBe(`error: ${message}\n`);
    expect(rig.runnerCalls).toEqual([]);
    expect(rig.totalRuns()).toBe(0);
  });

  test.each(rejected)(
    '400 in JSON for %s (Accept: application/json)',
    async (_, query, message) => {
      const rig = setup();
      const response = await rig.get(`/status?${query}`, { Accept: 'application/json' });
      expect(response.status).toBe(400);
      expect(response.headers['content-type']).toBe(JSON_TYPE);
      expect(body(response)).toEqual({ error: message });
      expect(rig.totalRuns()).toBe(0);
    },
  );

  test('400 in JSON with format=json', async () => {
    const rig = setup();
    const response = await rig.get('/status?check=nope&format=json');
    expect(response.status).toBe(400);
    expect(response.headers['content-type']).toBe(JSON_TYPE);
    expect(body(response)).toEqual({
      error: 'unknown check "nope"; known checks: alpha, beta, slow, fast, crashy, all',
    });
    expect(rig.totalRuns()).toBe(0);
  });
});

describe('per-check endpoint /<name>', () => {
  test('answers the banner line, then the check’s text', async () => {
    const rig = setup();
    const response = await rig.get('/fast');
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe(TEXT);
    expect(response.text).toBe('Fast test\n[[ FAST ]] PASS\n');
    expect(rig.fast.runCount).toBe(1);
    expect(rig.runnerCalls).toEqual(['fast']);
  });

  test('format=json answers JSON, with the check’s parameters', async () => {
    const rig = setup();
    const response = await rig.get('/alpha?format=json&level=3');
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe(JSON_TYPE);
    expect(body(response)).toEqual(freshPassAnswer(latest(rig, 'alpha'), { level: '3' }));
    expect(rig.alpha.runParams).toEqual([{ level: '3' }]);
  });

  test('Accept: application/json answers JSON', async () => {
    const rig = setup();
    const response = await rig.get('/alpha', { Accept: 'application/json' });
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe(JSON_TYPE);
    expect(body(response)).toMatchObject({
      node: NODE,
      cached: false,
      results: [{ check: 'alpha' }],
    });
  });

  test('a bad parameter is 400 in text, and nothing runs', async () => {
    const rig = setup();
    const response = await rig.get('/alpha?level=9');
    expect(response.status).toBe(400);
    expect(response.headers['content-type']).toBe(TEXT);
    expect(response.text).toBe(`error: level "9" ${LEVEL_HINT}\n`);
    expect(rig.totalRuns()).toBe(0);
  });

  test('a bad parameter is 400 in JSON with format=json, and nothing runs', async () => {
    const rig = setup();
    const response = await rig.get('/alpha?level=9&format=json');
    expect(response.status).toBe(400);
    expect(body(response)).toEqual({ error: `level "9" ${LEVEL_HINT}` });
    expect(rig.totalRuns()).toBe(0);
  });

  test('a repeated parameter or an unsupported format is 400, and nothing runs', async () => {
    const rig = setup();
    const repeated = await rig.get('/alpha?level=1&level=2');
    expect(repeated.status).toBe(400);
    expect(repeated.text).toBe('error: parameter level is given more than once\n');
    const xml = await rig.get('/alpha?format=xml');
    expect(xml.status).toBe(400);
    expect(xml.text).toBe(
      'error: format "xml" is not supported; use text, json or (for /status across nodes) ndjson\n',
    );
    expect(rig.totalRuns()).toBe(0);
  });
});

describe('GET /: the index of endpoints', () => {
  test('answers 200 in text, one line per endpoint, each check included, running nothing', async () => {
    const rig = setup();
    const response = await rig.get('/');
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe(TEXT);
    const lines = response.text.split('\n');
    expect(lines[0]).toBe(
      `Autopilot health-check API on ${NODE}. Endpoints (JSON with format=json; docs/api.md):`,
    );
    const paths = lines.slice(1, -1).map((line) => line.trim().split(' ')[0]);
    expect(paths).toStrictEqual([
      '/status',
      '/results',
      ...rig.fakes.map((check) => `/${check.name}`),
      '/invasive',
      '/acknowledge',
      '/node/<name>',
      '/node/<name>/summary',
      '/run',
    ]);
    expect(response.text).toContain('lift a sticky EVICT (POST only)');
    expect(rig.totalRuns()).toBe(0);
  });

  test('format=json answers the node and the endpoints', async () => {
    const rig = setup();
    const response = await rig.get('/?format=json');
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe(JSON_TYPE);
    const answer = body(response) as {
      node: string;
      endpoints: { path: string; methods: string; description: string }[];
    };
    expect(answer.node).toBe(NODE);
    expect(answer.endpoints.map((e) => e.path)).toContain('/alpha');
    expect(answer.endpoints.find((e) => e.path === '/acknowledge')?.methods).toBe('POST');
  });

  test('every endpoint it lists is routed: none answers 404', async () => {
    const rig = setup();
    const answer = body(await rig.get('/?format=json')) as { endpoints: { path: string }[] };
    for (const { path } of answer.endpoints) {
      // format=nope is refused before anything runs (/invasive refuses the unauthorised caller
      // first); /acknowledge is POST only, so a GET is 405. None of them is 404.
      const response = await rig.get(`${path}?format=nope`);
      expect([path, response.status]).not.toStrictEqual([path, 404]);
      expect([path, response.status === 200]).toStrictEqual([path, false]);
    }
  });

  test('an unsupported format is 400', async () => {
    const rig = setup();
    const response = await rig.get('/?format=xml');
    expect(response.status).toBe(400);
    expect(response.text).toContain('format "xml" is not supported');
  });
});

describe('GET /results', () => {
  test('before any run: says so in text and runs nothing', async () => {
    const rig = setup();
    const response = await rig.get('/results');
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe(TEXT);
    expect(response.text).toBe(`Node ${NODE} health UNKNOWN\nNo check has run yet.\n`);
    expect(rig.totalRuns()).toBe(0);
    expect(rig.runnerCalls).toEqual([]);
  });

  test('before any run: an empty JSON list with cached:true', async () => {
    const rig = setup();
    const response = await rig.get('/results?format=json');
    expect(response.status).toBe(200);
    expect(body(response)).toEqual({
      node: NODE,
      cached: true,
      health: { state: 'UNKNOWN', since: null, reasons: [] },
      results: [],
    });
    expect(rig.totalRuns()).toBe(0);
  });

  test('answers the latest result of each check, in JSON, without running anything', async () => {
    const rig = setup();
    await rig.get('/status?check=beta');
    await rig.get('/status?check=alpha');
    breakBeta(rig);
    await rig.get('/status?check=beta');
    expect(rig.totalRuns()).toBe(3);

    const response = await rig.get('/results', { Accept: 'application/json' });
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe(JSON_TYPE);
    expect(rig.totalRuns()).toBe(3);
    expect(rig.runnerCalls).toEqual(['beta', 'alpha', 'beta']);
    const alpha = latest(rig, 'alpha');
    const beta = latest(rig, 'beta');
    expect(body(response)).toEqual({
      node: NODE,
      cached: true,
      health: { state: 'WARN', since: iso(beta.finishedAt), reasons: ['beta 1: broken'] },
      // In the order of the checks, not of the runs.
      results: [passJson(alpha), brokenBetaJson(beta)],
    });
  });

  test('answers the latest results in Autopilot-style text blocks', async () => {
    const rig = setup();
    await rig.get('/status?check=alpha');
    breakBeta(rig);
    await rig.get('/status?check=beta');
    const response = await rig.get('/results');
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe(TEXT);
    expect(response.text).toBe(
      [
        `Node ${NODE} health WARN`,
        '  beta 1: broken',
        '',
        `--- alpha: PASS at ${iso(latest(rig, 'alpha').finishedAt)} (api) ---`,
        '[[ ALPHA ]] PASS',
        '',
        `--- beta: FAIL at ${iso(latest(rig, 'beta').finishedAt)} (api) ---`,
        '[[ BETA ]] FAIL',
        '',
      ].join('\n'),
    );
    expect(rig.totalRuns()).toBe(2);
  });

  test('check=<name> narrows the answer to that check', async () => {
    const rig = setup();
    await rig.get('/status?check=alpha,beta');
    const response = await rig.get('/results?check=beta&format=json');
    expect(response.status).toBe(200);
    expect(body(response)).toMatchObject({ cached: true, results: [{ check: 'beta' }] });
    expect((body(response) as { results: unknown[] }).results).toHaveLength(1);
    expect(rig.totalRuns()).toBe(2);
  });

  test.each(['/acknowledge', '/nope'])(
    'TRACE %s, a method the router does not route, is 405, not 501',
    async (path) => {
      const response = await request(setup().app.callback()).trace(path);
      expect(response.status).toBe(405);
      expect(response.text).toBe('error: method TRACE is not allowed\n');
    },
  );

  test('an unknown check is 400', async () => {
    const rig = setup();
    const response = await rig.get('/results?check=unknown');
    expect(response.status).toBe(400);
    expect(response.text).toBe(
      'error: unknown check "unknown"; known checks: alpha, beta, slow, fast, crashy, all\n',
    );
    expect(rig.totalRuns()).toBe(0);
  });
});

describe('concurrency', () => {
  test('an identical request joins the run in progress', async () => {
    const rig = setup();
    const hold = rig.hold(rig.slow);
    const first = rig.get('/status?check=slow&format=json');
    await within(2_000, 'the first run of slow', hold.waiting(1));
    const second = rig.get('/status?check=slow&format=json');
    await within(2_000, 'the second request reaching the runner', rig.runnerCalled(2));
    hold.release();
    const [a, b] = await within(2_000, 'both requests', Promise.all([first, second]));

    expect(rig.slow.runCount).toBe(1);
    expect(rig.runnerCalls).toEqual(['slow', 'slow']);
    expect(a.status).toBe(200);
    expect(b.status).toBe(200);
    const expected = freshPassAnswer(latest(rig, 'slow'));
    expect(body(a)).toEqual(expected);
    expect(body(b)).toEqual(expected);
    expect(rig.store.history('slow')).toHaveLength(1);
  });

  test('the API never waits on a running check it was not asked for', async () => {
    const rig = setup();
    const hold = rig.hold(rig.slow);
    let slowAnswered = false;
    const first = rig.get('/status?check=slow');
    void first.then(
      () => (slowAnswered = true),
      () => (slowAnswered = true),
    );
    await within(2_000, 'the run of slow', hold.waiting(1));

    const results = await within(2_000, '/results', rig.get('/results'));
    expect(results.status).toBe(200);
    expect(results.text).toBe(`Node ${NODE} health UNKNOWN\nNo check has run yet.\n`);

    const fast = await within(2_000, '/status?check=fast', rig.get('/status?check=fast'));
    expect(fast.status).toBe(200);
    expect(fast.text).toBe('[[ FAST ]] PASS\n');

    const perCheck = await within(2_000, '/fast', rig.get('/fast'));
    expect(perCheck.text).toBe('Fast test\n[[ FAST ]] PASS\n');

    const cached = await within(2_000, '/results', rig.get('/results?format=json'));
    expect(body(cached)).toMatchObject({ cached: true, results: [{ check: 'fast' }] });

    expect(slowAnswered).toBe(false);
    expect(rig.store.latest('slow')).toBeUndefined();
    expect(rig.runner.active()).toEqual(['slow']);

    hold.release();
    const answer = await within(2_000, 'slow after release', first);
    expect(answer.status).toBe(200);
    expect(answer.text).toBe('[[ SLOW ]] PASS\n');
    expect(rig.slow.runCount).toBe(1);
  });
});

describe('errors', () => {
  test('a check that throws is a 200 answer with verdict ERROR', async () => {
    const rig = setup();
    rig.crashy.crashWith(new Error('boom'));
    const response = await rig.get('/status?check=crashy&format=json');
    expect(response.status).toBe(200);
    const run = latest(rig, 'crashy');
    expect(body(response)).toEqual({
      node: NODE,
      cached: false,
      health: { state: 'UNKNOWN', since: null, reasons: [] },
      results: [runJson(run, { verdict: 'ERROR', reason: 'check crashed: boom', devices: [] })],
    });
    expect(rig.crashy.runCount).toBe(1);
  });

  test('a check that throws is a 200 text answer on both endpoints', async () => {
    const rig = setup();
    rig.crashy.crashWith(new Error('kaput'));
    const status = await rig.get('/status?check=crashy');
    expect(status.status).toBe(200);
    expect(status.text).toBe('[[ CRASHY ]] ERROR\n');
    const perCheck = await rig.get('/crashy');
    expect(perCheck.status).toBe(200);
    expect(perCheck.text).toBe('Crashy test\n[[ CRASHY ]] ERROR\n');
    expect(latest(rig, 'crashy').reason).toBe('check crashed: kaput');
    expect(rig.crashy.runCount).toBe(2);
  });

  test.each(['/nope', '/status/alpha', '/metrics'])('unknown path %s is 404', async (path) => {
    const rig = setup();
    const response = await rig.get(path);
    expect(response.status).toBe(404);
    expect(rig.totalRuns()).toBe(0);
  });
});
