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
          serviceEnv: distributed.env,
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

/** A stored blob's bytes, read through the server's BlobStorage (the media folder or the bucket). */
export async function readBlob(t: TestChipmunk, fileId: string, name: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of t.chipmunk.storage.read(fileId, name)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** True when the file's one folder (its key prefix on object storage) holds anything. */
export const hasFolder = async (t: TestChipmunk, fileId: string) => (await t.chipmunk.storage.listNames(fileId)).length > 0;

/** Ids of the unfinished uploads in the upload area, wherever it is (the data directory or the bucket). */
export const uploadAreaIds = async (t: TestChipmunk) => [...(await t.chipmunk.area.list()).keys()];
