import { describe, expect, test } from '@jest/globals';
import type { Check, CheckOutcome } from '../../exporter/checks/check.js';
import { createEccCheck, judgeEcc } from '../../exporter/checks/ecc.js';
import { busIdKey } from '../../exporter/checks/gpu-common.js';
import { createGpuMemCheck, judgeCudaFailure, judgeGpuMem } from '../../exporter/checks/gpumem.js';
import {
  activeReasons,
  createGpuPowerCheck,
  judgeClockEvents,
} from '../../exporter/checks/gpupower.js';
import { createPcieBwCheck, judgePcie, linkCapacityGBps } from '../../exporter/checks/pciebw.js';
import { createRemappedCheck, judgeRemappedRows } from '../../exporter/checks/remapped.js';
import {
  classifyXid,
  createXidCheck,
  createXidLedger,
  createXidWatcher,
  judgeXids,
  XID_WAIT_STUCK_MS,
  XID_WARN_WINDOW_MS,
} from '../../exporter/checks/xid.js';
import { createSystemClock } from '../../exporter/clock.js';
import { silentLogger } from '../../exporter/log.js';
import { CudaError, NvmlError, type NvmlLoad } from '../../exporter/native/ports.js';
import { fakeCuda, fakeNode, fakeNvml, type FakeGpu } from '../fakes/gpu.js';

const T = Date.UTC(2026, 0, 1);
const ctx = { signal: new AbortController().signal, logger: silentLogger, params: {} };
const loaded = (gpus: FakeGpu[]): NvmlLoad => ({ ok: true, nvml: fakeNvml(gpus) });
const noNvml: NvmlLoad = { ok: false, reason: 'cannot load libnvidia-ml.so.1: not found' };

function verdicts(outcome: CheckOutcome): string[] {
  return outcome.devices.map((d) => `${d.id}:${d.verdict}`);
}

describe('GPU checks without NVML or GPUs', () => {
  const checks = (nvml: NvmlLoad): Check[] => [
    createRemappedCheck({ nvml }),
    createGpuPowerCheck({ nvml }),
    createEccCheck({ nvml }),
    createXidCheck({ nvml, ledger: createXidLedger({ debounceMs: 0 }), now: () => T }),
    createPcieBwCheck({ nvml, cuda: { ok: true, probe: fakeCuda([]) }, thresholdGBps: 4 }),
    createGpuMemCheck({ nvml, cuda: { ok: true, probe: fakeCuda([]) } }),
  ];

  test.each(checks(noNvml).map((c) => [c.name, c] as const))(
    '%s says SKIP with the reason',
    async (_, check) => {
      expect(await check.run(ctx)).toEqual({
        devices: [],
        verdict: 'SKIP',
        reason: 'cannot load libnvidia-ml.so.1: not found',
      });
    },
  );

  test.each(checks(loaded([])).map((c) => [c.name, c] as const))(
    '%s says SKIP when NVML sees no GPU',
    async (_, check) => {
      expect(await check.run(ctx)).toEqual({
        devices: [],
        verdict: 'SKIP',
        reason: 'NVML sees no GPU',
      });
    },
  );
});

describe('remapped', () => {
  test.each([
    [undefined, 'SKIP', undefined, undefined],
    [
      { correctable: 2, uncorrectable: 0, pending: false, failureOccurred: false },
      'PASS',
      0,
      undefined,
    ],
    [
      { correctable: 0, uncorrectable: 1, pending: false, failureOccurred: false },
      'WARN',
      0,
      undefined,
    ],
    [
      { correctable: 0, uncorrectable: 1, pending: true, failureOccurred: false },
      'FAIL',
      1,
      undefined,
    ],
    [{ correctable: 0, uncorrectable: 3, pending: false, failureOccurred: true }, 'FAIL', 1, true],
  ] as const)('%j → %s', (rows, verdict, compat, fatal) => {
    const device = judgeRemappedRows('2', rows);
    expect(device.verdict).toBe(verdict);
    expect(device.compatValue).toBe(compat);
    expect(device.fatal).toBe(fatal);
  });

  test('one GPU whose NVML call fails is an ERROR; the others are judged', async () => {
    const gpus = fakeNode(3);
    gpus[1]!.failing.remappedRows = new NvmlError('nvmlDeviceGetRemappedRows', 15, 'GPU is lost');
    gpus[2]!.remapped = { correctable: 0, uncorrectable: 0, pending: true, failureOccurred: false };
    const outcome = await createRemappedCheck({ nvml: loaded(gpus) }).run(ctx);
    expect(verdicts(outcome)).toEqual(['0:PASS', '1:ERROR', '2:FAIL']);
    expect(outcome.devices[1]?.reason).toBe('nvmlDeviceGetRemappedRows: GPU is lost (15)');
    expect(outcome.samples).toContainEqual({
      metric: 'autopilot_gpu_row_remap_pending',
      labels: { gpu: '2', uuid: gpus[2]!.device.uuid },
      value: 1,
    });
  });
});

describe('gpupower', () => {
  test('names the reasons in a mask, unknown bits as other', () => {
    expect(activeReasons(0x88n)).toEqual(['hw_slowdown', 'hw_power_brake_slowdown']);
    expect(activeReasons(0x1n | 0x4n)).toEqual(['gpu_idle', 'sw_power_cap']);
    expect(activeReasons(0x1000n)).toEqual(['other']);
    expect(activeReasons(0n)).toEqual([]);
  });

  test.each([
    [0x88n, 'FAIL', 'power brake asserted (external, e.g. by the PSU or BMC) active', 1],
    [0x48n, 'FAIL', 'hardware thermal slowdown active', 1],
    [0x8n, 'FAIL', 'hardware slowdown active', 1],
    [0x20n, 'WARN', 'software thermal slowdown active', 0],
    [0x4n, 'PASS', 'normal: sw_power_cap', 0],
    [0n, 'PASS', 'no clock event reason active', 0],
  ] as const)('mask %s → %s', (mask, verdict, reason, compat) => {
    expect(judgeClockEvents('1', mask)).toMatchObject({ verdict, reason, compatValue: compat });
  });

  test('exports every reason of every GPU', async () => {
    const gpus = fakeNode(2);
    gpus[1]!.reasons = 0x88n;
    const outcome = await createGpuPowerCheck({ nvml: loaded(gpus) }).run(ctx);
    expect(verdicts(outcome)).toEqual(['0:PASS', '1:FAIL']);
    expect(outcome.samples).toHaveLength(18);
    expect(outcome.samples).toContainEqual({
      metric: 'autopilot_gpu_clock_event_reason',
      labels: { gpu: '1', uuid: gpus[1]!.device.uuid, reason: 'hw_power_brake_slowdown' },
      value: 1,
    });
  });
});

describe('ecc', () => {
  test.each([
    [
      { enabled: false, volatileUncorrected: undefined, retiredPagesPending: undefined },
      'SKIP',
      undefined,
    ],
    [{ enabled: true, volatileUncorrected: 0, retiredPagesPending: false }, 'PASS', undefined],
    [{ enabled: true, volatileUncorrected: 0, retiredPagesPending: true }, 'WARN', undefined],
    [{ enabled: true, volatileUncorrected: 2, retiredPagesPending: false }, 'FAIL', true],
  ] as const)('%j → %s', (state, verdict, fatal) => {
    const device = judgeEcc('5', state);
    expect(device.verdict).toBe(verdict);
    expect(device.fatal).toBe(fatal);
  });
});

describe('pciebw', () => {
  const healthyLink = { currentGeneration: 5, currentWidth: 16, maxGeneration: 5, maxWidth: 16 };
  const judgement = { thresholdGBps: 4, siblingMedianH2dGBps: undefined };

  test('link capacity per generation and width', () => {
    expect(linkCapacityGBps(5, 16)).toBeCloseTo(63.0, 1);
    expect(linkCapacityGBps(3, 8)).toBeCloseTo(7.88, 2);
    expect(linkCapacityGBps(9, 16)).toBeUndefined();
  });

  test('NVML and CUDA bus ids compare equal', () => {
    expect(busIdKey('00000000:1A:00.0')).toBe(busIdKey('0000:1a:00.0'));
    expect(busIdKey('1a:00.0')).toBe(busIdKey('00000000:1A:00.0'));
    expect(busIdKey('0000:1b:00.0')).not.toBe(busIdKey('0000:1a:00.0'));
    expect(busIdKey('nonsense')).toBeUndefined();
  });

  test.each([
    [
      'healthy',
      { h2dGBps: 55.1, d2hGBps: 55.3, link: healthyLink, busy: false },
      'PASS',
      'h2d 55.1 GB/s, d2h 55.3 GB/s on Gen5 x16',
    ],
    [
      'below --bw',
      {
        h2dGBps: 3.2,
        d2hGBps: 3.3,
        link: { ...healthyLink, currentGeneration: 1, currentWidth: 16 },
        busy: false,
      },
      'FAIL',
      'h2d 3.2 GB/s, d2h 3.3 GB/s: below the 4 GB/s threshold; Gen1 (max Gen5)',
    ],
    [
      'x8 Gen3 link',
      {
        h2dGBps: 6.5,
        d2hGBps: 6.6,
        link: { ...healthyLink, currentGeneration: 3, currentWidth: 8 },
        busy: false,
      },
      'FAIL',
      'h2d 6.5 GB/s, d2h 6.6 GB/s: link degraded under load: x8 link (max x16), Gen3 (max Gen5)',
    ],
    [
      'slow on a fine link',
      { h2dGBps: 40, d2hGBps: 41, link: healthyLink, busy: false },
      'WARN',
      'h2d 40 GB/s, d2h 41 GB/s: below 80 % of the 54.19 GB/s a Gen5 x16 link carries in practice; link fine but slow',
    ],
  ] as const)('%s → %s', (_, measurement, verdict, reason) => {
    expect(judgePcie('3', measurement, judgement)).toMatchObject({ verdict, reason });
  });

  test('a healthy Gen4 x16 link (24 GB/s) passes', () => {
    const gen4 = { currentGeneration: 4, currentWidth: 16, maxGeneration: 4, maxWidth: 16 };
    expect(
      judgePcie('0', { h2dGBps: 24, d2hGBps: 24.5, link: gen4, busy: false }, judgement).verdict,
    ).toBe('PASS');
  });

  test('on a GPU running jobs only the threshold and the link are judged', () => {
    expect(
      judgePcie('0', { h2dGBps: 20, d2hGBps: 21, link: healthyLink, busy: true }, judgement),
    ).toMatchObject({
      verdict: 'PASS',
      reason:
        'h2d 20 GB/s, d2h 21 GB/s while the GPU runs jobs: only the threshold and the link judged',
    });
    const degraded = { ...healthyLink, currentWidth: 8 };
    expect(
      judgePcie('0', { h2dGBps: 20, d2hGBps: 21, link: degraded, busy: true }, judgement).verdict,
    ).toBe('FAIL');
  });

  test('far below the node median warns even above 80 % of the link', () => {
    const device = judgePcie(
      '1',
      { h2dGBps: 51, d2hGBps: 52, link: healthyLink, busy: false },
      {
        thresholdGBps: 4,
        siblingMedianH2dGBps: 70,
      },
    );
    expect(device.verdict).toBe('WARN');
    expect(device.reason).toContain("far below the node's other GPUs (median h2d 70 GB/s)");
  });

  test('measures every GPU one after another, matched by bus id, and exports bandwidth and link', async () => {
    const gpus = fakeNode(8);
    gpus[3]!.link = { currentGeneration: 3, currentWidth: 8, maxGeneration: 5, maxWidth: 16 };
    gpus[3]!.h2dGBps = 6.6;
    gpus[3]!.d2hGBps = 6.7;
    const cuda = fakeCuda(gpus);
    const outcome = await createPcieBwCheck({
      nvml: loaded(gpus),
      cuda: { ok: true, probe: cuda },
      thresholdGBps: 4,
    }).run(ctx);
    expect(verdicts(outcome)).toEqual([
      '0:PASS',
      '1:PASS',
      '2:PASS',
      '3:FAIL',
      '4:PASS',
      '5:PASS',
      '6:PASS',
      '7:PASS',
    ]);
    expect(outcome.devices.map((d) => d.compatValue)).toEqual([
      55.1, 55.1, 55.1, 6.6, 55.1, 55.1, 55.1, 55.1,
    ]);
    // CUDA ordinals are the reverse of NVML indexes in the fake: GPU 0 is ordinal 7.
    expect(cuda.calls.slice(0, 4)).toEqual([
      'copy 7 h2d',
      'copy 7 d2h',
      'copy 6 h2d',
      'copy 6 d2h',
    ]);
    expect(outcome.samples).toContainEqual({
      metric: 'autopilot_gpu_pcie_link_width',
      labels: { gpu: '3', uuid: gpus[3]!.device.uuid, state: 'current' },
      value: 8,
    });
    expect(outcome.samples).toContainEqual({
      metric: 'autopilot_gpu_pcie_bandwidth_bytes_per_second',
      labels: { gpu: '0', uuid: gpus[0]!.device.uuid, direction: 'd2h' },
      value: 55.3e9,
    });
  });

  test('a MIG GPU and a GPU CUDA does not see are skipped; no CUDA probe skips the check', async () => {
    const gpus = fakeNode(3);
    gpus[0]!.mig = true;
    const visible = gpus.slice(0, 2);
    const outcome = await createPcieBwCheck({
      nvml: loaded(gpus),
      cuda: { ok: true, probe: fakeCuda(visible) },
      thresholdGBps: 4,
    }).run(ctx);
    expect(verdicts(outcome)).toEqual(['0:SKIP', '1:PASS', '2:SKIP']);
    expect(outcome.devices[2]?.reason).toBe(`CUDA does not see ${gpus[2]!.device.pciBusId}`);
    const noCuda = await createPcieBwCheck({
      nvml: loaded(gpus),
      cuda: { ok: false, reason: 'cannot load build/cuda/libautopilot-probe.so' },
      thresholdGBps: 4,
    }).run(ctx);
    expect(noCuda).toEqual({
      devices: [],
      verdict: 'SKIP',
      reason: 'cannot load build/cuda/libautopilot-probe.so',
    });
  });
});

describe('xid', () => {
  test('severity table: the critical XIDs are fatal, application XIDs are not health', () => {
    for (const xid of [48, 63, 64, 74, 79, 92, 94, 95])
      expect(classifyXid(xid).severity).toBe('fatal');
    for (const xid of [13, 31, 43, 45]) expect(classifyXid(xid).severity).toBe('application');
    expect(classifyXid(119).severity).toBe('warn');
    expect(classifyXid(9999)).toEqual({ severity: 'warn', meaning: 'XID not in the catalogue' });
  });

  test('the ledger counts per GPU and code and debounces repeats', () => {
    const ledger = createXidLedger({ debounceMs: 10_000 });
    expect(ledger.record({ gpuIndex: 1, xid: 79 }, T)).toBe(true);
    expect(ledger.record({ gpuIndex: 1, xid: 79 }, T + 5_000)).toBe(false);
    expect(ledger.record({ gpuIndex: 1, xid: 79 }, T + 14_000)).toBe(false); // still within 10 s of the last
    expect(ledger.record({ gpuIndex: 1, xid: 79 }, T + 30_000)).toBe(true);
    expect(ledger.record({ gpuIndex: 1, xid: 13 }, T + 30_000)).toBe(true);
    expect(ledger.tallies(1)).toEqual([
      { xid: 13, count: 1, firstAt: T + 30_000, lastAt: T + 30_000 },
      { xid: 79, count: 2, firstAt: T, lastAt: T + 30_000 },
    ]);
    expect(ledger.tallies(0)).toEqual([]);
  });

  test('judging: fatal is FAIL and fatal, warn-level within the window WARN, application PASS', () => {
    const tally = (xid: number, lastAt: number) => ({ xid, count: 1, firstAt: lastAt, lastAt });
    expect(judgeXids('0', [tally(79, T)], T + 10 * XID_WARN_WINDOW_MS)).toMatchObject({
      verdict: 'FAIL',
      fatal: true,
    });
    expect(judgeXids('0', [tally(119, T)], T + 1000)).toMatchObject({ verdict: 'WARN' });
    expect(judgeXids('0', [tally(119, T)], T + XID_WARN_WINDOW_MS)).toMatchObject({
      verdict: 'PASS',
    });
    expect(judgeXids('0', [tally(13, T)], T)).toMatchObject({ verdict: 'PASS' });
    expect(judgeXids('0', [], T)).toMatchObject({
      verdict: 'PASS',
      reason: 'no XID since the exporter started',
    });
  });

  test('the watcher feeds the ledger and asks for a run; stop ends the loop', async () => {
    const gpus = fakeNode(2);
    const nvml = fakeNvml(gpus);
    const ledger = createXidLedger({ debounceMs: 10_000 });
    let runs = 0;
    const watcher = createXidWatcher({
      nvml: { ok: true, nvml },
      ledger,
      clock: createSystemClock(),
      logger: silentLogger,
      onCounted: () => (runs += 1),
      waitMs: 10,
    });
    watcher.start();
    nvml.xids.push({ gpuIndex: 1, xid: 79 }, { gpuIndex: 1, xid: 79 });
    for (let i = 0; i < 50 && runs === 0; i++) await new Promise((r) => setTimeout(r, 5));
    await watcher.stop();
    expect(runs).toBe(1);
    expect(ledger.tallies(1)).toMatchObject([{ xid: 79, count: 1 }]);
    const outcome = await createXidCheck({
      nvml: { ok: true, nvml },
      ledger,
      now: () => Date.now(),
    }).run(ctx);
    expect(verdicts(outcome)).toEqual(['0:PASS', '1:FAIL']);
    expect(outcome.samples).toEqual([
      {
        metric: 'autopilot_gpu_xid_events_total',
        labels: { gpu: '1', uuid: gpus[1]!.device.uuid, xid: '79' },
        value: 1,
      },
    ]);
  });
});

describe('gpumem', () => {
  const clean = {
    hbmGBps: 4100,
    mismatches: 0,
    bytesTested: 1 << 30,
    fp32Tflops: 60,
    fp64Tflops: 30,
  };

  test.each([
    ['clean on an H200', 'NVIDIA H200', clean, 'PASS', undefined],
    ['pattern mismatches', 'NVIDIA H200', { ...clean, mismatches: 3 }, 'FAIL', true],
    ['HBM at 55 % of the datasheet', 'NVIDIA H200', { ...clean, hbmGBps: 2640 }, 'WARN', undefined],
    [
      'FP64 under half the datasheet',
      'NVIDIA H200',
      { ...clean, fp64Tflops: 10 },
      'FAIL',
      undefined,
    ],
    [
      'an unknown model is compared with the node only',
      'NVIDIA RTX A5000',
      { ...clean, hbmGBps: 700 },
      'PASS',
      undefined,
    ],
  ] as const)('%s → %s', (_, name, measurement, verdict, fatal) => {
    const device = judgeGpuMem('0', name, measurement, {});
    expect(device.verdict).toBe(verdict);
    expect(device.fatal).toBe(fatal);
  });

  test('below 85 % of the node median warns', () => {
    expect(
      judgeGpuMem('0', 'NVIDIA RTX A5000', { ...clean, fp32Tflops: 20 }, { fp32Tflops: 27 })
        .verdict,
    ).toBe('WARN');
  });

  test('does not run while a GPU has compute processes', async () => {
    const gpus = fakeNode(2);
    gpus[1]!.processes = 2;
    const outcome = await createGpuMemCheck({
      nvml: loaded(gpus),
      cuda: { ok: true, probe: fakeCuda(gpus) },
    }).run(ctx);
    expect(outcome).toEqual({
      devices: [],
      verdict: 'SKIP',
      reason: 'GPUs in use, not tested: GPU 1 (2 compute processes)',
    });
  });

  test('judges every idle GPU and exports its figures in base units', async () => {
    const gpus = fakeNode(4);
    gpus[2]!.mismatches = 8;
    const check = createGpuMemCheck({
      nvml: loaded(gpus),
      cuda: { ok: true, probe: fakeCuda(gpus) },
    });
    expect(check.exclusive).toBe(true);
    const outcome = await check.run(ctx);
    expect(verdicts(outcome)).toEqual(['0:PASS', '1:PASS', '2:FAIL', '3:PASS']);
    expect(outcome.samples).toContainEqual({
      metric: 'autopilot_gpu_fp64_flops',
      labels: { gpu: '0', uuid: gpus[0]!.device.uuid },
      value: 30e12,
    });
  });

  test('HBM is measured over smaller buffers when 1 GiB does not fit, and errors other than that stay errors', async () => {
    const gpus = fakeNode(1);
    const probe = fakeCuda(gpus);
    const sizes: number[] = [];
    const small = {
      ...probe,
      hbmBandwidth: (_o: number, bytes: number) => {
        sizes.push(bytes);
        return bytes > 64 * 1024 * 1024
          ? Promise.reject(new CudaError('ap_hbm_bandwidth', 2, 'out of memory'))
          : Promise.resolve(4000);
      },
    };
    const outcome = await createGpuMemCheck({
      nvml: loaded(gpus),
      cuda: { ok: true, probe: small },
    }).run(ctx);
    expect(sizes).toEqual([1 << 30, 1 << 28, 1 << 26]);
    expect(outcome.devices[0]?.verdict).toBe('PASS');
    const broken = {
      ...probe,
      hbmBandwidth: () => Promise.reject(new CudaError('ap_hbm_bandwidth', 999, 'unknown error')),
    };
    const failed = await createGpuMemCheck({
      nvml: loaded(gpus),
      cuda: { ok: true, probe: broken },
    }).run(ctx);
    expect(failed.devices[0]).toMatchObject({
      verdict: 'ERROR',
      reason: 'ap_hbm_bandwidth: unknown error (999)',
    });
  });

  test('an uncorrectable ECC error during the test is the finding (fatal FAIL); other failures are ERROR', () => {
    expect(
      judgeCudaFailure(
        '1',
        new CudaError('ap_memory_pattern', 214, 'uncorrectable ECC error encountered'),
      ),
    ).toMatchObject({
      verdict: 'FAIL',
      fatal: true,
      compatValue: 1,
    });
    expect(judgeCudaFailure('1', new CudaError('ap_flops', 999, 'unknown error')).verdict).toBe(
      'ERROR',
    );
  });

  test('a MIG GPU is skipped before its processes are asked for', async () => {
    const gpus = fakeNode(2);
    gpus[0]!.mig = true;
    gpus[0]!.failing.computeProcessCount = new NvmlError(
      'nvmlDeviceGetComputeRunningProcesses_v3',
      4,
      'Insufficient Permissions',
    );
    const outcome = await createGpuMemCheck({
      nvml: loaded(gpus),
      cuda: { ok: true, probe: fakeCuda(gpus) },
    }).run(ctx);
    expect(verdicts(outcome)).toEqual(['0:SKIP', '1:PASS']);
  });
});

describe('xid listener', () => {
  test('while the listener fails, the xid check is ERROR instead of claiming there was no XID', async () => {
    const ledger = createXidLedger({ debounceMs: 0 });
    const check = createXidCheck({ nvml: loaded(fakeNode(1)), ledger, now: () => T });
    ledger.setListenerFailure('nvmlEventSetWait_v2: Unknown Error (999)');
    expect(await check.run(ctx)).toEqual({
      devices: [],
      verdict: 'ERROR',
      reason: 'the XID listener is failing: nvmlEventSetWait_v2: Unknown Error (999)',
    });
    ledger.setListenerFailure(undefined);
    expect(verdicts(await check.run(ctx))).toEqual(['0:PASS']);
  });

  test('a wait stuck in the driver past XID_WAIT_STUCK_MS is ERROR too; a wait in time is not', async () => {
    const ledger = createXidLedger({ debounceMs: 0 });
    const check = createXidCheck({ nvml: loaded(fakeNode(1)), ledger, now: () => T });
    ledger.setWaitingSince(T - XID_WAIT_STUCK_MS);
    expect(verdicts(await check.run(ctx))).toEqual(['0:PASS']);
    ledger.setWaitingSince(T - 42_000);
    expect(await check.run(ctx)).toEqual({
      devices: [],
      verdict: 'ERROR',
      reason:
        'the XID listener is failing: nvmlEventSetWait_v2 has not returned for 42 s (a wait lasts 1 s): the driver may be hung',
    });
    ledger.setWaitingSince(undefined);
    expect(verdicts(await check.run(ctx))).toEqual(['0:PASS']);
  });
});

describe('xid acknowledge', () => {
  test('a fatal XID carries the time it happened, so an acknowledge after it holds', () => {
    const device = judgeXids(
      '0',
      [{ xid: 79, count: 1, firstAt: T, lastAt: T + 5 }],
      T + 1_000_000,
    );
    expect(device.observedAt).toBe(T + 5);
  });
});
