/**
 * The C fakes the integration tests run the real bindings over (test/fakes/native and the real
 * probe.cu linked against the fake CUDA runtime, built into build/fakes by jest's globalSetup), and
 * their steering functions. A control loads its library by the same absolute path as the binding
 * under test, so it gets the very same handle, and so the same state.
 */

import { afterEach, beforeEach, expect } from '@jest/globals';
import koffi from 'koffi';
import { join } from 'node:path';
import { loadNvml } from '../../exporter/native/nvml.js';
import { CudaError, type Nvml, type NvmlLoad } from '../../exporter/native/ports.js';

export const FAKES_BUILD = join(import.meta.dirname, '..', '..', 'build', 'fakes');
export const FAKE_NVML = join(FAKES_BUILD, 'nvml', 'libnvidia-ml.so.1');
/** The old-driver build, without the functions newer drivers added. */
export const FAKE_NVML_OLD = join(FAKES_BUILD, 'nvml-old', 'libnvidia-ml.so.1');
export const FAKE_CUDART = join(FAKES_BUILD, 'cuda', 'libcudart.so.13');
/** The real probe.cu, linked against the fake CUDA runtime. */
export const FAKE_PROBE = join(FAKES_BUILD, 'cuda', 'libautopilot-probe.so');

/** reset, apply (a scenario such as "gpus=4;procs=2:1"; 0 when understood) and calls of a function. */
export function fakeNvmlControl(path = FAKE_NVML) {
  const lib = koffi.load(path);
  return {
    reset: lib.func('void fakenvml_reset(void)'),
    apply: lib.func('int fakenvml_apply(const char *scenario)'),
    calls: lib.func('unsigned long fakenvml_calls(const char *fn)'),
  };
}

/** The fake CUDA runtime's controls several tests share; `lib` declares the others. */
export function fakeCudaControl() {
  const lib = koffi.load(FAKE_CUDART);
  return {
    lib,
    reset: lib.func('void fakecuda_reset(void)'),
    setDevices: lib.func('int fakecuda_set_devices(int n)'),
    setUnavailable: lib.func('int fakecuda_set_unavailable(int device, int on)'),
    /** Calls in the runtime's log of `function` (null: any) touching `device` (-1: none). */
    callsOn: lib.func('int fakecuda_calls_on(const char *function, int device)'),
    contexts: lib.func('int fakecuda_contexts(int device)'),
    resets: lib.func('int fakecuda_resets(int device)'),
    liveAllocations: lib.func('int fakecuda_live_allocations(void)'),
    liveEvents: lib.func('int fakecuda_live_events(void)'),
    liveContexts: lib.func('int fakecuda_live_contexts(void)'),
  };
}

/** The CudaError `promise` rejects with; the test fails if it settles any other way. */
export async function cudaRejection(promise: Promise<unknown>): Promise<CudaError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(CudaError);
  return error as CudaError;
}

/**
 * For a test file over both fakes: resets them before each test, and after each closes the NVML
 * the returned function loaded. That function steers the fake libnvidia-ml with `scenario` and
 * loads it through the real binding.
 */
export function openFakeNvmlEachTest(): (
  scenario: string,
) => Promise<Extract<NvmlLoad, { ok: true }>> {
  const nvml = fakeNvmlControl();
  const cuda = fakeCudaControl();
  let opened: Nvml | undefined;
  beforeEach(() => {
    nvml.reset();
    cuda.reset();
  });
  afterEach(async () => {
    await opened?.close();
    opened = undefined;
  });
  return async (scenario) => {
    expect(nvml.apply(scenario)).toBe(0);
    const load = await loadNvml(FAKE_NVML);
    if (!load.ok) throw new Error(`the fake NVML did not load: ${load.reason}`);
    opened = load.nvml;
    return load;
  };
}
