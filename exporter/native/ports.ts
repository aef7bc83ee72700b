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
  /**
   * The board serial printed on its tag (nvmlDeviceGetSerial), what an RMA asks for; '' where the
   * board has none to give (consumer GPUs answer NOT_SUPPORTED).
   */
  readonly serial: string;
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
  /**
   * Uncorrected (double-bit) errors since the driver loaded (NVML_VOLATILE_ECC); undefined when ECC
   * is off or unsupported. Without persistence mode the driver unloads when its last client ends,
   * so this count starts again at every compute application (nvml.h, nvmlEccCounterType_t).
   */
  readonly volatileUncorrected: number | undefined;
  /** Uncorrected errors over the GPU's lifetime (NVML_AGGREGATE_ECC); undefined as above. */
  readonly aggregateUncorrected: number | undefined;
  /** Pages waiting to be retired at the next reset; undefined when unsupported (Ampere and newer). */
  readonly retiredPagesPending: boolean | undefined;
}

/** nvmlValueType_t, by name: how a field's 8-byte value is to be read. */
export const NVML_VALUE_TYPES = [
  'double',
  'unsigned int',
  'unsigned long',
  'unsigned long long',
  'signed long long',
  'signed int',
  'unsigned short',
] as const;
export type NvmlValueType = (typeof NVML_VALUE_TYPES)[number];

/**
 * One entry of nvmlDeviceGetFieldValues: the value, typed as the driver says, or the NVML code the
 * field answered (NVML_ERROR_NOT_SUPPORTED where the driver does not have it). Integers of 64 bits
 * are bigints, the others numbers.
 */
export type FieldValue =
  | { readonly ok: true; readonly type: NvmlValueType; readonly value: number | bigint }
  | { readonly ok: false; readonly code: number };

/** How many compute processes a GPU runs, or why that is not known. */
export type ProcessCount =
  | { readonly known: true; readonly count: number }
  | { readonly known: false; readonly reason: string };

export interface XidEvent {
  readonly gpuIndex: number;
  readonly xid: number;
}

/**
 * nvmlNvLinkErrorCounter_t 0-3 (NVML_NVLINK_ERROR_DL_REPLAY, _RECOVERY, _CRC_FLIT, _CRC_DATA), in
 * that order, by the names the metrics use.
 */
export const NVLINK_COUNTERS = ['replay', 'recovery', 'crc_flit', 'crc_data'] as const;
export type NvLinkCounter = (typeof NVLINK_COUNTERS)[number];

export interface NvLinkState {
  readonly link: number;
  /** nvmlDeviceGetNvLinkState answered NVML_FEATURE_ENABLED. */
  readonly active: boolean;
  /**
   * NVML's raw counts since the driver loaded or the counters were last reset; a counter the link
   * answers NOT_SUPPORTED for is absent.
   */
  readonly errors: Readonly<Partial<Record<NvLinkCounter, number>>>;
}

/** A GPU's NVLinks, or why it has none to read (NOT_SUPPORTED: no NVLink on this GPU). */
export type NvLinks =
  | { readonly supported: true; readonly links: readonly NvLinkState[] }
  | { readonly supported: false; readonly reason: string };

/**
 * NVML's fabric probe of a GPU on an NVSwitch system (nvmlGpuFabricInfo_v3_t and its elders), or
 * why there is none: the driver lacks the functions, or the GPU answers NOT_SUPPORTED.
 */
export type GpuFabric =
  | { readonly supported: false; readonly reason: string }
  | {
      readonly supported: true;
      /** NVML_GPU_FABRIC_STATE_*: 0 not supported, 1 not started, 2 in progress, 3 completed. */
      readonly state: number;
      /** The probe's nvmlReturn_t; meaningful only once state is completed (nvml.h). */
      readonly status: number;
      /** NVML_GPU_FABRIC_HEALTH_SUMMARY_* (v3 only); undefined from v2 and the legacy function. */
      readonly healthSummary: number | undefined;
      /** The function and structure version that answered, for the evidence. */
      readonly source: string;
    };

/** NVML as the checks use it. Methods reject with NvmlError. */
export interface Nvml {
  driverVersion(): Promise<string>;
  devices(): Promise<readonly GpuDevice[]>;
  /**
   * Rejects with NvmlError code NVML_ERROR_NOT_SUPPORTED where the platform does not expose the link
   * (vGPU guests, some hosts): the caller then has no link to judge, which is not a GPU fault.
   */
  pcieLink(index: number): Promise<PcieLinkState>;
  /** Undefined when the GPU has no row remapping (before Ampere) or reports NOT_SUPPORTED (MIG). */
  remappedRows(index: number): Promise<RemappedRows | undefined>;
  /**
   * Current clock event reasons (bit mask, nvmlClocksEventReason*). Falls back to the older
   * nvmlDeviceGetCurrentClocksThrottleReasons, same bits, on drivers before R535.
   */
  clockEventReasons(index: number): Promise<bigint>;
  /**
   * nvmlDeviceGetFieldValues for the NVML_FI_* ids given, one answer per id in their order: what a
   * check that needs a field or two reads, with no binding of its own. Every entry answers
   * NVML_ERROR_NOT_SUPPORTED where the library lacks the function or the whole call is unsupported;
   * rejects for other errors of the call.
   */
  fieldValues(index: number, fieldIds: readonly number[]): Promise<readonly FieldValue[]>;
  ecc(index: number): Promise<EccState>;
  /**
   * Compute processes on the GPU (host PIDs, so only the count is meaningful in a pod), or unknown:
   * in MIG mode, or when NVML answers NO_PERMISSION. Rejects only for other NVML errors.
   */
  computeProcessCount(index: number): Promise<ProcessCount>;
  /**
   * The host NUMA node nearest the GPU (nvmlDeviceGetMemoryAffinity), where its pinned host buffers
   * belong; undefined when NVML cannot say (NOT_SUPPORTED, or no node in the answer).
   */
  numaNode(index: number): Promise<number | undefined>;
  /** MIG mode currently enabled; false when the GPU does not support MIG. */
  migEnabled(index: number): Promise<boolean>;
  /**
   * The GPU's NVLinks (as many as NVML_FI_DEV_NVLINK_LINK_COUNT says, else those of the
   * NVML_NVLINK_MAX_LINKS that answer): the state of each and its four error counters. Unsupported
   * where the GPU has no NVLink; rejects for other NVML errors.
   */
  nvLinks(index: number): Promise<NvLinks>;
  /**
   * The fabric probe: nvmlDeviceGetGpuFabricInfoV with a v3 structure, then v2, then the legacy
   * nvmlDeviceGetGpuFabricInfo; unsupported where the driver has none of them or the GPU answers
   * NOT_SUPPORTED. Rejects for other NVML errors.
   */
  gpuFabric(index: number): Promise<GpuFabric>;
  /**
   * Creates the XID event set when there is none, and registers for XID critical errors every GPU
   * not yet registered on it; resolves the GPUs still not registered, by NVML index, each with the
   * NVML error that kept it out. Calling it again retries those GPUs, except one whose registration
   * answered NVML_ERROR_UNKNOWN: that answer spoils the set, which is then freed and built again, so
   * such a GPU is retried only after a pause that doubles from 2 s to at most 60 s, and stays among
   * the GPUs not registered meanwhile. Not concurrent with the wait.
   */
  listenXidEvents(): Promise<ReadonlyMap<number, string>>;
  /**
   * Waits up to timeoutMs for XID critical-error events of the registered GPUs (listenXidEvents
   * first when there is no event set); resolves [] when none came. Not to be called concurrently
   * with itself. On NVML_ERROR_UNKNOWN the event set is freed and created again before it rejects.
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

/** nvmlReturn_t for a query this GPU or platform does not answer. */
export const NVML_ERROR_NOT_SUPPORTED = 3;

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

/** Where a copy's pinned host buffer lay. */
export type HostPlacement =
  | { readonly bound: true; readonly node: number }
  | { readonly bound: false; readonly node: number | undefined; readonly reason: string };

export interface CopyResult {
  readonly gbps: number;
  readonly placement: HostPlacement;
}

/** The CUDA probe library (cuda/), one call per whole measurement. Methods reject with CudaError. */
export interface CudaProbe {
  /** Devices CUDA sees; 0 when there is no driver or no device (CUDA errors 35 and 100). */
  deviceCount(): Promise<number>;
  /**
   * "0000:06:00.0" (CUDA's 4-hex-digit domain) of an ordinal. The checks do not use it: it names
   * the ordinal, so asking it of every device would touch the busy ones too (deviceByBusId).
   */
  pciBusId(device: number): Promise<string>;
  /**
   * The CUDA ordinal of the device at a PCI bus id ("0000:06:00.0"), undefined when CUDA knows no
   * device there (hidden by CUDA_VISIBLE_DEVICES, or gone). A device-table query: no context.
   * CUDA orders devices fastest first and NVML in the driver's order, so the checks match them by
   * bus id, one GPU at a time, just before measuring it; a malformed bus id rejects.
   */
  deviceByBusId(busId: string): Promise<number | undefined>;
  /**
   * Pinned host memory to or from the device: GB/s (10^9 bytes per second). With `numaNode`, the
   * host buffer is bound to that NUMA node when the kernel and CUDA allow it; `placement` says.
   */
  copyBandwidth(
    device: number,
    direction: CopyDirection,
    bytes: number,
    repetitions: number,
    numaNode?: number,
  ): Promise<CopyResult>;
  /** Device-to-device copy through HBM: GB/s counting bytes read plus bytes written. */
  hbmBandwidth(device: number, bytes: number, repetitions: number): Promise<number>;
  /** Writes and checks patterns over `fraction` of free device memory. */
  memoryPattern(
    device: number,
    fraction: number,
  ): Promise<{ readonly mismatches: number; readonly bytesTested: number }>;
  /** Arithmetic throughput in TFLOPS (10^12 floating-point operations per second). */
  flops(device: number, precision: 32 | 64): Promise<number>;
  /**
   * Whether device `src` can access device `dst`'s memory directly (cudaDeviceCanAccessPeer), for
   * two distinct ordinals. A device-table query: no context.
   */
  canAccessPeer(src: number, dst: number): Promise<boolean>;
  /**
   * Unidirectional peer copy from `src` to `dst` with peer access enabled: GB/s (10^9 bytes per
   * second); undefined when `src` cannot access `dst` (no context is created then).
   */
  p2pBandwidth(
    src: number,
    dst: number,
    bytes: number,
    repetitions: number,
  ): Promise<number | undefined>;
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
