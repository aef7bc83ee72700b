/**
 * The check table (exporter/checks/table.ts): every list of check names derives from the modules,
 * and a new check is its file plus one entry. The new check here is gpupower under another name
 * (test/fakes/checks/gpupower-copy.ts); added to the table, and with no other file changed, it
 * appears in --help, in PERIODIC_CHECKS validation, in /status?check= and in /metrics.
 */

import { afterEach, describe, expect, test } from '@jest/globals';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CHECK_MODULES, CHECK_NAMES, CHECK_TABLE } from '../../exporter/checks/index.js';
import { createCheckTable, type CheckTable } from '../../exporter/checks/table.js';
import { helpText } from '../../exporter/cli.js';
import {
  AUTOPILOT_PERIODIC_CHECKS,
  CHECK_TIMEOUT_NAMES,
  ConfigError,
  parseConfig,
} from '../../exporter/config/config.js';
import { buildExporter, type Exporter } from '../../exporter/exporter.js';
import { silentLogger } from '../../exporter/log.js';
import { SAMPLE_METRICS } from '../../exporter/metrics/catalogue.js';
import { FakeClock } from '../fakes/clock.js';
import { gpupowercopyModule } from '../fakes/checks/gpupower-copy.js';
import { fakeNode, fakeNvml } from '../fakes/gpu.js';

const NODE = 'gpu-node-1';

describe('the lists derived from the modules', () => {
  test('names in table order, the periodic round in Autopilot’s order, gpucount always', () => {
    expect(CHECK_NAMES).toEqual([
      'pciebw',
      'remapped',
      'dcgm',
      'gpupower',
      'gpucount',
      'ecc',
      'xid',
      'nvlink',
      'gpumem',
      'p2pbw',
      'ping',
      'pvc',
      'iperf',
    ]);
    expect(AUTOPILOT_PERIODIC_CHECKS).toEqual([
      'pciebw',
      'remapped',
      'dcgm',
      'ping',
      'gpupower',
      'gpucount',
      'nvlink',
    ]);
    expect(CHECK_TABLE.alwaysPeriodic).toEqual(['gpucount']);
    expect(CHECK_TABLE.postflight).toEqual(['pciebw', 'remapped', 'gpupower', 'ecc', 'dcgm']);
    expect(CHECK_TABLE.postflightParams('dcgm')).toEqual({ r: '1' });
    expect(CHECK_TABLE.postflightParams('ecc')).toEqual({});
    expect(CHECK_TABLE.preflight).toEqual(['pciebw', 'remapped', 'gpupower']);
    expect(CHECK_TIMEOUT_NAMES).toEqual([
      'pciebw',
      'gpumem',
      'p2pbw',
      'dcgm.1',
      'dcgm.2',
      'dcgm.3',
      'dcgm.4',
    ]);
    expect(Object.fromEntries(CHECK_TABLE.protectedAs)).toEqual({ pvc: 'pvc', iperf: 'iperf' });
    expect(CHECK_TABLE.statusName('gpumem')).toBe('GPU MEM Test');
    expect(CHECK_TABLE.statusName('ecc')).toBe('ECC');
    expect(CHECK_TABLE.statusName('not-a-check')).toBe('NOT-A-CHECK');
  });

  test('every sample metric of the catalogue is claimed by exactly one module', () => {
    const claimed = CHECK_MODULES.flatMap((module) => module.metrics);
    expect([...claimed].sort()).toEqual(Object.keys(SAMPLE_METRICS).sort());
  });

  test('two modules of one name are refused', () => {
    const [first] = CHECK_MODULES;
    expect(() => createCheckTable([first!, first!])).toThrow('two check modules are named pciebw');
  });
});

describe('a check made from a copy of gpupower.ts, added to the table', () => {
  const table: CheckTable = createCheckTable([...CHECK_MODULES, gpupowercopyModule]);
  let exporter: Exporter | undefined;
  let server: Server | undefined;

  afterEach(async () => {
    await new Promise((resolve) =>
      server === undefined ? resolve(undefined) : server.close(resolve),
    );
    await exporter?.runner.shutdown(1000);
    server = undefined;
    exporter = undefined;
  });

  const config = (env: Record<string, string>, knownChecks: readonly string[]) =>
    parseConfig({
      flags: new Map([['w', '0']]),
      env: { NODE_NAME: NODE, ...env },
      hostname: NODE,
      knownChecks,
    });

  test('--help lists it with its summary', () => {
    for (const topic of ['main', 'check'] as const) {
      expect(helpText(topic, { checks: table.modules })).toContain(
        '  gpupowercopy a copy of gpupower, for the test of the check table\n',
      );
      expect(helpText(topic, { checks: CHECK_MODULES })).not.toContain('gpupowercopy');
    }
  });

  test('PERIODIC_CHECKS accepts it only where the table has it', () => {
    const env = { PERIODIC_CHECKS: 'gpupowercopy' };
    expect(config(env, table.names).periodicChecks).toEqual(['gpupowercopy', 'gpucount']);
    expect(() => config(env, CHECK_NAMES)).toThrow(ConfigError);
    expect(() => config(env, CHECK_NAMES)).toThrow('unknown check "gpupowercopy"');
  });

  test('/status?check=gpupowercopy runs it, and /metrics shows its run and samples', async () => {
    exporter = buildExporter(config({ PERIODIC_CHECKS: 'gpupowercopy' }, table.names), {
      runCommand: () => Promise.reject(new Error('no command in this test')),
      nvml: { ok: true, nvml: fakeNvml(fakeNode(2)) },
      cuda: { ok: false, reason: 'no CUDA in this test' },
      clock: new FakeClock(),
      logger: silentLogger,
      cpuModel: 'test-cpu',
      gpuModel: 'NVIDIA H200',
      build: { version: 'test', nodejs: process.versions.node },
      checkTable: table,
    });
    expect([...exporter.checks.keys()]).toEqual([...CHECK_NAMES, 'gpupowercopy']);
    const listening = exporter.apiApp.listen(0, '127.0.0.1');
    server = listening;
    await new Promise((resolve) => listening.once('listening', resolve));
    const { port } = listening.address() as AddressInfo;

    const status = await fetch(`http://127.0.0.1:${port}/status?check=gpupowercopy&format=json`);
    expect(status.status).toBe(200);
    expect(JSON.stringify(await status.json())).toContain('"check":"gpupowercopy"');

    const metrics = await exporter.registry.metrics();
    expect(metrics).toContain('autopilot_check_success{check="gpupowercopy"} 1');
    expect(metrics).toContain(
      'autopilot_gpu_verdict{check="gpupowercopy",gpu="0",verdict="PASS",gpumodel="NVIDIA H200"} 1',
    );
    expect(metrics).toMatch(
      /autopilot_gpu_clock_event_reason\{gpu="0",uuid="[^"]+",reason="gpu_idle",gpumodel="NVIDIA H200"\}/,
    );
  });
});
