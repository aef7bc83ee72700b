/**
 * The koffi binding of the CUDA probe library (cuda/probe.cu): the CudaProbe port.
 *
 * Each probe function is one whole measurement in C (set device, allocate, time, free), because
 * koffi runs every `.async` call on whichever of its worker threads is free and CUDA's current
 * device is per thread. Every call here goes through `.async`, so a measurement that takes
 * seconds, or hangs in the driver, never blocks the event loop; a hung one simply never settles.
 *
 * Only primitive types appear in the prototypes: no named koffi type is declared, so loading the
 * library more than once (or two libraries) cannot collide in koffi's process-global type table.
 */
import { constants } from 'node:os';
import { resolve } from 'node:path';
import koffi from 'koffi';
import { CudaError } from './ports.js';
import type { CopyDirection, CudaProbe, CudaProbeLoad, HostPlacement } from './ports.js';

type LibraryHandle = ReturnType<typeof koffi.load>;
type NativeFunction = ReturnType<LibraryHandle['func']>;

/** The C ABI of cuda/probe.h, declared once here. */
const PROTOTYPES = {
  ap_device_count: 'int ap_device_count(_Out_ int *count)',
  ap_pci_bus_id: 'int ap_pci_bus_id(int device, _Out_ uint8_t *buf, int len)',
  ap_device_by_bus_id: 'int ap_device_by_bus_id(const char *bus_id, _Out_ int *device)',
  ap_copy_bandwidth:
    'int ap_copy_bandwidth(int device, int direction, size_t bytes, int repetitions, int numa_node, _Out_ double *gbps, _Out_ int *placement, _Out_ int *placement_error)',
  ap_hbm_bandwidth:
    'int ap_hbm_bandwidth(int device, size_t bytes, int repetitions, _Out_ double *gbps)',
  ap_memory_pattern:
    'int ap_memory_pattern(int device, double fraction, _Out_ unsigned long long *mismatches, _Out_ unsigned long long *bytes_tested)',
  ap_flops: 'int ap_flops(int device, int precision, _Out_ double *tflops)',
  ap_can_access_peer: 'int ap_can_access_peer(int src, int dst, _Out_ int *can)',
  ap_p2p_bandwidth:
    'int ap_p2p_bandwidth(int src, int dst, size_t bytes, int repetitions, _Out_ double *gbps)',
  ap_error_string: 'const char *ap_error_string(int code)',
} as const;

type ProbeFunction = keyof typeof PROTOTYPES;
type ProbeFunctions = Record<ProbeFunction, NativeFunction>;

const DIRECTIONS: Record<CopyDirection, number> = { h2d: 0, d2h: 1 };
/** cudaErrorInvalidValue: what the C side answers to bad arguments, answered here without a call. */
const INVALID_VALUE = 1;
/** cudaErrorInvalidDevice. */
const INVALID_DEVICE = 101;
/** probe.h's AP_NO_PEER_ACCESS: the pair has no peer access, an answer rather than an error. */
const NO_PEER_ACCESS = -1;
/** probe.h's AP_PLACEMENT_*: where ap_copy_bandwidth's host buffer came from. */
const PLACEMENT_BOUND = 1;
const PLACEMENT_OS_REFUSED = 2;
const PLACEMENT_CUDA_REFUSED = 3;
/** errno numbers by name, inverted: 1 → "EPERM". */
const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/** Pure: the placement the probe reported, in words. */
export function describePlacement(
  node: number | undefined,
  placement: number,
  error: number,
): HostPlacement {
  if (node === undefined) {
    return { bound: false, node, reason: 'no NUMA node known for this GPU' };
  }
  if (placement === PLACEMENT_BOUND) return { bound: true, node };
  if (placement === PLACEMENT_OS_REFUSED) {
    const name = ERRNO_NAMES.get(error) ?? `errno ${error}`;
    return { bound: false, node, reason: `mbind to node ${node} refused (${name})` };
  }
  if (placement === PLACEMENT_CUDA_REFUSED) {
    return { bound: false, node, reason: `cudaHostRegister refused (CUDA error ${error})` };
  }
  return { bound: false, node, reason: `unexpected placement ${placement}` };
}

/** cudaDeviceGetPCIBusId needs 13 bytes; room for longer domains. */
const BUS_ID_BYTES = 32;

/**
 * The forms cudaDeviceGetByPCIBusId accepts (CUDA Runtime API, Device Management):
 * "[domain]:[bus]:[device].[function]", "[domain]:[bus]:[device]", "[bus]:[device].[function]",
 * all hex.
 */
const BUS_ID =
  /^(?:[0-9a-f]+:[0-9a-f]+:[0-9a-f]+(?:\.[0-9a-f]+)?|[0-9a-f]+:[0-9a-f]+\.[0-9a-f]+)$/i;

/**
 * cudaDeviceGetByPCIBusId returns cudaSuccess, cudaErrorInvalidValue or cudaErrorInvalidDevice
 * (CUDA Runtime API, Device Management; cuda_runtime_api.h of CUDA 13.0), as the driver's
 * cuDeviceGetByPCIBusId it wraps does (CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_INVALID_DEVICE,
 * besides initialisation errors). Neither page says which one a bus id with no device gives. The
 * binding passes only well-formed ids (BUS_ID) and a valid out-pointer, so either answer can only
 * mean that CUDA knows no device there, and both are that answer, not an error.
 */
const UNKNOWN_BUS_ID = new Set([INVALID_VALUE, INVALID_DEVICE]);

/** Loads the probe library; `reason` says why it cannot be used (missing file, missing symbol). */
export function loadCudaProbe(libraryPath: string): CudaProbeLoad {
  const path = resolve(libraryPath);
  let lib: LibraryHandle;
  try {
    lib = koffi.load(path);
  } catch (error) {
    return { ok: false, reason: `cannot load ${path}: ${messageOf(error)}` };
  }
  const fns: Partial<ProbeFunctions> = {};
  try {
    for (const name of Object.keys(PROTOTYPES) as ProbeFunction[]) {
      fns[name] = lib.func(PROTOTYPES[name]);
    }
  } catch (error) {
    return { ok: false, reason: `cannot load ${path}: ${messageOf(error)}` };
  }
  return { ok: true, probe: createProbe(fns as ProbeFunctions) };
}

function createProbe(fns: ProbeFunctions): CudaProbe {
  let inFlight = 0;
  /** Runs fn off the event loop; resolves its return value. */
  const callAsync = (fn: ProbeFunction, args: readonly unknown[]): Promise<unknown> =>
    new Promise((resolvePromise, reject) => {
      inFlight++;
      fns[fn].async(...args, (error: unknown, result: unknown) => {
        inFlight--;
        if (error !== null && error !== undefined) reject(asError(error));
        else resolvePromise(result);
      });
    });

  const failure = async (fn: ProbeFunction, code: number): Promise<CudaError> => {
    let description: string;
    try {
      const text = await callAsync('ap_error_string', [code]);
      description = typeof text === 'string' ? text : `CUDA error ${code}`;
    } catch {
      description = `CUDA error ${code}`;
    }
    return new CudaError(fn, code, description);
  };

  /** Calls a probe function that returns a cudaError_t; rejects with CudaError when it is not 0. */
  const measure = async (fn: ProbeFunction, args: readonly unknown[]): Promise<void> => {
    const code = Number(await callAsync(fn, args));
    if (code !== 0) throw await failure(fn, code);
  };

  const invalid = async (fn: ProbeFunction): Promise<never> => {
    throw await failure(fn, INVALID_VALUE);
  };

  return {
    async deviceCount() {
      const count = [0];
      await measure('ap_device_count', [count]);
      return Number(count[0]);
    },

    async pciBusId(device) {
      if (!isDevice(device)) return invalid('ap_pci_bus_id');
      const buffer = Buffer.alloc(BUS_ID_BYTES);
      await measure('ap_pci_bus_id', [device, buffer, BUS_ID_BYTES]);
      const end = buffer.indexOf(0);
      return buffer.toString('latin1', 0, end < 0 ? BUS_ID_BYTES : end);
    },

    async deviceByBusId(busId) {
      if (!BUS_ID.test(busId)) return invalid('ap_device_by_bus_id');
      const device = [0];
      const code = Number(await callAsync('ap_device_by_bus_id', [busId, device]));
      if (UNKNOWN_BUS_ID.has(code)) return undefined;
      if (code !== 0) throw await failure('ap_device_by_bus_id', code);
      return Number(device[0]);
    },

    async copyBandwidth(device, direction, bytes, repetitions, numaNode) {
      const validNode = numaNode === undefined || isDevice(numaNode);
      if (!isDevice(device) || !isCount(bytes) || !isRepetitions(repetitions) || !validNode) {
        return invalid('ap_copy_bandwidth');
      }
      const [gbps, placement, error] = [[0], [0], [0]];
      const args = [device, DIRECTIONS[direction], bytes, repetitions, numaNode ?? -1];
      await measure('ap_copy_bandwidth', [...args, gbps, placement, error]);
      return {
        gbps: Number(gbps[0]),
        placement: describePlacement(numaNode, Number(placement[0]), Number(error[0])),
      };
    },

    async hbmBandwidth(device, bytes, repetitions) {
      if (!isDevice(device) || !isCount(bytes) || !isRepetitions(repetitions)) {
        return invalid('ap_hbm_bandwidth');
      }
      const gbps = [0];
      await measure('ap_hbm_bandwidth', [device, bytes, repetitions, gbps]);
      return Number(gbps[0]);
    },

    async memoryPattern(device, fraction) {
      if (!isDevice(device) || !(fraction > 0 && fraction <= 1)) {
        return invalid('ap_memory_pattern');
      }
      const mismatches: (number | bigint)[] = [0];
      const bytesTested: (number | bigint)[] = [0];
      await measure('ap_memory_pattern', [device, fraction, mismatches, bytesTested]);
      return { mismatches: Number(mismatches[0]), bytesTested: Number(bytesTested[0]) };
    },

    async flops(device, precision) {
      if (!isDevice(device) || (precision !== 32 && precision !== 64)) return invalid('ap_flops');
      const tflops = [0];
      await measure('ap_flops', [device, precision, tflops]);
      return Number(tflops[0]);
    },

    async canAccessPeer(src, dst) {
      if (!isDevice(src) || !isDevice(dst) || src === dst) return invalid('ap_can_access_peer');
      const can = [0];
      await measure('ap_can_access_peer', [src, dst, can]);
      return Number(can[0]) !== 0;
    },

    async p2pBandwidth(src, dst, bytes, repetitions) {
      const valid = isDevice(src) && isDevice(dst) && src !== dst;
      if (!valid || !isCount(bytes) || !isRepetitions(repetitions)) {
        return invalid('ap_p2p_bandwidth');
      }
      const gbps = [0];
      const code = Number(
        await callAsync('ap_p2p_bandwidth', [src, dst, bytes, repetitions, gbps]),
      );
      if (code === NO_PEER_ACCESS) return undefined;
      if (code !== 0) throw await failure('ap_p2p_bandwidth', code);
      return Number(gbps[0]);
    },
    callsInFlight: () => inFlight,
  };
}

const isDevice = (device: number): boolean =>
  Number.isInteger(device) && device >= 0 && device <= 0x7fffffff;
const isCount = (bytes: number): boolean => Number.isSafeInteger(bytes) && bytes > 0;
const isRepetitions = (n: number): boolean => Number.isInteger(n) && n > 0 && n <= 0x7fffffff;

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}
