/**
 * Benchmark of the real exporter process: `node dist/exporter/main.js` as `npm start` runs it, with
 * 1,000 peers on the loopback range (127.0.x.y all answer on Linux, and no packet leaves the machine).
 * It measures the ping round against its 15 s target, /metrics latency while rounds run (target
 * p99 ≤ 10 ms), and the process's RSS over rounds (target ≤ 100 MB). No assertions: it prints.
 */

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { cpuSeconds, freePorts, percentile, rssMB } from './lib/measure.js';

const PEERS = 1_000;
const ROUNDS = 5;
/** AUTOPILOT_PING_SAMPLE for the second scenario: 1,000 peers covered in 10 rounds. */
const SAMPLE = 100;
const SCRAPE_EVERY_MS = 20;
const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
/** The flags `npm start` gives node; keep them in step with package.json. */
const NODE_FLAGS = ['--max-semi-space-size=2', '--optimize-for-size'];

function row(label: string, value: string, note = ''): void {
  console.log(`  ${label.padEnd(44)} ${value.padStart(12)}   ${note}`);
}

function against(value: number, target: number, unit: string): string {
  const ratio = value / target;
  return `target ≤ ${target}${unit}: ratio ${ratio.toFixed(2)}, ${ratio <= 1 ? 'within target' : 'OVER TARGET'}`;
}

async function main(): Promise<void> {
  await scenario('every peer every round', 0, ROUNDS);
  console.log('');
  await scenario(`rotating sample of ${SAMPLE} peers per round`, SAMPLE, 3);
}

async function scenario(title: string, sampleSize: number, rounds: number): Promise<void> {
  const peers = Array.from(
    { length: PEERS },
    (_, i) => `127.0.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`,
  );
  const [api = 0, metrics = 0, readiness = 0] = await freePorts(3);
  const ports = { api, metrics, readiness };
  const child = spawn(
    process.execPath,
    [...NODE_FLAGS, MAIN, '--port', String(ports.api), '--w', '1h'],
    {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        NODE_NAME: 'bench-node',
        AUTOPILOT_PEERS: peers.join(','),
        AUTOPILOT_METRICS_PORT: String(ports.metrics),
        AUTOPILOT_READINESS_PORT: String(ports.readiness),
        AUTOPILOT_LISTEN_ADDRESS: '127.0.0.1',
        AUTOPILOT_PING_SAMPLE: String(sampleSize),
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  const roundSeconds: number[] = [];
  let logTail = '';
  child.stderr.on('data', (chunk: Buffer) => {
    logTail += chunk.toString();
    const lines = logTail.split('\n');
    logTail = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.startsWith('{')) {
        console.log(`exporter stderr: ${line}`);
        continue;
      }
      const entry = JSON.parse(line) as { msg?: string; check?: string; durationSeconds?: number };
      if (
        entry.msg === 'check finished' &&
        entry.check === 'ping' &&
        entry.durationSeconds !== undefined
      ) {
        roundSeconds.push(entry.durationSeconds);
      }
    }
  });
  const pid = child.pid ?? 0;
  const metricsUrl = `http://127.0.0.1:${ports.metrics}/metrics`;

  const started = performance.now();
  for (;;) {
    try {
      if ((await fetch(`http://127.0.0.1:${ports.readiness}/readinessprobe`)).status === 201) break;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const readyMs = performance.now() - started;
  const rssReady = rssMB(pid);

  const scrapeMs: number[] = [];
  let scraping = true;
  const scraper = (async () => {
    while (scraping) {
      const t0 = performance.now();
      await (await fetch(metricsUrl)).text();
      scrapeMs.push(performance.now() - t0);
      await new Promise((resolve) => setTimeout(resolve, SCRAPE_EVERY_MS));
    }
  })();

  // The start-up round runs by itself; the others are asked for through the API.
  while (roundSeconds.length < 1) await new Promise((resolve) => setTimeout(resolve, 50));
  const rssAfterRound: number[] = [rssMB(pid)];
  const cpuPerRound: number[] = [];
  for (let i = 1; i < rounds; i++) {
    const cpuBefore = cpuSeconds(pid);
    await (await fetch(`http://127.0.0.1:${ports.api}/status?check=ping`)).text();
    cpuPerRound.push(cpuSeconds(pid) - cpuBefore);
    rssAfterRound.push(rssMB(pid));
  }
  scraping = false;
  await scraper;
  const body = await (await fetch(metricsUrl)).text();
  const series = body.split('\n').filter((line) => line !== '' && !line.startsWith('#')).length;
  child.kill('SIGTERM');
  await new Promise((resolve) => child.on('exit', resolve));

  console.log(`Autopilot exporter process benchmark: ${title}`);
  console.log('='.repeat(40 + title.length));
  row(
    'load',
    `${PEERS} peers`,
    `loopback addresses, ${rounds} ping rounds, AUTOPILOT_PING_SAMPLE=${sampleSize}, node ${NODE_FLAGS.join(' ')}`,
  );
  row('readiness after spawn', `${readyMs.toFixed(0)} ms`);
  for (const [i, seconds] of roundSeconds.entries()) {
    row(`ping round ${i + 1}`, `${seconds.toFixed(2)} s`, against(seconds, 15, ' s'));
  }
  row(
    `/metrics during rounds, median (n=${scrapeMs.length})`,
    `${percentile(scrapeMs, 50).toFixed(2)} ms`,
  );
  row(
    '/metrics during rounds, p99',
    `${percentile(scrapeMs, 99).toFixed(2)} ms`,
    against(percentile(scrapeMs, 99), 10, ' ms'),
  );
  row('/metrics during rounds, max', `${Math.max(...scrapeMs).toFixed(2)} ms`);
  for (const [i, seconds] of cpuPerRound.entries()) {
    row(`CPU of round ${i + 2} (exporter + pings)`, `${seconds.toFixed(2)} s`);
  }
  row('series', String(series), against(series, 2000, ' per node'));
  row('RSS when ready', `${rssReady.toFixed(1)} MB`);
  for (const [i, rss] of rssAfterRound.entries()) {
    row(`RSS after round ${i + 1}`, `${rss.toFixed(1)} MB`, against(rss, 100, ' MB'));
  }
}

await main();
