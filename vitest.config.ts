import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each test file builds its own Chipmunk in a temp folder; files run in parallel forks.
    pool: 'forks',
  },
});
