/**
 * The NVML port (ports.ts) over libnvidia-ml through koffi.
 *
 * Every NVML call, nvmlErrorString included, runs through koffi's `.async` on a worker thread, so
 * a driver call that hangs (a GPU falling off the bus, nvmlEventSetWait_v2) never blocks the event
 * loop; the method that made it simply does not settle. At most two calls are in flight at once
 * (see MAX_CALLS_IN_FLIGHT), so hung calls cannot take all of libuv's threadpool. Prototypes and struct layouts follow nvml.h
 * 13.3.29 (docs/reference/gpu-interfaces.md §2), using the versioned symbols go-nvml picks
 * (nvmlInit_v2, nvmlDeviceGetCount_v2, nvmlDeviceGetHandleByIndex_v2, nvmlDeviceGetPciInfo_v3,
 * nvmlDeviceGetComputeRunningProcesses_v3, nvmlEventSetWait_v2), and the older
 * nvmlDeviceGetComputeRunningProcesses_v2 where _v3 is absent: in go-nvml's nvml.h history _v2 is
 * there from the NVML 11.1 header (commit 7dce688d) and _v3 from 11.6, R510 (commit 522ec681).
 *
 * The library is never unloaded: a call still hanging on a worker thread would crash on return.
 */

import koffi from 'koffi';
import type { LibraryHandle } from 'koffi';
import {
  NVLINK_COUNTERS,
  NVML_ERROR_NOT_SUPPORTED,
  NVML_VALUE_TYPES,
  NvmlError,
  type EccState,
  type FieldValue,
  type GpuFabric,
  type NvLinks,
  type NvLinkState,
  type NvmlValueType,
  type GpuDevice,
  type Nvml,
  type NvmlLoad,
  type PcieLinkState,
  type ProcessCount,
  type RemappedRows,
  type XidEvent,
} from './ports.js';

// koffi types, declared once for the process. They are anonymous on purpose: koffi's type names are
// process-global and its native module is shared by every module instance in the process, so a
// named type breaks ("Duplicate type name") as soon as this file is evaluated twice in one process,
// which jest does for each test file a worker runs. Anonymous types need the classic
// lib.func(name, result, [params]) form instead of C prototype strings.
const Device = koffi.pointer(koffi.opaque()); // nvmlDevice_t
const EventSet = koffi.pointer(koffi.opaque()); // nvmlEventSet_t
const PciInfo = koffi.struct({
  busIdLegacy: koffi.array('char', 16),
  domain: 'uint',
  bus: 'uint',
  device: 'uint',
  pciDeviceId: 'uint',
  pciSubSystemId: 'uint',
  busId: koffi.array('char', 32),
}); // nvmlPciInfo_t (v3), 68 bytes
const EventData = koffi.struct({
  device: Device,
  eventType: 'unsigned long long',
  eventData: 'unsigned long long',
  gpuInstanceId: 'uint',
  computeInstanceId: 'uint',
}); // nvmlEventData_t, 32 bytes
const outUint = koffi.out(koffi.pointer('uint'));
const outInt = koffi.out(koffi.pointer('int'));
const outUint64 = koffi.out(koffi.pointer('unsigned long long'));
const inoutUint = koffi.inout(koffi.pointer('uint'));

const NVML_SUCCESS = 0;
const NVML_ERROR_INVALID_ARGUMENT = 2;
const NVML_ERROR_NO_PERMISSION = 4;
const NVML_ERROR_INSUFFICIENT_SIZE = 7;
const NVML_ERROR_TIMEOUT = 10;
const NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25;
const NVML_ERROR_UNKNOWN = 999;
const NVML_FEATURE_ENABLED = 1;
const NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1;
const NVML_VOLATILE_ECC = 0;
const NVML_AGGREGATE_ECC = 1;
const EVENT_TYPE_XID_CRITICAL_ERROR = 0x8n;
const NVML_AFFINITY_SCOPE_NODE = 0;
/** unsigned longs of the memory-affinity node mask: 64 × 16 = 1024 nodes, the kernel's most. */
const NODE_MASK_WORDS = 16;

const NAME_BUFFER = 96; // NVML_DEVICE_NAME_V2_BUFFER_SIZE
const UUID_BUFFER = 96; // NVML_DEVICE_UUID_V2_BUFFER_SIZE
const SERIAL_BUFFER = 30; // NVML_DEVICE_SERIAL_BUFFER_SIZE
const DRIVER_VERSION_BUFFER = 80; // NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE
/** Events read after the first in one waitXidEvents, so an XID storm cannot keep it busy forever. */
const MAX_DRAINED_EVENTS = 1024;
/**
 * The pause before a GPU whose registration answered UNKNOWN is tried again, doubling up to the
 * most: each such answer spoils the set, and rebuilding it re-registers every GPU and drops the
 * events queued on it, so one bad GPU must not do that on every wait.
 */
const XID_RETRY_FIRST_MS = 2_000;
const XID_RETRY_MAX_MS = 60_000;

export interface NvmlOptions {
  /** Milliseconds, for the registration backoff; Date.now unless a test steers it. */
  readonly now?: () => number;
}

/** A koffi function as this module calls it: only through `.async`. */
interface NativeFunction {
  async(...args: unknown[]): void;
}

/** A declared NVML function with the name its errors carry. */
interface Fn {
  readonly name: string;
  readonly native: NativeFunction;
}

interface Functions {
  readonly init: Fn;
  readonly shutdown: Fn;
  readonly errorString: Fn;
  readonly driverVersion: Fn;
  readonly count: Fn;
  readonly handleByIndex: Fn;
  readonly name: Fn;
  readonly uuid: Fn;
  readonly serial: Fn;
  readonly pciInfo: Fn;
  readonly currLinkGeneration: Fn;
  readonly currLinkWidth: Fn;
  readonly maxLinkGeneration: Fn;
  readonly maxLinkWidth: Fn;
  readonly remappedRows: Fn;
  /** nvmlDeviceGetCurrentClocksEventReasons, or the older ...ThrottleReasons before R535. */
  readonly clockReasons: Fn;
  /** nvmlDeviceGetFieldValues; absent from a library that lacks it. */
  readonly fieldValues: Fn | undefined;
  readonly eccMode: Fn;
  readonly totalEccErrors: Fn;
  readonly retiredPagesPending: Fn;
  /** ..._v3 (NVML 11.6, R510, and later), else ..._v2: the size query is the same. */
  readonly computeProcesses: Fn;
  readonly memoryAffinity: Fn | undefined;
  /** Absent from drivers that predate it (and from the fake's old-driver build). */
  readonly migMode: Fn | undefined;
  readonly nvLinkState: Fn | undefined;
  readonly nvLinkErrorCounter: Fn | undefined;
  /** nvml.h 12.x and later; absent from drivers before it (and the fake's old-driver build). */
  readonly fabricInfoV: Fn | undefined;
  /** The legacy fabric query, deprecated in nvml.h 13.0; absent from drivers before Hopper's. */
  readonly fabricInfo: Fn | undefined;
  readonly eventSetCreate: Fn;
  readonly registerEvents: Fn;
  readonly eventSetWait: Fn;
  readonly eventSetFree: Fn;
}

/** A koffi type: a primitive name, a TypeObject, or an out/inout marker. */
type Param = Parameters<typeof koffi.sizeof>[0];

function declare(lib: LibraryHandle): Functions {
  const fn = (name: string, params: Param[], result: Param = 'int'): Fn => ({
    name,
    native: lib.func(name, result, params),
  });
  const optional = (name: string, params: Param[]): Fn | undefined => {
    try {
      return fn(name, params);
    } catch {
      return undefined; // koffi: "Cannot find function '...' in shared library"
    }
  };
  const uintGetter = (name: string): Fn => fn(name, [Device, outUint]);
  return {
    init: fn('nvmlInit_v2', []),
    shutdown: fn('nvmlShutdown', []),
    errorString: fn('nvmlErrorString', ['int'], 'const char *'),
    driverVersion: fn('nvmlSystemGetDriverVersion', ['char *', 'uint']),
    count: fn('nvmlDeviceGetCount_v2', [outUint]),
    handleByIndex: fn('nvmlDeviceGetHandleByIndex_v2', ['uint', koffi.out(koffi.pointer(Device))]),
    name: fn('nvmlDeviceGetName', [Device, 'char *', 'uint']),
    uuid: fn('nvmlDeviceGetUUID', [Device, 'char *', 'uint']),
    serial: fn('nvmlDeviceGetSerial', [Device, 'char *', 'uint']),
    pciInfo: fn('nvmlDeviceGetPciInfo_v3', [Device, koffi.out(koffi.pointer(PciInfo))]),
    currLinkGeneration: uintGetter('nvmlDeviceGetCurrPcieLinkGeneration'),
    currLinkWidth: uintGetter('nvmlDeviceGetCurrPcieLinkWidth'),
    maxLinkGeneration: uintGetter('nvmlDeviceGetMaxPcieLinkGeneration'),
    maxLinkWidth: uintGetter('nvmlDeviceGetMaxPcieLinkWidth'),
    remappedRows: fn('nvmlDeviceGetRemappedRows', [Device, outUint, outUint, outUint, outUint]),
    clockReasons:
      optional('nvmlDeviceGetCurrentClocksEventReasons', [Device, outUint64]) ??
      fn('nvmlDeviceGetCurrentClocksThrottleReasons', [Device, outUint64]),
    fieldValues: optional('nvmlDeviceGetFieldValues', [Device, 'int', 'void *']),
    eccMode: fn('nvmlDeviceGetEccMode', [Device, outInt, outInt]),
    totalEccErrors: fn('nvmlDeviceGetTotalEccErrors', [Device, 'int', 'int', outUint64]),
    retiredPagesPending: fn('nvmlDeviceGetRetiredPagesPendingStatus', [Device, outInt]),
    computeProcesses:
      optional('nvmlDeviceGetComputeRunningProcesses_v3', [Device, inoutUint, 'void *']) ??
      fn('nvmlDeviceGetComputeRunningProcesses_v2', [Device, inoutUint, 'void *']),
    // unsigned long *nodeSet: 64-bit words on the LP64 hosts the driver runs on.
    memoryAffinity: optional('nvmlDeviceGetMemoryAffinity', [Device, 'uint', 'void *', 'uint']),
    migMode: optional('nvmlDeviceGetMigMode', [Device, outUint, outUint]),
    nvLinkState: optional('nvmlDeviceGetNvLinkState', [Device, 'uint', outInt]),
    nvLinkErrorCounter: optional('nvmlDeviceGetNvLinkErrorCounter', [
      Device,
      'uint',
      'int',
      outUint64,
    ]),
    fabricInfoV: optional('nvmlDeviceGetGpuFabricInfoV', [Device, 'void *']),
    fabricInfo: optional('nvmlDeviceGetGpuFabricInfo', [Device, 'void *']),
    eventSetCreate: fn('nvmlEventSetCreate', [koffi.out(koffi.pointer(EventSet))]),
    registerEvents: fn('nvmlDeviceRegisterEvents', [Device, 'unsigned long long', EventSet]),
    eventSetWait: fn('nvmlEventSetWait_v2', [
      EventSet,
      koffi.out(koffi.pointer(EventData)),
      'uint',
    ]),
    eventSetFree: fn('nvmlEventSetFree', [EventSet]),
  };
}

/**
 * koffi runs `.async` calls on libuv's threadpool: 4 threads unless UV_THREADPOOL_SIZE says
 * otherwise (npm start sets 16), shared with fs, dns.lookup, crypto and zlib. Hung driver calls
 * must not take all of them, so the calls of the checks share two threads and the XID wait has
 * its own: a hung check call cannot silence XID events, and a long wait cannot starve the checks.
 */
const CHECK_CALLS_IN_FLIGHT = 2;
const XID_CALLS_IN_FLIGHT = 1;

/** At most `max` calls at once, the others queued in order. */
class CallLimiter {
  private inFlight = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly max: number) {}

  async run<T>(call: () => Promise<T>): Promise<T> {
    if (this.inFlight < this.max) this.inFlight++;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await call();
    } finally {
      const next = this.waiting.shift();
      if (next === undefined) this.inFlight--;
      else next(); // the slot passes straight to the next caller
    }
  }

  callsInFlight(): number {
    return this.inFlight;
  }
}

/** Runs a native function on a koffi worker thread, once the limiter has a slot for it. */
function callAsync<T>(
  limiter: CallLimiter,
  native: NativeFunction,
  args: readonly unknown[],
): Promise<T> {
  return limiter.run(() => callNow<T>(native, args));
}

function callNow<T>(native: NativeFunction, args: readonly unknown[]): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    native.async(...args, (error: unknown, result: T) => {
      if (error === null || error === undefined) resolve(result);
      else reject(error instanceof Error ? error : new Error(message(error)));
    });
  });
}

/** An error's message. Duck-typed: koffi's errors may come from another realm (jest's vm contexts). */
function message(error: unknown): string {
  if (typeof error === 'object' && error !== null && 'message' in error) {
    if (typeof error.message === 'string') return error.message;
  }
  return typeof error === 'string' ? error : JSON.stringify(error);
}

/** The C string at the start of a buffer. */
function cString(buffer: Buffer): string {
  const end = buffer.indexOf(0);
  return buffer.toString('utf8', 0, end === -1 ? buffer.length : end);
}

/** A pointer or 64-bit integer as koffi hands it over (number, or bigint when large). */
function toBigInt(value: unknown): bigint {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number') return BigInt(value);
  throw new TypeError(`expected an integer from NVML, got ${typeof value}`);
}

/** A pointer value to compare handles by address. */
function address(pointer: unknown): bigint {
  return pointer === null || pointer === undefined ? 0n : koffi.address(pointer);
}

class KoffiNvml implements Nvml {
  private deviceList: Promise<readonly GpuDevice[]> | undefined;
  private readonly handles = new Map<number, unknown>();
  private eventSet: unknown = undefined;
  /** Device handle address → NVML index, for the devices registered on eventSet. */
  private readonly eventDevices = new Map<bigint, number>();
  /** NVML index → why the GPU is not registered on eventSet. */
  private readonly xidNotListening = new Map<number, string>();
  /** NVML index → when a GPU whose registration answered UNKNOWN may be tried again, and the pause. */
  private readonly xidBackoff = new Map<
    number,
    { readonly at: number; readonly pauseMs: number }
  >();
  private waiting: Promise<unknown> | undefined;
  private closed: Promise<void> | undefined;
  /**
   * NVML index → how many links to read: a GPU's links cannot change before the next nvmlInit, so
   * they are counted once (DCGM reads NVML_FI_DEV_NVLINK_LINK_COUNT once per GPU, likewise).
   */
  private readonly linkCounts = new Map<number, number>();
  /** NVML index → the GPU's error totals at the last per-link read, and what that read found. */
  private readonly linkErrors = new Map<number, LinkErrorsRead>();

  constructor(
    private readonly fns: Functions,
    private readonly now: () => number,
  ) {}

  /** Calls fn and resolves its nvmlReturn_t, whatever it is. */
  private readonly checkCalls = new CallLimiter(CHECK_CALLS_IN_FLIGHT);
  private readonly xidCalls = new CallLimiter(XID_CALLS_IN_FLIGHT);

  private code(fn: Fn, ...args: unknown[]): Promise<number> {
    const limiter = fn === this.fns.eventSetWait ? this.xidCalls : this.checkCalls;
    return callAsync<number>(limiter, fn.native, args);
  }

  /** Calls fn and resolves when it returned NVML_SUCCESS, or rejects with NvmlError. */
  private async call(fn: Fn, ...args: unknown[]): Promise<void> {
    const code = await this.code(fn, ...args);
    if (code !== NVML_SUCCESS) throw await this.error(fn.name, code);
  }

  private async error(fn: string, code: number): Promise<NvmlError> {
    return new NvmlError(fn, code, await describe(this.fns, code));
  }

  private async handle(index: number): Promise<unknown> {
    const cached = this.handles.get(index);
    if (cached !== undefined) return cached;
    if (!Number.isInteger(index) || index < 0 || index > 0xffffffff) {
      throw await this.error(this.fns.handleByIndex.name, NVML_ERROR_INVALID_ARGUMENT);
    }
    const out: unknown[] = [null];
    await this.call(this.fns.handleByIndex, index, out);
    this.handles.set(index, out[0]);
    return out[0];
  }

  private async uint(fn: Fn, device: unknown): Promise<number> {
    const out = [0];
    await this.call(fn, device, out);
    return out[0] ?? 0;
  }

  private async deviceCount(): Promise<number> {
    const out = [0];
    await this.call(this.fns.count, out);
    return out[0] ?? 0;
  }

  async driverVersion(): Promise<string> {
    const buffer = Buffer.alloc(DRIVER_VERSION_BUFFER);
    await this.call(this.fns.driverVersion, buffer, buffer.length);
    return cString(buffer);
  }

  /**
   * NVML enumerates the GPUs once, at nvmlInit; names, UUIDs and bus ids cannot change before the
   * next init, so the list is read once (about 1 ms for 8 GPUs) and not on every check.
   */
  devices(): Promise<readonly GpuDevice[]> {
    this.deviceList ??= this.readDevices();
    // A failed read is not cached: the next check tries again.
    this.deviceList.catch(() => (this.deviceList = undefined));
    return this.deviceList;
  }

  private async readDevices(): Promise<readonly GpuDevice[]> {
    const count = await this.deviceCount();
    const devices: GpuDevice[] = [];
    for (let index = 0; index < count; index++) {
      devices.push(await this.identify(index));
    }
    return devices;
  }

  /**
   * A GPU that cannot tell its name (lost, no permission) is still listed, with empty fields: the
   * checks then report it as ERROR instead of failing for every GPU of the node.
   */
  private async identify(index: number): Promise<GpuDevice> {
    try {
      const device = await this.handle(index);
      const name = Buffer.alloc(NAME_BUFFER);
      await this.call(this.fns.name, device, name, name.length);
      const uuid = Buffer.alloc(UUID_BUFFER);
      await this.call(this.fns.uuid, device, uuid, uuid.length);
      const pci: Record<string, unknown> = {};
      await this.call(this.fns.pciInfo, device, pci);
      return {
        index,
        uuid: cString(uuid),
        name: cString(name),
        pciBusId: typeof pci['busId'] === 'string' ? pci['busId'] : '',
        serial: await this.serial(device),
      };
    } catch {
      return { index, uuid: '', name: '', pciBusId: '', serial: '' };
    }
  }

  /**
   * Only boards with an inforom have a serial (nvml.h): consumer GPUs answer NOT_SUPPORTED. A
   * missing serial must not hide the GPU's other identity, so any failure here gives ''.
   */
  private async serial(device: unknown): Promise<string> {
    const buffer = Buffer.alloc(SERIAL_BUFFER);
    const code = await this.code(this.fns.serial, device, buffer, buffer.length);
    return code === NVML_SUCCESS ? cString(buffer) : '';
  }

  async pcieLink(index: number): Promise<PcieLinkState> {
    const device = await this.handle(index);
    return {
      currentGeneration: await this.uint(this.fns.currLinkGeneration, device),
      currentWidth: await this.uint(this.fns.currLinkWidth, device),
      maxGeneration: await this.uint(this.fns.maxLinkGeneration, device),
      maxWidth: await this.uint(this.fns.maxLinkWidth, device),
    };
  }

  async remappedRows(index: number): Promise<RemappedRows | undefined> {
    const device = await this.handle(index);
    const [correctable, uncorrectable, pending, failure] = [[0], [0], [0], [0]];
    const code = await this.code(
      this.fns.remappedRows,
      device,
      correctable,
      uncorrectable,
      pending,
      failure,
    );
    if (code === NVML_ERROR_NOT_SUPPORTED) return undefined;
    if (code !== NVML_SUCCESS) throw await this.error(this.fns.remappedRows.name, code);
    return {
      correctable: correctable[0] ?? 0,
      uncorrectable: uncorrectable[0] ?? 0,
      pending: pending[0] !== 0,
      failureOccurred: failure[0] !== 0,
    };
  }

  async clockEventReasons(index: number): Promise<bigint> {
    const device = await this.handle(index);
    const out: unknown[] = [0];
    await this.call(this.fns.clockReasons, device, out);
    return toBigInt(out[0]);
  }

  async fieldValues(index: number, fieldIds: readonly number[]): Promise<readonly FieldValue[]> {
    const fieldValues = this.fns.fieldValues;
    const unsupported = fieldIds.map(
      () => ({ ok: false, code: NVML_ERROR_NOT_SUPPORTED }) as const,
    );
    if (fieldValues === undefined || fieldIds.length === 0) return unsupported;
    const device = await this.handle(index);
    const values = Buffer.alloc(FIELD_VALUE_BYTES * fieldIds.length);
    fieldIds.forEach((id, entry) => values.writeUInt32LE(id, entry * FIELD_VALUE_BYTES));
    const code = await this.code(fieldValues, device, fieldIds.length, values);
    if (code === NVML_ERROR_NOT_SUPPORTED) return unsupported;
    if (code !== NVML_SUCCESS) throw await this.error(fieldValues.name, code);
    return fieldIds.map((_, entry) => readFieldValue(values, entry * FIELD_VALUE_BYTES));
  }

  async ecc(index: number): Promise<EccState> {
    const device = await this.handle(index);
    const [current, pending] = [[0], [0]];
    const modeCode = await this.code(this.fns.eccMode, device, current, pending);
    if (modeCode !== NVML_SUCCESS && modeCode !== NVML_ERROR_NOT_SUPPORTED) {
      throw await this.error(this.fns.eccMode.name, modeCode);
    }
    const enabled = modeCode === NVML_SUCCESS && current[0] === NVML_FEATURE_ENABLED;

    const volatileUncorrected = enabled
      ? await this.uncorrected(device, NVML_VOLATILE_ECC)
      : undefined;
    const aggregateUncorrected = enabled
      ? await this.uncorrected(device, NVML_AGGREGATE_ECC)
      : undefined;

    const retired = [0];
    const retiredCode = await this.code(this.fns.retiredPagesPending, device, retired);
    if (retiredCode !== NVML_SUCCESS && retiredCode !== NVML_ERROR_NOT_SUPPORTED) {
      throw await this.error(this.fns.retiredPagesPending.name, retiredCode);
    }
    const retiredPagesPending =
      retiredCode === NVML_SUCCESS ? retired[0] === NVML_FEATURE_ENABLED : undefined;

    return { enabled, volatileUncorrected, aggregateUncorrected, retiredPagesPending };
  }

  /** One uncorrected-error counter (nvmlEccCounterType_t); undefined when NOT_SUPPORTED. */
  private async uncorrected(device: unknown, counter: number): Promise<number | undefined> {
    const count: unknown[] = [0];
    const code = await this.code(
      this.fns.totalEccErrors,
      device,
      NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
      counter,
      count,
    );
    if (code === NVML_SUCCESS) return Number(toBigInt(count[0]));
    if (code === NVML_ERROR_NOT_SUPPORTED) return undefined;
    throw await this.error(this.fns.totalEccErrors.name, code);
  }

  /**
   * In MIG mode NVML gives the whole GPU's processes "only if the caller has appropriate
   * privileges" (nvml.h, nvmlDeviceGetComputeRunningProcesses_v3), so an answer there, 0 included,
   * would not show the GPU idle: unknown without asking.
   */
  async computeProcessCount(index: number): Promise<ProcessCount> {
    if (await this.migEnabled(index)) {
      return {
        known: false,
        reason: 'MIG is enabled: NVML lists its processes only to privileged callers',
      };
    }
    const fn = this.fns.computeProcesses;
    const device = await this.handle(index);
    // A size query: count 0 and no buffer. SUCCESS means none run; INSUFFICIENT_SIZE says how many.
    const count = [0];
    const code = await this.code(fn, device, count, null);
    if (code === NVML_SUCCESS || code === NVML_ERROR_INSUFFICIENT_SIZE) {
      return { known: true, count: count[0] ?? 0 };
    }
    if (code === NVML_ERROR_NO_PERMISSION) {
      return { known: false, reason: (await this.error(fn.name, code)).message };
    }
    throw await this.error(fn.name, code);
  }

  /** The lowest node of the GPU's ideal memory affinity (NVML_AFFINITY_SCOPE_NODE). */
  async numaNode(index: number): Promise<number | undefined> {
    const fn = this.fns.memoryAffinity;
    const device = await this.handle(index);
    if (fn === undefined) return undefined;
    const mask = Buffer.alloc(NODE_MASK_WORDS * 8);
    const code = await this.code(fn, device, NODE_MASK_WORDS, mask, NVML_AFFINITY_SCOPE_NODE);
    if (code === NVML_ERROR_NOT_SUPPORTED) return undefined;
    if (code !== NVML_SUCCESS) throw await this.error(fn.name, code);
    for (let word = 0; word < NODE_MASK_WORDS; word++) {
      const bits = mask.readBigUInt64LE(word * 8);
      for (let bit = 0; bit < 64; bit++) if ((bits >> BigInt(bit)) & 1n) return word * 64 + bit;
    }
    return undefined;
  }

  async migEnabled(index: number): Promise<boolean> {
    const migMode = this.fns.migMode;
    const device = await this.handle(index);
    if (migMode === undefined) return false;
    const [current, pending] = [[0], [0]];
    const code = await this.code(migMode, device, current, pending);
    if (code === NVML_ERROR_NOT_SUPPORTED) return false;
    if (code !== NVML_SUCCESS) throw await this.error(migMode.name, code);
    return current[0] === NVML_FEATURE_ENABLED;
  }

  async nvLinks(index: number): Promise<NvLinks> {
    const stateFn = this.fns.nvLinkState;
    if (stateFn === undefined) {
      return { supported: false, reason: 'this NVML has no nvmlDeviceGetNvLinkState' };
    }
    const device = await this.handle(index);
    const counted = this.linkCounts.get(index) ?? (await this.linkCount(index));
    const totals = await this.errorTotals(index);
    const last = this.linkErrors.get(index);
    const unchanged = totals !== undefined && last?.totals === totals ? last.counts : undefined;
    const answers = await Promise.all(
      Array.from({ length: counted }, (_, link) =>
        this.nvLink(stateFn, device, link, unchanged?.get(link)),
      ),
    );
    const links = answers.filter((answer): answer is NvLinkState => typeof answer !== 'string');
    if (totals === undefined) this.linkErrors.delete(index);
    else
      this.linkErrors.set(index, { totals, counts: new Map(links.map((l) => [l.link, l.errors])) });
    // Probed links (no count from NVML) end at the last that answered, for the next reads.
    if (!this.linkCounts.has(index)) this.linkCounts.set(index, (links.at(-1)?.link ?? -1) + 1);
    if (links.length > 0) return { supported: true, links };
    const refusal = answers.find((answer): answer is string => typeof answer === 'string');
    return { supported: false, reason: refusal ?? 'NVML counts no NVLink on this GPU' };
  }

  /**
   * NVML_FI_DEV_NVLINK_LINK_COUNT, cached; NVML_NVLINK_MAX_LINKS to probe where the field is not
   * supported (drivers before it, or a GPU without NVLink, whose link 0 then says NOT_SUPPORTED).
   */
  private async linkCount(index: number): Promise<number> {
    const [count] = await this.fieldValues(index, [NVML_FI_DEV_NVLINK_LINK_COUNT]);
    if (count?.ok !== true) return NVML_NVLINK_MAX_LINKS;
    const links = Math.min(Number(count.value), NVML_NVLINK_MAX_LINKS);
    this.linkCounts.set(index, links);
    return links;
  }

  /**
   * The GPU's four error totals over all its links (NVML_FI_DEV_NVLINK_*_ERROR_COUNT_TOTAL), as one
   * key, or undefined where a field is not supported. They gate the per-link reads, 72 calls on an
   * 18-link GPU: while no total moved, no link's counter did, and the last per-link counts stand.
   * DCGM's NVLink health watch judges these same four NVML totals (dcgm_fields.cpp maps its
   * DCGM_FI_DEV_NVLINK_*_ERROR_TOTAL fields to them).
   */
  private async errorTotals(index: number): Promise<string | undefined> {
    const values = await this.fieldValues(index, NVLINK_ERROR_TOTAL_FIELDS);
    if (!values.every((value) => value.ok)) return undefined;
    return values.map((value) => String(value.value)).join(',');
  }

  /**
   * One link's state and counters, or the error message of a link the GPU does not have
   * (NOT_SUPPORTED, or INVALID_ARGUMENT past its last link: DCGM's DcgmTopology.cpp treats any
   * error there as "not supported"; here only those two, the others reject).
   */
  private async nvLink(
    stateFn: Fn,
    device: unknown,
    link: number,
    unchanged: NvLinkState['errors'] | undefined,
  ): Promise<NvLinkState | string> {
    const active = [0];
    const code = await this.code(stateFn, device, link, active);
    if (code === NVML_ERROR_NOT_SUPPORTED || code === NVML_ERROR_INVALID_ARGUMENT) {
      return (await this.error(stateFn.name, code)).message;
    }
    if (code !== NVML_SUCCESS) throw await this.error(stateFn.name, code);
    if (unchanged !== undefined) {
      return { link, active: active[0] === NVML_FEATURE_ENABLED, errors: unchanged };
    }
    const counts = await Promise.all(
      NVLINK_COUNTERS.map((_, counter) => this.nvLinkErrors(device, link, counter)),
    );
    const errors: Partial<Record<(typeof NVLINK_COUNTERS)[number], number>> = {};
    NVLINK_COUNTERS.forEach((name, counter) => {
      const count = counts[counter];
      if (count !== undefined) errors[name] = count;
    });
    return { link, active: active[0] === NVML_FEATURE_ENABLED, errors };
  }

  /** One nvmlNvLinkErrorCounter_t of a link; undefined where NOT_SUPPORTED or the driver lacks it. */
  private async nvLinkErrors(
    device: unknown,
    link: number,
    counter: number,
  ): Promise<number | undefined> {
    const fn = this.fns.nvLinkErrorCounter;
    if (fn === undefined) return undefined;
    const out: unknown[] = [0];
    const code = await this.code(fn, device, link, counter, out);
    if (code === NVML_ERROR_NOT_SUPPORTED) return undefined;
    if (code !== NVML_SUCCESS) throw await this.error(fn.name, code);
    return Number(toBigInt(out[0]));
  }

  async gpuFabric(index: number): Promise<GpuFabric> {
    const { fabricInfoV, fabricInfo } = this.fns;
    const device = await this.handle(index);
    if (fabricInfoV !== undefined) {
      for (const layout of [FABRIC_V3, FABRIC_V2]) {
        const info = Buffer.alloc(layout.bytes);
        info.writeUInt32LE(layout.version, 0);
        const code = await this.code(fabricInfoV, device, info);
        if (code === NVML_ERROR_ARGUMENT_VERSION_MISMATCH) continue;
        return this.fabricAnswer(fabricInfoV, code, info, layout);
      }
    }
    if (fabricInfo === undefined) {
      return { supported: false, reason: 'this NVML has no nvmlDeviceGetGpuFabricInfo(V)' };
    }
    const info = Buffer.alloc(FABRIC_LEGACY.bytes);
    return this.fabricAnswer(
      fabricInfo,
      await this.code(fabricInfo, device, info),
      info,
      FABRIC_LEGACY,
    );
  }

  private async fabricAnswer(
    fn: Fn,
    code: number,
    info: Buffer,
    layout: FabricLayout,
  ): Promise<GpuFabric> {
    if (code === NVML_ERROR_NOT_SUPPORTED) {
      return { supported: false, reason: (await this.error(fn.name, code)).message };
    }
    if (code !== NVML_SUCCESS) throw await this.error(fn.name, code);
    const state = info.readUInt8(layout.state);
    if (state === NVML_GPU_FABRIC_STATE_NOT_SUPPORTED) {
      return { supported: false, reason: `${fn.name}: fabric probe state not supported` };
    }
    return {
      supported: true,
      state,
      status: info.readInt32LE(layout.status),
      healthSummary: layout.summary === undefined ? undefined : info.readUInt8(layout.summary),
      source: layout.name === '' ? fn.name : `${fn.name} (${layout.name})`,
    };
  }

  listenXidEvents(): Promise<ReadonlyMap<number, string>> {
    const listening = this.listenXid();
    this.waiting = listening;
    return listening;
  }

  private async listenXid(): Promise<ReadonlyMap<number, string>> {
    if (this.eventSet === undefined) {
      await this.createXidSet();
    } else {
      const due = [...this.xidNotListening.keys()].filter((index) => this.xidDue(index));
      const spoiled = due.length > 0 ? await this.registerXid(this.eventSet, due) : undefined;
      if (spoiled !== undefined) await this.recreateXidSet();
    }
    return new Map(this.xidNotListening);
  }

  /** Whether a GPU may be registered now: always, unless it is paused after an UNKNOWN answer. */
  private xidDue(index: number): boolean {
    return (this.xidBackoff.get(index)?.at ?? -Infinity) <= this.now();
  }

  private backOffXid(index: number): void {
    const last = this.xidBackoff.get(index)?.pauseMs;
    const pauseMs = last === undefined ? XID_RETRY_FIRST_MS : Math.min(last * 2, XID_RETRY_MAX_MS);
    this.xidBackoff.set(index, { at: this.now() + pauseMs, pauseMs });
  }

  waitXidEvents(timeoutMs: number): Promise<readonly XidEvent[]> {
    const waiting = this.waitXid(timeoutMs);
    this.waiting = waiting;
    return waiting;
  }

  private async waitXid(timeoutMs: number): Promise<readonly XidEvent[]> {
    if (this.eventSet === undefined) await this.createXidSet();
    const set = this.eventSet;
    const timeout = Number.isFinite(timeoutMs)
      ? Math.min(Math.max(Math.round(timeoutMs), 0), 0xffffffff)
      : 0;
    const events: XidEvent[] = [];
    const first = await this.nextEvent(set, timeout).catch(async (error: unknown) => {
      // nvml.h gives UNKNOWN no remedy on the wait, but says of registration that a set answering
      // it "is in undefined state and should be freed": waiting on it again could fail forever.
      if (error instanceof NvmlError && error.code === NVML_ERROR_UNKNOWN) {
        await this.recreateXidSet().catch(() => undefined); // the next listen tries again
      }
      throw error;
    });
    if (first === undefined) return events;
    this.collect(first, events);
    // Whatever else is already queued comes in the same answer.
    for (let drained = 0; drained < MAX_DRAINED_EVENTS; drained++) {
      let next: Record<string, unknown> | undefined;
      try {
        next = await this.nextEvent(set, 0);
      } catch {
        break; // keep the events already read; a lasting failure shows on the next wait
      }
      if (next === undefined) break;
      this.collect(next, events);
    }
    return events;
  }

  /**
   * A new event set with every GPU registered that will register. A GPU whose registration answers
   * UNKNOWN spoils the set (nvml.h: "should be freed"), so the set is built again without it; GPUs
   * still paused after such an answer are left out and keep their reason.
   */
  private async createXidSet(): Promise<void> {
    let left: number[] | undefined;
    for (;;) {
      const out: unknown[] = [null];
      await this.call(this.fns.eventSetCreate, out);
      const set = out[0];
      this.eventDevices.clear();
      let spoiled: number | undefined;
      try {
        left ??= Array.from({ length: await this.deviceCount() }, (_, index) => index).filter(
          (index) => this.xidDue(index),
        );
        spoiled = await this.registerXid(set, left);
      } catch (error) {
        await this.freeXidSet(set);
        throw error;
      }
      if (spoiled === undefined) {
        this.eventSet = set;
        return;
      }
      await this.freeXidSet(set);
      left.splice(left.indexOf(spoiled), 1);
    }
  }

  /**
   * Registers `indexes` on `set` for XID critical errors, noting each GPU as listening or not (and
   * why); stops at the first GPU that answers UNKNOWN and returns its index.
   */
  private async registerXid(set: unknown, indexes: readonly number[]): Promise<number | undefined> {
    for (const index of indexes) {
      let device: unknown;
      try {
        device = await this.handle(index);
      } catch (error) {
        this.xidNotListening.set(index, message(error));
        continue;
      }
      const code = await this.code(
        this.fns.registerEvents,
        device,
        EVENT_TYPE_XID_CRITICAL_ERROR,
        set,
      );
      if (code === NVML_SUCCESS) {
        this.eventDevices.set(address(device), index);
        this.xidNotListening.delete(index);
        this.xidBackoff.delete(index);
        continue;
      }
      // NOT_SUPPORTED, GPU_IS_LOST and the like leave the set usable for the other GPUs.
      this.xidNotListening.set(
        index,
        (await this.error(this.fns.registerEvents.name, code)).message,
      );
      if (code === NVML_ERROR_UNKNOWN) {
        this.backOffXid(index);
        return index;
      }
    }
    return undefined;
  }

  private async recreateXidSet(): Promise<void> {
    const set = this.eventSet;
    this.eventSet = undefined;
    this.eventDevices.clear();
    if (set !== undefined) await this.freeXidSet(set);
    await this.createXidSet();
  }

  /** Frees a set whatever nvmlEventSetFree answers: the set is given up either way. */
  private async freeXidSet(set: unknown): Promise<void> {
    await this.code(this.fns.eventSetFree, set).catch(() => undefined);
  }

  /** One event, or undefined when none came within timeoutMs. */
  private async nextEvent(
    set: unknown,
    timeoutMs: number,
  ): Promise<Record<string, unknown> | undefined> {
    const data: Record<string, unknown> = {};
    const code = await this.code(this.fns.eventSetWait, set, data, timeoutMs);
    if (code === NVML_ERROR_TIMEOUT) return undefined;
    if (code !== NVML_SUCCESS) throw await this.error(this.fns.eventSetWait.name, code);
    return data;
  }

  private collect(data: Record<string, unknown>, events: XidEvent[]): void {
    if ((toBigInt(data['eventType'] ?? 0) & EVENT_TYPE_XID_CRITICAL_ERROR) === 0n) return;
    const gpuIndex = this.eventDevices.get(address(data['device']));
    if (gpuIndex === undefined) return; // not a GPU this set registered
    events.push({ gpuIndex, xid: Number(toBigInt(data['eventData'] ?? 0)) });
  }

  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  callsInFlight(): number {
    return this.checkCalls.callsInFlight() + this.xidCalls.callsInFlight();
  }

  private async shutdown(): Promise<void> {
    // Freeing the set under a running nvmlEventSetWait_v2 would pull it from under the driver.
    await this.waiting?.catch(() => undefined);
    if (this.eventSet !== undefined) {
      const set = this.eventSet;
      this.eventSet = undefined;
      this.eventDevices.clear();
      await this.call(this.fns.eventSetFree, set);
    }
    this.handles.clear();
    await this.call(this.fns.shutdown);
  }
}

const NVML_FI_DEV_NVLINK_LINK_COUNT = 91;
/** NVML_FI_DEV_NVLINK_{CRC_FLIT,CRC_DATA,REPLAY,RECOVERY}_ERROR_COUNT_TOTAL (nvml.h). */
const NVLINK_ERROR_TOTAL_FIELDS = [38, 45, 52, 59];

interface LinkErrorsRead {
  readonly totals: string;
  readonly counts: ReadonlyMap<number, NvLinkState['errors']>;
}
const NVML_NVLINK_MAX_LINKS = 36;
const NVML_GPU_FABRIC_STATE_NOT_SUPPORTED = 0;

/** Where the fields of one nvmlGpuFabricInfo structure lie (byte offsets), and its version word. */
interface FabricLayout {
  readonly name: string;
  readonly bytes: number;
  readonly version: number;
  readonly status: number;
  readonly state: number;
  readonly summary: number | undefined;
}

/**
 * nvml.h's layouts (x86_64 and aarch64): nvmlGpuFabricInfo_v3_t is version (u32) 0, clusterUuid
 * (16 bytes) 4, status (nvmlReturn_t) 20, cliqueId (u32) 24, state (u8) 28, healthMask (u32) 32,
 * healthSummary (u8) 36, 40 bytes in all; v2 the same without healthSummary, 36 bytes; the legacy
 * nvmlGpuFabricInfo_t has no version: clusterUuid 0, status 16, cliqueId 20, state 24, 28 bytes.
 * A version word is NVML_STRUCT_VERSION: the size | the version << 24. The fake NVML
 * (test/fakes/native/nvml) asserts the same sizes at compile time.
 */
const FABRIC_V3: FabricLayout = {
  name: 'v3',
  bytes: 40,
  version: (40 | (3 << 24)) >>> 0,
  status: 20,
  state: 28,
  summary: 36,
};
const FABRIC_V2: FabricLayout = {
  name: 'v2',
  bytes: 36,
  version: (36 | (2 << 24)) >>> 0,
  status: 20,
  state: 28,
  summary: undefined,
};
const FABRIC_LEGACY: FabricLayout = {
  name: '',
  bytes: 28,
  version: 0,
  status: 16,
  state: 24,
  summary: undefined,
};

/**
 * nvmlFieldValue_t: fieldId (u32) at 0, scopeId (u32) 4, timestamp (i64) 8, latencyUsec (i64) 16,
 * valueType (enum) 24, nvmlReturn 28, value (an 8-byte union) 32.
 */
const FIELD_VALUE_BYTES = 40;

/** One nvmlFieldValue_t of the answer, its value read as its valueType says. */
function readFieldValue(values: Buffer, at: number): FieldValue {
  const code = values.readInt32LE(at + 28);
  if (code !== NVML_SUCCESS) return { ok: false, code };
  const type: NvmlValueType | undefined = NVML_VALUE_TYPES[values.readInt32LE(at + 24)];
  const value = at + 32;
  switch (type) {
    case 'double':
      return { ok: true, type, value: values.readDoubleLE(value) };
    case 'unsigned int':
      return { ok: true, type, value: values.readUInt32LE(value) };
    case 'signed int':
      return { ok: true, type, value: values.readInt32LE(value) };
    case 'unsigned short':
      return { ok: true, type, value: values.readUInt16LE(value) };
    case 'signed long long':
      return { ok: true, type, value: values.readBigInt64LE(value) };
    case 'unsigned long':
    case 'unsigned long long':
      // unsigned long is 8 bytes on the LP64 hosts NVML ships for.
      return { ok: true, type, value: values.readBigUInt64LE(value) };
    case undefined:
      // A type this binding does not know: the value cannot be read safely.
      return { ok: false, code: NVML_ERROR_NOT_SUPPORTED };
  }
}

/** nvmlErrorString(code), itself called off the event loop. */
async function describe(fns: Functions, code: number): Promise<string> {
  try {
    // Not behind the limiters: an error must be described even while other calls hang.
    const text = await callNow<unknown>(fns.errorString.native, [code]);
    return typeof text === 'string' && text !== '' ? text : 'Unknown Error';
  } catch {
    return 'Unknown Error';
  }
}

/**
 * Loads NVML from `libraryPath` (a name the dynamic loader finds, or a path) and initialises it.
 * Resolves ok:false, never rejects, when the library is missing, lacks a required symbol, or
 * nvmlInit_v2 fails (no driver, no permission).
 */
export async function loadNvml(libraryPath: string, options: NvmlOptions = {}): Promise<NvmlLoad> {
  let lib: LibraryHandle;
  try {
    lib = koffi.load(libraryPath);
  } catch (error) {
    return { ok: false, reason: `cannot load ${libraryPath}: ${message(error)}` };
  }
  let fns: Functions;
  try {
    fns = declare(lib);
  } catch (error) {
    return { ok: false, reason: `${libraryPath} is not a usable NVML: ${message(error)}` };
  }
  let code: number;
  try {
    code = await callNow<number>(fns.init.native, []);
  } catch (error) {
    return { ok: false, reason: `${fns.init.name}: ${message(error)}` };
  }
  if (code !== NVML_SUCCESS) {
    return { ok: false, reason: `${fns.init.name}: ${await describe(fns, code)} (${code})` };
  }
  return { ok: true, nvml: new KoffiNvml(fns, options.now ?? Date.now) };
}
