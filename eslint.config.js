import tseslint from 'typescript-eslint';
import { importX } from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';

/**
 * The layers of src/, from the top down: a folder may import only from the folders below it. The
 * composition files at the root of src/ (main, gateway, app) sit above them all; errors, logger,
 * version and shell/ sit below them all.
 */
const below = (dir, ...higher) => ({
  target: `./src/${dir}`,
  from: higher.map((h) => `./src/${h}`),
  message: `${dir}/ sits below ${higher.join(', ')} in the layers: pass what it needs in from above`,
});
const composition = ['main.ts', 'gateway.ts', 'app.ts'];
const layerZones = [
  // The TES client (cli/) knows TES over HTTP only, so it works against any server, not only this one.
  below(
    'cli',
    'api',
    'reconciler',
    'queue',
    'compute',
    'staging',
    'apptainer',
    'identity',
    'store',
    'tes',
    'config',
    'run-as',
    ...composition,
  ),
  below('api', 'compute', 'reconciler', 'queue/processors', ...composition),
  below('reconciler', 'api', ...composition),
  below('queue', 'api', 'reconciler', ...composition),
  below('run-as', 'api', 'reconciler', 'queue', 'compute', ...composition),
  below('staging', 'api', 'reconciler', 'queue', 'run-as', ...composition),
  below('compute', 'api', 'reconciler', 'queue', ...composition),
  below('apptainer', 'api', 'reconciler', 'queue', 'compute', 'staging', 'run-as', ...composition),
  below(
    'identity',
    'api',
    'reconciler',
    'queue',
    'compute',
    'staging',
    'apptainer',
    'run-as',
    ...composition,
  ),
  below(
    'store',
    'api',
    'reconciler',
    'queue',
    'compute',
    'staging',
    'apptainer',
    'config',
    'run-as',
    ...composition,
  ),
  below(
    'tes',
    'reconciler',
    'queue',
    'store',
    'staging',
    'compute',
    'apptainer',
    'config',
    'run-as',
    ...composition,
  ),
  // The TES wire types are generated from the spec into api/generated: tes/types.ts names them.
  { ...below('tes', 'api'), except: ['./generated'] },
  below(
    'shell',
    'api',
    'reconciler',
    'queue',
    'compute',
    'staging',
    'apptainer',
    'store',
    'tes',
    'config',
    'run-as',
  ),
];

/** The wrappers of external programs: the only files that start processes. */
const processWrappers = [
  'src/apptainer/image-cache.ts',
  'src/compute/slurm/slurm-cli.ts',
  'src/compute/local/local-driver.ts',
  'src/run-as/user-helper.ts',
  'src/run-as/user-names.ts',
];

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'node_modules/**',
      'src/api/generated/**',
      'coverage/**',
      '**/*.js',
      '**/*.mjs',
      '!ui/*.js',
    ],
  },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      '@typescript-eslint/require-await': 'off',
    },
  },
  {
    files: ['src/**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      'import-x/extensions': ['.ts', '.js'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: './tsconfig.json' })],
    },
    rules: {
      'import-x/no-cycle': 'error',
      'import-x/no-restricted-paths': ['error', { zones: layerZones }],
      'no-restricted-imports': [
        'error',
        {
          paths: ['execa', 'node:child_process', 'child_process'].map((name) => ({
            name,
            message: `only the wrappers of external programs start processes (${processWrappers.join(', ')})`,
          })),
        },
      ],
    },
  },
  { files: processWrappers, rules: { 'no-restricted-imports': 'off' } },
  // The dashboard (ui/): plain ES modules for the browser, with no build step and so no types.
  {
    files: ['ui/*.js'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      sourceType: 'module',
      globals: Object.fromEntries(
        [
          'AbortController',
          'document',
          'FormData',
          'fetch',
          'location',
          'sessionStorage',
          'setTimeout',
          'clearTimeout',
          'URL',
          'URLSearchParams',
          'window',
        ].map((name) => [name, 'readonly']),
      ),
    },
    rules: {
      ...tseslint.configs.disableTypeChecked.rules,
      'no-undef': 'error',
      eqeqeq: 'error',
      // Task fields are hostile: text goes in as text nodes (ui/dom.js), never as markup.
      'no-restricted-properties': [
        'error',
        ...['innerHTML', 'outerHTML', 'insertAdjacentHTML', 'write', 'writeln'].map((property) => ({
          property,
          message: 'build elements with h() from ui/dom.js: task fields must never become markup',
        })),
      ],
      'no-restricted-globals': [
        'error',
        { name: 'localStorage', message: 'the token is kept in sessionStorage only' },
      ],
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/unbound-method': 'off',
    },
  },
);
