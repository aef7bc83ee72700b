/**
 * The koffi NVML binding (exporter/native/nvml.ts) against the fake libnvidia-ml
 * (test/fakes/native/nvml), which jest's globalSetup builds into build/fakes/nvml. The fake is
 * steered through its fakenvml_* functions over a second koffi.load of the same absolute path,
 * which dlopen answers with the same handle and so the same state; jest's sandboxed process.env is
 * invisible to C getenv, so FAKE_NVML_SCENARIO is only tested in a child process.
 */
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import koffi from 'koffi';
import { createEccCheck } from '../../exporter/checks/ecc.js';
import { createXidCheck, createXidLedger } from '../../exporter/checks/xid.js';
import { silentLogger } from '../../exporter/log.js';
import { loadNvml, type NvmlOptions } from '../../exporter/native/nvml.js';
import { NvmlError, type Nvml } from '../../exporter/native/ports.js';
import { countingXidWatcher } from '../fakes/xid-watcher.js';

const ROOT = join(import.meta.dirname, '..', '..');
const FAKE = join(ROOT, 'build', 'fakes', 'nvml', 'libnvidia-ml.so.1');

const control = koffi.load(FAKE);
const fakeReset = control.func('void fakenvml_reset(void)');
const fakeApply = control.func('int fakenvml_apply(const char *scenario)');
const fakePushXid = control.func('int fakenvml_push_xid(unsigned int gpu, unsigned long long xid)');
const fakeCalls = control.func('unsigned long fakenvml_calls(const char *fn)');

const apply = (scenario: string): void => {
  expect(fakeApply(scenario)).toBe(0);
};
const calls = (fn: string): number => fakeCalls(fn) as number;

const HGX_BUS_IDS = [
  '00000000:1B:00.0',
  '00000000:43:00.0',
  '00000000:52:00.0',
  '00000000:61:00.0',
  '00000000:9D:00.0',
  '00000000:C3:00.0',
  '00000000:D1:00.0',
  '00000000:DF:00.0',
];
const HEALTHY_ROWS = { correctable: 0, uncorrectable: 0, pending: false, failureOccurred: false };
const HEALTHY_ECC = {
  enabled: true,
  volatileUncorrected: 0,
  aggregateUncorrected: 0,
  retiredPagesPending: undefined,
};
const ECC_OFF = {
  enabled: false,
  volatileUncorrected: undefined,
  aggregateUncorrected: undefined,
  retiredPagesPending: undefined,
};
const GEN5_X16 = { currentGeneration: 5, currentWidth: 16, maxGeneration: 5, maxWidth: 16 };

let opened: Nvml | undefined;

async function open(options?: NvmlOptions): Promise<Nvml> {
  const load = await loadNvml(FAKE, options);
  if (!load.ok) throw new Error(`the fake NVML did not load: ${load.reason}`);
  opened = load.nvml;
  return load.nvml;
}

/** The rejection of `promise`, which must reject with an NvmlError. */
async function nvmlError(promise: Promise<unknown>): Promise<NvmlError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(NvmlError);
  return error as NvmlError;
}

beforeEach(() => {
  fakeReset();
});

afterEach(async () => {
  await opened?.close();
  opened = undefined;
});

describe('loading', () => {
  test('a missing library is ok:false with the path in the reason', async () => {
    const path = join(ROOT, 'build', 'fakes', 'no-such-dir', 'libnvidia-ml.so.1');
    const load = await loadNvml(path);
    expect(load.ok).toBe(false);
    if (load.ok) return;
    expect(load.reason.startsWith(`cannot load ${path}: `)).toBe(true);
    expect(load.reason).toMatch(/No such file or directory/);
  });

  test('a library without the NVML symbols is ok:false', async () => {
    const load = await loadNvml('libc.so.6');
    expect(load).toEqual({
      ok: false,
      reason: expect.stringMatching(/^libc\.so\.6 is not a usable NVML: .*nvmlInit_v2/) as unknown,
    });
  });

  test('an nvmlInit_v2 failure is ok:false with the function, the NVML string and the code', async () => {
    apply('initfail=9');
    expect(await loadNvml(FAKE)).toEqual({
      ok: false,
      reason: 'nvmlInit_v2: Driver Not Loaded (9)',
    });
    fakeReset();
    apply('initfail=4');
    expect(await loadNvml(FAKE)).toEqual({
      ok: false,
      reason: 'nvmlInit_v2: Insufficient Permissions (4)',
    });
    expect(calls('nvmlInit_v2')).toBe(1);
  });

  test('loading twice gives two working instances; each close shuts NVML down once', async () => {
    const first = await open();
    const second = await loadNvml(FAKE);
    expect(second.ok).toBe(true);
    if (!second.ok) return;
    expect(await second.nvml.driverVersion()).toBe('580.159.04');
    await second.nvml.close();
    await second.nvml.close();
    expect(calls('nvmlShutdown')).toBe(1);
    expect(await first.driverVersion()).toBe('580.159.04');
  });
});

describe('a healthy node', () => {
  test('eight H200s with unique UUIDs and HGX bus ids, in NVML order', async () => {
    const nvml = await open();
    const devices = await nvml.devices();
    expect(devices.map((d) => d.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(devices.map((d) => d.name)).toEqual(Array(8).fill('NVIDIA H200'));
    expect(devices.map((d) => d.pciBusId)).toEqual(HGX_BUS_IDS);
    for (const device of devices) {
      expect(device.uuid).toMatch(
        /^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
      );
    }
    expect(new Set(devices.map((d) => d.uuid)).size).toBe(8);
    // NVML_DEVICE_SERIAL_BUFFER_SIZE is 30: a serial is at most 29 characters.
    expect(devices.map((d) => d.serial)).toEqual(
      [0, 1, 2, 3, 4, 5, 6, 7].map((i) => `165492300${1700 + i}`),
    );
  });

  test('a board without a serial (NOT_SUPPORTED, consumer GPUs) keeps its other identity', async () => {
    apply('notsupported=nvmlDeviceGetSerial');
    const devices = await (await open()).devices();
    expect(devices.map((d) => d.serial)).toEqual(Array(8).fill(''));
    expect(devices.map((d) => d.pciBusId)).toEqual(HGX_BUS_IDS);
    expect(devices.every((d) => d.uuid.startsWith('GPU-'))).toBe(true);
  });

  test('every method on a healthy GPU', async () => {
    const nvml = await open();
    expect(await nvml.driverVersion()).toBe('580.159.04');
    expect(await nvml.pcieLink(0)).toEqual(GEN5_X16);
    expect(await nvml.remappedRows(0)).toEqual(HEALTHY_ROWS);
    expect(await nvml.clockEventReasons(0)).toBe(0x1n); // GPU idle, as on the idle H200 capture
    expect(await nvml.ecc(0)).toEqual(HEALTHY_ECC);
    expect(await nvml.computeProcessCount(0)).toEqual({ known: true, count: 0 });
    expect(await nvml.migEnabled(0)).toBe(false);
    expect(await nvml.waitXidEvents(30)).toEqual([]);
  });

  test('every GPU reads the same healthy values', async () => {
    const nvml = await open();
    for (let index = 0; index < 8; index++) {
      expect(await nvml.pcieLink(index)).toEqual(GEN5_X16);
      expect(await nvml.remappedRows(index)).toEqual(HEALTHY_ROWS);
      expect(await nvml.clockEventReasons(index)).toBe(0x1n);
      expect(await nvml.ecc(index)).toEqual(HEALTHY_ECC);
    }
  });

  test('uses the current symbols, not the pre-R535 fallback', async () => {
    const nvml = await open();
    await nvml.clockEventReasons(2);
    await nvml.migEnabled(2);
    expect(calls('nvmlDeviceGetCurrentClocksEventReasons')).toBe(1);
    expect(calls('nvmlDeviceGetCurrentClocksThrottleReasons')).toBe(0);
    expect(calls('nvmlDeviceGetMigMode')).toBe(1);
  });

  test('the GPU list and the device handles are read once', async () => {
    const nvml = await open();
    const [first, second] = await Promise.all([nvml.devices(), nvml.devices()]);
    expect(await nvml.devices()).toBe(first);
    expect(second).toBe(first);
    await nvml.pcieLink(3);
    await nvml.ecc(3);
    expect(calls('nvmlDeviceGetHandleByIndex_v2')).toBe(8);
    expect(calls('nvmlDeviceGetCount_v2')).toBe(1);
    expect(calls('nvmlDeviceGetName')).toBe(8);
  });

  test('an index NVML does not know rejects with NvmlError', async () => {
    const nvml = await open();
    const error = await nvmlError(nvml.pcieLink(8));
    expect(error.fn).toBe('nvmlDeviceGetHandleByIndex_v2');
    expect(error.code).toBe(2);
    expect(error.description).toBe('Invalid Argument');
    expect(error.message).toBe('nvmlDeviceGetHandleByIndex_v2: Invalid Argument (2)');
    expect(error.name).toBe('NvmlError');
    expect((await nvmlError(nvml.remappedRows(-1))).code).toBe(2);
    expect((await nvmlError(nvml.migEnabled(1.5))).code).toBe(2);
  });

  test('close frees the event set and shuts down once; later calls fail as uninitialized', async () => {
    const nvml = await open();
    await nvml.waitXidEvents(0);
    await nvml.close();
    await nvml.close();
    expect(calls('nvmlEventSetFree')).toBe(1);
    expect(calls('nvmlShutdown')).toBe(1);
    const error = await nvmlError(nvml.driverVersion());
    expect(error.fn).toBe('nvmlSystemGetDriverVersion');
    expect(error.code).toBe(1);
    expect(error.description).toBe('Uninitialized');
    opened = undefined;
  });

  test('close without an event set does not free one', async () => {
    const nvml = await open();
    await nvml.close();
    opened = undefined;
    expect(calls('nvmlEventSetCreate')).toBe(0);
    expect(calls('nvmlEventSetFree')).toBe(0);
    expect(calls('nvmlShutdown')).toBe(1);
  });
});

describe('the scenario grammar', () => {
  test('gpus=N', async () => {
    apply('gpus=2');
    const devices = await (await open()).devices();
    expect(devices.map((d) => d.pciBusId)).toEqual(HGX_BUS_IDS.slice(0, 2));
  });

  test('gpus=N beyond eight keeps bus ids and UUIDs unique', async () => {
    apply('gpus=12');
    const devices = await (await open()).devices();
    expect(devices).toHaveLength(12);
    expect(new Set(devices.map((d) => d.pciBusId)).size).toBe(12);
    expect(new Set(devices.map((d) => d.uuid)).size).toBe(12);
    expect(devices[8]?.pciBusId).toBe('00000000:E1:00.0');
  });

  test('name=TEXT', async () => {
    apply('name=NVIDIA H100 80GB HBM3');
    const devices = await (await open()).devices();
    expect(devices.map((d) => d.name)).toEqual(Array(8).fill('NVIDIA H100 80GB HBM3'));
  });

  test('nodevices=1', async () => {
    apply('nodevices=1');
    const nvml = await open();
    expect(await nvml.devices()).toEqual([]);
    expect(await nvml.waitXidEvents(0)).toEqual([]);
  });

  test.each([
    ['powerbrake=3', 0x88n],
    ['thermal=3', 0x48n],
    ['swpowercap=3', 0x4n],
    ['powerbrake=3;thermal=3', 0xc8n],
  ])('%s sets the clock event reasons of that GPU only', async (scenario, reasons) => {
    apply(scenario);
    const nvml = await open();
    expect(await nvml.clockEventReasons(3)).toBe(reasons);
    expect(await nvml.clockEventReasons(2)).toBe(0x1n);
  });

  test.each([
    ['pending=2', { ...HEALTHY_ROWS, pending: true }],
    ['remapfail=2', { ...HEALTHY_ROWS, failureOccurred: true }],
    ['uncorrectable=2:5', { ...HEALTHY_ROWS, uncorrectable: 5 }],
    ['uncorrectable=2:4;pending=2', { ...HEALTHY_ROWS, uncorrectable: 4, pending: true }],
  ])('%s shows in that GPU’s remapped rows', async (scenario, rows) => {
    apply(scenario);
    const nvml = await open();
    expect(await nvml.remappedRows(2)).toEqual(rows);
    expect(await nvml.remappedRows(1)).toEqual(HEALTHY_ROWS);
  });

  test('dbe=I:N is the volatile uncorrected count, and the aggregate one at least that', async () => {
    apply('dbe=4:3');
    const nvml = await open();
    expect(await nvml.ecc(4)).toEqual({
      ...HEALTHY_ECC,
      volatileUncorrected: 3,
      aggregateUncorrected: 3,
    });
    expect(await nvml.ecc(5)).toEqual(HEALTHY_ECC);
  });

  test('aggdbe=I:N is the aggregate (lifetime) count alone, read with NVML_AGGREGATE_ECC', async () => {
    apply('aggdbe=4:7');
    const nvml = await open();
    expect(await nvml.ecc(4)).toEqual({ ...HEALTHY_ECC, aggregateUncorrected: 7 });
    expect(calls('nvmlDeviceGetTotalEccErrors')).toBe(2); // volatile, then aggregate
  });

  test('retirepending=I', async () => {
    apply('retirepending=4');
    const nvml = await open();
    expect(await nvml.ecc(4)).toEqual({ ...HEALTHY_ECC, retiredPagesPending: true });
  });

  test('noecc=I: ECC off, no counter read', async () => {
    apply('noecc=5');
    const nvml = await open();
    expect(await nvml.ecc(5)).toEqual(ECC_OFF);
    expect(calls('nvmlDeviceGetTotalEccErrors')).toBe(0);
    expect(await nvml.ecc(4)).toEqual(HEALTHY_ECC);
  });

  test('link=I:GxW lowers the current link, the maximum stays Gen5 x16', async () => {
    apply('link=3:3x8');
    const nvml = await open();
    expect(await nvml.pcieLink(3)).toEqual({
      currentGeneration: 3,
      currentWidth: 8,
      maxGeneration: 5,
      maxWidth: 16,
    });
    expect(await nvml.pcieLink(4)).toEqual(GEN5_X16);
  });

  test('procs=I:N is the size the process query asks for, through _v3', async () => {
    apply('procs=6:3');
    const nvml = await open();
    expect(await nvml.computeProcessCount(6)).toEqual({ known: true, count: 3 });
    expect(await nvml.computeProcessCount(5)).toEqual({ known: true, count: 0 });
    expect(calls('nvmlDeviceGetComputeRunningProcesses_v3')).toBe(2);
    expect(calls('nvmlDeviceGetComputeRunningProcesses_v2')).toBe(0);
  });

  test('MIG mode makes the count unknown without asking for it', async () => {
    apply('mig=2;procs=2:1');
    const nvml = await open();
    expect(await nvml.computeProcessCount(2)).toEqual({
      known: false,
      reason: 'MIG is enabled: NVML lists its processes only to privileged callers',
    });
    expect(calls('nvmlDeviceGetComputeRunningProcesses_v3')).toBe(0);
  });

  test('NO_PERMISSION makes the count unknown, with the reason; other errors reject', async () => {
    apply('fail=nvmlDeviceGetComputeRunningProcesses_v3:4');
    const nvml = await open();
    expect(await nvml.computeProcessCount(0)).toEqual({
      known: false,
      reason: 'nvmlDeviceGetComputeRunningProcesses_v3: Insufficient Permissions (4)',
    });
    apply('fail=nvmlDeviceGetComputeRunningProcesses_v3:15');
    const lost = await nvmlError(nvml.computeProcessCount(0));
    expect([lost.fn, lost.code]).toEqual(['nvmlDeviceGetComputeRunningProcesses_v3', 15]);
  });

  test('the NUMA node is the lowest of the memory affinity; NOT_SUPPORTED gives none', async () => {
    apply('numa=6:3');
    const nvml = await open();
    expect(await nvml.numaNode(0)).toBe(0);
    expect(await nvml.numaNode(5)).toBe(1);
    expect(await nvml.numaNode(6)).toBe(3);
    expect(fakeApply('numa=7:70')).toBe(-1);
    apply('fail=nvmlDeviceGetMemoryAffinity:999');
    expect((await nvmlError(nvml.numaNode(6))).fn).toBe('nvmlDeviceGetMemoryAffinity');
    apply('notsupported=nvmlDeviceGetMemoryAffinity'); // answered before any fail= rule
    expect(await nvml.numaNode(6)).toBeUndefined();
  });

  test('mig=I: MIG on, and remapped rows NOT_SUPPORTED there', async () => {
    apply('mig=7');
    const nvml = await open();
    expect(await nvml.migEnabled(7)).toBe(true);
    expect(await nvml.migEnabled(6)).toBe(false);
    expect(await nvml.remappedRows(7)).toBeUndefined();
  });

  test('xid=I:CODE,... queues events that one wait returns together', async () => {
    apply('xid=1:79,6:48');
    const nvml = await open();
    expect(await nvml.waitXidEvents(1000)).toEqual([
      { gpuIndex: 1, xid: 79 },
      { gpuIndex: 6, xid: 48 },
    ]);
    expect(await nvml.waitXidEvents(0)).toEqual([]);
    expect(calls('nvmlEventSetCreate')).toBe(1);
    expect(calls('nvmlDeviceRegisterEvents')).toBe(8);
  });

  test('several items and blanks in one scenario', async () => {
    apply(' gpus=4 ; procs=1:2;;dbe=0:1 ');
    const nvml = await open();
    expect(await nvml.devices()).toHaveLength(4);
    expect(await nvml.computeProcessCount(1)).toEqual({ known: true, count: 2 });
    expect((await nvml.ecc(0)).volatileUncorrected).toBe(1);
  });

  test.each([
    'bogus=1',
    'gpus=x',
    'gpus=99',
    'link=3:38',
    'dbe=2',
    'powerbrake=40',
    'noequals',
    'registerfail=3',
    'aggdbe=40:1',
    'failnext=nvmlEventSetWait_v2:999',
    'failnext=nvmlEventSetWait_v2:0:1',
  ])('fakenvml_apply refuses %s', (scenario) => {
    expect(fakeApply(scenario)).toBe(-1);
  });

  test('reset restores the healthy defaults', async () => {
    apply('gpus=1;powerbrake=0;noecc=0');
    fakeReset();
    const nvml = await open();
    expect(await nvml.devices()).toHaveLength(8);
    expect(await nvml.clockEventReasons(0)).toBe(0x1n);
    expect(await nvml.ecc(0)).toEqual(HEALTHY_ECC);
  });
});

describe('the generic field reader (nvmlDeviceGetFieldValues)', () => {
  test('one typed answer per id, in order; an id the driver lacks answers NOT_SUPPORTED alone', async () => {
    // 251-253 are the slowdown-duration fields of a 580 driver; 9999 is no field at all.
    apply('gpus=1;slowdown=0:hwthermal:50');
    const nvml = await open();
    const fields = await nvml.fieldValues(0, [253, 9999, 252, 251]);
    expect(fields).toHaveLength(4);
    expect(fields[0]).toEqual({ ok: true, type: 'unsigned long long', value: 0n });
    expect(fields[1]).toEqual({ ok: false, code: 3 });
    expect(fields[2]).toMatchObject({ ok: true, type: 'unsigned long long' });
    expect(fields[3]).toEqual({ ok: true, type: 'unsigned long long', value: 0n });
  });

  test('a driver without the fields answers NOT_SUPPORTED per entry; no ids, no call', async () => {
    apply('nofields=1');
    const nvml = await open();
    expect(await nvml.fieldValues(0, [252, 253])).toEqual([
      { ok: false, code: 3 },
      { ok: false, code: 3 },
    ]);
    const before = calls('nvmlDeviceGetFieldValues');
    expect(await nvml.fieldValues(0, [])).toEqual([]);
    expect(calls('nvmlDeviceGetFieldValues')).toBe(before);
  });

  test('the whole call unsupported is NOT_SUPPORTED per entry', async () => {
    apply('notsupported=nvmlDeviceGetFieldValues');
    expect(await (await open()).fieldValues(0, [252])).toEqual([{ ok: false, code: 3 }]);
  });

  test('another error of the whole call rejects with it', async () => {
    apply('failnext=nvmlDeviceGetFieldValues:999:1');
    expect((await nvmlError((await open()).fieldValues(0, [252]))).code).toBe(999);
  });
});

describe('NOT_SUPPORTED and other errors', () => {
  test('remapped rows NOT_SUPPORTED is undefined', async () => {
    apply('notsupported=nvmlDeviceGetRemappedRows');
    expect(await (await open()).remappedRows(0)).toBeUndefined();
  });

  test('ECC mode NOT_SUPPORTED is ECC off', async () => {
    apply('notsupported=nvmlDeviceGetEccMode');
    expect(await (await open()).ecc(0)).toEqual(ECC_OFF);
  });

  test('an ECC counter NOT_SUPPORTED is undefined with ECC still on', async () => {
    apply('notsupported=nvmlDeviceGetTotalEccErrors');
    expect(await (await open()).ecc(0)).toEqual({
      ...HEALTHY_ECC,
      volatileUncorrected: undefined,
      aggregateUncorrected: undefined,
    });
  });

  test('MIG mode NOT_SUPPORTED is MIG off', async () => {
    apply('mig=0;notsupported=nvmlDeviceGetMigMode');
    expect(await (await open()).migEnabled(0)).toBe(false);
  });

  test('registration NOT_SUPPORTED is tolerated; such GPUs deliver nothing and say why', async () => {
    apply('notsupported=nvmlDeviceRegisterEvents;xid=0:79');
    const nvml = await open();
    expect(await nvml.waitXidEvents(20)).toEqual([]);
    expect(calls('nvmlDeviceRegisterEvents')).toBe(8);
    const notListening = await nvml.listenXidEvents();
    expect([...notListening.keys()]).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(notListening.get(0)).toBe('nvmlDeviceRegisterEvents: Not Supported (3)');
  });

  test.each([
    ['nvmlDeviceGetCurrPcieLinkWidth', (nvml: Nvml) => nvml.pcieLink(0)],
    ['nvmlDeviceGetCurrentClocksEventReasons', (nvml: Nvml) => nvml.clockEventReasons(0)],
    ['nvmlDeviceGetComputeRunningProcesses_v3', (nvml: Nvml) => nvml.computeProcessCount(0)],
    ['nvmlEventSetWait_v2', (nvml: Nvml) => nvml.waitXidEvents(0)],
    ['nvmlEventSetCreate', (nvml: Nvml) => nvml.waitXidEvents(0)],
    ['nvmlSystemGetDriverVersion', (nvml: Nvml) => nvml.driverVersion()],
  ])('%s NOT_SUPPORTED elsewhere rejects with NvmlError', async (fn, method) => {
    apply(`notsupported=${fn}`);
    const nvml = await open();
    const error = await nvmlError(method(nvml));
    expect([error.fn, error.code, error.description]).toEqual([fn, 3, 'Not Supported']);
    expect(error.message).toBe(`${fn}: Not Supported (3)`);
  });

  test('a GPU whose identity cannot be read is listed with empty fields, not failing the list', async () => {
    apply('notsupported=nvmlDeviceGetUUID');
    const nvml = await open();
    const devices = await nvml.devices();
    expect(devices).toHaveLength(8);
    expect(devices[3]).toEqual({ index: 3, uuid: '', name: '', pciBusId: '', serial: '' });
  });

  test('a failed registration frees the set, and the next wait tries again', async () => {
    apply('gpus=1');
    const nvml = await open();
    const before = calls('nvmlEventSetCreate');
    apply('notsupported=nvmlDeviceGetCount_v2');
    await nvmlError(nvml.waitXidEvents(0));
    expect(calls('nvmlEventSetCreate')).toBe(before + 1);
    expect(calls('nvmlEventSetFree')).toBe(1);
    fakeReset();
    apply('gpus=1;xid=0:31');
    // the reset forgot the init, so a fresh instance
    const again = await loadNvml(FAKE);
    if (!again.ok) throw new Error(again.reason);
    opened = again.nvml;
    expect(await again.nvml.waitXidEvents(100)).toEqual([{ gpuIndex: 0, xid: 31 }]);
  });
});

describe('XID events', () => {
  test('an XID pushed while waiting ends the wait early', async () => {
    const nvml = await open();
    await nvml.waitXidEvents(0); // registers
    const started = performance.now();
    setTimeout(() => {
      expect(fakePushXid(5, 94)).toBe(0);
    }, 50);
    const events = await nvml.waitXidEvents(5000);
    expect(events).toEqual([{ gpuIndex: 5, xid: 94 }]);
    expect(performance.now() - started).toBeLessThan(4000);
  });

  test('a wait with nothing pending resolves [] after about the timeout', async () => {
    const nvml = await open();
    const started = performance.now();
    expect(await nvml.waitXidEvents(120)).toEqual([]);
    expect(performance.now() - started).toBeGreaterThanOrEqual(100);
  });

  test('queued and pushed events for several GPUs come back in order; 999 is an unknown XID', async () => {
    apply('xid=7:13');
    const nvml = await open();
    expect(fakePushXid(0, 999)).toBe(0);
    expect(fakePushXid(7, 119)).toBe(0);
    expect(await nvml.waitXidEvents(100)).toEqual([
      { gpuIndex: 7, xid: 13 },
      { gpuIndex: 0, xid: 999 },
      { gpuIndex: 7, xid: 119 },
    ]);
  });

  test('an event for a GPU past the count stays out', async () => {
    apply('gpus=2');
    const nvml = await open();
    expect(fakePushXid(5, 79)).toBe(0);
    expect(await nvml.waitXidEvents(20)).toEqual([]);
  });
});

describe('the ecc check over the binding', () => {
  test('a double-bit error only the aggregate counter shows is a new error: FAIL, fatal', async () => {
    apply('gpus=2;aggdbe=1:7');
    const nvml = await open();
    const check = createEccCheck({ nvml: { ok: true, nvml } });
    const ctx = { signal: new AbortController().signal, logger: silentLogger, params: {} };
    const first = await check.run(ctx);
    expect(first.devices.map((d) => d.verdict)).toEqual(['PASS', 'PASS']);
    // The lifetime count rises while the volatile one stays 0, as after a driver reload.
    apply('aggdbe=1:8');
    const second = await check.run(ctx);
    expect(second.devices.map((d) => d.verdict)).toEqual(['PASS', 'FAIL']);
    expect(second.devices[1]).toMatchObject({
      fatal: true,
      reason:
        '1 new uncorrected (double-bit) ECC error since the last run (volatile 0, aggregate 8)',
    });
  });
});

describe('XID registration and recovery', () => {
  test('a GPU whose registration fails stays out, the others listen, and it joins once it can', async () => {
    apply('registerfail=3:15');
    const nvml = await open();
    expect([...(await nvml.listenXidEvents())]).toEqual([
      [3, 'nvmlDeviceRegisterEvents: GPU is lost (15)'],
    ]);
    expect(fakePushXid(2, 48)).toBe(0);
    expect(await nvml.waitXidEvents(100)).toEqual([{ gpuIndex: 2, xid: 48 }]);

    apply('registerfail=3:0');
    expect(await nvml.listenXidEvents()).toEqual(new Map());
    // Added to the same set: the other GPUs kept listening meanwhile.
    expect(calls('nvmlEventSetCreate')).toBe(1);
    expect(calls('nvmlDeviceRegisterEvents')).toBe(9);
    expect(fakePushXid(3, 79)).toBe(0);
    expect(await nvml.waitXidEvents(100)).toEqual([{ gpuIndex: 3, xid: 79 }]);
    // Nothing left to retry: listening again calls no NVML function.
    await nvml.listenXidEvents();
    expect(calls('nvmlDeviceRegisterEvents')).toBe(9);
  });

  test('a registration answering UNKNOWN spoils the set: it is freed and built again without that GPU', async () => {
    apply('registerfail=3:999');
    const nvml = await open();
    expect([...(await nvml.listenXidEvents())]).toEqual([
      [3, 'nvmlDeviceRegisterEvents: Unknown Error (999)'],
    ]);
    expect(calls('nvmlEventSetCreate')).toBe(2);
    expect(calls('nvmlEventSetFree')).toBe(1);
    expect(calls('nvmlDeviceRegisterEvents')).toBe(4 + 7); // GPUs 0-3 on the first set, 7 on the second
    expect(fakePushXid(7, 95)).toBe(0);
    expect(await nvml.waitXidEvents(100)).toEqual([{ gpuIndex: 7, xid: 95 }]);
  });

  test('a GPU whose registration keeps answering UNKNOWN is retried with backoff, not on every wait', async () => {
    apply('registerfail=3:999');
    let now = 0;
    const nvml = await open({ now: () => now });
    const notListening = async () => [...(await nvml.listenXidEvents()).keys()];
    expect(await notListening()).toEqual([3]);
    expect([calls('nvmlEventSetCreate'), calls('nvmlEventSetFree')]).toEqual([2, 1]);
    // Rounds within the pause keep the set, so an XID queued for another GPU is not lost.
    for (let round = 0; round < 5; round++) {
      expect(await notListening()).toEqual([3]);
      expect(await nvml.waitXidEvents(0)).toEqual([]);
    }
    expect(fakePushXid(5, 79)).toBe(0);
    expect(await notListening()).toEqual([3]);
    expect(await nvml.waitXidEvents(100)).toEqual([{ gpuIndex: 5, xid: 79 }]);
    expect([calls('nvmlEventSetCreate'), calls('nvmlEventSetFree')]).toEqual([2, 1]);
    expect(calls('nvmlDeviceRegisterEvents')).toBe(4 + 7);
    // Due after 2 s: tried, UNKNOWN again, so the set is rebuilt once without it; then 4 s.
    const rebuildsAfter = async (ms: number) => {
      const before = calls('nvmlEventSetCreate');
      now += ms;
      expect(await notListening()).toEqual([3]);
      return calls('nvmlEventSetCreate') - before;
    };
    expect(await rebuildsAfter(2_000)).toBe(1);
    expect(await rebuildsAfter(2_000)).toBe(0);
    expect(await rebuildsAfter(2_000)).toBe(1);
    // The pause is capped: however often it failed, one try a minute.
    for (let failures = 0; failures < 8; failures++) await rebuildsAfter(60_000);
    expect(await rebuildsAfter(59_000)).toBe(0);
    expect(await rebuildsAfter(1_000)).toBe(1);
    // Once it registers, it joins the set in place.
    apply('registerfail=3:0');
    now += 60_000;
    const creates = calls('nvmlEventSetCreate');
    expect(await notListening()).toEqual([]);
    expect(calls('nvmlEventSetCreate')).toBe(creates);
    expect(fakePushXid(3, 48)).toBe(0);
    expect(await nvml.waitXidEvents(100)).toEqual([{ gpuIndex: 3, xid: 48 }]);
  });

  test('NVML_ERROR_UNKNOWN from the wait frees the event set and creates it again', async () => {
    apply('failnext=nvmlEventSetWait_v2:999:1');
    const nvml = await open();
    await nvml.listenXidEvents();
    const error = await nvmlError(nvml.waitXidEvents(0));
    expect([error.fn, error.code]).toEqual(['nvmlEventSetWait_v2', 999]);
    expect(calls('nvmlEventSetFree')).toBe(1);
    expect(calls('nvmlEventSetCreate')).toBe(2);
    expect(calls('nvmlDeviceRegisterEvents')).toBe(16);
    // The new set is registered already, so an XID that comes before the next wait is kept.
    expect(fakePushXid(5, 79)).toBe(0);
    expect(await nvml.waitXidEvents(100)).toEqual([{ gpuIndex: 5, xid: 79 }]);
  });

  test('another error from the wait keeps the set', async () => {
    apply('failnext=nvmlEventSetWait_v2:15:1');
    const nvml = await open();
    const error = await nvmlError(nvml.waitXidEvents(0));
    expect(error.code).toBe(15);
    expect(calls('nvmlEventSetCreate')).toBe(1);
    expect(calls('nvmlEventSetFree')).toBe(0);
    expect(await nvml.waitXidEvents(0)).toEqual([]);
  });

  test('the xid check over the binding: GPU 3 is ERROR while it cannot register, then heard', async () => {
    apply('gpus=4;registerfail=3:15');
    const nvml = await open();
    const ledger = createXidLedger({ debounceMs: 0 });
    const { watcher, changes } = countingXidWatcher(nvml, ledger, 20);
    const check = createXidCheck({ nvml: { ok: true, nvml }, ledger, now: () => Date.now() });
    const ctx = { signal: new AbortController().signal, logger: silentLogger, params: {} };
    const verdicts = async () => (await check.run(ctx)).devices.map((d) => d.verdict);
    const until = async (count: number) => {
      for (let i = 0; i < 200 && changes() < count; i++)
        await new Promise((r) => setTimeout(r, 10));
      expect(changes()).toBe(count);
    };
    watcher.start();
    try {
      await until(1);
      expect(await verdicts()).toEqual(['PASS', 'PASS', 'PASS', 'ERROR']);
      apply('registerfail=3:0');
      await until(2);
      expect(await verdicts()).toEqual(['PASS', 'PASS', 'PASS', 'PASS']);
      expect(fakePushXid(3, 79)).toBe(0);
      await until(3);
      expect(await verdicts()).toEqual(['PASS', 'PASS', 'PASS', 'FAIL']);
    } finally {
      await watcher.stop();
    }
  });
});

describe('a hanging driver call', () => {
  test('does not block the event loop', async () => {
    apply('hang=nvmlDeviceGetRemappedRows:1500');
    const nvml = await open();
    const started = performance.now();
    let timerFiredAt: number | undefined;
    let resolvedAt: number | undefined;
    setTimeout(() => {
      timerFiredAt = performance.now();
    }, 20);
    const rows = await nvml.remappedRows(0).then((value) => {
      resolvedAt = performance.now();
      return value;
    });
    expect(rows).toEqual(HEALTHY_ROWS);
    expect(timerFiredAt).toBeDefined();
    expect(resolvedAt).toBeDefined();
    expect(timerFiredAt ?? Infinity).toBeLessThan(resolvedAt ?? 0);
    expect((resolvedAt ?? 0) - started).toBeGreaterThanOrEqual(1400); // it did hang
  });

  test('other calls keep answering while one hangs', async () => {
    apply('hang=nvmlEventSetWait_v2:1500');
    const nvml = await open();
    let waitDone = false;
    const waiting = nvml.waitXidEvents(0).then((events) => {
      waitDone = true;
      return events;
    });
    while (calls('nvmlEventSetWait_v2') === 0) {
      await new Promise((resolve) => setTimeout(resolve, 5)); // until the wait is in the driver
    }
    const started = performance.now();
    expect(await nvml.pcieLink(1)).toEqual(GEN5_X16);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(waitDone).toBe(false);
    expect(await waiting).toEqual([]);
  });

  test('hung calls take at most two libuv threadpool threads, so fs keeps working', async () => {
    apply('hang=nvmlDeviceGetCurrentClocksEventReasons:1500');
    const nvml = await open();
    await nvml.devices(); // device handles first, so that only the hanging call is in flight
    const hung = Promise.all([0, 1, 2, 3].map((gpu) => nvml.clockEventReasons(gpu)));
    while (calls('nvmlDeviceGetCurrentClocksEventReasons') === 0) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const started = performance.now();
    await readFile(FAKE); // runs on the same threadpool as koffi's async calls
    expect(performance.now() - started).toBeLessThan(1000);
    expect(calls('nvmlDeviceGetCurrentClocksEventReasons')).toBe(2);
    expect(await hung).toHaveLength(4);
  });
});

describe('FAKE_NVML_SCENARIO in another process', () => {
  const script = `
    import koffi from 'koffi';
    const lib = koffi.load(${JSON.stringify(FAKE)});
    const init = lib.func('int nvmlInit_v2(void)');
    const count = lib.func('int nvmlDeviceGetCount_v2(_Out_ unsigned int *n)');
    const handle = lib.func('int nvmlDeviceGetHandleByIndex_v2(unsigned int i, _Out_ void **h)');
    const reasons = lib.func('int nvmlDeviceGetCurrentClocksEventReasons(void *h, _Out_ unsigned long long *r)');
    const rc = init();
    const n = [0];
    if (rc === 0) count(n);
    const h = [null];
    const r = [0];
    if (rc === 0 && n[0] > 1) { handle(1, h); reasons(h[0], r); }
    console.log(JSON.stringify({ rc, count: n[0], reasons: Number(r[0]) }));
  `;
  const run = (scenario: string): unknown =>
    JSON.parse(
      execFileSync(process.execPath, ['--input-type=module', '-e', script], {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', FAKE_NVML_SCENARIO: scenario },
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );

  test('nvmlInit_v2 applies it', () => {
    expect(run('gpus=3;powerbrake=1')).toEqual({
      rc: 0,
      count: 3,
      reasons: 0x88,
    });
  });

  test('initfail from the environment', () => {
    expect(run('initfail=9')).toEqual({ rc: 9, count: 0, reasons: 0 });
  });
});
