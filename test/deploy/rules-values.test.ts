/**
 * The PrometheusRule's thresholds follow the values the DaemonSet's flags use (PCIeBW for --bw,
 * repeat for --w, PERIODIC_CHECKS): the chart replaces exact strings of rules/autopilot.rules.yaml,
 * listed in _helpers.tpl (autopilot.rulesValues). A rules edit that drops one of those strings would
 * silently stop the substitution, so each must still occur; and promtool runs on what the chart
 * renders, not only on rules/.
 */

import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { parse, stringify } from 'yaml';
import { CHART, ROOT, renderChart, type RenderOptions } from './helm.js';
import type { Manifest } from './manifest-schema.js';

/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-assignment,
   @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-return,
   @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-argument --
   rendered objects are untyped YAML, read field by field */
type Any = any;

const RULES = join(ROOT, 'rules', 'autopilot.rules.yaml');
/** The promtool tests of the rules rendered with PCIeBW=20 and repeat=6h. */
const RENDERED_TEST = join(ROOT, 'rules', 'tests', 'rendered', 'pciebw20-repeat6h.test.yaml');

/** The "from" strings of autopilot.rulesValues: the first string literal of each `(list "…" …)`. */
function replacedStrings(): string[] {
  const helpers = readFileSync(join(CHART, 'templates', '_helpers.tpl'), 'utf8');
  const start = helpers.indexOf('{{- define "autopilot.rulesValues" -}}');
  const body = helpers.slice(
    start,
    helpers.indexOf('{{- end -}}\n', helpers.indexOf('toJson', start)),
  );
  // Go's and JSON's escapes agree for the \" these strings use.
  return [...body.matchAll(/\(list "((?:[^"\\]|\\.)*)"/g)].map((m) => JSON.parse(`"${m[1]!}"`));
}

/** The rules without comment lines: a string left only in a comment replaces nothing that counts. */
const rulesWithoutComments = (): string =>
  readFileSync(RULES, 'utf8')
    .split('\n')
    .filter((line) => !line.trimStart().startsWith('#'))
    .join('\n');

function renderedGroups(values: RenderOptions['values']): Any[] {
  const objects: Manifest[] = renderChart(values === undefined ? {} : { values });
  const rule = objects.find((object) => object.kind === 'PrometheusRule') as Any;
  return rule.spec.groups;
}

const alertIn = (groups: Any[], name: string): Any =>
  groups.flatMap((group) => group.rules).find((rule: Any) => rule.alert === name);

describe('the strings the chart replaces in the rules', () => {
  const strings = replacedStrings();

  test('are found in _helpers.tpl', () => {
    expect(strings).toEqual(
      expect.arrayContaining([
        'autopilot_health_checks{health="pciebw"} < 4',
        'in the last pciebw run, under 4 GB/s.',
        'autopilot_check_last_run_timestamp_seconds > 3 * 3600',
        '[10800s]',
        'for: 7200s',
        'check=~"pciebw|remapped|dcgm|ping|gpupower|nvlink|gpucount"',
      ]),
    );
  });

  test.each(strings.map((s) => [s]))('%s still occurs in rules/autopilot.rules.yaml', (text) => {
    expect(rulesWithoutComments()).toContain(text);
  });

  test('with other values none is left in the rendered rules', () => {
    const rendered = stringify(
      renderedGroups({
        PCIeBW: 20,
        repeat: '6h',
        env: [{ name: 'PERIODIC_CHECKS', value: 'pciebw,ping' }],
        fleet: { slowerPercent: 20, minGpus: 4, dropPercent: 30 },
        serviceMonitor: { job: 'gpu-health' },
      }),
      { lineWidth: 0 },
    );
    expect(strings.filter((text) => rendered.includes(text))).toEqual([]);
  });
});

describe("the exporter alerts select the job the chart's ServiceMonitor gives", () => {
  const exporterAlerts = (options: RenderOptions): Any[] => {
    const rule = renderChart(options).find((object) => object.kind === 'PrometheusRule') as Any;
    return ['AutopilotExporterDown', 'AutopilotExporterAbsent'].map((name) =>
      alertIn(rule.spec.groups, name),
    );
  };

  test.each([
    [{}, 'up{job=~"autopilot.*"}'],
    [{ release: 'autopilot', values: { serviceMonitor: { job: '' } } }, 'up{job=~"autopilot.*"}'],
    [
      { release: 'gpu-health', values: { serviceMonitor: { job: '' } } },
      'up{job="gpu-health-autopilot-metrics-service"}',
    ],
    [
      { values: { fullnameOverride: 'gpu-health', serviceMonitor: { job: '' } } },
      'up{job="gpu-health-metrics-service"}',
    ],
    [{ values: { serviceMonitor: { job: 'gpu-health' } } }, 'up{job="gpu-health"}'],
    [
      { values: { fullnameOverride: 'gpu-health', serviceMonitor: { enabled: false, job: '' } } },
      'up{job=~"autopilot.*"}',
    ],
  ])('%j: %s', (options, selector) => {
    const [down, absent] = exporterAlerts(options);
    expect(down.expr).toContain(selector);
    expect(absent.expr).toContain(selector);
    if (!selector.includes('=~')) {
      expect(absent.annotations.description).toContain(`the job "${selector.split('"')[1]!}"`);
    }
  });
});

describe('the fleet thresholds follow fleet.*', () => {
  const values = { fleet: { slowerPercent: 20, minGpus: 4, dropPercent: 30 } };

  test('the recording rule, the drop alert and their texts carry the values', () => {
    const groups = renderedGroups(values);
    const below = groups
      .flatMap((group) => group.rules)
      .find((rule: Any) => rule.record === 'gpu:autopilot_gpu_figure:below_fleet');
    expect(below.expr).toContain('gpu:autopilot_gpu_figure:fleet_ratio < 0.8\n');
    expect(below.expr).toContain('(gpumodel:autopilot_gpu_figure:count >= 4)');
    const slower = alertIn(groups, 'AutopilotGPUSlowerThanFleet');
    expect(slower.annotations.summary).toContain('more than 20 % below');
    const drop = alertIn(groups, 'AutopilotGPUPerformanceDrop');
    expect(drop.expr).toContain('< 0.7 * quantile_over_time');
    expect(drop.annotations.summary).toContain('more than 30 % below its own median');
    expect(drop.annotations.description).toContain('under 70 % of its own median');
  });

  test('15 % renders as 0.85, and promtool accepts the rendered rules', () => {
    const groups = renderedGroups({ fleet: { slowerPercent: 15, minGpus: 8, dropPercent: 15 } });
    const text = stringify({ groups }, { lineWidth: 0 });
    expect(text).toContain('fleet_ratio < 0.85\n');
    expect(text).toContain('< 0.85 * quantile_over_time');
    const dir = mkdtempSync(join(tmpdir(), 'autopilot-fleet-rules-'));
    try {
      writeFileSync(join(dir, 'rules.yaml'), text);
      expect(
        execFileSync('promtool', ['check', 'rules', join(dir, 'rules.yaml')], { encoding: 'utf8' }),
      ).toContain('SUCCESS');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('--set PCIeBW=20 --set repeat=6h', () => {
  let groups: Any[];
  let dir: string;
  let ruleFile: string;
  beforeAll(() => {
    groups = renderedGroups({ PCIeBW: 20, repeat: '6h' });
    dir = mkdtempSync(join(tmpdir(), 'autopilot-rendered-rules-'));
    ruleFile = join(dir, 'rendered.rules.yaml');
    writeFileSync(ruleFile, stringify({ groups }, { lineWidth: 0 }));
    copyFileSync(RENDERED_TEST, join(dir, 'rendered.test.yaml'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('the PCIe alert says 20 in its expression and its description', () => {
    const alert = alertIn(groups, 'AutopilotGPUPCIeBandwidthLow');
    expect(alert.expr.trim()).toBe('autopilot_health_checks{health="pciebw"} < 20');
    expect(alert.annotations.description).toMatch(/, under 20 GB\/s\.$/);
  });

  test('the windows derive from 6 hours: fallback 3 × 21600 s, 3 rounds of ERROR, WARN for 2', () => {
    expect(alertIn(groups, 'AutopilotCheckResultsStale').expr).toContain(
      'time() - autopilot_check_last_run_timestamp_seconds > 3 * 21600',
    );
    expect(alertIn(groups, 'AutopilotCheckResultsStale').expr).toContain(
      '> 3 * autopilot_check_interval_seconds',
    );
    expect(alertIn(groups, 'AutopilotCheckErroring').expr).toContain('[64800s]');
    expect(alertIn(groups, 'AutopilotNodeWarnPersistent').for).toBe('43200s');
    expect(alertIn(groups, 'AutopilotCheckNeverRan').for).toBe('43200s');
  });

  test('promtool check rules accepts the rendered rules', () => {
    expect(execFileSync('promtool', ['check', 'rules', ruleFile], { encoding: 'utf8' })).toContain(
      'SUCCESS',
    );
  });

  test('promtool test rules: 19 GB/s fires and 21 does not; stale past 18h15m, not before', () => {
    const output = execFileSync('promtool', ['test', 'rules', join(dir, 'rendered.test.yaml')], {
      encoding: 'utf8',
    });
    expect(output).toContain('SUCCESS');
    expect(output).not.toContain('FAILED');
  });

  test('the same tests fail on rules rendered at the defaults', () => {
    writeFileSync(ruleFile, stringify({ groups: renderedGroups(undefined) }, { lineWidth: 0 }));
    const run = spawnSync('promtool', ['test', 'rules', join(dir, 'rendered.test.yaml')], {
      encoding: 'utf8',
    });
    writeFileSync(ruleFile, stringify({ groups }, { lineWidth: 0 }));
    expect(run.status).toBe(1);
    // Each case fails: 19 GB/s is not under 4, and the 1h windows fire early.
    expect(`${run.stdout}${run.stderr}`.match(/^ {4}name: /gm)).toHaveLength(4);
  });
});

describe('repeat in every form the schema takes', () => {
  const fallbackWindow = (values: RenderOptions['values']): string =>
    /> 3 \* (\d+)\n/.exec(alertIn(renderedGroups(values), 'AutopilotCheckResultsStale').expr)![1]!;

  test.each([
    ['1h', 3600],
    ['90m', 5400],
    ['1h30m', 5400],
    ['1.5h', 5400],
    [6, 21_600],
    ['6', 21_600],
    // IBM's values: a number of hours.
    [1, 3600],
    // Disabled: no periodic round to count; the 1h default stands.
    [0, 3600],
    // A template cannot work out a cron period: a day.
    ['0 */6 * * *', 86_400],
  ] as const)('repeat %p gives a round of %d s', (repeat, seconds) => {
    expect(fallbackWindow({ repeat })).toBe(String(seconds));
  });

  test('PERIODIC_CHECKS from env names the checks of AutopilotCheckNeverRan; "all" keeps the list', () => {
    const never = (value: string): string =>
      alertIn(
        renderedGroups({ env: [{ name: 'PERIODIC_CHECKS', value }] }),
        'AutopilotCheckNeverRan',
      ).expr;
    // gpucount runs every round whatever the list says, so it is watched too.
    expect(never('pciebw, ping')).toContain('check=~"pciebw|ping|gpucount"');
    expect(never('gpucount,ping')).toContain('check=~"gpucount|ping"');
    expect(never('all')).toContain('check=~"pciebw|remapped|dcgm|ping|gpupower|nvlink|gpucount"');
  });

  test('at the default values the rendered rules are rules/ itself', () => {
    expect({ groups: renderedGroups(undefined) }).toEqual(parse(readFileSync(RULES, 'utf8')));
  });
});
