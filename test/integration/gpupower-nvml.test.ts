/**
 * gpupower over the koffi NVML binding and the fake libnvidia-ml (test/fakes/native/nvml): a
 * hardware slowdown fails a GPU only when it persists across two reads, or when the driver's
 * accumulated slowdown duration grew for most of the time between them. The fake is steered in
 * process through fakenvml_apply, as in nvml-binding.test.ts; the check sleeps for real (100 ms).
 */
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { join } from 'node:path';
import koffi from 'koffi';
import type { CheckOutcome } from '../../exporter/checks/check.js';
import {
  createGpuPowerCheck,
  PERSISTENCE_MS,
  slowdownFieldIds,
} from '../../exporter/checks/gpupower.js';
import { silentLogger } from '../../exporter/log.js';
import { loadNvml } from '../../exporter/native/nvml.js';
import type { Nvml } from '../../exporter/native/ports.js';

const FAKE = join(import.meta.dirname, '..', '..', 'build', 'fakes', 'nvml', 'libnvidia-ml.so.1');
const control = koffi.load(FAKE);
const fakeReset = control.func('void fakenvml_reset(void)');
const fakeApply = control.func('int fakenvml_apply(const char *scenario)');

const ctx = { signal: new AbortController().signal, logger: silentLogger, params: {} };
let opened: Nvml | undefined;

async function runOn(scenario: string): Promise<CheckOutcome> {
  expect(fakeApply(scenario)).toBe(0);
  const load = await loadNvml(FAKE);
  if (!load.ok) throw new Error(`the fake NVML did not load: ${load.reason}`);
  opened = load.nvml;
  return createGpuPowerCheck({ nvml: load }).run(ctx);
}

function gpu(outcome: CheckOutcome, id: string) {
  const device = outcome.devices.find((d) => d.id === id);
  if (device === undefined) throw new Error(`no result for GPU ${id}`);
  return device;
}

beforeEach(() => {
  fakeReset();
});

afterEach(async () => {
  await opened?.close();
  opened = undefined;
});

describe('persistence of the hardware bits', () => {
  test('hw_slowdown in one read only is WARN, not FAIL, with both masks in the evidence', async () => {
    const outcome = await runOn('gpus=2;transient=1:8:1');
    const device = gpu(outcome, '1');
    expect(device.verdict).toBe('WARN');
    expect(device.reason).toMatch(/^hardware slowdown in one read of two \d+ ms apart/);
    expect(device.evidence).toMatchObject({ firstReasonsMask: '0x8', reasonsMask: '0x1' });
    expect(Number(device.evidence.intervalMs)).toBeGreaterThanOrEqual(PERSISTENCE_MS);
    expect(gpu(outcome, '0').verdict).toBe('PASS');
  });

  test('hw_slowdown in both reads is FAIL', async () => {
    const outcome = await runOn('gpus=2;hwslowdown=0');
    const device = gpu(outcome, '0');
    expect(device.verdict).toBe('FAIL');
    expect(device.reason).toMatch(/^hardware slowdown held across two reads \d+ ms apart$/);
    expect(device.compatValue).toBe(1);
    expect(gpu(outcome, '1').verdict).toBe('PASS');
  });

  test('a power brake that persists is FAIL and named as the cause', async () => {
    const device = gpu(await runOn('gpus=1;powerbrake=0'), '0');
    expect(device.verdict).toBe('FAIL');
    expect(device.reason).toMatch(/^power brake asserted .* held across two reads/);
  });

  test('a power brake in one read only is WARN', async () => {
    const device = gpu(await runOn('gpus=1;transient=0:136:1'), '0');
    expect(device.verdict).toBe('WARN');
    expect(device.reason).toMatch(/^power brake asserted .* in one read of two/);
  });
});

describe('accumulated slowdown durations', () => {
  test('a power-brake duration that grows for most of the interval is FAIL, whatever the bits', async () => {
    const outcome = await runOn('gpus=2;slowdown=1:powerbrake:90');
    const device = gpu(outcome, '1');
    expect(device.verdict).toBe('FAIL');
    expect(device.reason).toMatch(
      /^power brake asserted for \d+ ms of the \d+ ms between two reads \(NVML accumulated duration\)$/,
    );
    expect(device.evidence.reasonsMask).toBe('0x1'); // the bits never showed it
    expect(Number(device.evidence.hwPowerBrakeSlowdownGrowthNs)).toBeGreaterThan(50e6);
    expect(outcome.samples).toContainEqual(
      expect.objectContaining({
        metric: 'autopilot_gpu_slowdown_seconds_total',
        labels: expect.objectContaining({ gpu: '1', reason: 'hw_power_brake_slowdown' }),
      }),
    );
    expect(gpu(outcome, '0').verdict).toBe('PASS');
  });

  test('a thermal duration that grows for a small share of the interval is WARN', async () => {
    const device = gpu(await runOn('gpus=1;slowdown=0:hwthermal:10'), '0');
    expect(device.verdict).toBe('WARN');
    expect(device.reason).toMatch(
      /^hardware thermal slowdown for \d+ ms of the \d+ ms .*not failed$/,
    );
    expect(Number(device.evidence.hwThermalSlowdownGrowthNs)).toBeGreaterThan(0);
  });

  test('a driver with the fields renumbered (590 and later) is read under its own ids', async () => {
    const device = gpu(await runOn('gpus=1;driver=590.44.01;slowdown=0:hwthermal:90'), '0');
    expect(device.verdict).toBe('FAIL');
    expect(device.reason).toMatch(/^hardware thermal slowdown for \d+ ms/);
  });

  test('fields answering NOT_SUPPORTED leave the bits to judge, without error', async () => {
    const outcome = await runOn('gpus=1;nofields=1;slowdown=0:powerbrake:90');
    expect(gpu(outcome, '0').verdict).toBe('PASS');
    expect(gpu(outcome, '0').evidence.hwPowerBrakeSlowdownGrowthNs).toBeUndefined();
    expect(outcome.samples?.some((s) => s.metric === 'autopilot_gpu_slowdown_seconds_total')).toBe(
      false,
    );
  });

  test.each([
    ['580.159.04', { hwThermal: 252, hwPowerBrake: 253 }],
    ['575.51.03', { hwThermal: 252, hwPowerBrake: 253 }],
    ['590.44.01', { hwThermal: 270, hwPowerBrake: 271 }],
    ['570.172.08', undefined],
    ['not a version', undefined],
  ])('driver %s reads the field ids %j', (version, ids) => {
    expect(slowdownFieldIds(version)).toEqual(ids);
  });
});
