import { describe, test, expect } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  DCGM_TIMEOUTS_MS,
  createDcgmCheck,
  dcgmFailureString,
  dcgmIsExclusive,
  dcgmTimeoutMs,
  judgeDcgm,
  normaliseTestName,
  parseDcgmDiag,
  parseDcgmLevel,
} from '../../exporter/checks/dcgm.js';
import type { DcgmEntry, DcgmJudgeOptions } from '../../exporter/checks/dcgm.js';
import { ParamError } from '../../exporter/checks/check.js';
import type { CheckOutcome, CheckRun, DeviceResult } from '../../exporter/checks/check.js';
import type { CommandResult, CommandSpec, RunCommand } from '../../exporter/exec/run-command.js';
import { evaluateNodeHealth, INITIAL_NODE_HEALTH } from '../../exporter/node-health.js';
import { SAMPLE_METRICS } from '../../exporter/metrics/catalogue.js';
import { silentLogger } from '../../exporter/log.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'dcgm');
const fixture = (name: string): string => readFileSync(join(FIXTURES, name), 'utf8');

const DEFAULT_FATAL = ['PCIe', 'NVLink', 'ECC', 'GPU Memory'];

function exited(stdout: string, exitCode: number, stderr = ''): CommandResult {
  return { end: 'exited', exitCode, signal: null, stdout, stderr, durationMs: 5 };
}

function judge(result: CommandResult, options: Partial<DcgmJudgeOptions> = {}) {
  return judgeDcgm(result, { level: 3, fatalErrors: DEFAULT_FATAL, ...options });
}

function device(outcome: CheckOutcome, id: string): DeviceResult {
  const found = outcome.devices.find((d) => d.id === id);
  if (found === undefined) throw new Error(`no device ${JSON.stringify(id)}`);
  return found;
}

/** A 4.x document with one test whose results are given. */
function doc4(name: string, results: readonly object[], summary?: object): string {
  return JSON.stringify({
    'DCGM Diagnostic': {
      test_categories: [
        { category: 'Integration', tests: [{ name, results, test_summary: summary }] },
      ],
    },
    metadata: { version: '4.2.3' },
  });
}
const gpu4 = (id: number, status: string, extra: object = {}) => ({
  entity_group: 'GPU',
  entity_group_id: 1,
  entity_id: id,
  status,
  ...extra,
});

function runOf(outcome: CheckOutcome, finishedAt = 1000): CheckRun {
  return {
    check: 'dcgm',
    trigger: 'api',
    params: { r: '3' },
    startedAt: 0,
    finishedAt,
    verdict: outcome.verdict ?? 'FAIL',
    reason: outcome.reason ?? '',
    devices: outcome.devices,
    samples: outcome.samples ?? [],
  };
}

describe('normaliseTestName', () => {
  test.each([
    ['PCIe', 'pcie'],
    ['GPU Memory', 'gpu_memory'],
    ['Memory Bandwidth', 'memory_bandwidth'],
    ['Page Retirement/Row Remap', 'page_retirement_row_remap'],
    ['Permissions and OS Blocks', 'permissions_and_os_blocks'],
    ['  Targeted Power ', 'targeted_power'],
    ['a|b', 'a_b'],
    // Autopilot replaced each character, so runs of spaces stay several underscores.
    ['Pulse  Test', 'pulse__test'],
    ['Inforom', 'inforom'],
    // DCGM 4 plugin names that replaced a differently named 3.x test.
    ['memory', 'gpu_memory'],
    ['eud', 'eud_test'],
    ['EUD Test', 'eud_test'],
    ['pcie', 'pcie'],
    ['memory_bandwidth', 'memory_bandwidth'],
    ['software', 'software'],
    ['nvbandwidth', 'nvbandwidth'],
  ])('%j → %j', (name, expected) => {
    expect(normaliseTestName(name)).toBe(expected);
  });
});

describe('parseDcgmDiag', () => {
  test('reads the DCGM 4 schema: one entry per test and GPU', () => {
    const diag = parseDcgmDiag(fixture('fail-4x.json'));
    if (diag.kind !== 'results') throw new Error(diag.kind);
    expect(diag.schema).toBe('dcgm4');
    expect(diag.version).toBe('4.2.3');
    expect(diag.entries).toHaveLength(8 * 4);
    expect(diag.entries.filter((e) => e.status === 'fail')).toEqual([
      {
        test: 'pcie',
        hardware: true,
        gpu: '2',
        entity: undefined,
        status: 'fail',
        messages: [
          "GPU 2 is running at PCI link width 8X, which is below the minimum allowed link generation of 16 (parameter 'h2d_d2h_single_pinned.min_pci_width')",
        ],
        errors: [{ id: 46, category: 13 }],
      },
      {
        test: 'memory_bandwidth',
        hardware: true,
        gpu: '0',
        entity: undefined,
        status: 'fail',
        messages: [
          'GPU 0 only achieved a memory bandwidth of 1523.40 GB/s, failing to meet 2400.00 GB/s for test 0',
        ],
        errors: [{ id: 62, category: 1 }],
      },
    ]);
    expect(new Set(diag.entries.map((e) => e.test))).toEqual(
      new Set([
        'software',
        'gpu_memory',
        'diagnostic',
        'pcie',
        'memory_bandwidth',
        'targeted_stress',
        'targeted_power',
        'eud_test',
      ]),
    );
  });

  test('reads the DCGM 3 schema: deployment tests have no GPU', () => {
    const diag = parseDcgmDiag(fixture('fail-3x.json'));
    if (diag.kind !== 'results') throw new Error(diag.kind);
    expect(diag.schema).toBe('dcgm3');
    expect(diag.version).toBe('3.3.9');
    const deployment = diag.entries.filter((e) => e.gpu === undefined);
    expect(deployment.map((e) => e.test)).toEqual([
      'denylist',
      'nvml_library',
      'cuda_main_library',
      'permissions_and_os_blocks',
      'persistence_mode',
      'environment_variables',
      'page_retirement_row_remap',
      'graphics_processes',
      'inforom',
    ]);
    expect(deployment.every((e) => !e.hardware)).toBe(true);
    expect(diag.entries.find((e) => e.test === 'pcie' && e.gpu === '2')).toEqual({
      test: 'pcie',
      hardware: true,
      gpu: '2',
      entity: undefined,
      status: 'fail',
      messages: ['Detected more than 8 PCIe replays per minute for GPU 2 : 14'],
      errors: [{ id: 3, category: 13 }],
    });
  });

  test('reads 3.x deployment errors: integer gpu_id and the text under "warnings"', () => {
    const diag = parseDcgmDiag(
      JSON.stringify({
        'DCGM GPU Diagnostic': {
          test_categories: [
            {
              category: 'Deployment',
              tests: [
                {
                  name: 'Page Retirement/Row Remap',
                  results: [
                    {
                      gpu_id: 1,
                      status: 'Fail',
                      warnings: [{ warnings: 'Row remapping is pending for GPU 1', error_id: 85 }],
                    },
                  ],
                },
              ],
            },
          ],
        },
      }),
    );
    expect(diag).toEqual({
      kind: 'results',
      schema: 'dcgm3',
      version: undefined,
      entries: [
        {
          test: 'page_retirement_row_remap',
          hardware: false,
          gpu: '1',
          entity: undefined,
          status: 'fail',
          messages: ['Row remapping is pending for GPU 1'],
          errors: [{ id: 85, category: 10 }],
        },
      ],
    });
  });

  test('a 4.x test-wide failure that no entity carries becomes an entry tied to no GPU', () => {
    const diag = parseDcgmDiag(
      doc4('pcie', [gpu4(0, 'Pass')], {
        status: 'Fail',
        warnings: [{ warning: 'NVLink 3 of the node is down', error_id: 14 }],
      }),
    );
    if (diag.kind !== 'results') throw new Error(diag.kind);
    expect(diag.entries).toEqual([
      { test: 'pcie', hardware: true, gpu: '0', entity: undefined, status: 'pass', messages: [] },
      {
        test: 'pcie',
        hardware: true,
        gpu: undefined,
        entity: undefined,
        status: 'fail',
        messages: ['NVLink 3 of the node is down'],
        // error_id alone: its category from DCGM's table (NVLINK_DOWN, HARDWARE_NVLINK).
        errors: [{ id: 14, category: 11 }],
      },
    ]);
  });

  test('a 4.x summary that an entity already reports adds nothing', () => {
    const diag = parseDcgmDiag(
      doc4('pcie', [gpu4(0, 'Fail', { warnings: [{ warning: 'x' }] })], {
        status: 'Fail',
        warnings: [{ warning: 'x' }],
      }),
    );
    if (diag.kind !== 'results') throw new Error(diag.kind);
    expect(diag.entries).toHaveLength(1);
  });

  test('a 4.x test without results is read from its summary', () => {
    const diag = parseDcgmDiag(doc4('nccl_tests', [], { status: 'Skip' }));
    if (diag.kind !== 'results') throw new Error(diag.kind);
    expect(diag.entries).toEqual([
      {
        test: 'nccl_tests',
        hardware: true,
        gpu: undefined,
        entity: undefined,
        status: 'skip',
        messages: [],
      },
    ]);
  });

  test('4.x entities other than GPUs are named by group and id', () => {
    const diag = parseDcgmDiag(
      doc4('cpu_eud', [{ entity_group: 'CPU', entity_group_id: 7, entity_id: 0, status: 'Pass' }]),
    );
    if (diag.kind !== 'results') throw new Error(diag.kind);
    expect(diag.entries[0]).toMatchObject({ test: 'cpu_eud', gpu: undefined, entity: 'cpu0' });
  });

  test('runtime_error documents of both schemas', () => {
    expect(parseDcgmDiag(fixture('hostengine-down.json'))).toEqual({
      kind: 'error',
      schema: 'dcgm4',
      version: '4.2.3',
      message:
        'Error: Unable to complete diagnostic for entities 0,1,2,3. Return: (-21) : Host engine connection invalid/disconnected',
    });
    expect(
      parseDcgmDiag(
        '{"DCGM GPU Diagnostic": {"version": "3.3.9", "runtime_error": "Error: Diagnostic could not be run while DCGM is paused."}}',
      ),
    ).toEqual({
      kind: 'error',
      schema: 'dcgm3',
      version: '3.3.9',
      message: 'Error: Diagnostic could not be run while DCGM is paused.',
    });
  });

  test.each([
    ['', 'printed nothing'],
    ['  \n', 'printed nothing'],
    ['Successfully ran diagnostic for group.\n', 'printed no JSON document'],
    ['[1, 2]', 'printed JSON that is not an object'],
    ['{"something": "else"}', 'printed no DCGM diagnostic results'],
    ['{"iterations": [], "Overall Result": "Pass"}', 'printed an --iterations document'],
    ['{"DCGM Diagnostic": {"metadata": {}}}', 'printed a document without test_categories'],
  ])('unreadable: %j', (stdout, reason) => {
    expect(parseDcgmDiag(stdout)).toEqual({ kind: 'unreadable', reason });
  });

  test.each(['{"DCGM Diagnostic": {"test_categories": [', '{\n', '{\n\t"DCGM Diagnostic" :\n\t{'])(
    'a document cut short is named as such, with the JSON error: %j',
    (stdout) => {
      const diag = parseDcgmDiag(stdout);
      expect(diag).toEqual({ kind: 'unreadable', reason: expect.any(String) });
      expect(diag.kind === 'unreadable' && diag.reason).toMatch(
        /^printed an incomplete JSON document \(.+\)$/,
      );
    },
  );

  test('finds the document among other lines', () => {
    const diag = parseDcgmDiag(`note: something\n${fixture('pass-4x.json')}\n`);
    expect(diag.kind).toBe('results');
  });

  test('ignores malformed parts instead of throwing', () => {
    const diag = parseDcgmDiag(
      JSON.stringify({
        'DCGM Diagnostic': {
          test_categories: [
            null,
            { tests: 'no' },
            { tests: [{ name: 5 }, { name: 'pcie', results: [null, { status: 'Maybe' }] }] },
          ],
        },
      }),
    );
    expect(diag).toEqual({ kind: 'results', schema: 'dcgm4', version: undefined, entries: [] });
  });
});

describe('dcgmFailureString (Autopilot annotation format)', () => {
  const entry = (test: string, gpu: string | undefined, status: DcgmEntry['status']) => ({
    test,
    gpu,
    status,
  });

  test('tests concatenated without separator, each with its failing GPUs', () => {
    expect(
      dcgmFailureString([
        entry('pcie', '0', 'pass'),
        entry('pcie', '2', 'fail'),
        entry('memory_bandwidth', '0', 'fail'),
        entry('memory_bandwidth', '1', 'warn'),
      ]),
    ).toBe('pcie.2memory_bandwidth.0');
  });

  test('several GPUs of one test', () => {
    expect(
      dcgmFailureString(['0', '1', '2', '3'].map((g) => entry('memory_bandwidth', g, 'fail'))),
    ).toBe('memory_bandwidth.0.1.2.3');
  });

  test('a result tied to no GPU is NoGPUid, without a dot, as Autopilot wrote it', () => {
    expect(dcgmFailureString([entry('denylist', undefined, 'fail')])).toBe('denylistNoGPUid');
  });

  test('empty when nothing failed', () => {
    expect(dcgmFailureString([entry('pcie', '0', 'warn'), entry('pcie', '1', 'skip')])).toBe('');
  });

  test('the fixtures give the same string in both schemas', () => {
    expect(judge(exited(fixture('fail-4x.json'), 226)).conclusive).toEqual({
      passed: false,
      output: 'pcie.2memory_bandwidth.0',
    });
    expect(judge(exited(fixture('fail-3x.json'), 205)).conclusive).toEqual({
      passed: false,
      output: 'pcie.2memory_bandwidth.0',
    });
  });
});

describe('judgeDcgm', () => {
  /**
   * Constructed (no capture): a DCGM 4.x document where one test fails on GPU 0 with one error, as
   * dcgmi/Diag.cpp (v4.2.3) writes it: error_id, error_category, error_severity beside the text.
   */
  const constructed4x = (test: string, errorId: number, category: number, text: string): string =>
    JSON.stringify({
      'DCGM Diagnostic': {
        test_categories: [
          {
            category: 'Integration',
            tests: [
              {
                name: test,
                results: [
                  {
                    entity_group: 'GPU',
                    entity_group_id: 1,
                    entity_id: 0,
                    status: 'Fail',
                    warnings: [
                      {
                        error_category: category,
                        error_id: errorId,
                        error_severity: 1,
                        warning: text,
                      },
                    ],
                  },
                  { entity_group: 'GPU', entity_group_id: 1, entity_id: 1, status: 'Pass' },
                ],
                test_summary: { status: 'Fail' },
              },
            ],
          },
        ],
      },
      metadata: { version: '4.2.3' },
    });

  test('an NVLink-category error on a failing test is fatal with the default list (constructed)', () => {
    // DCGM_FR_NVLINK_DOWN 14, DCGM_FR_EC_HARDWARE_NVLINK 11 (dcgmlib/dcgm_errors.h, v4.2.3).
    const doc = constructed4x('nvbandwidth', 14, 11, 'GPU 0 NVLink link 3 is currently down');
    const { outcome } = judge(exited(doc, 226));
    expect(outcome.devices.map((d) => [d.id, d.verdict, d.fatal ?? false])).toEqual([
      ['0', 'FAIL', true],
      ['1', 'PASS', false],
      ['', 'PASS', false],
    ]);
    expect(device(outcome, '0').reason).toMatch(/^failed nvbandwidth \(fatal: nvbandwidth\)/);
    // Not fatal once NVLink is left out of the list.
    const without = judge(exited(doc, 226), { fatalErrors: ['PCIe', 'ECC', 'GPU Memory'] });
    expect(device(without.outcome, '0').fatal).toBeUndefined();
  });

  test('an NVSwitch-category error counts as NVLink; a 3.x error_id alone is mapped to its category', () => {
    // DCGM_FR_NVSWITCH_FATAL_ERROR 15, DCGM_FR_EC_HARDWARE_NVSWITCH 12.
    const nvswitch = judge(exited(constructed4x('diagnostic', 15, 12, 'NVSwitch fatal'), 226));
    expect(device(nvswitch.outcome, '0').fatal).toBe(true);
    // Constructed 3.x result with only error_id 71 (DCGM_FR_NVLINK_ERROR_CRITICAL).
    const doc3 = JSON.stringify({
      'DCGM GPU Diagnostic': {
        test_categories: [
          {
            category: 'Integration',
            tests: [
              {
                name: 'Targeted Stress',
                results: [
                  {
                    gpu_id: '0',
                    status: 'Fail',
                    warnings: [{ error_id: 71, warning: 'NVLink error critical' }],
                  },
                ],
              },
            ],
          },
        ],
      },
    });
    const { outcome } = judge(exited(doc3, 205));
    expect(device(outcome, '0').fatal).toBe(true);
    expect(parseDcgmDiag(doc3)).toMatchObject({
      entries: [{ test: 'targeted_stress', errors: [{ id: 71, category: 11 }] }],
    });
  });

  test('an ECC error on a failing test is fatal with the default list (constructed)', () => {
    // DCGM_FR_DBE_VIOLATION 103, DCGM_FR_EC_HARDWARE_MEMORY 10 (dcgmlib/dcgm_errors.h, v4.2.3).
    const doc = constructed4x('targeted_stress', 103, 10, 'Double bit error detected on GPU 0');
    const { outcome } = judge(exited(doc, 226));
    expect(device(outcome, '0')).toMatchObject({ verdict: 'FAIL', fatal: true });
    // ECC_DISABLED 55 is a memory-category setting, not an ECC error: not fatal.
    const disabled = judge(exited(constructed4x('targeted_stress', 55, 10, 'ECC off'), 226));
    expect(device(disabled.outcome, '0')).toMatchObject({ verdict: 'FAIL' });
    expect(device(disabled.outcome, '0').fatal).toBeUndefined();
  });

  test.each([
    [5, 'VOLATILE_SBE_DETECTED'],
    [102, 'SBE_VIOLATION'],
    [105, 'SBE_THRESHOLD_VIOLATION'],
    [6, 'PENDING_PAGE_RETIREMENTS'],
    [85, 'PENDING_ROW_REMAP'],
  ])(
    'ECC code %d (%s), corrected or pending, is a FAIL that does not evict (constructed)',
    (id) => {
      const { outcome } = judge(exited(constructed4x('targeted_stress', id, 10, 'memory'), 226));
      expect(device(outcome, '0')).toMatchObject({ verdict: 'FAIL' });
      expect(device(outcome, '0').fatal).toBeUndefined();
    },
  );

  test('acceptance: GPU 2 failing PCIe is fatal, GPU 0 failing memory bandwidth is not', () => {
    const { outcome } = judge(exited(fixture('fail-4x.json'), 226));
    expect(outcome.devices.map((d) => [d.id, d.verdict, d.fatal ?? false])).toEqual([
      ['0', 'FAIL', false],
      ['1', 'PASS', false],
      ['2', 'FAIL', true],
      ['3', 'PASS', false],
      ['', 'PASS', false],
    ]);
    expect(device(outcome, '2').reason).toBe(
      "failed pcie (fatal: pcie): GPU 2 is running at PCI link width 8X, which is below the minimum allowed link generation of 16 (parameter 'h2d_d2h_single_pinned.min_pci_width'); skipped: eud_test",
    );
    expect(device(outcome, '0').reason).toMatch(/^failed memory_bandwidth: GPU 0 only achieved/);
    // Autopilot's gauge stays node-level: one series, deviceid "".
    expect(outcome.devices.filter((d) => d.compatValue !== undefined)).toEqual([
      expect.objectContaining({ id: '', compatValue: 1 }),
    ]);
    const health = evaluateNodeHealth(INITIAL_NODE_HEALTH, {
      conclusiveRuns: [runOf(outcome)],
      acknowledgedAt: undefined,
      now: 1000,
    });
    expect(health.state).toBe('EVICT');
    expect(health.reasons).toEqual([`dcgm 2: ${device(outcome, '2').reason}`]);
  });

  test('the non-fatal failure alone makes the node WARN, not EVICT', () => {
    const { outcome } = judge(exited(fixture('fail-4x.json'), 226), { fatalErrors: ['NVLink'] });
    expect(outcome.devices.some((d) => d.fatal === true)).toBe(false);
    const health = evaluateNodeHealth(INITIAL_NODE_HEALTH, {
      conclusiveRuns: [runOf(outcome)],
      acknowledgedAt: undefined,
      now: 1000,
    });
    expect(health.state).toBe('WARN');
    expect(health.reasons).toHaveLength(2);
  });

  test('evidence: one key per test with its result, and the error text', () => {
    const { outcome } = judge(exited(fixture('fail-4x.json'), 226));
    expect(device(outcome, '0').evidence).toEqual({
      software: 'pass',
      gpu_memory: 'pass',
      diagnostic: 'pass',
      pcie: 'pass',
      memory_bandwidth: 'fail',
      targeted_stress: 'pass',
      targeted_power: 'pass',
      eud_test: 'skip',
      details:
        'memory_bandwidth: GPU 0 only achieved a memory bandwidth of 1523.40 GB/s, failing to meet 2400.00 GB/s for test 0',
    });
    expect(device(outcome, '').evidence).toEqual({
      level: 3,
      gpus: 4,
      failures: 'pcie.2memory_bandwidth.0',
      dcgmVersion: '4.2.3',
    });
  });

  test.each([
    ['pass', 0],
    ['fail', 226],
  ])('both schemas give the same per-GPU results (%s)', (kind, exitCode) => {
    const v4 = judge(exited(fixture(`${kind}-4x.json`), exitCode)).outcome;
    const v3 = judge(exited(fixture(`${kind}-3x.json`), exitCode)).outcome;
    // DCGM 4 runs its deployment checks per GPU as "software"; DCGM 3 runs them once, for the node.
    const perGpu = (outcome: CheckOutcome) =>
      outcome.devices
        .filter((d) => d.id !== '')
        .map((d) => ({
          id: d.id,
          verdict: d.verdict,
          fatal: d.fatal ?? false,
          tests: Object.fromEntries(
            Object.entries(d.evidence).filter(([k]) => k !== 'software' && k !== 'details'),
          ),
        }));
    expect(perGpu(v4)).toHaveLength(4);
    expect(perGpu(v3)).toEqual(perGpu(v4));
  });

  test('DCGM 3 deployment tests are the node device', () => {
    const { outcome } = judge(exited(fixture('pass-3x.json'), 0));
    const node = device(outcome, '');
    expect(node).toMatchObject({ verdict: 'PASS', compatValue: 0 });
    expect(node.evidence).toMatchObject({ denylist: 'pass', inforom: 'pass', failures: '' });
    expect(node.reason).toBe('passed 9 tests');
  });

  test('a passing run: every GPU PASS with its skipped test named, gauge 0', () => {
    const judged = judge(exited(fixture('pass-4x.json'), 0));
    expect(judged.conclusive).toEqual({ passed: true, output: '' });
    expect(device(judged.outcome, '1')).toMatchObject({
      verdict: 'PASS',
      reason: 'passed 7 tests; skipped: eud_test',
    });
    expect(device(judged.outcome, '')).toMatchObject({
      verdict: 'PASS',
      compatValue: 0,
      reason: 'level 3: every test passed on 4 GPUs',
    });
  });

  describe('DCGM_FATAL_ERRORS: whole names after normalisation', () => {
    const fatalGpus = (fatalErrors: string[], stdout = fixture('fail-4x.json')) =>
      judge(exited(stdout, 226), { fatalErrors })
        .outcome.devices.filter((d) => d.fatal === true)
        .map((d) => d.id);

    test.each([
      [['PCIe'], ['2']],
      [['pcie'], ['2']],
      [[' PCIE '], ['2']],
      // Autopilot iterated "PCIe,NVLink" per character: "n", "v", ... matched almost anything.
      [['NVLink'], []],
      [['N', 'V', 'L'], []],
      // ... and matched substrings of the failure string.
      [['PCI'], []],
      [['memory'], []],
      [['Memory Bandwidth'], ['0']],
      [
        ['memory_bandwidth', 'PCIe'],
        ['0', '2'],
      ],
      [[], []],
    ])('%j → fatal GPUs %j', (list, expected) => {
      expect(fatalGpus(list)).toEqual(expected);
    });

    test('"GPU Memory" matches DCGM 4\'s memory test, and "memory" DCGM 3\'s GPU Memory', () => {
      const v4 = doc4('memory', [gpu4(1, 'Fail', { warnings: [{ warning: 'bad' }] })]);
      expect(fatalGpus(['GPU Memory'], v4)).toEqual(['1']);
      const v3 = JSON.stringify({
        'DCGM GPU Diagnostic': {
          test_categories: [
            {
              category: 'Hardware',
              tests: [{ name: 'GPU Memory', results: [{ gpu_id: '1', status: 'Fail' }] }],
            },
          ],
        },
      });
      expect(fatalGpus(['memory'], v3)).toEqual(['1']);
    });

    test('a fatal test-wide failure makes the node device fatal', () => {
      const stdout = doc4('pcie', [gpu4(0, 'Pass')], {
        status: 'Fail',
        warnings: [{ warning: 'link down' }],
      });
      const judged = judge(exited(stdout, 226));
      expect(device(judged.outcome, '')).toMatchObject({
        verdict: 'FAIL',
        fatal: true,
        compatValue: 1,
        reason: 'failed pcie (fatal: pcie): link down',
      });
      expect(judged.conclusive?.output).toBe('pcieNoGPUid');
    });
  });

  describe('warnings and skips', () => {
    test('"Warn" (DCGM text output, some third-party JSON) is WARN and not a failure', () => {
      const stdout = doc4('targeted_power', [
        gpu4(0, 'Pass'),
        gpu4(1, 'Warn', { warnings: [{ warning: 'Max power of 610.0 did not reach 700.0' }] }),
      ]);
      const judged = judge(exited(stdout, 0));
      expect(device(judged.outcome, '1')).toMatchObject({
        verdict: 'WARN',
        reason: 'warned in targeted_power: Max power of 610.0 did not reach 700.0',
        evidence: { targeted_power: 'warn' },
      });
      expect(judged.conclusive).toEqual({ passed: true, output: '' });
    });

    test('"Fail" with exit status 0 is a warning: dcgmi attached no error to any GPU', () => {
      const stdout = doc4('targeted_power', [gpu4(0, 'Pass'), gpu4(1, 'Fail')]);
      const judged = judge(exited(stdout, 0));
      expect(device(judged.outcome, '1').verdict).toBe('WARN');
      expect(judged.conclusive).toEqual({ passed: true, output: '' });
      expect(device(judged.outcome, '').compatValue).toBe(0);
    });

    test('"Fail" with exit status 226 or 205 is a failure', () => {
      const stdout = doc4('targeted_power', [gpu4(0, 'Pass'), gpu4(1, 'Fail')]);
      for (const exitCode of [226, 205]) {
        expect(device(judge(exited(stdout, exitCode)).outcome, '1').verdict).toBe('FAIL');
      }
    });

    test('a GPU whose every test was skipped is SKIP, never PASS', () => {
      const stdout = doc4('pcie', [gpu4(0, 'Pass'), gpu4(1, 'Skip')]);
      expect(device(judge(exited(stdout, 0)).outcome, '1')).toMatchObject({
        verdict: 'SKIP',
        reason: 'no test ran; skipped: pcie',
      });
    });
  });

  describe('runs that conclude nothing', () => {
    test('host engine unreachable: ERROR quoting dcgmi, no device', () => {
      const judged = judge(exited(fixture('hostengine-down.json'), 235));
      expect(judged).toEqual({
        outcome: {
          devices: [],
          verdict: 'ERROR',
          reason:
            'dcgmi diag -r 3 exited with 235: the host engine connection is invalid or lost (DCGM_ST_CONNECTION_NOT_VALID): Error: Unable to complete diagnostic for entities 0,1,2,3. Return: (-21) : Host engine connection invalid/disconnected',
        },
      });
    });

    test('unparsable output: ERROR with what dcgmi said', () => {
      expect(
        judge(exited('', 254, "Error: Couldn't find match for argument for arg -x.\n")).outcome,
      ).toEqual({
        devices: [],
        verdict: 'ERROR',
        reason:
          "dcgmi diag -r 3 exited with 254: dcgmi rejected its command line and printed nothing: Error: Couldn't find match for argument for arg -x.",
      });
      expect(judge(exited('Error: unable to connect\n', 1)).outcome.reason).toBe(
        'dcgmi diag -r 3 exited with 1 and printed no JSON document: Error: unable to connect',
      );
    });

    test('a document with no test result is an ERROR, not a PASS', () => {
      const stdout = '{"DCGM Diagnostic": {"test_categories": []}}';
      expect(judge(exited(stdout, 242)).outcome).toEqual({
        devices: [],
        verdict: 'ERROR',
        reason:
          'dcgmi diag -r 3 exited with 242: the diagnostic returned no data (DCGM_ST_NO_DATA) and printed no test result',
      });
    });

    test('warnings on stderr do not matter when stdout has results', () => {
      const judged = judge(exited(fixture('pass-4x.json'), 0, fixture('stderr-warning.stderr')));
      expect(judged.conclusive).toEqual({ passed: true, output: '' });
    });

    test.each([
      ['timeout', {}, 'ERROR', 'dcgmi diag -r 3 did not finish within 5 min'],
      ['aborted', {}, 'ERROR', 'dcgmi diag -r 3 was stopped'],
      ['output-limit', {}, 'ERROR', 'dcgmi diag -r 3 printed more output than expected'],
      ['signal', { signal: 'SIGSEGV' }, 'ERROR', 'dcgmi diag -r 3 was killed by SIGSEGV'],
      ['spawn-failed', { spawnError: 'ENOENT' }, 'SKIP', 'dcgmi is not installed'],
      [
        'spawn-failed',
        { spawnError: 'EACCES' },
        'ERROR',
        'dcgmi diag -r 3 could not start (EACCES)',
      ],
    ] as const)('%s %j: %s', (end, extra, verdict, reason) => {
      const result: CommandResult = { ...exited('', 0), exitCode: null, end, ...extra };
      expect(judge(result, { timeoutMs: 300_000 }).outcome).toEqual({
        devices: [],
        verdict,
        reason,
      });
    });
  });

  test('samples: one series per test and GPU, the result in a label', () => {
    const { outcome } = judge(exited(fixture('fail-4x.json'), 226));
    const samples = outcome.samples ?? [];
    expect(samples).toHaveLength(8 * 4);
    expect(new Set(samples.map((s) => s.metric))).toEqual(new Set(['autopilot_dcgm_test_result']));
    expect(samples.every((s) => s.value === 1)).toBe(true);
    expect(samples.filter((s) => s.labels.result === 'fail').map((s) => s.labels)).toEqual([
      { level: '3', test: 'memory_bandwidth', gpu: '0', result: 'fail' },
      { level: '3', test: 'pcie', gpu: '2', result: 'fail' },
    ]);
    // The registry adds gpumodel, the host's, to every GPU family; the check gives the rest.
    const spec = SAMPLE_METRICS.autopilot_dcgm_test_result;
    const own = spec.labelNames.filter((name) => name !== 'gpumodel');
    for (const sample of samples) expect(Object.keys(sample.labels)).toEqual(own);
  });

  test('samples of results tied to no GPU have gpu="", one per test', () => {
    const stdout = doc4('cpu_eud', [
      { entity_group: 'CPU', entity_group_id: 7, entity_id: 0, status: 'Pass' },
      { entity_group: 'CPU', entity_group_id: 7, entity_id: 1, status: 'Fail' },
    ]);
    const { outcome } = judge(exited(stdout, 226));
    expect(outcome.samples).toEqual([
      {
        metric: 'autopilot_dcgm_test_result',
        labels: { level: '3', test: 'cpu_eud', gpu: '', result: 'fail' },
        value: 1,
      },
    ]);
    expect(device(outcome, '').evidence).toMatchObject({
      'cpu_eud.cpu0': 'pass',
      'cpu_eud.cpu1': 'fail',
    });
  });
});

describe('levels, exclusivity, deadlines', () => {
  test.each([
    [undefined, 1],
    ['', 1],
    ['1', 1],
    ['2', 2],
    [' 3 ', 3],
    ['4', 4],
  ])('r=%j is level %d', (raw, level) => {
    expect(parseDcgmLevel(raw)).toBe(level);
  });

  test.each(['0', '5', 'x', '1.5', '-1', 'pcie'])('r=%j is refused', (raw) => {
    expect(() => parseDcgmLevel(raw)).toThrow(ParamError);
    expect(() => parseDcgmLevel(raw)).toThrow(/^r must be a DCGM diagnostic level from 1 to 4/);
  });

  test('levels 2 and up need the GPUs to themselves', () => {
    expect([{}, { r: '1' }, { r: '2' }, { r: '3' }, { r: '4' }].map(dcgmIsExclusive)).toEqual([
      false,
      false,
      true,
      true,
      true,
    ]);
  });

  test('deadlines per level, overridable', () => {
    expect([1, 2, 3, 4].map((l) => dcgmTimeoutMs(l as 1 | 2 | 3 | 4))).toEqual([
      300_000, 1_200_000, 5_400_000, 14_400_000,
    ]);
    expect(dcgmTimeoutMs(1, { 1: 1000 })).toBe(1000);
    expect(dcgmTimeoutMs(2, { 1: 1000 })).toBe(DCGM_TIMEOUTS_MS[2]);
  });
});

describe('createDcgmCheck', () => {
  function fakeRun(result: CommandResult) {
    const specs: CommandSpec[] = [];
    const run: RunCommand = (spec) => {
      specs.push(spec);
      return Promise.resolve(result);
    };
    return { run, specs };
  }

  function makeCheck(result: CommandResult, timeoutsMs?: Partial<Record<1 | 2 | 3 | 4, number>>) {
    const { run, specs } = fakeRun(result);
    const recorded: unknown[] = [];
    const check = createDcgmCheck({
      run,
      command: 'dcgmi',
      fatalErrors: DEFAULT_FATAL,
      ...(timeoutsMs === undefined ? {} : { timeoutsMs }),
      onResult: (r) => recorded.push(r),
      now: () => 1_746_107_107_000,
    });
    return { check, specs, recorded };
  }

  const runCheck = (check: ReturnType<typeof makeCheck>['check'], r: string) =>
    check.run({ signal: new AbortController().signal, logger: silentLogger, params: { r } });

  test('identity and contract fields', () => {
    const { check } = makeCheck(exited('', 0));
    expect(check).toMatchObject({
      name: 'dcgm',
      banner: 'DCGM test',
      compatHealth: 'dcgm',
      deviceKind: 'gpu',
      usesGpu: true,
      exclusive: false,
      timeoutMs: 4 * 3600_000,
    });
    expect(check.parseParams({})).toEqual({ r: '1' });
    expect(check.parseParams({ r: '3' })).toEqual({ r: '3' });
    expect(() => check.parseParams({ r: '9' })).toThrow(ParamError);
    expect(makeCheck(exited('', 0), { 4: 60_000 }).check.timeoutMs).toBe(DCGM_TIMEOUTS_MS[3]);
  });

  test('runs dcgmi diag -r <level> -j with the level’s deadline', async () => {
    const { check, specs } = makeCheck(exited(fixture('pass-4x.json'), 0), { 2: 1234 });
    await runCheck(check, '2');
    expect(specs).toEqual([
      expect.objectContaining({ file: 'dcgmi', args: ['diag', '-r', '2', '-j'], timeoutMs: 1234 }),
    ]);
  });

  test('a conclusive run reports what the DCGM labels record', async () => {
    const { check, recorded } = makeCheck(exited(fixture('fail-3x.json'), 205));
    const outcome = await runCheck(check, '3');
    expect(device(outcome, '2').fatal).toBe(true);
    expect(recorded).toEqual([
      { level: 3, passed: false, output: 'pcie.2memory_bandwidth.0', at: 1_746_107_107_000 },
    ]);
    const passing = makeCheck(exited(fixture('pass-4x.json'), 0));
    await runCheck(passing.check, '1');
    expect(passing.recorded).toEqual([
      { level: 1, passed: true, output: '', at: 1_746_107_107_000 },
    ]);
  });

  test.each([
    ['ERROR', exited(fixture('hostengine-down.json'), 235)],
    ['SKIP', { ...exited('', 0), end: 'spawn-failed' as const, spawnError: 'ENOENT' }],
  ])('%s reports nothing to the labels', async (verdict, result) => {
    const { check, recorded } = makeCheck(result);
    expect((await runCheck(check, '1')).verdict).toBe(verdict);
    expect(recorded).toEqual([]);
  });

  describe('formatText', () => {
    const textOf = async (result: CommandResult, verdict: CheckRun['verdict']) => {
      const { check } = makeCheck(result);
      const outcome = await runCheck(check, '3');
      return check.formatText({ ...runOf(outcome), verdict }, 'node-a');
    };

    test('success', async () => {
      expect(await textOf(exited(fixture('pass-4x.json'), 0), 'PASS')).toBe(
        '[[ DCGM ]] Briefings completed. Continue with dcgm evaluation.\nSkipped: eud_test on GPU 0, GPU 1, GPU 2, GPU 3\n[[ DCGM ]] SUCCESS\n',
      );
    });

    test('failure: Host, FAIL, the failing GPUs, the failure string', async () => {
      expect(await textOf(exited(fixture('fail-4x.json'), 226), 'FAIL')).toBe(
        [
          '[[ DCGM ]] Briefings completed. Continue with dcgm evaluation.',
          'Host node-a',
          '[[ DCGM ]] FAIL',
          'GPU 0: FAIL failed memory_bandwidth: GPU 0 only achieved a memory bandwidth of 1523.40 GB/s, failing to meet 2400.00 GB/s for test 0; skipped: eud_test',
          "GPU 2: FAIL (fatal) failed pcie (fatal: pcie): GPU 2 is running at PCI link width 8X, which is below the minimum allowed link generation of 16 (parameter 'h2d_d2h_single_pinned.min_pci_width'); skipped: eud_test",
          'pcie.2memory_bandwidth.0',
          '',
        ].join('\n'),
      );
    });

    test('warnings are listed before SUCCESS, which stays the last line', async () => {
      const stdout = doc4('targeted_power', [gpu4(0, 'Pass'), gpu4(1, 'Warn')]);
      expect(await textOf(exited(stdout, 0), 'WARN')).toBe(
        [
          '[[ DCGM ]] Briefings completed. Continue with dcgm evaluation.',
          'GPU 1: WARN warned in targeted_power',
          '[[ DCGM ]] SUCCESS',
          '',
        ].join('\n'),
      );
    });

    test('ERROR and SKIP: ABORT with the reason', async () => {
      expect(await textOf(exited(fixture('hostengine-down.json'), 235), 'ERROR')).toMatch(
        /^\[\[ DCGM \]\] ERROR: dcgmi diag -r 3 exited with 235: .*Host engine connection invalid\/disconnected\. ABORT\n$/,
      );
      const { check } = makeCheck(exited('', 0));
      const run: CheckRun = {
        ...runOf({ devices: [] }),
        verdict: 'SKIP',
        reason: 'dcgmi is not installed',
      };
      expect(check.formatText(run, 'node-a')).toBe(
        '[[ DCGM ]] SKIP: dcgmi is not installed. ABORT\n',
      );
    });
  });
});

/**
 * Constructed, not captured: each document has the keys dcgmi/Diag.cpp writes at the named tag
 * (docs/checks.md, "JSON shapes by release"); no public capture of these releases was found.
 */
describe('shapes by release (constructed from dcgmi/Diag.cpp)', () => {
  const doc3 = (categories: object[], extra: object = {}) =>
    JSON.stringify({ 'DCGM GPU Diagnostic': { test_categories: categories }, ...extra });
  const deployment = (name: string, results: object[]) => ({
    category: 'Deployment',
    tests: [{ name, results }],
  });
  const hardware = (name: string, results: (object | null)[]) => ({
    category: 'Hardware',
    tests: [{ name, results }],
  });

  test('2.1.4-3.2.x: "gpu_ids" and a string "warnings" put each result on its GPU', () => {
    const stdout = doc3(
      [
        deployment('Blacklist', [{ status: 'Pass' }]),
        hardware('GPU Memory', [
          { gpu_ids: '0', status: 'Pass', info: 'Allocated 1 bytes' },
          { gpu_ids: '1', status: 'Fail', warnings: 'Memory error on GPU 1', error_id: 6 },
        ]),
      ],
      { version: '3.2.6' },
    );
    const judged = judge(exited(stdout, 226));
    expect(judged.outcome.devices.map((d) => [d.id, d.verdict, d.fatal === true])).toEqual([
      ['0', 'PASS', false],
      ['1', 'FAIL', true],
      ['', 'PASS', false],
    ]);
    expect(device(judged.outcome, '1').reason).toBe(
      'failed gpu_memory (fatal: gpu_memory): Memory error on GPU 1',
    );
    expect(device(judged.outcome, '').evidence).toMatchObject({ gpus: 2, dcgmVersion: '3.2.6' });
    expect(judged.conclusive).toEqual({ passed: false, output: 'gpu_memory.1' });
  });

  test('a null slot (a GPU that did not run the test) is passed over', () => {
    const diag = parseDcgmDiag(doc3([hardware('PCIe', [null, { gpu_ids: '1', status: 'Pass' }])]));
    expect(diag.kind === 'results' && diag.entries.map((e) => e.gpu)).toEqual(['1']);
  });

  test('3.3.1-3.3.2: a deployment error in a status-less results[1] joins results[0]', () => {
    const diag = parseDcgmDiag(
      doc3([
        deployment('Persistence Mode', [
          { status: 'Fail', warnings: 'Persistence mode for GPU 0 is disabled.', error_id: 29 },
          { warnings: 'Persistence mode for GPU 1 is disabled.', error_id: 29 },
        ]),
      ]),
    );
    expect(diag.kind === 'results' && diag.entries).toEqual([
      {
        test: 'persistence_mode',
        hardware: false,
        gpu: undefined,
        entity: undefined,
        status: 'fail',
        messages: [
          'Persistence mode for GPU 0 is disabled.',
          'Persistence mode for GPU 1 is disabled.',
        ],
      },
    ]);
  });

  test('3.3.7+: the CPU EUD test names its CPU', () => {
    const diag = parseDcgmDiag(doc3([hardware('CPU EUD Test', [{ cpu_id: '0', status: 'Pass' }])]));
    expect(diag.kind === 'results' && diag.entries[0]).toMatchObject({
      test: 'cpu_eud_test',
      gpu: undefined,
      entity: 'cpu0',
    });
  });
});

describe('a run that verified no hardware is never PASS', () => {
  const skipped3 = JSON.stringify({
    'DCGM GPU Diagnostic': {
      test_categories: [
        { category: 'Deployment', tests: [{ name: 'Denylist', results: [{ status: 'Pass' }] }] },
        {
          category: 'Hardware',
          tests: ['GPU Memory', 'Diagnostic'].map((name) => ({
            name,
            results: [{ gpu_id: '0', status: 'Skip' }],
          })),
        },
      ],
    },
  });

  test('3.x level 3, every hardware test skipped: SKIP naming them, no label', () => {
    const judged = judge(exited(skipped3, 0));
    expect(judged.conclusive).toBeUndefined();
    expect(judged.outcome.verdict).toBe('SKIP');
    expect(judged.outcome.reason).toBe(
      'level 3: no hardware test ran on 1 GPUs; skipped: gpu_memory, diagnostic',
    );
    expect(judged.outcome.devices.map((d) => [d.id, d.verdict])).toEqual([
      ['0', 'SKIP'],
      ['', 'SKIP'],
    ]);
    expect(device(judged.outcome, '0').reason).toBe('no test ran; skipped: gpu_memory, diagnostic');
  });

  test('4.x: the software test passing on a GPU does not make it PASS at level 2', () => {
    const stdout = JSON.stringify({
      'DCGM Diagnostic': {
        test_categories: [
          { category: 'Deployment', tests: [{ name: 'software', results: [gpu4(0, 'Pass')] }] },
          { category: 'Hardware', tests: [{ name: 'memory', results: [gpu4(0, 'Skip')] }] },
          { category: 'Integration', tests: [{ name: 'pcie', results: [gpu4(0, 'Skip')] }] },
        ],
      },
    });
    const judged = judge(exited(stdout, 0), { level: 2 });
    expect(device(judged.outcome, '0')).toMatchObject({
      verdict: 'SKIP',
      reason: 'no hardware test ran; skipped: gpu_memory, pcie',
    });
    expect(judged.outcome.verdict).toBe('SKIP');
    expect(judged.conclusive).toBeUndefined();
    // Level 1 asks for the software checks only: the same results pass there.
    expect(device(judge(exited(stdout, 0), { level: 1 }).outcome, '0').verdict).toBe('PASS');
  });

  test('a failure still fails when the hardware tests skipped', () => {
    const stdout = skipped3.replace('"status":"Pass"', '"status":"Fail"');
    const judged = judge(exited(stdout, 226));
    expect(judged.outcome.verdict).toBeUndefined();
    expect(device(judged.outcome, '').verdict).toBe('FAIL');
    expect(judged.conclusive).toEqual({ passed: false, output: 'denylistNoGPUid' });
  });

  test('the text of such a run ends in SKIP and ABORT, never SUCCESS', async () => {
    const check = createDcgmCheck({
      run: () => Promise.resolve(exited(skipped3, 0)),
      command: 'dcgmi',
      fatalErrors: DEFAULT_FATAL,
    });
    const outcome = await check.run({
      signal: new AbortController().signal,
      logger: silentLogger,
      params: { r: '3' },
    });
    const run = { ...runOf(outcome), verdict: outcome.verdict ?? 'PASS', reason: outcome.reason! };
    expect(check.formatText(run, 'node-1')).toBe(
      '[[ DCGM ]] SKIP: level 3: no hardware test ran on 1 GPUs; skipped: gpu_memory, diagnostic. ABORT\n',
    );
  });
});

describe('output that is not a JSON document', () => {
  test.each([
    ['{\n', '', 'printed an incomplete JSON document'],
    [
      'Error: Unable to run diagnostic on unsupported GPU 0.\n{"DCGM GPU Diagnostic":{"version":"4.2.3"}}',
      'Error: Unable to run diagnostic on unsupported GPU 0.',
      'printed a document without test_categories',
    ],
    ['{\n\t"DCGM GPU Diagnostic" :\n\t{\n', '', 'printed an incomplete JSON document'],
    ['\x89PNG\r\n\x00 }{ "unterminated: [1, 2\n', '', 'printed no JSON document'],
  ])('%j: the reason quotes %j, never a brace', (stdout, said, what) => {
    const reason = judge(exited(stdout, 1, '')).outcome.reason ?? '';
    expect(reason).toContain(what);
    if (said !== '') expect(reason.endsWith(`: ${said}`)).toBe(true);
    expect(reason).not.toMatch(/: [{}"]/);
  });

  test('stderr is quoted first when there is something in it', () => {
    expect(
      judge(exited('{\n', 235, '\nError: host engine is not running\n')).outcome.reason,
    ).toMatch(/\): Error: host engine is not running$/);
  });
});
