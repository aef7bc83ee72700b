/**
 * The alert path as a cluster runs it: the built exporter with GPU faults (the fake NVML: GPU 4
 * failed a row remapping, GPU 2's NVLink 3 is down, GPU 5 has not joined the NVSwitch fabric; the
 * fake CUDA runtime: GPU 1 copies to GPU 6 at a third of the other pairs' bandwidth) → Debian's
 * Prometheus scraping it every second with the shipped rules
 * (rules/autopilot.rules.yaml, unchanged) as the job the chart's ServiceMonitor names
 * (autopilot-metrics-service) → Alertmanager with IBM's own configuration
 * (test/fixtures/ibm/alertmanager.yaml: its routes, receivers, Slack templates and inhibitions) →
 * the Slack receiver, which is this test. Then the faults are cleared (the GPUs replaced: the
 * exporter restarts healthy) → the resolved notifications. Prints fault-to-firing and
 * fault-to-notification seconds. The NVLink, fabric and P2P faults ride in the same exporter as the
 * row remap, so their `for: 1m` runs alongside its own and they add only the p2pbw run's time.
 */

import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import {
  buildExporter,
  FAKE_NVML,
  FAKE_PROBE,
  startExporter as startBuiltExporter,
  stopExporter as stopBuiltExporter,
} from '../fakes/exporter-process.js';
import { startMonitoring, type Monitoring, type Notification } from '../fakes/monitoring.js';
import { waitFor } from '../fakes/wait-for.js';

const ROOT = join(import.meta.dirname, '..', '..');
const RULES = join(ROOT, 'rules', 'autopilot.rules.yaml');
const ALERT = 'AutopilotNodeEvicted';
/** GPU 4's failed row remap evicts the node; GPU 2's link 3 down and GPU 5's fabric state 1 (not
 * started, Fabric Manager down) are nvlink FAILs. */
const FAULTS = 'remapfail=4;linkdown=2:3;fabric=5:1:0';
/** The pair (1, 6) at a third of the fake's 390 GB/s: p2pbw flags GPUs 1 and 6. */
const CUDA_FAULTS = 'p2pslow=1:6:130';
const TOKEN = 'e2e-token';
/** The issue 18 alerts this run must deliver, with the receiver IBM's route picks and a text each
 * message must hold. */
const NVLINK_ALERTS = [
  { alertname: 'AutopilotGPUNVLinkDown', critical: true, text: 'NVLink 3 of GPU 2 (' },
  { alertname: 'AutopilotGPUFabricNotReady', critical: true, text: 'GPU 5 (' },
  { alertname: 'AutopilotGPUP2PBandwidthLow', critical: false, text: 'GPU 1 copied to GPU 6 ' },
] as const;
const JOB = 'autopilot-metrics-service';
const IBM_ALERTMANAGER = join(ROOT, 'test', 'fixtures', 'ibm', 'alertmanager.yaml');

/** `text` with `from` replaced, which must occur exactly once: a changed fixture fails loudly. */
function replaceOnce(text: string, from: string, to: string): string {
  const parts = text.split(from);
  if (parts.length !== 2) throw new Error(`${JSON.stringify(from)} is not in the file once`);
  return parts.join(to);
}

/**
 * IBM's file with three values changed, nothing else: the Slack URL (a placeholder that
 * Alertmanager refuses) points at this test, and the root route's group_wait (30s) and
 * group_interval (5m) are a second, or the resolved notification would come 5 minutes late.
 */
function ibmAlertmanagerConfig(receiverBaseUrl: string): string {
  let text = readFileSync(IBM_ALERTMANAGER, 'utf8');
  text = replaceOnce(text, '<slack-webhook-api-url>', `${receiverBaseUrl}/slack`);
  text = replaceOnce(text, '  group_wait: 30s\n', '  group_wait: 0s\n');
  return replaceOnce(text, '  group_interval: 5m\n', '  group_interval: 1s\n');
}

interface SlackMessage {
  /** performance.now() when it arrived. */
  readonly at: number;
  readonly title: string;
  readonly text: string;
  /** IBM's Critical receiver sets link_names; its Autopilot receiver does not. */
  readonly critical: boolean;
}

/** The Slack messages that name `alertname` (ALERT unless told), with IBM's templates applied. */
function slackMessages(
  notifications: readonly Notification[],
  alertname: string = ALERT,
): SlackMessage[] {
  return allSlackMessages(notifications).filter((message) =>
    message.text.includes(`*alertname:* \`${alertname}\``),
  );
}

/** Every Slack message, with IBM's templates applied by Alertmanager. */
function allSlackMessages(notifications: readonly Notification[]): SlackMessage[] {
  return notifications
    .filter((n) => n.path === '/slack')
    .flatMap((n) => {
      const attachments = (n.body.attachments ?? []) as { title?: string; text?: string }[];
      return attachments.map((a) => ({
        at: n.at,
        title: a.title ?? '',
        text: a.text ?? '',
        critical: n.body.link_names === true,
      }));
    });
}

let monitoring: Monitoring | undefined;
let exporter: ChildProcess | undefined;
/** The first start's ports, read from its log; a restart keeps the metrics port Prometheus scrapes. */
const ports = { api: 0, metrics: 0, readiness: 0 };

async function startExporter(scenario: string, cudaScenario = ''): Promise<ChildProcess> {
  const started = await startBuiltExporter({
    env: {
      NODE_NAME: 'gpu-node-7',
      PERIODIC_CHECKS: 'remapped,nvlink',
      AUTOPILOT_NVML_LIBRARY: FAKE_NVML,
      FAKE_NVML_SCENARIO: scenario,
      AUTOPILOT_CUDA_PROBE_LIBRARY: FAKE_PROBE,
      FAKE_CUDA_SCENARIO: cudaScenario,
      AUTOPILOT_API_TOKEN: TOKEN,
    },
    every: '5s',
    ...(ports.metrics === 0 ? {} : { ports: { metrics: ports.metrics } }),
  });
  Object.assign(ports, started.ports);
  return started.child;
}

async function stopExporter(): Promise<void> {
  const child = exporter;
  exporter = undefined;
  if (child !== undefined) await stopBuiltExporter(child);
}

beforeAll(buildExporter, 60_000);

afterAll(async () => {
  await stopExporter();
  await monitoring?.stop();
});

/** Prometheus holds `alertname` firing. */
async function isFiring(m: Monitoring, alertname: string): Promise<true | undefined> {
  return (await m.alerts()).some((a) => a.labels.alertname === alertname && a.state === 'firing')
    ? true
    : undefined;
}

/**
 * One p2pbw run asked through the API (an exclusive check: the static token, standalone), at its
 * smallest copy size, 64 MiB (56 pairs on the fake take seconds); its per-GPU verdicts.
 */
async function runP2pbw(): Promise<Record<string, string>> {
  const response = await fetch(`http://127.0.0.1:${ports.api}/p2pbw?mib=64&format=json`, {
    headers: { Authorization: `Bearer ${TOKEN}` },
    signal: AbortSignal.timeout(120_000),
  });
  const body = (await response.json()) as {
    results: { check: string; devices: { id: string; verdict: string }[] }[];
  };
  const run = body.results.find((r) => r.check === 'p2pbw');
  return Object.fromEntries((run?.devices ?? []).map((d) => [d.id, d.verdict]));
}

test('GPU faults fire their alerts through Alertmanager, and clearing them resolves them', async () => {
  const faultAt = performance.now();
  exporter = await startExporter(FAULTS, CUDA_FAULTS);
  // Measured while Prometheus starts and the other alerts wait out their `for`.
  const p2pVerdicts = runP2pbw();
  monitoring = await startMonitoring({
    targets: [`127.0.0.1:${ports.metrics}`],
    ruleFiles: [RULES],
    jobName: JOB,
    alertmanagerConfig: ibmAlertmanagerConfig,
  });
  const m = monitoring;

  await waitFor('Prometheus firing the alert', () => isFiring(m, ALERT), 150_000);
  const firingAt = performance.now();
  const firing = await waitFor(
    'the firing Slack message',
    () =>
      Promise.resolve(slackMessages(m.notifications).find((s) => s.title.startsWith('[FIRING'))),
    30_000,
  );
  // IBM's route: severity=critical goes to its Critical receiver before `alert = autopilot` is
  // tried (test/unit/rules.test.ts routes every other alert to its Autopilot receiver).
  expect(firing.critical).toBe(true);
  expect(firing.title).toContain(` for ${JOB}`);
  expect(firing.text).toContain('• *alert:* `autopilot`');
  expect(firing.text).toContain('• *severity:* `critical`');
  expect(firing.text).toContain(`• *job:* \`${JOB}\``);
  // Without a node label from the scrape (the chart's ServiceMonitor adds one), the target names it.
  expect(firing.text).toContain(`*Description:* Node 127.0.0.1:${ports.metrics} has`);

  // p2pbw flagged the two ends of the slow pair and no other GPU.
  const flagged = Object.entries(await p2pVerdicts).filter(([, verdict]) => verdict !== 'PASS');
  expect(flagged.map(([gpu]) => gpu)).toEqual(['1', '6']);
  const delivered: string[] = [];
  for (const expected of NVLINK_ALERTS) {
    await waitFor(
      `Prometheus firing ${expected.alertname}`,
      () => isFiring(m, expected.alertname),
      60_000,
    );
    const message = await waitFor(
      `the firing Slack message of ${expected.alertname}`,
      () =>
        Promise.resolve(
          slackMessages(m.notifications, expected.alertname).find(
            (s) => s.title.startsWith('[FIRING') && s.text.includes(expected.text),
          ),
        ),
      30_000,
    );
    expect({ alertname: expected.alertname, critical: message.critical }).toEqual({
      alertname: expected.alertname,
      critical: expected.critical,
    });
    delivered.push(`${expected.alertname} ${((message.at - faultAt) / 1000).toFixed(1)} s`);
  }

  // The GPUs are replaced: the exporter comes back on the same port, healthy.
  await stopExporter();
  const clearedAt = performance.now();
  exporter = await startExporter('');
  const critical = [ALERT, ...NVLINK_ALERTS.filter((a) => a.critical).map((a) => a.alertname)];
  // The faults fire several critical alerts (these and the row-remap one) that IBM's route groups
  // together (group_by: namespace). Alertmanager says [RESOLVED] only once the whole group is, and
  // names the alert of that last flush: when this alert resolves first, its resolution rides in a
  // [FIRING:n] message and the [RESOLVED] one names another. So: the group's [RESOLVED] message,
  // sent after the faults cleared, with none of them firing in Prometheus.
  const resolved = await waitFor(
    'the resolved Slack message',
    async () => {
      const message = allSlackMessages(m.notifications).find(
        (s) => s.at > clearedAt && s.critical && s.title.startsWith('[RESOLVED]'),
      );
      if (message === undefined) return undefined;
      const held = await m.alerts();
      const firing = held.some(
        (a) => critical.includes(a.labels.alertname!) && a.state === 'firing',
      );
      return firing ? undefined : message;
    },
    90_000,
  ).catch(async (error: unknown) => {
    const held = (await m.alerts()).map((a) => `${a.labels.alertname}=${a.state}`);
    const sent = allSlackMessages(m.notifications).map(
      (s) => `${((s.at - clearedAt) / 1000).toFixed(1)} s: ${s.title}`,
    );
    throw new Error(
      `${String(error)}; Prometheus holds [${held.join(', ')}]; Slack got:\n${sent.join('\n')}`,
    );
  });
  expect(resolved.critical).toBe(true);
  // The slow pair is a warning, alone in the Autopilot receiver's group: its own [RESOLVED].
  const p2pResolved = await waitFor(
    'the resolved Slack message of AutopilotGPUP2PBandwidthLow',
    () =>
      Promise.resolve(
        slackMessages(m.notifications, 'AutopilotGPUP2PBandwidthLow').find(
          (s) => s.at > clearedAt && s.title.startsWith('[RESOLVED]'),
        ),
      ),
    60_000,
  );
  expect(p2pResolved.critical).toBe(false);

  const seconds = (ms: number): string => (ms / 1000).toFixed(1);
  console.log(
    [
      `alert path (${ALERT}, for: 1m, scrape and evaluation every 1 s):`,
      `  fault to firing in Prometheus: ${seconds(firingAt - faultAt)} s`,
      `  fault to Slack message (IBM's Alertmanager route): ${seconds(firing.at - faultAt)} s`,
      `  fault cleared to resolved message: ${seconds(resolved.at - clearedAt)} s`,
      `  fault to Slack message of the NVLink, fabric and P2P alerts: ${delivered.join(', ')}`,
    ].join('\n'),
  );
  expect(firing.at).toBeGreaterThan(faultAt);
}, 300_000);
