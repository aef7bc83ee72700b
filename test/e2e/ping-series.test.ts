/**
 * Issue 21's series budget with a cluster-sized peer list: the built exporter (dist/exporter/main.js)
 * standalone with the fake NVML's 8 GPUs, the fake CUDA probe and fake dcgmi, 2,500 peers on
 * loopback addresses and one of them unreachable. `ping` is a fake that answers instantly (one
 * `sh` per peer, printing a captured iputils output: 3/3 replies, or none for the unreachable
 * address), so the 2,500 pings cost process spawns, not packet time; the series count does not
 * depend on real replies (test/e2e/network.test.ts pings for real).
 *
 * At the defaults (AUTOPILOT_PING_SAMPLE=auto, AUTOPILOT_PING_COVERAGE=2h, --w 1h) a run pings
 * 1,250 peers, the longest-unpinged first: the start-up round and one /ping call cover all 2,500.
 */

import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import {
  startExporter,
  startupRound,
  type ExporterProcess,
} from '../../bench/lib/exporter-process.js';

const ROOT = join(import.meta.dirname, '..', '..');
const FIXTURES = join(ROOT, 'test', 'fixtures', 'ping', 'iputils-20221126');
const PERIODIC = ['pciebw', 'remapped', 'dcgm', 'ping', 'gpupower', 'ecc'];
const PEERS = Array.from(
  { length: 2_500 },
  (_, i) => `127.0.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`,
);
const UNREACHABLE = '127.0.7.77';
const BUDGET = 2_000;

let dir: string;
let exporter: ExporterProcess | undefined;

/** A ping that prints the reply capture, or the no-reply one for UNREACHABLE, in one shell. */
function fakePing(): string {
  const quoted = (name: string) =>
    `'${readFileSync(join(FIXTURES, name), 'utf8').replaceAll("'", `'"'"'`)}'`;
  const script = [
    '#!/bin/sh',
    'for target; do :; done',
    `if [ "$target" = "${UNREACHABLE}" ]; then printf '%s' ${quoted('no-reply.txt')}; exit 1; fi`,
    `printf '%s' ${quoted('reply.txt')}`,
    '',
  ].join('\n');
  const path = join(dir, 'ping');
  writeFileSync(path, script);
  chmodSync(path, 0o755);
  return path;
}

beforeAll(async () => {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
  dir = mkdtempSync(join(tmpdir(), 'autopilot-ping-series-'));
  exporter = await startExporter({
    AUTOPILOT_PEERS: PEERS.join(','),
    AUTOPILOT_PING_COMMAND: fakePing(),
    PERIODIC_CHECKS: PERIODIC.join(','),
  });
  await startupRound(exporter.ports.api, PERIODIC, 120_000);
}, 180_000);

afterAll(async () => {
  await exporter?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('8 GPUs and 2,500 peers, one unreachable: at most 2,000 series, the peer named', async () => {
  const api = `http://127.0.0.1:${exporter!.ports.api}`;
  // The second half of the rotation: after it every peer has been pinged once.
  const second = await fetch(`${api}/ping?format=json`, { signal: AbortSignal.timeout(120_000) });
  expect(second.status).toBe(200);
  const body = await (await fetch(`http://127.0.0.1:${exporter!.ports.metrics}/metrics`)).text();
  const series = body.split('\n').filter((line) => line !== '' && !line.startsWith('#'));
  const value = (prefix: string) => series.filter((line) => line.startsWith(prefix));

  expect(series.length).toBeLessThanOrEqual(BUDGET);
  // The GPU families are there: the count is of a full 8-GPU node, not of ping alone.
  expect(value('autopilot_gpu_verdict{check="remapped",gpu="7"').length).toBeGreaterThan(0);
  // Above AUTOPILOT_PING_COMPAT_MAX_PEERS (500) only the failing peer keeps its compatibility
  // series, which AutopilotPeerUnreachable reads (rules/tests/ping-coverage.test.yaml).
  const compat = value('autopilot_health_checks{health="ping"');
  expect(compat).toHaveLength(1);
  expect(compat[0]).toMatch(new RegExp(`deviceid="${UNREACHABLE.replaceAll('.', '\\.')}"} 1$`));
  expect(value('autopilot_check_peers{check="ping",verdict="FAIL"}')).toEqual([
    'autopilot_check_peers{check="ping",verdict="FAIL"} 1',
  ]);
  expect(value('autopilot_check_peers{check="ping",verdict="PASS"}')).toEqual([
    'autopilot_check_peers{check="ping",verdict="PASS"} 2499',
  ]);
  // The last run pinged half the peers; the aggregates are per interface, not per peer.
  expect(value('autopilot_ping_peers_probed')).toEqual([
    'autopilot_ping_peers_probed{check="ping",interface="default"} 1250',
  ]);
  expect(value('autopilot_ping_rtt_seconds')).toHaveLength(4);
  expect(value('autopilot_ping_coverage_seconds')).toEqual([
    'autopilot_ping_coverage_seconds{check="ping"} 7200',
  ]);
  const age = Number(value('autopilot_ping_oldest_probe_age_seconds')[0]!.split(' ')[1]);
  expect(age).toBeLessThanOrEqual(7200);
  const ping = series.filter(
    (line) => /^autopilot_(ping|peer)_/.test(line) || line.includes('"ping"'),
  );
  console.log(`series: ${series.length} in all, ${ping.length} of ping (budget ${BUDGET})`);
}, 150_000);
