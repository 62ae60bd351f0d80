import path from 'node:path';
import { loadConfig } from '../../src/config.js';
import { openToolPersistence } from '../../src/db/open.js';
import type { Repository } from '../../src/db/repository-port.js';
import { openBlobStorage } from '../../src/storage/open.js';
import { openUploadAreas } from '../../src/uploads/open.js';
import type { BlobStorage } from '../../src/storage/storage.js';
import type { UploadArea } from '../../src/uploads/area.js';
import type { ReceivedArea } from '../../src/uploads/received.js';

/**
 * The state a server process left (its environment names the data directory, or the database and the
 * bucket), read from outside it through the same ports the server and `chipmunk fsck` use: checks
 * written against it hold on the local folder and on the bucket alike. Opens no node session and runs
 * no recovery, so it shows what was left, not what a start-up would tidy. `close()` releases it.
 */
export type Stores = {
  repo: Repository;
  storage: BlobStorage;
  area: UploadArea;
  received: ReceivedArea;
  /** Ids of every file folder (key prefix) present. */
  folderIds(): Promise<string[]>;
  /** Ids of the unfinished uploads in the upload area. */
  uploadAreaIds(): Promise<string[]>;
  /** A blob's bytes. */
  readBlob(fileId: string, name: string): Promise<Buffer>;
  close(): Promise<void>;
};

export function openStores(env: Record<string, string>): Stores {
  const config = loadConfig(env);
  const persistence = openToolPersistence(config);
  const blobs = openBlobStorage(config, path.join(config.dataDir, 'work'));
  const areas = openUploadAreas(config);
  const storage = blobs.storage;
  return {
    repo: persistence.repo,
    storage,
    area: areas.area,
    received: areas.received,
    async folderIds() {
      const ids: string[] = [];
      for await (const id of storage.listFolders()) ids.push(id);
      return ids;
    },
    uploadAreaIds: async () => [...(await areas.area.list()).keys()],
    async readBlob(fileId, name) {
      const chunks: Buffer[] = [];
      for await (const chunk of storage.read(fileId, name)) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks);
    },
    async close() {
      blobs.close();
      areas.close();
      await persistence.close();
    },
  };
}

/**
 * Where a stopped server keeps bytes and holds quota, in one snapshot: the file folders present
 * (sorted), the unfinished uploads, the received copies, the scratch spaces and the reservations.
 * A suite compares it with what it expects ("nothing of a refused file is left") on either backend.
 */
export async function whatIsLeft(env: Record<string, string>) {
  const stores = openStores(env);
  try {
    return {
      folders: (await stores.folderIds()).sort(),
      uploads: await stores.uploadAreaIds(),
      received: await stores.received.list(),
      workspaces: await stores.storage.listWorkspaces(),
      reservations: await stores.repo.reservationTotals(),
    };
  } finally {
    await stores.close();
  }
}
