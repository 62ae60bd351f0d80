import type { Readable } from 'node:stream';
import { fileIdPattern } from '../ids.js';

/**
 * Blob storage shaped as object storage can honour it: whole objects written once, streamed in
 * and out, listed by prefix in pages. Two implementations keep the same contract
 * (`test/object-store.test.ts` runs one suite over both): a local folder (`local-objects.ts`, the
 * embedded default's layout) and an S3-compatible bucket (`s3.ts`).
 *
 * Keys are `/`-separated segments of `[A-Za-z0-9._-]` (no empty, `.` or `..` segment), so a key is
 * also a safe relative path. Sharp and ffmpeg never read from here: they get a local scratch copy.
 */
export interface ObjectStore {
  /**
   * Writes the object whole: it becomes visible only complete, and only when it has `size` bytes
   * and the SHA-256 `sha256` (hex) the caller expects; otherwise nothing is left behind and the
   * promise rejects with an `ObjectStoreError` whose reason is `integrity`.
   */
  put(key: string, body: Readable | Uint8Array, opts?: PutOptions): Promise<PutResult>;
  /** The object's bytes (`range` inclusive at both ends), or undefined when the key is absent. */
  get(key: string, opts?: { range?: ByteRange }): Promise<Readable | undefined>;
  head(key: string): Promise<ObjectInfo | undefined>;
  /** One page of the keys under `prefix`, in a stable order; pass `next` back for the following page. */
  listPage(prefix: string, opts?: { pageSize?: number; cursor?: string }): Promise<{ objects: ObjectInfo[]; next?: string }>;
  /** Removes one object; removing an absent key is not an error. */
  delete(key: string): Promise<void>;
  /** Removes every object under `prefix` (which must end with `/`: one file's folder). Returns how many. */
  deletePrefix(prefix: string): Promise<number>;
}

export type ByteRange = { start: number; end: number };
export type PutOptions = { size?: number; sha256?: string; contentType?: string };
export type PutResult = { size: number; sha256: string };
export type ObjectInfo = { key: string; size: number; etag: string | undefined; lastModified: Date };

export type ObjectStoreFailure = 'integrity' | 'range' | 'failure';

/** Everything but "absent": a refused write, an unsatisfiable range, or the store failing (with its cause). */
export class ObjectStoreError extends Error {
  override name = 'ObjectStoreError';
  constructor(
    readonly reason: ObjectStoreFailure,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Every object under `prefix`, page after page. */
export async function* listAll(store: ObjectStore, prefix: string, pageSize?: number): AsyncGenerator<ObjectInfo> {
  let cursor: string | undefined;
  do {
    const page = await store.listPage(prefix, { pageSize, cursor });
    yield* page.objects;
    cursor = page.next;
  } while (cursor !== undefined);
}

const segmentPattern = /^[A-Za-z0-9._-]+$/;

/** Refuses any key that is not a safe relative path (see ObjectStore). */
export function assertKey(key: string): void {
  const segments = key.split('/');
  if (key.length > 512 || segments.some((s) => !segmentPattern.test(s) || s === '.' || s === '..')) {
    throw new Error(`Refusing unsafe object key ${JSON.stringify(key)}`);
  }
}

/** A prefix is empty (everything) or a key's leading part; a folder prefix ends with `/`. */
export function assertPrefix(prefix: string): void {
  if (prefix === '') return;
  assertKey(prefix.endsWith('/') ? `${prefix}x` : prefix);
}

/**
 * The key prefixes the upload areas keep in the media bucket (unfinished tus uploads, received
 * bytes); a media key's first segment is two characters of a file id, so they never meet.
 */
export const UPLOADS_PREFIX = 'uploads/';
export const RECEIVED_PREFIX = 'received/';
export const isUploadAreaKey = (key: string) => key.startsWith(UPLOADS_PREFIX) || key.startsWith(RECEIVED_PREFIX);

/**
 * One file is one key prefix, laid out as today's media folder (`ab/cd/<id>/<name>`), so a local
 * store rooted at the media folder sees the embedded default's files, and a delete is one prefix.
 */
export function mediaPrefix(fileId: string): string {
  if (!fileIdPattern.test(fileId)) throw new Error(`Refusing unsafe file id ${JSON.stringify(fileId)}`);
  return `${fileId.slice(0, 2)}/${fileId.slice(2, 4)}/${fileId}/`;
}

export function mediaKey(fileId: string, name: string): string {
  const key = mediaPrefix(fileId) + name;
  assertKey(key);
  return key;
}
