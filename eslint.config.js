import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * The dependency rule (docs/architecture.md, "The dependency rule"), by folder of src/:
 * - core: chat/ imports only chat/;
 * - adapters (store/, bus/, queue/, profiles/, outbox/, webhooks/) import chat/ and shared helpers, never
 *   another adapter, a transport, config/ or the composition root;
 * - transports (http/, realtime/, and auth/, limits/ which serve them) never import adapters,
 *   config/ or the composition root;
 * - shared helpers (common/, amqp/, observability/) import no adapter, transport or config;
 * - only the composition root (app.ts, main.ts, and the migrate CLI) picks implementations.
 * Tests (`*.test.ts`) wire whatever they exercise and are exempt.
 */
const folders = {
  adapters: ['store', 'bus', 'queue', 'profiles', 'outbox', 'webhooks'],
  transports: ['http', 'realtime', 'auth', 'limits'],
  shared: ['common', 'amqp', 'observability'],
};
const importsOf = (names) => names.flatMap((name) => [`../${name}/**`, `../../${name}/**`, `../../../${name}/**`]);
const root = ['../app.js', '../../app.js', '../main.js', '../../main.js'];
const config = importsOf(['config']);
const rule = (group, message) => ({ 'no-restricted-imports': ['error', { patterns: [{ group, message }] }] });

const dependencyRule = [
  {
    files: ['src/chat/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [{ group: ['../*', 'fastify', 'pg', 'ws', 'sockjs', '@electric-sql/*', 'rabbitmq-client'], message: 'chat/ imports only chat/.' }] }] },
  },
  ...folders.adapters.map((adapter) => ({
    files: [`src/${adapter}/**/*.ts`],
    ignores: ['**/*.test.ts', 'src/store/postgres/migrate-cli.ts'],
    rules: rule(
      [...importsOf(folders.adapters.filter((other) => other !== adapter)), ...importsOf(folders.transports), ...config, ...root],
      'An adapter imports chat/ and shared helpers only: never another adapter, a transport, config/ or app.ts (docs/architecture.md).',
    ),
  })),
  {
    files: folders.transports.map((t) => `src/${t}/**/*.ts`),
    ignores: ['**/*.test.ts'],
    rules: rule([...importsOf(folders.adapters), ...config, ...root], 'Transports import chat/, never adapters or config/; wire in app.ts (docs/architecture.md).'),
  },
  {
    files: [...folders.shared.map((s) => `src/${s}/**/*.ts`), 'src/config/**/*.ts'],
    ignores: ['**/*.test.ts'],
    rules: rule([...importsOf([...folders.adapters, ...folders.transports]), ...root], 'Shared helpers and config import no adapter or transport (docs/architecture.md).'),
  },
];

export default tseslint.config(
  { ignores: ['node_modules/**', 'scratch/**', 'data/**', 'dist/**', 'web/dist/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', Buffer: 'readonly', URL: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-restricted-syntax': ['error', { selector: "MemberExpression[object.name='process'][property.name='env']", message: 'Only src/config reads process.env.' }],
    },
  },
  ...dependencyRule,
  {
    // The benchmark drives the service from outside, as clients do: no service internals.
    files: ['bench/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [{ group: ['**/src/**'], message: 'bench/ uses client-side code only (and test/support); the service runs in its own process.' }] }] },
  },
  {
    files: ['src/config/**/*.ts', 'test/**/*.ts', 'bench/**/*.ts', 'tools/**/*.ts', 'deploy/**/*.mjs', '**/*.test.ts', 'vitest.config.ts'],
    rules: { 'no-restricted-syntax': 'off' },
  },
  {
    // Tests read JSON bodies of every shape; typing each would test the types, not the service.
    files: ['test/**/*.ts', '**/*.test.ts', '**/*.contract.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);
