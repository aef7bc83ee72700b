/**
 * The alert path as a cluster runs it: the built exporter with a GPU fault (the fake NVML: GPU 4
 * failed a row remapping) → Debian's Prometheus scraping it every second with the shipped rules
 * (rules/autopilot.rules.yaml, unchanged) → Alertmanager → a webhook in this test. Then the fault is
 * cleared (the GPU replaced: the exporter restarts healthy) → the resolved notification. Prints
 * fault-to-firing and fault-to-notification seconds.
 */

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { freePort, startMonitoring, type Monitoring } from '../fakes/monitoring.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
const RULES = join(ROOT, 'rules', 'autopilot.rules.yaml');
const FAKE_NVML = join(ROOT, 'build', 'fakes', 'nvml', 'libnvidia-ml.so.1');
const ALERT = 'AutopilotNodeEvicted';

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
    'the firing notification',
    () =>
      Promise.resolve(
        m.notifications.find((n) =>
          n.alerts.some((a) => a.labels.alertname === ALERT && a.status === 'firing'),
        ),
      ),
    30_000,
  );
  const alert = firing.alerts.find((a) => a.labels.alertname === ALERT)!;
  expect(alert.labels.severity).toBe('critical');
  expect(alert.annotations.runbook_url).toMatch(/RUNBOOK\.md#autopilotnodeevicted$/);
  // Without a node label from the scrape (the chart's ServiceMonitor adds one), the target names it.
  expect(alert.annotations.description).toContain(`Node 127.0.0.1:${ports.metrics} has`);

  // The GPU is replaced: the exporter comes back on the same port, healthy.
  await stopExporter();
  const clearedAt = performance.now();
  exporter = await startExporter('');
  const resolved = await waitFor(
    'the resolved notification',
    () =>
      Promise.resolve(
        m.notifications.find((n) =>
          n.alerts.some((a) => a.labels.alertname === ALERT && a.status === 'resolved'),
        ),
      ),
    90_000,
  );

  const seconds = (ms: number): string => (ms / 1000).toFixed(1);
  console.log(
    [
      `alert path (${ALERT}, for: 1m, scrape and evaluation every 1 s):`,
      `  fault to firing in Prometheus: ${seconds(firingAt - faultAt)} s`,
      `  fault to webhook notification: ${seconds(firing.at - faultAt)} s`,
      `  fault cleared to resolved notification: ${seconds(resolved.at - clearedAt)} s`,
    ].join('\n'),
  );
  expect(firing.at).toBeGreaterThan(faultAt);
}, 300_000);
