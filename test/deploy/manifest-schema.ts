/**
 * Validates rendered Kubernetes objects against the Kubernetes and prometheus-operator schemas, with
 * unknown fields rejected (what `kubeconform -strict` does; no such tool is on npm or Debian).
 *
 * Two passes over the same published models (kubernetes-models, generated from the Kubernetes
 * OpenAPI document and the prometheus-operator CRDs):
 * - their ajv validators: types, required fields, formats and patterns, but they accept any
 *   unknown field;
 * - their TypeScript interfaces, read with the compiler's type checker: every key of the object,
 *   at any depth, must be a property of the interface there (or fall under an index signature).
 */

import { join } from 'node:path';
import ts from 'typescript';

export interface Manifest {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly namespace?: string };
  readonly [field: string]: unknown;
}

interface ModelModule {
  readonly [kind: string]: new (data: unknown) => { validate(): void };
}

const ROOT = join(import.meta.dirname, '..', '..');

/** The module of a group-version in kubernetes-models or its prometheus-operator package. */
function modelModule(apiVersion: string): string {
  if (apiVersion.startsWith('monitoring.coreos.com/')) {
    return `@kubernetes-models/prometheus-operator/${apiVersion}`;
  }
  return `kubernetes-models/${apiVersion}`;
}

const describe = (manifest: Manifest) => `${manifest.kind}/${manifest.metadata.name}`;

async function validateWithModels(manifests: readonly Manifest[]): Promise<string[]> {
  const problems: string[] = [];
  for (const manifest of manifests) {
    let models: ModelModule;
    try {
      models = (await import(modelModule(manifest.apiVersion))) as ModelModule;
    } catch {
      problems.push(`${describe(manifest)}: no schema for apiVersion ${manifest.apiVersion}`);
      continue;
    }
    const Model = models[manifest.kind];
    if (Model === undefined) {
      problems.push(`${describe(manifest)}: no schema for ${manifest.apiVersion} ${manifest.kind}`);
      continue;
    }
    try {
      new Model(manifest).validate();
    } catch (error) {
      problems.push(`${describe(manifest)}: ${(error as Error).message}`);
    }
  }
  return problems;
}

/**
 * Loads the interfaces of the kinds present into one TypeScript program and walks each object
 * through its kind's interface: a key that is neither a property nor covered by an index
 * signature is an unknown field. Values are left to the ajv validators.
 */
function findUnknownFields(manifests: readonly Manifest[]): string[] {
  const fileName = join(ROOT, 'test', 'deploy', '__rendered_kinds__.ts');
  const kinds = [
    ...new Set(manifests.map((manifest) => `${manifest.apiVersion} ${manifest.kind}`)),
  ];
  const source = kinds
    .map((key, index) => {
      const [apiVersion, kind] = key.split(' ') as [string, string];
      return `import type * as m${index} from '${modelModule(apiVersion)}';\nexport type K${index} = m${index}.I${kind};`;
    })
    .join('\n');

  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
    lib: ['lib.es2022.d.ts'],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === fileName || fileExists(name);
  host.getSourceFile = (name, language, onError) =>
    name === fileName
      ? ts.createSourceFile(name, source, language)
      : getSourceFile(name, language, onError);
  const program = ts.createProgram([fileName], options, host);
  const checker = program.getTypeChecker();
  const file = program.getSourceFile(fileName)!;
  const unresolved = ts
    .getPreEmitDiagnostics(program, file)
    .map((diagnostic) => ts.flattenDiagnosticMessageText(diagnostic.messageText, ' '));
  if (unresolved.length > 0) return unresolved;
  const aliases = file.statements.filter(ts.isTypeAliasDeclaration);

  const problems: string[] = [];
  const walk = (value: unknown, declared: ts.Type, path: string, owner: string): void => {
    if (value === null || typeof value !== 'object') return;
    const type = checker.getNonNullableType(declared);
    const members = type.isUnion() ? type.types : [type];
    if (Array.isArray(value)) {
      const element = members
        .map((member) => checker.getIndexTypeOfType(member, ts.IndexKind.Number))
        .find((found) => found !== undefined);
      if (element !== undefined)
        value.forEach((item, i) => walk(item, element, `${path}[${i}]`, owner));
      return;
    }
    const objects = members.filter((member) => member.flags & ts.TypeFlags.Object);
    if (objects.length === 0) return;
    for (const [key, child] of Object.entries(value)) {
      const property = objects
        .map((member) => checker.getPropertyOfType(member, key))
        .find((found) => found !== undefined);
      const childType =
        property === undefined
          ? objects
              .map((member) => checker.getIndexTypeOfType(member, ts.IndexKind.String))
              .find((found) => found !== undefined)
          : checker.getTypeOfSymbol(property);
      if (childType === undefined) {
        const typeName = checker.typeToString(objects[0]!);
        problems.push(
          `${owner}: unknown field ${path}${path === '' ? '' : '.'}${key} (in ${typeName})`,
        );
      } else {
        walk(child, childType, `${path}${path === '' ? '' : '.'}${key}`, owner);
      }
    }
  };
  for (const manifest of manifests) {
    const alias = aliases[kinds.indexOf(`${manifest.apiVersion} ${manifest.kind}`)]!;
    walk(manifest, checker.getTypeAtLocation(alias.name), '', describe(manifest));
  }
  return problems;
}

/** Every problem found; empty means each object is valid and has no unknown field. */
export async function validateManifests(manifests: readonly Manifest[]): Promise<string[]> {
  return [...(await validateWithModels(manifests)), ...findUnknownFields(manifests)];
}
