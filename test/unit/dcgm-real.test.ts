/**
 * Real `dcgmi diag -j` captures (test/fixtures/dcgm/real, sources and readings in its README.md)
 * against the reading each one has: check verdict, the GPUs named, the tests failed and skipped.
 */

import { describe, test, expect } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { judgeDcgm, parseDcgmDiag } from '../../exporter/checks/dcgm.js';
import type { DcgmLevel } from '../../exporter/checks/dcgm.js';
import { summariseOutcome } from '../../exporter/checks/check.js';

const REAL = join(import.meta.dirname, '..', 'fixtures', 'dcgm', 'real');

interface Reading {
  readonly file: string;
  readonly level: DcgmLevel;
  /** dcgmi's exit status as the source reports it, or by DCGM's rule where it does not (README). */
  readonly exitCode: number;
  /** As the document states it; 3.x before 3.1.7 states none. */
  readonly dcgmVersion: string | undefined;
  readonly verdict: string;
  /** Each GPU device with its verdict, in order; '' is the node device. */
  readonly devices: readonly (readonly [string, string])[];
  readonly failed: readonly string[];
  readonly skipped: readonly string[];
  readonly failureString: string;
}

/** The devices of a one-GPU capture: GPU 0's verdict, then the node device's. */
const gpuAndNode = (gpu: string, node: string): Reading['devices'] => [
  ['0', gpu],
  ['', node],
];

/** The GB10 captures all fail the software test on GPU 0, and dcgmi exits 226 for it. */
const GB10_SOFTWARE_FAIL = {
  exitCode: 226,
  verdict: 'FAIL',
  failed: ['software'],
  failureString: 'software.0',
} as const;

/** The DCGM 3.1 captures pass, exit 0, and state no version. */
const VC_PASS = {
  exitCode: 0,
  dcgmVersion: undefined,
  verdict: 'PASS',
  devices: gpuAndNode('PASS', 'PASS'),
  failed: [],
  failureString: '',
} as const;

const READINGS: readonly Reading[] = [
  {
    file: 'dcgm-4.2.3-gb10-r1-fail.json',
    level: 1,
    dcgmVersion: '4.2.3',
    ...GB10_SOFTWARE_FAIL,
    devices: gpuAndNode('FAIL', 'PASS'),
    skipped: [],
  },
  {
    file: 'dcgm-4.2.3-gb10-r2-partial-skip-fail.json',
    level: 2,
    dcgmVersion: '4.2.3',
    ...GB10_SOFTWARE_FAIL,
    devices: gpuAndNode('FAIL', 'SKIP'),
    skipped: ['gpu_memory', 'pcie'],
  },
  {
    file: 'dcgm-4.5.2-gb10-r2-gated-fail.json',
    level: 2,
    dcgmVersion: '4.5.2',
    ...GB10_SOFTWARE_FAIL,
    devices: gpuAndNode('FAIL', 'SKIP'),
    skipped: ['gpu_memory', 'pcie'],
  },
  {
    file: 'dcgm-4.5.2-gb10-r2-allowed-fail.json',
    level: 2,
    dcgmVersion: '4.5.2',
    ...GB10_SOFTWARE_FAIL,
    devices: gpuAndNode('FAIL', 'PASS'),
    skipped: [],
  },
  { file: 'dcgm-3.1-vc-r2-pass.json', level: 2, ...VC_PASS, skipped: [] },
  { file: 'dcgm-3.1-vc-r3-pass.json', level: 3, ...VC_PASS, skipped: ['eud_test'] },
];

/** The tests whose evidence on any device says `status`, once each. */
function testsWith(devices: readonly { evidence: Record<string, unknown> }[], status: string) {
  return [
    ...new Set(
      devices.flatMap((d) =>
        Object.entries(d.evidence)
          .filter(([, value]) => value === status)
          .map(([test]) => test),
      ),
    ),
  ];
}

describe('real dcgmi diag captures', () => {
  test('every capture in the directory has a reading', () => {
    const files = readdirSync(REAL).filter((f) => f !== 'README.md');
    expect(files.sort()).toEqual(READINGS.map((r) => r.file).sort());
    const readme = readFileSync(join(REAL, 'README.md'), 'utf8');
    for (const file of files) expect(readme).toContain(`## ${file}`);
  });

  test.each(READINGS)('$file', (reading) => {
    const stdout = readFileSync(join(REAL, reading.file), 'utf8');
    const diag = parseDcgmDiag(stdout);
    expect(diag.kind === 'results' && diag.version).toBe(reading.dcgmVersion);

    const { outcome, conclusive } = judgeDcgm(
      {
        end: 'exited',
        exitCode: reading.exitCode,
        signal: null,
        stdout,
        stderr: '',
        durationMs: 1,
      },
      { level: reading.level, fatalErrors: ['PCIe', 'NVLink', 'ECC', 'GPU Memory'] },
    );
    expect(summariseOutcome(outcome).verdict).toBe(reading.verdict);
    expect(outcome.devices.map((d) => [d.id, d.verdict])).toEqual(reading.devices);
    expect(testsWith(outcome.devices, 'fail')).toEqual(reading.failed);
    expect(testsWith(outcome.devices, 'skip')).toEqual(reading.skipped);
    expect(outcome.devices.find((d) => d.id === '')?.evidence.failures).toBe(reading.failureString);
    expect(conclusive?.output).toBe(reading.failureString);
    // Whatever its verdict, a GPU's reason names the tests that skipped on it (the GB10 level-2
    // runs fail software while memory and pcie never ran).
    for (const gpu of outcome.devices.filter((d) => d.id !== '')) {
      const skippedHere = testsWith([gpu], 'skip');
      if (skippedHere.length > 0)
        expect(gpu.reason).toContain(`skipped: ${skippedHere.join(', ')}`);
    }
  });
});
