import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules', 'data', '**/dist', 'test-output'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-imports': [
        'error',
        { paths: [{ name: 'ioredis-mock', message: 'Tests run against a real redis-server.' }] },
      ],
    },
  },
  {
    // Tests read JSON bodies from the API; typing every one would only restate the assertions.
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    // A phase is (context) → result: it must not know about BullMQ.
    files: ['src/processors/phases/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { paths: ['bullmq'] }] },
  },
);
