import { rm } from 'node:fs/promises';
import type { UnitOfWork } from '../db/ports.js';
import type { Repository } from '../db/repository.js';
import type { FileRow } from '../db/schema.js';
import { AppError, errors, formatBytes, restoreAppError } from '../errors.js';
import { newDeliveryToken, newFileId } from '../ids.js';
import type { EventBus } from '../events.js';
import type { CompletionWaits } from '../jobs/completion.js';
import type { Logger } from '../log.js';
import { admitToPurpose, type Purposes } from '../purposes.js';
import type { ReceivedArea } from '../uploads/received.js';
import { creationBudget } from './budget.js';
import { PROCESS_JOB } from './processing.js';

// The one path every upload takes, whatever carried its bytes (tus, base64, multipart):
// reserve (quota + budget + purpose in one decision) → bytes land somewhere local → received (a
// persisted processing job) → ready | refused | failed; or release when the bytes never all arrive.

export type ReserveRequest = {
  /** A carrier that already named the upload (tus) passes its id; otherwise one is generated. */
  id?: string;
  userId: string;
  purpose: string;
  length: number;
  filename: string;
  mimeType?: string | null;
};

export type CompleteRequest = {
  fileId: string;
  /** The finished upload on local disk. */
  sourcePath: string;
  /**
   * 'keep': the carrier keeps its file for racing requests (tus); the bytes are linked into the
   * received area. 'move' (default): the carrier's temporary file is moved there.
   */
  carrier?: 'keep' | 'move';
};

export type UploadServiceDeps = {
  repo: Repository;
  uow: UnitOfWork;
  received: ReceivedArea;
  waits: CompletionWaits;
  purposes: Purposes;
  logger: Logger;
  events: EventBus;
  defaultQuotaBytes: number;
  uploadExpiryMs: number;
  /** An upload that received no byte yet expires this long after its creation. */
  idleExpiryMs: number;
  /** What one user may hold in unfinished uploads. */
  maxUnfinished: { count: number; bytes: number };
  /** How long the request that carried the last byte waits for processing (CHIPMUNK_COMPLETION_WAIT). */
  completionWaitMs: number;
  /** Free space of the data volume and the margin to keep; absent: no disk check. */
  disk?: { freeBytes(): Promise<number>; marginBytes: number };
};

export function createUploadService(deps: UploadServiceDeps) {
  const { repo, uow, purposes, logger } = deps;
  const ports = uow.ports;

  /** What the client is answered once the wait is over: the file, or the refusal as an error. */
  async function outcome(fileId: string): Promise<FileRow> {
    const file = await ports.files.get(fileId);
    if (file && file.status !== 'deleting' && file.status !== 'uploading') {
      if (file.status === 'failed' && file.totalBytes === 0 && file.error) throw errors.processingFailed(file.error);
      return file;
    }
    const refusal = await ports.uploads.refusal(fileId);
    if (refusal) throw restoreAppError(refusal.code, refusal.status, refusal.message);
    throw errors.uploadGone();
  }

  const settled = async (fileId: string) => {
    const file = await ports.files.get(fileId);
    return !file || file.committedAt !== null || (file.status !== 'received' && file.status !== 'processing');
  };

  return {
    async reserve(req: ReserveRequest): Promise<FileRow> {
      if (!Number.isSafeInteger(req.length) || req.length < 0) throw errors.lengthRequired();
      if (req.length === 0) throw errors.unprocessable('The file is empty.');
      const purpose = purposes.get(req.purpose);
      const { kind } = admitToPurpose(purpose, { length: req.length, mimeType: req.mimeType });
      // Confirmed from the bytes at completion; until then the declared type or the purpose's first kind.
      const fileKind = kind ?? purpose.kinds[0]!;
      const budget = Math.max(...purpose.kinds.map((k) => creationBudget(k, req.length)));
      const reserveBytes = req.length + (kind ? creationBudget(kind, req.length) : budget);
      const outcome = await ports.uploads.reserve({
        userId: req.userId,
        purpose: purpose.name,
        kind: fileKind,
        filename: sanitizeFilename(req.filename),
        mimeType: req.mimeType ?? null,
        length: req.length,
        reserveBytes,
        visibility: purpose.visibility,
        defaultQuotaBytes: deps.defaultQuotaBytes,
        expiresAt: Date.now() + Math.min(deps.idleExpiryMs, deps.uploadExpiryMs),
        maxUnfinished: deps.maxUnfinished,
        newId: req.id ? () => req.id! : newFileId,
        newDeliveryToken,
      });
      if (!outcome.ok) {
        let err: AppError;
        if (outcome.reason === 'quota') {
          deps.events.emit('quota.exceeded', { userId: req.userId, purpose: purpose.name, neededBytes: reserveBytes, freeBytes: outcome.freeBytes });
          err = errors.quotaExceeded(
            reserveBytes === req.length
              ? `Storage quota exceeded: ${formatBytes(outcome.freeBytes)} free, this upload needs ${formatBytes(req.length)}.`
              : `Storage quota exceeded: ${formatBytes(outcome.freeBytes)} free, this upload needs ${formatBytes(reserveBytes)} (${formatBytes(req.length)} and up to ${formatBytes(reserveBytes - req.length)} for what is made from it).`,
          );
        } else if (outcome.reason === 'unfinished-count') {
          err = errors.tooManyUnfinished(
            `This user already has ${outcome.held.count} unfinished uploads (at most ${deps.maxUnfinished.count}): finish or cancel one first.`,
          );
        } else {
          err = errors.tooManyUnfinished(
            `This user's unfinished uploads already hold ${formatBytes(outcome.held.bytes)} (at most ${formatBytes(deps.maxUnfinished.bytes)} together): finish or cancel one first.`,
          );
        }
        deps.events.emit('upload.refused', { fileId: req.id ?? '', userId: req.userId, purpose: purpose.name, code: err.code, status: err.status });
        throw err;
      }
      const file = outcome.file;
      logger.info('upload reserved', { fileId: file.id, userId: file.userId, purpose: file.purpose, bytes: req.length, reservedBytes: reserveBytes });
      deps.events.emit('upload.started', { fileId: file.id, userId: file.userId, purpose: file.purpose, bytes: req.length });
      return file;
    },

    /** The upload received its first bytes: it may now live its full expiry, not the idle window. */
    async touch(fileId: string): Promise<void> {
      await ports.uploads.extendExpiry(fileId, Date.now() + deps.uploadExpiryMs);
    },

    /** Where a bucket upload's bytes stand, for the node that wrote them (uploads/s3-datastore.ts). */
    recordOffset(fileId: string, offset: number | null): Promise<void> {
      return ports.uploads.recordUploadOffset(fileId, offset);
    },
    recordedOffset(fileId: string): Promise<number | null> {
      return ports.uploads.uploadOffset(fileId);
    },

    /**
     * Refuses (507) an upload the disk cannot hold: free space, minus the operator's margin, minus
     * what uploads in flight have reserved, must fit the declared length. Called before any byte
     * is written; carriers call it before reserve().
     */
    async ensureDiskSpace(length: number): Promise<void> {
      if (!deps.disk) return;
      const free = await deps.disk.freeBytes();
      const inFlight = (await repo.reservationTotals()).bytes;
      const usable = free - deps.disk.marginBytes - inFlight;
      if (length > usable) {
        logger.warn('upload refused for disk space', { bytes: length, freeBytes: free, marginBytes: deps.disk.marginBytes, reservedBytes: inFlight });
        throw errors.insufficientStorage(
          `The server is low on disk space: it can take ${formatBytes(Math.max(0, usable))} more right now and this upload needs ${formatBytes(length)}. Try again later or ask the operator to free space.`,
        );
      }
    },

    /**
     * The last byte arrived: a commitment. The bytes are kept in the received area, the upload becomes
     * 'received' and its processing job is queued, in one transaction (one compare-and-set: a racing
     * second request loses it and touches nothing). Then the request waits for the job, up to the
     * completion wait, and answers the file (a 'processing' one past the wait) or the refusal.
     */
    async complete(req: CompleteRequest): Promise<FileRow> {
      const { fileId, sourcePath } = req;
      const current = await ports.files.get(fileId);
      if (current?.status === 'uploading') await this.receive(fileId, sourcePath, req.carrier ?? 'move');
      await deps.waits.wait(fileId, deps.completionWaitMs, () => settled(fileId));
      return outcome(fileId);
    },

    /** The commitment alone (start-up recovery makes it for uploads a stop interrupted): true for the winner. */
    async receive(fileId: string, sourcePath: string, carrier: 'keep' | 'move'): Promise<boolean> {
      // Bytes first, claim second: whoever wins finds them in the received area. A loser's link is the
      // same bytes, and a loser never removes anything.
      if (carrier === 'keep') await deps.received.keep(fileId, sourcePath);
      else await deps.received.take(fileId, sourcePath);
      const won = await uow.run(async (tx) => {
        const row = await tx.uploads.markReceived(fileId);
        if (row) await tx.jobs.enqueue({ type: PROCESS_JOB, fileId, userId: row.userId });
        return row;
      });
      if (won) logger.info('upload received', { fileId, userId: won.userId, bytes: won.uploadLength });
      return won !== undefined;
    },

    /**
     * release() for a batch (the expiry sweep): one transaction for the rows and reservations, then
     * the bytes. A crash between the two leaves upload files with no row: orphans recovery removes.
     */
    async releaseMany(fileIds: string[], discard: (id: string) => Promise<void>): Promise<number> {
      const released = await repo.releaseUploads(fileIds);
      for (const id of released) {
        await discard(id);
        await deps.received.remove(id);
      }
      if (released.length) logger.info('uploads released', { count: released.length });
      return released.length;
    },

    /**
     * Gives an unfinished upload's reservation back and removes its bytes. Safe to call twice. An
     * upload released while still 'uploading' was never committed, so received bytes under its id
     * (a last byte whose commitment lost to this release; in the bucket, tus completes its upload
     * at the received key) are nobody's and go too.
     */
    async release(fileId: string, carrier: { sourcePath?: string; discardCarrier?: () => Promise<void> } = {}): Promise<boolean> {
      const released = await ports.uploads.release(fileId, ['uploading']);
      if (carrier.sourcePath) await rm(carrier.sourcePath, { force: true });
      await carrier.discardCarrier?.();
      if (released) {
        await deps.received.remove(fileId);
        logger.info('upload released', { fileId });
      }
      return released !== undefined;
    },
  };
}

export type UploadService = ReturnType<typeof createUploadService>;

/** Keeps a readable name for display and downloads; it is never used to build a path. */
export function sanitizeFilename(name: string | null | undefined): string {
  const cleaned = (name ?? '')
    .replace(/[\u0000-\u001f\u007f/\\]/g, '_')
    .trim()
    .slice(0, 255);
  return cleaned || 'upload';
}
