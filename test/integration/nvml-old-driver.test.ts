/**
 * The koffi NVML binding against the fake's old-driver build (build/fakes/nvml-old, compiled with
 * -DFAKE_OLD_DRIVER): no nvmlDeviceGetCurrentClocksEventReasons (before R535), no
 * nvmlDeviceGetMigMode, and no nvmlDeviceGetComputeRunningProcesses_v3 (before R510). Both fakes share the soname libnvidia-ml.so.1, but dlopen tells libraries
 * loaded by absolute path apart by file, so the two load side by side, each with its own state;
 * the last test shows it.
 */
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { join } from 'node:path';
import koffi from 'koffi';
import { loadNvml } from '../../exporter/native/nvml.js';
import type { Nvml } from '../../exporter/native/ports.js';

const BUILD = join(import.meta.dirname, '..', '..', 'build', 'fakes');
const OLD = join(BUILD, 'nvml-old', 'libnvidia-ml.so.1');
const CURRENT = join(BUILD, 'nvml', 'libnvidia-ml.so.1');

const control = koffi.load(OLD);
const fakeReset = control.func('void fakenvml_reset(void)');
const fakeApply = control.func('int fakenvml_apply(const char *scenario)');
const fakeCalls = control.func('unsigned long fakenvml_calls(const char *fn)');

const apply = (scenario: string): void => {
  expect(fakeApply(scenario)).toBe(0);
};
const calls = (fn: string): number => fakeCalls(fn) as number;

let opened: Nvml[] = [];

async function open(path = OLD): Promise<Nvml> {
  const load = await loadNvml(path);
  if (!load.ok) throw new Error(`the fake NVML did not load: ${load.reason}`);
  opened.push(load.nvml);
  return load.nvml;
}

beforeEach(() => {
  fakeReset();
});

afterEach(async () => {
  for (const nvml of opened) await nvml.close();
  opened = [];
});

describe('an NVML from before R535', () => {
  test('really lacks the two symbols', () => {
    expect(() =>
      control.func('int nvmlDeviceGetCurrentClocksEventReasons(void *h, void *r)'),
    ).toThrow(/Cannot find function/);
    expect(() => control.func('int nvmlDeviceGetMigMode(void *h, void *c, void *p)')).toThrow(
      /Cannot find function/,
    );
  });

  test('loads, and the GPUs read as usual', async () => {
    const nvml = await open();
    const devices = await nvml.devices();
    expect(devices).toHaveLength(8);
    expect(devices[0]).toEqual({
      index: 0,
      uuid: expect.stringMatching(/^GPU-/) as unknown,
      name: 'NVIDIA H200',
      pciBusId: '00000000:1B:00.0',
      serial: '1654923001700',
    });
    expect(await nvml.pcieLink(0)).toEqual({
      currentGeneration: 5,
      currentWidth: 16,
      maxGeneration: 5,
      maxWidth: 16,
    });
  });

  test('clock event reasons fall back to nvmlDeviceGetCurrentClocksThrottleReasons', async () => {
    apply('powerbrake=2;thermal=5');
    const nvml = await open();
    expect(await nvml.clockEventReasons(0)).toBe(0x1n);
    expect(await nvml.clockEventReasons(2)).toBe(0x88n);
    expect(await nvml.clockEventReasons(5)).toBe(0x48n);
    expect(calls('nvmlDeviceGetCurrentClocksThrottleReasons')).toBe(3);
  });

  test('a throttle-reasons failure names the fallback function', async () => {
    apply('notsupported=nvmlDeviceGetCurrentClocksThrottleReasons');
    const nvml = await open();
    await expect(nvml.clockEventReasons(0)).rejects.toMatchObject({
      name: 'NvmlError',
      fn: 'nvmlDeviceGetCurrentClocksThrottleReasons',
      code: 3,
      description: 'Not Supported',
    });
  });

  test('really lacks nvmlDeviceGetComputeRunningProcesses_v3, and counts through _v2', async () => {
    expect(() =>
      control.func('int nvmlDeviceGetComputeRunningProcesses_v3(void *h, void *n, void *i)'),
    ).toThrow(/Cannot find function/);
    apply('procs=3:2');
    const nvml = await open();
    expect(await nvml.computeProcessCount(3)).toEqual({ known: true, count: 2 });
    expect(await nvml.computeProcessCount(0)).toEqual({ known: true, count: 0 });
    expect(calls('nvmlDeviceGetComputeRunningProcesses_v2')).toBe(2);
    apply('fail=nvmlDeviceGetComputeRunningProcesses_v2:4');
    expect(await nvml.computeProcessCount(3)).toEqual({
      known: false,
      reason: 'nvmlDeviceGetComputeRunningProcesses_v2: Insufficient Permissions (4)',
    });
  });

  test('MIG reads as off without nvmlDeviceGetMigMode', async () => {
    apply('mig=1');
    const nvml = await open();
    expect(await nvml.migEnabled(1)).toBe(false);
    expect(await nvml.migEnabled(0)).toBe(false);
  });

  test('an unknown index still rejects when nvmlDeviceGetMigMode is absent', async () => {
    const nvml = await open();
    await expect(nvml.migEnabled(8)).rejects.toMatchObject({
      fn: 'nvmlDeviceGetHandleByIndex_v2',
      code: 2,
    });
  });

  test('loads beside the current fake, each library with its own state', async () => {
    const current = koffi.load(CURRENT);
    current.func('void fakenvml_reset(void)')();
    const currentCalls = current.func('unsigned long fakenvml_calls(const char *fn)');
    apply('gpus=2;mig=0');
    const old = await open(OLD);
    const now = await open(CURRENT);
    expect(await old.devices()).toHaveLength(2);
    expect(await now.devices()).toHaveLength(8);
    expect(await old.migEnabled(0)).toBe(false);
    expect(await now.migEnabled(0)).toBe(false); // the MIG scenario went to the old library only
    await now.clockEventReasons(0);
    await old.clockEventReasons(0);
    expect(currentCalls('nvmlDeviceGetCurrentClocksEventReasons')).toBe(1);
    expect(calls('nvmlDeviceGetCurrentClocksThrottleReasons')).toBe(1);
  });
});
