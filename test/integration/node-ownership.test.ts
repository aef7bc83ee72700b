/**
 * Label ownership and acknowledgements written on the node (issue 19 part 4): a whole exporter
 * with in-memory GPUs, watching its node through the real client library on the fake API server,
 * while the test edits the node "by hand" as kubectl would.
 */

import { afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import { KubeConfig } from '@kubernetes/client-node';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Exporter } from '../../exporter/exporter.js';
import { acknowledgeNode } from '../../exporter/ack.js';
import { createKubeApi } from '../../exporter/k8s/kube-api.js';
import type { KubeApi } from '../../exporter/k8s/ports.js';
import { exporterOnFakeApi } from '../fakes/fake-api-exporter.js';
import { fakeNode, type FakeGpu } from '../fakes/gpu.js';
import { startFakeKubeApi, writeKubeconfig, type FakeKubeApi } from '../fakes/kube-api-server.js';
import { recordingLogger, type LogLine } from '../fakes/logger.js';

const NODE = 'node-c';
const LABEL = 'autopilot.ibm.com/gpuhealth';
const ACK = 'autopilot.ibm.com/acknowledge';
const ACKED = 'autopilot.ibm.com/acknowledged';

export interface OwnershipRig {
  readonly api: FakeKubeApi;
  readonly exporter: Exporter;
  readonly gpus: FakeGpu[];
  readonly logs: LogLine[];
  label(): string | undefined;
  annotations(): Record<string, string>;
}

let rig: OwnershipRig | undefined;

async function setup(api?: FakeKubeApi): Promise<OwnershipRig> {
  const server = api ?? (await startFakeKubeApi());
  server.addNode({ name: NODE, allocatableGpus: 2 });
  const gpus = fakeNode(2);
  const { logger, lines: logs } = recordingLogger();
  const exporter = exporterOnFakeApi({
    url: server.url,
    node: NODE,
    gpus,
    env: { NAMESPACE: 'autopilot', PERIODIC_CHECKS: 'remapped,gpupower' },
    logger,
  });
  // As serve does: the first read, then the watch.
  await exporter.cluster!.labeler.start();
  exporter.cluster!.nodeWatch.start();
  await server.waitForOpenWatches(1);
  rig = {
    api: server,
    exporter,
    gpus,
    logs,
    label: () => (server.node(NODE)?.metadata.labels ?? {})[LABEL],
    annotations: () => ({ ...server.node(NODE)?.metadata.annotations }),
  };
  return rig;
}

afterEach(async () => {
  if (rig === undefined) return;
  rig.exporter.cluster?.nodeWatch.stop();
  rig.exporter.cluster?.labeler.stop();
  await rig.exporter.runner.shutdown(1000);
  await rig.api.close();
  rig = undefined;
});

async function evict(r: OwnershipRig): Promise<void> {
  r.gpus[0]!.remapped = { correctable: 0, uncorrectable: 1, pending: false, failureOccurred: true };
  for (const check of ['remapped', 'gpupower']) await r.exporter.runner.run(check, {}, 'periodic');
  await r.exporter.cluster!.labeler.idle();
  expect(r.label()).toBe('EVICT');
}

async function waitUntil(condition: () => boolean, withinMs: number, what: string): Promise<void> {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > withinMs) throw new Error(`${what}: not within ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const editLabels = (r: OwnershipRig, edit: (labels: Record<string, string>) => void) =>
  r.api.editNode(NODE, (node) => {
    const labels = { ...node.metadata.labels };
    edit(labels);
    node.metadata.labels = labels;
  });

describe('the gpuhealth label belongs to the exporter', () => {
  test('removed by hand while the node is EVICT: restored within seconds, with a log line', async () => {
    const r = await setup();
    await evict(r);
    editLabels(r, (labels) => delete labels[LABEL]);
    expect(r.label()).toBeUndefined();
    await waitUntil(() => r.label() === 'EVICT', 3000, 'the label restored');
    const line = r.logs.find((l) => l.message.startsWith('gpuhealth label changed by someone'));
    expect(line).toMatchObject({
      level: 'warn',
      message: 'gpuhealth label changed by someone else; restoring it',
      fields: { previous: 'EVICT', value: null, restoring: 'EVICT', health: 'EVICT' },
    });
    expect(r.exporter.store.health().state).toBe('EVICT');
  });

  test('changed to WARN by hand while EVICT: restored to EVICT', async () => {
    const r = await setup();
    await evict(r);
    editLabels(r, (labels) => (labels[LABEL] = 'WARN'));
    await waitUntil(() => r.label() === 'EVICT', 3000, 'the label restored');
    expect(r.exporter.store.health().state).toBe('EVICT');
  });

  test('set EVICT → PASS by hand: adopted as an acknowledge, with the audit line', async () => {
    const r = await setup();
    await evict(r);
    editLabels(r, (labels) => (labels[LABEL] = 'PASS'));
    await waitUntil(() => r.exporter.store.health().state !== 'EVICT', 3000, 'the EVICT lifted');
    await r.exporter.cluster!.labeler.idle();
    // The acknowledged finding still fails; it no longer evicts (as after POST /acknowledge).
    expect(r.exporter.store.health().state).toBe('WARN');
    expect(r.label()).toBe('WARN');
    expect(r.logs.find((l) => l.message.includes('adopted as an acknowledge'))).toBeDefined();
    expect(r.logs.find((l) => l.message === 'EVICT acknowledged')?.fields).toMatchObject({
      audit: true,
      caller: 'node label',
      via: 'node-label',
      previousState: 'EVICT',
      state: 'WARN',
    });
  });

  test('the acknowledge annotation lifts the EVICT and is replaced by the record of it', async () => {
    const r = await setup();
    await evict(r);
    const request = '2025-05-01T13:45:07Z by alice: GPU 0 replaced';
    r.api.editNode(NODE, (node) => {
      node.metadata.annotations = { ...node.metadata.annotations, [ACK]: request };
    });
    await waitUntil(() => r.annotations()[ACK] === undefined, 3000, 'the request processed');
    await r.exporter.cluster!.labeler.idle();
    expect(r.exporter.store.health().state).toBe('WARN');
    expect(r.label()).toBe('WARN');
    expect(r.annotations()[ACKED]).toMatch(/^\d{4}-\d\d-\d\dT.* lifted EVICT; request: /);
    expect(r.annotations()[ACKED]).toContain(request);
    const status = await import('supertest').then(({ default: request }) =>
      request(r.exporter.apiApp.callback()).get('/results?format=json'),
    );
    expect((status.body as { health: { state: string } }).health.state).toBe('WARN');
    expect(r.logs.find((l) => l.message === 'EVICT acknowledged')?.fields).toMatchObject({
      caller: `node annotation (${request})`,
      via: 'node-annotation',
    });
  });

  test('a fresh fatal finding after a PASS written by the exporter is not taken for an acknowledge', async () => {
    const r = await setup();
    for (const check of ['remapped', 'gpupower'])
      await r.exporter.runner.run(check, {}, 'periodic');
    await r.exporter.cluster!.labeler.idle();
    expect(r.label()).toBe('PASS');
    await evict(r);
    // Let the watch deliver the exporter's own writes (PASS, then EVICT).
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(r.exporter.store.health().state).toBe('EVICT');
    expect(r.logs.filter((l) => l.message.includes('someone else'))).toEqual([]);
  });

  test('a watch the server ends is resumed from the last version seen: no read, no change missed', async () => {
    const r = await setup();
    await evict(r);
    const nodeReads = () => r.api.requests.filter((q) => q.path === `/api/v1/nodes/${NODE}`);
    const readsBefore = nodeReads().length;
    // The watch has served more than the loop's 1 s minimum: its end is the server's timeout.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    r.api.endWatches();
    // A change made while no watch is open: the resumed watch replays it.
    editLabels(r, (labels) => delete labels[LABEL]);
    await waitUntil(() => r.label() === 'EVICT', 5000, 'the label restored');
    await r.api.waitForOpenWatches(1, 3000);
    expect(nodeReads().filter((q) => q.method === 'GET').length).toBe(
      nodeReads()
        .slice(0, readsBefore)
        .filter((q) => q.method === 'GET').length,
    );
  });

  test('a 410 Gone on the watch: the node is read again and the watch resumes', async () => {
    const r = await setup();
    await evict(r);
    const nodeWatches = () =>
      r.api.requests.filter((q) => q.path === '/api/v1/nodes' && q.query.watch === 'true');
    const watchesBefore = nodeWatches().length;
    // The next watch request is refused as expired, as after an etcd compaction.
    r.api.failNext({ method: 'GET', pathPrefix: '/api/v1/nodes', watch: true, status: 410 });
    r.api.dropWatches();
    // A change made while no watch is open: only the re-read after the 410 can see it.
    editLabels(r, (labels) => delete labels[LABEL]);
    await waitUntil(
      () => r.logs.some((l) => l.message.startsWith('node watch expired (410 Gone)')),
      5000,
      'the 410 logged',
    );
    await waitUntil(() => r.label() === 'EVICT', 5000, 'the label restored after the re-read');
    await r.api.waitForOpenWatches(1, 3000);
    // The refused watch and the one that resumed, each with this node's field selector.
    const since = nodeWatches().slice(watchesBefore);
    expect(since.length).toBeGreaterThanOrEqual(2);
    for (const watch of since) expect(watch.query.fieldSelector).toBe(`metadata.name=${NODE}`);
  });
});

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'dist/exporter/main.js');

/** The built CLI, as a person runs it on a laptop: only a kubeconfig, no cluster environment. */
function runCli(
  args: readonly string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '', HOME: tmpdir() };
  const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

describe('autopilot ack <node>', () => {
  beforeAll(() => {
    execFileSync('npx', ['tsc', '-b', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
  }, 120_000);

  test('with a kubeconfig, lifts the EVICT of node-c against the API server, naming the caller', async () => {
    const r = await setup();
    r.api.addToken('alice-token', { username: 'alice@example.com', groups: ['sre'] });
    await evict(r);
    const kubeconfig = writeKubeconfig(
      mkdtempSync(join(tmpdir(), 'ack-')),
      r.api.url,
      'alice-token',
    );
    const result = await runCli([
      'ack',
      NODE,
      '--kubeconfig',
      kubeconfig,
      '--reason',
      'GPU 0 replaced',
      '--timeout',
      '20s',
    ]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`${NODE}: EVICT lifted; gpuhealth is now WARN`);
    expect(r.label()).toBe('WARN');
    expect(r.exporter.store.health().state).toBe('WARN');
    // The request went over the wire as a merge patch of the Node, with the caller's credentials.
    const patch = r.api.patches.find((p) => JSON.stringify(p.body).includes(ACK));
    expect(patch?.contentType).toBe('application/merge-patch+json');
    const audit = r.logs.find((l) => l.message === 'EVICT acknowledged');
    expect(String(audit?.fields?.caller)).toMatch(/ by alice@example\.com: GPU 0 replaced\)$/);
  }, 60_000);

  test('no exporter to take the request: exit 1 after --timeout, saying so', async () => {
    const api = await startFakeKubeApi();
    try {
      api.addNode({ name: NODE, labels: { [LABEL]: 'EVICT' } });
      const kubeconfig = writeKubeconfig(mkdtempSync(join(tmpdir(), 'ack-')), api.url);
      const result = await runCli(['ack', NODE, '--kubeconfig', kubeconfig, '--timeout', '2s']);
      expect(result.code).toBe(1);
      expect(result.stdout).toContain('no exporter took the request within 2 s');
      expect(result.stdout).toContain('the request is withdrawn');
      // Written, then taken back: an exporter starting later must not lift this EVICT.
      const written = api.patches.filter((p) => JSON.stringify(p.body).includes(ACK));
      expect(JSON.stringify(written[0]?.body)).toMatch(/ by kubeconfig user autopilot"/);
      expect(written[1]?.body).toMatchObject({
        metadata: { resourceVersion: expect.any(String), annotations: { [ACK]: null } },
      });
      expect(api.node(NODE)?.metadata.annotations?.[ACK]).toBeUndefined();
      expect(api.node(NODE)?.metadata.labels?.[LABEL]).toBe('EVICT');
    } finally {
      await api.close();
    }
  }, 60_000);

  test('exit 3 when the API refuses, 2 on bad usage, with the closest flag named', async () => {
    const api = await startFakeKubeApi();
    try {
      api.addNode({ name: NODE, labels: { [LABEL]: 'EVICT' } });
      api.failNext({ method: 'PATCH', pathPrefix: `/api/v1/nodes/${NODE}`, status: 403 });
      const kubeconfig = writeKubeconfig(mkdtempSync(join(tmpdir(), 'ack-')), api.url);
      const refused = await runCli(['ack', NODE, '--kubeconfig', kubeconfig]);
      expect(refused.code).toBe(3);
      expect(refused.stdout).toContain(`patch node ${NODE}: 403`);
    } finally {
      await api.close();
    }
    const typo = await runCli(['ack', NODE, '--timout', '1m']);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain('did you mean --timeout?');
    const none = await runCli(['ack']);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('ack needs exactly one node name');
    const help = await runCli(['ack', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: autopilot ack <node> [flags]');
    expect(help.stdout).toContain('--kubeconfig');
  }, 60_000);
});

describe('a request no exporter took is withdrawn only while it is still its own', () => {
  let api: FakeKubeApi | undefined;
  afterEach(async () => {
    await api?.close();
    api = undefined;
  });

  /**
   * `autopilot ack` in process against the fake API server, with `meanwhile` run once on the node
   * between the command's last read and its withdrawal patch (the race the precondition covers).
   */
  async function ackRacing(meanwhile: (server: FakeKubeApi) => void) {
    const server = (api = await startFakeKubeApi());
    server.addNode({ name: NODE, labels: { [LABEL]: 'EVICT' } });
    const kc = new KubeConfig();
    kc.loadFromFile(writeKubeconfig(mkdtempSync(join(tmpdir(), 'ack-')), server.url));
    const kube = createKubeApi(kc, 2000);
    let raced = false;
    const racing: KubeApi = {
      ...kube,
      patchNodeMetadata: (name, patch) => {
        if (patch.resourceVersion !== undefined && !raced) {
          raced = true;
          meanwhile(server);
        }
        return kube.patchNodeMetadata(name, patch);
      },
    };
    const lines: string[] = [];
    const code = await acknowledgeNode(
      { node: NODE, reason: 'GPU 0 replaced', timeoutMs: 100 },
      {
        kube: racing,
        whoAmI: () => Promise.resolve('alice'),
        now: () => Date.now(),
        sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
        print: (line) => lines.push(line),
        pollMs: 20,
      },
    );
    const withdrawals = server.patches.filter((p) =>
      JSON.stringify(p.body).includes('"resourceVersion"'),
    );
    return { server, code, lines, withdrawals, raced };
  }

  const annotations = (server: FakeKubeApi) => server.node(NODE)?.metadata.annotations ?? {};

  test("a person's newer request written meanwhile: the withdrawal is refused (409) and theirs stays", async () => {
    const theirs = '2025-05-01T13:50:00Z by bob: also replaced';
    const { server, code, lines, withdrawals, raced } = await ackRacing((s) =>
      s.editNode(NODE, (node) => {
        node.metadata.annotations = { ...node.metadata.annotations, [ACK]: theirs };
      }),
    );
    expect(raced).toBe(true);
    expect(withdrawals).toHaveLength(1);
    expect(annotations(server)[ACK]).toBe(theirs);
    expect(code).toBe(1);
    expect(lines.join('\n')).not.toContain('withdrawn');
  });

  test('the node changed otherwise meanwhile (409): read again, and the request withdrawn', async () => {
    const { server, code, lines, withdrawals } = await ackRacing((s) =>
      s.editNode(NODE, (node) => {
        node.metadata.labels = { ...node.metadata.labels, 'example.com/rack': 'r7' };
      }),
    );
    expect(withdrawals).toHaveLength(2);
    expect(annotations(server)[ACK]).toBeUndefined();
    expect(server.node(NODE)?.metadata.labels?.['example.com/rack']).toBe('r7');
    expect(code).toBe(1);
    expect(lines.at(-1)).toContain('the request is withdrawn');
  });

  test('an exporter takes the request at the last moment: nothing withdrawn, the lift reported', async () => {
    const { server, code, lines } = await ackRacing((s) =>
      s.editNode(NODE, (node) => {
        const { [ACK]: request, ...rest } = node.metadata.annotations ?? {};
        node.metadata.annotations = { ...rest, [ACKED]: `now lifted EVICT; request: ${request}` };
        node.metadata.labels = { ...node.metadata.labels, [LABEL]: 'PASS' };
      }),
    );
    expect(code).toBe(0);
    expect(annotations(server)[ACKED]).toContain('by alice: GPU 0 replaced');
    expect(lines).toContain(`${NODE}: EVICT lifted; gpuhealth is now PASS`);
  });
});
