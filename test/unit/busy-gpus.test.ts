/**
 * The busy-GPU policy where it gates work that loads the GPUs: the dcgm wrapper's test for levels
 * 2 to 4, gpumem, and the idle test of post-flight and the deep check. A GPU whose process count
 * NVML cannot give (MIG mode, NO_PERMISSION, an NVML error) is not known to be idle: the work is
 * skipped with the reason, never an exception.
 */
import { describe, expect, test } from '@jest/globals';
import { DEEP_CHECK_JOB_PREFIX } from '../../exporter/cluster/deep-check.js';
import { gpusBusy } from '../../exporter/cluster/gpu-idle.js';
import { occupancyOf } from '../../exporter/checks/gpu-common.js';
import { CHECK_NAMES, createChecks } from '../../exporter/checks/index.js';
import type { CommonPorts } from '../../exporter/checks/module.js';
import { createGpuMemCheck } from '../../exporter/checks/gpumem.js';
import { parseConfig } from '../../exporter/config/config.js';
import { silentLogger } from '../../exporter/log.js';
import { NvmlError, type NvmlLoad } from '../../exporter/native/ports.js';
import { fakeCuda, fakeNode, fakeNvml, type FakeGpu } from '../fakes/gpu.js';
import { FakeKube } from '../fakes/kube.js';
import { FakeClock } from '../fakes/clock.js';

const NODE = 'gpu-node-1';
const DENIED = 'nvmlDeviceGetComputeRunningProcesses_v3: Insufficient Permissions (4)';
const ctx = (params: Record<string, string>) => ({
  signal: new AbortController().signal,
  logger: silentLogger,
  params,
});
const loaded = (gpus: FakeGpu[]): NvmlLoad => ({ ok: true, nvml: fakeNvml(gpus) });

/** Four GPUs: 1 runs two processes, 2 is in MIG mode, 3 answers NO_PERMISSION. */
function mixedNode(): FakeGpu[] {
  const gpus = fakeNode(4);
  gpus[1]!.processes = 2;
  gpus[2]!.mig = true;
  gpus[3]!.processesUnknown = DENIED;
  return gpus;
}

describe('occupancyOf', () => {
  test('idle, busy with the count, or unknown with why; an NVML error is unknown too', async () => {
    const gpus = mixedNode();
    gpus.push(fakeNode(5)[4]!);
    gpus[4]!.failing.computeProcessCount = new NvmlError(
      'nvmlDeviceGetComputeRunningProcesses_v3',
      15,
      'GPU is lost',
    );
    const nvml = fakeNvml(gpus);
    expect(await Promise.all([0, 1, 2, 3, 4].map((i) => occupancyOf(nvml, i)))).toEqual([
      { state: 'idle' },
      { state: 'busy', reason: '2 compute processes' },
      { state: 'unknown', reason: 'process count unknown: MIG is enabled' },
      { state: 'unknown', reason: `process count unknown: ${DENIED}` },
      {
        state: 'unknown',
        reason: 'process count unknown: nvmlDeviceGetComputeRunningProcesses_v3: GPU is lost (15)',
      },
    ]);
  });
});

describe('the idle test of post-flight and the deep check', () => {
  const busy = (nvml: NvmlLoad): Promise<string | undefined> =>
    gpusBusy({
      kube: new FakeKube().api,
      nvml,
      nodeName: NODE,
      ownJobPrefix: DEEP_CHECK_JOB_PREFIX,
    });

  test('a GPU whose count is unknown keeps the GPUs from being idle, named with why', async () => {
    await expect(busy(loaded(mixedNode()))).resolves.toBe(
      'GPUs in use or not known to be idle: GPU 1 (2 compute processes), GPU 2 (process count unknown: MIG is enabled), ' +
        `GPU 3 (process count unknown: ${DENIED})`,
    );
  });

  test('only known counts of zero are idle', async () => {
    await expect(busy(loaded(fakeNode(4)))).resolves.toBeUndefined();
  });
});

describe('gpumem', () => {
  test('a GPU not known to be idle skips the whole check, without any CUDA call', async () => {
    const gpus = fakeNode(3);
    gpus[2]!.processesUnknown = DENIED;
    const cuda = fakeCuda(gpus);
    const outcome = await createGpuMemCheck({
      nvml: loaded(gpus),
      cuda: { ok: true, probe: cuda },
    }).run(ctx({}));
    expect(outcome).toEqual({
      devices: [],
      verdict: 'SKIP',
      reason: `GPUs in use or not known to be idle, not tested: GPU 2 (process count unknown: ${DENIED})`,
    });
    expect(cuda.calls).toEqual([]); // not even a bus-id lookup
  });

  test('a MIG GPU is SKIP and no CUDA call names it; each idle GPU is looked up, then measured', async () => {
    const gpus = fakeNode(3);
    gpus[1]!.mig = true;
    const cuda = fakeCuda(gpus); // ordinals reversed: GPU 1 is ordinal 1, GPU 0 ordinal 2
    const outcome = await createGpuMemCheck({
      nvml: loaded(gpus),
      cuda: { ok: true, probe: cuda },
    }).run(ctx({}));
    expect(outcome.devices[1]).toMatchObject({
      verdict: 'SKIP',
      reason: 'MIG is enabled on this GPU',
    });
    expect(cuda.calls.filter((c) => c.split(' ').slice(0, 3).includes('1'))).toEqual([]);
    expect(cuda.calls.filter((c) => c.startsWith('bus id'))).toEqual(['bus id 2', 'bus id 0']);
    expect(cuda.calls.indexOf('bus id 0')).toBeGreaterThan(cuda.calls.indexOf('flops 2 64'));
  });
});

describe('dcgm levels 2 to 4', () => {
  function dcgm(nvml: NvmlLoad, ran: string[]) {
    const config = parseConfig({
      flags: new Map(),
      env: { NODE_NAME: NODE, PERIODIC_CHECKS: 'remapped' },
      hostname: NODE,
      knownChecks: CHECK_NAMES,
    });
    const ports: CommonPorts = {
      run: (command) => {
        ran.push([command.file, ...command.args].join(' '));
        return Promise.reject(new Error('dcgmi is not run in this test'));
      },
      nvml,
      cuda: { ok: false, reason: 'no probe' },
      clock: new FakeClock(0),
      logger: silentLogger,
      kube: undefined,
    };
    return createChecks(config, ports, { peers: () => [], runOnEvent: () => undefined }).get(
      'dcgm',
    )!;
  }

  test('a GPU whose count is unknown is a SKIP that says why, and dcgmi never starts', async () => {
    const ran: string[] = [];
    const run = await dcgm(loaded(mixedNode()), ran).run(ctx({ r: '3' }));
    expect(run).toEqual({
      devices: [],
      verdict: 'SKIP',
      reason:
        'GPUs in use or not known to be idle, not tested: GPU 1 (2 compute processes), GPU 2 (process count unknown: MIG is enabled), ' +
        `GPU 3 (process count unknown: ${DENIED})`,
    });
    expect(ran).toEqual([]);
  });
});
