import type { ChipmunkOptions } from '../../src/chipmunk.js';
import { startChipmunk, type TestChipmunk } from './chipmunk.js';
import { createDistributedEnvironment } from './services.js';

/**
 * The two shapes Chipmunk runs in, for suites that must pass on both (`describe.each(backends)`):
 * the embedded default (SQLite and the local folder in a temporary data directory) and the
 * distributed mode (a PostgreSQL database and an S3 bucket of the suite's own, on the real servers
 * scripts/services.sh runs).
 */
export type Backend = {
  name: 'embedded' | 'distributed';
  start(env?: Record<string, string>, opts?: ChipmunkOptions & { dataDir?: string }): Promise<TestChipmunk>;
};

export const backends: Backend[] = [
  { name: 'embedded', start: (env, opts) => startChipmunk(env, opts) },
  {
    name: 'distributed',
    async start(env = {}, opts = {}) {
      const distributed = await createDistributedEnvironment('suite');
      try {
        const t = await startChipmunk({ ...distributed.env, ...env }, opts);
        return {
          ...t,
          async close() {
            await t.close();
            await distributed.drop();
          },
        };
      } catch (err) {
        await distributed.drop();
        throw err;
      }
    },
  },
];
