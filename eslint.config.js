import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'rampart-data/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', URL: 'readonly' },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': 'off',
    },
  },
  {
    // The device agent must stay installable on a small device: it never reaches into the
    // server, a database driver or the console.
    files: ['packages/agent/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['@rampart/server', '@rampart/server/*', '@rampart/cli', '@rampart/console'],
              message: 'The agent must not depend on server-side packages.',
            },
            {
              group: ['pg', 'better-sqlite3', 'kysely', 'fastify', '@fastify/*'],
              message: 'The agent must not depend on a database driver or the HTTP server.',
            },
          ],
        },
      ],
    },
  },
);
