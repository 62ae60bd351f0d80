import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Tests import the kit by its package name, as an app would; it resolves to the source.
  resolve: { alias: { 'chipmunk/client': fileURLToPath(new URL('./src/client/index.ts', import.meta.url)) } },
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each test file builds its own Chipmunk in a temp folder; files run in parallel forks.
    pool: 'forks',
  },
});
