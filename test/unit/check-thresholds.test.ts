/**
 * The thresholds of pciebw, gpumem and xid as settings (issue 17): each parses, refuses what it
 * cannot mean with the setting named, and changes a verdict when it changes. The checks here are
 * built the way the exporter builds them (parseConfig, then the check table), so a setting that
 * parsed but never reached its check fails too.
 */

import { describe, expect, test } from '@jest/globals';
import type { CheckOutcome } from '../../exporter/checks/check.js';
import {
  DEFAULT_GPUMEM_SHARES,
  gpumemSettingsEnv,
  judgeGpuMem,
  type GpumemSettingValues,
} from '../../exporter/checks/gpumem.js';
import { CHECK_NAMES, createChecks } from '../../exporter/checks/index.js';
import type { CommonPorts } from '../../exporter/checks/module.js';
import { judgePcie, type PcieGpu } from '../../exporter/checks/pciebw.js';
import {
  classifyXid,
  createXidCheck,
  createXidLedger,
  judgeXids,
  type XidWarnList,
} from '../../exporter/checks/xid.js';
import { ENV_SETTINGS, parseConfig } from '../../exporter/config/config.js';
import type { Env } from '../../exporter/config/setting.js';
import { silentLogger } from '../../exporter/log.js';
import { FakeClock } from '../fakes/clock.js';
import { fakeCuda, fakeNode, fakeNvml, type FakeGpu } from '../fakes/gpu.js';

const T = Date.UTC(2026, 0, 1);
const ctx = { signal: new AbortController().signal, logger: silentLogger, params: {} };

const config = (env: Env = {}) =>
  parseConfig({ flags: new Map(), env, hostname: 'node-a', knownChecks: CHECK_NAMES });

/** The named check as the exporter creates it from these settings, over fake GPUs. */
async function runCheck(name: string, gpus: FakeGpu[], env: Env = {}): Promise<CheckOutcome> {
  const ports: CommonPorts = {
    run: () => Promise.reject(new Error('no command runs in this test')),
    nvml: { ok: true, nvml: fakeNvml(gpus) },
    cuda: { ok: true, probe: fakeCuda(gpus) },
    clock: new FakeClock(T),
    logger: silentLogger,
    kube: undefined,
  };
  const checks = createChecks(config(env), ports, { peers: () => [], runOnEvent: () => {} });
  return checks.get(name)!.run(ctx);
}

const verdictOf = (outcome: CheckOutcome, id: string) =>
  outcome.devices.find((device) => device.id === id);

const refusal = (setting: string, value: string, accepted: string): string =>
  `invalid ${setting} ${JSON.stringify(value)}: expected ${accepted}`;

describe('the settings list', () => {
  test.each([
    ['AUTOPILOT_PCIEBW_WARN_SHARE', '0.8'],
    ['AUTOPILOT_PCIEBW_SIBLING_SHARE', '0.75'],
    ['AUTOPILOT_GPUMEM_FAIL_SHARE', '0.5'],
    ['AUTOPILOT_GPUMEM_WARN_SHARE', '0.6'],
    ['AUTOPILOT_GPUMEM_SIBLING_SHARE', '0.85'],
    ['AUTOPILOT_XID_WARN', 'all'],
  ])('%s is documented with its default %s', (name, shown) => {
    expect(ENV_SETTINGS.find(([setting]) => setting === name)?.[1]).toBe(shown);
  });

  test('the defaults are the thresholds the checks had as constants', () => {
    const parsed = config();
    expect(parsed.checkSettings.get('pciebw')).toEqual({
      AUTOPILOT_PCIEBW_WARN_SHARE: 0.8,
      AUTOPILOT_PCIEBW_SIBLING_SHARE: 0.75,
    });
    expect(parsed.checkSettings.get('gpumem')).toEqual({
      AUTOPILOT_GPUMEM_FAIL_SHARE: 0.5,
      AUTOPILOT_GPUMEM_WARN_SHARE: 0.6,
      AUTOPILOT_GPUMEM_SIBLING_SHARE: 0.85,
    });
    expect(parsed.checkSettings.get('xid')).toMatchObject({ AUTOPILOT_XID_WARN: 'all' });
  });
});

describe('shares', () => {
  const SHARES = [
    ['pciebw', 'AUTOPILOT_PCIEBW_WARN_SHARE', '0.8'],
    ['pciebw', 'AUTOPILOT_PCIEBW_SIBLING_SHARE', '0.75'],
    ['gpumem', 'AUTOPILOT_GPUMEM_FAIL_SHARE', '0.5'],
    ['gpumem', 'AUTOPILOT_GPUMEM_SIBLING_SHARE', '0.85'],
  ] as const;

  test.each(SHARES.flatMap(([check, name]) => [[check, name, ' 0.3 ', 0.3] as const]))(
    '%s: %s %j parses',
    (check, name, value, parsed) => {
      expect(config({ [name]: value }).checkSettings.get(check)).toMatchObject({
        [name]: parsed,
      });
    },
  );

  test.each([
    ['AUTOPILOT_PCIEBW_WARN_SHARE', '1', 1],
    ['AUTOPILOT_PCIEBW_SIBLING_SHARE', '.5', 0.5],
    ['AUTOPILOT_GPUMEM_WARN_SHARE', '0.9', 0.9],
    ['AUTOPILOT_GPUMEM_SIBLING_SHARE', '0.925', 0.925],
  ])('%s %j is %d', (name, value, parsed) => {
    const settings = config({ [name]: value }).checkSettings;
    expect({
      ...(settings.get('pciebw') as object),
      ...(settings.get('gpumem') as object),
    }).toEqual(expect.objectContaining({ [name]: parsed }));
  });

  test.each(
    [...SHARES, ['gpumem', 'AUTOPILOT_GPUMEM_WARN_SHARE', '0.6'] as const].flatMap(
      ([, name, example]) =>
        ['0', '1.5', '-0.2', '80%', 'abc', '0x1', '1e-1', '0.8.1'].map(
          (value) => [name, value, example] as const,
        ),
    ),
  )('%s %j is refused, naming the setting and what it takes', (name, value, example) => {
    expect(() => config({ [name]: value })).toThrow(
      refusal(name, value, `a share greater than 0 and at most 1, such as ${example}`),
    );
  });
});

describe('gpumem: the FAIL share lies below the WARN share', () => {
  test.each<[string, string | undefined, string]>([
    ['both set, equal', '0.6', '0.6'],
    ['both set, crossed', '0.7', '0.6'],
    ['WARN under the default FAIL', undefined, '0.4'],
  ])('%s: refused on the WARN share, naming the FAIL share', (_, fail, warn) => {
    const env: Env = { AUTOPILOT_GPUMEM_FAIL_SHARE: fail, AUTOPILOT_GPUMEM_WARN_SHARE: warn };
    expect(() => config(env)).toThrow(
      refusal(
        'AUTOPILOT_GPUMEM_WARN_SHARE',
        warn,
        `a share above AUTOPILOT_GPUMEM_FAIL_SHARE (${fail ?? '0.5'}) and at most 1`,
      ),
    );
  });

  test('a FAIL share at or above the default WARN share is refused on the FAIL share', () => {
    expect(() => config({ AUTOPILOT_GPUMEM_FAIL_SHARE: '0.7' })).toThrow(
      refusal(
        'AUTOPILOT_GPUMEM_FAIL_SHARE',
        '0.7',
        'a share below AUTOPILOT_GPUMEM_WARN_SHARE (0.6, its default), or AUTOPILOT_GPUMEM_WARN_SHARE set above it',
      ),
    );
  });

  test('both moved together parse', () => {
    expect(
      config({
        AUTOPILOT_GPUMEM_FAIL_SHARE: '0.7',
        AUTOPILOT_GPUMEM_WARN_SHARE: '0.8',
      }).checkSettings.get('gpumem'),
    ).toEqual({
      AUTOPILOT_GPUMEM_FAIL_SHARE: 0.7,
      AUTOPILOT_GPUMEM_WARN_SHARE: 0.8,
      AUTOPILOT_GPUMEM_SIBLING_SHARE: 0.85,
    });
  });
});

describe('pciebw verdicts follow the shares', () => {
  // Gen5 x16 carries 54.19 GB/s in practice: 42.3 GB/s is 78 % of it.
  const slow = (): FakeGpu[] => {
    const gpus = fakeNode(1);
    gpus[0]!.h2dGBps = 42.3;
    gpus[0]!.d2hGBps = 42.3;
    return gpus;
  };

  test('a GPU at 78 % of the link is WARN at the default and PASS with a share of 0.7', async () => {
    expect(verdictOf(await runCheck('pciebw', slow()), '0')).toMatchObject({
      verdict: 'WARN',
      reason: expect.stringContaining('below 80 % of the 54.19 GB/s a Gen5 x16 link carries'),
    });
    const lowered = await runCheck('pciebw', slow(), { AUTOPILOT_PCIEBW_WARN_SHARE: '0.7' });
    expect(verdictOf(lowered, '0')?.verdict).toBe('PASS');
  });

  test('the reason quotes the configured share', async () => {
    const raised = await runCheck('pciebw', slow(), { AUTOPILOT_PCIEBW_WARN_SHARE: '0.95' });
    expect(verdictOf(raised, '0')?.reason).toContain('below 95 % of the 54.19 GB/s');
    const odd = judgePcie(
      '0',
      {
        idleLink: undefined,
        measured: {
          h2dGBps: 42.3,
          d2hGBps: 42.3,
          placement: { bound: true, node: 0 },
          loadedLink: { currentGeneration: 5, currentWidth: 16, maxGeneration: 5, maxWidth: 16 },
        },
      } satisfies PcieGpu,
      {
        thresholdGBps: 4,
        siblingMedianH2dGBps: undefined,
        shares: { warn: 0.7 + 0.1, sibling: 1 },
      },
    );
    expect(odd.reason).toContain('below 80 % of'); // 0.7 + 0.1 is 0.7999999999999999
  });

  test('a GPU at 80 % of its siblings passes at the default and is WARN with a share of 0.85', async () => {
    const node = (): FakeGpu[] => {
      const gpus = fakeNode(4);
      gpus[2]!.h2dGBps = 44;
      gpus[2]!.d2hGBps = 44;
      return gpus;
    };
    expect(verdictOf(await runCheck('pciebw', node()), '2')?.verdict).toBe('PASS');
    const raised = await runCheck('pciebw', node(), { AUTOPILOT_PCIEBW_SIBLING_SHARE: '0.85' });
    expect(verdictOf(raised, '2')).toMatchObject({
      verdict: 'WARN',
      reason: expect.stringContaining("far below the node's other GPUs (median h2d 55.1 GB/s)"),
    });
    expect(verdictOf(raised, '1')?.verdict).toBe('PASS');
  });
});

describe('gpumem verdicts follow the shares', () => {
  // An H200's datasheet HBM is 4800 GB/s: 2800 is 58 % of it.
  const slowHbm = (): FakeGpu[] => {
    const gpus = fakeNode(1);
    gpus[0]!.hbmGBps = 2800;
    return gpus;
  };

  test.each<[string, string, Env]>([
    ['the defaults', 'WARN', {}],
    ['a WARN share of 0.55', 'PASS', { AUTOPILOT_GPUMEM_WARN_SHARE: '0.55' }],
    [
      'FAIL and WARN shares of 0.59 and 0.65',
      'FAIL',
      { AUTOPILOT_GPUMEM_FAIL_SHARE: '0.59', AUTOPILOT_GPUMEM_WARN_SHARE: '0.65' },
    ],
  ])('HBM at 58 %% of the datasheet with %s is %s', async (_, verdict, env) => {
    const device = verdictOf(await runCheck('gpumem', slowHbm(), env), '0');
    expect(device?.verdict).toBe(verdict);
    if (verdict !== 'PASS') expect(device?.reason).toContain('HBM 2800 GB/s (datasheet 4800)');
  });

  test('FP32 at 83 % of the node median is WARN at the default and PASS with a share of 0.8', async () => {
    const node = (): FakeGpu[] => {
      const gpus = fakeNode(4);
      gpus[1]!.fp32Tflops = 50;
      return gpus;
    };
    expect(verdictOf(await runCheck('gpumem', node()), '1')).toMatchObject({
      verdict: 'WARN',
      reason: 'slow: FP32 50 TFLOPS (node median 60)',
    });
    const lowered = await runCheck('gpumem', node(), { AUTOPILOT_GPUMEM_SIBLING_SHARE: '0.8' });
    expect(verdictOf(lowered, '1')?.verdict).toBe('PASS');
  });

  test('judgeGpuMem takes the shares; without them, the defaults', () => {
    const m = { hbmGBps: 2800, mismatches: 0, bytesTested: 1, fp32Tflops: 60, fp64Tflops: 30 };
    expect(judgeGpuMem('0', 'NVIDIA H200', m, {}).verdict).toBe('WARN');
    expect(
      judgeGpuMem('0', 'NVIDIA H200', m, {}, { ...DEFAULT_GPUMEM_SHARES, warn: 0.55 }).verdict,
    ).toBe('PASS');
  });

  test("the deep check's Job gets the exporter's thresholds", () => {
    const settings = config({
      AUTOPILOT_GPUMEM_FAIL_SHARE: '0.4',
      AUTOPILOT_GPUMEM_WARN_SHARE: '0.55',
    }).checkSettings.get('gpumem') as GpumemSettingValues;
    const env = gpumemSettingsEnv(settings);
    expect(env).toEqual({
      AUTOPILOT_GPUMEM_FAIL_SHARE: '0.4',
      AUTOPILOT_GPUMEM_WARN_SHARE: '0.55',
      AUTOPILOT_GPUMEM_SIBLING_SHARE: '0.85',
    });
    expect(config(env).checkSettings.get('gpumem')).toEqual(settings);
  });
});

describe('AUTOPILOT_XID_WARN', () => {
  const warnOf = (env: Env) =>
    (config(env).checkSettings.get('xid') as Record<string, unknown>).AUTOPILOT_XID_WARN;

  test.each<[string, XidWarnList]>([
    ['all', 'all'],
    ['none', []],
    [' 63, 92 ,92,', [63, 92]],
    ['13', [13]],
  ])('%j parses', (value, parsed) => {
    expect(warnOf({ AUTOPILOT_XID_WARN: value })).toEqual(parsed);
  });

  const accepted =
    'all, none, or a comma-separated list of XID codes from 1 to 999, such as 63,92,94';
  test.each([
    [',,', ''],
    ['63,ninety-two', ' ("ninety-two" is not)'],
    ['0', ' ("0" is not)'],
    ['1000', ' ("1000" is not)'],
    ['ALL', ' ("ALL" is not)'],
  ])('%j is refused', (value, why) => {
    expect(() => config({ AUTOPILOT_XID_WARN: value })).toThrow(
      refusal('AUTOPILOT_XID_WARN', value, `${accepted}${why}`),
    );
  });

  test('an XID in both lists is refused, naming the code', () => {
    expect(() => config({ AUTOPILOT_XID_WARN: '63,48,92' })).toThrow(
      refusal(
        'AUTOPILOT_XID_WARN',
        '63,48,92',
        'XID codes that AUTOPILOT_XID_FATAL (its default) does not list; 48 is in both',
      ),
    );
    expect(() =>
      config({ AUTOPILOT_XID_FATAL: '79,94', AUTOPILOT_XID_WARN: '63,92,94,79' }),
    ).toThrow(
      refusal(
        'AUTOPILOT_XID_WARN',
        '63,92,94,79',
        'XID codes that AUTOPILOT_XID_FATAL (as set) does not list; 94, 79 are in both',
      ),
    );
    // Taken out of the fatal list, the code may warn.
    expect(warnOf({ AUTOPILOT_XID_FATAL: '79', AUTOPILOT_XID_WARN: '48' })).toEqual([48]);
  });

  test('classification: all warns on every XID but the fatal and the application ones', () => {
    const fatal = new Set([79]);
    expect(classifyXid(94, fatal, 'all').severity).toBe('warn');
    expect(classifyXid(9999, fatal, 'all').severity).toBe('warn');
    expect(classifyXid(13, fatal, 'all').severity).toBe('application');
    expect(classifyXid(94, fatal, [63, 92]).severity).toBe('application');
    expect(classifyXid(13, fatal, [13]).severity).toBe('warn');
    expect(classifyXid(79, fatal, []).severity).toBe('fatal');
  });

  const tally = (xid: number) => ({ xid, count: 1, firstAt: T, lastAt: T });

  test('XID 94 warns by default and passes when the warn list leaves it out', () => {
    expect(judgeXids('0', [tally(94)], T + 1000)).toMatchObject({ verdict: 'WARN' });
    expect(judgeXids('0', [tally(94)], T + 1000, new Set([79]), [63, 92])).toMatchObject({
      verdict: 'PASS',
      reason: expect.stringMatching(
        /^no fatal XID, and none of AUTOPILOT_XID_WARN in the last hour: XID 94 \(contained ECC error\) ×1/,
      ),
    });
    expect(judgeXids('0', [tally(13)], T + 1000, new Set(), [13])).toMatchObject({
      verdict: 'WARN',
    });
  });

  test('the xid check judges with the parsed setting', async () => {
    const gpus = fakeNode(1);
    const verdict = async (env: Env): Promise<string | undefined> => {
      const ledger = createXidLedger({ debounceMs: 0 });
      ledger.record({ gpuIndex: 0, xid: 94 }, T);
      const settings = config(env).checkSettings.get('xid') as {
        AUTOPILOT_XID_FATAL: number[];
        AUTOPILOT_XID_WARN: XidWarnList;
      };
      const check = createXidCheck({
        nvml: { ok: true, nvml: fakeNvml(gpus) },
        ledger,
        now: () => T + 1000,
        fatalXids: settings.AUTOPILOT_XID_FATAL,
        warnXids: settings.AUTOPILOT_XID_WARN,
      });
      return (await check.run(ctx)).devices[0]?.verdict;
    };
    expect(await verdict({})).toBe('WARN');
    expect(await verdict({ AUTOPILOT_XID_WARN: '63,92' })).toBe('PASS');
    expect(await verdict({ AUTOPILOT_XID_WARN: 'none' })).toBe('PASS');
  });
});
