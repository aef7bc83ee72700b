/**
 * The ecc check: a new uncorrected error in the volatile or the aggregate counter since the last run
 * is FAIL, fatal; both counters are exported. On the TypeScript fake of NVML;
 * test/integration/nvml-binding.test.ts reads the two counters through the koffi binding.
 */
import { describe, expect, test } from '@jest/globals';
import type { CheckOutcome } from '../../exporter/checks/check.js';
import { createEccCheck, judgeEcc, type EccMemory } from '../../exporter/checks/ecc.js';
import { silentLogger } from '../../exporter/log.js';
import type { EccState } from '../../exporter/native/ports.js';
import { INITIAL_NODE_HEALTH, evaluateNodeHealth } from '../../exporter/node-health.js';
import { fakeNode, fakeNvml } from '../fakes/gpu.js';
import { makeRun } from '../fakes/runs.js';

const T = Date.UTC(2026, 0, 1);
const ctx = { signal: new AbortController().signal, logger: silentLogger, params: {} };

const ecc = (volatile: number, aggregate: number, pending?: boolean): EccState => ({
  enabled: true,
  volatileUncorrected: volatile,
  aggregateUncorrected: aggregate,
  retiredPagesPending: pending,
});
const seen = (volatile: number, aggregate: number, newErrorAt?: number): EccMemory => ({
  volatileUncorrected: volatile,
  aggregateUncorrected: aggregate,
  newErrorAt,
});

describe('judgeEcc', () => {
  test.each<[string, string, EccState, EccMemory | undefined, boolean | undefined]>([
    [
      'ECC off',
      'SKIP',
      {
        enabled: false,
        volatileUncorrected: undefined,
        aggregateUncorrected: undefined,
        retiredPagesPending: undefined,
      },
      undefined,
      undefined,
    ],
    ['no error at all', 'PASS', ecc(0, 0), undefined, undefined],
    ['pages waiting for retirement', 'WARN', ecc(0, 0, true), undefined, undefined],
    ['first run: volatile errors nobody judged yet', 'FAIL', ecc(2, 2), undefined, true],
    [
      'first run: lifetime errors from before the driver loaded',
      'PASS',
      ecc(0, 5),
      undefined,
      undefined,
    ],
    ['a rise of the volatile counter', 'FAIL', ecc(1, 5), seen(0, 4), true],
    ['a rise seen only in the aggregate counter', 'FAIL', ecc(0, 6), seen(0, 5), true],
    [
      'a driver reload: volatile back to 0, aggregate unchanged',
      'PASS',
      ecc(0, 5),
      seen(3, 5),
      undefined,
    ],
    ['unchanged counters', 'PASS', ecc(0, 5), seen(0, 5), undefined],
    [
      'ECC turned on since the last run: lifetime errors are history, as at the first run',
      'PASS',
      ecc(0, 5),
      { volatileUncorrected: undefined, aggregateUncorrected: undefined, newErrorAt: undefined },
      undefined,
    ],
  ])('%s → %s', (_, verdict, state, previous, fatal) => {
    const { device } = judgeEcc('5', state, previous, T);
    expect(device.verdict).toBe(verdict);
    expect(device.fatal).toBe(fatal);
  });

  test('a PASS names the counts it judged when there are any', () => {
    expect(judgeEcc('0', ecc(0, 0), undefined, T).device.reason).toBe('no uncorrected ECC errors');
    expect(judgeEcc('0', ecc(0, 5), seen(0, 5), T).device.reason).toBe(
      'no new uncorrected ECC error (volatile 0, aggregate 5)',
    );
  });

  test('a new error is dated when first seen, and the GPU stays FAIL with that date', () => {
    const first = judgeEcc('0', ecc(0, 6), seen(0, 5), T);
    expect(first.device).toMatchObject({
      verdict: 'FAIL',
      observedAt: T,
      reason:
        '1 new uncorrected (double-bit) ECC error since the last run (volatile 0, aggregate 6)',
    });
    const later = judgeEcc('0', ecc(0, 6), first.memory, T + 3_600_000);
    expect(later.device).toMatchObject({
      verdict: 'FAIL',
      fatal: true,
      observedAt: T,
      reason: `uncorrected (double-bit) ECC errors, the last new one seen ${new Date(T).toISOString()} (volatile 0, aggregate 6)`,
    });
    const again = judgeEcc('0', ecc(1, 7), later.memory, T + 7_200_000);
    expect(again.device.observedAt).toBe(T + 7_200_000);
  });

  test('an acknowledge holds until another new error comes', () => {
    const node = (run: ReturnType<typeof judgeEcc>, at: number, acknowledgedAt: number) =>
      evaluateNodeHealth(INITIAL_NODE_HEALTH, {
        conclusiveRuns: [makeRun('ecc', at, [run.device])],
        acknowledgedAt,
        now: at,
      }).state;
    const first = judgeEcc('0', ecc(1, 1), undefined, T);
    const same = judgeEcc('0', ecc(1, 1), first.memory, T + 60_000);
    expect(node(same, T + 60_000, T + 30_000)).toBe('WARN');
    const next = judgeEcc('0', ecc(1, 2), same.memory, T + 120_000);
    expect(node(next, T + 120_000, T + 30_000)).toBe('EVICT');
  });
});

describe('createEccCheck', () => {
  const samples = (outcome: CheckOutcome, metric: string) =>
    (outcome.samples ?? []).filter((s) => s.metric === metric).map((s) => [s.labels.gpu, s.value]);

  test('exports both counters, and fails a GPU whose only new error is in the aggregate counter', async () => {
    const gpus = fakeNode(2);
    gpus[1]!.ecc = ecc(0, 5);
    let now = T;
    const check = createEccCheck({ nvml: { ok: true, nvml: fakeNvml(gpus) }, now: () => now });

    const first = await check.run(ctx);
    expect(first.devices.map((d) => d.verdict)).toEqual(['PASS', 'PASS']);
    expect(samples(first, 'autopilot_gpu_ecc_volatile_uncorrected_errors')).toEqual([
      ['0', 0],
      ['1', 0],
    ]);
    expect(samples(first, 'autopilot_gpu_ecc_aggregate_uncorrected_errors')).toEqual([
      ['0', 0],
      ['1', 5],
    ]);

    // Between the runs an application started, hit a DBE and ended; the driver reloaded after it.
    gpus[1]!.ecc = ecc(0, 6);
    now = T + 3_600_000;
    const second = await check.run(ctx);
    expect(second.devices.map((d) => d.verdict)).toEqual(['PASS', 'FAIL']);
    expect(second.devices[1]).toMatchObject({ fatal: true, observedAt: now });
  });

  test('a GPU whose ECC counters NVML does not report exports none', async () => {
    const gpus = fakeNode(1);
    gpus[0]!.ecc = {
      ...ecc(0, 0),
      volatileUncorrected: undefined,
      aggregateUncorrected: undefined,
    };
    const outcome = await createEccCheck({ nvml: { ok: true, nvml: fakeNvml(gpus) } }).run(ctx);
    expect(outcome.samples).toEqual([]);
    expect(outcome.devices[0]?.verdict).toBe('PASS');
  });
});
