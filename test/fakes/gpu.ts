/** In-memory fakes of the GPU ports, for unit tests of the GPU checks (the C fakes test the bindings). */

import type {
  CopyDirection,
  CudaProbe,
  EccState,
  GpuDevice,
  Nvml,
  PcieLinkState,
  RemappedRows,
  XidEvent,
} from '../../exporter/native/ports.js';

export interface FakeGpu {
  device: GpuDevice;
  link: PcieLinkState;
  remapped: RemappedRows | undefined;
  reasons: bigint;
  ecc: EccState;
  processes: number;
  mig: boolean;
  /** Per-method failures: the method rejects with this error. */
  failing: Partial<Record<keyof Nvml, Error>>;
  h2dGBps: number;
  d2hGBps: number;
  hbmGBps: number;
  mismatches: number;
  fp32Tflops: number;
  fp64Tflops: number;
}

export function h200(index: number): FakeGpu {
  return {
    device: {
      index,
      uuid: `GPU-0000000${index}-aaaa-bbbb-cccc-dddddddddddd`,
      name: 'NVIDIA H200',
      pciBusId: `00000000:${(0x18 + index * 0x10).toString(16).toUpperCase()}:00.0`,
    },
    link: { currentGeneration: 5, currentWidth: 16, maxGeneration: 5, maxWidth: 16 },
    remapped: { correctable: 0, uncorrectable: 0, pending: false, failureOccurred: false },
    reasons: 0n,
    ecc: { enabled: true, volatileUncorrected: 0, retiredPagesPending: undefined },
    processes: 0,
    mig: false,
    failing: {},
    h2dGBps: 55.1,
    d2hGBps: 55.3,
    hbmGBps: 4100,
    mismatches: 0,
    fp32Tflops: 60,
    fp64Tflops: 30,
  };
}

export function fakeNode(count = 8): FakeGpu[] {
  return Array.from({ length: count }, (_, i) => h200(i));
}

export interface FakeNvml extends Nvml {
  readonly xids: XidEvent[];
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
  return {
    xids,
    driverVersion: () => Promise.resolve('580.159.04'),
    devices: () => Promise.resolve(gpus.map((g) => g.device)),
    pcieLink: (i) => Promise.resolve().then(() => gpu(i, 'pcieLink').link),
    remappedRows: (i) => Promise.resolve().then(() => gpu(i, 'remappedRows').remapped),
    clockEventReasons: (i) => Promise.resolve().then(() => gpu(i, 'clockEventReasons').reasons),
    ecc: (i) => Promise.resolve().then(() => gpu(i, 'ecc').ecc),
    computeProcessCount: (i) =>
      Promise.resolve().then(() => gpu(i, 'computeProcessCount').processes),
    migEnabled: (i) => Promise.resolve().then(() => gpu(i, 'migEnabled').mig),
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

/** CUDA ordinals in reverse NVML order, as CUDA's "fastest first" order may differ from NVML's. */
export function fakeCuda(gpus: FakeGpu[]): CudaProbe & { readonly calls: string[] } {
  const calls: string[] = [];
  const byOrdinal = [...gpus].reverse();
  const at = (ordinal: number): FakeGpu => {
    const found = byOrdinal[ordinal];
    if (found === undefined) throw new Error(`no CUDA device ${ordinal}`);
    return found;
  };
  return {
    calls,
    callsInFlight: () => 0,
    deviceCount: () => Promise.resolve(byOrdinal.length),
    pciBusId: (o) => Promise.resolve(at(o).device.pciBusId.replace(/^0000/, '')),
    copyBandwidth: (o: number, direction: CopyDirection) => {
      calls.push(`copy ${o} ${direction}`);
      const g = at(o);
      return Promise.resolve(direction === 'h2d' ? g.h2dGBps : g.d2hGBps);
    },
    hbmBandwidth: (o) => Promise.resolve(at(o).hbmGBps),
    memoryPattern: (o) => Promise.resolve({ mismatches: at(o).mismatches, bytesTested: 1 << 30 }),
    flops: (o, precision) =>
      Promise.resolve(precision === 32 ? at(o).fp32Tflops : at(o).fp64Tflops),
  };
}
