/**
 * What every GPU check shares: turning "no NVML here" into SKIP, reading the GPU list once per
 * run, isolating a failure to the GPU it happened on, and the GPU identity labels of samples.
 */

import type { CudaProbe, GpuDevice, Nvml, NvmlLoad } from '../native/ports.js';
import type { CheckOutcome, DeviceResult, Sample } from './check.js';
import type { SampleMetricName } from '../metrics/catalogue.js';

/** Runs `body` with NVML and the GPU list, or says SKIP when there is no NVML or no GPU. */
export async function withGpus(
  nvml: NvmlLoad,
  body: (nvml: Nvml, gpus: readonly GpuDevice[]) => Promise<CheckOutcome>,
): Promise<CheckOutcome> {
  if (!nvml.ok) return { devices: [], verdict: 'SKIP', reason: nvml.reason };
  const gpus = await nvml.nvml.devices();
  if (gpus.length === 0) return { devices: [], verdict: 'SKIP', reason: 'NVML sees no GPU' };
  return body(nvml.nvml, gpus);
}

/**
 * Judges every GPU; an exception on one GPU (an NVML error, a lost GPU) becomes that GPU's
 * ERROR and the others are still judged.
 */
export async function judgeEach(
  gpus: readonly GpuDevice[],
  judge: (
    gpu: GpuDevice,
  ) => Promise<{ readonly device: DeviceResult; readonly samples?: readonly Sample[] }>,
): Promise<CheckOutcome> {
  // All GPUs at once: the NVML binding bounds how many calls really run in parallel.
  const judged = await Promise.all(
    gpus.map((gpu) =>
      judge(gpu).catch((error: unknown) => ({
        device: {
          id: String(gpu.index),
          verdict: 'ERROR' as const,
          reason: error instanceof Error ? error.message : String(error),
          evidence: { uuid: gpu.uuid },
        },
        samples: [],
      })),
    ),
  );
  return {
    devices: judged.map((j) => j.device),
    samples: judged.flatMap((j) => j.samples ?? []),
  };
}

/** A sample labelled with the GPU's index and UUID (the UUID survives re-enumeration). */
export function gpuSample(
  metric: SampleMetricName,
  gpu: GpuDevice,
  value: number,
  labels: Readonly<Record<string, string>> = {},
): Sample {
  return { metric, labels: { gpu: String(gpu.index), uuid: gpu.uuid, ...labels }, value };
}

/** The Autopilot text block of a GPU check: one line per GPU, the verdict token, the last-line vector. */
export function formatGpuText(
  prefix: string,
  nodeName: string,
  devices: readonly DeviceResult[],
  vectorValue: (device: DeviceResult) => string,
): string {
  const failing = devices.some((d) => d.verdict === 'FAIL');
  const lines = [
    `${prefix} ${failing ? 'FAIL' : 'SUCCESS'}`,
    `Host  ${nodeName}`,
    ...devices.map((d) => `GPU ${d.id}: ${d.verdict} ${d.reason}`),
    devices.map(vectorValue).join(' '),
  ];
  return `${lines.join('\n')}\n`;
}

/** "00000000:06:00.0" (NVML) and "0000:06:00.0" (CUDA) name the same device. */
export function busIdKey(busId: string): string | undefined {
  const match = /^(?:([0-9a-f]+):)?([0-9a-f]+):([0-9a-f]+)\.([0-9a-f]+)$/i.exec(busId.trim());
  if (match === null) return undefined;
  return [match[1] ?? '0', match[2]!, match[3]!, match[4]!]
    .map((part) => parseInt(part, 16))
    .join(':');
}

/**
 * CUDA ordinals by bus id. CUDA orders devices fastest first unless told otherwise and NVML in the
 * driver's order, so the two are matched by PCI address, never by position.
 */
export async function cudaOrdinals(cuda: CudaProbe): Promise<Map<string, number>> {
  const ordinals = new Map<string, number>();
  const count = await cuda.deviceCount();
  for (let ordinal = 0; ordinal < count; ordinal++) {
    const key = busIdKey(await cuda.pciBusId(ordinal));
    if (key !== undefined) ordinals.set(key, ordinal);
  }
  return ordinals;
}
