import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from '@jest/globals';
import { loadAllYaml } from '@kubernetes/client-node';
import { EXPORTER_RBAC_RULES, OPERATOR_RBAC_RULES } from '../../exporter/k8s/rbac-rules.js';
import { ALL_METRICS } from '../../exporter/metrics/catalogue.js';

const ROOT = join(import.meta.dirname, '..', '..');

interface DocumentedMetric {
  readonly type: string;
  readonly labels: readonly string[];
}

/** The rows of the table in docs/metrics.md: | `name` | type | `label`, `label` | meaning | */
function documentedMetrics(): Map<string, DocumentedMetric> {
  const rows = new Map<string, DocumentedMetric>();
  for (const line of readFileSync(join(ROOT, 'docs', 'metrics.md'), 'utf8').split('\n')) {
    const cells = line.split('|').map((cell) => cell.trim());
    const name = /^`(autopilot_\w+)`$/.exec(cells[1] ?? '')?.[1];
    if (name === undefined) continue;
    const labels = [...(cells[3] ?? '').matchAll(/`(\w+)`/g)].map((m) => m[1]!);
    rows.set(name, { type: cells[2] ?? '', labels });
  }
  return rows;
}

describe('docs/metrics.md', () => {
  const documented = documentedMetrics();

  test('lists every metric of the catalogue with its type and labels', () => {
    for (const [name, spec] of Object.entries(ALL_METRICS)) {
      expect({ name, ...documented.get(name) }).toEqual({
        name,
        type: spec.type,
        labels: spec.labelNames,
      });
    }
  });

  test('lists no metric the code does not have', () => {
    expect([...documented.keys()].filter((name) => !(name in ALL_METRICS))).toEqual([]);
  });
});

describe('docs/configuration.md', () => {
  const text = readFileSync(join(ROOT, 'docs', 'configuration.md'), 'utf8');
  const escape = (cell: string): string => cell.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');
  // Prettier pads table cells, so cells match with any surrounding space.
  const row = (...cells: string[]): RegExp =>
    new RegExp(`^\\|${cells.map((cell) => `\\s*${escape(cell)}\\s*\\|`).join('')}`, 'm');

  test('documents every flag with its default, and every environment variable', async () => {
    const { ENV_SETTINGS, FLAGS } = await import('../../exporter/config/config.js');
    // A flag without a default (--logfile) says so in words.
    for (const flag of FLAGS) {
      const shown = flag.defaultValue === '' ? 'none' : `\`${flag.defaultValue}\``;
      expect(text).toMatch(row(`\`--${flag.name}\``, shown));
    }
    for (const [name] of ENV_SETTINGS) expect(text).toMatch(row(`\`${name}\``));
  });
});

describe('docs/kubernetes.md RBAC', () => {
  const text = readFileSync(join(ROOT, 'docs', 'kubernetes.md'), 'utf8');
  const documents = [...text.matchAll(/```yaml\n([\s\S]*?)```/g)].flatMap(
    (match) =>
      loadAllYaml(match[1]!) as { kind?: string; metadata?: { name?: string }; rules?: unknown }[],
  );
  const rulesOf = (name: string): unknown =>
    documents.find((doc) => doc.kind === 'ClusterRole' && doc.metadata?.name === name)?.rules;

  test('the operators’ ClusterRole grants exactly what the API asks SubjectAccessReview for', () => {
    expect(rulesOf('autopilot-operator')).toEqual(OPERATOR_RBAC_RULES);
  });

  test('the exporter’s ClusterRole grants exactly what the exporter calls', () => {
    expect(rulesOf('autopilot')).toEqual(EXPORTER_RBAC_RULES);
  });
});
