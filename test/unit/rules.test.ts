import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { loadAllYaml } from '@kubernetes/client-node';
import { CHECK_TABLE } from '../../exporter/checks/index.js';
import { DEFAULT_XID_FATAL } from '../../exporter/checks/xid.js';
import { ALL_METRICS } from '../../exporter/metrics/catalogue.js';
import { PROMQL_KEYWORDS } from '../fakes/promql.js';

const ROOT = join(import.meta.dirname, '..', '..');
/** IBM's Alertmanager example, verbatim (test/fixtures/ibm/README.md). */
const IBM_ALERTMANAGER = join(ROOT, 'test', 'fixtures', 'ibm', 'alertmanager.yaml');
/** The label IBM's rules carry and its Alertmanager example routes on (`alert = autopilot`). */
const IBM_ROUTE_LABEL = { alert: 'autopilot' } as const;
const RULES_DIR = join(ROOT, 'rules');
const RULE_FILE = join(RULES_DIR, 'autopilot.rules.yaml');
const TESTS_DIR = join(RULES_DIR, 'tests');
const RUNBOOK_BASE = 'https://github.com/autopilot/autopilot/blob/main/rules/RUNBOOK.md#';
const SEVERITIES = ['critical', 'warning', 'info'];

interface Rule {
  readonly alert?: string;
  readonly record?: string;
  readonly expr: string;
  readonly for?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
}

interface AlertTestCase {
  readonly alertname: string;
  readonly exp_alerts?:
    readonly { readonly exp_labels?: Readonly<Record<string, string>> }[] | null;
}

interface RuleTestFile {
  readonly tests: readonly { readonly alert_rule_test?: readonly AlertTestCase[] }[];
}

const loadOne = <T>(path: string): T => loadAllYaml(readFileSync(path, 'utf8'))[0] as T;

const rules: Rule[] = loadOne<{ groups: { rules: Rule[] }[] }>(RULE_FILE).groups.flatMap(
  (group) => group.rules,
);
const alerts = rules.filter((rule) => rule.alert !== undefined);
const recorded = new Set(rules.flatMap((rule) => rule.record ?? []));
const testFiles = readdirSync(TESTS_DIR)
  .filter((name) => name.endsWith('.test.yaml'))
  .map((name) => join(TESTS_DIR, name));

/** GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens. */
function githubAnchor(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

const runbook = readFileSync(join(RULES_DIR, 'RUNBOOK.md'), 'utf8');
const runbookHeadings = [...runbook.matchAll(/^#{1,6} (.+)$/gm)].map((m) => m[1]!);
const runbookSections = [...runbook.matchAll(/^## (.+)$/gm)].map((m) => m[1]!);

/** The aggregations and functions of Prometheus 2.42 these rules may call. */
const PROMQL_FUNCTIONS = new Set([
  'sum',
  'min',
  'max',
  'avg',
  'count',
  'stddev',
  'stdvar',
  'topk',
  'bottomk',
  'quantile',
  'count_values',
  'group',
  'abs',
  'absent',
  'absent_over_time',
  'changes',
  'clamp',
  'clamp_max',
  'clamp_min',
  'delta',
  'deriv',
  'increase',
  'irate',
  'label_join',
  'label_replace',
  'rate',
  'resets',
  'round',
  'scalar',
  'sort',
  'sort_desc',
  'time',
  'timestamp',
  'vector',
  'avg_over_time',
  'min_over_time',
  'max_over_time',
  'sum_over_time',
  'count_over_time',
  'last_over_time',
  'present_over_time',
  'quantile_over_time',
]);

interface ExprNames {
  /** Identifiers other than keywords followed by `(`: functions and aggregations. */
  readonly calls: string[];
  /** Every other identifier: series names and keywords. */
  readonly names: string[];
}

/**
 * The names an expression uses. String literals, label matchers `{...}`, ranges `[...]` and the
 * label lists of on/ignoring/group_left/group_right are removed first, so label names and values
 * never count as series names; a by/without clause goes whole, so that its aggregation reads as a
 * call; numbers (1e6, 0x10) are removed with them.
 */
function exprNames(expr: string): ExprNames {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without)\s*\([^)]*\)/g, ' ')
    .replace(/\b(on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '$1 ')
    .replace(/(?<![\w:])(?:0x[0-9a-f]+|\d+(?:\.\d+)?(?:e[+-]?\d+)?)(?![\w:])/gi, ' ');
  const calls: string[] = [];
  const names: string[] = [];
  for (const match of bare.matchAll(/(?<![\w:])([a-zA-Z_:][\w:]*)(\s*\()?/g)) {
    // `ignoring (a) (x)` leaves `ignoring (x)`: a keyword before a parenthesis is still a keyword.
    const isCall = match[2] !== undefined && !PROMQL_KEYWORDS.has(match[1]!);
    (isCall ? calls : names).push(match[1]!);
  }
  return { calls, names };
}

describe('promtool', () => {
  test('check rules accepts the rule file', () => {
    const output = execFileSync('promtool', ['check', 'rules', RULE_FILE], { encoding: 'utf8' });
    expect(output).toContain('SUCCESS');
  });

  test('every rule unit test passes', () => {
    expect(testFiles.length).toBeGreaterThan(0);
    const output = execFileSync('promtool', ['test', 'rules', ...testFiles], {
      encoding: 'utf8',
      cwd: ROOT,
    });
    expect(output).not.toContain('FAILED');
  });
});

describe('exprNames', () => {
  test('finds series, calls and keywords, never label names, values or numbers', () => {
    expect(
      exprNames(
        'sum without (verdict) (increase(a_total{verdict!="ERROR",x=~"b|c"}[3h])) >= 2 ' +
          'unless ignoring (uuid) label_replace(b:rec, "link", "w", "", "") * 1e6 > 0.5 ' +
          'and on (node) (time() - c)',
      ),
    ).toEqual({
      calls: ['sum', 'increase', 'label_replace', 'time'],
      names: ['a_total', 'unless', 'ignoring', 'b:rec', 'and', 'on', 'c'],
    });
  });
});

describe('rules/autopilot.rules.yaml', () => {
  test("AutopilotCheckNeverRan watches exactly the exporter's default periodic checks", () => {
    const rule = alerts.find((r) => r.alert === 'AutopilotCheckNeverRan');
    const listed = /check=~"([^"]+)"/.exec(rule?.expr ?? '')?.[1]?.split('|');
    expect(listed?.slice().sort()).toEqual([...CHECK_TABLE.periodic].sort());
  });

  test('has alerts and recording rules, each named once', () => {
    const names = rules.map((rule) => rule.alert ?? rule.record);
    expect(alerts.length).toBeGreaterThan(0);
    expect(recorded.size).toBeGreaterThan(0);
    expect(new Set(names).size).toBe(names.length);
  });

  test.each(alerts.map((rule) => [rule.alert!, rule] as const))(
    '%s has for, a severity, a summary, a description and a runbook link',
    (name, rule) => {
      expect(rule.for).toMatch(/^\d+[smh]$/);
      expect(SEVERITIES).toContain(rule.labels?.severity);
      expect(rule.annotations?.summary).toMatch(/\.$/);
      // absent() has no labels to name; every other alert names its node, or at least the target.
      const names = rule.expr.trim().startsWith('absent(')
        ? /^[^{]*$/
        : /\$labels\.(node|instance)/;
      expect(rule.annotations?.description).toMatch(names);
      expect(rule.annotations?.runbook_url).toBe(`${RUNBOOK_BASE}${name.toLowerCase()}`);
    },
  );

  test("every alert carries IBM's routing label alert: autopilot beside its severity", () => {
    const without = alerts.filter((rule) => rule.labels?.alert !== IBM_ROUTE_LABEL.alert);
    expect(without.map((rule) => rule.alert)).toEqual([]);
    expect(alerts.length).toBeGreaterThan(20);
  });

  test('every runbook link points at a heading of RUNBOOK.md', () => {
    const anchors = new Set(runbookHeadings.map(githubAnchor));
    for (const rule of alerts) {
      const anchor = rule.annotations!.runbook_url!.slice(RUNBOOK_BASE.length);
      expect({ alert: rule.alert, anchorFound: anchors.has(anchor) }).toEqual({
        alert: rule.alert,
        anchorFound: true,
      });
    }
  });

  test('the runbook has a section for no alert that does not exist', () => {
    const alertNames = new Set(alerts.map((rule) => rule.alert));
    const sections = runbookSections.filter((heading) => heading.startsWith('Autopilot'));
    expect(sections.filter((heading) => !alertNames.has(heading))).toEqual([]);
  });

  test('expressions use only catalogue metrics, up, recorded rules and PromQL functions', () => {
    const known = new Set([...Object.keys(ALL_METRICS), 'up', ...recorded, ...PROMQL_KEYWORDS]);
    for (const rule of rules) {
      const { calls, names } = exprNames(rule.expr);
      const name = rule.alert ?? rule.record;
      expect({ name, unknown: names.filter((n) => !known.has(n)) }).toEqual({ name, unknown: [] });
      expect({ name, calls: calls.filter((c) => !PROMQL_FUNCTIONS.has(c)) }).toEqual({
        name,
        calls: [],
      });
    }
  });

  test('the fatal XIDs of AutopilotGPUFatalXID are the default of AUTOPILOT_XID_FATAL', () => {
    const rule = alerts.find((r) => r.alert === 'AutopilotGPUFatalXID')!;
    const listed = /xid=~"([\d|]+)"/.exec(rule.expr)![1]!.split('|').map(Number);
    expect(listed.sort((a, b) => a - b)).toEqual([...DEFAULT_XID_FATAL].sort((a, b) => a - b));
  });
});

describe('rules/tests', () => {
  const cases = testFiles.flatMap((file) =>
    loadOne<RuleTestFile>(file).tests.flatMap((group) => group.alert_rule_test ?? []),
  );

  test.each(alerts.map((rule) => [rule.alert!] as const))(
    '%s has a test where it fires and one where it stays quiet',
    (name) => {
      const own = cases.filter((c) => c.alertname === name);
      expect(own.some((c) => (c.exp_alerts ?? []).length > 0)).toBe(true);
      expect(own.some((c) => (c.exp_alerts ?? []).length === 0)).toBe(true);
    },
  );

  // promtool compares the whole label set, so these cases passing is promtool showing the label.
  test('every case where an alert fires expects alert: autopilot on it, which promtool checks', () => {
    const firing = cases.flatMap((c) =>
      (c.exp_alerts ?? []).map((expected): Record<string, string> => ({
        alertname: c.alertname,
        ...expected.exp_labels,
      })),
    );
    expect(new Set(firing.map((labels) => labels.alertname))).toEqual(
      new Set(alerts.map((rule) => rule.alert)),
    );
    expect(firing.filter((labels) => labels.alert !== IBM_ROUTE_LABEL.alert)).toEqual([]);
  });

  test('test cases name only alerts that exist', () => {
    const alertNames = new Set(alerts.map((rule) => rule.alert));
    expect(cases.map((c) => c.alertname).filter((name) => !alertNames.has(name))).toEqual([]);
  });
});

describe("IBM's Alertmanager example routes every shipped alert to an Autopilot receiver", () => {
  let dir: string;
  let config: string;
  beforeAll(() => {
    // Only the Slack URL changes: IBM's placeholder is not a URL, so Alertmanager refuses the file.
    dir = mkdtempSync(join(tmpdir(), 'autopilot-ibm-am-'));
    config = join(dir, 'alertmanager.yaml');
    const text = readFileSync(IBM_ALERTMANAGER, 'utf8');
    expect(text).toContain('<slack-webhook-api-url>');
    writeFileSync(config, text.replace('<slack-webhook-api-url>', 'http://127.0.0.1:9/slack'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const receiverFor = (labels: Readonly<Record<string, string>>): string =>
    execFileSync(
      'amtool',
      [
        'config',
        'routes',
        'test',
        `--config.file=${config}`,
        ...Object.entries(labels).map(([name, value]) => `${name}=${value}`),
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
    ).trim();

  test('without the label a warning goes to the Default receiver, which delivers nothing', () => {
    expect(receiverFor({ alertname: 'AutopilotGPUPowerSlowdown', severity: 'warning' })).toBe(
      'Default',
    );
  });

  test.each(alerts.map((rule) => [rule.alert!, rule.labels ?? {}] as const))(
    '%s: critical to Critical, the others to Autopilot',
    (alertname, labels) => {
      const expected = labels.severity === 'critical' ? 'Critical' : 'Autopilot';
      expect(receiverFor({ alertname, ...labels })).toBe(expected);
    },
  );
});
