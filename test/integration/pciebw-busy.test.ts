/**
 * pciebw over both C fakes, through the real bindings: the fake libnvidia-ml (procs=, link=) and
 * the real probe.cu over the fake CUDA runtime, whose call log shows which ordinals CUDA touched.
 * The fakes number GPUs alike (CUDA ordinal i has NVML index i's bus id). Jest's globalSetup
 * builds both.
 */
import { describe, expect, test } from '@jest/globals';
import { createPcieBwCheck } from '../../exporter/checks/pciebw.js';
import { silentLogger } from '../../exporter/log.js';
import { loadCudaProbe } from '../../exporter/native/cuda-probe.js';
import { FAKE_PROBE, fakeCudaControl, openFakeNvmlEachTest } from '../fakes/native-fakes.js';

const openNvml = openFakeNvmlEachTest();
const {
  setUnavailable: cudaUnavailable,
  setDevices: cudaDevices,
  callsOn,
  contexts,
} = fakeCudaControl();

const probe = loadCudaProbe(FAKE_PROBE);
const ctx = { signal: new AbortController().signal, logger: silentLogger, params: {} };

async function run(scenario: string) {
  return createPcieBwCheck({
    nvml: await openNvml(scenario),
    cuda: probe,
    thresholdGBps: 4,
    copyBytes: 1 << 20,
    repetitions: 2,
  }).run(ctx);
}

describe('pciebw on busy GPUs, over the C fakes', () => {
  test('a GPU with compute processes gets no CUDA call at all, no context, and SKIP with the count', async () => {
    const outcome = await run('gpus=4;procs=2:2');
    expect(outcome.devices.map((d) => d.verdict)).toEqual(['PASS', 'PASS', 'SKIP', 'PASS']);
    expect(outcome.devices[2]?.reason).toBe('2 compute processes');
    // Not even a bus-id query: the log has no call of any kind with ordinal 2.
    expect(Number(callsOn(null, 2))).toBe(0);
    expect(Number(contexts(2))).toBe(0);
    // An idle GPU: its own lookup by bus id, then one cudaSetDevice per direction.
    expect(Number(callsOn('cudaDeviceGetByPCIBusId', 1))).toBe(1);
    expect(Number(callsOn('cudaSetDevice', 1))).toBe(2);
    // No lookup came back empty, and no ordinal was asked for its bus id.
    expect(Number(callsOn('cudaDeviceGetByPCIBusId', -1))).toBe(0);
    for (let device = 0; device < 4; device++) {
      expect(Number(callsOn('cudaDeviceGetPCIBusId', device))).toBe(0);
    }
  });

  test('a GPU in MIG mode (process count unknown) gets no CUDA call either', async () => {
    const outcome = await run('gpus=2;mig=1');
    expect(outcome.devices[1]).toMatchObject({ verdict: 'SKIP' });
    expect(Number(callsOn(null, 1))).toBe(0);
    expect(Number(contexts(1))).toBe(0);
  });

  test('a GPU CUDA does not see (its bus id unknown to CUDA) is SKIP, the others measured', async () => {
    expect(Number(cudaDevices(3))).toBe(0); // NVML lists 4 GPUs, CUDA only the first 3
    const outcome = await run('gpus=4');
    expect(outcome.devices.map((d) => d.verdict)).toEqual(['PASS', 'PASS', 'PASS', 'SKIP']);
    expect(outcome.devices[3]?.reason).toBe('CUDA does not see 00000000:61:00.0');
    expect(Number(callsOn('cudaDeviceGetByPCIBusId', -1))).toBe(1); // the lookup that found none
    expect(Number(callsOn(null, 3))).toBe(0);
  });

  test('NOT_SUPPORTED for the link: idle GPUs still measured, a busy one SKIP, no link metrics', async () => {
    const outcome = await run('gpus=4;procs=2:2;notsupported=nvmlDeviceGetMaxPcieLinkWidth');
    expect(outcome.devices.map((d) => d.verdict)).toEqual(['PASS', 'PASS', 'SKIP', 'PASS']);
    expect(outcome.devices[2]?.reason).toBe('2 compute processes');
    expect(outcome.samples?.some((s) => s.metric.startsWith('autopilot_gpu_pcie_link'))).toBe(
      false,
    );
    expect(Number(contexts(2))).toBe(0);
  });

  test('a GPU another process holds in EXCLUSIVE_PROCESS mode (error 46) is SKIP, and no device is reset', async () => {
    expect(Number(cudaUnavailable(1, 1))).toBe(0);
    const outcome = await run('gpus=2');
    expect(outcome.devices[1]).toMatchObject({
      verdict: 'SKIP',
      reason:
        'ap_copy_bandwidth: CUDA-capable device(s) is/are busy or unavailable (46): another process holds the GPU in EXCLUSIVE_PROCESS mode',
    });
    expect(Number(contexts(1))).toBe(0);
    expect(Number(callsOn('cudaDeviceReset', 1))).toBe(0);
  });
});
