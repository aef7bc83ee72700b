/**
 * Slow but not failed, end to end: four built exporters with eight fake GPUs each (fake NVML, fake
 * CUDA runtime), scraped by Debian's Prometheus with the shipped rules (rules/autopilot.rules.yaml,
 * unchanged) as the chart's ServiceMonitor would (job autopilot-metrics-service, a `node` label per
 * target). Two faults, each a figure of the fake CUDA runtime's FAKE_CUDA_SCENARIO:
 * - gpu-node-2's GPU 3 copies device to device 25 % slower than the rest (HBM bandwidth);
 * - every GPU of gpu-node-3 copies host to device and back 30 % slower (a host-side PCIe cause).
 * pciebw and gpumem run twice on every exporter through the API, so that every figure has two
 * consecutive measurements, and p2pbw once on gpu-node-1 for the P2P panel. Then
 * AutopilotGPUSlowerThanFleet must name exactly that GPU with metric hbm,
 * AutopilotNodeSlowerThanFleet exactly that node (pcie_h2d and pcie_d2h), the 31 other GPUs
 * nothing, and every query of the Stragglers dashboard must return data. Prints the time each
 * alert took to fire and the dashboard's slowest rows.
 *
 * One change to the rules: the `for:` of the two fleet alerts (5m, a debounce of scrape gaps) is
 * FOR_IN_TEST in the copy Prometheus loads, or the file would wait five minutes; "two measurements
 * in a row" is the recording rules' and stays as shipped.
 */

import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import {
  buildExporter,
  FAKE_PROBE,
  FAKE_NVML,
  killAllExporters,
  startExporter as startBuiltExporter,
  stopExporter,
} from '../fakes/exporter-process.js';
import { startMonitoring, type Monitoring } from '../fakes/monitoring.js';
import { waitFor } from '../fakes/wait-for.js';

const ROOT = join(import.meta.dirname, '..', '..');
const RULES = join(ROOT, 'rules', 'autopilot.rules.yaml');
const STRAGGLERS = join(ROOT, 'dashboards', 'autopilot-stragglers.json');
const TOKEN = 'fleet-token';
const JOB = 'autopilot-metrics-service';
const NODES = ['gpu-node-1', 'gpu-node-2', 'gpu-node-3', 'gpu-node-4'] as const;
type Node = (typeof NODES)[number];
/** The fake NVML's default model, and the fake's GPUs per node. */
const MODEL = 'NVIDIA H200';
const GPUS = 8;
/**
 * The fake CUDA runtime's defaults (test/fakes/native/cuda/fake-cudart.c's header): h2d 54.6,
 * d2h 55.1, d2d 4260 GB/s. GPU 3 of gpu-node-2 at 75 % in d2d; every GPU of gpu-node-3 at 70 %
 * in h2d and d2h.
 */
const SLOW_GPU = { node: 'gpu-node-2', gpu: '3', metric: 'hbm' } as const;
const SLOW_NODE = 'gpu-node-3';
const CUDA_SCENARIOS: Readonly<Record<Node, string>> = {
  'gpu-node-1': '',
  'gpu-node-2': `d2d=${SLOW_GPU.gpu}:${4260 * 0.75}`,
  'gpu-node-3': `h2d=*:${(54.6 * 0.7).toFixed(2)};d2h=*:${(55.1 * 0.7).toFixed(2)}`,
  'gpu-node-4': '',
};
/** The `for:` of the fleet alerts in this test's copy of the rules. */
const FOR_IN_TEST = '2s';
const FLEET_ALERTS = [
  'AutopilotGPUSlowerThanFleet',
  'AutopilotNodeSlowerThanFleet',
  'AutopilotGPUPerformanceDrop',
];
/** What the Stragglers dashboard's variables stand for in this run: every node and figure. */
const VARIABLES: Readonly<Record<string, string>> = {
  __rate_interval: '1m',
  __range: '1h',
  job: JOB,
  node: '.+',
  gpumodel: MODEL,
  metric: '.+',
};

interface Exporter {
  readonly node: Node;
  readonly ports: { readonly api: number; readonly metrics: number; readonly readiness: number };
  readonly process: ChildProcess;
}

interface PromAlert {
  readonly labels: Record<string, string>;
  readonly annotations: Record<string, string>;
  readonly state: string;
}

let monitoring: Monitoring | undefined;
let workDir: string | undefined;
const exporters: Exporter[] = [];
/** Each fleet alert's `for:` in the shipped rules. */
const shippedFor: Record<string, string> = {};

/**
 * The shipped rules with the `for:` of the two fleet alerts set to FOR_IN_TEST, nothing else; an
 * alert without a `for:` (or missing) fails loudly.
 */
function rulesWithShortFor(dir: string): string {
  let text = readFileSync(RULES, 'utf8');
  for (const name of FLEET_ALERTS.slice(0, 2)) {
    const pattern = new RegExp(`(- alert: ${name}\\n(?:(?!\\s*- alert:).*\\n)*?\\s*for: )(\\S+)`);
    const match = pattern.exec(text);
    if (match === null) throw new Error(`no for: of ${name} in ${RULES}`);
    shippedFor[name] = match[2]!;
    text = text.replace(pattern, `$1${FOR_IN_TEST}`);
  }
  const path = join(dir, 'autopilot.rules.yaml');
  writeFileSync(path, text);
  return path;
}

async function startExporter(node: Node): Promise<Exporter> {
  // Every listener on port 0, read back from the log: four exporters start at once, and ports
  // picked for one could be handed to another before the first binds them.
  const { child, ports } = await startBuiltExporter({
    env: {
      NODE_NAME: node,
      PERIODIC_CHECKS: 'gpucount',
      AUTOPILOT_NVML_LIBRARY: FAKE_NVML,
      AUTOPILOT_CUDA_PROBE_LIBRARY: FAKE_PROBE,
      FAKE_CUDA_SCENARIO: CUDA_SCENARIOS[node],
      AUTOPILOT_API_TOKEN: TOKEN,
    },
    // A round an hour long: the figures change only through the runs this test asks for.
    every: '1h',
  });
  return { node, ports, process: child };
}

/**
 * One run of `check` on the exporter through its API (gpumem and p2pbw are protected: the static
 * token, standalone mode); the per-GPU verdicts.
 */
async function run(exporter: Exporter, path: string): Promise<Record<string, string>> {
  const response = await fetch(`http://127.0.0.1:${exporter.ports.api}${path}`, {
    headers: { Authorization: `Bearer ${TOKEN}` },
    signal: AbortSignal.timeout(60_000),
  });
  const text = await response.text();
  if (response.status !== 200)
    throw new Error(`${exporter.node} ${path}: ${response.status} ${text}`);
  const body = JSON.parse(text) as {
    results: { check: string; devices: { id: string; verdict: string }[] }[];
  };
  const check = /^\/(\w+)/.exec(path)?.[1];
  const result = body.results.find((r) => r.check === check);
  if (result === undefined) throw new Error(`${exporter.node} ${path}: no ${check} in ${text}`);
  return Object.fromEntries(result.devices.map((d) => [d.id, d.verdict]));
}

/** Prometheus's alerts, annotations included (Monitoring.alerts() keeps only labels and state). */
async function promAlerts(m: Monitoring): Promise<PromAlert[]> {
  const body = (await (await fetch(`${m.prometheusUrl}/api/v1/alerts`)).json()) as {
    data: { alerts: PromAlert[] };
  };
  return body.data.alerts;
}

/** The stragglers dashboard's target expressions, variables substituted. */
function dashboardQueries(): { panel: string; promql: string }[] {
  interface Panel {
    readonly type: string;
    readonly title?: string;
    readonly targets?: readonly { readonly expr?: string }[];
  }
  const dashboard = JSON.parse(readFileSync(STRAGGLERS, 'utf8')) as { panels: Panel[] };
  return dashboard.panels
    .filter((panel) => panel.type !== 'row')
    .flatMap((panel) =>
      (panel.targets ?? []).map((target) => ({
        panel: panel.title ?? '',
        promql: (target.expr ?? '').replace(
          /\$\{(\w+)(?::\w+)?\}|\$([a-zA-Z_]\w*)/g,
          (whole, a, b) => {
            const value = VARIABLES[(a as string | undefined) ?? (b as string)];
            if (value === undefined) throw new Error(`no value for ${whole}`);
            return value;
          },
        ),
      })),
    );
}

beforeAll(async () => {
  buildExporter();
  workDir = mkdtempSync(join(tmpdir(), 'autopilot-fleet-'));
  const rules = rulesWithShortFor(workDir);
  exporters.push(...(await Promise.all(NODES.map(startExporter))));
  const target = (e: Exporter): string => `127.0.0.1:${e.ports.metrics}`;
  monitoring = await startMonitoring({
    targets: exporters.map(target),
    // The ServiceMonitor's node label, from the pod's node: the fleet rules group by it.
    nodeOf: Object.fromEntries(exporters.map((e) => [target(e), e.node])),
    ruleFiles: [rules],
    jobName: JOB,
  });
}, 150_000);

afterAll(async () => {
  await Promise.all(exporters.map((e) => stopExporter(e.process)));
  // One that started while another failed to is not in `exporters`.
  killAllExporters();
  await monitoring?.stop();
  if (workDir !== undefined) rmSync(workDir, { recursive: true, force: true });
});

/** The figures of every GPU of the fleet Prometheus has recorded (GPUs x 5 figures when all are). */
async function recordedFigures(m: Monitoring): Promise<number> {
  const [sample] = await m.query('count(gpu:autopilot_gpu_figure:latest)');
  return Number(sample?.value[1] ?? 0);
}

/** pciebw then gpumem on every exporter at once; the verdicts per node and check. */
async function measureAll(): Promise<Record<string, Record<string, string>>> {
  const verdicts = await Promise.all(
    exporters.map(async (e) => ({
      [`${e.node} pciebw`]: await run(e, '/pciebw?format=json'),
      [`${e.node} gpumem`]: await run(e, '/gpumem?format=json'),
    })),
  );
  return Object.assign({}, ...verdicts) as Record<string, Record<string, string>>;
}

/**
 * The fleet alerts name the two faults and nothing else, and no alert of any name names a healthy
 * GPU; `alerts` are the pending and firing ones.
 */
function expectOnlyTheFaults(alerts: readonly PromAlert[]): void {
  const fleet = (name: string): Record<string, string>[] =>
    alerts
      .filter((a) => a.labels.alertname === name)
      .map((a) => ({
        state: a.state,
        node: a.labels.node!,
        gpu: a.labels.gpu ?? '',
        metric: a.labels.metric!,
      }))
      .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));

  expect(fleet('AutopilotGPUSlowerThanFleet')).toEqual([{ state: 'firing', ...SLOW_GPU }]);
  expect(fleet('AutopilotNodeSlowerThanFleet')).toEqual([
    { state: 'firing', node: SLOW_NODE, gpu: '', metric: 'pcie_d2h' },
    { state: 'firing', node: SLOW_NODE, gpu: '', metric: 'pcie_h2d' },
  ]);
  expect(fleet('AutopilotGPUPerformanceDrop')).toEqual([]);
  // No alert of any name, pending or firing, names a healthy GPU.
  const healthy = (a: PromAlert): boolean =>
    a.labels.gpu !== undefined &&
    a.labels.node !== SLOW_NODE &&
    !(a.labels.node === SLOW_GPU.node && a.labels.gpu === SLOW_GPU.gpu);
  expect(alerts.filter(healthy).map((a) => a.labels)).toEqual([]);
  const gpuAlert = alerts.find((a) => a.labels.alertname === 'AutopilotGPUSlowerThanFleet')!;
  // The annotation gives the value and the median: 3195 and 4260 GB/s.
  expect(gpuAlert.annotations.description).toMatch(/3\.195|3195/);
  expect(gpuAlert.annotations.description).toMatch(/4\.26|4260/);
}

/**
 * Every query of the Stragglers dashboard returns data; the slowest rows of its main query, as
 * "<node> GPU <gpu> <metric>: <percent> %", checked to be the faults, sorted.
 */
async function stragglerRows(m: Monitoring): Promise<string[]> {
  const empty: string[] = [];
  for (const query of dashboardQueries())
    if ((await m.query(query.promql)).length === 0) empty.push(`${query.panel}: ${query.promql}`);
  expect(empty).toEqual([]);
  const slowest = await m.query(
    `sort(bottomk(20, 100 * gpu:autopilot_gpu_figure:fleet_ratio{gpumodel="${MODEL}"}))`,
  );
  const rows = slowest.map(
    (s) =>
      `${s.metric.node} GPU ${s.metric.gpu} ${s.metric.metric}: ${Number(s.value[1]).toFixed(1)} %`,
  );
  // Sorted ascending: the slow node's 16 PCIe figures (70 %), then the slow GPU's HBM (75 %), then
  // healthy figures at 100 %.
  for (const row of rows.slice(0, 2 * GPUS))
    expect(row).toMatch(new RegExp(`^${SLOW_NODE} GPU \\d pcie_(?:h2d|d2h): 70\\.0 %$`));
  expect(rows[2 * GPUS]).toBe(`${SLOW_GPU.node} GPU ${SLOW_GPU.gpu} hbm: 75.0 %`);
  expect(rows[2 * GPUS + 1]).toMatch(/: 100\.0 %$/);
  return rows;
}

// About 45 s on an idle 2-CPU machine; the timeout leaves room for a loaded one.
test('the fleet alerts name exactly the slow GPU and the slow node, and the Stragglers panels show data', async () => {
  const m = monitoring!;
  const startedAt = performance.now();
  const p2p = run(exporters[0]!, '/p2pbw?mib=64&format=json');
  const first = await measureAll();
  const firstDoneAt = performance.now();
  // The exporter's own comparison, with the node's other GPUs, stays: it flags the slow GPU too.
  expect(first[`${SLOW_GPU.node} gpumem`]![SLOW_GPU.gpu]).not.toBe('PASS');
  await waitFor(
    'Prometheus recording every figure of the first measurements',
    async () => ((await recordedFigures(m)) === NODES.length * GPUS * 5 ? true : undefined),
    60_000,
  );
  // Two more evaluations, so that the rules hold the first measurements below the fleet; one
  // measurement below it is not yet a straggler (with a `for:` of 2 s, it would be pending by now).
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  const afterOne = (await promAlerts(m)).filter((a) => FLEET_ALERTS.includes(a.labels.alertname!));
  expect(afterOne.map((a) => a.labels)).toEqual([]);
  const secondAt = performance.now();
  await measureAll();
  expect(Object.values(await p2p).length).toBe(GPUS);

  const firedAt: Record<string, number> = {};
  const firing = async (): Promise<PromAlert[] | undefined> => {
    const alerts = (await promAlerts(m)).filter((a) => a.state === 'firing');
    for (const a of alerts) firedAt[a.labels.alertname!] ??= performance.now();
    const names = new Set(alerts.map((a) => a.labels.alertname));
    return names.has('AutopilotGPUSlowerThanFleet') && names.has('AutopilotNodeSlowerThanFleet')
      ? alerts
      : undefined;
  };
  await waitFor('both fleet alerts firing', firing, 90_000);
  // Another few evaluations, so that an alert that fires late (a healthy GPU) is seen too.
  await new Promise((resolve) => setTimeout(resolve, 3_000));
  const alerts = (await promAlerts(m)).filter((a) => a.state !== 'inactive');
  expectOnlyTheFaults(alerts);

  const rows = await stragglerRows(m);

  const s = (at: number): string => ((at - startedAt) / 1000).toFixed(1);
  console.log(
    [
      `fleet e2e (${NODES.length} exporters x ${GPUS} fake GPUs, scrape and evaluation every 1 s):`,
      `  first measurements done at ${s(firstDoneAt)} s, second started at ${s(secondAt)} s`,
      ...Object.entries(firedAt).map(
        ([name, at]) =>
          `  ${name} firing at ${s(at)} s (for: ${FOR_IN_TEST} here, ${shippedFor[name] ?? '?'} shipped)`,
      ),
      ...alerts
        .filter((a) => FLEET_ALERTS.includes(a.labels.alertname!))
        .map((a) => `  ${a.state} ${JSON.stringify(a.labels)}: ${a.annotations.description}`),
      '  Stragglers, slowest GPUs (% of fleet median):',
      ...rows.map((row) => `    ${row}`),
    ].join('\n'),
  );
}, 240_000);
