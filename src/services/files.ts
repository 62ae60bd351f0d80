import type { UnitOfWork } from '../db/ports.js';
import type { Repository } from '../db/repository.js';
import { fileData } from '../ops/webhooks.js';
import type { ReceivedArea } from '../uploads/received.js';
import type { FileRow, VariantRow } from '../db/schema.js';
import { errors } from '../errors.js';
import type { EventBus } from '../events.js';
import type { Logger } from '../log.js';
import { avifVariantName } from '../media/processor.js';
import type { AudioFileInfo, ImageInfo } from '../media/info.js';
import type { CoverJson, FileJson, FileListJson, VariantFormatJson, VariantJson } from '../routes/schemas.js';
import type { BlobStorage } from '../storage/storage.js';

// Reading, describing and deleting stored files. The file JSON is built here and only here, to the
// shape declared in routes/schemas.ts (one per kind).

/** Builds the URL of one variant; delivery decides whether it needs a signature. */
export type VariantUrl = (file: FileRow, variantName: string, baseUrl: string) => string;

export const unsignedVariantUrl: VariantUrl = (file, name, baseUrl) => `${baseUrl}/f/${file.deliveryToken}/${name}`;

export type FileServiceDeps = {
  repo: Repository;
  uow: UnitOfWork;
  storage: BlobStorage;
  received: ReceivedArea;
  logger: Logger;
  events: EventBus;
  variantUrl?: VariantUrl;
  /** After a delete committed: abort the file's running jobs, wake requests waiting on it. */
  onDeleted?: (fileId: string) => void;
};

export function createFileService(deps: FileServiceDeps) {
  const { repo, storage, logger } = deps;
  const variantUrl = deps.variantUrl ?? unsignedVariantUrl;

  function toJson(file: FileRow, variantRows: VariantRow[], baseUrl: string): FileJson {
    const head = { id: file.id, userId: file.userId, purpose: file.purpose };
    const state = {
      // Only stored files are described (never uploading or deleting ones); 'received' (waiting for its
      // job) and 'processing' look the same to clients: not ready yet.
      status: (file.status === 'received' ? 'processing' : file.status) as FileJson['status'],
      visibility: file.visibility,
      filename: file.filename,
      mimeType: file.mimeType,
      bytes: file.bytes,
      totalBytes: file.totalBytes,
      ...(file.width != null ? { width: file.width } : {}),
      ...(file.height != null ? { height: file.height } : {}),
    };
    const variants: VariantJson[] = variantRows
      .filter(isLadderVariant)
      .sort(byVariantOrder)
      .map((v) => ({
        n: /^\d+$/.test(v.name) ? Number(v.name) : v.name,
        ...(v.width != null ? { width: v.width } : {}),
        ...(v.height != null ? { height: v.height } : {}),
        bytes: v.bytes,
        mimeType: v.mimeType,
        url: variantUrl(file, v.name, baseUrl),
        ...formatsJson(file, v, variantRows, baseUrl),
      }));
    const tail = {
      ...(file.error ? { error: file.error } : {}),
      createdAt: new Date(file.createdAt).toISOString(),
      updatedAt: new Date(file.updatedAt).toISOString(),
    };
    // The facts are the processor's (media/info.ts), stored as they were reported.
    if (file.kind === 'audio') {
      const { cover: _facts, ...facts } = file.info as Partial<AudioFileInfo>;
      return { ...head, kind: 'audio', ...state, ...facts, variants, ...coverJson(file, variantRows, baseUrl), ...tail };
    }
    return { ...head, kind: 'image', ...state, ...(file.info as Partial<ImageInfo>), variants, ...tail };
  }

  /** A rung's AVIF twin ('6-avif' beside '6') and the rung itself, each with its own URL. */
  function formatsJson(file: FileRow, rung: VariantRow, variantRows: VariantRow[], baseUrl: string): { formats?: VariantFormatJson[] } {
    const twin = variantRows.find((v) => v.name === avifVariantName(rung.name));
    if (!twin) return {};
    return {
      formats: [
        { mimeType: twin.mimeType, bytes: twin.bytes, url: variantUrl(file, twin.name, baseUrl) },
        { mimeType: rung.mimeType, bytes: rung.bytes, url: variantUrl(file, rung.name, baseUrl) },
      ],
    };
  }

  /** A track's embedded cover, stored as its own square ladder 'cover-0' (the picture) … 'cover-6'. */
  function coverJson(file: FileRow, variantRows: VariantRow[], baseUrl: string): { cover?: CoverJson } {
    if (file.kind !== 'audio') return {};
    const ladder = variantRows.filter((v) => /^cover-\d+$/.test(v.name)).sort((a, b) => Number(a.name.slice(6)) - Number(b.name.slice(6)));
    if (!ladder.length) return {};
    const facts = (file.info as Partial<AudioFileInfo>).cover ?? {};
    return { cover: { ...facts, variants: ladder.map((v) => variantUrl(file, v.name, baseUrl)) } };
  }

  return {
    toJson,

    async describe(fileId: string, baseUrl: string): Promise<FileJson> {
      const file = await repo.getStoredFile(fileId);
      if (!file) throw errors.notFound('File');
      return toJson(file, await repo.getVariants(file.id), baseUrl);
    },

    async list(userId: string, opts: { limit: number; cursor?: string }, baseUrl: string): Promise<FileListJson> {
      const rows = await repo.listUserFiles(userId, { limit: opts.limit + 1, cursor: opts.cursor });
      const page = rows.slice(0, opts.limit);
      return {
        files: await Promise.all(page.map(async (f) => toJson(f, await repo.getVariants(f.id), baseUrl))),
        nextCursor: rows.length > opts.limit ? page[page.length - 1]!.id : null,
      };
    },

    /**
     * Bytes go back in the same transaction that hides the file, records its webhook and cancels its
     * waiting jobs; running ones are aborted; then its one folder goes.
     */
    async remove(fileId: string): Promise<void> {
      const file = await deps.uow.run(async (tx) => {
        const row = await tx.files.beginDelete(fileId);
        if (!row) return undefined;
        await tx.jobs.cancelForFile(fileId);
        await tx.outbox.add('file.deleted', fileData(row, { status: 'deleted' }), { fileId, userId: row.userId });
        return row;
      });
      if (!file) throw errors.notFound('File');
      deps.onDeleted?.(fileId);
      deps.events.emit('file.deleted', file);
      await finishDelete(fileId);
    },

    /** Finishes deletes a crash interrupted: their bytes were already given back. */
    async finishInterruptedDeletes(): Promise<number> {
      const pending = await repo.filesInStatus('deleting');
      for (const file of pending) await finishDelete(file.id);
      return pending.length;
    },
  };

  async function finishDelete(fileId: string): Promise<void> {
    await storage.removeFolder(fileId);
    await deps.received.remove(fileId);
    await repo.finishDelete(fileId);
    logger.info('file deleted', { fileId });
  }
}

export type FileService = ReturnType<typeof createFileService>;

// Nested outputs (e.g. a cover's own ladder stored as 'cover-3') are described by their owner, not listed here.
function isLadderVariant(v: VariantRow): boolean {
  return !v.name.includes('-');
}

function byVariantOrder(a: VariantRow, b: VariantRow): number {
  const na = /^\d+$/.test(a.name) ? Number(a.name) : Number.MAX_SAFE_INTEGER;
  const nb = /^\d+$/.test(b.name) ? Number(b.name) : Number.MAX_SAFE_INTEGER;
  return na - nb || a.name.localeCompare(b.name);
}
