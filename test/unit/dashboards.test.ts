import { describe, expect, test } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ALL_METRICS } from '../../exporter/metrics/catalogue.js';
import { PROMQL_KEYWORDS } from '../fakes/promql.js';

const DASHBOARDS = join(import.meta.dirname, '..', '..', 'dashboards');
const RULES = join(import.meta.dirname, '..', '..', 'rules', 'autopilot.rules.yaml');

interface DatasourceRef {
  readonly type?: string;
  readonly uid?: string;
}

interface Target {
  readonly refId?: string;
  readonly expr?: string;
  readonly legendFormat?: string;
  readonly datasource?: DatasourceRef;
}

interface GridPos {
  readonly x: number;
  readonly y: number;
  readonly w: number;
  readonly h: number;
}

interface Panel {
  readonly id?: number;
  readonly options?: { readonly sortBy?: readonly { displayName: string; desc: boolean }[] };
  readonly type: string;
  readonly title?: string;
  readonly description?: string;
  readonly datasource?: DatasourceRef;
  readonly gridPos: GridPos;
  readonly targets?: readonly Target[];
  readonly panels?: readonly Panel[];
  readonly fieldConfig?: { readonly defaults?: { readonly noValue?: string } };
  readonly transformations?: readonly { readonly id: string; readonly options?: unknown }[];
}

interface Variable {
  readonly name: string;
  readonly type: string;
  readonly multi?: boolean;
  readonly includeAll?: boolean;
  readonly allValue?: string;
  readonly query?: string | { readonly query?: string };
  readonly datasource?: DatasourceRef;
  readonly refresh?: number;
}

interface Dashboard {
  readonly uid: string;
  readonly title: string;
  readonly schemaVersion: number;
  readonly panels: readonly Panel[];
  readonly templating: { readonly list: readonly Variable[] };
  readonly __inputs?: unknown;
}

/**
 * Grafana's own variables, and a value for every variable the dashboards define, so that an
 * expression becomes plain PromQL. dashboards/README.md lists the same set for the test that runs
 * the queries against Prometheus.
 */
const SAMPLE_VALUES: Readonly<Record<string, string>> = {
  __rate_interval: '1m',
  __range: '1h',
  datasource: 'prometheus',
  job: 'autopilot-metrics-service',
  node: 'gpu-a',
  gpu: '0',
  gpumodel: 'NVIDIA H200',
  metric: 'hbm',
};
const GRAFANA_BUILTINS = new Set(['__rate_interval', '__range']);

/** Names that can stand in PromQL without being a metric: keywords and constants, any case. */
const NOT_METRICS = new Set([...PROMQL_KEYWORDS, 'Inf', 'NaN']);

const files = readdirSync(DASHBOARDS).filter((name) => name.endsWith('.json'));
const dashboards: ReadonlyArray<readonly [string, Dashboard]> = files.map((name) => [
  name,
  JSON.parse(readFileSync(join(DASHBOARDS, name), 'utf8')) as Dashboard,
]);

function allPanels(panels: readonly Panel[]): Panel[] {
  return panels.flatMap((panel) => [panel, ...allPanels(panel.panels ?? [])]);
}

const dataPanels = (dashboard: Dashboard): Panel[] =>
  allPanels(dashboard.panels).filter((panel) => panel.type !== 'row');

function variableQuery(variable: Variable): string {
  return typeof variable.query === 'string' ? variable.query : (variable.query?.query ?? '');
}

/** Every PromQL text of a dashboard: panel targets, and the selector inside label_values(). */
function expressions(dashboard: Dashboard): string[] {
  const targets = dataPanels(dashboard).flatMap((panel) =>
    (panel.targets ?? []).map((target) => target.expr ?? ''),
  );
  const variables = dashboard.templating.list
    .filter((variable) => variable.type === 'query')
    .map((variable) => labelValuesSelector(variableQuery(variable)));
  return [...targets, ...variables];
}

function labelValuesSelector(query: string): string {
  const match = /^label_values\((.*),\s*[a-zA-Z_]\w*\s*\)$/s.exec(query.trim());
  if (match?.[1] === undefined) throw new Error(`not a label_values() query: ${query}`);
  return match[1];
}

function referencedVariables(expr: string): string[] {
  return [...expr.matchAll(/\$\{(\w+)(?::\w+)?\}|\$([a-zA-Z_]\w*)|\[\[(\w+)\]\]/g)].map(
    (m) => m[1] ?? m[2] ?? m[3] ?? '',
  );
}

function substitute(expr: string): string {
  return expr.replace(
    /\$\{(\w+)(?::\w+)?\}|\$([a-zA-Z_]\w*)|\[\[(\w+)\]\]/g,
    (whole, braced?: string, bare?: string, bracketed?: string) =>
      SAMPLE_VALUES[braced ?? bare ?? bracketed ?? ''] ?? whole,
  );
}

/** String literals hold label values and regular expressions, never names to check. */
const withoutStrings = (expr: string): string =>
  expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');

/** The metric names an expression reads: identifiers that are not functions, keywords or labels. */
function metricNames(expr: string): string[] {
  const bare = withoutStrings(substitute(expr))
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names: string[] = [];
  for (const match of bare.matchAll(/(?<![\w:.])[a-zA-Z_:][\w:]*/g)) {
    const name = match[0];
    const calledAsFunction = /^\s*\(/.test(bare.slice(match.index + name.length));
    if (!calledAsFunction && !NOT_METRICS.has(name)) names.push(name);
  }
  return names;
}

/** Each `metric{matchers}` of an expression with the label names its matchers use. */
function selectors(expr: string): Array<{ metric: string; labels: string[] }> {
  const text = withoutStrings(substitute(expr));
  return [...text.matchAll(/([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}/g)].map((m) => ({
    metric: m[1] ?? '',
    labels: [...(m[2] ?? '').matchAll(/([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)/g)].map((l) => l[1] ?? ''),
  }));
}

function balanced(expr: string): boolean {
  const closers: Record<string, string> = { ')': '(', ']': '[', '}': '{' };
  const stack: string[] = [];
  for (const char of withoutStrings(expr)) {
    if ('([{'.includes(char)) stack.push(char);
    else if (char in closers && stack.pop() !== closers[char]) return false;
  }
  return stack.length === 0;
}

/**
 * Labels Prometheus attaches to every scraped series; node comes from the chart's ServiceMonitor
 * (the pod's node).
 */
const TARGET_LABELS = ['job', 'instance', 'node'];
/**
 * The autopilot-fleet recording rules the stragglers dashboard reads, with the labels each keeps
 * (the names and labels issue 20 fixes; rules/tests/ check the rules compute them). Recorded series
 * are aggregates: they carry none of the target labels.
 */
const RECORDED: Readonly<Record<string, readonly string[]>> = {
  'gpu:autopilot_gpu_figure:latest': ['node', 'gpu', 'gpumodel', 'metric'],
  'gpu:autopilot_gpu_figure:fleet_ratio': ['node', 'gpu', 'gpumodel', 'metric'],
  'gpumodel:autopilot_gpu_figure:median': ['gpumodel', 'metric'],
  'gpumodel:autopilot_gpu_figure:count': ['gpumodel', 'metric'],
  'node:autopilot_gpu_figure:median': ['node', 'gpumodel', 'metric'],
  'pair:autopilot_gpu_p2p_bandwidth:fleet_ratio': ['node', 'src', 'dst', 'gpumodel'],
  'gpumodel:autopilot_gpu_p2p_bandwidth:median': ['gpumodel'],
};
/** The figures the fleet rules name in their `metric` label. */
const FIGURES = ['pcie_h2d', 'pcie_d2h', 'hbm', 'fp32', 'fp64'];
const KNOWN_METRICS: Readonly<Record<string, readonly string[]>> = {
  ...Object.fromEntries(Object.entries(ALL_METRICS).map(([name, spec]) => [name, spec.labelNames])),
  up: [],
  ...RECORDED,
};
const labelsOf = (metric: string): readonly string[] =>
  metric in RECORDED
    ? (RECORDED[metric] ?? [])
    : [...TARGET_LABELS, ...(KNOWN_METRICS[metric] ?? [])];

describe('the expression helpers', () => {
  test('find metric names and skip functions, keywords, labels, strings and variables', () => {
    expect(
      metricNames(
        'sum by (check) (increase(autopilot_check_runs_total{job="$job", check=~"a|b"}[$__rate_interval])) > 0 or on (instance) group_left up unless vector(1e9)',
      ),
    ).toEqual(['autopilot_check_runs_total', 'up']);
    expect(metricNames('label_replace(x_total, "dst", "$1", "src", "(.*)") * 0.5 + Inf')).toEqual([
      'x_total',
    ]);
  });

  test('find the labels of each selector', () => {
    expect(selectors('a{job="$job", gpu=~"0|1"} / ignoring(state) b{state!="max"}')).toEqual([
      { metric: 'a', labels: ['job', 'gpu'] },
      { metric: 'b', labels: ['state'] },
    ]);
  });

  test('tell balanced brackets from unbalanced ones', () => {
    expect(balanced('max by (a) (x{b="(("}[5m])')).toBe(true);
    expect(balanced('max by (a) (x{b=""}[5m]')).toBe(false);
  });
});

describe('dashboards', () => {
  test("show each node's state since, and the UUID, serial and bus id where a GPU is named", () => {
    const byUid = new Map(dashboards.map(([, dashboard]) => [dashboard.uid, dashboard]));
    const exprsOf = (uid: string): string[] => expressions(byUid.get(uid)!);
    for (const uid of ['autopilot-cluster', 'autopilot-node'])
      expect(exprsOf(uid).some((e) => e.includes('autopilot_node_state_since_seconds'))).toBe(true);
    const gpuTables = dashboards.flatMap(([, dashboard]) =>
      dataPanels(dashboard).filter(
        (panel) =>
          panel.type === 'table' &&
          (panel.targets ?? []).some((t) =>
            /autopilot_gpu_(?:verdict|pcie_bandwidth)/.test(t.expr ?? ''),
          ),
      ),
    );
    expect(gpuTables.length).toBeGreaterThanOrEqual(3);
    for (const panel of gpuTables)
      expect({
        panel: panel.title,
        exprs: (panel.targets ?? []).map((t) => t.expr).join('\n'),
      }).toEqual({
        panel: panel.title,
        exprs: expect.stringMatching(
          /group_left \(UUID, serial, pci_bus_id\)[\s\S]*autopilot_gpu_info/,
        ),
      });
  });

  test('the node dashboard shows NVLink per GPU and link, the fabric, and a src × dst P2P matrix', () => {
    const node = dashboards.find(([, dashboard]) => dashboard.uid === 'autopilot-node')![1];
    const reading = (metric: string): Panel[] =>
      dataPanels(node).filter((panel) =>
        (panel.targets ?? []).some((t) => (t.expr ?? '').includes(metric)),
      );
    const matrix = (panel: Panel): unknown =>
      panel.transformations?.find((t) => t.id === 'groupingToMatrix')?.options;

    const [linkState] = reading('autopilot_gpu_nvlink_up');
    expect(matrix(linkState!)).toEqual(
      expect.objectContaining({ rowField: 'gpu', columnField: 'link' }),
    );
    const [errors] = reading('autopilot_gpu_nvlink_errors_total');
    expect(errors!.targets![0]!.expr).toMatch(/by \(gpu, link, counter\)/);
    expect(errors!.targets![0]!.legendFormat).toBe('GPU {{gpu}} link {{link}} {{counter}}');
    expect(reading('autopilot_gpu_fabric_ready')).toHaveLength(1);
    const [p2p] = reading('autopilot_gpu_p2p_bandwidth_bytes_per_second');
    expect(matrix(p2p!)).toEqual(expect.objectContaining({ rowField: 'src', columnField: 'dst' }));
    expect(p2p!.fieldConfig?.defaults).toEqual(expect.objectContaining({ unit: 'Bps' }));
  });

  test('are the four the exporter ships, with distinct uids', () => {
    expect(files.sort()).toEqual([
      'autopilot-cluster.json',
      'autopilot-network.json',
      'autopilot-node.json',
      'autopilot-stragglers.json',
    ]);
    const uids = dashboards.map(([, dashboard]) => dashboard.uid);
    expect(uids.sort()).toEqual([
      'autopilot-cluster',
      'autopilot-network',
      'autopilot-node',
      'autopilot-stragglers',
    ]);
  });

  test('read recorded series only where the shipped rules record them', () => {
    const recorded = new Set(
      [...readFileSync(RULES, 'utf8').matchAll(/^\s*-\s*record:\s*(\S+)\s*$/gm)].map((m) => m[1]),
    );
    const read = new Set(
      dashboards.flatMap(([, dashboard]) => expressions(dashboard).flatMap(metricNames)),
    );
    const missing = [...read].filter((name) => name.includes(':') && !recorded.has(name));
    expect(missing).toEqual([]);
    for (const name of Object.keys(RECORDED))
      expect(recorded.has(name) ? name : undefined).toBe(name);
  });

  describe('the stragglers dashboard', () => {
    const stragglers = dashboards.find(([, d]) => d.uid === 'autopilot-stragglers')![1];
    const variable = (name: string): Variable | undefined =>
      stragglers.templating.list.find((v) => v.name === name);
    const reading = (metric: string): Panel[] =>
      dataPanels(stragglers).filter((panel) =>
        (panel.targets ?? []).some((t) => (t.expr ?? '').includes(metric)),
      );

    test('offers the GPU model and the figure as variables, every figure the rules name', () => {
      expect(variableQuery(variable('gpumodel')!)).toMatch(/^label_values\(.*,\s*gpumodel\)$/);
      expect(variable('gpumodel')).toEqual(
        expect.objectContaining({ multi: true, includeAll: true, allValue: '.+' }),
      );
      const metric = variable('metric')!;
      expect(metric.type).toBe('custom');
      expect(variableQuery(metric).split(',')).toEqual(FIGURES);
      expect(metric).toEqual(expect.objectContaining({ includeAll: true, allValue: '.+' }));
      const rules = readFileSync(RULES, 'utf8');
      for (const figure of FIGURES) expect(rules).toContain(`"${figure}"`);
    });

    test('lists every GPU as a percentage of its fleet median, slowest first, by node and GPU', () => {
      const ratios = reading('gpu:autopilot_gpu_figure:fleet_ratio');
      expect(ratios.map((p) => p.type).sort()).toEqual(['bargauge', 'table', 'timeseries']);
      for (const panel of ratios) {
        for (const target of panel.targets ?? []) {
          expect(target.expr).toMatch(/100 \* gpu:autopilot_gpu_figure:fleet_ratio\{/);
          for (const name of ['$gpumodel', '$metric', '$node']) expect(target.expr).toContain(name);
          if (target.legendFormat !== undefined)
            expect(target.legendFormat).toMatch(/^\{\{node\}\} GPU \{\{gpu\}\}/);
        }
        expect(panel.fieldConfig?.defaults).toEqual(expect.objectContaining({ unit: 'percent' }));
      }
      const bars = ratios.find((p) => p.type === 'bargauge')!;
      expect(bars.targets![0]!.expr).toMatch(/^sort\(bottomk\(\d+, /);
      const table = ratios.find((p) => p.type === 'table')!;
      expect(table.options?.sortBy).toEqual([{ displayName: '% of fleet median', desc: false }]);
      expect(table.targets![0]!.expr).toMatch(/group_left \(UUID, serial, pci_bus_id\)/);
    });

    test('shows node medians and P2P pairs against the fleet, slowest first', () => {
      const [nodes] = reading('node:autopilot_gpu_figure:median');
      expect(nodes!.targets![0]!.expr).toMatch(
        /^sort\(100 \* node:autopilot_gpu_figure:median\{.*\} \/ on \(gpumodel, metric\) group_left gpumodel:autopilot_gpu_figure:median\{/,
      );
      const [pairs] = reading('pair:autopilot_gpu_p2p_bandwidth:fleet_ratio');
      expect(pairs!.targets![0]!.expr).toMatch(/^sort\(100 \* pair:/);
      for (const panel of [nodes!, pairs!]) expect(panel.options?.sortBy?.[0]?.desc).toBe(false);
    });
  });

  describe.each(dashboards)('%s', (_name, dashboard) => {
    const panels = allPanels(dashboard.panels);

    test('is a Grafana 10+ model meant for provisioning, not an external export', () => {
      expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(38);
      expect(dashboard).not.toHaveProperty('__inputs');
      expect(dashboard).not.toHaveProperty('id');
      expect(JSON.stringify(dashboard)).not.toMatch(/DS_PROMETHEUS/);
    });

    test('numbers its panels uniquely', () => {
      const ids = panels.map((panel) => panel.id);
      expect(ids.every((id) => Number.isInteger(id))).toBe(true);
      expect(new Set(ids).size).toBe(ids.length);
    });

    test('has exactly one data source variable, a Prometheus one named datasource', () => {
      const datasourceVariables = dashboard.templating.list.filter((v) => v.type === 'datasource');
      expect(datasourceVariables).toEqual([
        expect.objectContaining({ name: 'datasource', query: 'prometheus' }),
      ]);
    });

    test('reads every panel, target and query variable through ${datasource}', () => {
      const expected = { type: 'prometheus', uid: '${datasource}' };
      for (const panel of dataPanels(dashboard)) {
        expect({ panel: panel.title, datasource: panel.datasource }).toEqual({
          panel: panel.title,
          datasource: expected,
        });
        expect(panel.targets?.length).toBeGreaterThan(0);
        for (const target of panel.targets ?? [])
          expect({ panel: panel.title, datasource: target.datasource }).toEqual({
            panel: panel.title,
            datasource: expected,
          });
      }
      for (const variable of dashboard.templating.list.filter((v) => v.type === 'query')) {
        expect({ variable: variable.name, datasource: variable.datasource }).toEqual({
          variable: variable.name,
          datasource: expected,
        });
        // Node lists change as nodes come and go, so they reload with the time range.
        expect(variable.refresh).toBe(2);
      }
    });

    test('gives every panel a title and a description', () => {
      for (const panel of dataPanels(dashboard)) {
        expect(panel.title).toMatch(/\S/);
        expect({ title: panel.title, description: panel.description }).toEqual({
          title: panel.title,
          description: expect.stringMatching(/\S/),
        });
      }
    });

    test('lays panels out on the 24-column grid without overlap', () => {
      const boxes = panels.map((panel) => ({ title: panel.title, ...panel.gridPos }));
      for (const box of boxes) expect(box.x + box.w).toBeLessThanOrEqual(24);
      const overlaps = boxes.flatMap((a, i) =>
        boxes
          .slice(i + 1)
          .filter((b) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h)
          .map((b) => `${a.title} / ${b.title}`),
      );
      expect(overlaps).toEqual([]);
    });

    test('uses only variables it defines or Grafana provides', () => {
      const defined = new Set([
        ...dashboard.templating.list.map((variable) => variable.name),
        ...GRAFANA_BUILTINS,
      ]);
      const undefinedVariables = expressions(dashboard)
        .flatMap(referencedVariables)
        .filter((name) => !defined.has(name));
      expect(undefinedVariables).toEqual([]);
      for (const name of defined) expect(SAMPLE_VALUES).toHaveProperty(name);
    });

    test('reads only metrics of the exporter catalogue, and up', () => {
      const unknown = expressions(dashboard)
        .flatMap(metricNames)
        .filter((name) => !(name in KNOWN_METRICS));
      expect(unknown).toEqual([]);
      // Every query must read something: a tokenizer that found nothing would pass vacuously.
      for (const expr of expressions(dashboard))
        expect({ expr, metrics: metricNames(expr).length > 0 }).toEqual({ expr, metrics: true });
    });

    test('selects only labels the metric has', () => {
      const wrong = expressions(dashboard)
        .flatMap(selectors)
        .filter(({ metric }) => metric in KNOWN_METRICS)
        .flatMap(({ metric, labels }) =>
          labels
            .filter((label) => !labelsOf(metric).includes(label))
            .map((label) => `${metric}{${label}}`),
        );
      expect(wrong).toEqual([]);
    });

    test('writes expressions with balanced brackets and windows from Grafana', () => {
      for (const expr of expressions(dashboard)) {
        expect({ expr, balanced: balanced(expr) }).toEqual({ expr, balanced: true });
        for (const window of expr.matchAll(/\b(?:rate|irate|increase)\s*\([^[]*\[([^\]]*)\]/g))
          expect(window[1]).toMatch(/^\$__(?:rate_interval|range)$/);
      }
    });

    test('names nodes, never pod addresses: no instance in a legend, a variable, a grouping or a table', () => {
      const text = JSON.stringify(dashboard);
      expect(text).not.toMatch(/\{\{\s*instance\s*\}\}/);
      expect(text).not.toMatch(/\$instance|var-instance/);
      for (const expr of expressions(dashboard)) {
        // by (..., instance) would split a node's series at every pod restart.
        expect({ expr, byInstance: /\b(?:by|on)\s*\([^)]*\binstance\b/.test(expr) }).toEqual({
          expr,
          byInstance: false,
        });
      }
      for (const panel of dataPanels(dashboard).filter((p) => p.type === 'table')) {
        const organize = panel.transformations?.find((t) => t.id === 'organize');
        const grouped = panel.transformations?.some((t) => t.id === 'groupingToMatrix');
        if (grouped === true) continue; // rows are the field named in rowField, checked above
        expect({ table: panel.title, excludes: organize?.options }).toEqual({
          table: panel.title,
          excludes: expect.objectContaining({
            excludeByName: expect.objectContaining({ instance: true }),
          }),
        });
      }
    });

    test('labels every per-node series by node, one series per node across pod restarts', () => {
      for (const panel of dataPanels(dashboard)) {
        for (const target of panel.targets ?? []) {
          const legend = target.legendFormat ?? '';
          if (!legend.includes('{{node}}')) continue;
          // An aggregation keeps node (and the legend's other labels) and drops instance and pod.
          expect({ panel: panel.title, expr: target.expr }).toEqual({
            panel: panel.title,
            expr: expect.stringMatching(
              /^\s*(?:time\(\)\s*-\s*)?(?:max|min|sum|count|group|sort|sort_desc|bottomk|topk)\b[^(]*\(\s*(?:\d+\s*,\s*)?(?:max|min|sum|count)?\s*(?:by\s*\([^)]*\bnode\b)?/,
            ),
          });
        }
      }
      if (dashboard.uid !== 'autopilot-node') {
        // Panels that show a series per node say which node in the legend.
        const perNode = dataPanels(dashboard).flatMap((panel) =>
          (panel.targets ?? [])
            .filter((t) => /by \([^)]*\bnode\b/.test(t.expr ?? '') && t.legendFormat !== undefined)
            .map((t) => ({ panel: panel.title, legend: t.legendFormat })),
        );
        for (const entry of perNode)
          expect(entry).toEqual({
            panel: entry.panel,
            legend: expect.stringContaining('{{node}}'),
          });
      }
    });

    test('says why a panel is empty, never something that reads as healthy', () => {
      for (const panel of dataPanels(dashboard)) {
        const noValue = panel.fieldConfig?.defaults?.noValue ?? '';
        expect({ panel: panel.title, noValue }).toEqual({
          panel: panel.title,
          noValue: expect.stringMatching(/not run|standalone mode/),
        });
      }
      // A count that falls back to 0 when no exporter reports would read as "nothing failing".
      for (const expr of expressions(dashboard))
        if (/autopilot_check_|autopilot_gpu_verdict|autopilot_dcgm_/.test(expr))
          expect({ expr, zeroWhenNothingRan: /or vector\(0\)/.test(expr) }).toEqual({
            expr,
            zeroWhenNothingRan: false,
          });
    });

    test('never assumes a GPU count or reads dcgm-exporter', () => {
      for (const expr of expressions(dashboard)) {
        expect(expr).not.toMatch(/DCGM_FI_/);
        expect(expr).not.toMatch(/==\s*8\b/);
      }
    });
  });
});
