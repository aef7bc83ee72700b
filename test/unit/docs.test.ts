import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from '@jest/globals';
import { loadAllYaml } from '@kubernetes/client-node';
import {
  EXPORTER_CLUSTER_RBAC_RULES,
  EXPORTER_NAMESPACED_RBAC_RULES,
  EXPORTER_RBAC_RULES,
  OPERATOR_RBAC_RULES,
} from '../../exporter/k8s/rbac-rules.js';
import request from 'supertest';
import { parse } from 'yaml';
import { createStaticTokenAuthorizer } from '../../exporter/api/auth.js';
import { createApiApp } from '../../exporter/api/app.js';
import { apiEndpoints } from '../../exporter/api/index-route.js';
import { createReadinessApp } from '../../exporter/api/side-apps.js';
import type { CheckRun } from '../../exporter/checks/check.js';
import { noCudaDevice } from '../../exporter/checks/gpu-common.js';
import { CHECK_NAMES } from '../../exporter/checks/index.js';
import { judgePeer } from '../../exporter/checks/ping.js';
import { silentLogger } from '../../exporter/log.js';
import { ALL_METRICS } from '../../exporter/metrics/catalogue.js';
import { createMetricsRegistry, type KubernetesView } from '../../exporter/metrics/registry.js';
import {
  evaluateNodeHealth,
  INITIAL_NODE_HEALTH,
  type NodeHealth,
} from '../../exporter/node-health.js';
import { describeListenError } from '../../exporter/server.js';
import { createResultStore } from '../../exporter/store.js';
import { createFakeCheck, createRealRunner } from '../fakes/checks.js';
import { device, makeRun } from '../fakes/runs.js';
import {
  definitions,
  envDefaultProblems,
  exitTable,
  listItems,
  markdownFiles,
  matchesElided,
  metricModeProblems,
  readDoc,
  sampledMetrics,
  section,
} from './docs-check.js';

const ROOT = join(import.meta.dirname, '..', '..');

interface DocumentedMetric {
  readonly type: string;
  readonly labels: readonly string[];
  readonly meaning: string;
}

/**
 * The items of docs/metrics.md: `- \`name\` (type; labels \`label\`, \`label\`): meaning`, with
 * `label` for one and `no labels` for none. An `autopilot_` item of another shape throws.
 */
function documentedMetrics(
  text = readFileSync(join(ROOT, 'docs', 'metrics.md'), 'utf8'),
): Map<string, DocumentedMetric> {
  const rows = new Map<string, DocumentedMetric>();
  for (const [name, item] of definitions(text, /^autopilot_\w+$/)) {
    const note = /^(\w+); (?:labels? ((?:`\w+`(?:, )?)+)|no labels)$/.exec(item.note ?? '');
    if (note === null) throw new Error(`${name}: "(${item.note})" is not "(type; labels …)"`);
    const labels = [...(note[2] ?? '').matchAll(/`(\w+)`/g)].map((m) => m[1]!);
    rows.set(name, { type: note[1]!, labels, meaning: item.meaning });
  }
  return rows;
}

describe('docs/metrics.md', () => {
  const documented = documentedMetrics();

  test('lists every metric of the catalogue with its type and labels', () => {
    for (const [name, spec] of Object.entries(ALL_METRICS)) {
      const row = documented.get(name);
      expect({ name, type: row?.type, labels: row?.labels }).toEqual({
        name,
        type: spec.type,
        labels: spec.labelNames,
      });
    }
  });

  test('lists no metric the code does not have', () => {
    expect([...documented.keys()].filter((name) => !(name in ALL_METRICS))).toEqual([]);
  });

  test('the reader takes type and labels from every item, and refuses an item of another shape', () => {
    const text = [
      '- `autopilot_a` (gauge; labels `check`, `gpu`): A, wrapped',
      '  over two lines.',
      '- `autopilot_b` (counter; label `check`): B.',
      '- `autopilot_c` (gauge; no labels): Kubernetes mode: C.',
    ].join('\n');
    expect(Object.fromEntries(documentedMetrics(text))).toEqual({
      autopilot_a: {
        type: 'gauge',
        labels: ['check', 'gpu'],
        meaning: 'A, wrapped over two lines.',
      },
      autopilot_b: { type: 'counter', labels: ['check'], meaning: 'B.' },
      autopilot_c: { type: 'gauge', labels: [], meaning: 'Kubernetes mode: C.' },
    });
    expect(() => documentedMetrics('- `autopilot_d` (gauge, `check`): D.')).toThrow('autopilot_d');
    expect(() => documentedMetrics('- `autopilot_e` gauge: E.')).toThrow('autopilot_e');
  });
});

describe('docs/configuration.md', () => {
  const text = readFileSync(join(ROOT, 'docs', 'configuration.md'), 'utf8');

  test('documents every flag with its default, and every environment variable', async () => {
    const { ENV_SETTINGS, FLAGS } = await import('../../exporter/config/config.js');
    const flags = definitions(section(text, '## Flags'), /^--/);
    // A flag without a default (--logfile) says so in words.
    const documented = FLAGS.map((flag) => ({
      flag: flag.name,
      note: flags.get(`--${flag.name}`)?.note,
    }));
    expect(documented).toEqual(
      FLAGS.map((flag) => ({
        flag: flag.name,
        note: flag.defaultValue === '' ? 'no default' : `default \`${flag.defaultValue}\``,
      })),
    );
    expect([...flags.keys()].sort()).toEqual(FLAGS.map((flag) => `--${flag.name}`).sort());
    const variables = definitions(section(text, '## Environment variables'), /^[A-Z][A-Z0-9_]*$/);
    expect([...variables.keys()].sort()).toEqual(ENV_SETTINGS.map(([name]) => name).sort());
  });
});

describe('docs/kubernetes.md RBAC', () => {
  const text = readFileSync(join(ROOT, 'docs', 'kubernetes.md'), 'utf8');
  interface Doc {
    kind?: string;
    metadata?: { name?: string; namespace?: string };
    rules?: unknown[];
    roleRef?: { kind?: string; name?: string };
    subjects?: unknown[];
  }
  const documents = [...text.matchAll(/```yaml\n([\s\S]*?)```/g)].flatMap(
    (match) => loadAllYaml(match[1]!) as Doc[],
  );
  const named = (kind: string, name: string): Doc[] =>
    documents.filter((doc) => doc.kind === kind && doc.metadata?.name === name);
  const rulesOf = (name: string, kind = 'ClusterRole'): unknown => named(kind, name)[0]?.rules;

  test('the operators’ ClusterRole grants exactly what the API asks SubjectAccessReview for', () => {
    expect(rulesOf('autopilot-operator')).toEqual(OPERATOR_RBAC_RULES);
  });

  test('the exporter’s Role and ClusterRole grant exactly what the chart’s do (rbac-rules.ts)', () => {
    // One of each, so that no older single-ClusterRole block elsewhere can satisfy the test.
    expect(named('Role', 'autopilot')).toHaveLength(1);
    expect(named('ClusterRole', 'autopilot')).toHaveLength(1);
    expect(rulesOf('autopilot', 'Role')).toEqual(EXPORTER_NAMESPACED_RBAC_RULES);
    expect(named('Role', 'autopilot')[0]!.metadata?.namespace).toBe('autopilot');
    expect(rulesOf('autopilot')).toEqual(EXPORTER_CLUSTER_RBAC_RULES);
    // Together: everything the exporter calls, each rule once.
    const granted = [...named('Role', 'autopilot'), ...named('ClusterRole', 'autopilot')].flatMap(
      (doc) => doc.rules ?? [],
    );
    expect(granted).toHaveLength(EXPORTER_RBAC_RULES.length);
    expect(granted).toEqual(expect.arrayContaining([...EXPORTER_RBAC_RULES]));
  });

  test('each binding gives its role to the exporter’s service account', () => {
    const subject = { kind: 'ServiceAccount', name: 'autopilot', namespace: 'autopilot' };
    for (const [binding, kind] of [
      ['RoleBinding', 'Role'],
      ['ClusterRoleBinding', 'ClusterRole'],
    ] as const) {
      const [doc] = named(binding, 'autopilot');
      expect(doc?.roleRef).toMatchObject({ kind, name: 'autopilot' });
      expect(doc?.subjects).toEqual([subject]);
    }
    expect(named('RoleBinding', 'autopilot')[0]!.metadata?.namespace).toBe('autopilot');
  });
});

/* ---------------------------------------------------------------------------------------------
 * Claims the docs make about behaviour, each read from the doc and compared with the code that
 * decides it, so a wrong claim (or a change of behaviour the docs miss) fails here. Issue 17 found
 * nine wrong ones; each is pinned below.
 * ------------------------------------------------------------------------------------------- */

const fakeKubernetes: KubernetesView = {
  health: { snapshot: () => ({ up: true, failures: new Map([['getNode', 1]]) }) },
  peers: () => [{ ready: true }, { ready: false }],
};

/** The same stored runs rendered as standalone mode and as Kubernetes mode render them. */
async function expositions(): Promise<{ standalone: string; kubernetes: string }> {
  const store = createResultStore({ historySize: 5 });
  const ping = createFakeCheck({ name: 'ping' });
  store.record(makeRun('ping', Date.UTC(2026, 0, 1), [device('node-b', 'PASS')]));
  const render = (kubernetes: KubernetesView | undefined): Promise<string> =>
    createMetricsRegistry({
      store,
      checks: new Map([['ping', ping]]),
      host: { nodeName: 'node-a', cpuModel: 'cpu', gpuModel: 'gpu' },
      build: { version: '0.0.0', nodejs: '20' },
      ...(kubernetes === undefined ? {} : { kubernetes }),
    }).metrics();
  return { standalone: await render(undefined), kubernetes: await render(fakeKubernetes) };
}

describe('docs/metrics.md: which metrics each mode exports', () => {
  test('a "Kubernetes mode:" row is absent in standalone mode and present in Kubernetes mode', async () => {
    const { standalone, kubernetes } = await expositions();
    const meanings = new Map([...documentedMetrics()].map(([name, row]) => [name, row.meaning]));
    expect(meanings.get('autopilot_kubernetes_api_up')).toMatch(/^Kubernetes mode:/);
    expect(
      metricModeProblems(meanings, sampledMetrics(standalone), sampledMetrics(kubernetes)),
    ).toEqual([]);
  });

  test('the checker reports a Kubernetes-only row that standalone mode exports, and the reverse', () => {
    const wrong = new Map([
      ['autopilot_kubernetes_api_up', 'Kubernetes mode: 1 when the last call answered.'],
      ['autopilot_peers', 'Pods the Service lists.'],
    ]);
    const both = new Set(['autopilot_kubernetes_api_up']);
    expect(metricModeProblems(wrong, both, new Set([...both, 'autopilot_peers']))).toEqual([
      'autopilot_kubernetes_api_up: documented as Kubernetes mode only, but standalone mode exports it',
      'autopilot_peers: exported in one mode only, but not documented as "Kubernetes mode:"',
    ]);
  });
});

describe('docs/configuration.md: environment defaults as --help shows them', () => {
  test('every variable’s default cell names the setting’s default', async () => {
    const { ENV_SETTINGS } = await import('../../exporter/config/config.js');
    expect(envDefaultProblems(readDoc('docs/configuration.md'), ENV_SETTINGS)).toEqual([]);
  });

  test('the checker reports a wrong default and a default where there is none', () => {
    const doc = [
      '- `A_PORT` (default `8082`): port',
      '- `A_FILE` (default `x`): a file, wrapped',
      '  onto a second line',
      '- `A_MODE` (`on`): mode',
      '- `A_NAME`: name',
    ].join('\n');
    expect(
      envDefaultProblems(doc, [
        ['A_PORT', '8081', 'port'],
        ['A_FILE', '', 'file'],
        ['A_MODE', 'on', 'mode'],
        ['A_NAME', 'the host name', 'name'],
        ['A_GONE', '', 'gone'],
      ]),
    ).toEqual([
      'A_PORT: documented default "`8082`", --help says "8081"',
      'A_FILE: documented default "`x`", --help says ""',
      'A_MODE: "(`on`)" is not "(default …)"',
      'A_NAME: documented default "", --help says "the host name"',
      'A_GONE: no item',
    ]);
  });
});

describe('exit statuses', () => {
  test('configuration.md’s `autopilot check` table is CHECK_EXIT, and checkExitCode follows it', async () => {
    const { CHECK_EXIT, checkExitCode } = await import('../../exporter/cli.js');
    const rows = exitTable(section(readDoc('docs/configuration.md'), '## `autopilot check`'));
    expect([...rows.keys()].sort()).toEqual(Object.values(CHECK_EXIT).sort());
    expect(rows.get(CHECK_EXIT.fail)).toMatch(/`FAIL`/);
    expect(rows.get(CHECK_EXIT.error)).toMatch(/`ERROR`/);
    expect(checkExitCode(['PASS', 'FAIL', 'ERROR'])).toBe(CHECK_EXIT.fail);
    expect(checkExitCode(['PASS', 'ERROR'])).toBe(CHECK_EXIT.error);
    expect(checkExitCode(['PASS', 'WARN', 'SKIP'])).toBe(CHECK_EXIT.ok);
  });

  test('README’s `check` exit statuses are CHECK_EXIT’s, wherever it gives them', async () => {
    const { CHECK_EXIT } = await import('../../exporter/cli.js');
    const readme = readDoc('README.md').replace(/\s+/g, ' ');
    const said = (pattern: RegExp): number[] =>
      [...readme.matchAll(pattern)].map((match) => Number(match[1]));
    const fail = said(/(\d) (?:on|when a check reported) `FAIL`(?! or)/g);
    const error = said(/(\d) (?:on `ERROR`|when none failed but one said `ERROR`)/g);
    const usage = said(/(\d) on bad usage/g);
    expect(fail.length * error.length * usage.length).toBeGreaterThan(0);
    expect(new Set([...fail, CHECK_EXIT.fail])).toEqual(new Set([CHECK_EXIT.fail]));
    expect(new Set([...error, CHECK_EXIT.error])).toEqual(new Set([CHECK_EXIT.error]));
    expect(new Set([...usage, CHECK_EXIT.usage])).toEqual(new Set([CHECK_EXIT.usage]));
    expect(readme).not.toMatch(/\d when a check reported `FAIL` or `ERROR`/);
  });

  test('stages.md’s pre-flight table: 0 READY, 1 NOT READY or unreachable (fail), 2 a bad option', async () => {
    const { judgePreflight, judgeUnreachable, parsePreflightOptions } =
      await import('../../exporter/preflight-client.js');
    const doc = section(readDoc('docs/stages.md'), '## Pre-flight');
    const rows = exitTable(section(doc, '### Verdict and exit status'));
    const options = (extra: Record<string, string> = {}) =>
      new Map(
        Object.entries({
          url: 'http://x:3333',
          'max-age': '1h',
          checks: 'ping',
          'fail-on': 'warn',
          ...extra,
        }),
      );
    const request = parsePreflightOptions(options(), 'n1', CHECK_NAMES);
    const status = (state: string, verdict: string) => ({
      health: { state, reasons: [] },
      results: [{ check: 'ping', verdict, reason: '' }],
    });
    expect([...rows.keys()]).toEqual([0, 1, 2]);
    expect(rows.get(0)).toMatch(/^`READY`/);
    expect(judgePreflight(status('PASS', 'PASS'), request).exitCode).toBe(0);
    expect(rows.get(1)).toMatch(
      /^`NOT READY`.*not reached \(`--on-unreachable=fail`, the default\)/,
    );
    expect(judgePreflight(status('WARN', 'FAIL'), request).exitCode).toBe(1);
    expect(judgeUnreachable('http://x:3333', new Error('refused'), request).exitCode).toBe(1);
    // The default of --on-unreachable, as the options table says.
    expect(doc.replace(/\s+/g, ' ')).toContain(
      '- `--on-unreachable` (default `fail`): exporters not reachable: `fail` blocks the job (exit 1), `pass` lets it start (exit 0)',
    );
    const passing = parsePreflightOptions(options({ 'on-unreachable': 'pass' }), 'n1', CHECK_NAMES);
    expect(judgeUnreachable('http://x:3333', new Error('refused'), passing).exitCode).toBe(0);
    // Exit 2 is main's answer to a thrown option error; each option the row names is validated.
    for (const flag of [...(rows.get(2) ?? '').matchAll(/`--([\w-]+)`/g)].map((m) => m[1]!)) {
      expect(() => parsePreflightOptions(options({ [flag]: 'nope' }), 'n1', CHECK_NAMES)).toThrow(
        `--${flag}`,
      );
    }
  });
});

/** A standalone API with a fake check under every real check's name, as `/` and errors list them. */
function standaloneApi() {
  const real = createRealRunner(CHECK_NAMES.map((name) => createFakeCheck({ name })));
  const app = createApiApp({
    nodeName: 'node-a',
    checks: real.checks,
    periodicChecks: ['ping'],
    runner: real.runner,
    store: real.store,
    logger: silentLogger,
    authorizer: createStaticTokenAuthorizer(undefined),
    now: () => Date.now(),
    cluster: undefined,
  });
  return { app, close: () => real.runner.shutdown(5_000) };
}

describe('docs/api.md and README.md: endpoints and answers', () => {
  const api = readDoc('docs/api.md');

  test('every endpoint of the API index is documented, and every documented :3333 path exists', () => {
    const served = apiEndpoints(CHECK_NAMES, true).map((endpoint) => endpoint.path);
    for (const path of served)
      expect({ path, documented: api.includes(`\`${path}\``) }).toEqual({ path, documented: true });
    const portRow = listItems(api).find((item) => item.startsWith('`:3333`')) ?? '';
    const headings = [...api.matchAll(/^## `(\/\w*)`/gm)].map((m) => m[1]!);
    const claimed = [...[...portRow.matchAll(/`(\/\w*)`/g)].map((m) => m[1]!), ...headings];
    expect(claimed.length).toBeGreaterThan(4);
    expect(claimed.filter((path) => path !== '/' && !served.includes(path))).toEqual([]);
  });

  test('404 for another path, 405 for /acknowledge without POST, as the top of the page says', async () => {
    const notFound = Number(/Any other path answers (\d{3})/.exec(api)?.[1]);
    const notAllowed = Number(/accepts only `POST` \(`(\d{3})` otherwise\)/.exec(api)?.[1]);
    const { app, close } = standaloneApi();
    try {
      expect((await request(app.callback()).get('/no-such-path')).status).toBe(notFound);
      expect((await request(app.callback()).get('/acknowledge')).status).toBe(notAllowed);
    } finally {
      await close();
    }
  });

  test('the readiness answer is the one the port table gives', async () => {
    const row = listItems(api).find((item) => item.startsWith('`:8080`')) ?? '';
    // `:8080`, `AUTOPILOT_READINESS_PORT`, `/readinessprobe`, then the answer's three spans.
    const [path, status, type, body] = [...row.matchAll(/`([^`]+)`/g)].map((m) => m[1]!).slice(2);
    const response = await request(createReadinessApp().callback()).get(path!);
    expect([response.status, response.text.trim()]).toEqual([Number(status), body]);
    expect(`Content-Type: ${response.headers['content-type']}`).toMatch(new RegExp(`^${type}`));
  });

  test('README’s curl examples answer the status and text their comments give', async () => {
    const examples = [
      ...readDoc('README.md').matchAll(/^curl .*?localhost:(\d+)(\/[^"\s]*)"?\s+# (\d{3}) (.*)$/gm),
    ];
    expect(examples.map((m) => m[3])).toEqual(expect.arrayContaining(['201', '400']));
    const { app, close } = standaloneApi();
    try {
      for (const [, port, path, status, text] of examples) {
        const target = port === '8080' ? createReadinessApp() : app;
        const response = await request(target.callback()).get(path!);
        expect({ path, status: response.status }).toEqual({ path, status: Number(status) });
        expect({ path, matches: matchesElided(text!, response.text.trim()) }).toEqual({
          path,
          matches: true,
        });
      }
    } finally {
      await close();
    }
  });

  test('an elided claim matches only text of its shape', () => {
    expect(matchesElided('known checks: pciebw, …, all', 'known checks: pciebw, ping, all')).toBe(
      true,
    );
    expect(matchesElided('known checks: ping, all', 'known checks: pciebw, ping, all')).toBe(false);
  });
});

describe('messages the docs quote', () => {
  test('operations.md’s ping reason without CAP_NET_RAW is what ping’s captured failure gives', () => {
    const claimed = /socket, `(ping may not open a socket[^`]*)`/.exec(
      readDoc('docs/operations.md'),
    )?.[1];
    const fixtures = join(ROOT, 'test', 'fixtures', 'ping', 'iputils-20221126');
    const judged = judgePeer('10.0.0.2', {
      end: 'exited',
      exitCode: 2,
      signal: null,
      stdout: readFileSync(join(fixtures, 'no-cap-net-raw.txt'), 'utf8'),
      stderr: readFileSync(join(fixtures, 'no-cap-net-raw.stderr'), 'utf8'),
      durationMs: 1,
    });
    expect(judged.verdict).toBe('ERROR');
    expect(claimed).toBeDefined();
    expect(matchesElided(claimed!, judged.reason)).toBe(true);
    expect(readDoc('docs/checks.md').replace(/\s+/g, ' ')).toContain(
      "the `CAP_NET_RAW` capability, or the exporter's group in the sysctl `net.ipv4.ping_group_range`",
    );
  });

  test('operations.md’s port-in-use line is what start-up prints, naming the setting', () => {
    const claimed = /exit code 1 with `(autopilot: port (\d+) is in use[^`]*)`/.exec(
      readDoc('docs/operations.md'),
    );
    expect(claimed).not.toBeNull();
    const line = describeListenError(
      { code: 'EADDRINUSE', port: Number(claimed![2]), setting: 'AUTOPILOT_METRICS_PORT' },
      undefined,
    );
    expect(`autopilot: ${line}`).toBe(claimed![1]);
  });

  test('the "CUDA sees no device" reason and checks.md name the image’s CUDA major', () => {
    const version = /^ARG CUDA_VERSION=(\d+)\.(\d+)/m.exec(readDoc('deploy/Dockerfile'));
    expect(version).not.toBeNull();
    const [, major, minor] = version!;
    expect(noCudaDevice(8)).toContain(`for CUDA ${major}, as in the image`);
    expect(readDoc('docs/checks.md')).toContain(`built with CUDA ${major}.${minor}`);
  });

  test('README: IBM values files upgrade once image.repository and image.tag are set, not unchanged', () => {
    const readme = readDoc('README.md').replace(/\s+/g, ' ');
    const sentence = /An existing IBM Autopilot installation.*?\.(?= |$)/.exec(readme)?.[0] ?? '';
    expect(sentence).toContain('`image.repository` and `image.tag`');
    for (const file of markdownFiles()) {
      expect({
        file,
        claim: /values file[^.]{0,40}(works|work|render)s? unchanged/i.test(readDoc(file)),
      }).toEqual({ file, claim: false });
    }
  });
});

describe('all-SKIP and the node state', () => {
  const skip = makeRun('gpupower', 2, [device('0', 'SKIP')]);
  const pass = makeRun('gpupower', 1, [device('0', 'PASS')]);
  const evaluate = (previous: NodeHealth, run: CheckRun) =>
    evaluateNodeHealth(previous, { conclusiveRuns: [run], acknowledgedAt: undefined, now: 3 })
      .state;

  test('SKIP alone is UNKNOWN only before any evidence; after it the state stays', () => {
    expect(evaluate(INITIAL_NODE_HEALTH, skip)).toBe('UNKNOWN');
    const passed = evaluateNodeHealth(INITIAL_NODE_HEALTH, {
      conclusiveRuns: [pass],
      acknowledgedAt: undefined,
      now: 1,
    });
    expect(passed.state).toBe('PASS');
    expect(evaluate(passed, skip)).toBe('PASS');
    expect(evaluate({ state: 'WARN', since: 0, reasons: ['x'] }, skip)).toBe('WARN');
  });

  test('the docs say so, and no longer say all-SKIP means UNKNOWN', () => {
    const stages = readDoc('docs/stages.md').replace(/\s+/g, ' ');
    expect(stages).toContain(
      'one that was `WARN` or `EVICT` before its checks began to say `SKIP` stays so',
    );
    for (const file of markdownFiles()) {
      const text = readDoc(file).replace(/\s+/g, ' ');
      expect({
        file,
        claim: /every check (says )?`SKIP`[^.]{0,30}state `UNKNOWN`/.test(text),
      }).toEqual({ file, claim: false });
    }
  });
});

interface Rule {
  readonly alert?: string;
  readonly record?: string;
  readonly for?: string;
  readonly labels?: { readonly severity?: string };
  readonly annotations?: { readonly summary?: string };
}

/** A Prometheus duration ("2h", "7200s", "1h30m") in seconds, so that equal windows compare equal. */
function seconds(duration: string): number {
  const unit: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };
  const parts = [...duration.matchAll(/(\d+)([smhd])/g)];
  if (parts.map((m) => m[0]).join('') !== duration) throw new Error(`not a duration: ${duration}`);
  return parts.reduce((sum, m) => sum + Number(m[1]) * unit[m[2]!]!, 0);
}

describe('the alerts the docs list and count', () => {
  const rules = (
    parse(readDoc('rules/autopilot.rules.yaml')) as { groups: { rules: Rule[] }[] }
  ).groups.flatMap((group) => group.rules);
  const alerts = rules.filter((rule) => rule.alert !== undefined);

  test('every "N alerts" and "N recording rules" is the rule file’s count', () => {
    const records = rules.length - alerts.length;
    for (const file of markdownFiles()) {
      const text = readDoc(file).replace(/\s+/g, ' ');
      for (const [, count] of text.matchAll(/(?<![\w-])(\d+) alerts\b/g))
        expect({ file, alerts: Number(count) }).toEqual({ file, alerts: alerts.length });
      for (const [, count] of text.matchAll(/(?<![\w-])(\d+) recording rules/g))
        expect({ file, records: Number(count) }).toEqual({ file, records });
    }
  });

  test('operations.md lists every alert with its severity, for and summary', () => {
    const listed = [
      ...section(readDoc('docs/operations.md'), '## Alerts')
        .replace(/\n {2}(?=\S)/g, ' ')
        .matchAll(/^- \[`(\w+)`\]\(\.\.\/rules\/RUNBOOK\.md#(\w+)\) \((\w+), for (\w+)\): (.*)$/gm),
    ].map(([, name, anchor, severity, pending, summary]) => ({
      name,
      anchor,
      severity,
      pending: seconds(pending!),
      summary,
    }));
    expect(listed).toEqual(
      alerts.map((rule) => ({
        name: rule.alert,
        anchor: rule.alert!.toLowerCase(),
        severity: rule.labels?.severity,
        pending: seconds(rule.for ?? '0s'),
        summary: rule.annotations?.summary,
      })),
    );
  });
});
