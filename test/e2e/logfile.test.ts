/**
 * Autopilot 2.1.3's command line on the built exporter (node dist/exporter/main.js): `--w 1` and
 * `--invasive-check-timer 4` in whole hours, as IBM's chart renders `repeat: 1`, and `--logfile`,
 * which appends every log line to a file as well as stderr, from the first line to the last one
 * written at shutdown.
 */

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { waitForListening } from '../fakes/exporter-ports.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
const ENV = {
  PATH: process.env.PATH ?? '/usr/bin:/bin',
  HOME: process.env.HOME ?? '/root',
  NODE_NAME: 'logfile-node',
  PERIODIC_CHECKS: 'remapped',
  AUTOPILOT_METRICS_PORT: '0',
  AUTOPILOT_READINESS_PORT: '0',
  AUTOPILOT_LISTEN_ADDRESS: '127.0.0.1',
  AUTOPILOT_KUBERNETES: 'off',
};

let dir: string;

interface Run {
  readonly code: number | null;
  readonly stderr: string;
}

/** Starts the exporter, waits until it listens, stops it with SIGTERM, returns what it said. */
async function serveOnce(args: readonly string[]): Promise<Run> {
  const child: ChildProcess = spawn(process.execPath, [MAIN, '--port', '0', ...args], {
    env: ENV,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const ports = { api: 0, metrics: 0, readiness: 0 };
  try {
    await waitForListening(child, ports, (all) => (stderr = all));
    // The signal handlers are set in the same tick as the listening line is logged, so any answer
    // comes after them; waiting for the start-up round also gives the log more than one line.
    const deadline = performance.now() + 30_000;
    while (performance.now() < deadline) {
      const metrics = await (await fetch(`http://127.0.0.1:${ports.metrics}/metrics`)).text();
      if (metrics.includes('autopilot_check_runs_total{check="remapped"')) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  child.kill('SIGTERM');
  const code = await exited;
  return { code, stderr };
}

const jsonLines = (text: string): Record<string, unknown>[] =>
  text
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);

beforeAll(() => {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
  dir = mkdtempSync(join(tmpdir(), 'autopilot-logfile-'));
}, 60_000);

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('--w 1 and --invasive-check-timer 4 are hours: the exporter says every 1h and every 4h', async () => {
  const run = await serveOnce(['--w', '1', '--invasive-check-timer', '4']);
  expect(run.code).toBe(0);
  const listening = jsonLines(run.stderr).find((line) => line.msg === 'exporter listening');
  expect(listening).toMatchObject({ periodic: 'every 1h', invasive: 'every 4h' });
}, 30_000);

test('--help shows the flags with their hour and log-file meanings', () => {
  const help = execFileSync(process.execPath, [MAIN, 'serve', '--help'], { encoding: 'utf8' });
  expect(help).toMatch(
    /^ {2}--w +periodic round: .*whole number of hours .*\(1 is 1h\).*\(default 1h\)$/m,
  );
  expect(help).toMatch(/^ {2}--logfile +a file the log lines are appended to as well as stderr/m);
});

test('--logfile gets every line stderr gets, appended after what the file held, up to shutdown', async () => {
  const file = join(dir, 'autopilot.log');
  writeFileSync(file, 'kept from before\n');

  const first = await serveOnce(['--w', '1', '--logfile', file]);
  expect(first.code).toBe(0);
  const afterFirst = readFileSync(file, 'utf8');
  expect(afterFirst.startsWith('kept from before\n')).toBe(true);
  const written = jsonLines(afterFirst);
  expect(written).toEqual(jsonLines(first.stderr));
  expect(written.map((line) => line.msg)).toEqual(
    expect.arrayContaining(['exporter listening', 'shutting down']),
  );
  expect(written[0]).toMatchObject({ node: 'logfile-node' });

  // A restart appends; nothing of the first run is lost.
  const second = await serveOnce(['--logfile', file]);
  expect(second.code).toBe(0);
  const afterSecond = readFileSync(file, 'utf8');
  expect(afterSecond.startsWith(afterFirst)).toBe(true);
  expect(jsonLines(afterSecond.slice(afterFirst.length))).toEqual(jsonLines(second.stderr));
}, 60_000);

test.each<[string, () => string, RegExp]>([
  [
    'a directory that does not exist',
    () => join(dir, 'missing', 'autopilot.log'),
    /ENOENT: no such file or directory/,
  ],
  ['a directory', () => dir, /EISDIR: illegal operation on a directory/],
])('--logfile naming %s stops the start with exit 2, naming the flag and path', (_, path, why) => {
  const file = path();
  const run = (() => {
    try {
      execFileSync(process.execPath, [MAIN, '--port', '0', '--logfile', file], {
        env: ENV,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 15_000,
      });
      return { status: 0, stderr: '' };
    } catch (error) {
      return error as { status: number; stderr: string };
    }
  })();
  expect(run.status).toBe(2);
  expect(run.stderr).toContain(`autopilot: cannot open --logfile ${file}: `);
  expect(run.stderr).toMatch(why);
  expect(run.stderr).not.toContain('exporter listening');
});
