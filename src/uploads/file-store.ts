import { createWriteStream } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FileStore, type Configstore } from '@tus/file-store';
import { ERRORS, isPathInsideDirectory, type Upload } from '@tus/server';

// @tus/file-store with the write path of a raw pipe to disk (bench:upload divides by one): the
// bytes of a PATCH go to the file through one write stream with a buffer large enough that the
// socket keeps flowing while a write is on disk (several chunks then land in one writev), and an
// upload's record (its JSON: length, metadata, creation date) is read from disk once, not at every
// PATCH. The record never changes after creation (deferred length is not offered), so a copy in
// memory cannot go stale; the file's size, which is the offset, is still read from disk each time.

/** Bytes a PATCH may have in flight to the disk (the stock store's write stream holds 16 KiB). */
export const WRITE_BUFFER_BYTES = 1024 * 1024;
/** Records kept in memory; the oldest are read from disk again when needed. */
const CACHED_RECORDS = 1000;

/** The on-disk record store with the last records read or written kept in memory (write-through). */
export class CachedConfigstore implements Configstore {
  private readonly recent = new Map<string, Upload>();

  constructor(private readonly onDisk: Configstore) {}

  async get(key: string): Promise<Upload | undefined> {
    const cached = this.recent.get(key);
    if (cached) return cached;
    const value = await this.onDisk.get(key);
    if (value) this.remember(key, value);
    return value;
  }

  async set(key: string, value: Upload): Promise<void> {
    await this.onDisk.set(key, value);
    this.remember(key, value);
  }

  async delete(key: string): Promise<void> {
    this.recent.delete(key);
    await this.onDisk.delete(key);
  }

  async list(): Promise<string[]> {
    return (await this.onDisk.list?.()) ?? [];
  }

  private remember(key: string, value: Upload): void {
    this.recent.delete(key);
    this.recent.set(key, value);
    if (this.recent.size > CACHED_RECORDS) this.recent.delete(this.recent.keys().next().value!);
  }
}

export class StreamingFileStore extends FileStore {
  constructor(options: ConstructorParameters<typeof FileStore>[0]) {
    super(options);
    this.configstore = new CachedConfigstore(this.configstore);
  }

  override async write(readable: Readable, id: string, offset: number): Promise<number> {
    const file = path.join(this.directory, id);
    if (!isPathInsideDirectory(this.directory, file)) throw ERRORS.FILE_NOT_FOUND;
    const sink = createWriteStream(file, { flags: 'r+', start: offset, highWaterMark: WRITE_BUFFER_BYTES });
    try {
      await pipeline(readable, sink);
    } catch {
      // As the stock store does: a failed pipe is the store's write error (the cause is the client's cut or the disk).
      throw ERRORS.FILE_WRITE_ERROR;
    }
    return offset + sink.bytesWritten;
  }
}
