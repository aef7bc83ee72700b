/**
 * The built CLI (dist/exporter/main.js) as scripts and initContainers run it: exit codes, stdout
 * and stderr. jest's global setup builds the fakes; the file builds dist/ itself.
 */

import { execFileSync, spawn } from 'node:child_process';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from '@jest/globals';
import { freePort } from '../fakes/ports.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
const FAKE_DCGMI = join(ROOT, 'test', 'fakes', 'bin', 'fake-dcgmi');

execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });

interface Ran {
  readonly code: number | null;
  readonly out: string;
  readonly err: string;
}

async function autopilot(args: string[], env: Record<string, string> = {}): Promise<Ran> {
  return ran(process.execPath, [MAIN, ...args], {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    NODE_NAME: 'gpu-node',
    ...env,
  });
}

async function ran(
  file: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  cwd = ROOT,
): Promise<Ran> {
  const child = spawn(file, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { code, out, err };
}

describe('preflight against an exporter that cannot be reached', () => {
  let unreachable: string[] = [];
  beforeAll(async () => {
    // A loopback port nothing listens on (fetch refuses low ports such as 1 as "bad port").
    const url = `http://127.0.0.1:${await freePort()}`;
    unreachable = ['preflight', '--url', url, '--checks', 'remapped'];
  });

  test('exits 1 by default, naming the URL and the cause', async () => {
    const ran = await autopilot(unreachable);
    expect(ran.code).toBe(1);
    expect(ran.out).toMatch(
      /^preflight gpu-node: cannot ask http:\/\/127\.0\.0\.1:\d+\/status\?host=gpu-node\S*: fetch failed: .*ECONNREFUSED.*\nNOT READY\n$/,
    );
  });

  test('exits 0 with --on-unreachable=pass, and still says why', async () => {
    const ran = await autopilot([...unreachable, '--on-unreachable=pass']);
    expect(ran.code).toBe(0);
    expect(ran.out).toMatch(
      /cannot ask http:\/\/127\.0\.0\.1:\d+\/\S*: fetch failed: .*ECONNREFUSED/,
    );
    expect(ran.out).toMatch(/\nREADY: the exporters could not be asked/);
  });

  test('a bad --on-unreachable is bad usage (2)', async () => {
    const ran = await autopilot([...unreachable, '--on-unreachable=maybe']);
    expect(ran.code).toBe(2);
    expect(ran.err).toContain('invalid --on-unreachable "maybe": expected fail or pass');
  });
});

describe('preflight --checks is checked before asking anyone', () => {
  test('an unknown check is bad usage (2) and the known ones are named', async () => {
    // The URL is never asked: the exit status must not depend on an exporter.
    const ran = await autopilot([
      'preflight',
      '--url',
      'http://127.0.0.1:9',
      '--checks',
      'pciebw,remaped',
    ]);
    expect(ran.code).toBe(2);
    expect(ran.err).toMatch(
      /invalid --checks: unknown check "remaped"; known checks: .*\bremapped\b/,
    );
    expect(ran.out).toBe('');
  });
});

describe('check exit statuses', () => {
  const dcgm = (scenario: string, args: string[] = []): Promise<Ran> =>
    autopilot(['check', 'dcgm', ...args], {
      AUTOPILOT_DCGMI_COMMAND: FAKE_DCGMI,
      FAKE_DCGMI_SCENARIO: scenario,
    });

  test.each<[string, string, number]>([
    ['every test passes', 'pass-4x', 0],
    ['a GPU fails a test (FAIL)', 'fail-4x', 1],
    ['the host engine is down (ERROR: dcgm could not tell)', 'hostengine-down', 3],
  ])('%s: %s exits %d', async (_name, scenario, code) => {
    const ran = await dcgm(scenario);
    expect(ran.out).toMatch(/^CHECK +DEVICE +VERDICT +REASON\n/);
    expect(ran.code).toBe(code);
  });

  test('an unknown check is bad usage (2)', async () => {
    const ran = await autopilot(['check', 'dcgn']);
    expect(ran.code).toBe(2);
    expect(ran.err).toContain('unknown check "dcgn"');
  });
});

describe('check --output json, --level and --version', () => {
  const env = { AUTOPILOT_DCGMI_COMMAND: FAKE_DCGMI, FAKE_DCGMI_SCENARIO: 'fail-4x' };

  test('--output json is one JSON document in the shape of /status?format=json', async () => {
    const ran = await autopilot(['check', 'dcgm', '--output', 'json'], env);
    expect(ran.code).toBe(1);
    const doc = JSON.parse(ran.out) as Record<string, unknown>;
    expect(Object.keys(doc)).toEqual(['node', 'cached', 'health', 'results']);
    expect(doc).toMatchObject({ node: 'gpu-node', cached: false });
    const results = doc.results as Record<string, unknown>[];
    expect(results).toHaveLength(1);
    expect(results[0]).toMatchObject({ check: 'dcgm', verdict: 'FAIL', params: { r: '1' } });
    expect(results[0]!.text).toEqual(expect.stringContaining('FAIL'));
  });

  test('--level 3 runs dcgmi diag -r 3', async () => {
    const argsFile = join(mkdtempSync(join(tmpdir(), 'cli-')), 'args');
    const ran = await autopilot(['check', 'dcgm', '--level', '3', '--output=json'], {
      ...env,
      FAKE_DCGMI_SCENARIO: 'pass-4x',
      FAKE_DCGMI_ARGS_FILE: argsFile,
    });
    expect(ran.code).toBe(0);
    expect(readFileSync(argsFile, 'utf8').split('\n').slice(0, 3)).toEqual(['diag', '-r', '3']);
    expect(JSON.parse(ran.out)).toMatchObject({ results: [{ params: { r: '3' } }] });
  });

  test('--version prints the package version', async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const ran = await autopilot(['--version']);
    expect(ran.code).toBe(0);
    expect(ran.out).toBe(`autopilot ${pkg.version}\n`);
  });
});

describe('check progress on stderr', () => {
  test('a slow dcgmi: "check still running" lines with the check, its GPUs and elapsed time', async () => {
    // The fake hangs; a 7-second deadline ends it after the first progress line (every 5 s).
    const ran = await autopilot(['check', 'dcgm'], {
      AUTOPILOT_DCGMI_COMMAND: FAKE_DCGMI,
      FAKE_DCGMI_SCENARIO: 'hang',
      AUTOPILOT_CHECK_TIMEOUTS: 'dcgm.1=7s',
    });
    expect(ran.code).toBe(3);
    const progress = ran.err
      .split('\n')
      .filter((line) => line.includes('"check still running"'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(progress.length).toBeGreaterThanOrEqual(1);
    // dcgmi diag tests every GPU at once: the runner cannot know which one it is on.
    expect(progress[0]).toMatchObject({
      check: 'dcgm',
      params: { r: '1' },
      gpus: 'all GPUs',
      elapsedSeconds: 5,
    });
    expect(ran.out).toContain('did not finish within 7 s');
  }, 20_000);
});

describe('the documented way to run the CLI', () => {
  test('README shows npx autopilot, and its stdout is the JSON document alone (no npm banner)', async () => {
    expect(readFileSync(join(ROOT, 'README.md'), 'utf8')).toContain(
      'npx autopilot check ping --output json',
    );
    // offline: npx must find the package's own bin, never fetch a namesake from the registry.
    const env = {
      ...process.env,
      npm_config_offline: 'true',
      NODE_NAME: 'gpu-node',
      AUTOPILOT_DCGMI_COMMAND: FAKE_DCGMI,
      FAKE_DCGMI_SCENARIO: 'pass-4x',
    };
    const out = await ran('npx', ['autopilot', 'check', 'dcgm', '--output', 'json'], env);
    expect(out.err).not.toContain('npm error');
    expect(out.code).toBe(0);
    expect(JSON.parse(out.out)).toMatchObject({ node: 'gpu-node', results: [{ check: 'dcgm' }] });
  }, 30_000);
});

/** Every file under `dir` with its modification time, to see what a build wrote. */
function mtimes(dir: string): Map<string, number> {
  const files = readdirSync(dir, { recursive: true, encoding: 'utf8' });
  return new Map(
    files
      .filter((file) => statSync(join(dir, file)).isFile())
      .map((file) => [file, statSync(join(dir, file)).mtimeMs]),
  );
}

describe('npm run build is incremental', () => {
  const build = (cwd: string): Promise<Ran> =>
    ran('npm', ['run', '--silent', 'build'], { ...process.env, npm_config_offline: 'true' }, cwd);

  test('here: the build info lives in dist/, and a build with nothing changed writes nothing', async () => {
    expect((await build(ROOT)).code).toBe(0);
    expect(statSync(join(ROOT, 'dist', '.tsbuildinfo')).isFile()).toBe(true);
    const before = mtimes(join(ROOT, 'dist'));
    expect(before.get(join('exporter', 'main.js'))).toBeDefined();
    expect((await build(ROOT)).code).toBe(0);
    expect(mtimes(join(ROOT, 'dist'))).toEqual(before);
  }, 60_000);

  test('a fresh tree builds; a changed source is emitted again, an unchanged one is not', async () => {
    // The project's own build script and configs over two small sources, in a clone-like copy.
    const tree = mkdtempSync(join(tmpdir(), 'build-'));
    for (const file of ['package.json', 'tsconfig.json', 'tsconfig.build.json']) {
      writeFileSync(join(tree, file), readFileSync(join(ROOT, file)));
    }
    symlinkSync(join(ROOT, 'node_modules'), join(tree, 'node_modules'));
    mkdirSync(join(tree, 'exporter'));
    // main.ts: the package's bin, which the build must leave executable for `npx autopilot`.
    writeFileSync(join(tree, 'exporter', 'main.ts'), 'export const a: number = 1;\n');
    writeFileSync(join(tree, 'exporter', 'b.ts'), 'export const b: string = "b";\n');

    const fresh = await build(tree);
    expect(fresh).toMatchObject({ code: 0, err: '' });
    const aJs = join(tree, 'dist', 'exporter', 'main.js');
    expect(readFileSync(aJs, 'utf8')).toContain('export const a = 1;');
    expect(statSync(aJs).mode & 0o111).toBe(0o111);
    const first = mtimes(join(tree, 'dist'));

    expect((await build(tree)).code).toBe(0);
    expect(mtimes(join(tree, 'dist'))).toEqual(first);

    writeFileSync(join(tree, 'exporter', 'main.ts'), 'export const a: number = 2;\n');
    expect((await build(tree)).code).toBe(0);
    expect(readFileSync(aJs, 'utf8')).toContain('export const a = 2;');
    const after = mtimes(join(tree, 'dist'));
    const bJs = join('exporter', 'b.js');
    expect(after.get(bJs)).toBe(first.get(bJs));
  }, 60_000);
});
