/** In-memory fakes of the GPU ports, for unit tests of the GPU checks (the C fakes test the bindings). */

import type {
  CopyDirection,
  CudaProbe,
  EccState,
  GpuDevice,
  Nvml,
  PcieLinkState,
  ProcessCount,
  FieldValue,
  GpuFabric,
  NvLinks,
  RemappedRows,
  XidEvent,
} from '../../exporter/native/ports.js';
import type { SlowdownDurations } from '../../exporter/checks/gpupower.js';

export interface FakeGpu {
  device: GpuDevice;
  link: PcieLinkState;
  remapped: RemappedRows | undefined;
  reasons: bigint;
  /** Answers of the next reads of the clock event reasons, one each, before `reasons` again. */
  reasonReads: bigint[];
  slowdown: SlowdownDurations;
  ecc: EccState;
  processes: number;
  /** Why NVML cannot count this GPU's processes; undefined: it can (MIG still makes it unknown). */
  processesUnknown: string | undefined;
  /** The host NUMA node nearest the GPU; undefined: NVML cannot say. */
  numaNode: number | undefined;
  mig: boolean;
  /** The NVLinks as nvLinks answers them (18 active links, counters 0, by default). */
  nvlinks: NvLinks;
  /** The fabric probe as gpuFabric answers it (completed, success, by default). */
  fabric: GpuFabric;
  /** Per-method failures: the method rejects with this error. */
  failing: Partial<Record<keyof Nvml, Error>>;
  /** Why registering this GPU for XID events fails; undefined: it registers. */
  xidRegistration: Error | undefined;
  /** What every CUDA measurement on this GPU rejects with (e.g. CudaError 46); undefined: none. */
  cudaFailure: Error | undefined;
  h2dGBps: number;
  d2hGBps: number;
  hbmGBps: number;
  mismatches: number;
  fp32Tflops: number;
  fp64Tflops: number;
  /** GB/s of peer copies from this GPU, unless `peers` names the destination (an NVML index). */
  p2pGBps: number;
  /** Peer copies from this GPU to a destination: its GB/s, no peer access, or what it rejects with. */
  peers: Map<number, number | 'no-p2p' | Error>;
}

export function h200(index: number): FakeGpu {
  return {
    device: {
      index,
      uuid: `GPU-0000000${index}-aaaa-bbbb-cccc-dddddddddddd`,
      name: 'NVIDIA H200',
      pciBusId: `00000000:${(0x18 + index * 0x10).toString(16).toUpperCase()}:00.0`,
      serial: `165492300${1000 + index}`,
    },
    link: { currentGeneration: 5, currentWidth: 16, maxGeneration: 5, maxWidth: 16 },
    remapped: { correctable: 0, uncorrectable: 0, pending: false, failureOccurred: false },
    reasons: 0n,
    reasonReads: [],
    slowdown: { hwThermalNs: 0n, hwPowerBrakeNs: 0n },
    ecc: {
      enabled: true,
      volatileUncorrected: 0,
      aggregateUncorrected: 0,
      retiredPagesPending: undefined,
    },
    processes: 0,
    processesUnknown: undefined,
    numaNode: index < 4 ? 0 : 1,
    mig: false,
    nvlinks: {
      supported: true,
      links: Array.from({ length: 18 }, (_, link) => ({
        link,
        active: true,
        errors: { replay: 0, recovery: 0, crc_flit: 0, crc_data: 0 },
      })),
    },
    fabric: { supported: true, state: 3, status: 0, healthSummary: 1, source: 'fake' },
    failing: {},
    xidRegistration: undefined,
    cudaFailure: undefined,
    h2dGBps: 55.1,
    d2hGBps: 55.3,
    hbmGBps: 4100,
    mismatches: 0,
    fp32Tflops: 60,
    fp64Tflops: 30,
    p2pGBps: 390,
    peers: new Map(),
  };
}

export function fakeNode(count = 8): FakeGpu[] {
  return Array.from({ length: count }, (_, i) => h200(i));
}

export interface FakeNvml extends Nvml {
  readonly xids: XidEvent[];
  /** How often listenXidEvents was called. */
  readonly listens: () => number;
}

export function fakeNvml(gpus: FakeGpu[]): FakeNvml {
  const gpu = (index: number, method: keyof Nvml): FakeGpu => {
    const found = gpus.find((g) => g.device.index === index);
    if (found === undefined) throw new Error(`no GPU ${index}`);
    const error = found.failing[method];
    if (error !== undefined) throw error;
    return found;
  };
  const xids: XidEvent[] = [];
  let listens = 0;
  return {
    xids,
    listens: () => listens,
    listenXidEvents: () => {
      listens += 1;
      const failing = gpus.filter((g) => g.xidRegistration !== undefined);
      return Promise.resolve(
        new Map(failing.map((g) => [g.device.index, g.xidRegistration?.message ?? ''])),
      );
    },
    driverVersion: () => Promise.resolve('580.159.04'),
    devices: () => Promise.resolve(gpus.map((g) => g.device)),
    pcieLink: (i) => Promise.resolve().then(() => gpu(i, 'pcieLink').link),
    remappedRows: (i) => Promise.resolve().then(() => gpu(i, 'remappedRows').remapped),
    clockEventReasons: (i) =>
      Promise.resolve().then(() => {
        const g = gpu(i, 'clockEventReasons');
        return g.reasonReads.shift() ?? g.reasons;
      }),
    // The slowdown durations under the ids of the 580 driver above (252, 253); other ids unsupported.
    fieldValues: (i, ids) =>
      Promise.resolve().then(() => {
        const { slowdown } = gpu(i, 'fieldValues');
        const byId = new Map([
          [252, slowdown.hwThermalNs],
          [253, slowdown.hwPowerBrakeNs],
        ]);
        return ids.map((id): FieldValue => {
          const ns = byId.get(id);
          return ns === undefined
            ? { ok: false, code: 3 }
            : { ok: true, type: 'unsigned long long', value: ns };
        });
      }),
    ecc: (i) => Promise.resolve().then(() => gpu(i, 'ecc').ecc),
    computeProcessCount: (i) =>
      Promise.resolve().then((): ProcessCount => {
        const g = gpu(i, 'computeProcessCount');
        if (g.mig) return { known: false, reason: 'MIG is enabled' };
        if (g.processesUnknown !== undefined) return { known: false, reason: g.processesUnknown };
        return { known: true, count: g.processes };
      }),
    numaNode: (i) => Promise.resolve().then(() => gpu(i, 'numaNode').numaNode),
    migEnabled: (i) => Promise.resolve().then(() => gpu(i, 'migEnabled').mig),
    nvLinks: (i) => Promise.resolve().then(() => gpu(i, 'nvLinks').nvlinks),
    gpuFabric: (i) => Promise.resolve().then(() => gpu(i, 'gpuFabric').fabric),
    waitXidEvents: (timeoutMs) =>
      xids.length > 0
        ? Promise.resolve(xids.splice(0))
        : new Promise((resolve) =>
            setTimeout(() => resolve(xids.splice(0)), Math.min(timeoutMs, 10)),
          ),
    close: () => Promise.resolve(),
    callsInFlight: () => 0,
  };
}

/** Whether two bus ids name one device, whatever the width of their hex fields. */
function sameBus(a: string, b: string): boolean {
  const fields = (id: string) => id.split(/[:.]/).map((part) => parseInt(part, 16));
  return fields(a).join(':') === fields(b).join(':');
}

/**
 * CUDA ordinals in reverse NVML order, as CUDA's "fastest first" order may differ from NVML's.
 * `calls` logs every call that concerns one device, as "<kind> <ordinal> ...": the measurements,
 * which create a context on it ("copy 7 h2d node 1", "hbm 7", "pattern 7", "flops 7 32", "p2p 7 6"
 * from ordinal 7 to 6, which creates one on both), the peer-access queries ("can peer 7 6"), and the
 * bus-id calls ("bus id 7" for a lookup that found ordinal 7, "bus id none 0000:E1:00.0" for one
 * that found nothing, "ordinal's bus id 7"). Counting devices concerns none and is not logged.
 */
export function fakeCuda(gpus: FakeGpu[]): CudaProbe & { readonly calls: string[] } {
  const calls: string[] = [];
  const byOrdinal = [...gpus].reverse();
  const at = (ordinal: number): FakeGpu => {
    const found = byOrdinal[ordinal];
    if (found === undefined) throw new Error(`no CUDA device ${ordinal}`);
    return found;
  };
  /** Logs a measurement and answers it, or rejects as the GPU's cudaFailure says. */
  const measure = <T>(call: string, ordinal: number, answer: (g: FakeGpu) => T): Promise<T> =>
    Promise.resolve().then(() => {
      calls.push(call);
      const g = at(ordinal);
      if (g.cudaFailure !== undefined) throw g.cudaFailure;
      return answer(g);
    });
  return {
    calls,
    callsInFlight: () => 0,
    deviceCount: () => Promise.resolve(byOrdinal.length),
    pciBusId: (o) =>
      Promise.resolve().then(() => {
        calls.push(`ordinal's bus id ${o}`);
        return at(o).device.pciBusId.replace(/^0000/, '');
      }),
    deviceByBusId: (busId) =>
      Promise.resolve().then(() => {
        const ordinal = byOrdinal.findIndex((g) => sameBus(g.device.pciBusId, busId));
        calls.push(ordinal < 0 ? `bus id none ${busId}` : `bus id ${ordinal}`);
        return ordinal < 0 ? undefined : ordinal;
      }),
    copyBandwidth: (o: number, direction: CopyDirection, _b: number, _r: number, node?: number) =>
      measure(`copy ${o} ${direction} node ${node ?? 'none'}`, o, (g) => ({
        gbps: direction === 'h2d' ? g.h2dGBps : g.d2hGBps,
        placement:
          node === undefined
            ? { bound: false, node, reason: 'no NUMA node known for this GPU' }
            : { bound: true, node },
      })),
    hbmBandwidth: (o) => measure(`hbm ${o}`, o, (g) => g.hbmGBps),
    memoryPattern: (o) =>
      measure(`pattern ${o}`, o, (g) => ({ mismatches: g.mismatches, bytesTested: 1 << 30 })),
    flops: (o, precision) =>
      measure(`flops ${o} ${precision}`, o, (g) =>
        precision === 32 ? g.fp32Tflops : g.fp64Tflops,
      ),
    canAccessPeer: (src, dst) =>
      Promise.resolve().then(() => {
        calls.push(`can peer ${src} ${dst}`);
        return at(src).peers.get(at(dst).device.index) !== 'no-p2p';
      }),
    p2pBandwidth: (src, dst) =>
      measure(`p2p ${src} ${dst}`, src, (g) => {
        const peer = g.peers.get(at(dst).device.index) ?? g.p2pGBps;
        if (peer instanceof Error) throw peer;
        return peer === 'no-p2p' ? undefined : peer;
      }),
  };
}
