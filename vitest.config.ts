import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Three projects, one command (`npm test` runs them all; `npm run test:unit` etc. one each):
// - unit: pure logic, beside its module (src/**/x.test.ts); no server, no data folder.
// - integration: a whole Chipmunk in this process on a temp data folder (listening or app.request),
//   real SQLite, sharp and ffmpeg, driven by the real tus-js-client and the kit.
// - e2e: other processes around it: the built server as a child (crash, signals, memory), real
//   nginx in front, real Chromium, the README's snippet run as a reader would.
// A new file under test/ is an integration test unless it is listed in `e2e`.
const e2e = [
  'test/crash.test.ts',
  'test/delivery.test.ts',
  'test/demo.test.ts',
  'test/hostile.test.ts',
  'test/ingest-memory.test.ts',
  'test/nginx.test.ts',
  'test/nginx-s3.test.ts',
  'test/readme.test.ts',
  'test/shutdown.test.ts',
];

export default defineConfig({
  // Tests import the kit by its package name, as an app would; it resolves to the source.
  resolve: { alias: { 'chipmunk/client': fileURLToPath(new URL('./src/client/index.ts', import.meta.url)) } },
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each test file builds its own Chipmunk in a temp folder (and, distributed, its own database and
    // bucket); files run in parallel forks. Two at a time even on two cores: most of a file's time is
    // spent waiting on other processes (servers it spawns and kills, PostgreSQL, RGW, nginx, Chromium),
    // and vitest's default on two cores (one fork) left a core idle for half the run.
    pool: 'forks',
    maxWorkers: 2,
    projects: [
      { extends: true, test: { name: 'unit', include: ['src/**/*.test.ts'] } },
      { extends: true, test: { name: 'integration', include: ['test/**/*.test.ts'], exclude: e2e } },
      { extends: true, test: { name: 'e2e', include: e2e } },
    ],
  },
});
