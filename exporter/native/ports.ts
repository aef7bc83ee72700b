/**
 * The GPU ports: what the checks need from NVML and from the CUDA probe library, as plain async
 * interfaces. Types only: the koffi bindings that implement them live beside this file
 * (nvml.ts, cuda-probe.ts) and are the only importers of koffi. Every method runs its native work
 * off the event loop, so a hung driver call never blocks the HTTP servers; a method may never
 * settle in that case, which the check runner turns into ERROR at the check's deadline.
 */

export interface GpuDevice {
  /** NVML index: the order nvidia-smi shows, which Autopilot's deviceid uses. */
  readonly index: number;
  readonly uuid: string;
  readonly name: string;
  /** NVML's 8-hex-digit-domain form, "00000000:06:00.0". */
  readonly pciBusId: string;
}

export interface PcieLinkState {
  readonly currentGeneration: number;
  readonly currentWidth: number;
  /** The most the GPU and the slot together allow (nvmlDeviceGetMaxPcieLink*). */
  readonly maxGeneration: number;
  readonly maxWidth: number;
}

export interface RemappedRows {
  readonly correctable: number;
  readonly uncorrectable: number;
  /** A remap waits for a GPU reset. */
  readonly pending: boolean;
  /** A remap failed at some point: an RMA criterion. */
  readonly failureOccurred: boolean;
}

export interface EccState {
  /** ECC mode currently enabled. */
  readonly enabled: boolean;
  /** Uncorrected (double-bit) errors since the driver loaded; undefined when ECC is off or unsupported. */
  readonly volatileUncorrected: number | undefined;
  /** Pages waiting to be retired at the next reset; undefined when unsupported (Ampere and newer). */
  readonly retiredPagesPending: boolean | undefined;
}

export interface XidEvent {
  readonly gpuIndex: number;
  readonly xid: number;
}

/** NVML as the checks use it. Methods reject with NvmlError. */
export interface Nvml {
  driverVersion(): Promise<string>;
  devices(): Promise<readonly GpuDevice[]>;
  pcieLink(index: number): Promise<PcieLinkState>;
  /** Undefined when the GPU has no row remapping (before Ampere) or reports NOT_SUPPORTED (MIG). */
  remappedRows(index: number): Promise<RemappedRows | undefined>;
  /**
   * Current clock event reasons (bit mask, nvmlClocksEventReason*). Falls back to the older
   * nvmlDeviceGetCurrentClocksThrottleReasons, same bits, on drivers before R535.
   */
  clockEventReasons(index: number): Promise<bigint>;
  ecc(index: number): Promise<EccState>;
  /** Number of compute processes on the GPU (host PIDs, so only the count is meaningful in a pod). */
  computeProcessCount(index: number): Promise<number>;
  /** MIG mode currently enabled; false when the GPU does not support MIG. */
  migEnabled(index: number): Promise<boolean>;
  /**
   * Waits up to timeoutMs for XID critical-error events of every GPU, registering for them on the
   * first call; resolves [] when none came. Not to be called concurrently with itself.
   */
  waitXidEvents(timeoutMs: number): Promise<readonly XidEvent[]>;
  /** Frees the event set and shuts NVML down. */
  close(): Promise<void>;
  /** Driver calls started and not yet returned: after a clean shutdown, only hung ones. */
  callsInFlight(): number;
}

/** Why NVML cannot be used here (no library, no driver): GPU checks then say SKIP with it. */
export type NvmlLoad =
  { readonly ok: true; readonly nvml: Nvml } | { readonly ok: false; readonly reason: string };

/** An NVML call that did not return NVML_SUCCESS. */
export class NvmlError extends Error {
  constructor(
    readonly fn: string,
    readonly code: number,
    readonly description: string,
  ) {
    super(`${fn}: ${description} (${code})`);
    this.name = 'NvmlError';
  }
}

export type CopyDirection = 'h2d' | 'd2h';

/** The CUDA probe library (cuda/), one call per whole measurement. Methods reject with CudaError. */
export interface CudaProbe {
  /** Devices CUDA sees; 0 when there is no driver or no device (CUDA errors 35 and 100). */
  deviceCount(): Promise<number>;
  /** "0000:06:00.0" (CUDA's 4-hex-digit domain), to match CUDA ordinals with NVML indexes. */
  pciBusId(device: number): Promise<string>;
  /** Pinned host memory to or from the device: GB/s (10^9 bytes per second). */
  copyBandwidth(
    device: number,
    direction: CopyDirection,
    bytes: number,
    repetitions: number,
  ): Promise<number>;
  /** Device-to-device copy through HBM: GB/s counting bytes read plus bytes written. */
  hbmBandwidth(device: number, bytes: number, repetitions: number): Promise<number>;
  /** Writes and checks patterns over `fraction` of free device memory. */
  memoryPattern(
    device: number,
    fraction: number,
  ): Promise<{ readonly mismatches: number; readonly bytesTested: number }>;
  /** Arithmetic throughput in TFLOPS (10^12 floating-point operations per second). */
  flops(device: number, precision: 32 | 64): Promise<number>;
  /** Probe calls started and not yet returned: after a clean shutdown, only hung ones. */
  callsInFlight(): number;
}

export type CudaProbeLoad =
  | { readonly ok: true; readonly probe: CudaProbe }
  | { readonly ok: false; readonly reason: string };

/** A CUDA runtime call that failed inside the probe library. */
export class CudaError extends Error {
  constructor(
    readonly fn: string,
    readonly code: number,
    readonly description: string,
  ) {
    super(`${fn}: ${description} (${code})`);
    this.name = 'CudaError';
  }
}
