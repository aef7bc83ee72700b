/**
 * The status page's routes (issue 22) through the real API app: content types, the CSP on every
 * HTML answer, the endpoint index still served to curl and format=json, the run form's token
 * reaching authorisation and cross-site posts refused, and in Kubernetes mode a page of 1,000
 * fake nodes (answering through a fake fetch) under 500 KB.
 */

import { afterEach, describe, expect, test } from '@jest/globals';
import type Koa from 'koa';
import request from 'supertest';
import type { ClusterDeps } from '../../exporter/api/cluster-status.js';
import type { HttpGet } from '../../exporter/cluster/http-get.js';
import type { Peer } from '../../exporter/cluster/peer-directory.js';
import { silentLogger } from '../../exporter/log.js';
import { apiAppOver } from '../fakes/api-app.js';
import { FakeKube } from '../fakes/kube.js';
import { createFakeCheck, createRealRunner, type RealRunner } from '../fakes/checks.js';

const NODE = 'node-a';
const TOKEN = 'page-secret';
const CSP = "default-src 'self'";
const BROWSER = { Accept: 'text/html,application/xhtml+xml,*/*;q=0.8' };
const PERIODIC = ['pciebw', 'remapped', 'dcgm', 'ping', 'gpupower', 'gpucount', 'nvlink'];
const PAGE_NODE = { nodeName: NODE, token: TOKEN, periodicChecks: PERIODIC };
const GPU_MODEL = 'NVIDIA H100 80GB HBM3';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

function checksRig(): RealRunner {
  const open = PERIODIC.map((name) => createFakeCheck({ name }));
  const exclusive = createFakeCheck({ name: 'gpumem', exclusive: true, usesGpu: true });
  const real = createRealRunner([...open, exclusive]);
  closers.push(() => real.runner.shutdown(5_000));
  return real;
}

function standalone(): { app: Koa; real: RealRunner } {
  const real = checksRig();
  const app = apiAppOver(real, PAGE_NODE, { gpuModel: GPU_MODEL });
  return { app, real };
}

/** A summary as a busy node of eight GPUs answers it: every periodic check ran, one failing. */
function fakeSummary(node: string, index: number): string {
  const states = ['PASS', 'WARN', 'EVICT', 'PASS', 'TESTING'];
  return JSON.stringify({
    node,
    state: states[index % states.length],
    reasons: index % 5 === 1 ? ['ping node-x: unreachable'] : [],
    gpu: { model: 'NVIDIA H100 80GB HBM3', count: 8 },
    checks: PERIODIC.map((check, i) => ({
      check,
      verdict: index % 5 === 2 && i === 1 ? 'FAIL' : 'PASS',
      reason:
        index % 5 === 2 && i === 1
          ? 'GPU 3: 2 rows pending remapping, an uncorrectable error awaits a reset'
          : '8 PASS',
      ageSeconds: 30 + i * 400 + index,
    })),
  });
}

function clusterApp(nodes: number): { app: Koa; asked: string[] } {
  const real = checksRig();
  const peers: Peer[] = Array.from({ length: nodes }, (_, i) => ({
    node: i === 0 ? NODE : `gpu-node-${String(i).padStart(4, '0')}`,
    address: `10.1.${Math.floor(i / 250)}.${i % 250}`,
    port: 3333,
    ready: true,
    pod: `autopilot-${i}`,
  }));
  const asked: string[] = [];
  const fetch: HttpGet = (url) => {
    asked.push(url);
    const node = decodeURIComponent(/\/node\/([^/]+)\/summary$/.exec(url)![1]!);
    const index = peers.findIndex((peer) => peer.node === node);
    return Promise.resolve(new Response(fakeSummary(node, index)));
  };
  const cluster: ClusterDeps = {
    kube: new FakeKube().api,
    peers: () => peers,
    fetch,
    now: () => Date.now(),
    nodeName: NODE,
    concurrency: 64,
    defaultPort: 3333,
    deadlineMs: () => 10_000,
    askSelf: () => Promise.reject(new Error('not asked in these tests')),
    status: () => ({ apiUp: true }),
    logger: silentLogger,
  };
  const app = apiAppOver(real, PAGE_NODE, { cluster, gpuModel: GPU_MODEL });
  return { app, asked };
}

describe('GET /: the page for browsers, the index for everyone else', () => {
  test('a browser gets HTML with the CSP; curl, format=json and Accept: json get the index', async () => {
    const { app } = standalone();
    const page = await request(app.callback()).get('/').set(BROWSER);
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.headers['content-security-policy']).toContain(CSP);
    expect(page.text).toContain(`<tr data-node="${NODE}" data-state=UNKNOWN>`);

    const curl = await request(app.callback()).get('/').set('Accept', '*/*');
    expect(curl.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(curl.text).toContain('Autopilot health-check API on node-a');
    const json = await request(app.callback()).get('/?format=json').set(BROWSER);
    expect(json.body).toMatchObject({ node: NODE });
    const accept = await request(app.callback()).get('/').set('Accept', 'application/json');
    const index = accept.body as { endpoints: { path: string }[] };
    expect(index.endpoints.map((e) => e.path)).toContain('/node/<name>');
  });

  test('the local row shows each check after it ran, and the filters narrow server-side', async () => {
    const { app, real } = standalone();
    await real.runner.run('ping', {}, 'api');
    const page = await request(app.callback()).get('/').set(BROWSER);
    expect(page.text).toMatch(/<tr data-node="node-a" data-state=PASS>.*<td class=PASS>PASS now/);
    const filtered = await request(app.callback()).get('/?state=EVICT').set(BROWSER);
    expect(filtered.text).not.toContain('<tr data-node=');
    expect(filtered.text).toContain('data-state=PASS data-count=1');
    const bad = await request(app.callback()).get('/?state=BROKEN').set(BROWSER);
    expect([bad.status, bad.headers['content-security-policy']]).toEqual([400, expect.any(String)]);
    expect(bad.text).toContain('state &quot;BROKEN&quot; is not one of');
  });

  test('assets are served from the exporter with cache headers and a validator', async () => {
    const { app } = standalone();
    for (const [path, type] of [
      ['/assets/status.css', 'text/css'],
      ['/assets/status.js', 'text/javascript'],
    ] as const) {
      const response = await request(app.callback()).get(path);
      expect(response.status).toBe(200);
      expect(response.headers['content-type']).toContain(type);
      expect(response.headers['cache-control']).toContain('max-age=');
      const again = await request(app.callback())
        .get(path)
        .set('If-None-Match', response.headers.etag!);
      expect(again.status).toBe(304);
    }
    expect((await request(app.callback()).get('/assets/other.js')).status).toBe(404);
  });
});

describe('the node view', () => {
  test('HTML with devices and history under the CSP; JSON with format=json; summary as JSON', async () => {
    const { app, real } = standalone();
    await real.runner.run('ping', {}, 'api');
    await real.runner.run('ping', {}, 'api');
    const page = await request(app.callback()).get(`/node/${NODE}`).set(BROWSER);
    expect(page.headers['content-security-policy']).toContain(CSP);
    expect(page.text).toContain('<tr data-check="ping" data-verdict="PASS">');
    expect(page.text).toContain('<table class="devices" data-check="ping">');
    expect(page.text.match(/<table id="history">[\s\S]*<\/table>/)![0]).toContain(
      'The last 2 runs',
    );
    const json = await request(app.callback()).get(`/node/${NODE}?format=json&runs=1`);
    const detail = json.body as { history: unknown[]; summary: unknown };
    expect(detail.history).toHaveLength(1);
    expect(detail.summary).toMatchObject({ node: NODE, state: 'PASS' });
    const summary = await request(app.callback()).get(`/node/${NODE}/summary`);
    expect((summary.body as { checks: unknown }).checks).toEqual([
      expect.objectContaining({ check: 'ping', verdict: 'PASS' }),
    ]);
    const other = await request(app.callback()).get('/node/node-z').set(BROWSER);
    expect(other.status).toBe(400);
    expect(other.headers['content-security-policy']).toContain(CSP);
  });
});

describe('POST /run', () => {
  const post = (app: Koa, body: string, headers: Readonly<Record<string, string>> = {}) =>
    request(app.callback())
      .post('/run')
      .set({ ...BROWSER, 'Content-Type': 'application/x-www-form-urlencoded', ...headers })
      .send(body);

  test('runs the checks through /status and answers an HTML results page', async () => {
    const { app, real } = standalone();
    const response = await post(app, 'check=ping&level=1', {
      'Sec-Fetch-Site': 'same-origin',
      Origin: 'http://127.0.0.1',
      Host: '127.0.0.1',
    });
    expect(response.status).toBe(200);
    expect(response.headers['content-security-policy']).toContain(CSP);
    expect(response.text).toContain(
      '<tr data-node="node-a" data-check="ping" data-verdict="PASS">',
    );
    expect(response.text).toContain('<p id="run-done" data-run="done">');
    expect(real.store.latest('ping')?.trigger).toBe('api');
  });

  test('the token in the body reaches the authoriser: refused without it, runs with it', async () => {
    const { app, real } = standalone();
    const refused = await post(app, 'check=gpumem&token=wrong');
    expect(refused.status).toBe(401);
    expect(refused.text).toContain('bearer token does not match AUTOPILOT_API_TOKEN');
    expect(refused.text).not.toContain('wrong');
    expect(real.store.latest('gpumem')).toBeUndefined();
    const allowed = await post(app, `check=gpumem&token=${TOKEN}`);
    expect(allowed.status).toBe(200);
    expect(allowed.text).toContain('data-check="gpumem" data-verdict="PASS"');
    expect(allowed.text).not.toContain(TOKEN);
  });

  test('a cross-site post is refused before anything runs', async () => {
    const { app, real } = standalone();
    const site = await post(app, 'check=ping', { 'Sec-Fetch-Site': 'cross-site' });
    const origin = await post(app, 'check=ping', {
      Origin: 'https://evil.example',
      Host: 'n:3333',
    });
    for (const response of [site, origin]) {
      expect(response.status).toBe(403);
      expect(response.headers['content-security-policy']).toContain(CSP);
      expect(response.text).toContain('the run form accepts only requests from this page');
    }
    expect(real.store.latest('ping')).toBeUndefined();
  });

  test('no check chosen, or a form that is not urlencoded, is a 400 page', async () => {
    const { app } = standalone();
    expect((await post(app, 'level=1')).text).toContain('choose one or more checks');
    const json = await request(app.callback())
      .post('/run')
      .set('Content-Type', 'application/json')
      .send('{"check":"ping"}');
    expect(json.status).toBe(400);
  });
});

describe('Kubernetes mode: every node asked for its summary, rows streamed', () => {
  test('1,000 nodes: one row each, counts per state, the page under 500 KB', async () => {
    const { app, asked } = clusterApp(1000);
    const page = await request(app.callback()).get('/').set(BROWSER);
    expect(page.status).toBe(200);
    expect(page.headers['content-security-policy']).toContain(CSP);
    expect(page.text.match(/<tr data-node=/g)).toHaveLength(1000);
    // node-a answers in process; the 999 others over the fake fetch, each for its summary only.
    expect(asked).toHaveLength(999);
    expect(asked[0]).toMatch(/^http:\/\/10\.1\.\d+\.\d+:3333\/node\/gpu-node-\d{4}\/summary$/);
    expect(page.text).toContain('data-state=EVICT data-count=200');
    expect(page.text).toContain('data-state=TESTING data-count=200');
    const bytes = Buffer.byteLength(page.text);
    console.log(`status page for 1,000 nodes x ${PERIODIC.length} checks: ${bytes} bytes`);
    expect(bytes).toBeLessThanOrEqual(500 * 1024);
  });

  test('the node filter asks only the matching nodes', async () => {
    const { app, asked } = clusterApp(50);
    const page = await request(app.callback()).get('/?node=NODE-004').set(BROWSER);
    expect(page.text.match(/<tr data-node=/g)).toHaveLength(10);
    expect(asked).toHaveLength(10);
  });
});
