// The koffi binding of the CUDA probe (exporter/native/cuda-probe.ts) over the real probe.cu,
// built with nvcc --cudart shared against the fake CUDA runtime (test/fakes/native/cuda), which
// jest's globalSetup builds with `make -s -C cuda fake`. The fake is steered through its exported
// fakecuda_* functions: loading it here by the same absolute path gives the very library the
// probe was linked against (the probe finds it through its rpath $ORIGIN).
import { describe, test, expect, beforeEach } from '@jest/globals';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadCudaProbe } from '../../exporter/native/cuda-probe.js';
import type { CudaProbe } from '../../exporter/native/ports.js';
import { FAKE_CUDART, FAKE_PROBE, cudaRejection, fakeCudaControl } from '../fakes/native-fakes.js';

const loaded = loadCudaProbe(FAKE_PROBE);
if (!loaded.ok) throw new Error(loaded.reason);
const probe: CudaProbe = loaded.probe;

const { lib: runtime, ...cudaControl } = fakeCudaControl();
const native = {
  ...cudaControl,
  setError: runtime.func('void fakecuda_set_error(int code)'),
  setBandwidth: runtime.func('int fakecuda_set_bandwidth(int device, int direction, double gbps)'),
  setTflops: runtime.func('int fakecuda_set_tflops(int device, int precision, double tflops)'),
  setMemory: runtime.func('int fakecuda_set_memory(int device, unsigned long long bytes)'),
  corrupt: runtime.func('int fakecuda_corrupt(int device, unsigned long long words)'),
  setHang: runtime.func('void fakecuda_set_hang(int ms)'),
  fail: runtime.func('int fakecuda_fail(const char *function, int code)'),
  launches: runtime.func('unsigned long long fakecuda_launches(const char *kernel)'),
};

/** Calls a control that returns 0 on success, failing the test otherwise. */
function control(fn: (typeof native)[keyof typeof native], ...args: unknown[]): void {
  expect(Number(fn(...args))).toBe(0);
}
const H2D = 0;
const D2H = 1;
const D2D = 2;
const setBandwidth = (device: number, direction: number, gbps: number): void =>
  control(native.setBandwidth, device, direction, gbps);
const setTflops = (device: number, precision: number, tflops: number): void =>
  control(native.setTflops, device, precision, tflops);
const launches = (kernel: string): number => Number(native.launches(kernel));
/** Calls the fake's log has of `fn` (null: any runtime function) touching `device`. */
const callsOn = (fn: string | null, device: number): number => Number(native.callsOn(fn, device));

/** Nothing the probe allocated or created outlives a call. */
function expectNothingLeft(): void {
  expect(Number(native.liveAllocations())).toBe(0);
  expect(Number(native.liveEvents())).toBe(0);
}

/** Within 1% of the configured figure. */
function expectFigure(measured: number, configured: number): void {
  expect(Math.abs(measured / configured - 1)).toBeLessThan(0.01);
}

const MiB = 1 << 20;

beforeEach(() => {
  native.reset();
});

describe('context lifetime', () => {
  beforeEach(() => {
    native.reset();
  });

  test('every measurement releases its CUDA context, so the exporter holds none between them', async () => {
    await probe.copyBandwidth(2, 'h2d', 1 << 20, 2);
    expect(native.resets(2)).toBe(1);
    await probe.hbmBandwidth(2, 1 << 20, 2);
    await probe.memoryPattern(2, 0.1);
    await probe.flops(2, 32);
    expect(native.resets(2)).toBe(4);
    expect(native.resets(3)).toBe(0);
    expect(Number(native.contexts(2))).toBe(4);
    expect(Number(native.liveContexts())).toBe(0);
  });

  test('counting devices and reading bus ids creates no context and sets no device', async () => {
    const count = await probe.deviceCount();
    for (let device = 0; device < count; device++) await probe.pciBusId(device);
    expect(Number(native.liveContexts())).toBe(0);
    for (let device = 0; device < count; device++) {
      expect(Number(native.contexts(device))).toBe(0);
      expect(callsOn(null, device)).toBe(1);
      expect(callsOn('cudaDeviceGetPCIBusId', device)).toBe(1);
    }
  });

  test('a lookup by bus id creates no context and names only the device it finds', async () => {
    expect(await probe.deviceByBusId('0000:52:00.0')).toBe(2);
    expect(Number(native.liveContexts())).toBe(0);
    expect(Number(native.contexts(2))).toBe(0);
    for (let device = 0; device < 8; device++) {
      expect(callsOn(null, device)).toBe(device === 2 ? 1 : 0);
    }
    expect(callsOn('cudaDeviceGetByPCIBusId', 2)).toBe(1);
  });

  const measurements: [string, () => Promise<unknown>][] = [
    ['copyBandwidth', () => probe.copyBandwidth(3, 'h2d', MiB, 2, 0)],
    ['hbmBandwidth', () => probe.hbmBandwidth(3, MiB, 2)],
    ['memoryPattern', () => probe.memoryPattern(3, 0.1)],
    ['flops', () => probe.flops(3, 64)],
  ];

  test.each(measurements)(
    '%s on a GPU another process holds (error 46) resets no device and leaves no context',
    async (_, measure) => {
      control(native.setUnavailable, 3, 1);
      const error = await cudaRejection(measure());
      expect([error.code, error.description]).toStrictEqual([
        46,
        'CUDA-capable device(s) is/are busy or unavailable',
      ]);
      // cudaSetDevice failed, so the thread's current device is another GPU (0 on a fresh
      // thread): a reset there would create and destroy a context on someone else's GPU.
      for (let device = 0; device < 8; device++) {
        expect(native.resets(device)).toBe(0);
        expect(Number(native.contexts(device))).toBe(0);
      }
      expect(callsOn(null, 3)).toBe(1);
      expect(callsOn('cudaSetDevice', 3)).toBe(1);
      expectNothingLeft();
    },
  );
});

describe('NUMA placement of the pinned host buffer', () => {
  test('no node: cudaMallocHost, and the placement says why', async () => {
    const { gbps, placement } = await probe.copyBandwidth(1, 'h2d', 2 * MiB, 2);
    expectFigure(gbps, 54.6);
    expect(placement).toStrictEqual({
      bound: false,
      node: undefined,
      reason: 'no NUMA node known for this GPU',
    });
    expect(callsOn('cudaMallocHost', 1)).toBe(1);
    expect(callsOn('cudaHostRegister', 1)).toBe(0);
    expectNothingLeft();
  });

  test('node 0: mbind, touch and cudaHostRegister, or cudaMallocHost where the kernel refuses', async () => {
    const { gbps, placement } = await probe.copyBandwidth(1, 'd2h', 2 * MiB, 2, 0);
    expectFigure(gbps, 55.1);
    // Docker's default seccomp profile allows mbind only with CAP_SYS_NICE: EPERM without it.
    if (placement.bound) {
      expect(placement).toStrictEqual({ bound: true, node: 0 });
      expect(callsOn('cudaHostRegister', 1)).toBe(1);
      expect(callsOn('cudaHostUnregister', 1)).toBe(1);
      expect(callsOn('cudaMallocHost', 1)).toBe(0);
    } else {
      expect(placement).toStrictEqual({
        bound: false,
        node: 0,
        reason: 'mbind to node 0 refused (EPERM)',
      });
      expect(callsOn('cudaMallocHost', 1)).toBe(1);
    }
    expectNothingLeft();
  });

  test('a node this host lacks: EINVAL from mbind, and the copy still runs from cudaMallocHost', async () => {
    const { gbps, placement } = await probe.copyBandwidth(2, 'h2d', 2 * MiB, 2, 1000);
    expectFigure(gbps, 54.6);
    expect(placement.bound).toBe(false);
    expect(placement.node).toBe(1000);
    expect(placement.bound ? '' : placement.reason).toMatch(
      /^mbind to node 1000 refused \((EINVAL|EPERM)\)$/,
    );
    expect(callsOn('cudaHostRegister', 2)).toBe(0);
    expect(callsOn('cudaMallocHost', 2)).toBe(1);
    expectNothingLeft();
  });

  test('a registration CUDA refuses falls back to cudaMallocHost and names the CUDA error', async () => {
    control(native.fail, 'cudaHostRegister', 801);
    const { gbps, placement } = await probe.copyBandwidth(0, 'h2d', 2 * MiB, 2, 0);
    expectFigure(gbps, 54.6);
    expect(placement.bound).toBe(false);
    expect(placement.bound ? '' : placement.reason).toMatch(
      /^(cudaHostRegister refused \(CUDA error 801\)|mbind to node 0 refused \(EPERM\))$/,
    );
    expect(callsOn('cudaMallocHost', 0)).toBe(1);
    expectNothingLeft();
  });
});

describe('loadCudaProbe', () => {
  test('a missing library gives a reason naming the path', () => {
    const result = loadCudaProbe('/nonexistent/libautopilot-probe.so');
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.reason).toMatch(/^cannot load \/nonexistent\/libautopilot-probe\.so: .+/);
  });

  test('a library without the probe functions gives a reason naming the missing one', () => {
    const result = loadCudaProbe(FAKE_CUDART);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.reason).toContain(`cannot load ${FAKE_CUDART}: `);
    expect(result.reason).toContain('ap_device_count');
  });

  test('loading the same probe twice works (no koffi type is declared twice)', async () => {
    const again = loadCudaProbe(FAKE_PROBE);
    expect(again.ok).toBe(true);
    if (!again.ok) return;
    expect(await again.probe.deviceCount()).toBe(8);
  });
});

describe('deviceCount', () => {
  test('the fake default is 8 devices', async () => {
    expect(await probe.deviceCount()).toBe(8);
  });

  test('follows the configured number of devices', async () => {
    control(native.setDevices, 3);
    expect(await probe.deviceCount()).toBe(3);
  });

  test('no device (cudaErrorNoDevice, 100) is 0 devices, not an error', async () => {
    control(native.setDevices, 0);
    expect(await probe.deviceCount()).toBe(0);
    native.setDevices(8);
    native.setError(100);
    expect(await probe.deviceCount()).toBe(0);
  });

  test('no driver (cudaErrorInsufficientDriver, 35) is 0 devices, not an error', async () => {
    native.setError(35);
    expect(await probe.deviceCount()).toBe(0);
  });

  test('any other error rejects with CudaError', async () => {
    native.setError(3);
    const error = await cudaRejection(probe.deviceCount());
    expect(error.fn).toBe('ap_device_count');
    expect(error.code).toBe(3);
    expect(error.description).toBe('initialization error');
    expect(error.message).toBe('ap_device_count: initialization error (3)');
  });
});

describe('pciBusId', () => {
  test('gives each device its 4-hex-digit-domain bus id, the fake NVML buses', async () => {
    const ids = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map((device) => probe.pciBusId(device)));
    expect(ids).toStrictEqual([
      '0000:1B:00.0',
      '0000:43:00.0',
      '0000:52:00.0',
      '0000:61:00.0',
      '0000:9D:00.0',
      '0000:C3:00.0',
      '0000:D1:00.0',
      '0000:DF:00.0',
    ]);
  });

  test('devices past the eighth continue at bus E1', async () => {
    control(native.setDevices, 32);
    expect(await probe.pciBusId(8)).toBe('0000:E1:00.0');
    expect(await probe.pciBusId(31)).toBe('0000:F8:00.0');
  });

  test('a device past the last rejects with cudaErrorInvalidDevice', async () => {
    const error = await cudaRejection(probe.pciBusId(8));
    expect([error.fn, error.code, error.description]).toStrictEqual([
      'ap_pci_bus_id',
      101,
      'invalid device ordinal',
    ]);
  });
});

describe('deviceByBusId', () => {
  test('finds each device by its bus id, in the forms the runtime API documents', async () => {
    const ordinals = await Promise.all(
      ['1B', '43', '52', '61', '9D', 'C3', 'D1', 'DF'].map((bus) =>
        probe.deviceByBusId(`0000:${bus}:00.0`),
      ),
    );
    expect(ordinals).toStrictEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(await probe.deviceByBusId('00000000:9d:00.0')).toBe(4); // NVML's 8-digit domain
    expect(await probe.deviceByBusId('0000:9D:00')).toBe(4);
    expect(await probe.deviceByBusId('9D:00.0')).toBe(4);
  });

  test('a bus id with no device (cudaErrorInvalidDevice) is undefined, not an error', async () => {
    expect(await probe.deviceByBusId('0000:E1:00.0')).toBeUndefined(); // a ninth device
    expect(callsOn('cudaDeviceGetByPCIBusId', -1)).toBe(1);
    control(native.setDevices, 9);
    expect(await probe.deviceByBusId('0000:E1:00.0')).toBe(8);
  });

  test('cudaErrorInvalidValue, the other documented failure, also means no device', async () => {
    control(native.fail, 'cudaDeviceGetByPCIBusId', 1);
    expect(await probe.deviceByBusId('0000:1B:00.0')).toBeUndefined();
  });

  test('other errors reject with the CUDA error', async () => {
    native.setError(3);
    const error = await cudaRejection(probe.deviceByBusId('0000:1B:00.0'));
    expect([error.fn, error.code]).toStrictEqual(['ap_device_by_bus_id', 3]);
  });

  test('a malformed bus id rejects with cudaErrorInvalidValue without a call', async () => {
    for (const busId of ['', 'GPU-0', '1B', '0000:1B:00.0;', ':1B:00.0']) {
      const error = await cudaRejection(probe.deviceByBusId(busId));
      expect([error.fn, error.code]).toStrictEqual(['ap_device_by_bus_id', 1]);
    }
    expect(callsOn('cudaDeviceGetByPCIBusId', -1)).toBe(0);
  });
});

describe('copyBandwidth', () => {
  test('host to device gives the configured GB/s', async () => {
    setBandwidth(0, H2D, 25.3);
    expectFigure((await probe.copyBandwidth(0, 'h2d', 8 * MiB, 5)).gbps, 25.3);
    expectNothingLeft();
  });

  test('device to host gives the configured GB/s', async () => {
    setBandwidth(0, D2H, 26.9);
    expectFigure((await probe.copyBandwidth(0, 'd2h', 8 * MiB, 5)).gbps, 26.9);
    expectNothingLeft();
  });

  test('the two directions are measured separately', async () => {
    setBandwidth(1, H2D, 12.5);
    setBandwidth(1, D2H, 50.0);
    expectFigure((await probe.copyBandwidth(1, 'h2d', 4 * MiB, 3)).gbps, 12.5);
    expectFigure((await probe.copyBandwidth(1, 'd2h', 4 * MiB, 3)).gbps, 50.0);
  });

  test('the defaults are the H200 capture figures', async () => {
    expectFigure((await probe.copyBandwidth(0, 'h2d', 4 * MiB, 2)).gbps, 54.6);
    expectFigure((await probe.copyBandwidth(0, 'd2h', 4 * MiB, 2)).gbps, 55.1);
  });

  test('each device gives its own figure, also when all are measured at once', async () => {
    const configured = [54.6, 55.0, 12.1, 54.9, 27.4, 55.3, 54.2, 6.3];
    configured.forEach((gbps, device) => setBandwidth(device, H2D, gbps));
    const measured = await Promise.all(
      configured.map((_, device) => probe.copyBandwidth(device, 'h2d', 2 * MiB, 4)),
    );
    measured.forEach(({ gbps }, device) => expectFigure(gbps, configured[device] ?? NaN));
    expectNothingLeft();
  });

  test('a slow measurement leaves the event loop free', async () => {
    setBandwidth(0, H2D, 40);
    native.setHang(80); // one warm-up and two timed copies: at least 240 ms
    const order: string[] = [];
    const timer = new Promise<void>((resolve) =>
      setTimeout(() => {
        order.push('timer');
        resolve();
      }, 20),
    );
    const started = performance.now();
    const measurement = probe.copyBandwidth(0, 'h2d', MiB, 2).then(({ gbps }) => {
      order.push('measurement');
      return gbps;
    });
    await timer;
    expect(order).toStrictEqual(['timer']);
    expectFigure(await measurement, 40);
    expect(order).toStrictEqual(['timer', 'measurement']);
    expect(performance.now() - started).toBeGreaterThanOrEqual(230);
  });

  test('a device past the last rejects with cudaErrorInvalidDevice', async () => {
    const error = await cudaRejection(probe.copyBandwidth(8, 'h2d', MiB, 1));
    expect([error.fn, error.code]).toStrictEqual(['ap_copy_bandwidth', 101]);
  });

  test('no driver rejects with the runtime error 35 and its description', async () => {
    native.setError(35);
    const error = await cudaRejection(probe.copyBandwidth(0, 'd2h', MiB, 1));
    expect(error.fn).toBe('ap_copy_bandwidth');
    expect(error.code).toBe(35);
    expect(error.description).toBe('CUDA driver version is insufficient for CUDA runtime version');
  });

  test('a failed pinned allocation rejects with out of memory and leaves nothing behind', async () => {
    control(native.fail, 'cudaMallocHost', 2);
    const error = await cudaRejection(probe.copyBandwidth(0, 'h2d', MiB, 1));
    expect([error.fn, error.code, error.description]).toStrictEqual([
      'ap_copy_bandwidth',
      2,
      'out of memory',
    ]);
    expectNothingLeft();
  });

  test('a copy that fails midway frees what was allocated', async () => {
    control(native.fail, 'cudaMemcpyAsync', 719);
    const error = await cudaRejection(probe.copyBandwidth(0, 'd2h', MiB, 3));
    expect([error.fn, error.code, error.description]).toStrictEqual([
      'ap_copy_bandwidth',
      719,
      'unspecified launch failure',
    ]);
    expectNothingLeft();
  });

  test('invalid arguments reject with cudaErrorInvalidValue before any native work', async () => {
    for (const call of [
      () => probe.copyBandwidth(0, 'h2d', 0, 1),
      () => probe.copyBandwidth(0, 'h2d', MiB, 0),
      () => probe.copyBandwidth(-1, 'h2d', MiB, 1),
      () => probe.copyBandwidth(0.5, 'd2h', MiB, 1),
      () => probe.copyBandwidth(0, 'd2h', MiB, 1, -1),
      () => probe.copyBandwidth(0, 'd2h', MiB, 1, 1.5),
    ]) {
      const error = await cudaRejection(call());
      expect([error.fn, error.code, error.description]).toStrictEqual([
        'ap_copy_bandwidth',
        1,
        'invalid argument',
      ]);
    }
  });
});

describe('hbmBandwidth', () => {
  test('counts bytes read plus written: the configured device-to-device figure', async () => {
    expectFigure(await probe.hbmBandwidth(0, 8 * MiB, 4), 4260);
    setBandwidth(3, D2D, 1935);
    expectFigure(await probe.hbmBandwidth(3, 8 * MiB, 4), 1935);
    expectNothingLeft();
  });

  test('more than the device holds rejects with out of memory', async () => {
    control(native.setMemory, 0, 16 * MiB);
    const error = await cudaRejection(probe.hbmBandwidth(0, 12 * MiB, 1));
    expect([error.fn, error.code]).toStrictEqual(['ap_hbm_bandwidth', 2]);
    expectNothingLeft();
  });
});

describe('memoryPattern', () => {
  beforeEach(() => {
    control(native.setMemory, -1, 16 * MiB);
  });

  // The probe first allocates its 8-byte counter, then tests `fraction` of what is left free,
  // rounded down to whole 64-bit words.
  const testedBytes = (memory: number, fraction: number): number =>
    Math.floor((fraction * (memory - 8)) / 8) * 8;

  test('healthy memory: no mismatches, the fraction of free memory tested', async () => {
    const result = await probe.memoryPattern(0, 0.5);
    expect(result).toStrictEqual({ mismatches: 0, bytesTested: testedBytes(16 * MiB, 0.5) });
    // Six patterns, one chunk: the check kernel ran six times, the address fill twice.
    expect(launches('ap_pattern_check')).toBe(6);
    expect(launches('ap_pattern_fill')).toBe(2);
    expectNothingLeft();
  });

  test('fraction 1 tests all the memory left free', async () => {
    expect(await probe.memoryPattern(3, 1)).toStrictEqual({
      mismatches: 0,
      bytesTested: 16 * MiB - 8,
    });
    expectNothingLeft();
  });

  test('reports exactly the injected number of bad words', async () => {
    control(native.corrupt, 0, 37);
    expect(await probe.memoryPattern(0, 0.25)).toStrictEqual({
      mismatches: 37,
      bytesTested: testedBytes(16 * MiB, 0.25),
    });
    // The fake's corruption is used up: the next run is clean.
    expect((await probe.memoryPattern(0, 0.25)).mismatches).toBe(0);
  });

  test('corruption spanning several pattern passes is counted in full', async () => {
    const words = testedBytes(16 * MiB, 0.1) / 8;
    control(native.corrupt, 2, words + 1000);
    const result = await probe.memoryPattern(2, 0.1);
    expect(result.mismatches).toBe(words + 1000);
  });

  test('corruption on one device does not show on another', async () => {
    control(native.corrupt, 1, 5);
    expect((await probe.memoryPattern(0, 0.1)).mismatches).toBe(0);
    expect((await probe.memoryPattern(1, 0.1)).mismatches).toBe(5);
  });

  test('a failing kernel launch rejects and frees every chunk', async () => {
    control(native.fail, 'cudaLaunchKernel', 719);
    const error = await cudaRejection(probe.memoryPattern(0, 0.5));
    expect([error.fn, error.code]).toStrictEqual(['ap_memory_pattern', 719]);
    expectNothingLeft();
  });

  test('an uncorrectable ECC error at the final synchronisation rejects with it', async () => {
    control(native.fail, 'cudaDeviceSynchronize', 214);
    const error = await cudaRejection(probe.memoryPattern(0, 0.1));
    expect([error.fn, error.code, error.description]).toStrictEqual([
      'ap_memory_pattern',
      214,
      'uncorrectable ECC error encountered',
    ]);
    expectNothingLeft();
  });

  test('a fraction outside (0, 1] rejects with cudaErrorInvalidValue', async () => {
    for (const fraction of [0, -0.1, 1.5, Number.NaN]) {
      const error = await cudaRejection(probe.memoryPattern(0, fraction));
      expect([error.fn, error.code]).toStrictEqual(['ap_memory_pattern', 1]);
    }
  });
});

describe('errors do not outlive their call', () => {
  // CUDA keeps the last error per thread and koffi reuses its worker threads: a failed call must
  // not make the next one, on the same thread, see a launch failure that did not happen.
  test('measurements after failed calls succeed', async () => {
    for (let round = 0; round < 4; round += 1) {
      await cudaRejection(probe.flops(99, 32));
      await cudaRejection(probe.memoryPattern(99, 0.5));
      expectFigure(await probe.flops(0, 32), 60);
      expect((await probe.memoryPattern(0, 0.01)).mismatches).toBe(0);
    }
  });
});

describe('flops', () => {
  test('FP32 and FP64 give the configured TFLOPS', async () => {
    expectFigure(await probe.flops(0, 32), 60);
    expectFigure(await probe.flops(0, 64), 30);
    setTflops(4, 32, 48.5);
    setTflops(4, 64, 7.25);
    expectFigure(await probe.flops(4, 32), 48.5);
    expectFigure(await probe.flops(4, 64), 7.25);
    expect(launches('ap_fma32')).toBeGreaterThan(1);
    expect(launches('ap_fma64')).toBeGreaterThan(1);
    expectNothingLeft();
  });

  test('a failing kernel launch rejects with CudaError', async () => {
    control(native.fail, 'cudaLaunchKernel', 98);
    const error = await cudaRejection(probe.flops(0, 64));
    expect([error.fn, error.code, error.description]).toStrictEqual([
      'ap_flops',
      98,
      'invalid device function',
    ]);
    expectNothingLeft();
  });

  test('a device past the last rejects with cudaErrorInvalidDevice', async () => {
    control(native.setDevices, 2);
    const error = await cudaRejection(probe.flops(2, 32));
    expect([error.fn, error.code]).toStrictEqual(['ap_flops', 101]);
  });
});

describe('FAKE_CUDA_SCENARIO', () => {
  // A separate process (an exporter under an end-to-end test) configures the fake through the
  // environment, read at its first call. Driven here with koffi directly, without the binding.
  const script = `
    import koffi from 'koffi';
    const lib = koffi.load(process.argv[1]);
    const count = lib.func('int ap_device_count(_Out_ int *count)');
    const copy = lib.func('int ap_copy_bandwidth(int device, int direction, size_t bytes, int repetitions, int numa_node, _Out_ double *gbps, _Out_ int *placement, _Out_ int *placement_error)');
    const pattern = lib.func('int ap_memory_pattern(int device, double fraction, _Out_ unsigned long long *m, _Out_ unsigned long long *b)');
    const flops = lib.func('int ap_flops(int device, int precision, _Out_ double *tflops)');
    const n = [0], h2d = [0], unused = [0], m = [0], b = [0], t = [0];
    const codes = [count(n), copy(1, 0, 1 << 20, 2, -1, h2d, [0], [0]), copy(2, 0, 1 << 20, 2, -1, unused, [0], [0]),
                   pattern(0, 0.01, m, b), flops(1, 64, t)];
    console.log(JSON.stringify({ codes, devices: n[0], h2d: h2d[0], mismatches: Number(m[0]), tflops64: t[0] }));
  `;

  test('configures devices, bandwidth, corruption and TFLOPS in another process', async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--input-type=module', '-e', script, FAKE_PROBE],
      {
        cwd: join(import.meta.dirname, '..', '..'),
        env: {
          ...process.env,
          FAKE_CUDA_SCENARIO: 'devices=2;h2d=1:12.5;corrupt=0:3;tflops64=*:9.5',
        },
        timeout: 20000,
      },
    );
    const result = JSON.parse(stdout) as {
      codes: number[];
      devices: number;
      h2d: number;
      mismatches: number;
      tflops64: number;
    };
    expect(result.codes).toStrictEqual([0, 0, 101, 0, 0]);
    expect(result.devices).toBe(2);
    expectFigure(result.h2d, 12.5);
    expect(result.mismatches).toBe(3);
    expectFigure(result.tflops64, 9.5);
  });
});
