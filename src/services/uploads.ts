import { rm } from 'node:fs/promises';
import type { Repository } from '../db/repository.js';
import type { FileRow } from '../db/schema.js';
import { AppError, errors, formatBytes, toAppError } from '../errors.js';
import { newDeliveryToken, newFileId } from '../ids.js';
import type { EventBus } from '../events.js';
import type { Logger } from '../log.js';
import type { MediaProcessor } from '../media/processor.js';
import { sniffFile } from '../media/sniff.js';
import { admitToPurpose, purposeLimits, type Purposes } from '../purposes.js';
import type { BlobStorage } from '../storage/storage.js';

// The one path every upload takes, whatever carried its bytes (tus, base64, multipart):
// reserve (quota + purpose in one decision) → bytes land somewhere local → complete or release.

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
  /** The finished upload on local disk; moved into storage on success, removed on failure. */
  sourcePath: string;
  /** Removes whatever else the carrier kept for this upload (tus's .json sidecar). */
  discardCarrier?: () => Promise<void>;
};

export type UploadServiceDeps = {
  repo: Repository;
  storage: BlobStorage;
  purposes: Purposes;
  processors: { image: MediaProcessor; audio: MediaProcessor };
  logger: Logger;
  events: EventBus;
  defaultQuotaBytes: number;
  uploadExpiryMs: number;
  /** Free space of the data volume and the margin to keep; absent: no disk check. */
  disk?: { freeBytes(): Promise<number>; marginBytes: number };
  /** Called after a file is committed; background work (audio renditions) hooks in here. */
  onStored?: (file: FileRow) => void;
};

export function createUploadService(deps: UploadServiceDeps) {
  const { repo, storage, purposes, logger } = deps;

  return {
    reserve(req: ReserveRequest): FileRow {
      if (!Number.isSafeInteger(req.length) || req.length < 0) throw errors.lengthRequired();
      if (req.length === 0) throw errors.unprocessable('The file is empty.');
      const purpose = purposes.get(req.purpose);
      const { kind } = admitToPurpose(purpose, { length: req.length, mimeType: req.mimeType });
      let file: FileRow;
      // A purpose name is only trusted once purposes.get has accepted it.
      try {
        file = repo.reserveUpload({
        userId: req.userId,
        purpose: purpose.name,
        // Confirmed from the bytes at completion; until then the declared type or the purpose's first kind.
        kind: kind ?? purpose.kinds[0]!,
        filename: sanitizeFilename(req.filename),
        mimeType: req.mimeType ?? null,
        length: req.length,
        visibility: purpose.visibility,
        defaultQuotaBytes: deps.defaultQuotaBytes,
        expiresAt: Date.now() + deps.uploadExpiryMs,
        newId: req.id ? () => req.id! : newFileId,
        newDeliveryToken,
        });
      } catch (err) {
        if (err instanceof AppError && err.code === 'QUOTA_EXCEEDED') {
          const user = repo.getUser(req.userId);
          const freeBytes = user ? Math.max(0, user.quotaBytes - user.usedBytes - user.reservedBytes) : 0;
          deps.events.emit('quota.exceeded', { userId: req.userId, purpose: purpose.name, neededBytes: req.length, freeBytes });
        }
        if (err instanceof AppError) {
          deps.events.emit('upload.refused', { fileId: req.id ?? '', userId: req.userId, purpose: purpose.name, code: err.code, status: err.status });
        }
        throw err;
      }
      logger.info('upload reserved', { fileId: file.id, userId: file.userId, purpose: file.purpose, bytes: req.length });
      deps.events.emit('upload.started', { fileId: file.id, userId: file.userId, purpose: file.purpose, bytes: req.length });
      return file;
    },

    /**
     * Refuses (507) an upload the disk cannot hold: free space, minus the operator's margin, minus
     * what uploads in flight have reserved, must fit the declared length. Called before any byte
     * is written; carriers call it before reserve().
     */
    async ensureDiskSpace(length: number): Promise<void> {
      if (!deps.disk) return;
      const free = await deps.disk.freeBytes();
      const inFlight = repo.reservationTotals().bytes;
      const usable = free - deps.disk.marginBytes - inFlight;
      if (length > usable) {
        logger.warn('upload refused for disk space', { bytes: length, freeBytes: free, marginBytes: deps.disk.marginBytes, reservedBytes: inFlight });
        throw errors.insufficientStorage(
          `The server is low on disk space: it can take ${formatBytes(Math.max(0, usable))} more right now and this upload needs ${formatBytes(length)}. Try again later or ask the operator to free space.`,
        );
      }
    },

    /**
     * Checks the bytes really are what the purpose allows, makes the variants, moves everything
     * into the file's one folder and turns the reservation into usage. On any failure nothing is
     * left: no folder, no charge, no reservation, no upload bytes.
     */
    async complete(req: CompleteRequest): Promise<FileRow> {
      const { fileId, sourcePath } = req;
      const file = repo.getFile(fileId);
      if (!file || file.status !== 'uploading') throw errors.uploadGone();
      const purpose = purposes.get(file.purpose);
      const started = performance.now();
      let kind: string = file.kind;
      let workDir: string | undefined;
      let committed: FileRow;
      try {
        const sniffed = await sniffFile(sourcePath);
        if (!sniffed) throw errors.unprocessable('The file is not a recognisable image or audio format.');
        if (sniffed.kind === 'other' || !purpose.kinds.includes(sniffed.kind)) {
          throw errors.unsupportedType(`"${purpose.name}" uploads take ${purpose.kinds.join(' or ')} files; this file is ${sniffed.mimeType}.`);
        }
        kind = sniffed.kind;
        workDir = await storage.workspace(fileId);
        const result = await deps.processors[sniffed.kind].process({ fileId, sourcePath, sniffed, square: purpose.square, formats: purpose.formats, limits: purposeLimits(purpose), workDir });
        const originalName = `0.${sniffed.ext}`;
        // The processor's cleaned copy (metadata stripped) is what gets stored and served as variant 0.
        const originalBytes = await storage.adopt(fileId, originalName, result.original?.file ?? sourcePath);
        if (result.original) await rm(sourcePath, { force: true });
        const stored = [{ name: '0', path: originalName, mimeType: sniffed.mimeType, bytes: originalBytes, width: result.width ?? null, height: result.height ?? null }];
        for (const v of result.variants) {
          const bytes = await storage.adopt(fileId, v.storedAs, v.file);
          stored.push({ name: v.name, path: v.storedAs, mimeType: v.mimeType, bytes, width: v.width ?? null, height: v.height ?? null });
        }
        committed = repo.commitUpload(fileId, {
          status: result.status,
          mimeType: sniffed.mimeType,
          ext: sniffed.ext,
          width: result.width,
          height: result.height,
          info: result.info,
          variants: stored,
        });
      } catch (err) {
        const appError = toAppError(err);
        // Folder first, row last: a crash in between leaves an 'uploading' row that start-up
        // recovery settles, never a folder that no row accounts for.
        await storage.removeFolder(fileId);
        await this.release(fileId, { sourcePath, discardCarrier: req.discardCarrier });
        deps.events.emit('upload.refused', { fileId, userId: file.userId, purpose: file.purpose, code: appError.code, status: appError.status, kind, ms: performance.now() - started });
        logger[appError.status >= 500 ? 'error' : 'info']('upload refused', { fileId, code: appError.code, status: appError.status, err: appError.status >= 500 ? err : undefined });
        throw appError;
      } finally {
        if (workDir) await storage.discardWorkspace(fileId);
      }
      // Committed: from here on nothing may undo the file. Events go right after the commit,
      // before any await: their listeners (the webhook outbox) write synchronously.
      try {
        deps.events.emit('upload.stored', committed, { ms: performance.now() - started });
        if (committed.status === 'ready') deps.events.emit('file.ready', committed);
      } catch (err) {
        logger.error('an upload.stored listener failed', { fileId, err });
      }
      logger.info('upload stored', { fileId, userId: committed.userId, purpose: committed.purpose, totalBytes: committed.totalBytes });
      // A leftover sidecar is an orphan that start-up recovery and fsck remove.
      await req.discardCarrier?.().catch((err: unknown) => logger.warn('could not remove the finished upload\'s leftovers', { fileId, err }));
      deps.onStored?.(committed);
      return committed;
    },

    /**
     * release() for a batch (the expiry sweep): one transaction for the rows and reservations, then
     * the bytes. A crash between the two leaves upload files with no row: orphans recovery removes.
     */
    async releaseMany(fileIds: string[], discard: (id: string) => Promise<void>): Promise<number> {
      const released = repo.releaseUploads(fileIds);
      for (const id of released) await discard(id);
      if (released.length) logger.info('uploads released', { count: released.length });
      return released.length;
    },

    /** Gives an unfinished upload's reservation back and removes its bytes. Safe to call twice. */
    async release(fileId: string, carrier: { sourcePath?: string; discardCarrier?: () => Promise<void> } = {}): Promise<boolean> {
      const released = repo.releaseUpload(fileId);
      if (carrier.sourcePath) await rm(carrier.sourcePath, { force: true });
      await carrier.discardCarrier?.();
      if (released) logger.info('upload released', { fileId });
      return released;
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
