import type { UnitOfWork } from '../db/ports.js';
import type { Repository } from '../db/repository.js';
import type { FileRow } from '../db/schema.js';
import type { ReceivedArea } from '../uploads/received.js';
import { PROCESS_JOB } from './processing.js';
import { fileIdPattern } from '../ids.js';
import type { Logger } from '../log.js';
import { ObjectStoreError } from '../storage/objects.js';
import { isTempName, type BlobStorage } from '../storage/storage.js';
import type { UploadArea } from '../uploads/area.js';
import type { FileService } from './files.js';
import type { UploadService } from './uploads.js';

// Start-up recovery: settles everything a killed process can leave half done, before the server
// answers its first request. Every step is idempotent, so a kill during recovery is recovered
// by the next start. What each state means:
//
//  'uploading' row with every byte → the commitment is made now: received, its job queued.
//  'uploading' row with no byte, or with tus's record lost → released (its client creates again).
//     (A partial upload with its record stays resumable.)
//  'received' / uncommitted 'processing' row → its processing job is queued again (idempotent).
//  upload files with no 'uploading' row → leftovers of a finished, refused or released upload: delete.
//  received-area files with no upload awaiting processing → leftovers: delete.
//     (Several nodes, `shared`: only those of a file whose row is past that step; see below.)
//  'deleting' row → bytes were given back already: remove the folder, then the row.
//  work/<id> → processing scratch of the dead process: delete.
//  tmp/ → the dead process's temporary files (the S3 upload store's part spool): emptied.
//  jobs left 'running' → back to 'queued', so interrupted processing resumes.
//  a committed track with no renditions job → its job is queued again.
//  *.tmp-* in media folders and folders no row accounts for → removed by a background walk that
//     only touches what is older than this process.

export type RecoveryReport = {
  uploadsSettled: number;
  uploadsReceived: number;
  processingResumed: number;
  orphanUploads: number;
  orphanReceived: number;
  deletesFinished: number;
  workspaces: number;
  temporaryFiles: number;
  jobsRequeued: number;
};

export type RecoveryDeps = {
  repo: Repository;
  uow: UnitOfWork;
  storage: BlobStorage;
  area: UploadArea;
  received: ReceivedArea;
  uploads: UploadService;
  files: FileService;
  logger: Logger;
  /** The job that makes a committed track's renditions. */
  audioJob: string;
  /** Empties this process's temporary folder; how many entries went. */
  discardTemporaryFiles: () => Promise<number>;
  /**
   * Other nodes may be running on the same database and bucket (distributed mode): an upload with no
   * byte yet, or bytes with no row yet, may be theirs right now. Those are left to the time-based
   * sweeps (idle expiry; upload-area leftovers, by their rows: uploads/expiry.ts) and to `chipmunk fsck --repair`, never released on a guess at start-up.
   */
  shared?: boolean;
};

const PAGE = 500;

const awaitingProcessing = (f: FileRow) => (f.status === 'received' || f.status === 'processing') && f.committedAt === null;

export async function recoverAtStartup(deps: RecoveryDeps): Promise<RecoveryReport> {
  const { repo, uow, storage, area, received, uploads, logger } = deps;
  const report: RecoveryReport = {
    uploadsSettled: 0,
    uploadsReceived: 0,
    processingResumed: 0,
    orphanUploads: 0,
    orphanReceived: 0,
    deletesFinished: 0,
    workspaces: 0,
    temporaryFiles: 0,
    jobsRequeued: 0,
  };

  report.workspaces = await storage.discardAllWorkspaces();
  report.temporaryFiles = await deps.discardTemporaryFiles();
  report.jobsRequeued = await uow.ports.jobs.requeueRunning();
  for (;;) {
    const n = await deps.files.finishInterruptedDeletes();
    report.deletesFinished += n;
    if (n === 0) break;
  }

  // With the upload area in a bucket that does not answer, the server still starts (/ready says why)
  // and the uploads are settled at a start that can see them: nothing is released on a guess.
  let present: Map<string, { hasSidecar: boolean }>;
  try {
    present = await area.list();
  } catch (err) {
    if (!(err instanceof ObjectStoreError)) throw err; // a local folder that cannot be read stops the start, as always
    logger.error('start-up recovery could not list the upload area; unfinished uploads are settled at the next start', { err });
    return report;
  }
  let after = '';
  for (;;) {
    const page = await repo.filesPage(after, PAGE, 'uploading');
    if (page.length === 0) break;
    after = page[page.length - 1]!.id;
    for (const file of page) {
      const entry = present.get(file.id);
      present.delete(file.id);
      const bytes = entry ? await area.receivedBytes(file.id) : undefined;
      const length = file.uploadLength ?? file.bytes;
      if (bytes !== undefined && bytes >= length && bytes > 0) {
        // Every byte arrived but the process stopped before the commitment: it is made now.
        await area.complete?.(file.id);
        await uploads.receive(file.id, area.dataPath(file.id), 'keep');
        await area.discard(file.id); // no request can race for it before we listen
        report.uploadsReceived++;
        continue;
      }
      const resumable = bytes !== undefined && bytes > 0 && entry?.hasSidecar && (await area.sidecarReadable(file.id));
      if (resumable) continue;
      if (deps.shared) continue;
      // No byte at all (cheap for its client to create again), or tus's record of it is lost.
      await storage.removeFolder(file.id);
      await uploads.release(file.id, { discardCarrier: () => area.discard(file.id) });
      report.uploadsSettled++;
    }
  }

  // Received uploads resume their processing job; their bytes come back from the tus area if needed.
  const waiting = new Set<string>();
  for (const status of ['received', 'processing'] as const) {
    let from = '';
    for (;;) {
      const page = await repo.filesPage(from, PAGE, status);
      if (page.length === 0) break;
      from = page[page.length - 1]!.id;
      for (const file of page.filter(awaitingProcessing)) {
        waiting.add(file.id);
        if (!(await received.locate(file.id)) && present.has(file.id)) await received.keep(file.id, area.dataPath(file.id));
        const job = await uow.ports.jobs.enqueue({ type: PROCESS_JOB, fileId: file.id, userId: file.userId });
        if (job) report.processingResumed++;
      }
    }
  }
  // A committed track whose renditions job is gone (rows from before the one queue made the commit
  // and the enqueue one transaction): queued again.
  for (const file of await repo.processingFilesWithoutJob('audio', deps.audioJob)) {
    await uow.ports.jobs.enqueue({ type: deps.audioJob, fileId: file.id, userId: file.userId });
    report.processingResumed++;
  }
  // Several nodes: bytes with no row, or whose row is still 'uploading', may be another node's upload
  // or commitment in progress; those of a file past its upload (kept as received, or stored)
  // are nobody's, whichever node left them: a kill between a commit and its clean-up.
  for (const id of present.keys()) {
    if (deps.shared && !(await pastItsUpload(id))) continue;
    await area.discard(id);
    report.orphanUploads++;
  }
  for (const id of await received.list()) {
    if (waiting.has(id)) continue;
    if (deps.shared && !(await pastItsProcessing(id))) continue;
    await received.remove(id);
    report.orphanReceived++;
  }

  /** The upload's own bytes are no longer needed: its row is past 'uploading' and, if still awaiting processing, its bytes are kept as received. */
  async function pastItsUpload(id: string): Promise<boolean> {
    const file = await repo.getFile(id);
    if (!file || file.status === 'uploading') return false;
    return !awaitingProcessing(file) || (await received.locate(id)) !== undefined;
  }
  /** The received bytes are no longer needed: the row's processing committed. */
  async function pastItsProcessing(id: string): Promise<boolean> {
    const file = await repo.getFile(id);
    return file !== undefined && file.status !== 'uploading' && !awaitingProcessing(file);
  }

  const changed = Object.entries(report).some(([k, n]) => k !== 'processingResumed' && n > 0) || report.uploadsReceived > 0;
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
    const known = await repo.fileIdsExisting(batch);
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
