import { join } from 'node:path';
import { describe, expect, test } from '@jest/globals';
import { ESLint } from 'eslint';
import tseslint from 'typescript-eslint';

const ROOT = join(import.meta.dirname, '..', '..');

// Only the import rule, without type information: the layering is a property of import strings, and
// type-checking the whole tree would make this test as slow as `npm run lint`.
const eslint = new ESLint({
  cwd: ROOT,
  overrideConfig: [
    tseslint.configs.disableTypeChecked,
    // The filtered-out rules' disable comments would otherwise read as unused.
    { linterOptions: { reportUnusedDisableDirectives: 'off' } },
  ],
  ruleFilter: ({ ruleId }) => ruleId === 'no-restricted-imports',
});

async function importErrors(code: string, filePath: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: join(ROOT, filePath) });
  return result!.messages.map((m) => `${m.ruleId ?? 'parse'}: ${m.message}`);
}

const CLUSTER_IMPORT =
  "import { resolveTargets } from '../cluster/fanout.js';\nvoid resolveTargets;\n";

describe('the core does not import the cluster or API layers (eslint.config.js)', () => {
  test.each([
    ['exporter/checks/x.ts', CLUSTER_IMPORT],
    ['exporter/metrics/x.ts', "import type { Peer } from '../cluster/peer-directory.js';\n"],
    ['exporter/config/x.ts', "import { createApiApp } from '../api/app.js';\nvoid createApiApp;\n"],
    ['exporter/scheduler.ts', "import type { KubeHealth } from './cluster/kube-health.js';\n"],
    ['exporter/store.ts', "import { renderTable } from './api/render.js';\nvoid renderTable;\n"],
  ])('%s importing the outer layer is an error', async (file, code) => {
    const errors = await importErrors(code, file);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^no-restricted-imports: .*does not import exporter\/cluster\//);
  });

  test('the side-effect restrictions still hold in the core', async () => {
    const errors = await importErrors(
      "import koffi from 'koffi';\nvoid koffi;\n",
      'exporter/checks/x.ts',
    );
    expect(errors).toEqual([
      expect.stringMatching(/^no-restricted-imports: .*Only the adapter folder/),
    ]);
  });

  test.each([
    ['exporter/checks/pvc.ts', CLUSTER_IMPORT],
    [
      'exporter/exporter.ts',
      "import { resolveTargets } from './cluster/fanout.js';\nvoid resolveTargets;\n",
    ],
    ['exporter/api/x.ts', CLUSTER_IMPORT],
    ['exporter/checks/x.ts', "import type { KubeApi } from '../k8s/ports.js';\n"],
  ])('%s may import it', async (file, code) => {
    expect(await importErrors(code, file)).toEqual([]);
  });

  test('the real tree has no violation', async () => {
    const results = await eslint.lintFiles(['exporter']);
    expect(results.length).toBeGreaterThan(50);
    const violations = results.flatMap((r) =>
      r.messages.map((m) => `${r.filePath.slice(ROOT.length + 1)}:${m.line}: ${m.message}`),
    );
    expect(violations).toEqual([]);
  });
});
