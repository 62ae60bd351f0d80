import { link, rm } from 'node:fs/promises';
import path from 'node:path';
import type { NewVariant, UnitOfWork } from '../db/ports.js';
import type { FileRow, JobRow } from '../db/schema.js';
import { AppError, errors, toAppError } from '../errors.js';
import type { EventBus } from '../events.js';
import type { CompletionWaits } from '../jobs/completion.js';
import type { JobHandler, JobResult } from '../jobs/runner.js';
import type { Logger } from '../log.js';
import type { MediaProcessor } from '../media/processor.js';
import { sniffFile } from '../media/sniff.js';
import { fileData } from '../ops/webhooks.js';
import { purposeLimits, type Purposes } from '../purposes.js';
import type { BlobStorage } from '../storage/storage.js';
import type { ReceivedArea } from '../uploads/received.js';
import { renditionBudget } from './budget.js';

// The processing job of a received upload: received → processing → ready | processing (a track whose
// renditions follow) | refused (a verdict on the content: released, a tombstone answers HEAD with 410)
// | failed (server-side failures past their retries). The job's claim is the lock: only it touches the
// file's folder until the commit, and from the commit on only a delete removes the folder.

export const PROCESS_JOB = 'file.process';

export type ProcessingDeps = {
  uow: UnitOfWork;
  storage: BlobStorage;
  received: ReceivedArea;
  purposes: Purposes;
  processors: { image: MediaProcessor; audio: MediaProcessor };
  events: EventBus;
  logger: Logger;
  waits: Pick<CompletionWaits, 'settle'>;
  /** The job that makes a committed track's renditions. */
  audioJob: string;
  /** How long a refusal stays answerable (410) on the upload URL. */
  refusalTtlMs: number;
  /** Where the bytes may still be if the move into the received area did not happen (a crash): the tus area. */
  carrierPath?: (fileId: string) => string;
  /** Removes what the carrier kept for the upload (tus's files), once nobody can race for it. */
  discardCarrier?: (fileId: string) => Promise<void>;
};

/** Server-side failures are retried 5 times over about a minute and a half (1, 4, 10, 25, 60 s). */
const RETRY_DELAYS_MS = [1_000, 4_000, 10_000, 25_000, 60_000];

export function createProcessing(deps: ProcessingDeps) {
  const { uow, storage, received, logger, events } = deps;
  const ports = uow.ports;

  /** The received bytes as a local file (fetched into `scratchDir` when the received area is remote). */
  async function locateBytes(fileId: string, scratchDir: string): Promise<string | undefined> {
    if (!(await received.locate(fileId)) && deps.carrierPath && !(await received.keep(fileId, deps.carrierPath(fileId)))) return undefined;
    return received.toLocal(fileId, scratchDir);
  }

  /** A verdict on the content: nothing charged, nothing left, a tombstone for HEAD. */
  async function refuse(file: FileRow, appError: AppError, started: number): Promise<JobResult> {
    await storage.removeFolder(file.id);
    const released = await uow.run(async (tx) => {
      const row = await tx.uploads.release(file.id, ['received', 'processing']);
      if (row) {
        await tx.uploads.recordRefusal({
          id: file.id,
          userId: file.userId,
          code: appError.code,
          status: appError.status,
          message: appError.message,
          expiresAt: Date.now() + deps.refusalTtlMs,
        });
      }
      return row;
    });
    await received.remove(file.id);
    await deps.discardCarrier?.(file.id);
    if (released) {
      events.emit('upload.refused', {
        fileId: file.id,
        userId: file.userId,
        purpose: file.purpose,
        code: appError.code,
        status: appError.status,
        kind: file.kind,
        ms: performance.now() - started,
      });
      logger.info('upload refused', { fileId: file.id, code: appError.code, status: appError.status });
    }
    deps.waits.settle(file.id);
    return { result: 'done' };
  }

  async function run(job: JobRow, signal: AbortSignal): Promise<JobResult> {
    const started = performance.now();
    let file = await ports.files.get(job.fileId);
    // Deleted, or finished by an earlier run that stopped before recording the job as done.
    if (!file || file.committedAt !== null || (file.status !== 'received' && file.status !== 'processing')) {
      deps.waits.settle(job.fileId);
      return { result: 'done' };
    }
    if (file.status === 'received') {
      file = await ports.files.transition(file.id, ['received'], 'processing');
      if (!file) return { result: 'done' };
    }
    const fileId = file.id;
    // Whatever an interrupted attempt left is uncommitted (committedAt is null): ours to clear.
    await storage.removeFolder(fileId);
    await storage.discardWorkspace(fileId);
    const purpose = deps.purposes.get(file.purpose);
    let workDir: string | undefined;
    try {
      workDir = await storage.workspace(fileId);
      const sourcePath = await locateBytes(fileId, workDir);
      if (!sourcePath) return { result: 'failed', reason: "The upload's bytes are missing on the server." };
      const sniffed = await sniffFile(sourcePath);
      if (!sniffed) throw errors.unprocessable('The file is not a recognisable image or audio format.');
      if (sniffed.kind === 'other' || !purpose.kinds.includes(sniffed.kind)) {
        throw errors.unsupportedType(`"${purpose.name}" uploads take ${purpose.kinds.join(' or ')} files; this file is ${sniffed.mimeType}.`);
      }
      const result = await deps.processors[sniffed.kind].process({
        fileId,
        sourcePath,
        sniffed,
        square: purpose.square,
        formats: purpose.formats,
        limits: purposeLimits(purpose),
        workDir,
        signal,
      });
      if (signal.aborted) throw signal.reason;
      // The original: a cleaned copy when the processor made one, else the upload itself (linked, so
      // the received bytes stay until the commit).
      let originalFile = result.original?.file;
      if (!originalFile) {
        originalFile = path.join(workDir, `.original.${sniffed.ext}`);
        await rm(originalFile, { force: true });
        await link(sourcePath, originalFile).catch(async (err: NodeJS.ErrnoException) => {
          if (err.code !== 'EXDEV' && err.code !== 'EPERM') throw err;
          const { copyFile } = await import('node:fs/promises');
          await copyFile(sourcePath, originalFile!);
        });
      }
      const originalName = `0.${sniffed.ext}`;
      const stored: NewVariant[] = [
        {
          name: '0',
          path: originalName,
          mimeType: sniffed.mimeType,
          bytes: await storage.adopt(fileId, originalName, originalFile),
          width: result.width ?? null,
          height: result.height ?? null,
        },
      ];
      for (const v of result.variants) {
        const bytes = await storage.adopt(fileId, v.storedAs, v.file);
        stored.push({ name: v.name, path: v.storedAs, mimeType: v.mimeType, bytes, width: v.width ?? null, height: v.height ?? null });
      }
      const durationMs = 'durationMs' in result.info && typeof result.info.durationMs === 'number' ? result.info.durationMs : undefined;
      const keepReservedBytes = result.status === 'processing' ? renditionBudget(durationMs, file.reservedBytes) : 0;
      const committed = await uow.run(async (tx) => {
        const row = await tx.files.commit(fileId, {
          status: result.status,
          mimeType: sniffed.mimeType,
          ext: sniffed.ext,
          width: result.width,
          height: result.height,
          info: result.info,
          variants: stored,
          keepReservedBytes,
        });
        if (!row || row === 'quota') return row;
        if (row.status === 'ready') await tx.outbox.add('file.ready', fileData(row), { fileId, userId: row.userId });
        else await tx.jobs.enqueue({ type: deps.audioJob, fileId, userId: row.userId });
        return row;
      });
      if (committed === 'quota') {
        throw errors.quotaExceeded(
          `Storage quota exceeded: this file and what Chipmunk makes from it (${stored.reduce((s, v) => s + v.bytes, 0)} bytes) do not fit in the quota.`,
        );
      }
      if (!committed) {
        // Deleted while we worked: its folder is going away; make sure what we just moved in goes too.
        await storage.removeFolder(fileId);
        await received.remove(fileId);
        deps.waits.settle(fileId);
        return { result: 'done' };
      }
      await received.remove(fileId);
      try {
        events.emit('upload.stored', committed, { ms: performance.now() - started });
        if (committed.status === 'ready') events.emit('file.ready', committed);
      } catch (err) {
        logger.error('an upload.stored listener failed', { fileId, err });
      }
      logger.info('upload stored', { fileId, userId: committed.userId, purpose: committed.purpose, totalBytes: committed.totalBytes });
      deps.waits.settle(fileId);
      return { result: 'done' };
    } catch (err) {
      if (signal.aborted) throw err;
      const appError = toAppError(err);
      if (appError.status < 500) return refuse(file, appError, started);
      // Server-side (a killed worker, ENOSPC, our own timeout): retried; the bytes stay received.
      logger.warn('processing failed on our side; will retry', { fileId, err });
      throw err;
    } finally {
      if (workDir) await storage.discardWorkspace(fileId);
    }
  }

  const handler: JobHandler = {
    run,
    maxAttempts: RETRY_DELAYS_MS.length + 1,
    // A received upload is a commitment: many kills in a row (a crash loop) still do not throw it away.
    maxInterruptions: 25,
    retryDelayMs: (attempt) => RETRY_DELAYS_MS[Math.min(attempt, RETRY_DELAYS_MS.length) - 1]!,
    async fail(job: JobRow, reason: string): Promise<void> {
      await storage.removeFolder(job.fileId);
      const failed = await uow.run(async (tx) => {
        const row = await tx.files.fail(job.fileId, `Processing failed on the server: ${reason}`);
        if (row) await tx.outbox.add('file.failed', fileData(row, { reason: row.error }), { fileId: row.id, userId: row.userId });
        return row;
      });
      await received.remove(job.fileId);
      await deps.discardCarrier?.(job.fileId);
      if (failed) events.emit('file.failed', failed, failed.error ?? reason);
      deps.waits.settle(job.fileId);
    },
  };

  return { handler };
}
