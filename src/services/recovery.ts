import type { Repository } from '../db/repository.js';
import { fileIdPattern } from '../ids.js';
import type { Logger } from '../log.js';
import { isTempName, type BlobStorage } from '../storage/storage.js';
import type { UploadArea } from '../uploads/area.js';
import type { FileService } from './files.js';
import type { UploadService } from './uploads.js';

// Start-up recovery: settles everything a killed process can leave half done, before the server
// answers its first request. Every step is idempotent, so a kill during recovery is recovered
// by the next start. What each state means:
//
//  'uploading' row, upload bytes gone, unreadable or complete → the process died while creating
//     or completing it; the client never saw success: remove its folder (if the move happened),
//     give the reservation back, drop the upload files. (A partial upload stays resumable.)
//  upload files with no 'uploading' row → orphans of a finished, refused or released upload: delete.
//  'deleting' row → bytes were given back already: remove the folder, then the row.
//  work/<id> → processing scratch of the dead process: delete.
//  jobs left 'running' → back to 'queued', so interrupted processing resumes.
//  *.tmp-* in media folders and folders no row accounts for → removed by a background walk that
//     only touches what is older than this process.

export type RecoveryReport = {
  uploadsSettled: number;
  orphanUploads: number;
  deletesFinished: number;
  workspaces: number;
  jobsRequeued: number;
};

export type RecoveryDeps = {
  repo: Repository;
  storage: BlobStorage;
  area: UploadArea;
  uploads: UploadService;
  files: FileService;
  logger: Logger;
};

const PAGE = 500;

export async function recoverAtStartup(deps: RecoveryDeps): Promise<RecoveryReport> {
  const { repo, storage, area, uploads, logger } = deps;
  const report: RecoveryReport = { uploadsSettled: 0, orphanUploads: 0, deletesFinished: 0, workspaces: 0, jobsRequeued: 0 };

  report.workspaces = await storage.discardAllWorkspaces();
  report.jobsRequeued = repo.requeueRunningJobs();
  for (;;) {
    const n = await deps.files.finishInterruptedDeletes();
    report.deletesFinished += n;
    if (n === 0) break;
  }

  const present = await area.list();
  let after = '';
  for (;;) {
    const page = repo.filesPage(after, PAGE, 'uploading');
    if (page.length === 0) break;
    after = page[page.length - 1]!.id;
    for (const file of page) {
      const entry = present.get(file.id);
      present.delete(file.id);
      const received = entry ? await area.receivedBytes(file.id) : undefined;
      const resumable = received !== undefined && received < file.bytes && entry?.hasSidecar && (await area.sidecarReadable(file.id));
      if (resumable) continue;
      // Folder first (it exists if the move into storage happened), then the row and the reservation.
      await storage.removeFolder(file.id);
      await uploads.release(file.id, { discardCarrier: () => area.discard(file.id) });
      report.uploadsSettled++;
    }
  }
  for (const id of present.keys()) {
    await area.discard(id);
    report.orphanUploads++;
  }

  const changed = Object.values(report).some((n) => n > 0);
  logger[changed ? 'warn' : 'info']('start-up recovery done', report);
  return report;
}

/**
 * Removes temporary files and folders no row accounts for, walking the media folder in small
 * batches in the background. Only what is older than `startedAt` is touched, so blobs this
 * process is writing right now are never mistaken for leftovers.
 */
export async function sweepMediaLeftovers(
  deps: Pick<RecoveryDeps, 'repo' | 'storage' | 'logger'> & { startedAt: number; shouldStop?: () => boolean },
): Promise<{ tempFiles: number; orphanFolders: number }> {
  const { repo, storage } = deps;
  const result = { tempFiles: 0, orphanFolders: 0 };
  let batch: string[] = [];
  const flush = async () => {
    const known = repo.fileIdsExisting(batch);
    for (const id of batch) {
      if (!known.has(id)) {
        // A row always exists before its folder and is deleted only after it, so a folder with no
        // row is a leftover (the one exception, a refused upload, removes its own folder too).
        await storage.removeFolder(id);
        result.orphanFolders++;
        continue;
      }
      for (const name of await storage.listNames(id)) {
        if (!isTempName(name)) continue;
        const s = await storage.stat(id, name);
        if (s && s.mtimeMs < deps.startedAt) {
          await storage.removeName(id, name);
          result.tempFiles++;
        }
      }
    }
    batch = [];
    await new Promise((resolve) => setImmediate(resolve));
  };
  for await (const id of storage.listFolders()) {
    if (deps.shouldStop?.()) break;
    if (!fileIdPattern.test(id)) continue; // not ours: fsck reports it
    batch.push(id);
    if (batch.length >= 200) await flush();
  }
  if (batch.length && !deps.shouldStop?.()) await flush();
  if (result.tempFiles || result.orphanFolders) deps.logger.warn('media leftovers removed', result);
  return result;
}
