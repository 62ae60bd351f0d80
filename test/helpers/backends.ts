import { rm } from 'node:fs/promises';
import type { ChipmunkOptions } from '../../src/chipmunk.js';
import { startChipmunk, type TestChipmunk } from './chipmunk.js';
import { serverEnvironment } from './server-process.js';
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
  /**
   * A new Chipmunk on what a stopped one (`stop()`) left: its data directory and, when distributed,
   * its database and bucket (its `close()` then removes them).
   */
  restart(previous: TestChipmunk, env?: Record<string, string>, opts?: ChipmunkOptions): Promise<TestChipmunk>;
};

/** The distributed environments still in use, by their env object, so a restart can take one over. */
const dropsByEnv = new WeakMap<Record<string, string>, () => Promise<void>>();

/** A test Chipmunk whose `close()` also removes its distributed environment. */
function owningEnvironment(t: TestChipmunk, serviceEnv: Record<string, string>, drop: () => Promise<void>): TestChipmunk {
  dropsByEnv.set(serviceEnv, drop);
  return {
    ...t,
    serviceEnv,
    async close() {
      await t.close();
      dropsByEnv.delete(serviceEnv);
      await drop();
    },
  };
}

export const backends: Backend[] = [
  {
    name: 'embedded',
    start: (env, opts) => startChipmunk(env, opts),
    restart: (previous, env, opts) => startChipmunk(env, { ...opts, dataDir: previous.dataDir }),
  },
  {
    name: 'distributed',
    async start(env = {}, opts = {}) {
      const distributed = await createDistributedEnvironment('suite');
      try {
        const t = await startChipmunk({ ...distributed.env, ...env }, opts);
        return owningEnvironment(t, distributed.env, distributed.drop);
      } catch (err) {
        await distributed.drop();
        throw err;
      }
    },
    async restart(previous, env = {}, opts = {}) {
      const serviceEnv = previous.serviceEnv!;
      const drop = dropsByEnv.get(serviceEnv);
      if (!drop) throw new Error('restart: the previous Chipmunk was closed (its database and bucket are gone); stop() it instead');
      const t = await startChipmunk({ ...serviceEnv, ...env }, { ...opts, dataDir: previous.dataDir });
      return owningEnvironment(t, serviceEnv, drop);
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

/** Ids of the uploads in the received area (last byte in, processing not ended), wherever it is. */
export const receivedIds = (t: TestChipmunk) => t.chipmunk.received.list();

/**
 * The environment of a server process (`spawnServer`) on `backend`: serverEnvironment's data directory,
 * port and secrets and, when distributed, a database and a bucket of its own. `drop()` removes the
 * data directory and those.
 */
export async function serverEnvironmentOn(
  backend: Backend,
  name: string,
  extra: Record<string, string> = {},
): Promise<{ dataDir: string; env: Record<string, string>; drop(): Promise<void> }> {
  const distributed = backend.name === 'distributed' ? await createDistributedEnvironment(name) : undefined;
  const { dataDir, env } = await serverEnvironment(name, { ...distributed?.env, ...extra });
  return {
    dataDir,
    env,
    async drop() {
      await rm(dataDir, { recursive: true, force: true });
      await distributed?.drop();
    },
  };
}
