import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { ChipmunkError, createChipmunk, type ChipmunkClient, type ChipmunkFile } from 'chipmunk/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { corpus, storedForm, type TestChipmunk } from './helpers/chipmunk.js';
import { tusUpload } from './helpers/tus.js';
import { backends } from './helpers/backends.js';

describe.each(backends)('$name', (backend) => {
  let t: TestChipmunk;
  let kit: ChipmunkClient;
  let photo: Buffer;

  beforeAll(async () => {
    t = await backend.start();
    kit = createChipmunk({ baseUrl: `${t.url}/`, apiKey: t.apiKey, secret: t.secret });
    photo = await storedForm(corpus('images/photos/portrait-canal.jpg'));
  });
  afterAll(() => t?.close());

  const refusal = (p: Promise<unknown>) =>
    p.then(
      () => undefined,
      (e: unknown) => e,
    );

  describe('the client kit', () => {
    it('mints upload tokens remotely and locally, both accepted by tus', async () => {
      const remote = await kit.createUploadToken({ userId: 'tok', purpose: 'image', expiresIn: 300 });
      const local = await kit.signUploadToken({ userId: 'tok', purpose: 'image', expiresIn: 300 });
      for (const { token, expiresAt } of [remote, local]) {
        expect(Date.parse(expiresAt)).toBeGreaterThan(Date.now() + 200_000);
        const result = await tusUpload(`${t.url}/uploads`, photo, { token });
        expect(result.ok && (result.body as ChipmunkFile).userId).toBe('tok');
      }
      expect(await kit.getUser('tok')).toMatchObject({ fileCount: 2, reservedBytes: 0 });
    });

    it('gets, lists page by page and deletes files; reads and sets quotas', async () => {
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) ids.push((await kit.uploadBuffer({ userId: 'lister', purpose: 'image', filename: `p${i}.jpg`, data: photo })).id);
      const page = await kit.listFiles('lister', { limit: 2 });
      expect(page.files).toHaveLength(2);
      expect(page.nextCursor).not.toBeNull();
      const all: string[] = [];
      for await (const f of kit.allFiles('lister', 2)) all.push(f.id);
      expect(all.sort()).toEqual([...ids].sort());
      expect((await kit.getFile(ids[0]!)).filename).toBe('p0.jpg');
      await kit.deleteFile(ids[0]!);
      expect(await refusal(kit.getFile(ids[0]!))).toMatchObject({ code: 'NOT_FOUND', status: 404 });
      const usage = await kit.getUsage('lister');
      expect(usage).toMatchObject({ id: 'lister', fileCount: 2, reservedBytes: 0 });
      expect(await kit.setQuota('lister', 123_456_789)).toMatchObject({ quotaBytes: 123_456_789, usedBytes: usage.usedBytes });
    });

    it("reports failures as ChipmunkError with the server's code, status and message", async () => {
      const missing = await refusal(kit.getFile('0'.repeat(24)));
      expect(missing).toBeInstanceOf(ChipmunkError);
      expect(missing).toMatchObject({ code: 'NOT_FOUND', status: 404, message: 'File not found.' });
      expect(await refusal(kit.getFile('../../etc'))).toMatchObject({ code: 'INVALID_INPUT', status: 400 });
      const wrongKey = createChipmunk({ baseUrl: t.url, apiKey: 'ck_wrong_wrong_wrong' });
      expect(await refusal(wrongKey.getUser('x'))).toMatchObject({ code: 'UNAUTHORIZED', status: 401 });
      expect(await refusal(kit.createUploadToken({ userId: 'x', purpose: 'nope' }))).toMatchObject({ code: 'UNKNOWN_PURPOSE', status: 400 });
      const nowhere = createChipmunk({ baseUrl: 'http://127.0.0.1:1', apiKey: 'k' });
      expect(await refusal(nowhere.getUser('x'))).toMatchObject({ code: 'NETWORK_ERROR', status: 0 });
      expect(await refusal(wrongKey.signUploadToken({ userId: 'x', purpose: 'image' }))).toMatchObject({ code: 'SECRET_REQUIRED' });
    });

    it('signs delivery URLs locally with the documented scheme', () => {
      const token = 'a'.repeat(32);
      const expiresAt = new Date('2031-01-01T00:00:00Z');
      const exp = expiresAt.getTime() / 1000;
      const sig = createHmac('sha256', t.secret).update(`/f/${token}/3?exp=${exp}`).digest('base64url');
      expect(sig).not.toMatch(/=/);
      expect(kit.signUrl(`${t.url}/f/${token}/3`, { expiresAt })).toBe(`${t.url}/f/${token}/3?exp=${exp}&sig=${sig}`);
      expect(kit.signUrl(`/f/${token}/3`, { expiresAt })).toBe(`/f/${token}/3?exp=${exp}&sig=${sig}`);
      // Re-signing an already signed URL replaces its expiry and signature.
      expect(kit.signUrl(`${t.url}/f/${token}/3?exp=1&sig=old`, { expiresAt })).toBe(`${t.url}/f/${token}/3?exp=${exp}&sig=${sig}`);
      const soon = new URL(kit.signUrl(`/f/${token}/0`, { expiresIn: 60 }), t.url);
      expect(Number(soon.searchParams.get('exp'))).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000) + 59);
      expect(() => kit.signUrl('https://example.com/not/delivery')).toThrow(ChipmunkError);
      expect(() => createChipmunk({ baseUrl: t.url, apiKey: 'k' }).signUrl(`/f/${token}/0`)).toThrow(/secret/);
    });

    it('changes visibility', async () => {
      const file = await kit.uploadBuffer({ userId: 'vis', purpose: 'image', data: photo });
      expect(file.visibility).toBe('private');
      expect(await kit.setVisibility(file.id, 'public')).toMatchObject({ id: file.id, visibility: 'public' });
      expect((await kit.getFile(file.id)).visibility).toBe('public');
      expect(await refusal(kit.setVisibility(file.id, 'secret' as 'public'))).toMatchObject({ status: 400 });
    });

    it('rotates the delivery token: old URLs stop working', async () => {
      const file = await kit.uploadBuffer({ userId: 'rot', purpose: 'image', data: photo });
      const before = kit.signUrl(file.variants[0]!.url);
      const rotated = await kit.rotateToken(file.id);
      expect(rotated.variants[0]!.url).not.toBe(file.variants[0]!.url);
      const after = kit.signUrl(rotated.variants[0]!.url);
      expect((await fetch(before)).status).toBe(404);
      const res = await fetch(after);
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(photo)).toBe(true);
    });

    it('signs links remotely and locally; both open a private file', async () => {
      const file = await kit.uploadBuffer({ userId: 'links', purpose: 'image', data: photo });
      expect(file.visibility).toBe('private');
      const remote = await kit.signedUrl(file.id, { variant: 0, expiresIn: 600 });
      expect(Date.parse(remote.expiresAt)).toBeGreaterThan(Date.now() + 500_000);
      const local = kit.signUrl(file.variants[0]!.url, { expiresIn: 600 });
      for (const url of [remote.url, local]) {
        const res = await fetch(url);
        expect(res.status, url).toBe(200);
        expect(Buffer.from(await res.arrayBuffer()).equals(photo)).toBe(true);
      }
      const tampered = local.replace(/exp=(\d+)/, (_m, e: string) => `exp=${Number(e) + 1}`);
      expect((await fetch(tampered)).status).toBe(403);
      expect(await refusal(kit.signedUrl(file.id, { variant: 'nope' }))).toMatchObject({ status: 404 });
    });
  });
});
