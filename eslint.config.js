// Type-checked typescript-eslint rules; side-effecting libraries are confined to their adapter folders.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const childProcess = ['child_process', 'node:child_process'];
const kubernetes = '@kubernetes/client-node';

// The core judges and records; the cluster and API layers wire it to Kubernetes and HTTP. A relative
// import of exporter/cluster/ or exporter/api/ from the core is refused, so the core stays testable
// without either (the core names the few fields it needs, and the outer layer satisfies them).
const OUTER_LAYERS = '^(\\.\\.?/)+(cluster|api)/';

const restricted = (names, { layers = false } = {}) => ({
  'no-restricted-imports': [
    'error',
    {
      paths: names.map((name) => ({
        name,
        message: 'Only the adapter folder that owns this side effect may import it.',
      })),
      ...(layers && {
        patterns: [
          {
            regex: OUTER_LAYERS,
            message:
              'The core (checks, metrics, config, scheduler, runner, store, pre-flight, deep-check report) does not import exporter/cluster/ or exporter/api/: define the interface it needs beside it.',
          },
        ],
      }),
    },
  ],
});

const sideEffects = [childProcess, 'koffi', kubernetes].flat();

// The core files; checks/pvc.ts is the one check that talks to the Kubernetes API, so it is exempt.
const CORE = [
  'exporter/checks/**/*.ts',
  'exporter/metrics/**/*.ts',
  'exporter/config/**/*.ts',
  'exporter/scheduler.ts',
  'exporter/check-runner.ts',
  'exporter/store.ts',
  'exporter/deep-check-report.ts',
  'exporter/preflight-client.ts',
  'exporter/node-health.ts',
];

export default tseslint.config(
  {
    ignores: [
      'dist/',
      'node_modules/',
      'build/',
      'coverage/',
      'jest.config.js',
      'eslint.config.js',
      'test/global-setup.js',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
    },
  },
  // Later blocks override earlier ones for the same rule, so each adapter folder lists what it may not import.
  { files: ['exporter/**/*.ts'], rules: restricted(sideEffects) },
  {
    files: CORE,
    ignores: ['exporter/checks/pvc.ts'],
    rules: restricted(sideEffects, { layers: true }),
  },
  { files: ['exporter/exec/**/*.ts'], rules: restricted(['koffi', kubernetes]) },
  { files: ['exporter/native/**/*.ts'], rules: restricted([childProcess, kubernetes].flat()) },
  { files: ['exporter/k8s/**/*.ts'], rules: restricted([childProcess, 'koffi'].flat()) },
);
