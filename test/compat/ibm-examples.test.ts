/**
 * The compatibility suite: every example of IBM Autopilot's README, USAGE, SETUP, HEALTH_CHECKS and
 * chart README (test/compat/ibm-examples.json, each with its file and line at IBM's commit; the docs
 * themselves are copied verbatim under test/fixtures/ibm/docs-09a177d/) replayed against the built
 * exporter, as an Autopilot user would type it:
 *
 * - standalone: one exporter on the fake libnvidia-ml, the probe library on the fake CUDA runtime
 *   and the fake dcgmi, with AUTOPILOT_API_ACCESS=open (IBM's open API), and one with the defaults,
 *   which must refuse the invasive examples and name the setting;
 * - Kubernetes mode: two such exporters (hostname, whose GPU 4 copies at 5.3 GB/s under --bw 8 and
 *   whose dcgmi reports PCIe and memory failures, and a healthy hostname2) behind the fake API
 *   server, with IBM's open API and AUTOPILOT_EVICT_ON=dcgm, and a third with the defaults;
 * - the chart: the kubectl, helm and values examples rendered with helm.
 *
 * It also checks that the data file misses no fenced example of the docs, and that docs/upgrading.md
 * has a row for every example and for every flag, variable, values key, endpoint, label, metric,
 * alert and text of IBM's that the data file lists.
 */

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { parse } from 'yaml';
import { renderChart } from '../deploy/helm.js';
import { waitForListening, type ExporterPorts } from '../fakes/exporter-ports.js';
import {
  endpointSlice,
  startFakeKubeApi,
  writeKubeconfig,
  type FakeKubeApi,
} from '../fakes/kube-api-server.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
const DOCS = join(ROOT, 'test', 'fixtures', 'ibm', 'docs-09a177d');
const DOC_FILES = [
  'README.md',
  'USAGE.md',
  'SETUP.md',
  'HEALTH_CHECKS.md',
  'helm-charts/autopilot/README.md',
];

interface ModeExpectation {
  readonly ask?: string;
  readonly substitute?: Readonly<Record<string, string>>;
  readonly status?: number;
  readonly inOrder?: readonly string[];
  /** Per node of a cluster-wide report, patterns in order within that node's block. */
  readonly blocks?: Readonly<Record<string, readonly string[]>>;
  readonly node?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
}

interface Example {
  readonly id: string;
  readonly file: string;
  readonly line: number;
  readonly text: string;
  readonly kind: 'api' | 'output' | 'chart' | 'labels' | 'values' | 'not-replayed';
  readonly upgrading: string;
  readonly request?: string;
  readonly placeholders?: Readonly<Record<string, string>>;
  readonly sameAs?: string;
  readonly of?: string;
  readonly protected?: string;
  readonly standalone?: ModeExpectation;
  readonly kubernetes?: ModeExpectation;
  readonly chart?: {
    readonly kind: string;
    readonly name: string;
    readonly port?: number;
    readonly podLabel?: readonly [string, string];
    readonly label?: readonly [string, string];
  };
  readonly values?: Readonly<Record<string, unknown>>;
  readonly expectRendered?: {
    readonly nodeSelector?: readonly [string, string];
    readonly args?: readonly string[];
    readonly env?: readonly [string, string];
    readonly podAnnotation?: readonly [string, string];
  };
  readonly why?: string;
}

interface InventoryItem {
  readonly name: string;
  readonly source: string;
}

const DATA = JSON.parse(readFileSync(join(import.meta.dirname, 'ibm-examples.json'), 'utf8')) as {
  readonly examples: readonly Example[];
  readonly inventory: Readonly<Record<string, readonly InventoryItem[] | string>>;
};
const EXAMPLES = DATA.examples;
const byKind = (kind: Example['kind']): Example[] => EXAMPLES.filter((e) => e.kind === kind);
const docLines = (file: string): string[] => readFileSync(join(DOCS, file), 'utf8').split('\n');

/** Each pattern (multiline) must match, each after the end of the previous match. */
function expectInOrder(body: string, patterns: readonly string[]): void {
  let rest = body;
  for (const pattern of patterns) {
    const match = new RegExp(pattern, 'm').exec(rest);
    if (match === null) {
      throw new Error(`/${pattern}/ does not match after the previous pattern in:\n${body}`);
    }
    rest = rest.slice(match.index + match[0].length);
  }
}

/** One node's block of a cluster-wide report, from its `Autopilot Endpoint:` line. */
function nodeBlock(body: string, node: string): string {
  const block = body
    .split(/^(?=Autopilot Endpoint: )/m)
    .find((part) => part.includes(`\nNode: ${node}\n`));
  if (block === undefined) throw new Error(`no block for node ${node} in:\n${body}`);
  return block;
}

function expectReport(body: string, want: ModeExpectation): void {
  expectInOrder(body, want.inOrder ?? []);
  for (const [node, patterns] of Object.entries(want.blocks ?? {})) {
    expectInOrder(nodeBlock(body, node), patterns);
  }
}

/** The fenced blocks of a Markdown file: [first line, last line] inside the fences, 1-based. */
function fencedBlocks(lines: readonly string[]): [number, number][] {
  const blocks: [number, number][] = [];
  let start: number | undefined;
  lines.forEach((line, index) => {
    if (!/^\s*```/.test(line)) return;
    if (start === undefined) start = index + 2;
    else {
      blocks.push([start, index]);
      start = undefined;
    }
  });
  return blocks;
}

describe('the data file and docs/upgrading.md', () => {
  test('every example is at its file and line of IBM docs, and every fenced block has one', () => {
    for (const example of EXAMPLES) {
      expect([example.id, docLines(example.file)[example.line - 1]?.trimEnd()]).toEqual([
        example.id,
        example.text,
      ]);
    }
    for (const file of DOC_FILES) {
      const lines = docLines(file);
      for (const [first, last] of fencedBlocks(lines)) {
        const recorded = EXAMPLES.filter(
          (e) => e.file === file && e.line >= first && e.line <= last,
        );
        expect([file, first, recorded.length > 0]).toEqual([file, first, true]);
        // Every command line of the block, not only its first.
        for (let n = first; n <= last; n++) {
          if (/^\s*#?\s*(curl|kubectl|wget|helm|oc)\s/.test(lines[n - 1]!)) {
            expect([file, n, EXAMPLES.some((e) => e.file === file && e.line === n)]).toEqual([
              file,
              n,
              true,
            ]);
          }
        }
      }
    }
  });

  test("each request is the example's own, placeholders filled in as recorded", () => {
    for (const example of byKind('api')) {
      if (example.sameAs !== undefined) {
        expect(EXAMPLES.some((e) => e.id === example.sameAs && e.kind === 'api')).toBe(true);
        continue;
      }
      let text = example.text;
      for (const [placeholder, value] of Object.entries(example.placeholders ?? {})) {
        text = text.split(placeholder).join(value);
      }
      expect([example.id, text.includes(example.request!)]).toEqual([example.id, true]);
    }
  });

  test('docs/upgrading.md has a row for every example and every item IBM Autopilot offers', () => {
    const upgrading = readFileSync(join(ROOT, 'docs', 'upgrading.md'), 'utf8');
    const start = upgrading.indexOf('\n## Every difference\n');
    expect(start).toBeGreaterThan(-1);
    const end = upgrading.indexOf('\n## ', start + 1);
    const section = upgrading.slice(start, end === -1 ? undefined : end);
    // Each entry is a list item: "- <item> (<status>): IBM Autopilot: … This project: …".
    const firstCells = [
      ...section
        .replace(/\n {2}(?=\S)/g, ' ')
        .matchAll(/^- (.+?) \((?:identical|different|new)\): IBM Autopilot:/gm),
    ].map((match) => match[1]!);
    // Every entry is read: one that lost its "(status): IBM Autopilot:" would vanish silently.
    expect(firstCells.length).toBe(section.split('\n').filter((l) => l.startsWith('- ')).length);
    const missing: string[] = [];
    for (const example of EXAMPLES) {
      if (!firstCells.includes(example.upgrading))
        missing.push(`${example.id}: ${example.upgrading}`);
    }
    const has = (name: string): boolean =>
      firstCells.some((cell) => cell.includes(name.includes('`') ? name : `\`${name}\``));
    for (const [group, items] of Object.entries(DATA.inventory)) {
      if (typeof items === 'string') continue;
      for (const item of items) if (!has(item.name)) missing.push(`${group}: ${item.name}`);
    }
    for (const file of ['values-v2.1.3.yaml', 'values-09a177d.yaml']) {
      const values = parse(
        readFileSync(join(ROOT, 'test', 'fixtures', 'ibm', file), 'utf8'),
      ) as Record<string, unknown>;
      for (const [key, value] of Object.entries(values)) {
        const nested =
          ['image', 'pullSecrets', 'service'].includes(key) && typeof value === 'object';
        const keys = nested
          ? Object.keys(value as Record<string, unknown>).map((sub) => `${key}.${sub}`)
          : [key];
        for (const name of keys) if (!has(name)) missing.push(`${file}: ${name}`);
      }
    }
    expect(missing).toEqual([]);
  });
});

// ---- the exporter, replaying the API examples -----------------------------------------------

const FAKE_NVML = join(ROOT, 'build', 'fakes', 'nvml', 'libnvidia-ml.so.1');
const FAKE_PROBE = join(ROOT, 'build', 'fakes', 'cuda', 'libautopilot-probe.so');
const FAKE_DCGMI = join(ROOT, 'test', 'fakes', 'bin', 'fake-dcgmi');
const NAMESPACE = 'autopilot';
const running: ChildProcess[] = [];

async function startExporter(node: string, env: Record<string, string>): Promise<ExporterPorts> {
  const child = spawn(
    process.execPath,
    [MAIN, '--port', '0', '--bw', '8', '--w', '1h', '--invasive-check-timer', '0'],
    {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: process.env.HOME ?? '/root',
        NODE_NAME: node,
        AUTOPILOT_METRICS_PORT: '0',
        AUTOPILOT_READINESS_PORT: '0',
        AUTOPILOT_LISTEN_ADDRESS: '127.0.0.1',
        AUTOPILOT_NVML_LIBRARY: FAKE_NVML,
        AUTOPILOT_CUDA_PROBE_LIBRARY: FAKE_PROBE,
        AUTOPILOT_DCGMI_COMMAND: FAKE_DCGMI,
        PERIODIC_CHECKS: 'pciebw,remapped,gpupower',
        // GPU 4 copies at 5.3 GB/s, under --bw 8, as in USAGE.md's example.
        FAKE_CUDA_SCENARIO: 'h2d=4:5.3;d2h=4:5.3',
        ...env,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  running.push(child);
  const ports: ExporterPorts = { api: 0, metrics: 0, readiness: 0 };
  await waitForListening(child, ports);
  return ports;
}

async function ask(port: number, path: string): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: response.status, body: await response.text() };
}

const ACCESS_VARIABLE = (group: string): RegExp =>
  new RegExp(`AUTOPILOT_API_ACCESS_${group.toUpperCase()}=open`);

beforeAll(() => {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
}, 120_000);

afterAll(() => {
  for (const child of running.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
});

describe('standalone: the API examples against one node', () => {
  let open: ExporterPorts;
  let closed: ExporterPorts;

  beforeAll(async () => {
    [open, closed] = await Promise.all([
      startExporter('nodename1', { AUTOPILOT_KUBERNETES: 'off', AUTOPILOT_API_ACCESS: 'open' }),
      startExporter('nodename1', { AUTOPILOT_KUBERNETES: 'off' }),
    ]);
  }, 30_000);

  test.each(byKind('api').filter((e) => e.standalone !== undefined))(
    '$file:$line $request',
    async (example) => {
      const { status, body } = await ask(open.api, example.request!);
      expect([status, body]).toEqual([example.standalone!.status, body]);
      expectInOrder(body, example.standalone!.inOrder ?? []);
    },
  );

  test.each(byKind('api').filter((e) => e.protected !== undefined))(
    'without AUTOPILOT_API_ACCESS, $file:$line is refused and names the setting',
    async (example) => {
      const { status, body } = await ask(closed.api, example.request!);
      expect([401, 403]).toContain(status);
      expect(body).toMatch(ACCESS_VARIABLE(example.protected!));
    },
  );
});

describe('Kubernetes mode: the API examples and labels against two nodes', () => {
  let api: FakeKubeApi;
  let workDir: string;
  const ports = new Map<string, ExporterPorts>();

  const labelsOf = (node: string): Record<string, string> => api.node(node)?.metadata.labels ?? {};
  const annotationsOf = (node: string): Record<string, string> =>
    api.node(node)?.metadata.annotations ?? {};

  async function startNode(
    node: string,
    kubeconfig: string,
    env: Record<string, string>,
  ): Promise<void> {
    api.addNode({
      name: node,
      allocatableGpus: 8,
      labels: node === 'hostname' ? { label1: '' } : {},
    });
    api.addExporterPod(NAMESPACE, node);
    const started = await startExporter(node, {
      KUBECONFIG: kubeconfig,
      NAMESPACE,
      POD_NAME: `autopilot-${node}`,
      // A node without iperf3: iperf answers at once, with its failures.
      AUTOPILOT_IPERF_COMMAND: '/nonexistent/iperf3',
      ...env,
    });
    ports.set(node, started);
  }

  function expectLabels(example: Example): void {
    const want = example.kubernetes!;
    for (const [key, pattern] of Object.entries(want.labels ?? {})) {
      expect([example.id, key, labelsOf(want.node!)[key]]).toEqual([
        example.id,
        key,
        expect.stringMatching(new RegExp(pattern)),
      ]);
    }
    for (const [key, pattern] of Object.entries(want.annotations ?? {})) {
      expect([example.id, key, annotationsOf(want.node!)[key]]).toEqual([
        example.id,
        key,
        expect.stringMatching(new RegExp(pattern)),
      ]);
    }
  }

  beforeAll(async () => {
    api = await startFakeKubeApi();
    workDir = mkdtempSync(join(tmpdir(), 'autopilot-compat-'));
    const kubeconfig = writeKubeconfig(workDir, api.url);
    const ibm = { AUTOPILOT_API_ACCESS: 'open', AUTOPILOT_EVICT_ON: 'dcgm' };
    await startNode('hostname', kubeconfig, { ...ibm, FAKE_DCGMI_SCENARIO: 'fail-3x' });
    await startNode('hostname2', kubeconfig, {
      ...ibm,
      FAKE_DCGMI_SCENARIO: 'pass-4x',
      FAKE_CUDA_SCENARIO: '',
    });
    await startNode('hostname3', kubeconfig, {});
    api.addPod({
      namespace: 'default',
      name: 'job2-worker-0',
      labels: { jobKey: 'job2' },
      nodeName: 'hostname2',
    });
    for (const node of ['hostname', 'hostname2']) {
      api.upsertEndpointSlice(
        NAMESPACE,
        endpointSlice({
          name: `autopilot-healthchecks-${node}`,
          service: 'autopilot-healthchecks',
          ports: [{ name: 'healthcheck', port: ports.get(node)!.api }],
          endpoints: [{ address: '127.0.0.1', nodeName: node, podName: `autopilot-${node}` }],
        }),
      );
    }
    // The start-up round labels each node; both peers known to hostname2.
    const deadline = Date.now() + 20_000;
    for (;;) {
      const labelled = ['hostname', 'hostname2'].every(
        (n) => labelsOf(n)['autopilot.ibm.com/gpuhealth'] !== undefined,
      );
      const peers = (await (
        await fetch(`http://127.0.0.1:${ports.get('hostname2')!.api}/results?format=json`)
      ).json()) as { kubernetes: { peers: { known: number } } };
      if (labelled && peers.kubernetes.peers.known === 2) break;
      if (Date.now() > deadline) throw new Error('the start-up round did not label both nodes');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }, 60_000);

  afterAll(async () => {
    await api?.close();
    if (workDir !== undefined) rmSync(workDir, { recursive: true, force: true });
  });

  test.each(['label-pass', 'label-warn'])('after the start-up round: %s', (id) => {
    expectLabels(EXAMPLES.find((e) => e.id === id)!);
  });

  test.each(byKind('api').filter((e) => e.kubernetes !== undefined))(
    '$file:$line $request',
    async (example) => {
      const want = example.kubernetes!;
      let path = example.request!;
      for (const [from, to] of Object.entries(want.substitute ?? {}))
        path = path.split(from).join(to);
      const { status, body } = await ask(ports.get(want.ask!)!.api, path);
      expect([status, body]).toEqual([want.status, body]);
      expectReport(body, want);
      for (const output of EXAMPLES.filter((e) => e.of === example.id && e.kubernetes)) {
        expectReport(body, output.kubernetes!);
      }
    },
    30_000,
  );

  test.each(byKind('api').filter((e) => e.protected !== undefined))(
    'without AUTOPILOT_API_ACCESS, $file:$line is refused and names the setting',
    async (example) => {
      const path = example.request!.replace('/status?', '/status?host=hostname3&');
      const { status, body } = await ask(ports.get('hostname3')!.api, path);
      expect([401, 403]).toContain(status);
      expect(body).toMatch(ACCESS_VARIABLE(example.protected!));
    },
  );

  test.each(['label-evict', 'label-dcgm-format', 'label-dcgm-example'])(
    'after the examples: %s',
    (id) => {
      expectLabels(EXAMPLES.find((e) => e.id === id)!);
    },
  );

  test('/metrics keeps IBM gauge and its labels', async () => {
    const metrics = await (
      await fetch(`http://127.0.0.1:${ports.get('hostname')!.metrics}/metrics`)
    ).text();
    expect(metrics).toMatch(
      /^autopilot_health_checks\{health="pciebw",node="hostname",cpumodel="[^"]*",gpumodel="NVIDIA H200",deviceid="4"\} 5\.3$/m,
    );
  });
});

// ---- the chart ------------------------------------------------------------------------------

type Manifest = ReturnType<typeof renderChart>[number];
/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access,
   @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call,
   @typescript-eslint/no-unsafe-return --
   rendered objects are untyped YAML, read field by field */

const IBM_NEWEST = parse(
  readFileSync(join(ROOT, 'test', 'fixtures', 'ibm', 'values-09a177d.yaml'), 'utf8'),
) as Record<string, unknown>;

/** IBM's newest values with this project's image (the chart refuses IBM's, on purpose). */
function render(extra: Record<string, unknown> = {}): Manifest[] {
  return renderChart({
    values: {
      ...IBM_NEWEST,
      ...extra,
      image: { ...(IBM_NEWEST.image as object), repository: 'registry.example.com/autopilot' },
    },
  });
}

const find = (objects: readonly Manifest[], kind: string, name: string): any =>
  objects.find((o: any) => o.kind === kind && o.metadata?.name === name);

describe('the chart: the kubectl, helm and values examples', () => {
  let objects: Manifest[];
  beforeAll(() => {
    objects = render();
  });

  test.each(byKind('chart'))('$file:$line $text', (example) => {
    const want = example.chart!;
    const object = find(objects, want.kind, want.name);
    expect(object).toBeDefined();
    if (want.port !== undefined) {
      expect(object.spec.ports.map((p: any) => p.port)).toContain(want.port);
    }
    if (want.podLabel !== undefined) {
      expect(object.spec.template.metadata.labels[want.podLabel[0]]).toBe(want.podLabel[1]);
    }
    if (want.label !== undefined) {
      expect(object.metadata.labels[want.label[0]]).toBe(want.label[1]);
    }
  });

  test.each(byKind('values'))('$file:$line $text', (example) => {
    const daemonSet = find(render(example.values), 'DaemonSet', 'autopilot');
    const pod = daemonSet.spec.template;
    const container = pod.spec.containers[0];
    const want = example.expectRendered!;
    if (want.nodeSelector !== undefined)
      expect(pod.spec.nodeSelector[want.nodeSelector[0]]).toBe(want.nodeSelector[1]);
    for (const arg of want.args ?? []) expect(container.args).toContain(arg);
    if (want.env !== undefined) {
      expect(container.env).toContainEqual({ name: want.env[0], value: want.env[1] });
    }
    if (want.podAnnotation !== undefined)
      expect(pod.metadata.annotations[want.podAnnotation[0]]).toBe(want.podAnnotation[1]);
  });
});
