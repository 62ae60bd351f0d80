import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createChipmunk } from '../src/chipmunk.js';
import { loadConfig } from '../src/config.js';
import { silentLogger } from '../src/log.js';
import { backends } from './helpers/backends.js';
import { createDistributedEnvironment } from './helpers/services.js';

// close() waits for work in flight up to CHIPMUNK_SHUTDOWN_TIMEOUT. An instance that never listened
// (fsck, tests opening a data folder) has none, so it must not wait at all: this races close()
// against a timer of the whole shutdown timeout, started first, so a close() that waits for the
// deadline loses the race. Distributed, the instance holds a PostgreSQL pool and S3 clients instead
// of a SQLite file: closing them must not wait either.
describe.each(backends)('$name', (backend) => {
  it('closes an instance that never listened without waiting for the shutdown deadline', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'chipmunk-lifecycle-'));
    const services = backend.name === 'distributed' ? await createDistributedEnvironment('lifecycle') : undefined;
    try {
      const chipmunk = createChipmunk(loadConfig({ ...services?.env, CHIPMUNK_DATA_DIR: dataDir, CHIPMUNK_SHUTDOWN_TIMEOUT: '20' }), {
        logger: silentLogger,
        defaultMetrics: false,
      });
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<'deadline'>((resolve) => (timer = setTimeout(() => resolve('deadline'), chipmunk.config.shutdownTimeoutMs)));
      const first = await Promise.race([chipmunk.close().then(() => 'closed' as const), deadline]);
      clearTimeout(timer);
      expect(first).toBe('closed');
    } finally {
      await rm(dataDir, { recursive: true, force: true });
      await services?.drop();
    }
  });
});
