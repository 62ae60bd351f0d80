import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { S3Store, type MetadataValue } from '@tus/s3-store';
import { ERRORS, TUS_RESUMABLE, Upload, type KvStore } from '@tus/server';
import { LRUCache } from 'lru-cache';
import type { S3Settings } from '../config.js';
import { errors } from '../errors.js';
import { routeKeys, s3ClientConfig } from '../storage/s3.js';
import type { UploadArea } from './area.js';
import type { UploadOffsets } from './tus.js';
import { declaredChunkLength, expectedChunkChecksum, TUS_EXTENSIONS } from './tus-protocol.js';

// tus uploads on the S3 bucket through @tus/s3-store, so any node can resume them: every PATCH
// lands as parts of one S3 multipart upload on `<dataPrefix><id>` (the received area's key, so the
// completed upload is already where processing reads it: no copy, no size cap but S3's own), tus's
// record is `<prefix><id>.info`, a tail shorter than S3's minimum part `<prefix><id>.part` until the
// next PATCH takes it along. Around the stock store: the keys under those prefixes, the client
// settings of the media bucket (endpoint, path style, the checksum mode Ceph RGW needs), the
// protocol's extensions and Upload-Checksum (tus-protocol.ts), and removal through the upload area
// (which also drops the tail and every multipart upload of the key). Expiry is Chipmunk's own sweep
// (uploads/expiry.ts).

/** Part size of the multipart upload; a PATCH body is cut into parts of this size (S3's minimum is 5 MiB). */
export const S3_PART_BYTES = 8 * 1024 * 1024;
/** The largest PATCH body sent to the bucket as one part (lost whole if the client is cut mid-body). */
const MAX_DIRECT_PART_BYTES = 4 * S3_PART_BYTES;
/** Upload records kept in memory per node; a record never changes after creation (no deferred length). */
const CACHED_RECORDS = 1000;
/** Parts remembered across uploads (about 100 bytes each): a 10,000-part upload takes a tenth. */
const REMEMBERED_PARTS = 100_000;

export type S3DatastoreOptions = {
  s3: S3Settings;
  /** tus's record and tail. */
  prefix: string;
  /** The multipart upload and, once complete, the whole upload (the received area's prefix). */
  dataPrefix: string;
  area: UploadArea;
  expiryMs: number;
  onBytes: (bytes: number, id: string) => void;
  offsets: UploadOffsets;
};

/** A bounded record cache (the stock one is a Map that only a completion or a tus DELETE empties). */
function boundedCache(): KvStore<MetadataValue> {
  const cache = new LRUCache<string, MetadataValue>({ max: CACHED_RECORDS });
  return {
    get: async (key) => cache.get(key),
    set: async (key, value) => void cache.set(key, value),
    delete: async (key) => void cache.delete(key),
    list: async () => [...cache.keys()],
  };
}

/** A part of the multipart upload, as ListParts describes it (only storage/ imports the SDK). */
type Part = { PartNumber?: number; ETag?: string; Size?: number };
/** Where an upload's bytes stand in the bucket on a part boundary (no tail pending): its parts so far. */
type PartBoundary = { offset: number; parts: Part[] };
type Reading = { parts?: Part[]; incompleteRead: boolean; incompleteSize?: number };

export class ChipmunkS3Store extends S3Store {
  /**
   * A PATCH reads its upload and then writes under the same lock, so the write need not ask the bucket
   * again: the handler's reading is kept here for the write that follows. Bounded and short-lived: a
   * HEAD leaves a reading no write consumes.
   */
  private readonly boundaries = new LRUCache<string, PartBoundary>({ max: CACHED_RECORDS, ttl: 60_000 });
  private readonly readings = new Map<string, Reading>();
  /**
   * Where this node's own last write left each upload, trusted instead of a ListParts and a HEAD of the
   * tail while the database still records that offset. Every write first sets the record to null
   * (under the lock that spans nodes), so a write by any other node, or one that ended unrecorded,
   * makes the memory disagree, and the bucket is read again.
   */
  private readonly remembered = new LRUCache<string, PartBoundary>({ maxSize: REMEMBERED_PARTS, sizeCalculation: (b) => b.parts.length + 1 });

  constructor(private readonly opts: S3DatastoreOptions) {
    super({
      partSize: S3_PART_BYTES,
      // Object tags are not needed (the sweep is ours) and not every S3-compatible server has them.
      useTags: false,
      cache: boundedCache(),
      expirationPeriodInMilliseconds: opts.expiryMs,
      s3ClientConfig: { bucket: opts.s3.bucket, ...s3ClientConfig(opts.s3) },
    });
    this.extensions = [...TUS_EXTENSIONS];
    routeKeys(this.client, (key) => (/\.(info|part)$/.test(key) ? opts.prefix : opts.dataPrefix) + key);
  }

  /**
   * With Upload-Checksum the chunk is first spooled to local scratch and checked: only matching bytes
   * go to the bucket (a part once uploaded cannot be taken back), so a mismatch leaves the upload as it was.
   */
  override async getUpload(id: string) {
    const known = await this.trustedMemory(id);
    if (known) {
      const metadata = await this.getMetadata(id);
      this.boundaries.set(id, known);
      return new Upload({ ...metadata.file, offset: known.offset });
    }
    const reading: Reading = { incompleteRead: false };
    this.readings.set(id, reading);
    try {
      const upload = await super.getUpload(id);
      // Only a reading that ends on a part boundary (no tail pending) serves the direct write.
      if (reading.parts && reading.incompleteRead && reading.incompleteSize === undefined && upload.offset !== undefined) {
        this.boundaries.set(id, { offset: upload.offset, parts: reading.parts });
      } else this.boundaries.delete(id);
      return upload;
    } finally {
      if (this.readings.get(id) === reading) this.readings.delete(id);
    }
  }

  /** This node's memory of the upload, when the database still records the offset it left. */
  private async trustedMemory(id: string): Promise<PartBoundary | undefined> {
    const known = this.remembered.get(id);
    if (!known) return undefined;
    const recorded = await this.opts.offsets.read(id).catch(() => null);
    if (recorded === known.offset) return known;
    this.remembered.delete(id);
    return undefined;
  }

  /** Records where a write left the upload, then remembers it; unrecorded, the next request reads the bucket. */
  private async remember(id: string, boundary: PartBoundary): Promise<void> {
    try {
      await this.opts.offsets.record(id, boundary.offset);
      this.remembered.set(id, boundary);
    } catch {
      this.remembered.delete(id);
    }
  }

  /** A new upload is at offset 0 with no part: its creation's own reads and its first PATCH need not ask the bucket. */
  override async create(upload: Upload): Promise<Upload> {
    const created = await super.create(upload);
    const start = { offset: 0, parts: [] };
    this.boundaries.set(created.id, start);
    await this.remember(created.id, start);
    return created;
  }

  /** The record just written is the record: kept in the cache, so reading it back needs no GET. */
  protected override async saveMetadata(upload: Upload, uploadId: string): Promise<void> {
    await super.saveMetadata(upload, uploadId);
    const file = new Upload({
      id: upload.id,
      size: upload.size,
      offset: 0,
      metadata: upload.metadata,
      creation_date: upload.creation_date,
      storage: upload.storage,
    });
    await this.cache.set(upload.id, { 'tus-version': TUS_RESUMABLE, 'upload-id': uploadId, file });
  }

  override async retrieveParts(id: string, partNumberMarker?: string) {
    const parts = await super.retrieveParts(id, partNumberMarker);
    const reading = this.readings.get(id);
    if (reading && !partNumberMarker) reading.parts = parts;
    return parts;
  }

  override async getIncompletePartSize(id: string) {
    const size = await super.getIncompletePartSize(id);
    const reading = this.readings.get(id);
    if (reading) {
      reading.incompleteRead = true;
      reading.incompleteSize = size;
    }
    return size;
  }

  override async write(readable: Readable, id: string, offset: number): Promise<number> {
    // Taken whatever path the write takes: after it the bucket has moved on.
    const boundary = this.boundaries.get(id);
    this.boundaries.delete(id);
    this.remembered.delete(id);
    // Before any byte reaches the bucket: no node's memory of this upload holds until this write records where it ended.
    await this.opts.offsets.record(id, null);
    const expected = expectedChunkChecksum();
    let spooled: string | undefined;
    try {
      let source = readable;
      if (expected) {
        spooled = path.join(os.tmpdir(), `chipmunk-chunk-${randomBytes(8).toString('hex')}`);
        const hash = createHash(expected.algorithm);
        readable.on('data', (chunk: Buffer) => hash.update(chunk));
        try {
          await pipeline(readable, createWriteStream(spooled, { mode: 0o600 }));
        } catch {
          // A cut mid-chunk: nothing of it is applied (as the local store's roll-back).
          throw ERRORS.FILE_WRITE_ERROR;
        }
        if (hash.digest('base64') !== expected.digest) {
          if (expected.onCreation) return offset;
          throw errors.checksumMismatch(expected.algorithm);
        }
        source = createReadStream(spooled);
      }
      const end = (!expected && (await this.writeWholePart(source, id, offset, boundary))) || (await super.write(source, id, offset));
      this.opts.onBytes(end - offset, id);
      return end;
    } finally {
      if (spooled) await rm(spooled, { force: true });
    }
  }

  /**
   * The common case without a local pass: a PATCH whose declared body is one to four parts (or the
   * upload's last bytes, a part or more), starting on a part boundary (no tail pending), streams straight into one
   * UploadPart of that length, as a client's own multipart upload would (the stock store first
   * spools every part to a temporary file). A body that ends short fails the part, so nothing of it
   * is applied and the client resumes from the offset it had. Undefined: not this case (the stock
   * path takes it).
   */
  private async writeWholePart(readable: Readable, id: string, offset: number, boundary: PartBoundary | undefined): Promise<number | undefined> {
    const length = declaredChunkLength();
    if (!length) return undefined;
    const metadata = await this.getMetadata(id);
    const size = metadata.file.size;
    if (size === undefined || offset + length > size) return undefined;
    const final = offset + length === size;
    // Parts no smaller than the stock store would cut keep every upload within S3's 10,000 parts.
    if (!final && length < this.calcOptimalPartSize(size)) return undefined;
    // What a cut would throw away stays small: a short last chunk, or a chunk larger than a few parts
    // (one PATCH of a whole 500 MB file from a phone), takes the stock path, which keeps what arrived
    // part by part, its tail included (tus: the server SHOULD keep the bytes of a cut PATCH).
    if ((final && length < S3_PART_BYTES) || length > MAX_DIRECT_PART_BYTES) return undefined;
    let parts: Part[];
    if (boundary?.offset === offset) parts = boundary.parts;
    else {
      if ((await this.getIncompletePartSize(id)) !== undefined) return undefined;
      parts = await this.retrieveParts(id);
    }
    const partNumber = (parts.at(-1)?.PartNumber ?? 0) + 1;
    const body = exactly(length);
    // A body that ends short must end the part's request too (it would wait for the missing bytes).
    const abort = new AbortController();
    body.on('error', () => abort.abort());
    readable.once('error', (err) => body.destroy(err));
    let etag: string | undefined;
    try {
      ({ ETag: etag } = await this.client.uploadPart(
        {
          Bucket: this.bucket,
          Key: id,
          UploadId: metadata['upload-id'],
          PartNumber: partNumber,
          ContentLength: length,
          Body: readable.pipe(body),
        },
        { abortSignal: abort.signal },
      ));
    } catch {
      // A cut mid-body (or the store failing): the part did not land.
      throw ERRORS.FILE_WRITE_ERROR;
    }
    // The parts so far are known (read under this lock, or remembered and still recorded): the
    // completion needs no ListParts. Without an ETag (a server that gives none) the bucket is asked.
    const done = etag ? [...parts, { ETag: etag, PartNumber: partNumber, Size: length }] : undefined;
    if (final) {
      await this.finishMultipartUpload(metadata, done ?? (await this.retrieveParts(id)));
      await this.clearCache(id);
    } else if (done) await this.remember(id, { offset: offset + length, parts: done });
    return offset + length;
  }

  /** A tus DELETE: everything of the upload goes, its unfinished multipart upload and tail included. */
  override async remove(id: string): Promise<void> {
    this.boundaries.delete(id);
    this.remembered.delete(id);
    await this.opts.area.discard(id);
    await this.clearCache(id);
  }

  /** Chipmunk's own sweep expires uploads (with their reservations); the store's would list the whole bucket. */
  override async deleteExpired(): Promise<number> {
    return 0;
  }

  /** Releases the client's sockets. */
  close(): void {
    this.client.destroy();
  }
}

/** Passes exactly `length` bytes, failing (so the request it feeds is aborted) when the source ends short or runs long. */
function exactly(length: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      callback(seen > length ? new Error(`The body is longer than its declared ${length} bytes.`) : null, chunk);
    },
    flush(callback) {
      callback(seen === length ? null : new Error(`The body ended after ${seen} of its declared ${length} bytes.`));
    },
  });
}
