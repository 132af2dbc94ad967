import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const adapters = ['**/store/**', '**/bus/**', '**/queue/**', '**/profiles/**', '**/outbox/**', '**/app.js'];

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
  {
    // The dependency rule (docs/architecture.md): chat/ imports only chat/.
    files: ['src/chat/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['../*', 'fastify', 'pg', 'ws', 'sockjs', '@electric-sql/*', 'rabbitmq-client'], message: 'chat/ imports only chat/.' }] }],
    },
  },
  {
    // Transports translate and authorise; they never reach an adapter directly.
    files: ['src/http/**/*.ts', 'src/realtime/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [{ group: adapters, message: 'Transports import chat/, never adapters; wire in app.ts.' }] }] },
  },
  {
    // Adapters meet through ports: the relay works the OutboxStore and EventBus, profiles the
    // ProfileDirectory; SQL stays in store/ (docs/architecture.md, "The dependency rule").
    files: ['src/outbox/**/*.ts', 'src/profiles/**/*.ts'],
    ignores: ['**/*.test.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [{ group: ['**/store/**'], message: 'Talk to the store through a port in chat/ports.ts; wire in app.ts.' }] }] },
  },
  {
    files: ['src/config/**/*.ts', 'test/**/*.ts', 'bench/**/*.ts', 'tools/**/*.ts', '**/*.test.ts', 'vitest.config.ts'],
    rules: { 'no-restricted-syntax': 'off' },
  },
  {
    // Tests read JSON bodies of every shape; typing each would test the types, not the service.
    files: ['test/**/*.ts', '**/*.test.ts', '**/*.contract.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);
