// Type-checked typescript-eslint rules; side-effecting libraries are confined to their adapter folders.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const childProcess = ['child_process', 'node:child_process'];
const kubernetes = '@kubernetes/client-node';

const restricted = (names) => ({
  'no-restricted-imports': [
    'error',
    {
      paths: names.map((name) => ({
        name,
        message: 'Only the adapter folder that owns this side effect may import it.',
      })),
    },
  ],
});

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
  { files: ['exporter/**/*.ts'], rules: restricted([childProcess, 'koffi', kubernetes].flat()) },
  { files: ['exporter/exec/**/*.ts'], rules: restricted(['koffi', kubernetes]) },
  { files: ['exporter/native/**/*.ts'], rules: restricted([childProcess, kubernetes].flat()) },
  { files: ['exporter/k8s/**/*.ts'], rules: restricted([childProcess, 'koffi'].flat()) },
);
