/**
 * p2pbw through the real bindings: the real probe.cu, built with nvcc --cudart shared against the
 * fake CUDA runtime, and for the check the fake libnvidia-ml too (the fakes give CUDA ordinal i and
 * NVML index i one bus id). Jest's globalSetup builds both. The fake's peer copies advance the
 * source's clock by bytes / the pair's GB/s only while peer access is enabled, and at the staged
 * rate through host memory otherwise, so a figure equal to the pair's shows the probe enabled it.
 */
import { describe, expect, test } from '@jest/globals';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createP2pBwCheck } from '../../exporter/checks/p2pbw.js';
import { silentLogger } from '../../exporter/log.js';
import { loadCudaProbe } from '../../exporter/native/cuda-probe.js';
import type { CudaProbe } from '../../exporter/native/ports.js';
import {
  FAKE_PROBE,
  cudaRejection,
  fakeCudaControl,
  openFakeNvmlEachTest,
} from '../fakes/native-fakes.js';
import { gpuVerdicts } from '../fakes/verdicts.js';

const openNvml = openFakeNvmlEachTest();
const { lib: cudart, ...cudaControl } = fakeCudaControl();
const fake = {
  ...cudaControl,
  setPeerBandwidth: cudart.func('int fakecuda_set_peer_bandwidth(int src, int dst, double gbps)'),
  setPeerAccess: cudart.func('int fakecuda_set_peer_access(int src, int dst, int can)'),
  failPeerCopy: cudart.func('int fakecuda_fail_peer_copy(int src, int dst, int code)'),
  peerEnabled: cudart.func('int fakecuda_peer_enabled(int src, int dst)'),
  setDevice: cudart.func('int cudaSetDevice(int device)'),
  enablePeerAccess: cudart.func('int cudaDeviceEnablePeerAccess(int peer, unsigned int flags)'),
  deviceReset: cudart.func('int cudaDeviceReset(void)'),
};

const loaded = loadCudaProbe(FAKE_PROBE);
if (!loaded.ok) throw new Error(loaded.reason);
const probe: CudaProbe = loaded.probe;
const MiB = 1 << 20;

function control(result: unknown): void {
  expect(Number(result)).toBe(0);
}

/** Nothing the probe allocated, created or enabled outlives a call. */
function expectNothingLeft(): void {
  expect(Number(fake.liveAllocations())).toBe(0);
  expect(Number(fake.liveEvents())).toBe(0);
  expect(Number(fake.liveContexts())).toBe(0);
  for (let src = 0; src < 8; src++) {
    for (let dst = 0; dst < 8; dst++) expect(Number(fake.peerEnabled(src, dst))).toBe(0);
  }
}

describe('the probe: ap_can_access_peer and ap_p2p_bandwidth over the fake runtime', () => {
  test('a pair gives its configured GB/s: peer access was enabled, and both contexts are released', async () => {
    control(fake.setPeerBandwidth(1, 6, 130));
    const gbps = await probe.p2pBandwidth(1, 6, 4 * MiB, 3);
    expect(Math.abs(gbps! / 130 - 1)).toBeLessThan(0.01);
    // The default of every other pair: constructed, an HGX H100/H200-like 390 GB/s.
    expect(Math.abs((await probe.p2pBandwidth(6, 1, 4 * MiB, 3))! / 390 - 1)).toBeLessThan(0.01);
    expect(Number(fake.resets(1))).toBe(2);
    expect(Number(fake.resets(6))).toBe(2);
    expect(Number(fake.callsOn('cudaDeviceEnablePeerAccess', 1))).toBe(1);
    expect(Number(fake.callsOn('cudaMemcpyPeerAsync', 1))).toBe(1 + 3); // warm-up + timed
    expectNothingLeft();
  });

  test('a pair without peer access is undefined, not an error, and creates no context', async () => {
    control(fake.setPeerAccess(2, 3, 0));
    expect(await probe.canAccessPeer(2, 3)).toBe(false);
    expect(await probe.canAccessPeer(3, 2)).toBe(true);
    expect(await probe.p2pBandwidth(2, 3, MiB, 2)).toBeUndefined();
    expect(Number(fake.contexts(2))).toBe(0);
    expect(Number(fake.contexts(3))).toBe(0);
    expect(Number(fake.callsOn('cudaSetDevice', 2))).toBe(0);
    expectNothingLeft();
  });

  test('peer access already enabled (cudaErrorPeerAccessAlreadyEnabled) is as good as enabled', async () => {
    control(fake.setDevice(4));
    control(fake.enablePeerAccess(5, 0));
    expect(Number(fake.enablePeerAccess(5, 0))).toBe(704);
    control(fake.setPeerBandwidth(4, 5, 200));
    const gbps = await probe.p2pBandwidth(4, 5, MiB, 2);
    expect(Math.abs(gbps! / 200 - 1)).toBeLessThan(0.01);
    control(fake.deviceReset());
    expectNothingLeft();
  });

  test('a failing copy rejects with its CUDA error and frees both buffers and both contexts', async () => {
    control(fake.failPeerCopy(0, 7, 214));
    const error = await cudaRejection(probe.p2pBandwidth(0, 7, MiB, 2));
    expect(error.code).toBe(214);
    expect(error.message).toBe('ap_p2p_bandwidth: uncorrectable ECC error encountered (214)');
    expect(Number(fake.resets(0))).toBe(1);
    expect(Number(fake.resets(7))).toBe(1);
    expectNothingLeft();
    // The other direction is unaffected, and the error did not outlive its call.
    expect(await probe.p2pBandwidth(7, 0, MiB, 2)).toBeGreaterThan(0);
  });

  test('more than the destination holds: out of memory, nothing left', async () => {
    const error = await cudaRejection(probe.p2pBandwidth(0, 1, 512 * MiB, 1));
    expect(error.code).toBe(2);
    expectNothingLeft();
  });

  test('invalid arguments reject with cudaErrorInvalidValue before any native work', async () => {
    for (const call of [
      () => probe.p2pBandwidth(3, 3, MiB, 1),
      () => probe.p2pBandwidth(0, 1, 0, 1),
      () => probe.p2pBandwidth(0, 1, MiB, 0),
      () => probe.p2pBandwidth(-1, 1, MiB, 1),
      () => probe.canAccessPeer(2, 2),
    ]) {
      expect((await cudaRejection(call())).code).toBe(1);
    }
    expect(Number(fake.callsOn(null, 3))).toBe(0);
  });

  test('a device past the last rejects with cudaErrorInvalidDevice', async () => {
    expect((await cudaRejection(probe.canAccessPeer(0, 9))).code).toBe(101);
    expect((await cudaRejection(probe.p2pBandwidth(9, 0, MiB, 1))).code).toBe(101);
    expectNothingLeft();
  });
});

describe('FAKE_CUDA_SCENARIO peer keys, in a process of their own', () => {
  test('p2pslow, nop2p and p2pfail set the pairs they name', async () => {
    // The scenario is read once per process, at the first call: a child process reads this one.
    const script = `
      import koffi from 'koffi';
      const lib = koffi.load(${JSON.stringify(FAKE_PROBE)});
      const bw = lib.func('int ap_p2p_bandwidth(int, int, size_t, int, _Out_ double *gbps)');
      const out = [];
      for (const [s, d] of [[1, 6], [6, 1], [2, 3], [4, 5], [0, 1]]) {
        const gbps = [0];
        const code = bw(s, d, 1 << 20, 2, gbps);
        out.push([s, d, code, Math.round(gbps[0])]);
      }
      console.log(JSON.stringify(out));`;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--input-type=module', '-e', script],
      {
        cwd: join(import.meta.dirname, '..', '..'),
        env: { ...process.env, FAKE_CUDA_SCENARIO: 'p2pslow=1:6:130;nop2p=2:3;p2pfail=4:5:999' },
      },
    );
    expect(JSON.parse(stdout)).toEqual([
      [1, 6, 0, 130],
      [6, 1, 0, 390],
      [2, 3, -1, 0],
      [4, 5, 999, 0],
      [0, 1, 0, 390],
    ]);
  });
});

describe('the p2pbw check over the fake NVML and the real probe on the fake runtime', () => {
  async function run(scenario: string) {
    const load = await openNvml(scenario);
    const check = createP2pBwCheck({ nvml: load, cuda: loaded, copyBytes: MiB, repetitions: 2 });
    const ctx = { signal: new AbortController().signal, logger: silentLogger, params: {} };
    return check.run(ctx);
  }

  test('the pair (1, 6) at a third of the others flags GPUs 1 and 6, names the pair, no other GPU', async () => {
    control(fake.setPeerBandwidth(1, 6, 130));
    control(fake.setPeerBandwidth(6, 1, 130));
    const outcome = await run('gpus=8');
    expect(outcome.devices.map((d) => `${d.id}:${d.verdict}`)).toEqual(
      gpuVerdicts(8, { 1: 'FAIL', 6: 'FAIL' }),
    );
    expect(outcome.devices[1]!.reason).toMatch(/^slow peer copies: 1→6 130 GB\/s .*6→1 130 GB\/s/);
    expect(outcome.devices[6]!.evidence).toMatchObject({ slowPairs: '1→6, 6→1' });
    expect(outcome.samples).toHaveLength(56);
    const slow = outcome.samples!.find((s) => s.labels.src === '1' && s.labels.dst === '6');
    expect(Math.abs(slow!.value / 130e9 - 1)).toBeLessThan(0.01);
    expectNothingLeft();
  });

  test('a GPU with compute processes: SKIP before any CUDA call on any GPU', async () => {
    const outcome = await run('gpus=4;procs=2:1');
    expect(outcome).toMatchObject({ verdict: 'SKIP' });
    for (let device = 0; device < 4; device++) {
      expect(Number(fake.contexts(device))).toBe(0);
      expect(Number(fake.callsOn('cudaDeviceCanAccessPeer', device))).toBe(0);
    }
  });

  test('one GPU: SKIP, fewer than 2 GPUs to pair', async () => {
    const outcome = await run('gpus=1');
    expect(outcome).toMatchObject({
      verdict: 'SKIP',
      reason: 'fewer than 2 GPUs to pair (1 usable of 1)',
    });
    expect(Number(fake.contexts(0))).toBe(0);
  });
});
