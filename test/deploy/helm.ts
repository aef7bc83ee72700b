/** Renders the Helm chart with the Helm binary that scripts/get-helm.sh put in build/tools/. */

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { Manifest } from './manifest-schema.js';

export const ROOT = join(import.meta.dirname, '..', '..');
export const CHART = join(ROOT, 'deploy', 'helm', 'autopilot');
export const HELM = join(ROOT, 'build', 'tools', 'helm');

export interface HelmRun {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RenderOptions {
  readonly release?: string;
  readonly namespace?: string;
  readonly values?: Readonly<Record<string, unknown>>;
  /** API versions the cluster is said to serve, as `helm template --api-versions`. */
  readonly apiVersions?: readonly string[];
  /** Render values.yaml as it is, without TEST_IMAGE: the chart then refuses to render. */
  readonly withoutTestImage?: boolean;
}

/**
 * The image the tests render with. values.yaml names none (none is published), and the chart
 * refuses to render without one; `values` given to a render still win over this.
 */
export const TEST_IMAGE = 'registry.example.com/autopilot';

/** The chart as the tests render it by default: with prometheus-operator's API present. */
export const MONITORING_API = 'monitoring.coreos.com/v1';

export function helm(args: readonly string[]): HelmRun {
  if (!existsSync(HELM)) {
    throw new Error(`${HELM} is missing: run scripts/install.sh --test (or scripts/get-helm.sh)`);
  }
  const run = spawnSync(HELM, args, { encoding: 'utf8', timeout: 60_000 });
  if (run.error !== undefined) throw run.error;
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

/**
 * Runs helm with TEST_IMAGE and then the values, each written to a file (JSON is YAML), so no value
 * goes through --set parsing; helm merges the files in order, so `values` may override the image.
 */
export function withValues<T>(
  values: Readonly<Record<string, unknown>> | undefined,
  use: (valueArgs: string[]) => T,
  testImage = true,
): T {
  const files = [
    ...(testImage ? [{ image: { repository: TEST_IMAGE } }] : []),
    ...(values === undefined ? [] : [values]),
  ];
  const dir = mkdtempSync(join(tmpdir(), 'autopilot-values-'));
  try {
    return use(
      files.flatMap((content, index) => {
        const file = join(dir, `values-${index}.json`);
        writeFileSync(file, JSON.stringify(content));
        return ['--values', file];
      }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function templateRun(options: RenderOptions = {}): HelmRun {
  const apiVersions = options.apiVersions ?? [MONITORING_API];
  return withValues(
    options.values,
    (valueArgs) =>
      helm([
        'template',
        options.release ?? 'autopilot',
        CHART,
        '--namespace',
        options.namespace ?? 'autopilot',
        ...apiVersions.flatMap((version) => ['--api-versions', version]),
        ...valueArgs,
      ]),
    options.withoutTestImage !== true,
  );
}

export function renderChart(options: RenderOptions = {}): Manifest[] {
  const run = templateRun(options);
  if (run.status !== 0) throw new Error(`helm template failed: ${run.stderr}`);
  // Not client-node's loadAllYaml: it maps objects onto its models and drops unknown fields,
  // which are what the schema validation is there to find.
  return parseAllDocuments(run.stdout)
    .map((document) => {
      if (document.errors.length > 0)
        throw new Error(`rendered YAML: ${document.errors[0]!.message}`);
      return document.toJS() as Manifest | null;
    })
    .filter((object): object is Manifest => object !== null);
}
