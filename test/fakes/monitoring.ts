/**
 * Debian's real Prometheus and Alertmanager in the foreground on loopback, with a webhook receiver
 * in the test process: the alert path as a cluster runs it. Every process and directory is removed
 * by stop().
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePorts } from './ports.js';

export interface WebhookAlert {
  readonly status: 'firing' | 'resolved';
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
}

export interface Notification {
  /** performance.now() when it arrived. */
  readonly at: number;
  /** The path it was posted to: /hook for the default receiver; a receiver of the test's own chooses. */
  readonly path: string;
  /** Alertmanager's webhook payload's alerts; empty for other payloads (Slack's). */
  readonly alerts: readonly WebhookAlert[];
  /** The payload as posted, for receivers that are not webhooks (Slack's attachments). */
  readonly body: Readonly<Record<string, unknown>>;
}

export interface Monitoring {
  readonly prometheusUrl: string;
  readonly alertmanagerUrl: string;
  readonly notifications: readonly Notification[];
  /** A PromQL instant query; the result vector. */
  query(expr: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
  /** Prometheus's view of the alerts (pending and firing). */
  alerts(): Promise<{ labels: Record<string, string>; state: string }[]>;
  stop(): Promise<void>;
}

export async function startMonitoring(options: {
  /** host:port of each /metrics to scrape. */
  readonly targets: readonly string[];
  readonly ruleFiles: readonly string[];
  /** The scrape job's name; the chart's ServiceMonitor gives `autopilot-metrics-service`. */
  readonly jobName?: string;
  /**
   * The node of each target, as the chart's ServiceMonitor labels series from the pod's node (with
   * honor_labels, so a series' own node label wins, as there); absent: no node label.
   */
  readonly nodeOf?: Readonly<Record<string, string>>;
  /**
   * Alertmanager's configuration file as text, given the base URL of the test's receiver
   * (http://127.0.0.1:<port>); by default one webhook receiver at <base>/hook.
   */
  readonly alertmanagerConfig?: (receiverBaseUrl: string) => string;
}): Promise<Monitoring> {
  const dir = mkdtempSync(join(tmpdir(), 'autopilot-monitoring-'));
  const notifications: Notification[] = [];
  const hook: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      const parsed = JSON.parse(body) as { alerts?: WebhookAlert[] };
      notifications.push({
        at: performance.now(),
        path: req.url ?? '',
        alerts: parsed.alerts ?? [],
        body: parsed,
      });
      res.end('ok');
    });
  });
  await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
  const hookPort = (hook.address() as { port: number }).port;
  const [promPort = 0, amPort = 0] = await freePorts(2);

  const receiverBaseUrl = `http://127.0.0.1:${hookPort}`;
  writeFileSync(
    join(dir, 'alertmanager.yml'),
    options.alertmanagerConfig?.(receiverBaseUrl) ??
      JSON.stringify({
        route: {
          receiver: 'hook',
          group_by: ['alertname', 'instance'],
          group_wait: '0s',
          group_interval: '1s',
          repeat_interval: '1h',
        },
        receivers: [
          {
            name: 'hook',
            webhook_configs: [{ url: `${receiverBaseUrl}/hook`, send_resolved: true }],
          },
        ],
      }),
  );
  writeFileSync(
    join(dir, 'prometheus.yml'),
    JSON.stringify({
      global: { scrape_interval: '1s', evaluation_interval: '1s' },
      rule_files: options.ruleFiles,
      alerting: { alertmanagers: [{ static_configs: [{ targets: [`127.0.0.1:${amPort}`] }] }] },
      scrape_configs: [
        {
          job_name: options.jobName ?? 'autopilot-metrics-service',
          ...(options.nodeOf === undefined ? {} : { honor_labels: true }),
          static_configs:
            options.nodeOf === undefined
              ? [{ targets: options.targets }]
              : options.targets.map((target) => ({
                  targets: [target],
                  labels: { node: options.nodeOf?.[target] ?? '' },
                })),
        },
      ],
    }),
  );
  const processes: ChildProcess[] = [
    spawn(
      'prometheus-alertmanager',
      [
        `--config.file=${join(dir, 'alertmanager.yml')}`,
        `--storage.path=${join(dir, 'am')}`,
        `--web.listen-address=127.0.0.1:${amPort}`,
        '--cluster.listen-address=',
      ],
      { stdio: 'ignore' },
    ),
    spawn(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${promPort}`,
      ],
      { stdio: 'ignore' },
    ),
  ];
  const prometheusUrl = `http://127.0.0.1:${promPort}`;
  const alertmanagerUrl = `http://127.0.0.1:${amPort}`;
  const stop = async (): Promise<void> => {
    for (const child of processes) if (child.exitCode === null) child.kill('SIGTERM');
    await Promise.all(
      processes.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) resolve();
            else child.once('exit', () => resolve());
          }),
      ),
    );
    await new Promise<void>((resolve) => hook.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await untilReady(processes, [`${prometheusUrl}/-/ready`, `${alertmanagerUrl}/-/ready`]);
  } catch (error) {
    // Neither process nor the hook may outlive a failed start: they would keep jest alive.
    await stop();
    throw error;
  }

  return {
    prometheusUrl,
    alertmanagerUrl,
    notifications,
    async query(expr) {
      const response = await fetch(
        `${prometheusUrl}/api/v1/query?${new URLSearchParams({ query: expr }).toString()}`,
      );
      const body = (await response.json()) as {
        status: string;
        error?: string;
        data?: { result: { metric: Record<string, string>; value: [number, string] }[] };
      };
      if (body.status !== 'success') throw new Error(`query ${expr} failed: ${body.error}`);
      return body.data?.result ?? [];
    },
    async alerts() {
      const body = (await (await fetch(`${prometheusUrl}/api/v1/alerts`)).json()) as {
        data: { alerts: { labels: Record<string, string>; state: string }[] };
      };
      return body.data.alerts;
    },
    stop,
  };
}

/**
 * Until every URL answers OK. The deadline allows for a loaded 2-CPU machine (Prometheus replays
 * nothing here, but still starts its TSDB); a process that exits instead (its port taken) fails at
 * once, with its exit code.
 */
async function untilReady(
  processes: readonly ChildProcess[],
  urls: readonly string[],
): Promise<void> {
  const started = performance.now();
  for (const url of urls) {
    for (;;) {
      const dead = processes.find((child) => child.exitCode !== null || child.signalCode !== null);
      if (dead !== undefined)
        throw new Error(`${dead.spawnfile} exited (${dead.exitCode ?? dead.signalCode}) at start`);
      try {
        if ((await fetch(url)).ok) break;
      } catch {
        // not listening yet
      }
      if (performance.now() - started > 60_000) throw new Error(`${url} did not become ready`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
