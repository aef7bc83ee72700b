/**
 * The Helm chart, rendered by the real helm over a matrix of values: lint, schema validation with
 * unknown fields rejected, policy checks, and agreement with the code (the exporter parses the
 * DaemonSet's command line and environment; the ClusterRoles grant exactly what the code calls).
 */

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from '@jest/globals';
import { parse } from 'yaml';
import { CHECK_NAMES } from '../../exporter/checks/index.js';
import { DEFAULT_XID_FATAL } from '../../exporter/checks/xid.js';
import { parseCommandLine } from '../../exporter/cli.js';
import { parseConfig } from '../../exporter/config/config.js';
import {
  EXPORTER_CLUSTER_RBAC_RULES,
  EXPORTER_NAMESPACED_RBAC_RULES,
  EXPORTER_RBAC_RULES,
  OPERATOR_RBAC_RULES,
  type PolicyRule,
} from '../../exporter/k8s/rbac-rules.js';
import {
  CHART,
  ROOT,
  helm,
  renderChart,
  templateRun,
  withValues,
  type RenderOptions,
} from './helm.js';
import { validateManifests, type Manifest } from './manifest-schema.js';

/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-assignment,
   @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-argument,
   @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-return --
   rendered objects are untyped YAML, read field by field; their shape is what the schema test checks */
type Any = any;

/** IBM's chart values, verbatim (test/fixtures/ibm/README.md): the last release and the newest. */
const IBM_VALUES_FILES = ['values-v2.1.3.yaml', 'values-09a177d.yaml'] as const;
const IBM_IMAGE = 'quay.io/autopilot/autopilot';

const ibmValues = (file: (typeof IBM_VALUES_FILES)[number]): Record<string, unknown> =>
  parse(readFileSync(join(ROOT, 'test', 'fixtures', 'ibm', file), 'utf8')) as Record<
    string,
    unknown
  >;

/** What an operator changes in IBM's file, and nothing else: the image. */
const withOurImage = (values: Record<string, unknown>): Record<string, unknown> => ({
  ...values,
  image: {
    ...(values.image as Record<string, unknown>),
    repository: 'registry.example.com/autopilot',
    tag: '0.1.0',
  },
});

const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

interface Case {
  readonly name: string;
  readonly options: RenderOptions;
}

const MATRIX: readonly Case[] = [
  { name: 'defaults', options: {} },
  { name: 'onlyOnGPUNodes=false', options: { values: { onlyOnGPUNodes: false } } },
  {
    name: 'another namespace and release name',
    options: { release: 'gpu-health', namespace: 'observability' },
  },
  {
    name: 'custom ports',
    options: { values: { service: { port: 4444, metricsPort: 9400, readinessPort: 9401 } } },
  },
  { name: 'NetworkPolicy on', options: { values: { networkPolicy: { enabled: true } } } },
  { name: 'no prometheus-operator API', options: { apiVersions: [] } },
  ...IBM_VALUES_FILES.map((file) => ({
    name: `IBM Autopilot's ${file}, image overridden`,
    options: { values: withOurImage(ibmValues(file)) },
  })),
];

const byKind = (objects: readonly Manifest[], kind: string): Any[] =>
  objects.filter((object) => object.kind === kind);
const one = (objects: readonly Manifest[], kind: string): Any => {
  const found = byKind(objects, kind);
  expect(found).toHaveLength(1);
  return found[0];
};

/** The subset of label-selector matching that matchLabels needs. */
const selects = (selector: Record<string, string>, labels: Record<string, string>) =>
  Object.entries(selector).every(([key, value]) => labels[key] === value);

/** Rules as sorted, comparable strings; a rule with several resources counts once per resource. */
/** A memory quantity (Mi, Gi, Ti, or bytes) in GiB. */
const gibibytes = (quantity: string): number => {
  const match = /^(\d+(?:\.\d+)?)(Mi|Gi|Ti)?$/.exec(quantity);
  if (!match) throw new Error(`unexpected memory quantity ${quantity}`);
  const unit = { Mi: 1 / 1024, Gi: 1, Ti: 1024 }[match[2] ?? ''] ?? 1 / 1024 ** 3;
  return Number(match[1]) * unit;
};

const normalizeRules = (rules: readonly PolicyRule[] | readonly Any[]): string[] =>
  rules
    .flatMap((rule: Any) =>
      (rule.resources as string[]).map((resource) =>
        JSON.stringify({
          apiGroups: [...(rule.apiGroups as string[])].sort(),
          resource,
          verbs: [...(rule.verbs as string[])].sort(),
          resourceNames: [...((rule.resourceNames as string[] | undefined) ?? [])].sort(),
        }),
      ),
    )
    .sort();

describe.each(MATRIX)('chart with $name', ({ options }) => {
  let objects: Manifest[];
  let daemonSet: Any;
  let pod: Any;
  let container: Any;
  const namespace = options.namespace ?? 'autopilot';

  beforeAll(() => {
    objects = renderChart(options);
    daemonSet = one(objects, 'DaemonSet');
    pod = daemonSet.spec.template.spec;
    container = pod.containers[0];
  });

  test('helm lint passes', () => {
    const run = withValues(options.values, (valueArgs) =>
      helm(['lint', CHART, '--namespace', namespace, ...valueArgs]),
    );
    expect(run.stderr + run.stdout).toContain('0 chart(s) failed');
    expect(run.status).toBe(0);
  });

  test('every object is valid against its schema, with no unknown field', async () => {
    expect(await validateManifests(objects)).toEqual([]);
  });

  test('namespaced objects are in the release namespace', () => {
    const clusterScoped = new Set(['ClusterRole', 'ClusterRoleBinding', 'PriorityClass']);
    for (const object of objects) {
      if (clusterScoped.has(object.kind)) expect(object.metadata.namespace).toBeUndefined();
      else expect([object.kind, object.metadata.namespace]).toEqual([object.kind, namespace]);
    }
  });

  test('the pod is unprivileged and non-root with a read-only root filesystem', () => {
    expect(pod.hostNetwork ?? false).toBe(false);
    expect(pod.hostPID ?? false).toBe(false);
    expect(pod.hostIPC ?? false).toBe(false);
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
    expect(pod.securityContext.seccompProfile).toEqual({ type: 'RuntimeDefault' });
    expect(pod.volumes.filter((volume: Any) => volume.hostPath !== undefined)).toEqual([]);
    for (const each of [...(pod.initContainers ?? []), ...pod.containers]) {
      const context = each.securityContext;
      expect(context.privileged ?? false).toBe(false);
      expect(context.allowPrivilegeEscalation).toBe(false);
      expect(context.readOnlyRootFilesystem).toBe(true);
      expect(context.capabilities).toEqual({ drop: ['ALL'] });
      expect(context.runAsUser ?? pod.securityContext.runAsUser).toBeGreaterThan(0);
    }
  });

  test('ping works unprivileged through the net.ipv4.ping_group_range sysctl', () => {
    expect(pod.securityContext.sysctls).toEqual([
      { name: 'net.ipv4.ping_group_range', value: '0 2147483647' },
    ]);
  });

  test('GPUs are reached through the NVIDIA runtime, none is requested', () => {
    const env = Object.fromEntries(container.env.map((entry: Any) => [entry.name, entry.value]));
    expect(env.NVIDIA_VISIBLE_DEVICES).toBe('all');
    expect(env.NVIDIA_DRIVER_CAPABILITIES).toBe('compute,utility');
    // Autopilot's values file asks for 0, which is the same as not asking.
    for (const quantities of [container.resources.requests, container.resources.limits]) {
      expect(Number(quantities['nvidia.com/gpu'] ?? 0)).toBe(0);
    }
  });

  test('probes hit named container ports, and resources are set', () => {
    const portNames = container.ports.map((port: Any) => port.name);
    for (const probe of [container.readinessProbe, container.livenessProbe]) {
      expect(probe.httpGet.path).toBe('/readinessprobe');
      expect(portNames).toContain(probe.httpGet.port);
      expect(probe.periodSeconds).toBeGreaterThan(0);
    }
    expect(container.resources.requests.cpu).toBeDefined();
    expect(container.resources.requests.memory).toBeDefined();
    expect(container.resources.limits.memory).toBeDefined();
    // DCGM's diagnostics run in this pod and take several GB (IBM's values warn of OOM kills).
    expect(gibibytes(container.resources.limits.memory)).toBeGreaterThanOrEqual(4);
    expect(container.resources.limits.cpu).toBeUndefined();
    expect(container.image).not.toMatch(/:latest$/);
  });

  test('the selector matches the pod labels, and each Service selects the pods by a named port', () => {
    const podLabels = daemonSet.spec.template.metadata.labels;
    expect(selects(daemonSet.spec.selector.matchLabels, podLabels)).toBe(true);
    const portNames = container.ports.map((port: Any) => port.name);
    const services = byKind(objects, 'Service');
    expect(services).toHaveLength(3);
    for (const service of services) {
      expect(selects(service.spec.selector, podLabels)).toBe(true);
      for (const port of service.spec.ports) expect(portNames).toContain(port.targetPort);
    }
  });

  test('the exporter accepts the command line and environment the chart gives it', () => {
    const env: Record<string, string> = {
      NODE_NAME: 'gpu-node-1',
      NAMESPACE: namespace,
      POD_NAME: 'autopilot-x7k2p',
    };
    for (const entry of container.env) if (entry.value !== undefined) env[entry.name] = entry.value;
    const names = container.env.map((entry: Any) => entry.name);
    expect(new Set(names).size).toBe(names.length);

    const commandLine = parseCommandLine(container.args);
    expect(commandLine.command).toEqual({ kind: 'serve' });
    const config = parseConfig({
      flags: commandLine.flags,
      env,
      hostname: 'pod',
      knownChecks: CHECK_NAMES,
    });
    const port = (name: string) =>
      container.ports.find((candidate: Any) => candidate.name === name).containerPort;
    expect([config.apiPort, config.metricsPort, config.readinessPort]).toEqual([
      port('healthcheck'),
      port('http'),
      port('readinessprobe'),
    ]);
    expect(config.kubernetes).toBe('on');
    expect(config.namespace).toBe(namespace);

    const healthchecks = byKind(objects, 'Service').find(
      (service) => service.spec.ports[0].name === 'healthcheck',
    );
    expect(config.serviceName).toBe(healthchecks.metadata.name);
    const [selectorKey, selectorValue] = config.podSelector.split('=');
    expect(daemonSet.spec.template.metadata.labels[selectorKey!]).toBe(selectorValue);
    expect(config.deepcheckImage).toBe(container.image);
    const priorityClass = one(objects, 'PriorityClass');
    expect(config.deepcheckPriorityClass).toBe(priorityClass.metadata.name);
    expect(priorityClass.value).toBeLessThan(0);
    expect(priorityClass.preemptionPolicy).toBe('Never');
  });

  test("the exporter's ClusterRole and Role grant exactly what the code calls, to the pods' account", () => {
    const fullname = daemonSet.metadata.name;
    const roles = byKind(objects, 'ClusterRole');
    const exporterRole = roles.find((role) => role.metadata.name === fullname);
    expect(normalizeRules(exporterRole.rules)).toEqual(normalizeRules(EXPORTER_CLUSTER_RBAC_RULES));
    // Jobs, claims and EndpointSlices only in the release's namespace, the exporter's NAMESPACE.
    const role = one(objects, 'Role');
    expect(role.metadata).toMatchObject({ name: fullname, namespace });
    expect(normalizeRules(role.rules)).toEqual(normalizeRules(EXPORTER_NAMESPACED_RBAC_RULES));
    expect(normalizeRules([...exporterRole.rules, ...role.rules])).toEqual(
      normalizeRules(EXPORTER_RBAC_RULES),
    );
    const roleBinding = one(objects, 'RoleBinding');
    expect(roleBinding.metadata.namespace).toBe(namespace);
    expect(roleBinding.roleRef).toEqual({
      apiGroup: 'rbac.authorization.k8s.io',
      kind: 'Role',
      name: fullname,
    });
    expect(roleBinding.subjects).toEqual([
      { kind: 'ServiceAccount', name: pod.serviceAccountName, namespace },
    ]);
    for (const kind of ['jobs', 'persistentvolumeclaims', 'endpointslices']) {
      expect((exporterRole.rules as Any[]).filter((rule) => rule.resources.includes(kind))).toEqual(
        [],
      );
    }
    const binding = one(objects, 'ClusterRoleBinding');
    expect(binding.roleRef).toEqual({
      apiGroup: 'rbac.authorization.k8s.io',
      kind: 'ClusterRole',
      name: fullname,
    });
    expect(binding.subjects).toEqual([
      { kind: 'ServiceAccount', name: pod.serviceAccountName, namespace },
    ]);
    expect(one(objects, 'ServiceAccount').metadata.name).toBe(pod.serviceAccountName);
  });

  test('the operator ClusterRole grants exactly the protected API actions', () => {
    const operator = byKind(objects, 'ClusterRole').find((role) =>
      (role.metadata.name as string).endsWith('-operator'),
    );
    expect(normalizeRules(operator.rules)).toEqual(normalizeRules(OPERATOR_RBAC_RULES));
  });

  test('RBAC verbs are minimal: no wildcard, no escalation verb', () => {
    const kinds = new Map<Any, string>();
    const rules = [...byKind(objects, 'ClusterRole'), ...byKind(objects, 'Role')].flatMap(
      (object) =>
        (object.rules as Any[]).map((rule) => (kinds.set(rule, object.kind as string), rule)),
    );
    const role = (rule: Any): string | undefined => kinds.get(rule);
    const words = rules.flatMap((rule) => [...rule.verbs, ...rule.resources, ...rule.apiGroups]);
    expect(words).not.toContain('*');
    for (const verb of ['escalate', 'bind', 'impersonate', 'update', 'deletecollection']) {
      expect(
        // update: acknowledging (a virtual resource) and the taint breaker's Lease, a lock that is
        // updated with the resourceVersion read, in the release namespace only (a Role).
        rules.filter(
          (rule) =>
            rule.verbs.includes(verb) &&
            rule.resources[0] !== 'nodehealth' &&
            !(verb === 'update' && rule.resources[0] === 'leases' && role(rule) === 'Role'),
        ),
      ).toEqual([]);
    }
    const secretsOrConfig = rules.filter((rule) =>
      (rule.resources as string[]).some((resource) => ['secrets', 'configmaps'].includes(resource)),
    );
    expect(secretsOrConfig).toEqual([]);
  });
});

describe('chart: monitoring objects', () => {
  let objects: Manifest[];
  beforeAll(() => {
    objects = renderChart();
  });

  test('the PrometheusRule holds exactly the groups of rules/autopilot.rules.yaml', () => {
    const rule = one(objects, 'PrometheusRule');
    const source = parse(readFileSync(join(ROOT, 'rules', 'autopilot.rules.yaml'), 'utf8'));
    expect(rule.spec).toEqual(source);
    expect(rule.metadata.labels.release).toBe('prometheus');
  });

  test('each dashboard of dashboards/ is a ConfigMap with the Grafana sidecar label', () => {
    const files = readdirSync(join(ROOT, 'dashboards')).filter((file) => file.endsWith('.json'));
    const maps = byKind(objects, 'ConfigMap');
    expect(maps).toHaveLength(files.length);
    for (const file of files) {
      const map = maps.find((candidate) => candidate.data[file] !== undefined);
      expect(map).toBeDefined();
      expect(map.metadata.labels.grafana_dashboard).toBe('1');
      expect(JSON.parse(map.data[file] as string)).toEqual(
        JSON.parse(readFileSync(join(ROOT, 'dashboards', file), 'utf8')),
      );
    }
  });

  test('the ServiceMonitor scrapes the metrics Service by port name and adds the node label', () => {
    const monitor = one(objects, 'ServiceMonitor');
    expect(monitor.metadata.labels.release).toBe('prometheus');
    const scraped = byKind(objects, 'Service').filter((service) =>
      selects(monitor.spec.selector.matchLabels, service.metadata.labels),
    );
    expect(scraped.map((service) => service.metadata.name)).toEqual(['autopilot-metrics-service']);
    const endpoint = monitor.spec.endpoints[0];
    expect(scraped[0].spec.ports.map((port: Any) => port.name)).toContain(endpoint.port);
    expect(endpoint.path).toBe('/metrics');
    expect(endpoint.honorLabels).toBe(true);
    expect(endpoint.relabelings).toContainEqual({
      sourceLabels: ['__meta_kubernetes_pod_node_name'],
      targetLabel: 'node',
      action: 'replace',
    });
  });

  // IBM's ServiceMonitor had no jobLabel, so job was its Service's name; Alertmanager templates
  // (IBM's example titles say "for {{ .CommonLabels.job }}") and operators' queries use it.
  test.each<[string, RenderOptions, string | undefined]>([
    ['the default', {}, 'autopilot-metrics-service'],
    ['another release name', { release: 'gpu-health' }, 'autopilot-metrics-service'],
    ['a value of its own', { values: { serviceMonitor: { job: 'gpu-nodes' } } }, 'gpu-nodes'],
    ['empty: the operator names it', { values: { serviceMonitor: { job: '' } } }, undefined],
  ])('the job label, %s', (_, options, job) => {
    const monitor = one(renderChart(options), 'ServiceMonitor');
    expect(monitor.spec.jobLabel).toBeUndefined();
    const jobRelabelings = monitor.spec.endpoints[0].relabelings.filter(
      (relabeling: Any) => relabeling.targetLabel === 'job',
    );
    expect(jobRelabelings).toEqual(
      job === undefined ? [] : [{ targetLabel: 'job', replacement: job, action: 'replace' }],
    );
  });

  test('the release labels are configurable', () => {
    const custom = renderChart({
      values: { serviceMonitor: { release: 'kps' }, prometheusRule: { release: 'kps' } },
    });
    expect(one(custom, 'ServiceMonitor').metadata.labels.release).toBe('kps');
    expect(one(custom, 'PrometheusRule').metadata.labels.release).toBe('kps');
  });

  test('without the prometheus-operator API neither CRD kind is rendered', () => {
    const plain = renderChart({ apiVersions: [] });
    expect(byKind(plain, 'ServiceMonitor')).toEqual([]);
    expect(byKind(plain, 'PrometheusRule')).toEqual([]);
  });

  test('monitoring.forceCRDs renders both CRD kinds without the API (helm template, GitOps)', () => {
    const forced = renderChart({ apiVersions: [], values: { monitoring: { forceCRDs: true } } });
    expect(one(forced, 'ServiceMonitor').apiVersion).toBe('monitoring.coreos.com/v1');
    expect(one(forced, 'PrometheusRule').apiVersion).toBe('monitoring.coreos.com/v1');
    // The enabled switches still win: forcing is about the API check only.
    const off = renderChart({
      apiVersions: [],
      values: {
        monitoring: { forceCRDs: true },
        serviceMonitor: { enabled: false },
        prometheusRule: { enabled: false },
      },
    });
    expect(byKind(off, 'ServiceMonitor')).toEqual([]);
    expect(byKind(off, 'PrometheusRule')).toEqual([]);
  });
});

describe('chart: docsUrl', () => {
  const runbookUrls = (objects: Manifest[]): string[] =>
    (one(objects, 'PrometheusRule').spec.groups as Any[]).flatMap((group) =>
      (group.rules as Any[]).flatMap((rule) => rule.annotations?.runbook_url ?? []),
    );
  const defaults = parse(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as { docsUrl: string };

  test('runbook_url links follow docsUrl, trailing slash or not', () => {
    for (const docsUrl of [
      'https://docs.example.com/autopilot',
      'https://docs.example.com/autopilot/',
    ]) {
      const urls = runbookUrls(renderChart({ values: { docsUrl } }));
      expect(urls.length).toBeGreaterThan(20);
      for (const url of urls) {
        // Anchors may hold digits (AutopilotGPUP2PBandwidthLow).
        expect(url).toMatch(
          /^https:\/\/docs\.example\.com\/autopilot\/rules\/RUNBOOK\.md#[a-z0-9]+$/,
        );
      }
    }
  });

  test("by default the links are rules/' own, and Chart.yaml's home is docsUrl's repository", () => {
    const urls = runbookUrls(renderChart());
    expect(urls.length).toBeGreaterThan(20);
    for (const url of urls)
      expect(url.startsWith(`${defaults.docsUrl}/rules/RUNBOOK.md#`)).toBe(true);
    const chart = parse(readFileSync(join(CHART, 'Chart.yaml'), 'utf8')) as { home: string };
    expect(defaults.docsUrl.startsWith(`${chart.home}/`)).toBe(true);
  });

  test('one address: Chart.yaml, the rules, _helpers.tpl and the docs agree with docsUrl', () => {
    const chart = parse(readFileSync(join(CHART, 'Chart.yaml'), 'utf8')) as {
      home: string;
      sources: string[];
    };
    // docsUrl is the repository's files on its main branch; the repository is home and source.
    expect(defaults.docsUrl).toBe(`${chart.home}/blob/main`);
    expect(chart.sources).toEqual([chart.home]);
    // The prefix the PrometheusRule swaps for docsUrl must be the one rules/ carries.
    const helpers = readFileSync(join(CHART, 'templates', '_helpers.tpl'), 'utf8');
    const swapped = /define "autopilot\.rulesDocsUrl" -\}\}\n(.*)\n/.exec(helpers)?.[1];
    expect(swapped).toBe(`${defaults.docsUrl}/`);
    const rules: Any = parse(readFileSync(join(ROOT, 'rules', 'autopilot.rules.yaml'), 'utf8'));
    const urls = (rules.groups as Any[]).flatMap((group) =>
      (group.rules as Any[]).flatMap((rule) => rule.annotations?.runbook_url ?? []),
    );
    expect(urls.length).toBeGreaterThan(20);
    for (const url of urls) expect(url.startsWith(`${swapped}rules/RUNBOOK.md#`)).toBe(true);
    // Any mention of the home's owner in README or docs/ names the home itself.
    const home = chart.home.replace(/^https?:\/\//, '');
    const owner = home.slice(0, home.lastIndexOf('/') + 1);
    const docs = readdirSync(join(ROOT, 'docs')).filter((file) => file.endsWith('.md'));
    for (const file of ['README.md', ...docs.map((doc) => join('docs', doc))]) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      for (const [mention] of text.matchAll(
        new RegExp(`${escapeRegExp(owner)}[^\\s)\`'"<>]*`, 'g'),
      )) {
        expect({ file, mention: mention.startsWith(home) }).toEqual({ file, mention: true });
      }
    }
    // deploy.md's item (wrapped lines joined) gives the default and says it is a placeholder to set.
    const row = readFileSync(join(ROOT, 'docs', 'deploy.md'), 'utf8')
      .replace(/\n {2}(?=\S)/g, ' ')
      .split('\n')
      .find((line) => line.startsWith('- `docsUrl` (default '));
    expect(row).toContain(`\`${defaults.docsUrl}\``);
    expect(row).toMatch(/placeholder/);
  });

  test('a docsUrl that is not an http(s) address is refused', () => {
    const run = templateRun({ values: { docsUrl: 'not a url' } });
    expect(run.status).not.toBe(0);
    expect(run.stderr).toMatch(/docsUrl/);
  });
});

describe('chart: the image', () => {
  test("values.yaml's defaults fail to render, saying how to build and set the image", () => {
    const run = templateRun({ withoutTestImage: true });
    expect(run.status).not.toBe(0);
    expect(run.stderr).toContain('image.repository is not set');
    expect(run.stderr).toContain('docker build -f deploy/Dockerfile');
    expect(run.stderr).toContain('--set image.repository=<registry>/autopilot');
    expect(run.stdout).toBe('');
  });

  test.each([
    ['', 'image.repository is not set'],
    ['  ', 'image.repository is not set'],
    ['<registry>/autopilot', 'image.repository <registry>/autopilot is a placeholder'],
    [
      'ghcr.io/autopilot/autopilot',
      'image.repository ghcr.io/autopilot/autopilot is a placeholder',
    ],
    ['ghcr.io/autopilot/autopilot:0.1.0', 'is a placeholder'],
  ])('image.repository %j is refused: %s', (repository, message) => {
    const run = templateRun({ values: { image: { repository } } });
    expect(run.status).not.toBe(0);
    expect(run.stderr).toContain(message);
  });

  test('a repository renders with the chart appVersion, for the exporter and the deep check', () => {
    const chart = parse(readFileSync(join(CHART, 'Chart.yaml'), 'utf8')) as { appVersion: string };
    const objects = renderChart({
      withoutTestImage: true,
      values: { image: { repository: 'registry.corp.test/gpu/autopilot' } },
    });
    const container = one(objects, 'DaemonSet').spec.template.spec.containers[0];
    const image = `registry.corp.test/gpu/autopilot:${chart.appVersion}`;
    expect(container.image).toBe(image);
    expect(container.env).toContainEqual({ name: 'AUTOPILOT_DEEPCHECK_IMAGE', value: image });
  });

  test("docs/deploy.md's install command and minimal values render, setting the image", () => {
    const doc = readFileSync(join(ROOT, 'docs', 'deploy.md'), 'utf8');
    const install = doc.slice(doc.indexOf('\n## Install\n'));
    const command = /```sh\n([\s\S]*?)```/.exec(install)![1]!.replace(/\\\n/g, ' ');
    expect(command).toMatch(/^helm upgrade --install autopilot deploy\/helm\/autopilot /);
    const values: Record<string, Any> = parse(/```yaml\n([\s\S]*?)```/.exec(install)![1]!);
    for (const [, key, value] of command.matchAll(/--set ([\w.]+)=(\S+)/g)) {
      const [group, name] = key!.split('.') as [string, string];
      values[group] = { ...values[group], [name]: value };
    }
    expect(values.image?.repository).toEqual(expect.any(String));
    const objects = renderChart({ withoutTestImage: true, values });
    const container = one(objects, 'DaemonSet').spec.template.spec.containers[0];
    expect(container.image).toBe(`${values.image.repository}:${values.image.tag}`);
  });
});

describe('chart: NOTES', () => {
  // helm template leaves NOTES out; a client-side dry run renders it without a cluster.
  const dryRun = (values?: Record<string, unknown>): string => {
    const run = withValues(values, (valueArgs) =>
      helm(['install', 'autopilot', CHART, '-n', 'autopilot', '--dry-run=client', ...valueArgs]),
    );
    if (run.status !== 0) throw new Error(`helm install --dry-run failed: ${run.stderr}`);
    return run.stdout.slice(run.stdout.indexOf('NOTES:'));
  };
  const commandsOf = (notes: string): string[] =>
    notes
      .split('\n')
      .filter((line) => line.startsWith('  '))
      .map((line) => line.trim());

  test('the first commands only read: labels and /results, not a round of checks on every node', () => {
    const notes = dryRun();
    const commands = commandsOf(notes);
    const firstCurl = commands.find((command) => command.startsWith('curl '));
    expect(firstCurl).toMatch(/^curl localhost:3333\/results$/);
    expect(commands[0]).toBe('kubectl get nodes -L autopilot.ibm.com/gpuhealth');
    // /status runs the checks on every node; NOTES may show it only after saying so.
    const before = notes.slice(0, notes.indexOf('/status'));
    expect(before).toMatch(/Running the checks now on every node/);
  });

  test('the guide and runbook links follow docsUrl; the default is called a placeholder', () => {
    const placeholder = /docsUrl is the chart's default, a placeholder/;
    const byDefault = dryRun();
    expect(byDefault).toMatch(placeholder);
    const set = dryRun({ docsUrl: 'https://docs.example.com/autopilot/' });
    expect(set).not.toMatch(placeholder);
    expect(commandsOf(set)).toEqual(
      expect.arrayContaining([
        'https://docs.example.com/autopilot/docs/operations.md',
        'https://docs.example.com/autopilot/rules/RUNBOOK.md',
      ]),
    );
  });
});

describe('chart: the copies of rules/ and dashboards/ are current', () => {
  const files = join(CHART, 'files');
  test('files/autopilot.rules.yaml is rules/autopilot.rules.yaml (npm run chart:sync)', () => {
    expect(readFileSync(join(files, 'autopilot.rules.yaml'), 'utf8')).toBe(
      readFileSync(join(ROOT, 'rules', 'autopilot.rules.yaml'), 'utf8'),
    );
  });

  test('files/dashboards/ holds exactly dashboards/*.json (npm run chart:sync)', () => {
    const sources = readdirSync(join(ROOT, 'dashboards')).filter((file) => file.endsWith('.json'));
    expect(readdirSync(join(files, 'dashboards')).sort()).toEqual(sources.sort());
    for (const file of sources) {
      expect([file, readFileSync(join(files, 'dashboards', file), 'utf8')]).toEqual([
        file,
        readFileSync(join(ROOT, 'dashboards', file), 'utf8'),
      ]);
    }
  });
});

describe('chart: values', () => {
  test("Autopilot's values keep their meaning", () => {
    const objects = renderChart({
      values: {
        PCIeBW: 6,
        repeat: '30m',
        invasive: '0',
        loglevel: 3,
        service: { port: 3344 },
        env: [
          { name: 'PERIODIC_CHECKS', value: 'pciebw,remapped' },
          { name: 'AUTOPILOT_SERVICE', value: 'my-service' },
        ],
        annotations: { 'k8s.v1.cni.cncf.io/networks': 'multi-nic-network' },
        nodeSelector: { 'nvidia.com/mig.config': 'all-disabled' },
        affinity: { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: null } },
        resources: { requests: { cpu: '200m', memory: '1Gi' }, limits: { memory: '4Gi' } },
        pullSecrets: { create: true, imagePullSecretData: 'e30=' },
      },
    });
    const daemonSet = one(objects, 'DaemonSet');
    const pod = daemonSet.spec.template.spec;
    const container = pod.containers[0];
    expect(container.args).toEqual([
      'serve',
      '--port=3344',
      '--bw=6',
      '--w=30m',
      '--invasive-check-timer=0',
      '--loglevel=3',
    ]);
    const env = container.env.filter((entry: Any) => entry.value !== undefined);
    expect(env).toContainEqual({ name: 'PERIODIC_CHECKS', value: 'pciebw,remapped' });
    // The user's entry replaces the chart's own, not duplicates it.
    expect(env.filter((entry: Any) => entry.name === 'AUTOPILOT_SERVICE')).toEqual([
      { name: 'AUTOPILOT_SERVICE', value: 'my-service' },
    ]);
    expect(daemonSet.spec.template.metadata.annotations).toEqual({
      'k8s.v1.cni.cncf.io/networks': 'multi-nic-network',
    });
    expect(pod.nodeSelector).toEqual({
      'nvidia.com/gpu.present': 'true',
      'nvidia.com/mig.config': 'all-disabled',
    });
    expect(container.resources).toEqual({
      requests: { cpu: '200m', memory: '1Gi' },
      limits: { memory: '4Gi' },
    });
    expect(pod.imagePullSecrets).toEqual([{ name: 'autopilot-pull-secret' }]);
    expect(one(objects, 'Secret').type).toBe('kubernetes.io/dockerconfigjson');
    const healthchecks = byKind(objects, 'Service').find(
      (service) => service.metadata.name === 'autopilot-healthchecks',
    );
    expect(healthchecks.spec.ports).toEqual([
      { name: 'healthcheck', port: 3344, targetPort: 'healthcheck', protocol: 'TCP' },
    ]);
  });

  test.each([
    [{ create: false }, undefined, 0],
    [{ create: false, name: 'batch-low' }, 'batch-low', 0],
    [{ create: true, name: 'batch-low' }, 'batch-low', 1],
  ])('deep-check PriorityClass %j: the Job gets %s', (priorityClass, expected, created) => {
    const objects = renderChart({ values: { deepCheck: { priorityClass } } });
    const env = one(objects, 'DaemonSet').spec.template.spec.containers[0].env;
    const setting = env.find((entry: Any) => entry.name === 'AUTOPILOT_DEEPCHECK_PRIORITY_CLASS');
    expect(setting?.value).toBe(expected);
    expect(byKind(objects, 'PriorityClass')).toHaveLength(created);
  });

  test.each([
    [{}, undefined, undefined],
    [
      { runtimeClassName: 'nvidia', pullSecrets: { create: true, imagePullSecretData: 'e30=' } },
      'nvidia',
      'autopilot-pull-secret',
    ],
    [{ pullSecrets: { create: false, name: 'elsewhere' } }, undefined, undefined],
  ])(
    'values %j: the deep-check Job gets RuntimeClass %s and pull secret %s, as the exporter pods',
    (values, runtimeClass, pullSecret) => {
      const pod = one(renderChart({ values }), 'DaemonSet').spec.template.spec;
      const env = new Map(pod.containers[0].env.map((entry: Any) => [entry.name, entry.value]));
      expect(env.get('AUTOPILOT_DEEPCHECK_RUNTIME_CLASS')).toBe(runtimeClass);
      expect(env.get('AUTOPILOT_DEEPCHECK_PULL_SECRETS')).toBe(pullSecret);
      expect(pod.runtimeClassName).toBe(runtimeClass);
      expect(pod.imagePullSecrets?.[0]?.name).toBe(pullSecret);
    },
  );

  test.each(IBM_VALUES_FILES)(
    "IBM's %s as it is, with IBM's image, fails saying which image to use",
    (file) => {
      const values = ibmValues(file);
      expect(values.image).toMatchObject({ repository: IBM_IMAGE });
      const run = templateRun({ values });
      expect(run.status).not.toBe(0);
      expect(run.stderr).toContain(`image.repository ${IBM_IMAGE} is IBM Autopilot's image`);
      expect(run.stderr).toContain('docker build -f deploy/Dockerfile');
      expect(run.stderr).toContain('set image.repository and image.tag to it');
      expect(run.stdout).toBe('');
    },
  );

  test.each([`${IBM_IMAGE}:v2.1.3`, `${IBM_IMAGE}@sha256:0123`])(
    'image.repository %s is refused too',
    (repository) => {
      const run = templateRun({ values: { image: { repository } } });
      expect(run.status).not.toBe(0);
      expect(run.stderr).toContain("is IBM Autopilot's image");
    },
  );

  // v2.1.3's chart passed `repeat: 1` to a Go int counted in hours; the newest passes `1h`.
  test.each([
    ['values-v2.1.3.yaml', '--w=1', '--invasive-check-timer=4'],
    ['values-09a177d.yaml', '--w=1h', '--invasive-check-timer=4h'],
  ] as const)(
    "IBM's %s: %s runs the round hourly, %s the deep check every 4 hours",
    (file, w, invasive) => {
      const objects = renderChart({ values: withOurImage(ibmValues(file)) });
      const container = one(objects, 'DaemonSet').spec.template.spec.containers[0];
      expect(container.args).toEqual(expect.arrayContaining([w, invasive]));
      const config = parseConfig({
        flags: parseCommandLine(container.args).flags,
        env: {},
        hostname: 'pod',
        knownChecks: CHECK_NAMES,
      });
      expect(config.periodic).toEqual({ kind: 'interval', everyMs: 3_600_000 });
      expect(config.deepCheckSchedule).toEqual({ kind: 'interval', everyMs: 14_400_000 });
    },
  );

  test('onlyOnGPUNodes=false drops the GPU node selector', () => {
    const pod = one(renderChart({ values: { onlyOnGPUNodes: false } }), 'DaemonSet').spec.template
      .spec;
    expect(pod.nodeSelector).toBeUndefined();
  });

  test('a release of another name gets its own names and selector', () => {
    const objects = renderChart({ release: 'gpu-health', namespace: 'observability' });
    const daemonSet = one(objects, 'DaemonSet');
    expect(daemonSet.metadata.name).toBe('gpu-health-autopilot');
    expect(daemonSet.spec.selector.matchLabels).toEqual({ app: 'gpu-health-autopilot' });
    expect(
      byKind(objects, 'Service')
        .map((service) => service.metadata.name)
        .sort(),
    ).toEqual([
      'gpu-health-autopilot-healthchecks',
      'gpu-health-autopilot-metrics-service',
      'gpu-health-autopilot-readinessprobe',
    ]);
  });

  test.each([
    [{ PCIeBW: -1 }, '/PCIeBW'],
    [{ repeat: '1x' }, '/repeat'],
    [{ repeat: -1 }, '/repeat'],
    [{ repeat: 2562048 }, '/repeat'],
    [{ invasive: 1.5 }, '/invasive'],
    [{ invasive: '010' }, '/invasive'],
    [{ service: { port: 70000 } }, '/service/port'],
    [{ env: [{ name: 'BAD NAME', value: 'x' }] }, '/env/0/name'],
    [{ pingGroupRange: '0 2147483647; reboot' }, '/pingGroupRange'],
    [{ serviceMonitr: { enabled: false } }, "additional properties 'serviceMonitr' not allowed"],
    [{ xid: { fatal: [79, 0] } }, '/xid/fatal/1'],
    [{ xid: { fatal: '79,95' } }, '/xid/fatal'],
    [{ xid: { fatal: [79, 79] } }, '/xid/fatal'],
    [{ expectedGpus: 65 }, '/expectedGpus'],
    [{ expectedGpus: '8' }, '/expectedGpus'],
  ])('values.schema.json refuses %j, naming %s', (values, named) => {
    const run = templateRun({ values });
    expect(run.status).not.toBe(0);
    expect(run.stderr).toContain(named);
  });

  test.each<[string, Record<string, unknown>, string, readonly number[]]>([
    ['the default', {}, DEFAULT_XID_FATAL.join(','), DEFAULT_XID_FATAL],
    ['a list of its own', { xid: { fatal: [79, 94] } }, '79,94', [79, 94]],
    ['an empty list', { xid: { fatal: [] } }, 'none', []],
  ])('xid.fatal, %s, reaches the exporter as AUTOPILOT_XID_FATAL', (_, values, env, parsed) => {
    const container = one(renderChart({ values }), 'DaemonSet').spec.template.spec.containers[0];
    const setting = container.env.filter((entry: Any) => entry.name === 'AUTOPILOT_XID_FATAL');
    expect(setting).toEqual([{ name: 'AUTOPILOT_XID_FATAL', value: env }]);
    const config = parseConfig({
      flags: new Map(),
      env: { AUTOPILOT_XID_FATAL: env },
      hostname: 'pod',
      knownChecks: CHECK_NAMES,
    });
    expect(config.checkSettings.get('xid')).toEqual({
      AUTOPILOT_XID_FATAL: parsed,
      AUTOPILOT_XID_WARN: 'all',
    });
  });

  // Helm drops a key set to null, so null renders as a missing key: neither may mean "none", which
  // would silently stop every fatal XID from evicting.
  test.each<[string, Record<string, unknown>]>([
    ['null', { xid: { fatal: null } }],
    ['under a null xid', { xid: null }],
  ])('xid.fatal %s: AUTOPILOT_XID_FATAL is not set, so the default list applies', (_, values) => {
    const container = one(renderChart({ values }), 'DaemonSet').spec.template.spec.containers[0];
    const setting = container.env.filter((entry: Any) => entry.name === 'AUTOPILOT_XID_FATAL');
    expect(setting).toEqual([]);
    const config = parseConfig({
      flags: new Map(),
      env: {},
      hostname: 'pod',
      knownChecks: CHECK_NAMES,
    });
    expect(config.checkSettings.get('xid')).toEqual({
      AUTOPILOT_XID_FATAL: DEFAULT_XID_FATAL,
      AUTOPILOT_XID_WARN: 'all',
    });
  });

  test.each<
    [string, Record<string, unknown>, { name: string; value: string }[], number | undefined]
  >([
    ['unset, each node says', {}, [], undefined],
    ['8', { expectedGpus: 8 }, [{ name: 'AUTOPILOT_EXPECTED_GPUS', value: '8' }], 8],
    ['0', { expectedGpus: 0 }, [{ name: 'AUTOPILOT_EXPECTED_GPUS', value: '0' }], 0],
  ])(
    'expectedGpus %s reaches the exporter as AUTOPILOT_EXPECTED_GPUS',
    (_, values, env, parsed) => {
      const container = one(renderChart({ values }), 'DaemonSet').spec.template.spec.containers[0];
      const setting = container.env.filter(
        (entry: Any) => entry.name === 'AUTOPILOT_EXPECTED_GPUS',
      );
      expect(setting).toEqual(env);
      const config = parseConfig({
        flags: new Map(),
        env: Object.fromEntries(env.map((entry) => [entry.name, entry.value])),
        hostname: 'pod',
        knownChecks: CHECK_NAMES,
      });
      expect(config.expectedGpus).toBe(parsed);
    },
  );

  test('NetworkPolicy: exporter pods reach each other on every port; API and metrics by port', () => {
    const objects = renderChart({ values: { networkPolicy: { enabled: true } } });
    const policy = one(objects, 'NetworkPolicy');
    const podLabels = one(objects, 'DaemonSet').spec.template.metadata.labels;
    expect(selects(policy.spec.podSelector.matchLabels, podLabels)).toBe(true);
    expect(policy.spec.policyTypes).toEqual(['Ingress']);
    const [peers, api, metrics] = policy.spec.ingress;
    expect(peers.ports).toBeUndefined();
    expect(selects(peers.from[0].podSelector.matchLabels, podLabels)).toBe(true);
    expect(api.ports).toEqual([{ port: 'healthcheck', protocol: 'TCP' }]);
    expect(api.from).toBeUndefined();
    expect(metrics.ports).toEqual([{ port: 'http', protocol: 'TCP' }]);
    expect(metrics.from).toEqual([
      { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } },
    ]);
  });
});

describe('chart: API access and what may evict', () => {
  const exporterEnv = (values: Record<string, unknown>): Record<string, string> => {
    const container = one(renderChart({ values }), 'DaemonSet').spec.template.spec.containers[0];
    return Object.fromEntries(
      container.env
        .filter((entry: Any) => typeof entry.value === 'string')
        .map((entry: Any) => [entry.name, entry.value]),
    );
  };
  const configOf = (env: Record<string, string>) =>
    parseConfig({ flags: new Map(), env, hostname: 'pod', knownChecks: CHECK_NAMES });

  test('by default every protected group needs Kubernetes authorisation, and every fatal finding evicts', () => {
    const env = exporterEnv({});
    expect(env.AUTOPILOT_API_ACCESS).toBe('kubernetes');
    expect(Object.keys(env).filter((name) => name.startsWith('AUTOPILOT_API_ACCESS_'))).toEqual([]);
    expect(env.AUTOPILOT_EVICT_ON).toBe('all');
    const config = configOf(env);
    expect(Object.values(config.apiAccess)).toEqual([
      'kubernetes',
      'kubernetes',
      'kubernetes',
      'kubernetes',
    ]);
    expect(config.evictOn).toBe('all');
  });

  test('api.access.invasive: open opens that group alone; api.access.all: open every group but one set back', () => {
    expect(configOf(exporterEnv({ api: { access: { invasive: 'open' } } })).apiAccess).toEqual({
      invasive: 'open',
      iperf: 'kubernetes',
      pvc: 'kubernetes',
      acknowledge: 'kubernetes',
    });
    expect(
      configOf(exporterEnv({ api: { access: { all: 'open', acknowledge: 'kubernetes' } } }))
        .apiAccess,
    ).toEqual({ invasive: 'open', iperf: 'open', pvc: 'open', acknowledge: 'kubernetes' });
  });

  test('evictOn: dcgm reaches the exporter as AUTOPILOT_EVICT_ON=dcgm', () => {
    const env = exporterEnv({ evictOn: 'dcgm' });
    expect(env.AUTOPILOT_EVICT_ON).toBe('dcgm');
    expect(configOf(env).evictOn).toBe('dcgm');
  });

  test('an env entry of its own wins over the chart value', () => {
    const env = exporterEnv({
      evictOn: 'all',
      env: [{ name: 'AUTOPILOT_EVICT_ON', value: 'dcgm' }],
    });
    expect(env.AUTOPILOT_EVICT_ON).toBe('dcgm');
  });

  test.each([
    [{ evictOn: 'DCGM' }, '/evictOn'],
    [{ api: { access: { all: 'none' } } }, '/api/access/all'],
    [{ api: { access: { invasive: true } } }, '/api/access/invasive'],
    [{ api: { access: { invassive: 'open' } } }, 'invassive'],
  ])('values.schema.json refuses %j, naming %s', (values, named) => {
    const run = templateRun({ values });
    expect(run.status).not.toBe(0);
    expect(run.stderr).toContain(named);
  });
});
