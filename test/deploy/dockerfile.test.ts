/**
 * The image's Dockerfile, checked statically (no container runtime exists on the CI machine): its
 * stages, that everything it copies exists and is not excluded from the build context, that it
 * runs as the chart's non-root user, and that its `autopilot` command starts this exporter.
 */

import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from '@jest/globals';
import { parse } from 'yaml';
import { CHART, ROOT } from './helm.js';

interface Instruction {
  readonly keyword: string;
  readonly args: string;
}

/** Instructions with continuation lines joined and comments dropped. */
function parseDockerfile(text: string): Instruction[] {
  const logical = text
    .split('\n')
    .filter((line) => !line.trimStart().startsWith('#'))
    .join('\n')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
  return logical.map((line) => {
    const [keyword = '', ...rest] = line.split(/\s+/);
    return { keyword: keyword.toUpperCase(), args: rest.join(' ') };
  });
}

const instructions = parseDockerfile(readFileSync(join(ROOT, 'deploy', 'Dockerfile'), 'utf8'));
const stages: Instruction[][] = [];
for (const instruction of instructions) {
  if (instruction.keyword === 'FROM') stages.push([]);
  stages.at(-1)?.push(instruction);
}
const finalStage = stages.at(-1) ?? [];
const argsOf = (stage: readonly Instruction[], keyword: string) =>
  stage.filter((instruction) => instruction.keyword === keyword).map((i) => i.args);

const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
  .split('\n')
  .map((line) => line.trim())
  .filter((line) => line !== '' && !line.startsWith('#'));

describe('deploy/Dockerfile', () => {
  test('three stages: Node build, CUDA build with nvcc, CUDA runtime', () => {
    expect(stages.map((stage) => stage[0]!.args)).toEqual([
      expect.stringMatching(/^node:\$\{NODE_VERSION\}-\S+ AS node-build$/),
      expect.stringMatching(/^nvidia\/cuda:\$\{CUDA_VERSION\}-devel-\S+ AS cuda-build$/),
      expect.stringMatching(/^nvidia\/cuda:\$\{CUDA_VERSION\}-runtime-\S+$/),
    ]);
    expect(argsOf(stages[0]!, 'RUN').join(' ')).toMatch(/npm ci .*tsc -p tsconfig\.build\.json/s);
    expect(argsOf(stages[1]!, 'RUN')).toContain('make -C cuda');
  });

  test('the runtime has iperf3, ping and DCGM', () => {
    const runs = argsOf(finalStage, 'RUN').join(' ');
    for (const pkg of ['iperf3', 'iputils-ping', 'datacenter-gpu-manager-4-core']) {
      expect(runs).toContain(pkg);
    }
  });

  test("it runs as the chart's non-root user", () => {
    const users = argsOf(finalStage, 'USER');
    expect(users).toHaveLength(1);
    const [user, group] = users[0]!.split(':').map(Number);
    const values = parse(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as {
      securityContext: { runAsUser: number; runAsGroup: number };
    };
    expect(user).toBeGreaterThan(0);
    expect([user, group]).toEqual([
      values.securityContext.runAsUser,
      values.securityContext.runAsGroup,
    ]);
  });

  test('everything copied from the context exists and is not excluded by .dockerignore', () => {
    const copies = instructions
      .filter(
        (instruction) => instruction.keyword === 'COPY' && !instruction.args.includes('--from'),
      )
      .flatMap((instruction) => instruction.args.split(/\s+/).slice(0, -1));
    expect(copies.length).toBeGreaterThan(3);
    for (const source of copies) {
      expect([source, existsSync(join(ROOT, source))]).toEqual([source, true]);
      const top = source.split('/')[0]!;
      expect([source, ignored.includes(top) || ignored.includes(source)]).toEqual([source, false]);
    }
  });

  test('the CUDA probe lands where the exporter looks for it by default', () => {
    const copy = argsOf(finalStage, 'COPY').find((args) => args.includes('libautopilot-probe.so'));
    expect(copy).toMatch(/\.\/build\/cuda\/libautopilot-probe\.so$/);
    expect(argsOf(finalStage, 'COPY')).toContainEqual(
      expect.stringMatching(/dist\/exporter \.\/dist\/exporter$/),
    );
    expect(argsOf(finalStage, 'WORKDIR')).toEqual(['/opt/autopilot']);
    // main.js resolves ../../build/cuda/ from dist/exporter/.
    expect(readFileSync(join(ROOT, 'exporter', 'main.ts'), 'utf8')).toContain(
      "'../../build/cuda/libautopilot-probe.so'",
    );
  });

  test('the entrypoint is the autopilot command, which the deep-check Job also calls', () => {
    expect(argsOf(finalStage, 'ENTRYPOINT')).toEqual(['["/usr/local/bin/autopilot"]']);
    expect(argsOf(finalStage, 'COPY')).toContain('deploy/image/autopilot /usr/local/bin/autopilot');
    const wrapper = join(ROOT, 'deploy', 'image', 'autopilot');
    accessSync(wrapper, constants.X_OK);
    const run = spawnSync(wrapper, ['--help'], {
      encoding: 'utf8',
      env: { ...process.env, AUTOPILOT_HOME: ROOT },
    });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('autopilot deepcheck');
  });
});
