import type { Repository } from '../db/repository.js';
import type { Logger } from '../log.js';
import type { UploadService } from '../services/uploads.js';
import type { UploadArea } from './area.js';
import type { ReceivedArea } from './received.js';

// Expired unfinished uploads give their reservation back and lose their partial bytes.
// Work goes in small batches, yielding to the event loop between them, so a sweep over
// thousands of uploads never stalls requests (the stock tus sweep lists and reads them all at once).

export async function sweepExpiredUploads(deps: {
  repo: Repository;
  uploads: UploadService;
  discardUpload: (id: string) => Promise<void>;
  logger: Logger;
  now?: number;
  batchSize?: number;
  /** Checked between batches: a shutdown stops the sweep; the next start finishes it. */
  shouldStop?: () => boolean;
}): Promise<number> {
  const now = deps.now ?? Date.now();
  const batchSize = deps.batchSize ?? 100;
  let swept = 0;
  for (;;) {
    if (deps.shouldStop?.()) break;
    const ids = await deps.repo.expiredUploadIds(now, batchSize);
    if (ids.length === 0) break;
    // One transaction per batch; the files go one by one, each an await that lets requests in.
    swept += await deps.uploads.releaseMany(ids, deps.discardUpload);
    await new Promise((resolve) => setImmediate(resolve));
  }
  if (swept) deps.logger.info('expired uploads swept', { count: swept });
  return swept;
}

/**
 * Several nodes share the upload area and the received area (the bucket's uploads/ and received/):
 * what a killed node never removed there stays, since no node's start-up may remove entries on a
 * guess (recovery.ts). The rows tell what is safe: creation reserves the row before tus writes a first
 * object, received bytes are kept before the row says so, and both are needed only while the row is
 * 'uploading' or its bytes wait for processing (the upload may be their carrier). Entries of a file
 * stored, deleting or gone (finished, refused, released, deleted) are leftovers, and go.
 */
export async function sweepUploadLeftovers(deps: {
  repo: Pick<Repository, 'getFile'>;
  area: Pick<UploadArea, 'list' | 'discard'>;
  received: Pick<ReceivedArea, 'list' | 'remove'>;
  logger: Logger;
  shouldStop?: () => boolean;
}): Promise<{ uploads: number; received: number }> {
  const inUse = async (id: string) => {
    const file = await deps.repo.getFile(id);
    return file !== undefined && (file.status === 'uploading' || ((file.status === 'received' || file.status === 'processing') && file.committedAt === null));
  };
  const sweep = async (ids: Iterable<string>, remove: (id: string) => Promise<void>) => {
    let n = 0;
    for (const id of ids) {
      if (deps.shouldStop?.()) break;
      if (await inUse(id)) continue;
      await remove(id);
      n++;
    }
    return n;
  };
  const swept = {
    uploads: await sweep((await deps.area.list()).keys(), (id) => deps.area.discard(id)),
    received: await sweep(await deps.received.list(), (id) => deps.received.remove(id)),
  };
  if (swept.uploads || swept.received) deps.logger.info('upload leftovers removed', swept);
  return swept;
}
