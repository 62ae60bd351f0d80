import busboy from 'busboy';
import type { IncomingHttpHeaders } from 'node:http';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { once } from 'node:events';
import { finished, pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import type { Repository } from '../db/repository.js';
import type { FileRow } from '../db/schema.js';
import { AppError, errors, formatBytes, toAppError } from '../errors.js';
import { fileIdPattern } from '../ids.js';
import type { Logger } from '../log.js';
import { sniffBytes, SNIFF_BYTES } from '../media/sniff.js';
import { admitToPurpose, type Purposes } from '../purposes.js';
import type { UploadService } from '../services/uploads.js';
import { largestAffordable } from '../services/budget.js';
import { byteLimit } from './body.js';
import { JsonBase64Reader } from './json-base64.js';

// The server-side carriers: a base64 string in a JSON body (the signup avatar) and a streamed
// multipart/form-data file. Like tus, both reserve first (quota + purpose in one decision), land the
// bytes in a local temporary file, and hand it to the one completion path; any failure releases the
// reservation and removes the temporary file.

export type MultipartFields = { userId?: string | undefined; purpose?: string | undefined; filename?: string | undefined; size?: number | undefined };

/** Who an upload is for: from an upload token, or named in the request by the app backend (API key). */
export type Grant = { userId: string; purpose: string };

export type IngestDeps = {
  /** Temporary files of uploads in flight, one per file id (`<data dir>/ingest`). */
  dir: string;
  uploads: UploadService;
  repo: Repository;
  purposes: Purposes;
  defaultQuotaBytes: number;
  logger: Logger;
  /** Largest file a JSON (base64) body may carry, decoded; bigger files go as multipart or tus. */
  maxBase64Bytes: number;
};

/** Room for the JSON keys, the filename and a data: URI prefix around the base64 text. */
const JSON_OVERHEAD = 64 * 1024;
/** Room for the form fields, part headers and boundaries around the file. */
const MULTIPART_OVERHEAD = 64 * 1024;

export const base64Length = (bytes: number) => Math.ceil(bytes / 3) * 4;

export function createIngest(deps: IngestDeps) {
  const { uploads, purposes, logger } = deps;

  /** The one place an ingest temporary path is built; only a server-made file id is accepted. */
  const tempPath = (fileId: string) => {
    if (!fileIdPattern.test(fileId)) throw new Error(`Refusing unsafe file id ${JSON.stringify(fileId)}`);
    return path.join(deps.dir, fileId);
  };

  const largestPurposeBytes = () => Math.max(...purposes.all().map((p) => p.maxBytes));

  async function freeBytes(userId: string): Promise<number> {
    const user = await deps.repo.getUser(userId);
    if (!user) return deps.defaultQuotaBytes;
    return Math.max(0, user.quotaBytes - user.usedBytes - user.reservedBytes);
  }

  return {
    /**
     * Whom the upload is for. With an upload token the request may repeat its user and purpose but
     * never change them; with the API key the request must name both.
     */
    resolveGrant(token: Grant | undefined, named: { userId?: string | undefined; purpose?: string | undefined }): Grant {
      if (token) {
        if (named.userId && named.userId !== token.userId) throw errors.forbidden(`This upload token is for user "${token.userId}", not "${named.userId}".`);
        if (named.purpose && named.purpose !== token.purpose) {
          throw errors.forbidden(`This upload token is for "${token.purpose}" uploads, not "${named.purpose}".`);
        }
        return token;
      }
      if (!named.userId || !named.purpose)
        throw errors.invalidInput('Name the upload\'s "userId" and "purpose" (or send an upload token instead of the API key).');
      return { userId: named.userId, purpose: named.purpose };
    },

    /** Most bytes a JSON upload body may have; known before reading it. */
    jsonBodyCap(purpose?: string): number {
      const fileCap = Math.min(purpose ? purposes.get(purpose).maxBytes : largestPurposeBytes(), deps.maxBase64Bytes);
      return base64Length(fileCap) + JSON_OVERHEAD;
    },

    /** Most bytes a multipart upload body may have; known before reading it. */
    multipartBodyCap(purpose?: string): number {
      return (purpose ? purposes.get(purpose).maxBytes : largestPurposeBytes()) + MULTIPART_OVERHEAD;
    },

    /**
     * A file sent as base64 (or a base64 `data:` URI). Size, type claim and quota are all decided
     * from the text before it is decoded; the decoded bytes go straight to a temporary file.
     */
    async fromBase64(req: Grant & { filename?: string | undefined; data: string }): Promise<FileRow> {
      const payload = parseBase64Payload(req.data);
      const length = decodedLength(payload.base64);
      const purpose = purposes.get(req.purpose);
      admitToPurpose(purpose, { length, mimeType: payload.mimeType });
      if (length > deps.maxBase64Bytes) {
        throw errors.tooLarge(
          `Base64 uploads carry at most ${formatBytes(deps.maxBase64Bytes)}; this one is ${formatBytes(length)}. Send larger files as multipart/form-data or with tus.`,
        );
      }
      if (payload.mimeType) checkClaimedType(payload.mimeType, payload.base64);

      await uploads.ensureDiskSpace(length);
      const file = await uploads.reserve({ userId: req.userId, purpose: req.purpose, length, filename: req.filename ?? 'upload', mimeType: payload.mimeType });
      const sourcePath = tempPath(file.id);
      try {
        const bytes = Buffer.from(payload.base64, 'base64');
        if (bytes.length !== length) throw errors.invalidInput('The "data" field is not valid base64.');
        await mkdir(deps.dir, { recursive: true, mode: 0o700 });
        await writeFile(sourcePath, bytes, { flag: 'wx', mode: 0o600 });
      } catch (err) {
        await uploads.release(file.id, { sourcePath });
        throw err;
      }
      return uploads.complete({ fileId: file.id, sourcePath, carrier: 'move' });
    },

    /**
     * A JSON body with base64 `data`, decoded as it streams (json-base64.ts): memory stays at a socket
     * chunk and its decoded bytes whatever the file's size. Admission comes first: with an upload
     * token, before any byte is read (purpose, free quota, disk for the declared Content-Length);
     * the quota reservation, bounded by ¾ of the Content-Length, as soon as the fields before `data`
     * (userId, purpose, filename) are read. Completion charges the real size.
     */
    async fromJsonStream(req: {
      body: Readable;
      contentLength: number | undefined;
      token: Grant | undefined;
      /** Validates the fields before `data` (at the edge, with the route's schema). */
      parseFields: (fields: Record<string, string>) => { userId?: string | undefined; purpose?: string | undefined; filename?: string | undefined };
    }): Promise<FileRow> {
      let reserved: { fileId: string; sourcePath: string; length: number; tooLong: () => AppError; mimeType: string | null } | undefined;
      const admit = async (grant: Grant, filename: string | undefined) => {
        const purpose = purposes.get(grant.purpose);
        const cap = Math.min(purpose.maxBytes, deps.maxBase64Bytes);
        // At most ¾ of the body decodes to bytes.
        let length = Math.min(cap, req.contentLength !== undefined ? Math.floor((req.contentLength * 3) / 4) : cap);
        let tooLong = () =>
          length === deps.maxBase64Bytes && deps.maxBase64Bytes < purpose.maxBytes
            ? errors.tooLarge(`Base64 uploads carry at most ${formatBytes(deps.maxBase64Bytes)}. Send larger files as multipart/form-data or with tus.`)
            : errors.tooLarge(`Files for "${purpose.name}" may be at most ${formatBytes(purpose.maxBytes)}; this one is larger.`);
        const free = await freeBytes(grant.userId);
        if (free > 0 && free < length) {
          length = free;
          tooLong = () => errors.quotaExceeded(`Storage quota exceeded: ${formatBytes(free)} free, and this upload is larger.`);
        }
        await uploads.ensureDiskSpace(length);
        const file = await uploads.reserve({
          userId: grant.userId,
          purpose: grant.purpose,
          length: Math.max(1, length),
          filename: filename ?? 'upload',
          mimeType: null,
        });
        reserved = { fileId: file.id, sourcePath: tempPath(file.id), length, tooLong, mimeType: null };
      };

      let named: Grant | undefined;
      let filename: string | undefined;
      let head: Buffer | undefined;
      let out: ReturnType<typeof createWriteStream> | undefined;
      try {
        // With a token the decision needs no byte of the body: a user without free quota is refused
        // here (reserve() says so, with its events), and the disk must hold the body's upper bound.
        // The reservation itself waits for the fields before `data` (the filename goes in its row).
        if (req.token) {
          if ((await freeBytes(req.token.userId)) === 0) await admit(req.token, undefined);
          else await uploads.ensureDiskSpace(Math.min(purposes.get(req.token.purpose).maxBytes, deps.maxBase64Bytes, req.contentLength ?? Infinity));
        }
        const reader = new JsonBase64Reader({
          onDataStart: (fields, mimeType) => {
            const parsed = req.parseFields(fields);
            filename = parsed.filename;
            named = this.resolveGrant(req.token, parsed);
            if (mimeType) admitToPurpose(purposes.get(named.purpose), { length: 1, mimeType });
            if (reserved) reserved.mimeType = mimeType;
            else pendingMime = mimeType;
          },
        });
        let pendingMime: string | null = null;
        await mkdir(deps.dir, { recursive: true, mode: 0o700 });
        const write = async (bytes: Buffer[]) => {
          if (!named) return;
          if (!reserved) {
            await admit(named, filename);
            reserved!.mimeType = pendingMime;
          }
          out ??= createWriteStream(reserved!.sourcePath, { flags: 'wx', mode: 0o600 });
          for (const b of bytes) {
            if (reader.decoded > reserved!.length) throw reserved!.tooLong();
            if (!head || head.length < SNIFF_BYTES) head = Buffer.concat([head ?? Buffer.alloc(0), b.subarray(0, SNIFF_BYTES)]);
            if (!out.write(b)) await once(out, 'drain');
          }
        };
        for await (const chunk of req.body) await write(reader.push(chunk as Buffer));
        await write(reader.end());
        if (!reserved) await admit(named!, filename);
        if (out) {
          out.end();
          await finished(out);
        } else await writeFile(reserved!.sourcePath, Buffer.alloc(0), { flag: 'wx', mode: 0o600 });
        if (reader.decoded === 0) throw errors.unprocessable('The file is empty.');
        if (reserved!.mimeType && head) checkClaimedBytes(reserved!.mimeType, head);
      } catch (err) {
        // The stream opens its file asynchronously: closed first, or it could create the file after its removal.
        if (out && !out.closed) {
          const closed = once(out, 'close').catch(() => undefined);
          out.destroy();
          await closed;
        }
        if (reserved) await uploads.release(reserved.fileId, { sourcePath: reserved.sourcePath });
        const appError = toAppError(err);
        logger.info('json upload refused', { fileId: reserved?.fileId, code: appError.code, status: appError.status });
        throw appError;
      }
      return uploads.complete({ fileId: reserved!.fileId, sourcePath: reserved!.sourcePath });
    },

    /**
     * A multipart/form-data body with the fields before one `file` part. The file streams to a
     * temporary file through a byte counter; memory stays at a few stream buffers whatever its size.
     * Fields: `userId`, `purpose` (unless an upload token says them), optional `filename`, and
     * optional `size` (the file's exact length, which makes the reservation exact).
     */
    async fromMultipart(req: {
      headers: IncomingHttpHeaders;
      body: Readable;
      contentLength: number | undefined;
      token: Grant | undefined;
      /** Validates the form fields (at the edge, with the route's schema). */
      parseFields: (fields: Record<string, string>) => MultipartFields;
    }): Promise<FileRow> {
      const bodyCap = this.multipartBodyCap(req.token?.purpose);
      const bodyTooLarge = () =>
        errors.tooLarge(
          req.token
            ? `Files for "${req.token.purpose}" may be at most ${formatBytes(purposes.get(req.token.purpose).maxBytes)}; this request is larger.`
            : `The request body is larger than the ${formatBytes(bodyCap)} any purpose allows.`,
        );
      if (req.contentLength !== undefined && req.contentLength > bodyCap) throw bodyTooLarge();

      let parser: busboy.Busboy;
      try {
        parser = busboy({ headers: req.headers, limits: { files: 1, fields: 8, parts: 9, fieldNameSize: 32, fieldSize: 1024 } });
      } catch (err) {
        throw errors.badRequest('The multipart body has no usable boundary.', err);
      }

      const counter = byteLimit(bodyCap, bodyTooLarge);
      const fields: Record<string, string> = {};
      const abort = new AbortController();
      let reserved: { fileId: string; sourcePath: string } | undefined;
      let receiving: Promise<void> | undefined;

      const receiveFile = async (stream: Readable, info: busboy.FileInfo) => {
        const named = req.parseFields(fields);
        const grant = this.resolveGrant(req.token, named);
        const declaredSize = named.size;
        const purpose = purposes.get(grant.purpose);
        // Reserve an upper bound of the file's size before any byte is written: its declared size,
        // else the smallest of the body's length, the purpose's limit and the user's free quota (a
        // bigger file would be refused anyway). Completion charges the real size and frees the rest.
        let length = declaredSize ?? Math.min(req.contentLength ?? Infinity, purpose.maxBytes);
        let tooLong: () => AppError = () => bodyTooLarge();
        if (declaredSize !== undefined) {
          tooLong = () => errors.invalidInput(`The file is larger than its declared size (${declaredSize} bytes).`);
        } else if (length === purpose.maxBytes) {
          tooLong = () => errors.tooLarge(`Files for "${purpose.name}" may be at most ${formatBytes(purpose.maxBytes)}; this one is larger.`);
        }
        // What the quota can still take once the budget for generated bytes is set aside (services/budget.ts).
        const free = largestAffordable(purpose.kinds, await freeBytes(grant.userId));
        if (declaredSize === undefined && free > 0 && free < length) {
          length = free;
          tooLong = () => errors.quotaExceeded(`Storage quota exceeded: ${formatBytes(free)} free, and this upload is larger.`);
        }
        const mimeType = info.mimeType && info.mimeType !== 'application/octet-stream' ? info.mimeType : null;
        await uploads.ensureDiskSpace(length);
        const file = await uploads.reserve({
          userId: grant.userId,
          purpose: grant.purpose,
          length,
          filename: info.filename || named.filename || 'upload',
          mimeType,
        });
        reserved = { fileId: file.id, sourcePath: tempPath(file.id) };
        await mkdir(deps.dir, { recursive: true, mode: 0o700 });
        const limiter = byteLimit(length, tooLong);
        await pipeline(stream, limiter, createWriteStream(reserved.sourcePath, { flags: 'wx', mode: 0o600 }), { signal: abort.signal });
        if (declaredSize !== undefined && limiter.bytes() !== declaredSize) {
          throw errors.invalidInput(`The file has ${limiter.bytes()} bytes, not the ${declaredSize} its "size" field declared.`);
        }
        if (limiter.bytes() === 0) throw errors.unprocessable('The file is empty.');
      };

      try {
        await new Promise<void>((resolve, reject) => {
          let settled = false;
          const fail = (err: unknown) => {
            if (settled) return;
            settled = true;
            // Stop reading but keep the socket: the refusal must still reach the client.
            req.body.unpipe(counter);
            req.body.pause();
            abort.abort(err);
            reject(err);
          };
          parser.on('field', (name, value, info) => {
            if (info.valueTruncated || info.nameTruncated) return fail(errors.invalidInput(`The form field "${name.slice(0, 32)}" is too long.`));
            if (receiving) return fail(errors.invalidInput('Send the form fields before the file part.'));
            fields[name] = value;
          });
          parser.on('file', (name, stream, info) => {
            if (name !== 'file') {
              stream.resume();
              return fail(errors.invalidInput(`The file part must be named "file", not "${name.slice(0, 32)}".`));
            }
            receiving = receiveFile(stream, info);
            receiving.catch((err: unknown) => {
              stream.resume();
              fail(err);
            });
          });
          parser.on('filesLimit', () => fail(errors.invalidInput('Send one file per request.')));
          parser.on('partsLimit', () => fail(errors.invalidInput('The form has too many parts.')));
          parser.on('fieldsLimit', () => fail(errors.invalidInput('The form has too many fields.')));
          parser.on('error', (err) => fail(errors.badRequest('The multipart body is malformed.', err)));
          parser.on('close', () => {
            if (!receiving) return fail(errors.invalidInput('The form has no "file" part.'));
            receiving.then(() => {
              settled = true;
              resolve();
            }, fail);
          });
          counter.on('error', fail);
          finished(req.body).catch((err: unknown) => fail(errors.badRequest('The request body ended early.', err)));
          req.body.pipe(counter).pipe(parser);
        });
      } catch (err) {
        // Let the file pipeline settle first, so no write lands after its file is removed.
        await receiving?.catch(() => undefined);
        if (reserved) await uploads.release(reserved.fileId, { sourcePath: reserved.sourcePath });
        const appError = toAppError(err);
        logger.info('multipart upload refused', { fileId: reserved?.fileId, code: appError.code, status: appError.status });
        throw appError;
      }
      return uploads.complete({ fileId: reserved!.fileId, sourcePath: reserved!.sourcePath, carrier: 'move' });
    },

    /**
     * Uploads this process was still receiving when it stopped: their temporary files are removed and
     * their reservations given back. Run at start-up, before listening.
     */
    async recoverInterrupted(): Promise<number> {
      let names: string[];
      try {
        names = await readdir(deps.dir);
      } catch {
        return 0;
      }
      for (const name of names) {
        if (fileIdPattern.test(name)) await uploads.release(name, { sourcePath: tempPath(name) });
        else await rm(path.join(deps.dir, name), { recursive: true, force: true });
      }
      if (names.length) logger.info('interrupted ingest uploads released', { count: names.length });
      return names.length;
    },
  };
}

export type Ingest = ReturnType<typeof createIngest>;

/** `data` as sent: plain base64 (standard or URL-safe alphabet), or a `data:<type>;base64,` URI. */
export function parseBase64Payload(data: string): { base64: string; mimeType: string | null } {
  let base64 = data;
  let mimeType: string | null = null;
  if (data.startsWith('data:')) {
    const comma = data.indexOf(',');
    const header = comma < 0 ? '' : data.slice(5, comma);
    const params = header.split(';').map((s) => s.trim());
    if (comma < 0 || !params.slice(1).some((p) => p.toLowerCase() === 'base64')) {
      throw errors.invalidInput('A "data:" URI must be base64: data:<type>;base64,<data>.');
    }
    mimeType = params[0]?.toLowerCase() || null;
    base64 = data.slice(comma + 1);
  }
  // Line-wrapped base64 (MIME style) is common; whitespace carries no data.
  if (/\s/.test(base64)) base64 = base64.replace(/\s+/g, '');
  return { base64, mimeType };
}

/** The decoded size, from the text alone; malformed base64 is refused here. */
export function decodedLength(base64: string): number {
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(base64)) throw errors.invalidInput('The "data" field is not valid base64.');
  const padding = base64.endsWith('==') ? 2 : base64.endsWith('=') ? 1 : 0;
  const chars = base64.length - padding;
  if ((padding > 0 && base64.length % 4 !== 0) || chars % 4 === 1) throw errors.invalidInput('The "data" field is not valid base64 (wrong length).');
  return Math.floor((chars * 3) / 4);
}

/** A `data:` URI's type must agree with what its first bytes are. Unrecognisable bytes are left to completion (422). */
function checkClaimedType(claimed: string, base64: string): void {
  checkClaimedBytes(claimed, Buffer.from(base64.slice(0, base64Length(SNIFF_BYTES)), 'base64'));
}

function checkClaimedBytes(claimed: string, head: Buffer): void {
  const sniffed = sniffBytes(head);
  if (!sniffed) return;
  if (canonicalType(claimed) !== canonicalType(sniffed.mimeType)) {
    throw errors.unsupportedType(`The data: URI says ${claimed}, but the bytes are ${sniffed.mimeType}.`);
  }
}

const typeAliases: Record<string, string> = {
  'image/jpg': 'image/jpeg',
  'image/pjpeg': 'image/jpeg',
  'image/x-png': 'image/png',
  'image/heif': 'image/heic',
  'image/heic-sequence': 'image/heic',
  'image/heif-sequence': 'image/heic',
  'image/x-ms-bmp': 'image/bmp',
  'image/x-bmp': 'image/bmp',
  'audio/x-wav': 'audio/wav',
  'audio/wave': 'audio/wav',
  'audio/vnd.wave': 'audio/wav',
  'audio/mp3': 'audio/mpeg',
  'audio/x-flac': 'audio/flac',
  'audio/x-m4a': 'audio/mp4',
  'audio/m4a': 'audio/mp4',
  'audio/x-aiff': 'audio/aiff',
  'audio/opus': 'audio/ogg',
  'application/ogg': 'audio/ogg',
  'audio/aacp': 'audio/aac',
};

function canonicalType(type: string): string {
  const base = type.split(';')[0]!.trim().toLowerCase();
  return typeAliases[base] ?? base;
}
