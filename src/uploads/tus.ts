import { fileIdPattern } from '../ids.js';
import { Server, EVENTS, MemoryLocker, type DataStore, type Locker } from '@tus/server';
import { chmod } from 'node:fs/promises';
import path from 'node:path';
import { bearerToken, claimTokenUse, verifyUploadToken, type TokenUseLedger } from '../auth/upload-tokens.js';
import { errors, toAppError, toTusError } from '../errors.js';
import { newFileId } from '../ids.js';
import type { UploadArea } from './area.js';
import type { Logger } from '../log.js';
import type { FileService } from '../services/files.js';
import type { UploadService } from '../services/uploads.js';
import type { UnitOfWork } from '../db/ports.js';
import type { Repository } from '../db/repository.js';
import { requestBaseUrl } from '../http.js';
import { ChecksumFileStore } from './tus-protocol.js';

// tus wiring, kept thin: creation verifies the token and reserves; finish makes one service call.

export const TUS_PATH = '/uploads';

/** The upload id of a tus URL (`/uploads/<id>`, absolute or a path), or undefined. */
export function uploadIdOf(url: string): string | undefined {
  const pathname = new URL(url, 'http://x').pathname;
  const rest = pathname.startsWith(`${TUS_PATH}/`) ? pathname.slice(TUS_PATH.length + 1) : '';
  return fileIdPattern.test(rest) ? rest : undefined;
}

/** What a tus store is made with: the expiry it advertises, and a counter of the bytes each write lands. */
export type TusDatastoreOptions = { expiryMs: number; onBytes: (bytes: number, id: string) => void; offsets: UploadOffsets };
/**
 * Where each upload's bytes stand, as the database records it after each write (null while one is
 * under way): the S3 store trusts its own memory of a write only while the record still matches it.
 */
export type UploadOffsets = { record(id: string, offset: number | null): Promise<void>; read(id: string): Promise<number | null> };
/** Makes the tus store over the upload area (uploads/open.ts picks the local or the S3 one). */
export type TusDatastoreFactory = (opts: TusDatastoreOptions) => DataStore;

export type TusDeps = {
  area: UploadArea;
  datastore: TusDatastoreFactory;
  /** The tus lock of each upload: in-process by default; one that spans nodes (db/pg/locker.ts) when they share the uploads. */
  locker?: Locker;
  onBytesReceived?: (bytes: number) => void;
  secret: string;
  publicUrl: string | undefined;
  uploadExpiryMs: number;
  repo: Repository;
  uow: UnitOfWork;
  uploads: UploadService;
  files: FileService;
  logger: Logger;
  /** Upload tokens: the lifetime cap and the ledger of bounded tokens' uses. */
  tokens: { maxLifetimeSeconds: number; uses: TokenUseLedger };
};

/** The stock file store, counting the bytes each write lands (for the bytes-received metric). */
class CountingFileStore extends ChecksumFileStore {
  constructor(
    options: ConstructorParameters<typeof ChecksumFileStore>[0],
    private readonly onBytes: (bytes: number, id: string) => void,
  ) {
    super(options);
  }

  /** Both files of a new upload are 0600: unfinished uploads are nobody else's to read. */
  override async create(upload: Parameters<ChecksumFileStore['create']>[0]): ReturnType<ChecksumFileStore['create']> {
    const created = await super.create(upload);
    const data = path.join(this.directory, upload.id);
    await chmod(data, 0o600);
    await chmod(`${data}.json`, 0o600).catch(() => undefined);
    return created;
  }

  override async write(readable: Parameters<ChecksumFileStore['write']>[0], id: string, offset: number): Promise<number> {
    const end = await super.write(readable, id, offset);
    this.onBytes(end - offset, id);
    return end;
  }
}

/** The local folder's store (the embedded default). */
export const localTusDatastore =
  (directory: string): TusDatastoreFactory =>
  ({ expiryMs, onBytes }) =>
    new CountingFileStore({ directory, expirationPeriodInMilliseconds: expiryMs }, onBytes);

export function createTusServer(deps: TusDeps): { server: Server; uploadPath: (id: string) => string; discardUpload: (id: string) => Promise<void> } {
  const { repo, uploads, files, logger, area } = deps;
  const store = deps.datastore({
    expiryMs: deps.uploadExpiryMs,
    offsets: { record: (id, offset) => uploads.recordOffset(id, offset), read: (id) => uploads.recordedOffset(id) },
    onBytes: (n, id) => {
      deps.onBytesReceived?.(n);
      // The first bytes end the idle window: the upload may now live its full expiry.
      if (n > 0) uploads.touch(id).catch((err: unknown) => logger.warn("could not extend an upload's expiry", { fileId: id, err }));
    },
  });
  const uploadPath = area.dataPath;
  const discardUpload = area.discard;

  /** The creation's admission once the token is good: purpose, declared length, disk, quota. */
  async function admit(
    grant: { userId: string; purpose: string },
    upload: { id: string; size?: number; sizeIsDeferred: boolean; metadata?: Record<string, string | null> },
  ) {
    const meta = upload.metadata ?? {};
    // Metadata may repeat the token's purpose but never widen it.
    if (meta.purpose && meta.purpose !== grant.purpose) {
      throw errors.forbidden(`This upload token is for "${grant.purpose}" uploads, not "${meta.purpose}".`);
    }
    if (upload.sizeIsDeferred || upload.size === undefined) throw errors.lengthRequired();
    await uploads.ensureDiskSpace(upload.size);
    await uploads.reserve({
      id: upload.id,
      userId: grant.userId,
      purpose: grant.purpose,
      length: upload.size,
      filename: meta.filename ?? meta.name ?? 'upload',
      mimeType: meta.filetype ?? meta.type ?? null,
    });
  }

  const server = new Server({
    path: TUS_PATH,
    datastore: store,
    locker: deps.locker ?? new MemoryLocker(),
    respectForwardedHeaders: true,
    // Chunks are bounded by the declared length; the purpose's limit is checked at creation.
    maxSize: 0,
    // CORS and the protocol answers @tus/server does not give are set around it (tus-protocol.ts).
    exposedHeaders: ['Content-Type', 'Upload-Expires', 'Chipmunk-File-Id', 'Chipmunk-File-Status'],
    allowedHeaders: ['Authorization', 'Upload-Checksum'],
    generateUrl: (req, { proto, host, path: routePath, id }) => {
      const base = deps.publicUrl ?? `${proto}://${host}`;
      return `${base}${routePath}/${id}`;
    },
    namingFunction: async () => {
      for (;;) {
        const id = newFileId();
        if (!(await repo.getFile(id))) return id;
      }
    },

    async onUploadCreate(req, upload) {
      try {
        const token = bearerToken(req.headers.get('authorization'));
        if (!token) throw errors.unauthorized('Uploads need an upload token: send it as "Authorization: Bearer <token>".');
        const grant = await verifyUploadToken(deps.secret, token, { maxLifetimeSeconds: deps.tokens.maxLifetimeSeconds });
        const refund = await claimTokenUse(deps.tokens.uses, grant);
        try {
          await admit(grant, upload);
        } catch (err) {
          await refund();
          throw err;
        }
        // Upload-Metadata stays as the client sent it (HEAD answers it back); the user and purpose
        // live on the file row the reservation made.
        return {};
      } catch (err) {
        throw toTusError(err);
      }
    },

    // Finished uploads are answered before tus (uploads/finished.ts). What reaches tus is an upload in
    // flight, or a final PATCH that raced its twin past that check: it goes on to onUploadFinish, loses
    // the compare-and-set there and answers the file like the winner.
    async onIncomingRequest(req, id) {
      if (req.method === 'POST') return; // creation is checked by onUploadCreate
      const file = await repo.getFile(id);
      if (file && req.method === 'PATCH' && (file.status === 'received' || file.status === 'processing' || file.status === 'ready')) return;
      if (!file || file.status !== 'uploading' || (file.expiresAt !== null && file.expiresAt <= Date.now())) {
        throw toTusError(errors.uploadGone());
      }
    },

    async onUploadFinish(req, upload) {
      try {
        // The bytes are kept in the received area (locally a hard link; in the bucket the multipart
        // upload was made on the received key), so removing tus's files never touches them.
        const stored = await uploads.complete({ fileId: upload.id, sourcePath: uploadPath(upload.id), carrier: 'keep' });
        // A PATCH is done with tus's files before it answers (a client, a test or fsck that looks next
        // finds them gone); a creation-with-upload still reads them (POST_FINISH below). Either way the
        // store completed the upload in this request: there is no unfinished multipart upload to look for.
        if (req.method === 'PATCH') await discardUpload(upload.id, { completed: true });
        const body = JSON.stringify(files.toJson(stored, await repo.getVariants(stored.id), requestBaseUrl(deps.publicUrl, req)));
        const length = String(stored.uploadLength ?? upload.size ?? stored.bytes);
        return {
          // Creation-with-upload of the whole file is still a creation: 201 with its Location.
          status_code: req.method === 'POST' ? 201 : 200,
          headers: {
            'Content-Type': 'application/json',
            'Upload-Offset': length,
            'Chipmunk-File-Id': stored.id,
            'Chipmunk-File-Status': stored.status === 'received' ? 'processing' : stored.status,
          },
          body,
        };
      } catch (err) {
        throw toTusError(err);
      }
    },

    async onResponseError(req, err) {
      const appError = toAppError(err);
      // A twin of a final PATCH that reached the store after the winner completed and removed the upload
      // finds no upload there (a bucket says so with a store error): the upload is complete, not broken.
      // While the winner is between completing the upload in the bucket and recording it, the twin's
      // store calls find the multipart upload gone (NoSuchUpload/NoSuchKey): the same conflict.
      const storeAbsent = ['NoSuchKey', 'NoSuchUpload'].includes((err as { name?: string }).name ?? '');
      if (req.method === 'PATCH' && (appError.status >= 500 || appError.status === 404)) {
        const id = uploadIdOf(req.url);
        const file = id ? await repo.getFile(id).catch(() => undefined) : undefined;
        if (file && file.status !== 'deleting' && (file.status !== 'uploading' || storeAbsent)) {
          return toTusError(
            errors.uploadConflict(
              file.status === 'uploading'
                ? 'This upload is being completed by another request: ask HEAD for its state.'
                : 'This upload is complete; it takes no more bytes.',
            ),
          );
        }
      }
      if (appError.status >= 500) logger.error('tus request failed', { method: req.method, err });
      return toTusError(appError);
    },
  });

  // The answer to a creation-with-upload is out: its tus files go (the received area holds the bytes).
  // A final PATCH removed them before answering. A crash before this leaves them to start-up recovery.
  server.on(EVENTS.POST_FINISH, (req: { method: string }, _res: unknown, upload: { id: string }) => {
    if (req.method === 'PATCH') return;
    void (async () => {
      if ((await repo.getFile(upload.id))?.status === 'uploading') return;
      await discardUpload(upload.id, { completed: true });
    })().catch((err) => logger.warn("could not remove a finished upload's tus files", { fileId: upload.id, err }));
  });

  server.on(EVENTS.POST_TERMINATE, (_req: unknown, _res: unknown, id: string) => {
    uploads.release(id).catch((err) => logger.error('releasing a terminated upload failed', { fileId: id, err }));
  });

  return { server, uploadPath, discardUpload };
}
