import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { S3Settings } from '../src/config.js';
import { newFileId } from '../src/ids.js';
import { fsckCommand } from '../src/ops/fsck-command.js';
import { openBlobStorage } from '../src/storage/open.js';
import { waitForFile } from './helpers/audio.js';
import { corpus, startChipmunk, storedForm, type TestChipmunk } from './helpers/chipmunk.js';
import { createTestBucket, testServices, s3Environment } from './helpers/services.js';
import { tusUpload } from './helpers/tus.js';

// The same uploads, deliveries, deletes and consistency checks over both homes of the media blobs:
// the local media folder (the embedded default) and an S3-compatible bucket (a real Ceph RGW, a
// fresh bucket for this file). With the bucket, unfinished tus uploads and received bytes are in it too
// (test/tus-s3.test.ts); scratch stays local in both.

type Variant = { n: number | string; bytes: number; mimeType: string; url: string };
type FileJson = { id: string; status: string; totalBytes: number; variants: Variant[] };

type Backend = { env: Record<string, string>; drop(): Promise<void> };

const backends: [string, () => Promise<Backend>][] = [
  ['local folder', async () => ({ env: {}, drop: async () => undefined })],
  [
    'S3 (Ceph RGW)',
    async () => {
      const bucket = await createTestBucket(testServices(), 'backends');
      return { env: s3Environment(bucket.s3), drop: () => bucket.drop() };
    },
  ],
];

/** Runs `chipmunk fsck` in-process on the same environment as the server; its exit code and report. */
async function runFsck(args: string[], env: Record<string, string>): Promise<{ code: number; report: string }> {
  const out: string[] = [];
  const stdout = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => (out.push(String(chunk)), true));
  const stderr = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => (out.push(String(chunk)), true));
  try {
    const code = await fsckCommand(args, env);
    return { code, report: out.join('') };
  } finally {
    stdout.mockRestore();
    stderr.mockRestore();
  }
}

async function filesUnder(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

describe.each(backends)('media blobs in the %s', (name, open) => {
  const onS3 = name.startsWith('S3');
  let backend: Backend;
  let t: TestChipmunk;
  let photo: Buffer;
  let image: FileJson;
  let track: FileJson;

  const at = (url: string) => url.replace(/^https?:\/\/[^/]+/, t.url);
  const variant = (file: FileJson, n: number | string) => file.variants.find((v) => v.n === n)!;
  const user = async (id: string) => (await (await t.api(`/v1/users/${id}`)).json()) as { usedBytes: number; reservedBytes: number; fileCount: number };
  const upload = async (userId: string, purpose: string, data: Buffer, filename: string) => {
    const result = await tusUpload(`${t.url}/uploads`, data, { token: await t.uploadToken(userId, purpose), metadata: { filename }, chunkSize: 256 * 1024 });
    if (!result.ok) throw result.error;
    return result.body as FileJson;
  };

  beforeAll(async () => {
    backend = await open();
    t = await startChipmunk(backend.env);
    photo = await storedForm(corpus('images/photos/portrait-canal.jpg'));
  });
  afterAll(async () => {
    await t?.close();
    await backend?.drop();
  });

  it('stores an image and its ladder where the configuration says, each blob the size the database records', async () => {
    image = await upload('ada', 'image', photo, 'canal.jpg');
    expect(image.status).toBe('ready');
    expect(image.variants.length).toBeGreaterThan(1);
    const names = (await t.chipmunk.storage.listNames(image.id)).sort();
    expect(names).toEqual((await t.chipmunk.inspect.variants(image.id)).map((v) => v.path).sort());
    for (const v of await t.chipmunk.inspect.variants(image.id)) expect((await t.chipmunk.storage.stat(image.id, v.path))?.size).toBe(v.bytes);
    // With a bucket, nothing of the file is kept in the local media folder (nor left in scratch).
    const local = await filesUnder(path.join(t.dataDir, 'media'));
    expect(local.some((f) => f.includes(image.id))).toBe(!onS3);
    expect(await filesUnder(path.join(t.dataDir, 'work'))).toEqual([]);
  });

  it("makes an audio track's renditions and cover from the stored original (fetched into scratch)", async () => {
    const uploaded = await upload('ada', 'audio', await readFile(corpus('audio/ok/flac-vorbis-picture.flac')), 'silence.flac');
    const done = await waitForFile(t, uploaded.id);
    expect(done.status).toBe('ready');
    expect(done.renditions?.available).toBe(true);
    expect(done.cover?.variants.length).toBeGreaterThan(0);
    track = done as unknown as FileJson;
    const names = await t.chipmunk.storage.listNames(track.id);
    expect(names).toEqual(expect.arrayContaining(['0.flac', '1.webm', '2.m4a', 'waveform.json', 'cover-0.png', 'cover-1.webp']));
    expect(names.sort()).toEqual((await t.chipmunk.inspect.variants(track.id)).map((v) => v.path).sort());
    // The job answers ready when it commits, then clears its scratch folder.
    await expect.poll(() => filesUnder(path.join(t.dataDir, 'work'))).toEqual([]);
    // The rendition is a real, playable stream of the track's length, served back byte for byte.
    const rendition = variant(track, 1);
    const res = await fetch(at(rendition.url));
    expect(res.status).toBe(200);
    expect((await res.arrayBuffer()).byteLength).toBe(rendition.bytes);
  });

  it('delivers through Chipmunk alone: whole, ranges, conditional requests and HEAD', async () => {
    const original = variant(image, 0);
    const whole = await fetch(at(original.url));
    expect(whole.status).toBe(200);
    expect(Buffer.from(await whole.arrayBuffer()).equals(photo)).toBe(true);
    const etag = whole.headers.get('etag')!;
    const lastModified = whole.headers.get('last-modified')!;
    expect(etag).toMatch(/^"[0-9a-f]+-[0-9a-f]+"$/);

    // The original is past the memory cache's size: the range is asked of the store.
    const range = await fetch(at(original.url), { headers: { range: 'bytes=1000-4999' } });
    expect(range.status).toBe(206);
    expect(range.headers.get('content-range')).toBe(`bytes 1000-4999/${photo.length}`);
    expect(Buffer.from(await range.arrayBuffer()).equals(photo.subarray(1000, 5000))).toBe(true);
    const tail = await fetch(at(original.url), { headers: { range: 'bytes=-100' } });
    expect(tail.status).toBe(206);
    expect(Buffer.from(await tail.arrayBuffer()).equals(photo.subarray(photo.length - 100))).toBe(true);
    const outside = await fetch(at(original.url), { headers: { range: `bytes=${photo.length}-` } });
    expect(outside.status).toBe(416);

    expect((await fetch(at(original.url), { headers: { 'if-none-match': etag } })).status).toBe(304);
    expect((await fetch(at(original.url), { headers: { 'if-modified-since': lastModified } })).status).toBe(304);
    const stale = await fetch(at(original.url), { headers: { 'if-range': '"0-0"', range: 'bytes=0-9' } });
    expect(stale.status).toBe(200);
    await stale.arrayBuffer();

    const head = await fetch(at(original.url), { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(photo.length));
    expect(head.headers.get('etag')).toBe(etag);
    expect((await head.arrayBuffer()).byteLength).toBe(0);

    // A small rung comes from the memory cache after its first read, ranges included.
    const rung = variant(image, 1);
    const first = Buffer.from(await (await fetch(at(rung.url))).arrayBuffer());
    expect(first.length).toBe(rung.bytes);
    const part = await fetch(at(rung.url), { headers: { range: 'bytes=0-9' } });
    expect(part.status).toBe(206);
    expect(Buffer.from(await part.arrayBuffer()).equals(first.subarray(0, 10))).toBe(true);
  });

  it('answers 404 for a blob missing from the store, as for any unknown file', async () => {
    const lost = await upload('lin', 'image', photo, 'lost.jpg');
    await t.chipmunk.storage.removeName(lost.id, (await t.chipmunk.inspect.variant(lost.id, '0'))!.path);
    const res = await fetch(at(variant(lost, 0).url));
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBeTruthy();
    expect((await t.api(`/v1/files/${lost.id}`, { method: 'DELETE' })).status).toBe(204);
  });

  it('says in /ready whether the bucket answers (no such check for the local folder: the data directory one covers it)', async () => {
    const res = await fetch(`${t.url}/ready`);
    expect(res.status).toBe(200);
    const report = (await res.json()) as { checks: Record<string, { ok: boolean }> };
    if (onS3) expect(report.checks.storage).toEqual({ ok: true });
    else expect(report.checks.storage).toBeUndefined();
  });

  it("a delete removes the file's whole prefix and gives its bytes back", async () => {
    const doomed = await upload('grace', 'image', photo, 'doomed.jpg');
    expect((await user('grace')).usedBytes).toBe(doomed.totalBytes);
    expect((await t.chipmunk.storage.listNames(doomed.id)).length).toBeGreaterThan(1);
    expect((await t.api(`/v1/files/${doomed.id}`, { method: 'DELETE' })).status).toBe(204);
    expect(await t.chipmunk.storage.listNames(doomed.id)).toEqual([]);
    const folders: string[] = [];
    for await (const id of t.chipmunk.storage.listFolders()) folders.push(id);
    expect(folders).not.toContain(doomed.id);
    expect(await user('grace')).toMatchObject({ usedBytes: 0, reservedBytes: 0, fileCount: 0 });
    expect((await fetch(at(variant(doomed, 0).url))).status).toBe(404);
  });

  it('fsck compares the database with the store: clean, then a missing object and an orphan prefix, repaired', async () => {
    const env = { CHIPMUNK_DATA_DIR: t.dataDir, ...backend.env };
    const clean = await runFsck([], env);
    expect(clean.report).toMatch(/fsck: clean/);
    expect(clean.code).toBe(0);

    const lostRung = (await t.chipmunk.inspect.variant(image.id, '2'))!.path;
    await t.chipmunk.storage.removeName(image.id, lostRung);
    const orphan = newFileId();
    await t.chipmunk.storage.write(orphan, '0.jpg', Buffer.from('never charged'));
    const found = await runFsck([], env);
    expect(found.code).toBe(1);
    expect(found.report).toContain(`PROBLEM missing-variant ${image.id}/${lostRung}`);
    expect(found.report).toContain(`PROBLEM orphan-folder ${orphan}`);

    // --repair with the server stopped: the orphan prefix goes, the lost rung needs a person.
    await t.stop();
    const repaired = await runFsck(['--repair'], env);
    expect(repaired.report).toContain(`REPAIRED removed the orphan folder ${orphan}`);
    expect(repaired.report).toMatch(/after repair:\nPROBLEM missing-variant/);
    expect(repaired.code).toBe(1);
    // The server's store closed with it: a fresh one on the same configuration looks.
    const blobs = openBlobStorage(t.chipmunk.config, path.join(t.dataDir, 'work'));
    try {
      expect(await blobs.storage.listNames(orphan)).toEqual([]);
      expect((await blobs.storage.listNames(track.id)).length).toBeGreaterThan(3);
    } finally {
      blobs.close();
    }
  });
});

describe('media blobs in a bucket that does not answer', () => {
  it("starts, and /ready says the storage is not ready with the store's reason", async () => {
    const { s3 } = testServices();
    const t = await startChipmunk(s3Environment({ ...s3, bucket: `no-such-bucket-${newFileId().slice(0, 8)}` }));
    try {
      const res = await fetch(`${t.url}/ready`);
      expect(res.status).toBe(503);
      const report = (await res.json()) as { checks: Record<string, { ok: boolean; detail?: string }> };
      expect(report.checks.storage?.ok).toBe(false);
      expect(report.checks.storage?.detail).toMatch(/NoSuchBucket/);
    } finally {
      await t.close();
    }
  });
});
