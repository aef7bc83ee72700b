// The p2pbw check over the in-memory GPU fakes: the verdict maths, the attribution of slow pairs,
// the SKIP cases, the busy-GPU policy and the parameter and setting validation.
import { describe, expect, test } from '@jest/globals';
import { ParamError, type CheckOutcome } from '../../exporter/checks/check.js';
import {
  createP2pBwCheck,
  judgeP2p,
  p2pbwModule,
  parseP2pParams,
  type PairResult,
} from '../../exporter/checks/p2pbw.js';
import { CHECK_NAMES, CHECK_TABLE } from '../../exporter/checks/index.js';
import { parseConfig } from '../../exporter/config/config.js';
import { silentLogger } from '../../exporter/log.js';
import { CudaError, type NvmlLoad } from '../../exporter/native/ports.js';
import { fakeCuda, fakeNode, fakeNvml, type FakeGpu } from '../fakes/gpu.js';
import { gpuVerdicts } from '../fakes/verdicts.js';

const ctx = (params: Record<string, string> = {}) => ({
  signal: new AbortController().signal,
  logger: silentLogger,
  params,
});

/** Every ordered pair of `n` GPUs at `gbps`, with `slow` overriding some of them ("1>6"). */
function pairs(n: number, gbps: number, slow: Record<string, number> = {}): PairResult[] {
  const result: PairResult[] = [];
  for (let src = 0; src < n; src++) {
    for (let dst = 0; dst < n; dst++) {
      if (src !== dst) result.push({ src, dst, gbps: slow[`${src}>${dst}`] ?? gbps });
    }
  }
  return result;
}

const verdicts = (devices: readonly { id: string; verdict: string }[]): string[] =>
  devices.map((d) => `${d.id}:${d.verdict}`);
const indexes = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

function run(gpus: FakeGpu[], params: Record<string, string> = {}) {
  const cuda = fakeCuda(gpus);
  const nvml: NvmlLoad = { ok: true, nvml: fakeNvml(gpus) };
  const check = createP2pBwCheck({ nvml, cuda: { ok: true, probe: cuda } });
  return { cuda, outcome: check.run(ctx(params)) };
}

/** Both directions of the link between a and b at gbps. */
function slowLink(gpus: FakeGpu[], a: number, b: number, gbps: number): void {
  gpus[a]!.peers.set(b, gbps);
  gpus[b]!.peers.set(a, gbps);
}

describe('judgeP2p: verdict maths', () => {
  test('the pair (1, 6) at a third of the others flags GPUs 1 and 6, names the pair, and no other GPU', () => {
    const { devices, median } = judgeP2p(indexes(8), pairs(8, 390, { '1>6': 130, '6>1': 130 }));
    expect(median).toBe(390);
    expect(verdicts(devices)).toEqual(gpuVerdicts(8, { 1: 'FAIL', 6: 'FAIL' }));
    expect(devices[1]!.reason).toContain('1→6 130 GB/s (0.33 of the median)');
    expect(devices[1]!.reason).toContain('6→1 130 GB/s');
    expect(devices[1]!.reason).toContain('node pair median 390 GB/s');
    expect(devices[6]!.evidence).toMatchObject({
      to_1_GBps: 130,
      from_1_GBps: 130,
      to_0_GBps: 390,
      nodePairMedianGBps: 390,
      slowPairs: '1→6, 6→1',
    });
    expect(devices[0]!.evidence.slowPairs).toBe('');
  });

  test('below the WARN share but above the FAIL share is WARN; at the share exactly is not slow', () => {
    const { devices } = judgeP2p(indexes(4), pairs(4, 100, { '0>1': 70, '2>3': 80 }));
    expect(verdicts(devices)).toEqual(['0:WARN', '1:WARN', '2:PASS', '3:PASS']);
  });

  test('the shares are configurable', () => {
    const all = pairs(4, 100, { '0>1': 70 });
    expect(verdicts(judgeP2p(indexes(4), all, { warn: 0.6, fail: 0.3 }).devices)).toEqual(
      gpuVerdicts(4),
    );
    expect(verdicts(judgeP2p(indexes(4), all, { warn: 0.9, fail: 0.75 }).devices)[0]).toBe(
      '0:FAIL',
    );
  });

  test('a FAIL-level pair outweighs a WARN-level one of the same GPU', () => {
    const { devices } = judgeP2p(indexes(4), pairs(4, 100, { '0>1': 70, '0>2': 40 }));
    expect(devices[0]).toMatchObject({ verdict: 'FAIL' });
    expect(devices[1]).toMatchObject({ verdict: 'WARN' });
    expect(devices[2]).toMatchObject({ verdict: 'FAIL' });
  });

  test('two GPUs: the slow direction is judged against the other one', () => {
    const { devices } = judgeP2p([0, 1], pairs(2, 100, { '1>0': 30 }));
    expect(verdicts(devices)).toEqual(['0:FAIL', '1:FAIL']);
  });
});

describe('judgeP2p: attribution', () => {
  test('a GPU slow with every peer is the culprit: it alone is flagged, the others PASS and say why', () => {
    const slow: Record<string, number> = {};
    for (let peer = 0; peer < 8; peer++) {
      if (peer === 3) continue;
      slow[`3>${peer}`] = 120;
      slow[`${peer}>3`] = 120;
    }
    const { devices } = judgeP2p(indexes(8), pairs(8, 390, slow));
    expect(verdicts(devices).filter((v) => !v.endsWith('PASS'))).toEqual(['3:FAIL']);
    expect(devices[3]!.reason).toMatch(/^slow with most of its peers \(14 of 14 pairs\)/);
    expect(devices[0]!.reason).toContain('slow only with GPU 3, slow with most of its peers');
    expect(devices[0]!.evidence.slowPairs).toBe('');
  });

  test('a culprit and an unrelated slow link: the link still flags both its ends', () => {
    const slow: Record<string, number> = { '5>6': 150, '6>5': 150 };
    for (let peer = 0; peer < 8; peer++) {
      if (peer === 3) continue;
      slow[`3>${peer}`] = 120;
      slow[`${peer}>3`] = 120;
    }
    const { devices } = judgeP2p(indexes(8), pairs(8, 390, slow));
    expect(verdicts(devices).filter((v) => !v.endsWith('PASS'))).toEqual([
      '3:FAIL',
      '5:FAIL',
      '6:FAIL',
    ]);
    expect(devices[5]!.evidence.slowPairs).toBe('5→6, 6→5');
  });

  test('a GPU with half its pairs slow is no culprit: its peers are flagged too', () => {
    // Three GPUs, link 0-1 slow both ways: GPU 0 has 2 of 4 pairs slow.
    const { devices } = judgeP2p([0, 1, 2], pairs(3, 100, { '0>1': 30, '1>0': 30 }));
    expect(verdicts(devices)).toEqual(['0:FAIL', '1:FAIL', '2:PASS']);
  });
});

describe('judgeP2p: pairs without a figure', () => {
  test('a pair without peer access is no fault; a GPU with none at all is SKIP', () => {
    const all: PairResult[] = pairs(3, 100).map((pair) =>
      pair.src === 2 || pair.dst === 2
        ? { src: pair.src, dst: pair.dst, noPeerAccess: true }
        : pair,
    );
    const { devices } = judgeP2p([0, 1, 2], all);
    expect(verdicts(devices)).toEqual(['0:PASS', '1:PASS', '2:SKIP']);
    expect(devices[0]!.reason).toContain('no peer access with GPU 2');
    expect(devices[2]!.reason).toBe('no peer access to or from any other GPU');
    expect(devices[0]!.evidence.to_2_GBps).toBeNull();
  });

  test('a failed copy is ERROR for both its GPUs, naming the pair and the error', () => {
    const all: PairResult[] = pairs(3, 100).map((pair) =>
      pair.src === 0 && pair.dst === 1
        ? { src: 0, dst: 1, error: 'ap_p2p_bandwidth: boom (999)' }
        : pair,
    );
    const { devices } = judgeP2p([0, 1, 2], all);
    expect(verdicts(devices)).toEqual(['0:ERROR', '1:ERROR', '2:PASS']);
    expect(devices[1]!.reason).toBe('peer copy failed: 0→1: ap_p2p_bandwidth: boom (999)');
  });
});

describe('the p2pbw check on the in-memory fakes', () => {
  test('measures every ordered pair once and exports each as bytes per second', async () => {
    const gpus = fakeNode(8);
    slowLink(gpus, 1, 6, 130);
    const { cuda, outcome } = run(gpus);
    const result = await outcome;
    expect(verdicts(result.devices)).toEqual(gpuVerdicts(8, { 1: 'FAIL', 6: 'FAIL' }));
    expect(cuda.calls.filter((c) => c.startsWith('p2p '))).toHaveLength(56);
    expect(result.samples).toHaveLength(56);
    // The fake's CUDA ordinals run in reverse NVML order; the labels are NVML indexes.
    expect(result.samples).toContainEqual({
      metric: 'autopilot_gpu_p2p_bandwidth_bytes_per_second',
      labels: { src: '1', dst: '6' },
      value: 130e9,
    });
    expect(result.devices[1]!.evidence.uuid).toBe(gpus[1]!.device.uuid);
  });

  test('one GPU: SKIP, nothing to pair, and no copy', async () => {
    const { cuda, outcome } = run(fakeNode(1));
    const result: CheckOutcome = await outcome;
    expect(result).toMatchObject({
      verdict: 'SKIP',
      reason: expect.stringMatching(/fewer than 2 GPUs/),
    });
    expect(cuda.calls.filter((c) => c.startsWith('p2p') || c.startsWith('can'))).toEqual([]);
  });

  test('no pair with peer access: SKIP naming cudaDeviceCanAccessPeer, and no copy', async () => {
    const gpus = fakeNode(4);
    for (const gpu of gpus) for (let i = 0; i < 4; i++) gpu.peers.set(i, 'no-p2p');
    const { cuda, outcome } = run(gpus);
    expect(await outcome).toMatchObject({
      verdict: 'SKIP',
      reason: 'no GPU pair has peer access (cudaDeviceCanAccessPeer)',
    });
    expect(cuda.calls.filter((c) => c.startsWith('p2p'))).toEqual([]);
  });

  test('a GPU in use: the whole check SKIPs before any CUDA call, as gpumem does', async () => {
    const gpus = fakeNode(4);
    gpus[2]!.processes = 1;
    const { cuda, outcome } = run(gpus);
    expect(await outcome).toMatchObject({
      verdict: 'SKIP',
      reason: 'GPUs in use, not tested: GPU 2 (1 compute processes)',
    });
    expect(cuda.calls).toEqual([]);
  });

  test('a GPU that becomes busy during the run is SKIP and its remaining pairs are not copied', async () => {
    const gpus = fakeNode(3);
    const fake = fakeNvml(gpus);
    let reads = 0;
    const nvml: NvmlLoad = {
      ok: true,
      nvml: {
        ...fake,
        computeProcessCount: (i) => {
          // GPU 2 reads idle up front and for its first pair (0→2), busy from its next one on.
          if (i === 2 && ++reads > 2) gpus[2]!.processes = 1;
          return fake.computeProcessCount(i);
        },
      },
    };
    const cuda = fakeCuda(gpus);
    const result = await createP2pBwCheck({ nvml, cuda: { ok: true, probe: cuda } }).run(ctx());
    expect(result.devices[2]).toMatchObject({ verdict: 'SKIP' });
    expect(result.devices[2]!.reason).toMatch(
      /^not idle any more during the run \(1 compute processes\)/,
    );
    expect(verdicts(result.devices).slice(0, 2)).toEqual(['0:PASS', '1:PASS']);
    // GPU 2 is CUDA ordinal 0 in the fake: no copy from or to it after it turned busy.
    expect(cuda.calls.filter((c) => c.startsWith('p2p ') && c.includes('0'))).toEqual(['p2p 2 0']);
  });

  test('MIG and CUDA-invisible GPUs are SKIP and left out of the pairs', async () => {
    const gpus = fakeNode(4);
    gpus[0]!.mig = true;
    const cuda = fakeCuda(gpus);
    const hidden = gpus[3]!.device.pciBusId.replace(/^0000/, '');
    const probe = {
      ...cuda,
      deviceByBusId: (busId: string) =>
        busId === hidden ? Promise.resolve(undefined) : cuda.deviceByBusId(busId),
    };
    const nvml: NvmlLoad = { ok: true, nvml: fakeNvml(gpus) };
    const result = await createP2pBwCheck({ nvml, cuda: { ok: true, probe } }).run(ctx());
    expect(verdicts(result.devices)).toEqual(['0:SKIP', '1:PASS', '2:PASS', '3:SKIP']);
    expect(result.devices[0]!.reason).toBe('MIG is enabled on this GPU (no peer access)');
    expect(result.devices[3]!.reason).toBe(`CUDA does not see ${gpus[3]!.device.pciBusId}`);
    // Only GPUs 1 and 2 (CUDA ordinals 2 and 1) were paired.
    expect(cuda.calls.filter((c) => c.startsWith('p2p '))).toEqual(['p2p 2 1', 'p2p 1 2']);
    expect(result.devices[1]!.reason).toBe(
      '2 pairs, slowest 1→2 390 GB/s, node pair median 390 GB/s',
    );
  });

  test('one usable GPU of two (the other in MIG mode): SKIP, fewer than 2 GPUs to pair', async () => {
    const gpus = fakeNode(2);
    gpus[1]!.mig = true;
    const result = await run(gpus).outcome;
    expect(result).toMatchObject({
      verdict: 'SKIP',
      reason: 'fewer than 2 GPUs to pair (1 usable of 2)',
    });
    expect(verdicts(result.devices)).toEqual(['1:SKIP']);
  });

  test('a failing copy is ERROR for its two GPUs; the CUDA error is named', async () => {
    const gpus = fakeNode(3);
    gpus[0]!.peers.set(1, new CudaError('ap_p2p_bandwidth', 999, 'unknown error'));
    const { outcome } = run(gpus);
    const result = await outcome;
    expect(verdicts(result.devices)).toEqual(['0:ERROR', '1:ERROR', '2:PASS']);
    expect(result.devices[0]!.reason).toBe(
      'peer copy failed: 0→1: ap_p2p_bandwidth: unknown error (999)',
    );
  });

  test('the copy size parameter: 64 to 256 MiB, 64 by default', () => {
    expect(parseP2pParams({})).toEqual({ mib: '64' });
    expect(parseP2pParams({ mib: '256' })).toEqual({ mib: '256' });
    for (const bad of ['63', '257', '1e2', '-64', 'big']) {
      expect(() => parseP2pParams({ mib: bad })).toThrow(ParamError);
    }
    expect(() => parseP2pParams({ mib: '300' })).toThrow(
      'mib "300" is not a whole number from 64 to 256',
    );
  });
});

describe('p2pbw in the check table and the settings', () => {
  test('exclusive, on demand only: not periodic, not post-flight', () => {
    expect(CHECK_NAMES).toContain('p2pbw');
    expect(p2pbwModule.policy.exclusive).toBe(true);
    expect(CHECK_TABLE.periodic).not.toContain('p2pbw');
    expect(CHECK_TABLE.postflight).not.toContain('p2pbw');
    expect(CHECK_TABLE.timeoutSettings).toContain('p2pbw');
  });

  const settings = (env: Record<string, string>) =>
    parseConfig({
      flags: new Map(),
      env,
      hostname: 'gpu-node-1',
      knownChecks: CHECK_NAMES,
    }).checkSettings.get('p2pbw');

  test('the shares default to 0.8 and 0.5 and can be set', () => {
    expect(settings({})).toEqual({
      AUTOPILOT_P2PBW_WARN_SHARE: 0.8,
      AUTOPILOT_P2PBW_FAIL_SHARE: 0.5,
    });
    expect(
      settings({ AUTOPILOT_P2PBW_WARN_SHARE: '0.9', AUTOPILOT_P2PBW_FAIL_SHARE: '0.7' }),
    ).toEqual({ AUTOPILOT_P2PBW_WARN_SHARE: 0.9, AUTOPILOT_P2PBW_FAIL_SHARE: 0.7 });
  });

  test('a WARN share at or below the FAIL share is refused, naming the one that was set', () => {
    expect(() => settings({ AUTOPILOT_P2PBW_WARN_SHARE: '0.4' })).toThrow(
      /AUTOPILOT_P2PBW_WARN_SHARE.*above AUTOPILOT_P2PBW_FAIL_SHARE \(0.5\)/,
    );
    expect(() => settings({ AUTOPILOT_P2PBW_FAIL_SHARE: '0.9' })).toThrow(
      /AUTOPILOT_P2PBW_FAIL_SHARE.*below AUTOPILOT_P2PBW_WARN_SHARE/,
    );
    expect(() => settings({ AUTOPILOT_P2PBW_FAIL_SHARE: '0' })).toThrow(
      /AUTOPILOT_P2PBW_FAIL_SHARE/,
    );
  });
});
