/**
 * The alert path as a cluster runs it: the built exporter with a GPU fault (the fake NVML: GPU 4
 * failed a row remapping) → Debian's Prometheus scraping it every second with the shipped rules
 * (rules/autopilot.rules.yaml, unchanged) as the job the chart's ServiceMonitor names
 * (autopilot-metrics-service) → Alertmanager with IBM's own configuration
 * (test/fixtures/ibm/alertmanager.yaml: its routes, receivers, Slack templates and inhibitions) →
 * the Slack receiver, which is this test. Then the fault is cleared (the GPU replaced: the exporter
 * restarts healthy) → the resolved notification. Prints fault-to-firing and fault-to-notification
 * seconds.
 */

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import {
  freePort,
  startMonitoring,
  type Monitoring,
  type Notification,
} from '../fakes/monitoring.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
const RULES = join(ROOT, 'rules', 'autopilot.rules.yaml');
const FAKE_NVML = join(ROOT, 'build', 'fakes', 'nvml', 'libnvidia-ml.so.1');
const ALERT = 'AutopilotNodeEvicted';
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

/** The Slack messages that name ALERT, with IBM's templates applied by Alertmanager. */
function slackMessages(notifications: readonly Notification[]): SlackMessage[] {
  return allSlackMessages(notifications).filter((message) =>
    message.text.includes(`*alertname:* \`${ALERT}\``),
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
const ports = { api: 0, metrics: 0, readiness: 0 };

async function startExporter(scenario: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [MAIN, '--port', String(ports.api), '--w', '5s'], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      NODE_NAME: 'gpu-node-7',
      PERIODIC_CHECKS: 'remapped',
      AUTOPILOT_METRICS_PORT: String(ports.metrics),
      AUTOPILOT_READINESS_PORT: String(ports.readiness),
      AUTOPILOT_LISTEN_ADDRESS: '127.0.0.1',
      AUTOPILOT_NVML_LIBRARY: FAKE_NVML,
      FAKE_NVML_SCENARIO: scenario,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`exporter did not listen: ${stderr}`)), 15_000);
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      if (stderr.includes('"exporter listening"')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return child;
}

async function stopExporter(): Promise<void> {
  const child = exporter;
  exporter = undefined;
  if (child === undefined || child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  withinMs: number,
): Promise<T> {
  const started = Date.now();
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() - started > withinMs) throw new Error(`${what} not within ${withinMs / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

beforeAll(async () => {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
  Object.assign(ports, {
    api: await freePort(),
    metrics: await freePort(),
    readiness: await freePort(),
  });
}, 60_000);

afterAll(async () => {
  await stopExporter();
  await monitoring?.stop();
});

test('a GPU fault fires the alert through Alertmanager, and clearing it resolves it', async () => {
  const faultAt = performance.now();
  exporter = await startExporter('remapfail=4');
  monitoring = await startMonitoring({
    targets: [`127.0.0.1:${ports.metrics}`],
    ruleFiles: [RULES],
    jobName: JOB,
    alertmanagerConfig: ibmAlertmanagerConfig,
  });
  const m = monitoring;

  await waitFor(
    'Prometheus firing the alert',
    async () =>
      (await m.alerts()).some((a) => a.labels.alertname === ALERT && a.state === 'firing')
        ? true
        : undefined,
    150_000,
  );
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

  // The GPU is replaced: the exporter comes back on the same port, healthy.
  await stopExporter();
  const clearedAt = performance.now();
  exporter = await startExporter('');
  // The fault fires two critical alerts (this one and the row-remap one) that IBM's route groups
  // together (group_by: namespace). Alertmanager says [RESOLVED] only once the whole group is, and
  // names the alert of that last flush: when this alert resolves first, its resolution rides in a
  // [FIRING:1] message and the [RESOLVED] one names the other. So: the group's [RESOLVED] message,
  // sent after the fault cleared, with this alert no longer firing in Prometheus.
  const resolved = await waitFor(
    'the resolved Slack message',
    async () => {
      const message = allSlackMessages(m.notifications).find(
        (s) => s.at > clearedAt && s.title.startsWith('[RESOLVED]'),
      );
      if (message === undefined) return undefined;
      const firing = (await m.alerts()).some(
        (a) => a.labels.alertname === ALERT && a.state === 'firing',
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

  const seconds = (ms: number): string => (ms / 1000).toFixed(1);
  console.log(
    [
      `alert path (${ALERT}, for: 1m, scrape and evaluation every 1 s):`,
      `  fault to firing in Prometheus: ${seconds(firingAt - faultAt)} s`,
      `  fault to Slack message (IBM's Alertmanager route): ${seconds(firing.at - faultAt)} s`,
      `  fault cleared to resolved message: ${seconds(resolved.at - clearedAt)} s`,
    ].join('\n'),
  );
  expect(firing.at).toBeGreaterThan(faultAt);
}, 300_000);
