import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newFileId } from '../src/ids.js';
import { createLocalStorage } from '../src/storage/local.js';
import { createObjectBlobStorage } from '../src/storage/object-blobs.js';
import { mediaKey } from '../src/storage/objects.js';
import { createS3Client, createS3ObjectStore } from '../src/storage/s3.js';
import type { BlobStorage } from '../src/storage/storage.js';
import { createTestBucket, testServices } from './helpers/services.js';

// One BlobStorage contract, two implementations: the local media folder (the embedded default) and
// the object store over a real Ceph RGW bucket of this file's own. Workspaces are local in both.

type Backend = { storage: BlobStorage; workDir: string; close(): Promise<void> };

const backends: [string, () => Promise<Backend>][] = [
  [
    'local folder',
    async () => {
      const dir = await mkdtemp(path.join(tmpdir(), 'chipmunk-blobs-'));
      const workDir = path.join(dir, 'work');
      return { storage: createLocalStorage({ mediaDir: path.join(dir, 'media'), workDir }), workDir, close: () => rm(dir, { recursive: true, force: true }) };
    },
  ],
  [
    'Ceph RGW (S3)',
    async () => {
      const dir = await mkdtemp(path.join(tmpdir(), 'chipmunk-blobs-'));
      const bucket = await createTestBucket(testServices(), 'blobs');
      const client = createS3Client(bucket.s3);
      const workDir = path.join(dir, 'work');
      return {
        storage: createObjectBlobStorage({ store: createS3ObjectStore({ client, bucket: bucket.s3.bucket }), workDir }),
        workDir,
        async close() {
          client.destroy();
          await bucket.drop();
          await rm(dir, { recursive: true, force: true });
        },
      };
    },
  ],
];

const folders = async (storage: BlobStorage) => {
  const ids: string[] = [];
  for await (const id of storage.listFolders()) ids.push(id);
  return ids;
};

describe.each(backends)('BlobStorage over %s', (_name, open) => {
  let b: Backend;
  let scratch: string;
  beforeAll(async () => {
    b = await open();
    scratch = await mkdtemp(path.join(tmpdir(), 'chipmunk-blobs-src-'));
  });
  afterAll(async () => {
    await b?.close();
    await rm(scratch, { recursive: true, force: true });
  });

  const sourceFile = async (bytes: Buffer) => {
    const file = path.join(scratch, randomBytes(4).toString('hex'));
    await writeFile(file, bytes);
    return file;
  };

  it('adopts a local file whole: its size is returned, the source is moved away, stat and read agree', async () => {
    const id = newFileId();
    const bytes = randomBytes(300_000);
    const source = await sourceFile(bytes);
    expect(await b.storage.adopt(id, '0.jpg', source)).toBe(bytes.length);
    expect(existsSync(source)).toBe(false);
    const s = await b.storage.stat(id, '0.jpg');
    expect(s?.size).toBe(bytes.length);
    expect(s!.mtimeMs).toBeGreaterThan(Date.parse('2020-01-01')); // a real clock time (S3's Last-Modified), not 0
    expect((await buffer(b.storage.read(id, '0.jpg'))).equals(bytes)).toBe(true);
    expect(await b.storage.listNames(id)).toEqual(['0.jpg']);
  });

  it('reads inclusive ranges', async () => {
    const id = newFileId();
    const bytes = randomBytes(10_000);
    await b.storage.write(id, '1.webp', bytes);
    expect((await buffer(b.storage.read(id, '1.webp', { start: 100, end: 199 }))).equals(bytes.subarray(100, 200))).toBe(true);
    expect((await buffer(b.storage.read(id, '1.webp', { start: 9_999, end: 9_999 }))).equals(bytes.subarray(9_999))).toBe(true);
  });

  it('answers absent: stat undefined, a read stream failing with ENOENT, no names', async () => {
    const id = newFileId();
    expect(await b.storage.stat(id, '0.jpg')).toBeUndefined();
    expect(await b.storage.listNames(id)).toEqual([]);
    await expect(buffer(b.storage.read(id, '0.jpg'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('removes one name, then the whole folder, each safe to repeat', async () => {
    const id = newFileId();
    for (const name of ['0.png', '1.webp', '2.webp']) await b.storage.write(id, name, Buffer.from(name));
    expect((await b.storage.listNames(id)).sort()).toEqual(['0.png', '1.webp', '2.webp']);
    await b.storage.removeName(id, '2.webp');
    await b.storage.removeName(id, '2.webp');
    expect((await b.storage.listNames(id)).sort()).toEqual(['0.png', '1.webp']);
    await b.storage.removeFolder(id);
    await b.storage.removeFolder(id);
    expect(await b.storage.listNames(id)).toEqual([]);
    expect(await folders(b.storage)).not.toContain(id);
  });

  it('lists every folder once, however many blobs it holds', async () => {
    const ids = [newFileId(), newFileId(), newFileId()];
    for (const id of ids) for (const name of ['0.jpg', '1.webp', '2.webp', '3.webp']) await b.storage.write(id, name, Buffer.from('x'));
    const listed = await folders(b.storage);
    for (const id of ids) expect(listed.filter((f) => f === id)).toHaveLength(1);
  });

  it('names a blob by the same key in both stores (the media folder layout)', () => {
    const id = newFileId();
    expect(b.storage.relativePath(id, '3.webp')).toBe(mediaKey(id, '3.webp'));
    expect(b.storage.relativePath(id, '3.webp')).toBe(`${id.slice(0, 2)}/${id.slice(2, 4)}/${id}/3.webp`);
  });

  it('fetches a blob to a local file that sharp and ffmpeg can read, gone with the workspace when it was a copy', async () => {
    const id = newFileId();
    const bytes = randomBytes(50_000);
    await b.storage.write(id, '0.flac', bytes);
    const workDir = await b.storage.workspace(id);
    const local = await b.storage.fetchToWorkspace(id, '0.flac');
    expect((await readFile(local)).equals(bytes)).toBe(true);
    expect(await b.storage.listWorkspaces()).toEqual([id]);
    await b.storage.discardWorkspace(id);
    expect(existsSync(workDir)).toBe(false);
    // A copy lived in the workspace and went with it; the local folder answered its own blob, which stays.
    expect(existsSync(local)).toBe(!local.startsWith(b.workDir));
    expect((await buffer(b.storage.read(id, '0.flac'))).equals(bytes)).toBe(true);
  });

  it('refuses to fetch a blob that is not there', async () => {
    const id = newFileId();
    await b.storage.workspace(id);
    const fetched = b.storage.fetchToWorkspace(id, '0.flac').then(async (p) => {
      // The local folder answers a path without reading it; reading it fails the same way.
      await readFile(p);
    });
    await expect(fetched).rejects.toMatchObject({ code: 'ENOENT' });
    await b.storage.discardWorkspace(id);
  });

  it('keeps workspaces on the local disk and removes them all at once', async () => {
    const ids = [newFileId(), newFileId()];
    for (const id of ids) expect((await b.storage.workspace(id)).startsWith(b.workDir)).toBe(true);
    expect((await b.storage.listWorkspaces()).sort()).toEqual([...ids].sort());
    expect(await b.storage.discardAllWorkspaces()).toBe(2);
    expect(await b.storage.listWorkspaces()).toEqual([]);
  });

  it('refuses unsafe ids and names before touching the store', async () => {
    await expect(b.storage.write('../etc', '0.jpg', Buffer.from('x'))).rejects.toThrow(/unsafe/);
    await expect(b.storage.write(newFileId(), '../0.jpg', Buffer.from('x'))).rejects.toThrow(/unsafe/);
  });
});
