import type { Repository } from '../db/repository.js';
import type { Logger } from '../log.js';
import type { UploadService } from '../services/uploads.js';
import type { UploadArea } from './area.js';

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
 * Several nodes share the upload area (the bucket's uploads/): what a killed node never discarded
 * there stays, since no node's start-up may remove entries on a guess (recovery.ts). The rows tell
 * what is safe: creation reserves the row before tus writes a first object, and an upload's objects
 * are needed only while its row is 'uploading' or its bytes wait for processing (they may be the
 * carrier). Entries of a file stored, deleting or gone (finished, refused, released, deleted) are
 * leftovers, and go. Returns how many.
 */
export async function sweepUploadLeftovers(deps: {
  repo: Pick<Repository, 'getFile'>;
  area: Pick<UploadArea, 'list' | 'discard'>;
  logger: Logger;
  shouldStop?: () => boolean;
}): Promise<number> {
  let swept = 0;
  for (const id of (await deps.area.list()).keys()) {
    if (deps.shouldStop?.()) break;
    const file = await deps.repo.getFile(id);
    const inUse = file && (file.status === 'uploading' || ((file.status === 'received' || file.status === 'processing') && file.committedAt === null));
    if (inUse) continue;
    await deps.area.discard(id);
    swept++;
  }
  if (swept) deps.logger.info('upload-area leftovers removed', { count: swept });
  return swept;
}
