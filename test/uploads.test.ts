import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { SignJWT } from 'jose';
import { Upload } from 'tus-js-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { creationBudget } from '../src/services/budget.js';
import { backends, hasFolder, readBlob, uploadAreaIds } from './helpers/backends.js';
import { corpus, storedForm, type TestChipmunk } from './helpers/chipmunk.js';
import { tusUpload, uploadFirstChunk } from './helpers/tus.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
type FileJson = {
  id: string;
  userId: string;
  purpose: string;
  bytes: number;
  totalBytes: number;
  status: string;
  variants: Array<{ n: number; bytes: number; url: string }>;
};
type UserJson = { usedBytes: number; reservedBytes: number; quotaBytes: number; fileCount: number };

describe.each(backends)('$name', (backend) => {
  let t: TestChipmunk;
  let endpoint: string;
  let photo: Buffer;

  beforeAll(async () => {
    t = await backend.start();
    endpoint = `${t.url}/uploads`;
    photo = await storedForm(corpus('images/photos/portrait-canal.jpg'));
  });
  afterAll(() => t?.close());

  const user = async (id: string) => (await (await t.api(`/v1/users/${id}`)).json()) as UserJson;
  const uploadDirEntries = () => uploadAreaIds(t);

  describe('tus uploads', () => {
    it('stores an image as variant 0 in its own folder and charges its total size', async () => {
      const token = await t.uploadToken('alice', 'image');
      const result = await tusUpload(endpoint, photo, { token, metadata: { filename: 'canal.jpg', filetype: 'image/jpeg' } });
      expect(result.ok).toBe(true);
      if (!result.ok) return;
      const file = result.body as FileJson;
      expect(file).toMatchObject({ userId: 'alice', purpose: 'image', status: 'ready', bytes: photo.length, filename: 'canal.jpg', mimeType: 'image/jpeg' });
      const stored = await readBlob(t, file.id, '0.jpg');
      expect(sha256(stored)).toBe(sha256(photo));
      const described = (await (await t.api(`/v1/files/${file.id}`)).json()) as FileJson;
      expect(described.id).toBe(file.id);
      expect(described.variants.find((v) => v.n === 0)?.bytes).toBe(photo.length);
      const alice = await user('alice');
      expect(alice.usedBytes).toBe(file.totalBytes);
      expect(alice.reservedBytes).toBe(0);
      expect(alice.fileCount).toBe(1);
      expect(await uploadDirEntries()).toEqual([]);
    });

    it('resumes after a cut connection and keeps the bytes identical', async () => {
      const token = await t.uploadToken('bob', 'image');
      // A larger photo with no metadata: stored byte for byte as sent.
      const data = await readFile(corpus('images/photos/landscape-saw-6mp.jpg'));
      // First attempt: stop after the first chunk lands, as a dropped connection would.
      const firstUrl = await uploadFirstChunk(endpoint, data, { token, chunkSize: 100_000, metadata: { filename: 'resume.jpg' } });
      const head = await fetch(firstUrl, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
      const offset = Number(head.headers.get('upload-offset'));
      expect(offset).toBeGreaterThan(0);
      expect(offset).toBeLessThan(data.length);
      const result = await tusUpload(endpoint, data, { token, uploadUrl: firstUrl, chunkSize: 100_000 });
      expect(result.ok).toBe(true);
      if (!result.ok) return;
      const file = result.body as FileJson;
      const stored = await readBlob(t, file.id, '0.jpg');
      expect(sha256(stored)).toBe(sha256(data));
    });

    it('terminating an upload gives its reservation and partial bytes back', async () => {
      const token = await t.uploadToken('carol', 'image');
      const url = await uploadFirstChunk(endpoint, photo, { token, chunkSize: 50_000 });
      expect((await user('carol')).reservedBytes).toBe(photo.length + creationBudget('image', photo.length));
      await Upload.terminate(url, { headers: { Authorization: `Bearer ${token}` } });
      await expect.poll(async () => (await user('carol')).reservedBytes).toBe(0);
      expect((await user('carol')).usedBytes).toBe(0);
      expect(await uploadDirEntries()).toEqual([]);
      const head = await fetch(url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
      expect(head.status).toBe(404);
    });

    it('refuses an upload past the quota with a sentence that reaches onError', async () => {
      await t.api('/v1/users/dave', { method: 'PUT', json: { quotaBytes: 100_000 } });
      const token = await t.uploadToken('dave', 'image');
      const result = await tusUpload(endpoint, photo, { token });
      expect(result.ok).toBe(false);
      if (result.ok) return;
      expect(result.status).toBe(413);
      expect(JSON.parse(result.body!)).toEqual({
        error: {
          code: 'QUOTA_EXCEEDED',
          message: expect.stringMatching(
            /^Storage quota exceeded: 100 KB free, this upload needs \d+(\.\d)? KB \(\d+(\.\d)? KB and up to \d+(\.\d)? KB for what is made from it\)\.$/,
          ),
        },
      });
      expect(result.error.message).toContain('QUOTA_EXCEEDED');
      expect(await user('dave')).toMatchObject({ usedBytes: 0, reservedBytes: 0 });
    });

    it('refuses bytes that are not an image, even with the default retries, and leaves nothing', async () => {
      const token = await t.uploadToken('erin', 'avatar');
      const text = Buffer.from('this is not an image at all, just some text pretending '.repeat(100));
      // Default retry delays: a 5xx or a HEAD that looked finished would turn this into a false success.
      const result = await tusUpload(endpoint, text, { token, retryDelays: [0, 10, 20], metadata: { filename: 'fake.jpg', filetype: 'image/jpeg' } });
      expect(result.ok).toBe(false);
      if (result.ok) return;
      expect(result.status).toBe(422);
      expect(JSON.parse(result.body!).error.code).toBe('UNPROCESSABLE_MEDIA');
      expect(await user('erin')).toMatchObject({ usedBytes: 0, reservedBytes: 0, fileCount: 0 });
      expect(await uploadDirEntries()).toEqual([]);
    });

    it('answers 410 with the reason to a HEAD after a refused final PATCH, so a client cannot mistake it for success', async () => {
      const token = await t.uploadToken('erin2', 'image');
      const text = Buffer.from('plain text, not an image '.repeat(50));
      const create = await fetch(endpoint, {
        method: 'POST',
        headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(text.length), Authorization: `Bearer ${token}` },
      });
      const location = create.headers.get('location')!;
      const patch = await fetch(location, {
        method: 'PATCH',
        headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' },
        body: text,
      });
      expect(patch.status).toBe(422);
      const head = await fetch(location, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
      expect(head.status).toBe(410);
      expect(head.headers.get('upload-offset')).toBeNull();
      expect(head.headers.get('chipmunk-error-code')).toBe('UNPROCESSABLE_MEDIA');
      // A replayed final PATCH hears the same verdict, as JSON.
      const replay = await fetch(location, {
        method: 'PATCH',
        headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': String(text.length), 'Content-Type': 'application/offset+octet-stream' },
      });
      expect(replay.status).toBe(410);
      expect(((await replay.json()) as { error: { code: string } }).error.code).toBe('UNPROCESSABLE_MEDIA');
    });

    it('refuses a type the purpose does not take, by declared type and by bytes', async () => {
      const token = await t.uploadToken('frank', 'avatar');
      const declared = await tusUpload(endpoint, photo, { token, metadata: { filetype: 'text/plain' } });
      expect(declared.ok === false && declared.status).toBe(415);
      const svg = await readFile(corpus('images/formats/svg-simple-check.svg'));
      const sniffed = await tusUpload(endpoint, svg, { token, metadata: { filetype: 'image/png' } });
      expect(sniffed.ok === false && sniffed.status).toBe(415);
      const audio = await readFile(corpus('audio/ok/mp3-id3v23-nocover.mp3'));
      const wrongKind = await tusUpload(endpoint, audio, { token });
      expect(wrongKind.ok === false && wrongKind.status).toBe(415);
      expect(await user('frank')).toMatchObject({ usedBytes: 0, reservedBytes: 0 });
    });

    it('refuses missing, forged and expired tokens, and purposes the token does not grant', async () => {
      expect(await tusUpload(endpoint, photo, {})).toMatchObject({ ok: false, status: 401 });
      expect(await tusUpload(endpoint, photo, { token: 'not.a.jwt' })).toMatchObject({ ok: false, status: 401 });
      const expired = await new SignJWT({ purpose: 'image' })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('gina')
        .setExpirationTime(Math.floor(Date.now() / 1000) - 10)
        .sign(new TextEncoder().encode(t.secret));
      const result = await tusUpload(endpoint, photo, { token: expired });
      expect(result).toMatchObject({ ok: false, status: 401 });
      expect(result.ok === false && JSON.parse(result.body!).error.message).toMatch(/expired/);
      const forged = await new SignJWT({ purpose: 'image' })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('gina')
        .setExpirationTime('1h')
        .sign(new TextEncoder().encode('x'.repeat(40)));
      expect(await tusUpload(endpoint, photo, { token: forged })).toMatchObject({ ok: false, status: 401 });
      const avatarToken = await t.uploadToken('gina', 'avatar');
      expect(await tusUpload(endpoint, photo, { token: avatarToken, metadata: { purpose: 'audio' } })).toMatchObject({ ok: false, status: 403 });
      expect(await user('gina')).toMatchObject({ reservedBytes: 0, usedBytes: 0 });
    });

    it('refuses deferred length and files over the purpose limit', async () => {
      const token = await t.uploadToken('hank', 'avatar');
      const deferred = await tusUpload(endpoint, photo, { token, uploadLengthDeferred: true });
      expect(deferred).toMatchObject({ ok: false, status: 400 });
      const res = await fetch(endpoint, {
        method: 'POST',
        headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(21_000_000), Authorization: `Bearer ${token}` },
      });
      expect(res.status).toBe(413);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('FILE_TOO_LARGE');
      expect(await user('hank')).toMatchObject({ reservedBytes: 0 });
    });

    it('deleting a file removes its one folder and gives the bytes back', async () => {
      const token = await t.uploadToken('ivy', 'image');
      const result = await tusUpload(endpoint, photo, { token });
      if (!result.ok) throw result.error;
      const file = result.body as FileJson;
      expect(await hasFolder(t, file.id)).toBe(true);
      expect((await user('ivy')).usedBytes).toBe(file.totalBytes);
      const del = await t.api(`/v1/files/${file.id}`, { method: 'DELETE' });
      expect(del.status).toBe(204);
      expect(await hasFolder(t, file.id)).toBe(false);
      expect(await user('ivy')).toMatchObject({ usedBytes: 0, fileCount: 0 });
      expect((await t.api(`/v1/files/${file.id}`)).status).toBe(404);
      expect((await t.api(`/v1/files/${file.id}`, { method: 'DELETE' })).status).toBe(404);
    });

    it('lets exactly k of 50 concurrent uploads through a quota that fits k, exact to the byte', async () => {
      const k = 7;
      // A tiny valid image: every upload is now decoded, so a truncated photo would be refused.
      const data = await readFile(corpus('images/color/png8-rgba-basn6a08.png'));
      // Each creation reserves the file and the budget for its variants (README, "Quota budget").
      const cost = data.length + creationBudget('image', data.length);
      await t.api('/v1/users/racer', { method: 'PUT', json: { quotaBytes: k * cost + cost - 1 } });
      const token = await t.uploadToken('racer', 'image');
      // All 50 creations race first (the reservation is the quota decision); finished uploads then
      // charge their variants too, which must not change who was admitted.
      const creations = await Promise.all(
        Array.from({ length: 50 }, () =>
          fetch(endpoint, { method: 'POST', headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(data.length), Authorization: `Bearer ${token}` } }),
        ),
      );
      const admitted = creations.filter((r) => r.status === 201);
      expect(admitted).toHaveLength(k);
      expect(creations.filter((r) => r.status !== 201).every((r) => r.status === 413)).toBe(true);
      const results = await Promise.all(
        admitted.map((r) => tusUpload(endpoint, data, { token, uploadUrl: new URL(r.headers.get('location')!, endpoint).href })),
      );
      expect(results.every((r) => r.ok)).toBe(true);
      const totals = results.map((r) => (r.ok ? (r.body as FileJson).totalBytes : 0));
      const racer = await user('racer');
      expect(racer).toMatchObject({ usedBytes: totals.reduce((a, b) => a + b, 0), reservedBytes: 0, fileCount: k });
    });

    it('expired unfinished uploads release their reservation', async () => {
      const token = await t.uploadToken('jack', 'image');
      const create = await fetch(endpoint, {
        method: 'POST',
        headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': '5000', Authorization: `Bearer ${token}` },
      });
      expect(create.status).toBe(201);
      expect((await user('jack')).reservedBytes).toBe(5000 + creationBudget('image', 5000));
      const id = create.headers.get('location')!.split('/').pop()!;
      expect((await t.chipmunk.inspect.file(id))?.status).toBe('uploading');
      // Pretend a day has passed by sweeping with a clock past the expiry.
      const { sweepExpiredUploads } = await import('../src/uploads/expiry.js');
      const swept = await sweepExpiredUploads({
        repo: t.chipmunk.repo,
        uploads: t.chipmunk.uploads,
        discardUpload: (uploadId) => t.chipmunk.area.discard(uploadId),
        logger: t.chipmunk.logger,
        now: Date.now() + 25 * 3600 * 1000,
      });
      expect(swept).toBe(1);
      expect((await user('jack')).reservedBytes).toBe(0);
      expect(await uploadDirEntries()).toEqual([]);
    });
  });

  describe('API', () => {
    it('needs the API key and answers errors in one JSON shape', async () => {
      const res = await fetch(`${t.url}/v1/users/alice`);
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual({ error: { code: 'UNAUTHORIZED', message: expect.any(String) } });
      const bad = await t.api('/v1/upload-tokens', { method: 'POST', json: { userId: 'x', purpose: 'nope' } });
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('UNKNOWN_PURPOSE');
      const notJson = await t.api('/v1/users/x', { method: 'PUT', body: '{', headers: { 'content-type': 'application/json' } });
      expect(notJson.status).toBe(400);
      expect((await t.api('/v1/files/..%2F..%2Fetc')).status).toBe(400);
    });

    it("lists a user's files newest first, page by page", async () => {
      const token = await t.uploadToken('lister', 'image');
      const ids: string[] = [];
      const small = await readFile(corpus('images/color/png8-rgba-basn6a08.png'));
      for (let i = 0; i < 3; i++) {
        const r = await tusUpload(endpoint, small, { token });
        if (!r.ok) throw r.error;
        ids.push((r.body as FileJson).id);
      }
      const first = (await (await t.api('/v1/users/lister/files?limit=2')).json()) as { files: FileJson[]; nextCursor: string };
      expect(first.files).toHaveLength(2);
      const second = (await (await t.api(`/v1/users/lister/files?limit=2&cursor=${first.nextCursor}`)).json()) as {
        files: FileJson[];
        nextCursor: string | null;
      };
      expect(second.files).toHaveLength(1);
      expect(second.nextCursor).toBeNull();
      expect([...first.files, ...second.files].map((f) => f.id).sort()).toEqual([...ids].sort());
    });
  });
});
