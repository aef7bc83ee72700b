/**
 * Benchmark of the status page at 1,000 nodes in a real browser: the real exporter (dist/) in
 * Kubernetes mode, 999 simulated nodes answering their summaries at once
 * (test/fakes/status-page-scale.ts), Debian's chromium through puppeteer-core. Each load is timed
 * by the browser's Navigation Timing, from navigation start: the first byte, the last byte (every
 * row has arrived), DOMContentLoaded (every row parsed) and the load event (styled and rendered),
 * against the design target of 1 s; the HTML's size against 500 KB. One load warms up (the
 * exporter's first fan-out opens its connections), then --runs loads. No assertions: it prints.
 *
 *   node dist/bench/status-page.js [--nodes 1000] [--runs 5]
 */

import { launchChromium } from '../test/fakes/browser.js';
import {
  startScaleCluster,
  timePageLoad,
  type PageTiming,
} from '../test/fakes/status-page-scale.js';
import { percentile } from './lib/measure.js';
import { against, row } from './lib/report.js';

const TARGET_RENDER_MS = 1000;
const TARGET_HTML_KB = 500;

function flag(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  if (at === -1) return fallback;
  const value = Number(process.argv[at + 1]);
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(
      `--${name} wants a whole number ≥ 1, got ${JSON.stringify(process.argv[at + 1])}`,
    );
  }
  return value;
}

function printFigure(label: string, values: readonly number[], target?: number): void {
  const median = percentile(values, 0.5);
  const max = Math.max(...values);
  const figure = `${median.toFixed(0)} ms (max ${max.toFixed(0)})`;
  row(label, figure, target === undefined ? '' : against(median, target, ' ms'));
}

async function main(): Promise<void> {
  const nodes = flag('nodes', 1000);
  const runs = flag('runs', 5);
  const cluster = await startScaleCluster(nodes);
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    const url = `${cluster.url}/`;
    await timePageLoad(page, url);
    const timings: PageTiming[] = [];
    for (let i = 0; i < runs; i++) timings.push(await timePageLoad(page, url));
    console.log(
      `status page, ${nodes} nodes, ${runs} loads after one warm-up (${await browser.version()}):`,
    );
    printFigure(
      'first byte',
      timings.map((t) => t.firstByteMs),
    );
    printFigure(
      'last row arrived (last byte)',
      timings.map((t) => t.lastByteMs),
    );
    printFigure(
      'DOMContentLoaded (rows parsed)',
      timings.map((t) => t.domReadyMs),
    );
    printFigure(
      'load event (rendered)',
      timings.map((t) => t.loadMs),
      TARGET_RENDER_MS,
    );
    const kb = Math.max(...timings.map((t) => t.htmlBytes)) / 1024;
    row('HTML size', `${kb.toFixed(0)} KB`, against(kb, TARGET_HTML_KB, ' KB'));
    const rows = new Set(timings.map((t) => t.rows));
    row(
      'rows shown',
      [...rows].join(', '),
      rows.size === 1 && rows.has(nodes) ? 'every node' : 'ROWS MISSING',
    );
  } finally {
    await browser.close();
    await cluster.close();
  }
}

await main();
