import { randomBytes } from 'node:crypto';
import { createWriteStream, type Dirent } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { checkBuffer, integrityCheck } from './integrity.js';
import { assertKey, assertPrefix, ObjectStoreError, type ObjectInfo, type ObjectStore, type PutResult } from './objects.js';
import { isTempName } from './storage.js';

const defaultPageSize = 1000;

/**
 * The object store as a local folder: a key is a relative path under `root` (the media folder's
 * layout, see `mediaKey`). Writes go to a temporary name beside the target, are flushed to disk,
 * then renamed, so a reader sees a whole object or none. Listing walks the folders in key order.
 */
export function createLocalObjectStore(opts: { root: string }): ObjectStore {
  const root = path.resolve(opts.root);
  const pathOf = (key: string) => {
    assertKey(key);
    return path.join(root, ...key.split('/'));
  };

  async function info(key: string): Promise<ObjectInfo | undefined> {
    try {
      const s = await stat(pathOf(key));
      if (!s.isFile()) return undefined;
      return { key, size: s.size, etag: `"${s.size.toString(16)}-${Math.floor(s.mtimeMs).toString(16)}"`, lastModified: s.mtime };
    } catch (err) {
      if (isAbsent(err)) return undefined;
      throw failure(`read the metadata of ${key}`, err);
    }
  }

  return {
    async put(key, body, expected = {}) {
      const target = pathOf(key);
      // Bytes in memory are checked before anything touches the disk.
      const checked = body instanceof Uint8Array ? checkBuffer(key, body, expected) : undefined;
      const temp = `${target}.tmp-${randomBytes(4).toString('hex')}`;
      try {
        await mkdir(path.dirname(target), { recursive: true });
        let result: PutResult;
        // flush: the bytes reach the disk before the rename makes them visible.
        if (checked) {
          await writeFile(temp, body as Uint8Array, { flush: true });
          result = checked;
        } else {
          const check = integrityCheck(key, expected);
          await pipeline(body as Readable, check, createWriteStream(temp, { flush: true }));
          result = check.result();
        }
        await rename(temp, target);
        return result;
      } catch (err) {
        await unlink(temp).catch(() => undefined);
        if (err instanceof ObjectStoreError) throw err;
        throw failure(`write ${key}`, err);
      }
    },

    async get(key, opts = {}) {
      let handle;
      try {
        handle = await open(pathOf(key), 'r');
      } catch (err) {
        if (isAbsent(err) || (err as NodeJS.ErrnoException).code === 'EISDIR') return undefined;
        throw failure(`read ${key}`, err);
      }
      const { range } = opts;
      if (range) {
        const { size } = await handle.stat();
        if (!(range.start >= 0 && range.start <= range.end && range.start < size)) {
          await handle.close();
          throw new ObjectStoreError('range', `Range ${range.start}-${range.end} is outside ${key} (${size} bytes).`);
        }
      }
      return handle.createReadStream(range ? { start: range.start, end: range.end } : {});
    },

    head: info,

    async listPage(prefix, opts = {}) {
      assertPrefix(prefix);
      const pageSize = opts.pageSize ?? defaultPageSize;
      const objects: ObjectInfo[] = [];
      for await (const key of walk(root, prefix, opts.cursor)) {
        const found = await info(key);
        if (!found) continue; // removed while we walked
        objects.push(found);
        if (objects.length === pageSize) return { objects, next: key };
      }
      return { objects };
    },

    async delete(key) {
      try {
        await rm(pathOf(key), { force: true });
      } catch (err) {
        throw failure(`delete ${key}`, err);
      }
    },

    async deletePrefix(prefix) {
      if (!prefix.endsWith('/')) throw new Error(`deletePrefix takes a folder prefix ending with "/", not ${JSON.stringify(prefix)}`);
      assertPrefix(prefix);
      let count = 0;
      for await (const _ of walk(root, prefix, undefined)) count++;
      try {
        await rm(path.join(root, ...prefix.slice(0, -1).split('/')), { recursive: true, force: true });
      } catch (err) {
        throw failure(`delete ${prefix}`, err);
      }
      return count;
    },
  };
}

/**
 * Keys under `prefix` strictly after `after`, in key order (segment by segment), skipping
 * temporary names. Folders wholly before `after` are not entered, so a page costs its own size.
 */
async function* walk(root: string, prefix: string, after: string | undefined): AsyncGenerator<string> {
  const cut = prefix.lastIndexOf('/');
  const base = cut < 0 ? [] : prefix.slice(0, cut).split('/');
  const afterSegments = after?.split('/');
  const rootIsFile = () =>
    stat(root).then(
      (s) => !s.isDirectory(),
      () => false,
    );
  yield* walkFolder(base);

  async function* walkFolder(segments: string[]): AsyncGenerator<string> {
    let entries: Dirent[];
    try {
      entries = await readdir(path.join(root, ...segments), { withFileTypes: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // A folder not there (or a key where a folder would be) holds no keys, unless the root itself is not a folder.
      if ((code === 'ENOENT' || code === 'ENOTDIR') && !(await rootIsFile())) return;
      throw failure(`list ${segments.join('/') || '/'}`, err);
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      const here = [...segments, entry.name];
      const key = here.join('/');
      if (entry.isDirectory()) {
        if (!(`${key}/`.startsWith(prefix) || prefix.startsWith(`${key}/`))) continue;
        if (afterSegments && compareSegments(here, afterSegments.slice(0, here.length)) < 0) continue;
        yield* walkFolder(here);
      } else if (entry.isFile() && key.startsWith(prefix) && !isTempName(entry.name)) {
        if (afterSegments && compareSegments(here, afterSegments) <= 0) continue;
        yield key;
      }
    }
  }
}

function compareSegments(a: string[], b: string[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1;
  }
  return a.length - b.length;
}

const isAbsent = (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT';

const failure = (what: string, cause: unknown) =>
  new ObjectStoreError('failure', `Could not ${what} in the local object store: ${(cause as Error).message}`, { cause });
