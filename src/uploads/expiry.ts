import type { Repository } from '../db/repository.js';
import type { Logger } from '../log.js';
import type { UploadService } from '../services/uploads.js';

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
