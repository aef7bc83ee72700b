import { describe, expect, test } from '@jest/globals';
import {
  summariseOutcome,
  type Check,
  type CheckOutcome,
  type CheckRun,
} from '../../exporter/checks/check.js';
import { createEccCheck } from '../../exporter/checks/ecc.js';
import { cudaBusId } from '../../exporter/checks/gpu-common.js';
import { createGpuMemCheck, judgeCudaFailure, judgeGpuMem } from '../../exporter/checks/gpumem.js';
import {
  activeReasons,
  createGpuPowerCheck,
  judgeClockEvents,
} from '../../exporter/checks/gpupower.js';
import {
  createPcieBwCheck,
  judgePcie,
  linkCapacityGBps,
  type PcieGpu,
} from '../../exporter/checks/pciebw.js';
import { createRemappedCheck, judgeRemappedRows } from '../../exporter/checks/remapped.js';
import {
  classifyXid,
  createXidCheck,
  createXidLedger,
  judgeXids,
  XID_WAIT_STUCK_MS,
  XID_WARN_WINDOW_MS,
} from '../../exporter/checks/xid.js';
import { silentLogger } from '../../exporter/log.js';
import {
  CudaError,
  NvmlError,
  type CudaProbe,
  type CudaProbeLoad,
  type HostPlacement,
  type NvmlLoad,
} from '../../exporter/native/ports.js';
import { fakeCuda, fakeNode, fakeNvml, type FakeGpu } from '../fakes/gpu.js';
import { countingXidWatcher } from '../fakes/xid-watcher.js';

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

describe("the GPU checks' Autopilot text", () => {
  const run = (check: Check, outcome: CheckOutcome): CheckRun => ({
    check: check.name,
    trigger: 'api',
    params: {},
    startedAt: T,
    finishedAt: T,
    ...summariseOutcome(outcome),
    devices: outcome.devices,
    samples: [],
  });

  test('briefing, verdict, Host, the vector on the very next line, then a line per GPU', async () => {
    const gpus = fakeNode(3);
    gpus[1]!.remapped = { correctable: 0, uncorrectable: 1, pending: true, failureOccurred: false };
    const check = createRemappedCheck({ nvml: loaded(gpus) });
    const lines = check.formatText(run(check, await check.run(ctx)), 'node-a').split('\n');
    expect(lines.slice(0, 4)).toEqual([
      '[[ REMAPPED ROWS ]] Briefings completed. Continue with remapped rows evaluation.',
      '[[ REMAPPED ROWS ]] FAIL',
      'Host  node-a',
      '0 1 0',
    ]);
    expect(lines.slice(4, 7)).toEqual([
      expect.stringMatching(/^GPU 0: PASS /),
      expect.stringMatching(/^GPU 1: FAIL /),
      expect.stringMatching(/^GPU 2: PASS /),
    ]);
    expect(lines.slice(7)).toEqual(['']);
  });

  test.each([
    ['pciebw', '[[ PCIEBW ]] Briefings completed. Continue with PCIe Bandwidth evaluation.'],
    ['gpupower', '[[GPU POWER]] Briefings completed. Continue with power cap evaluation.'],
    ['ecc', '[[ ECC ]] Briefings completed. Continue with ECC evaluation.'],
  ])('%s opens with its briefing and SUCCESS on a healthy node', async (name, briefing) => {
    const gpus = fakeNode(2);
    const check = {
      pciebw: () =>
        createPcieBwCheck({
          nvml: loaded(gpus),
          cuda: { ok: true, probe: fakeCuda(gpus) },
          thresholdGBps: 4,
        }),
      gpupower: () => createGpuPowerCheck({ nvml: loaded(gpus), sleep: () => Promise.resolve() }),
      ecc: () => createEccCheck({ nvml: loaded(gpus) }),
    }[name]!();
    const lines = check.formatText(run(check, await check.run(ctx)), 'n').split('\n');
    expect(lines[0]).toBe(briefing);
    expect(lines[1]).toMatch(/ SUCCESS$/);
    expect(lines[2]).toBe('Host  n');
    expect(lines[3]).toMatch(/^\S+ \S+$/);
  });

  test('a check that cannot run prints SKIP with the reason and ABORT, never SUCCESS', async () => {
    const check = createRemappedCheck({ nvml: noNvml });
    expect(check.formatText(run(check, await check.run(ctx)), 'n')).toBe(
      '[[ REMAPPED ROWS ]] SKIP: cannot load libnvidia-ml.so.1: not found. ABORT\n',
    );
  });

  test('GPUs that were all skipped: ABORT, then why for each GPU, and no vector', async () => {
    const gpus = fakeNode(2);
    for (const gpu of gpus) gpu.processes = 1;
    const check = createPcieBwCheck({
      nvml: loaded(gpus),
      cuda: { ok: false, reason: 'no probe library' },
      thresholdGBps: 4,
    });
    const text = check.formatText(run(check, await check.run(ctx)), 'n');
    expect(text.split('\n')[0]).toMatch(/^\[\[ PCIEBW \]\] SKIP: .*ABORT$/);
    expect(text).not.toContain('SUCCESS');
    expect(text).not.toContain('Host');
    expect(text).toMatch(/^GPU 1: SKIP /m);
  });
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
    [0x88n, 'FAIL', 'power brake asserted (external, e.g. by the PSU or BMC) held', 1],
    [0x48n, 'FAIL', 'hardware thermal slowdown held', 1],
    [0x8n, 'FAIL', 'hardware slowdown held', 1],
    [0x20n, 'WARN', 'software thermal slowdown active', 0],
    [0x4n, 'PASS', 'normal: sw_power_cap', 0],
    [0n, 'PASS', 'no clock event reason active', 0],
  ] as const)('mask %s in both reads → %s', (mask, verdict, reason, compat) => {
    const reading = { mask, durations: { hwThermalNs: undefined, hwPowerBrakeNs: undefined } };
    const device = judgeClockEvents('1', { first: reading, second: reading, intervalMs: 100 });
    expect(device).toMatchObject({ verdict, compatValue: compat });
    expect(device.reason.startsWith(reason)).toBe(true);
  });

  test('exports every reason and the accumulated slowdown of every GPU', async () => {
    const gpus = fakeNode(2);
    gpus[1]!.reasons = 0x88n;
    const outcome = await createGpuPowerCheck({
      nvml: loaded(gpus),
      sleep: () => Promise.resolve(),
    }).run(ctx);
    expect(verdicts(outcome)).toEqual(['0:PASS', '1:FAIL']);
    expect(outcome.samples).toHaveLength(2 * (9 + 2));
    expect(outcome.samples).toContainEqual({
      metric: 'autopilot_gpu_clock_event_reason',
      labels: { gpu: '1', uuid: gpus[1]!.device.uuid, reason: 'hw_power_brake_slowdown' },
      value: 1,
    });
  });
});

describe('pciebw', () => {
  const healthyLink = { currentGeneration: 5, currentWidth: 16, maxGeneration: 5, maxWidth: 16 };
  const judgement = { thresholdGBps: 4, siblingMedianH2dGBps: undefined };
  const onNode = { bound: true, node: 0 } as const;
  const measured = (
    h2dGBps: number,
    d2hGBps: number,
    loadedLink = healthyLink,
    idleLink = healthyLink,
    placement: HostPlacement = onNode,
  ): PcieGpu => ({ idleLink, measured: { h2dGBps, d2hGBps, loadedLink, placement } });
  const pcie = (gpus: FakeGpu[], cuda: CudaProbeLoad): Check =>
    createPcieBwCheck({ nvml: loaded(gpus), cuda, thresholdGBps: 4 });
  const withProbe = (probe: CudaProbe): CudaProbeLoad => ({ ok: true, probe });
  const noProbe: CudaProbeLoad = { ok: false, reason: 'cannot load libautopilot-probe.so' };

  test('link capacity per generation and width', () => {
    expect(linkCapacityGBps(5, 16)).toBeCloseTo(63.0, 1);
    expect(linkCapacityGBps(3, 8)).toBeCloseTo(7.88, 2);
    expect(linkCapacityGBps(9, 16)).toBeUndefined();
  });

  test("NVML's bus ids are looked up in CUDA's own form", () => {
    expect(cudaBusId('00000000:1a:00.0')).toBe('0000:1A:00.0');
    expect(cudaBusId('1a:00.0')).toBe('0000:1A:00.0');
    expect(cudaBusId('00010000:C3:1F.7')).toBe('10000:C3:1F.7'); // a domain over 16 bits is kept
    expect(cudaBusId('nonsense')).toBeUndefined();
    expect(cudaBusId('')).toBeUndefined();
  });

  const gen3x8 = { ...healthyLink, currentGeneration: 3, currentWidth: 8 };
  test.each([
    ['healthy', measured(55.1, 55.3), 'PASS', 'h2d 55.1 GB/s, d2h 55.3 GB/s on Gen5 x16'],
    [
      'below --bw',
      measured(3.2, 3.3, { ...healthyLink, currentGeneration: 1 }),
      'FAIL',
      'h2d 3.2 GB/s, d2h 3.3 GB/s: below the 4 GB/s threshold; degraded (generation): Gen1 of Gen5 under load',
    ],
    [
      'x8 at idle, Gen3 under load',
      measured(6.5, 6.6, gen3x8, gen3x8),
      'FAIL',
      'degraded (width): x8 of x16; degraded (generation): Gen3 of Gen5 under load: h2d 6.5 GB/s, d2h 6.6 GB/s',
    ],
    [
      'Gen1 at idle only (power saving) is no finding',
      measured(55.1, 55.3, healthyLink, { ...healthyLink, currentGeneration: 1 }),
      'PASS',
      'h2d 55.1 GB/s, d2h 55.3 GB/s on Gen5 x16',
    ],
    [
      'slow on a fine link',
      measured(40, 41),
      'WARN',
      'h2d 40 GB/s, d2h 41 GB/s: below 80 % of the 54.19 GB/s a Gen5 x16 link carries in practice; link fine but slow',
    ],
    [
      'not measured, link fine',
      {
        idleLink: { ...healthyLink, currentGeneration: 1 },
        notMeasured: { id: '3', verdict: 'SKIP', reason: '2 compute processes', evidence: {} },
      },
      'SKIP',
      '2 compute processes',
    ],
    [
      'not measured, x8 at idle',
      {
        idleLink: gen3x8,
        notMeasured: { id: '3', verdict: 'SKIP', reason: '2 compute processes', evidence: {} },
      },
      'FAIL',
      'degraded (width): x8 of x16; bandwidth not measured: 2 compute processes',
    ],
  ] as const)('%s → %s', (_, gpu, verdict, reason) => {
    expect(judgePcie('3', gpu, judgement)).toMatchObject({ verdict, reason });
  });

  test('a slow copy from a buffer off the GPU NUMA node says why it was not placed', () => {
    const off = { bound: false, node: 1, reason: 'mbind to node 1 refused (EPERM)' } as const;
    const result = judgePcie('0', measured(40, 41, healthyLink, healthyLink, off), judgement);
    expect(result.reason).toContain(
      'link fine but slow (host buffer not placed: mbind to node 1 refused (EPERM))',
    );
    expect(result.evidence).toMatchObject({ numaNode: 1, hostBufferOnNode: false });
  });

  test('a healthy Gen4 x16 link (24 GB/s) passes', () => {
    const gen4 = { currentGeneration: 4, currentWidth: 16, maxGeneration: 4, maxWidth: 16 };
    expect(judgePcie('0', measured(24, 24.5, gen4, gen4), judgement).verdict).toBe('PASS');
  });

  test('far below the node median warns even above 80 % of the link', () => {
    const device = judgePcie('1', measured(51, 52), {
      thresholdGBps: 4,
      siblingMedianH2dGBps: 70,
    });
    expect(device.verdict).toBe('WARN');
    expect(device.reason).toContain("far below the node's other GPUs (median h2d 70 GB/s)");
  });

  test('measures every GPU one after another, matched by bus id, on its NUMA node', async () => {
    const gpus = fakeNode(8);
    gpus[3]!.link = { currentGeneration: 3, currentWidth: 8, maxGeneration: 5, maxWidth: 16 };
    gpus[3]!.h2dGBps = 6.6;
    gpus[3]!.d2hGBps = 6.7;
    gpus[6]!.numaNode = undefined;
    const cuda = fakeCuda(gpus);
    const outcome = await pcie(gpus, withProbe(cuda)).run(ctx);
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
    // CUDA ordinals are the reverse of NVML indexes in the fake: GPU 0 is ordinal 7. Each GPU's
    // ordinal is looked up by its bus id just before it is measured.
    expect(cuda.calls.slice(0, 6)).toEqual([
      'bus id 7',
      'copy 7 h2d node 0',
      'copy 7 d2h node 0',
      'bus id 6',
      'copy 6 h2d node 0',
      'copy 6 d2h node 0',
    ]);
    expect(cuda.calls).toContain('copy 3 h2d node 1'); // GPU 4, on the second socket
    expect(cuda.calls).toContain('copy 1 h2d node none'); // GPU 6: NVML gives no node
    expect(outcome.samples).toContainEqual({
      metric: 'autopilot_gpu_pcie_bandwidth_bytes_per_second',
      labels: { gpu: '0', uuid: gpus[0]!.device.uuid, direction: 'd2h' },
      value: 55.3e9,
    });
  });

  test('busy GPUs and GPUs not known to be idle get no CUDA call and say SKIP with why', async () => {
    const gpus = fakeNode(4);
    gpus[1]!.processes = 2;
    gpus[2]!.processesUnknown =
      'nvmlDeviceGetComputeRunningProcesses_v3: Insufficient Permissions (4)';
    gpus[3]!.failing.computeProcessCount = new NvmlError(
      'nvmlDeviceGetComputeRunningProcesses_v3',
      15,
      'GPU is lost',
    );
    const cuda = fakeCuda(gpus);
    const outcome = await pcie(gpus, withProbe(cuda)).run(ctx);
    expect(verdicts(outcome)).toEqual(['0:PASS', '1:SKIP', '2:SKIP', '3:SKIP']);
    expect(outcome.devices.map((d) => d.reason).slice(1)).toEqual([
      '2 compute processes',
      'process count unknown: nvmlDeviceGetComputeRunningProcesses_v3: Insufficient Permissions (4)',
      'process count unknown: nvmlDeviceGetComputeRunningProcesses_v3: GPU is lost (15)',
    ]);
    expect(outcome.devices[1]?.evidence).toMatchObject({ linkWidth: 16, maxLinkWidth: 16 });
    // GPU 0 is ordinal 3; GPUs 1, 2 and 3 (ordinals 2, 1, 0) get no call at all, not even the
    // lookup of their bus id.
    expect(cuda.calls).toEqual(['bus id 3', 'copy 3 h2d node 0', 'copy 3 d2h node 0']);
  });

  test('a busy GPU with a degraded width is FAIL, still without a CUDA call', async () => {
    const gpus = fakeNode(2);
    gpus[1]!.processes = 2;
    gpus[1]!.link = { currentGeneration: 5, currentWidth: 8, maxGeneration: 5, maxWidth: 16 };
    const cuda = fakeCuda(gpus);
    const outcome = await pcie(gpus, withProbe(cuda)).run(ctx);
    expect(outcome.devices[1]).toMatchObject({
      verdict: 'FAIL',
      reason: 'degraded (width): x8 of x16; bandwidth not measured: 2 compute processes',
    });
    // GPU 1 is ordinal 0: no call names it, only GPU 0 (ordinal 1) is looked up and measured.
    expect(cuda.calls).toEqual(['bus id 1', 'copy 1 h2d node 0', 'copy 1 d2h node 0']);
  });

  test('GPU 3 on Gen3 x8 of a Gen5 x16 part without the CUDA probe: link metrics, width FAIL, the rest SKIP', async () => {
    const gpus = fakeNode(8);
    gpus[3]!.link = { currentGeneration: 3, currentWidth: 8, maxGeneration: 5, maxWidth: 16 };
    const outcome = await pcie(gpus, noProbe).run(ctx);
    expect(outcome.devices[3]).toMatchObject({
      verdict: 'FAIL',
      reason:
        'degraded (width): x8 of x16; bandwidth not measured: cannot load libautopilot-probe.so',
      evidence: { linkGeneration: 3, linkWidth: 8, maxLinkGeneration: 5, maxLinkWidth: 16 },
    });
    expect(verdicts(outcome).filter((v) => v !== '3:FAIL')).toEqual(
      ['0', '1', '2', '4', '5', '6', '7'].map((id) => `${id}:SKIP`),
    );
    const sample = (metric: string, state: string) =>
      outcome.samples?.find(
        (s) => s.metric === metric && s.labels['gpu'] === '3' && s.labels['state'] === state,
      )?.value;
    expect(sample('autopilot_gpu_pcie_link_width', 'current')).toBe(8);
    expect(sample('autopilot_gpu_pcie_link_width', 'max')).toBe(16);
    expect(sample('autopilot_gpu_pcie_link_generation', 'current')).toBe(3);
    expect(sample('autopilot_gpu_pcie_link_generation', 'max')).toBe(5);
    expect(
      outcome.samples?.filter((s) => s.metric === 'autopilot_gpu_pcie_link_width'),
    ).toHaveLength(16);
    expect(outcome.samples?.some((s) => s.metric.includes('bandwidth'))).toBe(false);
  });

  test('error 46 (another process holds the GPU) is SKIP; other CUDA errors stay ERROR', async () => {
    const gpus = fakeNode(3);
    gpus[1]!.cudaFailure = new CudaError(
      'ap_copy_bandwidth',
      46,
      'CUDA-capable device(s) is/are busy or unavailable',
    );
    gpus[2]!.cudaFailure = new CudaError('ap_copy_bandwidth', 999, 'unknown error');
    const outcome = await pcie(gpus, withProbe(fakeCuda(gpus))).run(ctx);
    expect(verdicts(outcome)).toEqual(['0:PASS', '1:SKIP', '2:ERROR']);
    expect(outcome.devices[1]?.reason).toBe(
      'ap_copy_bandwidth: CUDA-capable device(s) is/are busy or unavailable (46): another process holds the GPU in EXCLUSIVE_PROCESS mode',
    );
  });

  test('a MIG GPU and a GPU CUDA does not see are skipped; CUDA seeing no device skips them all', async () => {
    const gpus = fakeNode(3);
    gpus[0]!.mig = true;
    const cuda = fakeCuda(gpus.slice(0, 2));
    const outcome = await pcie(gpus, withProbe(cuda)).run(ctx);
    expect(verdicts(outcome)).toEqual(['0:SKIP', '1:PASS', '2:SKIP']);
    expect(outcome.devices[2]?.reason).toBe(`CUDA does not see ${gpus[2]!.device.pciBusId}`);
    // GPU 0 (MIG, ordinal 1) is never looked up; GPU 2's lookup, in CUDA's form, finds nothing.
    expect(cuda.calls).toEqual([
      'bus id 0',
      'copy 0 h2d node 0',
      'copy 0 d2h node 0',
      `bus id none ${gpus[2]!.device.pciBusId.slice(4)}`,
    ]);
    const none = await pcie(gpus, withProbe(fakeCuda([]))).run(ctx);
    expect(verdicts(none)).toEqual(['0:SKIP', '1:SKIP', '2:SKIP']);
    expect(none.devices[0]?.reason).toMatch(/^CUDA sees no device while NVML sees 3 GPUs/);
  });

  test('NOT_SUPPORTED for the link (vGPU): no link judgement or metrics, the rest as before', async () => {
    const gpus = fakeNode(4);
    for (const gpu of gpus) {
      gpu.failing.pcieLink = new NvmlError('nvmlDeviceGetCurrPcieLinkWidth', 3, 'Not Supported');
    }
    gpus[1]!.processes = 2;
    gpus[2]!.mig = true;
    gpus[3]!.h2dGBps = 3;
    const cuda = fakeCuda(gpus);
    const outcome = await pcie(gpus, withProbe(cuda)).run(ctx);
    expect(verdicts(outcome)).toEqual(['0:PASS', '1:SKIP', '2:SKIP', '3:FAIL']);
    expect(outcome.devices.map((d) => d.reason)).toEqual([
      'h2d 55.1 GB/s, d2h 55.3 GB/s (link not reported by NVML)',
      '2 compute processes',
      'MIG is enabled on this GPU',
      'h2d 3 GB/s, d2h 55.3 GB/s: below the 4 GB/s threshold; link unknown (not reported by NVML)',
    ]);
    expect(outcome.devices[0]?.evidence).toMatchObject({ linkRead: 'not supported by NVML' });
    expect(outcome.devices[0]?.evidence).not.toHaveProperty('linkWidth');
    expect(outcome.samples?.filter((s) => s.metric.startsWith('autopilot_gpu_pcie_link'))).toEqual(
      [],
    );
    expect(
      outcome.samples?.filter((s) => s.metric === 'autopilot_gpu_pcie_bandwidth_bytes_per_second'),
    ).toHaveLength(4);
    const noneMeasured = await pcie(gpus, noProbe).run(ctx);
    expect(verdicts(noneMeasured)).toEqual(['0:SKIP', '1:SKIP', '2:SKIP', '3:SKIP']);
  });

  test('a GPU whose link NVML cannot read is ERROR and is not measured', async () => {
    const gpus = fakeNode(2);
    gpus[0]!.failing.pcieLink = new NvmlError('nvmlDeviceGetCurrPcieLinkWidth', 15, 'GPU is lost');
    const cuda = fakeCuda(gpus);
    const outcome = await pcie(gpus, withProbe(cuda)).run(ctx);
    expect(verdicts(outcome)).toEqual(['0:ERROR', '1:PASS']);
    expect(cuda.calls.some((c) => c.startsWith('copy 1 '))).toBe(false);
  });
});

describe('xid', () => {
  test('severity table: the critical XIDs are fatal, application XIDs are not health', () => {
    for (const xid of [48, 64, 74, 79, 95, 119, 120])
      expect(classifyXid(xid).severity).toBe('fatal');
    for (const xid of [13, 31, 43, 45]) expect(classifyXid(xid).severity).toBe('application');
    for (const xid of [63, 92, 94, 121]) expect(classifyXid(xid).severity).toBe('warn');
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
    expect(judgeXids('0', [tally(121, T)], T + 1000)).toMatchObject({ verdict: 'WARN' });
    expect(judgeXids('0', [tally(121, T)], T + XID_WARN_WINDOW_MS)).toMatchObject({
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
    const { watcher, changes } = countingXidWatcher(nvml, ledger, 10);
    watcher.start();
    nvml.xids.push({ gpuIndex: 1, xid: 79 }, { gpuIndex: 1, xid: 79 });
    for (let i = 0; i < 50 && changes() === 0; i++) await new Promise((r) => setTimeout(r, 5));
    await watcher.stop();
    expect(changes()).toBe(1);
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
