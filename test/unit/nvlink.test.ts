/** The nvlink check's pure parts: the verdicts, the rate maths and the expected-links rule. */
import { describe, expect, test } from '@jest/globals';
import {
  counterRates,
  downLinks,
  expectedActiveLinks,
  judgeNvLink,
  nvLinkSamples,
  nvmlReturnName,
  type NvLinkJudgement,
  type NvLinkReading,
} from '../../exporter/checks/nvlink.js';
import type { NvLinks } from '../../exporter/native/ports.js';

const zero = { replay: 0, recovery: 0, crc_flit: 0, crc_data: 0 };
function links(count: number, down: number[] = [], errors: Record<number, object> = {}): NvLinks {
  return {
    supported: true,
    links: Array.from({ length: count }, (_, link) => ({
      link,
      active: !down.includes(link),
      errors: { ...zero, ...errors[link] },
    })),
  };
}
const completed = { supported: true, state: 3, status: 0, healthSummary: 1, source: 'v3' } as const;
const reading = (nvlinks: NvLinks, extra: Partial<NvLinkReading> = {}): NvLinkReading => ({
  nvlinks,
  fabric: completed,
  mig: false,
  ...extra,
});
const judge = (j: Partial<NvLinkJudgement> & { reading: NvLinkReading }) =>
  judgeNvLink({
    id: '0',
    previous: undefined,
    now: 0,
    expected: 18,
    seenBeforeRule: true,
    errorRate: 100,
    ...j,
  });

describe('judgeNvLink', () => {
  test('all links up, fabric completed: PASS, compat 0', () => {
    const { device } = judge({ reading: reading(links(18)) });
    expect(device.verdict).toBe('PASS');
    expect(device.compatValue).toBe(0);
    expect(device.evidence['activeLinks']).toBe(18);
  });

  test('links down below the expected count: FAIL naming them, compat 1', () => {
    const { device } = judge({ reading: reading(links(18, [3, 11])) });
    expect(device.verdict).toBe('FAIL');
    expect(device.reason).toBe('2 NVLinks down: link 3, link 11 (16 of 18 active, 18 expected)');
    expect(device.compatValue).toBe(1);
  });

  test('no NVLink: SKIP with the reason', () => {
    const nvlinks: NvLinks = {
      supported: false,
      reason: 'nvmlDeviceGetNvLinkState: Not Supported (3)',
    };
    const { device } = judge({ reading: reading(nvlinks) });
    expect(device.verdict).toBe('SKIP');
    expect(device.reason).toBe(
      'no NVLink on this GPU (nvmlDeviceGetNvLinkState: Not Supported (3))',
    );
  });

  test('fabric not completed: WARN at the first round, FAIL when the next round still finds it so', () => {
    const pending = reading(links(18), { fabric: { ...completed, state: 2 } });
    const first = judge({ reading: pending, now: 1000 });
    expect(first.device.verdict).toBe('WARN');
    expect(first.device.reason).toBe(
      'fabric registration in progress, not completed yet: FAIL if it is still not at the next run',
    );
    expect(first.memory.fabricPendingSince).toBe(1000);
    const second = judge({ reading: pending, previous: first.memory, now: 2000 });
    expect(second.device.verdict).toBe('FAIL');
    expect(second.device.reason).toContain('not completed at two rounds in a row');
    expect(second.memory.fabricPendingSince).toBe(1000);
    // Completed in between: the spell is over, and a later pending reading starts a new one.
    const done = judge({ reading: reading(links(18)), previous: first.memory, now: 2000 });
    expect(done.device.verdict).toBe('PASS');
    expect(done.memory.fabricPendingSince).toBeUndefined();
    expect(judge({ reading: pending, previous: done.memory, now: 3000 }).device.verdict).toBe(
      'WARN',
    );
  });

  test('links down while the fabric registration is still under way: WARN, FAIL at the next run', () => {
    const pending = reading(links(18, [3]), { fabric: { ...completed, state: 2 } });
    const first = judge({ reading: pending, now: 1000 });
    expect(first.device.verdict).toBe('WARN');
    expect(first.device.reason).toContain('1 NVLink down: link 3');
    const second = judge({ reading: pending, previous: first.memory, now: 2000 });
    expect(second.device.verdict).toBe('FAIL');
    expect(second.device.reason).toContain('link 3');
  });

  test('fabric completed with a failed status: FAIL at once', () => {
    const failed = judge({
      reading: reading(links(18), { fabric: { ...completed, status: 999 } }),
    });
    expect(failed.device.verdict).toBe('FAIL');
    expect(failed.device.reason).toBe('fabric registration failed: NVML_ERROR_UNKNOWN (999)');
  });

  test('no fabric to read: that part skipped, the links still judged', () => {
    const fabric = {
      supported: false,
      reason: 'this NVML has no nvmlDeviceGetGpuFabricInfo(V)',
    } as const;
    expect(judge({ reading: reading(links(18), { fabric }) }).device.verdict).toBe('PASS');
    expect(judge({ reading: reading(links(18, [0]), { fabric }) }).device.verdict).toBe('FAIL');
  });

  test('a counter rising faster than the rate between rounds: WARN naming link and counter', () => {
    const first = judge({ reading: reading(links(18)), now: 1_000 });
    const second = judge({
      reading: reading(links(18, [], { 5: { recovery: 3_000 } })),
      previous: first.memory,
      now: 11_000,
    });
    expect(second.device.verdict).toBe('WARN');
    expect(second.device.reason).toBe(
      'NVLink error counters rising faster than 100/s: link 5 recovery +3000 (300.0/s)',
    );
  });

  test('the first round has no rate, however high the counts', () => {
    const { device } = judge({ reading: reading(links(18, [], { 1: { crc_flit: 1e9 } })) });
    expect(device.verdict).toBe('PASS');
    expect(device.reason).toContain('error rates from the next run on');
  });

  test('a MIG GPU is not judged on its links (NVML reports them down there)', () => {
    const { device } = judge({ reading: reading(links(18, [0, 1, 2]), { mig: true }) });
    expect(device.verdict).toBe('PASS');
    expect(device.reason).toContain('MIG enabled');
  });
});

describe('counterRates', () => {
  test('rise over elapsed seconds; a counter that went down (driver reload) did not rise', () => {
    const first = judge({
      reading: reading(links(2, [], { 0: { replay: 50, crc_data: 10 } })),
      now: 0,
    });
    const rates = counterRates(
      links(2, [], { 0: { replay: 10, crc_data: 30 } }),
      first.memory,
      4_000,
    );
    expect(rates).toEqual([{ link: 0, counter: 'crc_data', rise: 20, perSecond: 5 }]);
  });

  test('none at the first round or with no time elapsed', () => {
    expect(counterRates(links(2), undefined, 5)).toEqual([]);
    const first = judge({ reading: reading(links(2)), now: 10 });
    expect(counterRates(links(2, [], { 0: { replay: 5 } }), first.memory, 10)).toEqual([]);
  });

  test('a rate exactly at the threshold does not WARN; 0 warns on any rise', () => {
    const first = judge({ reading: reading(links(1)), now: 0 });
    const at = (errorRate: number, replay: number) =>
      judge({
        reading: reading(links(1, [], { 0: { replay } })),
        previous: first.memory,
        now: 1_000,
        expected: 1,
        errorRate,
      }).device.verdict;
    expect(at(100, 100)).toBe('PASS');
    expect(at(100, 101)).toBe('WARN');
    expect(at(0, 1)).toBe('WARN');
  });
});

describe('the expected-links rule', () => {
  test('auto: the most of the same model; a number: that many', () => {
    expect(expectedActiveLinks('auto', 18)).toBe(18);
    expect(expectedActiveLinks('auto', undefined)).toBeUndefined();
    expect(expectedActiveLinks(12, 18)).toBe(12);
  });

  test('as many active as expected: the down links are by design, unless seen up before', () => {
    // A board with 4 of 6 links bridged on every GPU: 4 expected, links 4 and 5 down by design.
    expect(downLinks(links(6, [4, 5]), 4, undefined)).toEqual([]);
    expect(downLinks(links(6, [4, 5]), 4, new Set([0, 1, 2, 3, 5]))).toEqual([5]);
  });

  test('every GPU losing the same link passes the count rule, and the seen-before rule catches it', () => {
    const before = judge({ reading: reading(links(18)), now: 0 });
    const after = judge({
      reading: reading(links(18, [7])),
      previous: before.memory,
      expected: 17,
      now: 1,
    });
    expect(after.device.verdict).toBe('FAIL');
    expect(after.device.reason).toContain('link 7');
    const numbered = judge({
      reading: reading(links(18, [7])),
      previous: before.memory,
      expected: 17,
      seenBeforeRule: false,
      now: 1,
    });
    expect(numbered.device.verdict).toBe('PASS');
  });

  test('fewer links than expected and none inactive: FAIL saying so', () => {
    const { device } = judge({ reading: reading(links(12)), expected: 18 });
    expect(device.verdict).toBe('FAIL');
    expect(device.reason).toBe('12 of 12 NVLinks active, 18 expected');
  });

  test('return code names come from nvml.h', () => {
    expect(nvmlReturnName(27)).toBe('NVML_ERROR_NOT_READY (27)');
    expect(nvmlReturnName(4242)).toBe('unknown nvmlReturn_t (4242)');
  });
});

describe('nvLinkSamples: the series budget (issue 21)', () => {
  const gpu = { index: 5, uuid: 'GPU-5', name: 'NVIDIA H200', pciBusId: '', serial: '' };
  const seriesOf = (samples: ReturnType<typeof nvLinkSamples>, metric: string) =>
    samples.filter((s) => s.metric === metric);

  test('every link has its up series; a counter at 0 has none', () => {
    const samples = nvLinkSamples(gpu, reading(links(18, [3])));
    const up = seriesOf(samples, 'autopilot_gpu_nvlink_up');
    expect(up.map((s) => s.labels['link'])).toEqual(Array.from({ length: 18 }, (_, l) => `${l}`));
    expect(up.find((s) => s.labels['link'] === '3')?.value).toBe(0);
    expect(seriesOf(samples, 'autopilot_gpu_nvlink_errors_total')).toEqual([]);
    // 18 up, fabric ready and state: 20 per GPU, 160 on 8 GPUs, where 18 × 5 + 2 = 92 were.
    expect(samples).toHaveLength(20);
  });

  test('a non-zero counter keeps its series with its raw count, named by link and counter', () => {
    const samples = nvLinkSamples(
      gpu,
      reading(links(18, [], { 2: { crc_flit: 5000 }, 7: { replay: 1, recovery: 0 } })),
    );
    expect(seriesOf(samples, 'autopilot_gpu_nvlink_errors_total')).toEqual([
      {
        metric: 'autopilot_gpu_nvlink_errors_total',
        labels: { gpu: '5', uuid: 'GPU-5', link: '2', counter: 'crc_flit' },
        value: 5000,
      },
      {
        metric: 'autopilot_gpu_nvlink_errors_total',
        labels: { gpu: '5', uuid: 'GPU-5', link: '7', counter: 'replay' },
        value: 1,
      },
    ]);
  });

  test('a counter back at 0 (driver reload) drops its series; the verdict still saw the first rise', () => {
    const first = judge({ reading: reading(links(18)), now: 0 });
    const rising = reading(links(18, [], { 4: { recovery: 9000 } }));
    const second = judge({ reading: rising, previous: first.memory, now: 10_000 });
    expect(second.device.verdict).toBe('WARN');
    expect(second.device.reason).toContain('link 4 recovery +9000 (900.0/s)');
    expect(seriesOf(nvLinkSamples(gpu, rising), 'autopilot_gpu_nvlink_errors_total')).toHaveLength(
      1,
    );
    const reloaded = nvLinkSamples(gpu, reading(links(18)));
    expect(seriesOf(reloaded, 'autopilot_gpu_nvlink_errors_total')).toEqual([]);
  });
});
