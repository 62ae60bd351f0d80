import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isUploadAreaKey, listAll, mediaKey, mediaPrefix, type ObjectStore } from './objects.js';
import type { BlobStorage } from './storage.js';
import { createWorkspaces } from './workspaces.js';

/**
 * The media blobs on an object store (an S3-compatible bucket): one key prefix per file, laid out
 * as the local media folder (`ab/cd/<id>/<name>`), so removing a file is one `deletePrefix`.
 * Objects are written once and whole (no temporary names: an object becomes visible complete or
 * not at all); `adopt` sends a local file with its size and SHA-256 computed beforehand, which the
 * store checks as the bytes go up. Processing scratch stays on the local disk (`workDir`).
 */
export function createObjectBlobStorage(opts: { store: ObjectStore; workDir: string }): BlobStorage {
  const { store } = opts;
  const workspaces = createWorkspaces(opts.workDir);

  return {
    ...workspaces,

    async adopt(fileId, name, sourcePath) {
      const key = mediaKey(fileId, name);
      const expected = await digestOf(sourcePath);
      await store.put(key, createReadStream(sourcePath), expected);
      // Moved, as the local store's rename does: the scratch or received copy is not kept.
      await unlink(sourcePath);
      return expected.size;
    },

    async write(fileId, name, data) {
      const { size } = await store.put(mediaKey(fileId, name), data, { size: data.byteLength });
      return size;
    },

    async fetchToWorkspace(fileId, name) {
      const key = mediaKey(fileId, name);
      const body = await store.get(key);
      if (!body) throw Object.assign(new Error(`The blob ${key} is missing from the object store.`), { code: 'ENOENT' });
      // A folder of its own, so a processor's outputs (named after variants) never meet the copy.
      const dir = path.join(await workspaces.workspace(fileId), '.fetched');
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const target = path.join(dir, name);
      await pipeline(body, createWriteStream(target, { mode: 0o600 }));
      return target;
    },

    async stat(fileId, name) {
      const info = await store.head(mediaKey(fileId, name));
      return info ? { size: info.size, mtimeMs: info.lastModified.getTime() } : undefined;
    },

    read(fileId, name, range) {
      // Callers expect a stream at once (delivery pipes it); the request to the store starts now.
      const key = mediaKey(fileId, name);
      const out = new PassThrough();
      store.get(key, { range }).then(
        (body) => {
          if (!body) {
            out.destroy(Object.assign(new Error(`The blob ${key} is missing from the object store.`), { code: 'ENOENT' }));
            return;
          }
          out.on('close', () => body.destroy());
          body.on('error', (err) => out.destroy(err));
          body.pipe(out);
        },
        (err: unknown) => out.destroy(err as Error),
      );
      return out;
    },

    async removeName(fileId, name) {
      await store.delete(mediaKey(fileId, name));
    },

    async removeFolder(fileId) {
      await store.deletePrefix(mediaPrefix(fileId));
    },

    async *listFolders() {
      // Keys come in order, so a file's objects are adjacent: each id is yielded once.
      let last: string | undefined;
      for await (const object of listAll(store, '')) {
        if (isUploadAreaKey(object.key)) continue; // the upload areas' own keys, not media
        const id = folderOf(object.key);
        if (id !== last) yield id;
        last = id;
      }
    },

    async listNames(fileId) {
      const prefix = mediaPrefix(fileId);
      const names: string[] = [];
      for await (const object of listAll(store, prefix)) names.push(object.key.slice(prefix.length));
      return names;
    },

    relativePath: mediaKey,
  };
}

/**
 * The file id a key belongs to (`ab/cd/<id>/<name>`); a key outside that layout is answered whole,
 * which is no file id, so consistency checks report it as a stray entry.
 */
function folderOf(key: string): string {
  const segments = key.split('/');
  const id = segments[2];
  if (segments.length === 4 && id && id.startsWith(`${segments[0]}${segments[1]}`)) return id;
  return key;
}

async function digestOf(file: string): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(file)) {
    size += (chunk as Buffer).byteLength;
    hash.update(chunk as Buffer);
  }
  return { size, sha256: hash.digest('hex') };
}
