/**
 * What every GPU check shares: turning "no NVML here" into SKIP, reading the GPU list once per
 * run, isolating a failure to the GPU it happened on, and the GPU identity labels of samples.
 */

import {
  CudaError,
  type CudaProbe,
  type CudaProbeLoad,
  type GpuDevice,
  type Nvml,
  type NvmlLoad,
  type ProcessCount,
} from '../native/ports.js';
import type { Check, CheckOutcome, CheckRun, DeviceResult, Evidence, Sample } from './check.js';
import { formatCheckLevelText } from './text.js';
import type { SampleMetricName } from '../metrics/catalogue.js';

/**
 * Runs `body` with NVML and the GPU list, or says SKIP when there is no NVML or no GPU. Every
 * device result of a GPU then carries the GPU's identity (gpuIdentity).
 */
export async function withGpus(
  nvml: NvmlLoad,
  body: (nvml: Nvml, gpus: readonly GpuDevice[]) => Promise<CheckOutcome>,
): Promise<CheckOutcome> {
  if (!nvml.ok) return { devices: [], verdict: 'SKIP', reason: nvml.reason };
  const gpus = await nvml.nvml.devices();
  if (gpus.length === 0) return { devices: [], verdict: 'SKIP', reason: 'NVML sees no GPU' };
  return withIdentity(await body(nvml.nvml, gpus), gpus);
}

/**
 * What names a GPU beyond its index, which the driver may change across reboots: the UUID, the
 * board serial an RMA asks for ('' where the board has none) and the PCI bus id, in NVML's form,
 * which dcgm-exporter's pci_bus_id label also uses. /metrics exports them as autopilot_gpu_info.
 */
export function gpuIdentity(gpu: GpuDevice): Evidence {
  return { uuid: gpu.uuid, serial: gpu.serial, pciBusId: gpu.pciBusId };
}

/** Every check names GPUs by index; the identity is added here once, for all of them. */
function withIdentity(outcome: CheckOutcome, gpus: readonly GpuDevice[]): CheckOutcome {
  const byId = new Map(gpus.map((gpu) => [String(gpu.index), gpu]));
  const devices = outcome.devices.map((device) => {
    const gpu = byId.get(device.id);
    return gpu === undefined
      ? device
      : { ...device, evidence: { ...device.evidence, ...gpuIdentity(gpu) } };
  });
  return { ...outcome, devices };
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

/** The first line of a run that tested something, where the check has no words of its own. */
function briefing(textPrefix: string): string {
  const subject = textPrefix.replace(/[[\]]/g, '').trim();
  return `${textPrefix} Briefings completed. Continue with ${subject} evaluation.`;
}

/**
 * The fields every GPU check shares: one device per GPU, no parameters, and Autopilot's text block:
 * the briefing line, `<prefix> SUCCESS|FAIL`, `Host  <node>`, the vector of compatibility values
 * on the very next line (scripts read the line after `Host`), then a line per GPU. A run that
 * tested no GPU (every one SKIP or ERROR) is Autopilot's `ABORT` line instead, never SUCCESS.
 */
export function gpuCheckBase(
  textPrefix: string,
  /** Autopilot's own first line, word for word, where Autopilot had the check. */
  briefingLine: string = briefing(textPrefix),
): Pick<Check, 'deviceKind' | 'parseParams' | 'formatText'> {
  return {
    deviceKind: 'gpu',
    parseParams: () => ({}),
    formatText: (run: CheckRun, nodeName: string) => {
      const perGpu = run.devices.map((d) => `GPU ${d.id}: ${d.verdict} ${d.reason}`);
      const tested = run.devices.some((d) => d.verdict !== 'SKIP' && d.verdict !== 'ERROR');
      if (!tested) {
        return formatCheckLevelText(textPrefix, run) + perGpu.map((l) => `${l}\n`).join('');
      }
      const failing = run.devices.some((d) => d.verdict === 'FAIL');
      const lines = [
        briefingLine,
        `${textPrefix} ${failing ? 'FAIL' : 'SUCCESS'}`,
        `Host  ${nodeName}`,
        run.devices
          .map((d) => (d.compatValue === undefined ? 'N/A' : String(d.compatValue)))
          .join(' '),
        ...perGpu,
      ];
      return `${lines.join('\n')}\n`;
    },
  };
}

/** withGpus for the checks that only read NVML: each GPU judged from what `read` returns. */
export function readEachGpu(
  nvml: NvmlLoad,
  read: (
    nvml: Nvml,
    gpu: GpuDevice,
  ) => Promise<{ readonly device: DeviceResult; readonly samples?: readonly Sample[] }>,
): Promise<CheckOutcome> {
  return withGpus(nvml, (loaded, gpus) => judgeEach(gpus, (gpu) => read(loaded, gpu)));
}

/** withGpus for the checks that also need the CUDA probe, which say SKIP without it. */
export function withGpusAndCuda(
  nvml: NvmlLoad,
  cuda: CudaProbeLoad,
  body: (nvml: Nvml, cuda: CudaProbe, gpus: readonly GpuDevice[]) => Promise<CheckOutcome>,
): Promise<CheckOutcome> {
  return withGpus(nvml, (loaded, gpus) =>
    cuda.ok
      ? body(loaded, cuda.probe, gpus)
      : Promise.resolve({ devices: [], verdict: 'SKIP', reason: cuda.reason }),
  );
}

/**
 * NVML's bus id ("00000000:06:00.0", an 8-digit domain) as CUDA writes it ("0000:06:00.0",
 * cudaDeviceGetPCIBusId's 4-hex-digit domain), the form cudaDeviceGetByPCIBusId surely reads back.
 * Undefined when it is no bus id (NVML gave none).
 */
export function cudaBusId(busId: string): string | undefined {
  const match = /^(?:([0-9a-f]+):)?([0-9a-f]+):([0-9a-f]+)\.([0-9a-f]+)$/i.exec(busId.trim());
  if (match === null) return undefined;
  const [domain, bus, device, fn] = [match[1] ?? '0', match[2]!, match[3]!, match[4]!].map((part) =>
    parseInt(part, 16).toString(16).toUpperCase(),
  );
  return `${domain!.padStart(4, '0')}:${bus!.padStart(2, '0')}:${device!.padStart(2, '0')}.${fn!}`;
}

/**
 * The CUDA ordinal of an NVML GPU, matched by PCI address, never by position: CUDA orders devices
 * fastest first unless told otherwise and NVML in the driver's order. Undefined when CUDA does not
 * see the GPU. One lookup of this GPU's bus id alone (cudaDeviceGetByPCIBusId), so no other GPU is
 * named to CUDA; it reads the device table the driver builds at initialisation and creates no
 * context, which the runtime creates only at cudaSetDevice or the first call that needs one (CUDA
 * Runtime API, "Interactions with the CUDA Driver API").
 */
export async function cudaOrdinalOf(cuda: CudaProbe, gpu: GpuDevice): Promise<number | undefined> {
  const busId = cudaBusId(gpu.pciBusId);
  return busId === undefined ? undefined : cuda.deviceByBusId(busId);
}

/**
 * CUDA answers "no device" (errors 35 and 100) when there is no driver, or when the driver is older
 * than the probe's CUDA runtime needs; when NVML sees GPUs, it is the second. The runtime is the
 * toolkit's that built the library (deploy/Dockerfile's CUDA_VERSION, 12.8 in the image), so both
 * majors' minimum drivers are named (CUDA minor version compatibility: R525 for 12.x, R580 for 13.x).
 */
export function noCudaDevice(nvmlGpus: number): string {
  return `CUDA sees no device while NVML sees ${nvmlGpus} GPUs: the driver may be older than the probe library's CUDA runtime needs (R525 or newer for CUDA 12, as in the image; R580 or newer for CUDA 13)`;
}

/** A measurement that failed: ERROR with the error's message. */
export function failedMeasurement(id: string, error: unknown): DeviceResult {
  return {
    id,
    verdict: 'ERROR',
    reason: error instanceof Error ? error.message : String(error),
    evidence: {},
  };
}

/** Why a GPU must not be measured now, or undefined. */
async function blocker(nvml: Nvml, gpu: GpuDevice): Promise<string | undefined> {
  if (await nvml.migEnabled(gpu.index)) return 'MIG is enabled on this GPU';
  const occupancy = await occupancyOf(nvml, gpu.index);
  return occupancy.state === 'idle' ? undefined : occupancy.reason;
}

/** cudaErrorDevicesUnavailable: EXCLUSIVE_PROCESS mode and another process holds the GPU. */
const CUDA_ERROR_DEVICES_UNAVAILABLE = 46;

function heldReason(error: CudaError): string {
  return `${error.message}: another process holds the GPU in EXCLUSIVE_PROCESS mode`;
}

function skipped(id: string, reason: string): DeviceResult {
  return { id, verdict: 'SKIP', reason, evidence: {} };
}

export interface CudaMeasurements<M> {
  /** What was measured, by NVML index. */
  readonly measured: ReadonlyMap<number, M>;
  /** GPUs judged already: SKIP (CUDA does not reach them, MIG) or a failed measurement. */
  readonly settled: ReadonlyMap<number, DeviceResult>;
}

/**
 * Measures the GPUs that CUDA reaches, one at a time in NVML order: GPUs behind one PCIe switch
 * would otherwise share its uplink, and a GPU's figures are only comparable with its siblings' when
 * each was measured alone. SKIP, before any CUDA call that names it (not even its ordinal is looked
 * up): a GPU in MIG mode or not known to be idle (a measurement creates a context, about 0.5 GiB of
 * HBM, which can push a job out of memory). Each other GPU's ordinal comes from its own bus-id
 * lookup just before it is measured; SKIP when CUDA does not see it. A GPU another process holds in
 * EXCLUSIVE_PROCESS mode is SKIP too; another failed measurement is judged by `onFailure`.
 * Undefined when CUDA sees no device at all (counting devices names none).
 */
export async function measureEachGpu<M>(
  nvml: Nvml,
  cuda: CudaProbe,
  gpus: readonly GpuDevice[],
  measure: (gpu: GpuDevice, ordinal: number) => Promise<M>,
  onFailure: (id: string, error: unknown) => DeviceResult = failedMeasurement,
): Promise<CudaMeasurements<M> | undefined> {
  if ((await cuda.deviceCount()) === 0) return undefined;
  const measured = new Map<number, M>();
  const settled = new Map<number, DeviceResult>();
  for (const gpu of gpus) {
    const id = String(gpu.index);
    try {
      // Judged here, not once for all GPUs up front: a job may start while others are measured.
      const why = await blocker(nvml, gpu);
      if (why !== undefined) {
        settled.set(gpu.index, skipped(id, why));
        continue;
      }
      const ordinal = await cudaOrdinalOf(cuda, gpu);
      if (ordinal === undefined)
        settled.set(gpu.index, skipped(id, `CUDA does not see ${gpu.pciBusId}`));
      else measured.set(gpu.index, await measure(gpu, ordinal));
    } catch (error) {
      const held = error instanceof CudaError && error.code === CUDA_ERROR_DEVICES_UNAVAILABLE;
      settled.set(gpu.index, held ? skipped(id, heldReason(error)) : onFailure(id, error));
    }
  }
  return { measured, settled };
}

/** The median of the values, when there are at least `min` of them to compare. */
export function medianOf(values: readonly number[], min = 3): number | undefined {
  if (values.length < min) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** A GPU as the busy-GPU policy reads it: idle only when NVML counts no compute process. */
export type Occupancy =
  { readonly state: 'idle' } | { readonly state: 'busy' | 'unknown'; readonly reason: string };

/**
 * Never rejects: a count NVML cannot give, for whatever reason, is "not known to be idle", so the
 * work that would create a CUDA context or load the GPU is skipped, never an exception.
 */
export async function occupancyOf(nvml: Nvml, index: number): Promise<Occupancy> {
  let count: ProcessCount;
  try {
    count = await nvml.computeProcessCount(index);
  } catch (error) {
    count = { known: false, reason: error instanceof Error ? error.message : String(error) };
  }
  if (!count.known) return { state: 'unknown', reason: `process count unknown: ${count.reason}` };
  if (count.count > 0) return { state: 'busy', reason: `${count.count} compute processes` };
  return { state: 'idle' };
}

/** The GPUs not known to be idle, as "GPU 3 (2 compute processes)", and whether one is unknown. */
export interface NotIdle {
  readonly gpus: readonly string[];
  readonly unknown: boolean;
}

export async function notIdleGpus(nvml: Nvml, gpus: readonly GpuDevice[]): Promise<NotIdle> {
  const listed: string[] = [];
  let unknown = false;
  for (const gpu of gpus) {
    const occupancy = await occupancyOf(nvml, gpu.index);
    if (occupancy.state === 'idle') continue;
    listed.push(`GPU ${gpu.index} (${occupancy.reason})`);
    unknown ||= occupancy.state === 'unknown';
  }
  return { gpus: listed, unknown };
}

/** notIdleGpus over every GPU NVML sees; none without NVML. */
export async function gpusNotKnownIdle(nvml: NvmlLoad): Promise<NotIdle> {
  if (!nvml.ok) return { gpus: [], unknown: false };
  return notIdleGpus(nvml.nvml, await nvml.nvml.devices());
}

/** "GPUs in use", or "GPUs in use or not known to be idle" when a count is unknown. */
export function notIdleSubject(notIdle: NotIdle): string {
  return notIdle.unknown ? 'GPUs in use or not known to be idle' : 'GPUs in use';
}
