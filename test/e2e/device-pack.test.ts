/**
 * The GPU-host pack (scripts/device-pack.sh, docs/gpu-host.md) as a GPU host without Node or npm
 * would run it: packed here, copied to a temporary folder, and run by its one command with a PATH
 * that has no node, against the C fakes of libnvidia-ml and the CUDA runtime that jest's global
 * setup builds. The nvcc build is skipped (DEVICE_SKIP_BUILD=1): the fake probe is built against
 * the fake runtime, and the real one would find no driver here.
 */

import { execFile } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';

const ROOT = join(import.meta.dirname, '..', '..');
const PACK = join(ROOT, 'build', 'device-pack');
const FAKE_NVML = join(ROOT, 'build', 'fakes', 'nvml', 'libnvidia-ml.so.1');
const FAKE_PROBE = join(ROOT, 'build', 'fakes', 'cuda', 'libautopilot-probe.so');
const LIMIT_BYTES = 64 * 1024 * 1024;
/** What run.sh calls on the way (coreutils, xz): a host's basics, and no node. */
const TOOLS = [
  'bash',
  'cat',
  'chmod',
  'cut',
  'date',
  'find',
  'grep',
  'mkdir',
  'mv',
  'nproc',
  'sed',
  'sha256sum',
  'tee',
  'timeout',
  'uname',
  'wc',
  'xz',
];

interface Run {
  readonly code: number;
  readonly output: string;
  readonly seconds: number;
}

function run(file: string, args: readonly string[], options: object): Promise<Run> {
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(file, args, { encoding: 'utf8', ...options }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
      resolve({ code, output: stdout + stderr, seconds: (Date.now() - started) / 1000 });
    });
  });
}

let work: string;
let packed: Run;
let tools: string;
/** On a healthy fake node with a few faults; with a CUDA runtime whose copies and kernels hang. */
let healthy: Run;
let hung: Run;

/** A folder of links to TOOLS: a PATH with no node or npm in it. */
function toolFolder(): string {
  const bin = join(work, 'bin');
  mkdirSync(bin);
  const dirs = (process.env.PATH ?? '').split(':').filter((dir) => dir !== '');
  for (const tool of TOOLS) {
    const found = dirs.map((dir) => join(dir, tool)).find((path) => existsSync(path));
    if (found === undefined) throw new Error(`${tool} is not on PATH, and run.sh needs it`);
    symlinkSync(found, join(bin, tool));
  }
  return bin;
}

/** Runs the copied pack's one command on the fakes. */
function runPack(folder: string, env: Record<string, string>): Promise<Run> {
  return run('bash', [join(folder, 'pack', 'run.sh')], {
    cwd: folder,
    timeout: 200_000,
    env: {
      PATH: tools,
      HOME: folder,
      DEVICE_SKIP_BUILD: '1',
      AUTOPILOT_NVML_LIBRARY: FAKE_NVML,
      AUTOPILOT_CUDA_PROBE_LIBRARY: FAKE_PROBE,
      DEVICE_NVML_RUNS: '50',
      DEVICE_XID_LISTEN_MS: '1500',
      ...env,
    },
  });
}

/** The table of one GPU: its rows as cells, by "check item". */
function tableOf(output: string, gpu: number): Map<string, readonly string[]> {
  const start = output.indexOf(`### GPU ${gpu}: `);
  if (start < 0) throw new Error(`no table for GPU ${gpu} in:\n${output}`);
  const section = output.slice(start).split('\n\n')[1] ?? '';
  const rows = section
    .split('\n')
    .slice(2)
    .map((line) =>
      line
        .split('|')
        .slice(1, -1)
        .map((cell) => cell.trim()),
    );
  return new Map(rows.map((cells) => [`${cells[0]} ${cells[1]}`, cells.slice(2)]));
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'device-pack-'));
  tools = toolFolder();
  packed = await run('bash', [join(ROOT, 'scripts', 'device-pack.sh')], {
    cwd: ROOT,
    timeout: 300_000,
  });
  if (packed.code !== 0) throw new Error(`device-pack.sh failed:\n${packed.output}`);
  for (const host of ['healthy', 'hung'])
    cpSync(PACK, join(work, host, 'pack'), { recursive: true });
  // Side by side: the hung run mostly waits.
  [healthy, hung] = await Promise.all([
    runPack(join(work, 'healthy'), {
      OUT: join(work, 'out'),
      FAKE_NVML_SCENARIO: 'pending=2;xid=1:79',
      FAKE_CUDA_SCENARIO: 'h2d=3:6.5',
    }),
    runPack(join(work, 'hung'), { DEVICE_STEP_TIMEOUT_S: '5', FAKE_CUDA_SCENARIO: 'hang=600000' }),
  ]);
}, 400_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('the GPU-host pack', () => {
  test('is built and its size printed, under 64 MiB, with the compressed node in it', () => {
    expect(packed.code).toBe(0);
    const size =
      /device-pack: build\/device-pack is [\d.]+ MiB \((\d+) bytes; the limit is 64 MiB\)/.exec(
        packed.output,
      );
    expect(size).not.toBeNull();
    const bytes = Number(size![1]);
    expect(bytes).toBeLessThan(LIMIT_BYTES);
    expect(bytes).toBeGreaterThan(statSync(join(PACK, 'node.xz')).size);
  });

  test('runs by its one command without node: a table per GPU with the verdict of every check', () => {
    const { output } = healthy;
    expect(healthy.code).toBe(0);
    expect(output).toContain('\nnode: absent\n');
    expect(output).toMatch(
      /\nnode: \S+\/pack\/bin\/node v\d+\.\d+\.\d+ \(unpacked from the pack\)\n/,
    );
    expect(output).toContain('nvcc build skipped (DEVICE_SKIP_BUILD=1)');
    expect(output).toContain('## Device check: 8 GPUs');
    expect(readFileSync(join(work, 'out', 'device-run.txt'), 'utf8')).toBe(output);

    for (let gpu = 0; gpu < 8; gpu++) {
      const table = tableOf(output, gpu);
      for (const check of ['remapped', 'gpupower', 'ecc']) {
        const [verdict, measured, target] = table.get(`${check} NVML time, this GPU`) ?? [];
        expect(verdict).toMatch(/^(PASS|WARN|FAIL)$/);
        expect(measured).toMatch(/^\d+\.\d µs$/);
        expect(target).toBe('≤ 50 µs');
      }
      expect(table.get('xid listened 1.5 s')?.[0]).toBe(gpu === 1 ? 'FAIL' : 'PASS');
      const [pcieVerdict, seconds, pcieTarget] = table.get('pciebw time, this GPU alone') ?? [];
      expect(pcieVerdict).toBe(gpu === 3 ? 'WARN' : 'PASS');
      expect(seconds).toMatch(/^\d+\.\d{3} s$/);
      expect(pcieTarget).toBe('≤ 0.5 s');
      // No driver here: the native loop fails, and the row says why instead of a ratio.
      expect(table.get('pciebw h2d ÷ native')?.[1]).toMatch(
        new RegExp(`^probe ${gpu === 3 ? '6.5' : '54.6'} GB/s; native loop failed: .*\\(35\\)$`),
      );
      expect(table.get('gpumem run time')?.[0]).toBe('PASS');
      expect(table.get('gpumem HBM')?.[1]).toMatch(/^\d+(\.\d+)? GB\/s$/);
      expect(table.get('gpumem pattern')?.[1]).toMatch(/^0 mismatches in \d+\.\d GB$/);
      expect(table.get('gpumem FP64')?.[1]).toMatch(/^\d+(\.\d+)? TFLOPS$/);
    }
    // A pending row remap is not healthy, whatever its exact verdict.
    expect(tableOf(output, 2).get('remapped NVML time, this GPU')?.[0]).not.toBe('PASS');
    expect(tableOf(output, 0).get('remapped NVML time, this GPU')?.[0]).toBe('PASS');
  });

  test('a hung CUDA call is reported as timed out, the other checks still judged, and the run ends', () => {
    const { output } = hung;
    expect(output).toMatch(/\nTIMED OUT: pciebw: all GPUs after 5\.0 s\n/);
    expect(output).toMatch(/\nTIMED OUT: gpumem: all GPUs after 5\.0 s\n/);
    for (let gpu = 0; gpu < 8; gpu++) {
      const table = tableOf(output, gpu);
      expect(table.get('ecc NVML time, this GPU')?.[0]).toBe('PASS');
      expect(table.get('xid listened 1.5 s')?.[0]).toBe('PASS');
      expect(table.get('pciebw time, this GPU alone')?.slice(0, 2)).toEqual([
        '—',
        'timed out after 5.0 s',
      ]);
      expect(table.get('gpumem run time')?.slice(0, 2)).toEqual(['—', 'timed out after 5.0 s']);
    }
    // The stuck driver thread would keep Node from exiting: it ends itself, and run.sh says so.
    expect(output).toContain('exiting by SIGKILL');
    expect(output).toContain('device-check.js: killed (exit 137)');
    expect(hung.code).toBe(137);
    expect(hung.seconds).toBeLessThan(90);
  });

  test('refuses a budget it cannot keep, naming the setting', async () => {
    const result = await runPack(join(work, 'healthy'), { DEVICE_BUDGET_S: 'soon' });
    expect(result.code).toBe(2);
    expect(result.output).toContain(
      "DEVICE_BUDGET_S must be a whole number of seconds, 30 or more, not 'soon'",
    );
  });
});
