import { describe, expect, test } from '@jest/globals';
import type { CheckOutcome } from '../../exporter/checks/check.js';
import {
  createGpuCountCheck,
  judgeGpuCount,
  type ExpectedGpus,
} from '../../exporter/checks/gpucount.js';
import { expectedGpusOfNode } from '../../exporter/cluster/expected-gpus.js';
import type { NodeInfo } from '../../exporter/k8s/ports.js';
import { silentLogger } from '../../exporter/log.js';
import { NvmlError, type NvmlLoad } from '../../exporter/native/ports.js';
import { fakeNode, fakeNvml, type FakeGpu } from '../fakes/gpu.js';

const ctx = { signal: new AbortController().signal, logger: silentLogger, params: {} };
const loaded = (gpus: FakeGpu[]): NvmlLoad => ({ ok: true, nvml: fakeNvml(gpus) });
const noNvml: NvmlLoad = { ok: false, reason: 'cannot load libnvidia-ml.so.1: not found' };
const EIGHT: ExpectedGpus = { count: 8, source: 'AUTOPILOT_EXPECTED_GPUS' };

function node(fields: Partial<NodeInfo>): NodeInfo {
  return {
    name: 'gpu-1',
    labels: { check: 'gpucount' },
    annotations: {},
    allocatableGpus: undefined,
    ...fields,
  };
}

describe('judgeGpuCount', () => {
  test('fewer GPUs than expected is a fatal FAIL naming both counts', () => {
    const devices = fakeNode(7).map((g) => g.device);
    expect(judgeGpuCount(EIGHT, { devices, missingBusIds: [] })).toMatchObject({
      id: '',
      verdict: 'FAIL',
      fatal: true,
      reason: 'expected 8 GPUs (AUTOPILOT_EXPECTED_GPUS), NVML sees 7',
      evidence: { expected: 8, visible: 7, nvmlLoaded: true },
    });
  });

  test('NVML that cannot load where GPUs are expected is a FAIL that does not evict', () => {
    const device = judgeGpuCount(EIGHT, {
      devices: undefined,
      nvmlProblem: noNvml.ok ? '' : noNvml.reason,
      missingBusIds: [],
    });
    expect(device).toMatchObject({ verdict: 'FAIL', evidence: { visible: 0, nvmlLoaded: false } });
    expect(device.fatal).toBeUndefined();
    expect(device.reason).toBe(
      'expected 8 GPUs (AUTOPILOT_EXPECTED_GPUS), NVML cannot load: cannot load libnvidia-ml.so.1: not found',
    );
  });

  test('a listed GPU that cannot tell its identity is not counted as visible', () => {
    const devices = fakeNode(8).map((g) => g.device);
    devices[3] = { index: 3, uuid: '', name: '', pciBusId: '', serial: '' };
    const device = judgeGpuCount(EIGHT, { devices, missingBusIds: [] });
    expect(device.verdict).toBe('FAIL');
    expect(device.reason).toBe(
      'expected 8 GPUs (AUTOPILOT_EXPECTED_GPUS), NVML sees 7 (listed but not answering: GPU 3)',
    );
  });

  test.each([
    [{ count: 0, source: 'AUTOPILOT_EXPECTED_GPUS' }, 0, 'SKIP'],
    [{ count: 4, source: 'node label nvidia.com/gpu.count' }, 8, 'WARN'],
    [EIGHT, 8, 'PASS'],
    [{ count: undefined, source: 'no label' }, 8, 'SKIP'],
    [{ count: undefined, source: 'no label' }, 0, 'SKIP'],
  ] as const)('%j with %d visible → %s', (expected, seen, verdict) => {
    const devices = fakeNode(seen).map((g) => g.device);
    expect(judgeGpuCount(expected, { devices, missingBusIds: [] }).verdict).toBe(verdict);
  });

  test('none visible where 8 are expected is a FAIL that does not evict, like no NVML', () => {
    const device = judgeGpuCount(EIGHT, { devices: [], missingBusIds: [] });
    expect(device).toMatchObject({
      verdict: 'FAIL',
      reason: 'expected 8 GPUs (AUTOPILOT_EXPECTED_GPUS), NVML sees none',
    });
    expect(device.fatal).toBeUndefined();
  });

  test('no GPU expected and no NVML keeps SKIP', () => {
    const device = judgeGpuCount(
      { count: 0, source: 'AUTOPILOT_EXPECTED_GPUS' },
      { devices: undefined, nvmlProblem: 'no driver', missingBusIds: [] },
    );
    expect(device.verdict).toBe('SKIP');
  });
});

describe('the gpucount check', () => {
  async function run(deps: Parameters<typeof createGpuCountCheck>[0]): Promise<CheckOutcome> {
    return createGpuCountCheck(deps).run(ctx);
  }

  test('AUTOPILOT_EXPECTED_GPUS=8 with 7 visible fails, and exports both counts', async () => {
    const outcome = await run({ nvml: loaded(fakeNode(7)), configured: 8 });
    expect(outcome.reason).toBe('expected 8 GPUs (AUTOPILOT_EXPECTED_GPUS), NVML sees 7');
    expect(outcome.devices.map((d) => d.verdict)).toEqual(['FAIL']);
    expect(outcome.samples).toEqual([
      { metric: 'autopilot_gpus_visible', labels: { check: 'gpucount' }, value: 7 },
      { metric: 'autopilot_gpus_expected', labels: { check: 'gpucount' }, value: 8 },
    ]);
  });

  test('a GPU lost since NVML listed it is missing, named by its bus id', async () => {
    const gpus = fakeNode(8);
    gpus[5]!.failing.clockEventReasons = new NvmlError(
      'nvmlDeviceGetCurrentClocksEventReasons',
      15,
      'GPU is lost',
    );
    const outcome = await run({ nvml: loaded(gpus), configured: 8 });
    expect(outcome.devices[0]).toMatchObject({ verdict: 'FAIL', fatal: true });
    expect(outcome.reason).toBe(
      `expected 8 GPUs (AUTOPILOT_EXPECTED_GPUS), NVML sees 7 (listed but not answering: GPU 5 (${gpus[5]!.device.pciBusId}))`,
    );
  });

  test('another NVML error on the read says nothing about the GPU being there', async () => {
    const gpus = fakeNode(8);
    gpus[5]!.failing.clockEventReasons = new NvmlError(
      'nvmlDeviceGetCurrentClocksEventReasons',
      3,
      'Not Supported',
    );
    const outcome = await run({ nvml: loaded(gpus), configured: 8 });
    expect(outcome.devices[0]?.verdict).toBe('PASS');
  });

  test('NVML that cannot list its GPUs is an NVML problem, not a crash', async () => {
    const nvml = fakeNvml(fakeNode(8));
    const broken: NvmlLoad = {
      ok: true,
      nvml: {
        ...nvml,
        devices: () => Promise.reject(new Error('nvmlDeviceGetCount_v2: Unknown Error (999)')),
      },
    };
    const outcome = await run({ nvml: broken, configured: 8 });
    expect(outcome.devices[0]).toMatchObject({ verdict: 'FAIL' });
    expect(outcome.devices[0]?.fatal).toBeUndefined();
    expect(outcome.reason).toBe(
      'expected 8 GPUs (AUTOPILOT_EXPECTED_GPUS), NVML cannot load: NVML cannot list the GPUs: nvmlDeviceGetCount_v2: Unknown Error (999)',
    );
  });

  test('the setting wins over what the node says', async () => {
    const fromCluster = (): Promise<ExpectedGpus> =>
      Promise.resolve({ count: 4, source: 'node label nvidia.com/gpu.count' });
    const outcome = await run({ nvml: loaded(fakeNode(8)), configured: 8, fromCluster });
    expect(outcome.devices[0]?.verdict).toBe('PASS');
    expect(outcome.reason).toBe('NVML sees 8 GPUs, as expected (AUTOPILOT_EXPECTED_GPUS)');
  });

  test('the node’s count applies without the setting; a failed read is no expectation', async () => {
    const fromNode = (): Promise<ExpectedGpus> =>
      Promise.resolve({ count: 8, source: 'node capacity nvidia.com/gpu' });
    const failing = (): Promise<ExpectedGpus> => Promise.reject(new Error('read node gpu-1: 503'));
    expect(
      (await run({ nvml: noNvml, configured: undefined, fromCluster: fromNode })).devices[0],
    ).toMatchObject({ verdict: 'FAIL' });
    const unknown = await run({ nvml: noNvml, configured: undefined, fromCluster: failing });
    expect(unknown.verdict).toBe('SKIP');
    expect(unknown.reason).toBe(
      'cannot load libnvidia-ml.so.1: not found; no expected count: the node could not be read: read node gpu-1: 503',
    );
  });

  test('a GPU that drops out of NVML’s list is named by bus id, even with no expected count', async () => {
    const gpus = fakeNode(8);
    const check = createGpuCountCheck({ nvml: loaded(gpus), configured: undefined });
    expect((await check.run(ctx)).verdict).toBe('SKIP');
    const lost = gpus.splice(5, 1)[0]!;
    const outcome = await check.run(ctx);
    expect(outcome.devices[0]).toMatchObject({ verdict: 'FAIL', fatal: true });
    expect(outcome.reason).toBe(
      `NVML sees 7 GPUs, fewer than earlier in this process (missing: ${lost.device.pciBusId})`,
    );
  });

  test('standalone without the setting and without NVML says SKIP, as before', async () => {
    const outcome = await run({ nvml: noNvml, configured: undefined });
    expect(outcome.verdict).toBe('SKIP');
    expect(outcome.samples).toEqual([
      { metric: 'autopilot_gpus_visible', labels: { check: 'gpucount' }, value: 0 },
    ]);
  });
});

describe('expectedGpusOfNode', () => {
  test('the GFD count label is the physical count, also under time-slicing', () => {
    expect(
      expectedGpusOfNode(
        node({
          labels: {
            'nvidia.com/gpu.count': '8',
            'nvidia.com/gpu.replicas': '10',
            'nvidia.com/gpu.sharing-strategy': 'time-slicing',
          },
          capacityGpus: 80,
        }),
      ),
    ).toEqual({ count: 8, source: 'node label nvidia.com/gpu.count' });
  });

  test('the capacity counts when nothing says GPUs are shared or split', () => {
    expect(expectedGpusOfNode(node({ capacityGpus: 8 }))).toEqual({
      count: 8,
      source: 'node capacity nvidia.com/gpu',
    });
  });

  test.each([
    [{ labels: { 'nvidia.com/mig.strategy': 'single', 'nvidia.com/gpu.count': '56' } }, /single/],
    [{ labels: { 'nvidia.com/mig.strategy': 'mixed' }, capacityGpus: 2 }, /mixed/],
    [{ capacityGpus: 8, capacitySharedGpus: 80 }, /nvidia\.com\/gpu\.shared/],
    [{ labels: { 'nvidia.com/gpu.replicas': '4' }, capacityGpus: 32 }, /replicas/],
    [{ labels: { 'nvidia.com/gpu.sharing-strategy': 'mps' }, capacityGpus: 16 }, /mps/],
    [{}, /neither/],
  ] as const)('%j is not trusted', (fields, why) => {
    const expected = expectedGpusOfNode(node(fields));
    expect(expected.count).toBeUndefined();
    expect(expected.source).toMatch(why);
  });
});
