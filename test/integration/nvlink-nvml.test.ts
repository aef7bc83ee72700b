/**
 * The nvlink check through the real koffi binding over the fake libnvidia-ml (test/fakes/native/nvml):
 * 8 H200s with 18 NVLinks each, all active, fabric completed. The fake is steered with
 * fakenvml_apply over a second koffi.load of the same path (same handle, same state); the old-driver
 * build (build/fakes/nvml-old) lacks both fabric functions.
 */
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import type { CheckOutcome } from '../../exporter/checks/check.js';
import { createNvLinkCheck, type ExpectedLinks } from '../../exporter/checks/nvlink.js';
import { silentLogger } from '../../exporter/log.js';
import { loadNvml } from '../../exporter/native/nvml.js';
import type { Nvml } from '../../exporter/native/ports.js';
import { FAKE_NVML, FAKE_NVML_OLD, fakeNvmlControl } from '../fakes/native-fakes.js';

const CURRENT = FAKE_NVML;
const OLD = FAKE_NVML_OLD;

const current = fakeNvmlControl(CURRENT);
const old = fakeNvmlControl(OLD);
const controls = [current, old];

let opened: Nvml[] = [];

beforeEach(() => {
  for (const c of controls) c.reset();
});

afterEach(async () => {
  await Promise.all(opened.map((n) => n.close()));
  opened = [];
});

async function open(path = CURRENT, scenario = ''): Promise<Nvml> {
  expect((path === OLD ? old : current).apply(scenario)).toBe(0);
  const load = await loadNvml(path);
  if (!load.ok) throw new Error(`the fake NVML did not load: ${load.reason}`);
  opened.push(load.nvml);
  return load.nvml;
}

const ctx = { signal: new AbortController().signal, logger: silentLogger, params: {} };

/** A check over `nvml` whose clock the test sets, and a way to run it at a given time. */
function checkOver(nvml: Nvml, options: { rate?: number; expected?: ExpectedLinks } = {}) {
  let at = 0;
  const check = createNvLinkCheck({
    nvml: { ok: true, nvml },
    now: () => at,
    errorRate: options.rate,
    expectedLinks: options.expected,
  });
  return (now: number): Promise<CheckOutcome> => {
    at = now;
    return Promise.resolve(check.run(ctx));
  };
}

const verdicts = (outcome: CheckOutcome): string[] => outcome.devices.map((d) => d.verdict);
const device = (outcome: CheckOutcome, id: string) => outcome.devices.find((d) => d.id === id)!;

/** The verdicts of the 8 GPUs: PASS but for the GPUs `others` names. */
function passExcept(others: Readonly<Record<number, string>>): string[] {
  return Array.from({ length: 8 }, (_, gpu) => others[gpu] ?? 'PASS');
}

/** The one sample of `metric` whose labels include `labels`. */
function sampleOf(outcome: CheckOutcome, metric: string, labels: Readonly<Record<string, string>>) {
  return (outcome.samples ?? []).find(
    (s) => s.metric === metric && Object.entries(labels).every(([name, v]) => s.labels[name] === v),
  );
}

describe('the NVLink binding over the fake NVML', () => {
  test('reads 18 active links with four counters each, and the fabric through ...InfoV v3', async () => {
    const nvml = await open(CURRENT, 'nvlinkerr=1:4:crc_data:7');
    const links = await nvml.nvLinks(1);
    if (!links.supported) throw new Error(links.reason);
    expect(links.links).toHaveLength(18);
    expect(links.links.every((l) => l.active)).toBe(true);
    expect(links.links[0]!.errors).toEqual({ replay: 0, recovery: 0, crc_flit: 0, crc_data: 0 });
    expect(links.links[4]!.errors.crc_data).toBe(7);
    // Each read adds 7: the counter climbs between reads.
    const again = await nvml.nvLinks(1);
    expect(again.supported && again.links[4]!.errors.crc_data).toBe(14);
    expect(await nvml.gpuFabric(1)).toEqual({
      supported: true,
      state: 3,
      status: 0,
      healthSummary: 1,
      source: 'nvmlDeviceGetGpuFabricInfoV (v3)',
    });
  });

  test('falls back to the v2 structure when the driver refuses v3, reading the same offsets', async () => {
    const nvml = await open(CURRENT, 'fabricversion=2;fabric=3:2:0;fabric=4:3:27');
    expect(await nvml.gpuFabric(3)).toEqual({
      supported: true,
      state: 2,
      status: 0,
      healthSummary: undefined,
      source: 'nvmlDeviceGetGpuFabricInfoV (v2)',
    });
    const failed = await nvml.gpuFabric(4);
    expect(failed.supported && [failed.state, failed.status]).toEqual([3, 27]);
  });

  test('counts the links once through NVML_FI_DEV_NVLINK_LINK_COUNT, or probes them without it', async () => {
    const nvml = await open(CURRENT, 'nvlinks=12');
    await nvml.nvLinks(0);
    await nvml.nvLinks(0);
    // 12 links twice: no state read past the last link.
    expect(current.calls('nvmlDeviceGetNvLinkState')).toBe(24);
    await nvml.close();
    current.reset();
    const probing = await open(CURRENT, 'nvlinks=12;nofields=1');
    const links = await probing.nvLinks(0);
    expect(links.supported && links.links.map((l) => l.link)).toEqual([...Array(12).keys()]);
    await probing.nvLinks(0);
    // The first read probes all 36 (NVML_NVLINK_MAX_LINKS), the next only the 12 found.
    expect(current.calls('nvmlDeviceGetNvLinkState')).toBe(36 + 12);
  });

  test("the per-link counters are read again only when one of the GPU's totals moved", async () => {
    const counterCalls = (): number => current.calls('nvmlDeviceGetNvLinkErrorCounter') as number;
    const nvml = await open(CURRENT, 'nvlinkerr=3:9:replay:2');
    await nvml.nvLinks(0);
    expect(counterCalls()).toBe(18 * 4);
    const still = await nvml.nvLinks(0);
    expect(counterCalls()).toBe(18 * 4); // totals unchanged: the last counts stand
    expect(still.supported && still.links[0]!.errors).toEqual({
      replay: 0,
      recovery: 0,
      crc_flit: 0,
      crc_data: 0,
    });
    await nvml.nvLinks(3);
    const moved = await nvml.nvLinks(3);
    expect(counterCalls()).toBe(3 * 18 * 4); // GPU 3's replay total moved: all its links read
    expect(moved.supported && moved.links[9]!.errors.replay).toBe(4);
  });

  test('without the total fields, every read reads every link, and the counters still climb', async () => {
    const nvml = await open(CURRENT, 'nofields=1;nvlinkerr=3:9:replay:2');
    await nvml.nvLinks(3);
    const second = await nvml.nvLinks(3);
    expect(current.calls('nvmlDeviceGetNvLinkErrorCounter')).toBe(2 * 18 * 4);
    expect(second.supported && second.links[9]!.errors.replay).toBe(4);
  });

  test('a GPU without NVLink says NOT_SUPPORTED for links and fabric', async () => {
    const nvml = await open(CURRENT, 'nvlinks=0');
    const links = await nvml.nvLinks(0);
    expect(links).toEqual({
      supported: false,
      reason: expect.stringContaining('nvmlDeviceGetNvLinkState: Not Supported (3)'),
    });
    expect(await nvml.gpuFabric(0)).toEqual({
      supported: false,
      reason: 'nvmlDeviceGetGpuFabricInfoV: Not Supported (3)',
    });
  });

  test('the old driver has no fabric function: unsupported, never a crash', async () => {
    const nvml = await open(OLD, '');
    expect(await nvml.gpuFabric(0)).toEqual({
      supported: false,
      reason: 'this NVML has no nvmlDeviceGetGpuFabricInfo(V)',
    });
    const links = await nvml.nvLinks(0);
    expect(links.supported && links.links).toHaveLength(18);
  });
});

describe('the nvlink check over the fake NVML, 8 GPUs with 18 links', () => {
  test('all links up, counters still, fabric completed: every GPU PASS, with the metrics', async () => {
    const run = checkOver(await open());
    const outcome = await run(0);
    expect(verdicts(outcome)).toEqual(Array(8).fill('PASS'));
    expect(device(outcome, '0').reason).toContain('18 of 18 NVLinks active');
    const samples = outcome.samples ?? [];
    const of = (metric: string) => samples.filter((s) => s.metric === metric);
    expect(of('autopilot_gpu_nvlink_up')).toHaveLength(8 * 18);
    // Counters all at 0: no series for them (the series budget), the links' state for every one.
    expect(of('autopilot_gpu_nvlink_errors_total')).toHaveLength(0);
    expect(samples.filter((s) => s.metric.startsWith('autopilot_gpu_nvlink'))).toHaveLength(144);
    expect(of('autopilot_gpu_fabric_ready').map((s) => s.value)).toEqual(Array(8).fill(1));
    expect(of('autopilot_gpu_fabric_state').map((s) => s.value)).toEqual(Array(8).fill(3));
  });

  test('GPU 2 link 3 down: FAIL for GPU 2 naming link 3, the other GPUs PASS', async () => {
    const run = checkOver(await open(CURRENT, 'linkdown=2:3'));
    const outcome = await run(0);
    expect(verdicts(outcome)).toEqual(passExcept({ 2: 'FAIL' }));
    expect(device(outcome, '2').reason).toBe(
      '1 NVLink down: link 3 (17 of 18 active, 18 expected)',
    );
    expect(device(outcome, '2').compatValue).toBe(1);
    expect(sampleOf(outcome, 'autopilot_gpu_nvlink_up', { gpu: '2', link: '3' })?.value).toBe(0);
  });

  test("GPU 5 link 2's CRC-flit count climbing between two rounds: WARN for GPU 5 naming them", async () => {
    // 5000 more per read, 10 s apart: 500 per second, above the default 100.
    const run = checkOver(await open(CURRENT, 'nvlinkerr=5:2:crc_flit:5000'));
    expect(verdicts(await run(0))).toEqual(Array(8).fill('PASS'));
    const second = await run(10_000);
    expect(verdicts(second)).toEqual(passExcept({ 5: 'WARN' }));
    expect(device(second, '5').reason).toBe(
      'NVLink error counters rising faster than 100/s: link 2 crc_flit +5000 (500.0/s)',
    );
    const count = sampleOf(second, 'autopilot_gpu_nvlink_errors_total', {
      gpu: '5',
      link: '2',
      counter: 'crc_flit',
    });
    expect(count?.value).toBe(10_000);
    // Only that counter has a series: the other 575 of the node read 0.
    const counters = (second.samples ?? []).filter(
      (s) => s.metric === 'autopilot_gpu_nvlink_errors_total',
    );
    expect(counters).toHaveLength(1);
  });

  test('a counter climbing slower than the rate stays PASS', async () => {
    const run = checkOver(await open(CURRENT, 'nvlinkerr=5:2:crc_flit:500'));
    await run(0);
    expect(device(await run(10_000), '5').verdict).toBe('PASS');
  });

  test('no NVLink (NOT_SUPPORTED): every GPU SKIP with the reason', async () => {
    const run = checkOver(await open(CURRENT, 'nvlinks=0'));
    const outcome = await run(0);
    expect(verdicts(outcome)).toEqual(Array(8).fill('SKIP'));
    expect(device(outcome, '0').reason).toContain('no NVLink on this GPU');
    expect(outcome.samples ?? []).toEqual([]);
  });

  test('fabric not started at two rounds, or completed with an error: FAIL with the state or the status name', async () => {
    const run = checkOver(await open(CURRENT, 'fabric=1:1:0;fabric=6:3:27'));
    const first = await run(0);
    // One reading not started may be a registration under way (just after a boot): WARN.
    expect(verdicts(first)[1]).toBe('WARN');
    expect(verdicts(first)[6]).toBe('FAIL');
    const outcome = await run(60_000);
    expect(verdicts(outcome)).toEqual(passExcept({ 1: 'FAIL', 6: 'FAIL' }));
    expect(device(outcome, '1').reason).toContain('fabric registration not started');
    expect(device(outcome, '6').reason).toBe(
      'fabric registration failed: NVML_ERROR_NOT_READY (27)',
    );
    const ready = (outcome.samples ?? []).filter((s) => s.metric === 'autopilot_gpu_fabric_ready');
    expect(ready.map((s) => s.value)).toEqual([1, 0, 1, 1, 1, 1, 0, 1]);
  });

  test('fabric symbols missing (old driver): the check still runs, links judged, no fabric metric', async () => {
    const run = checkOver(await open(OLD, 'linkdown=2:3'));
    const outcome = await run(0);
    expect(verdicts(outcome)).toEqual(passExcept({ 2: 'FAIL' }));
    expect(device(outcome, '0').evidence['fabric']).toBe(
      'not read: this NVML has no nvmlDeviceGetGpuFabricInfo(V)',
    );
    expect((outcome.samples ?? []).some((s) => s.metric.startsWith('autopilot_gpu_fabric'))).toBe(
      false,
    );
  });

  test("an NVML error on one GPU is that GPU's ERROR, the others judged", async () => {
    const run = checkOver(await open(CURRENT, 'failnext=nvmlDeviceGetNvLinkErrorCounter:999:1'));
    const outcome = await run(0);
    expect(outcome.devices.filter((d) => d.verdict === 'ERROR')).toHaveLength(1);
    expect(outcome.devices.filter((d) => d.verdict === 'PASS')).toHaveLength(7);
  });
});
