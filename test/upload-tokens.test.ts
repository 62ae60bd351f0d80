import { SignJWT } from 'jose';
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends } from './helpers/backends.js';
import { corpus, type TestChipmunk } from './helpers/chipmunk.js';
import { tusUpload } from './helpers/tus.js';

// Upload tokens have server-side bounds: their claims pass the same user-id and purpose schemas as
// the API's own fields at every edge, their lifetime is capped whoever signed them, and the backend
// can bound how many uploads one token starts.

type ErrorJson = { error: { code: string; message: string } };

describe.each(backends)('upload token bounds: $name', (backend) => {
  let t: TestChipmunk;
  let photo: Buffer;
  beforeAll(async () => {
    t = await backend.start({ CHIPMUNK_UPLOAD_TOKEN_MAX_AGE: '86400' });
    photo = await readFile(corpus('images/photos/portrait-canal.jpg'));
  });
  afterAll(() => t?.close());

  /** A token signed with the server's own secret, claims chosen by the test (as a backend signing its own would). */
  const forge = (claims: Record<string, unknown>, expiresAt: number) =>
    new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).setIssuedAt().setExpirationTime(expiresAt).sign(new TextEncoder().encode(t.secret));
  const inAnHour = () => Math.floor(Date.now() / 1000) + 3600;

  /** Both edges that take a token: tus creation and POST /v1/files (JSON and multipart). */
  async function edges(token: string): Promise<Array<{ edge: string; status: number; body: string }>> {
    const tus = await fetch(`${t.url}/uploads`, {
      method: 'POST',
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(photo.length), Authorization: `Bearer ${token}` },
    });
    const json = await fetch(`${t.url}/v1/files`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ data: photo.toString('base64') }),
    });
    const form = new FormData();
    form.append('file', new Blob([new Uint8Array(photo)]), 'x.jpg');
    const multipart = await fetch(`${t.url}/v1/files`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: form });
    return [
      { edge: 'tus', status: tus.status, body: await tus.text() },
      { edge: 'json', status: json.status, body: await json.text() },
      { edge: 'multipart', status: multipart.status, body: await multipart.text() },
    ];
  }

  it('refuses (401) a sub the user-id schema refuses, at tus and at /v1/files, leaving nothing', async () => {
    const hostile = `${'../'.repeat(1000)}\u0000x`;
    expect(hostile.length).toBeGreaterThan(3000);
    for (const sub of [hostile, 'a'.repeat(129), 'alice/../bob', '']) {
      const token = await forge({ sub, purpose: 'image' }, inAnHour());
      for (const r of await edges(token)) {
        expect({ sub: sub.slice(0, 20), edge: r.edge, status: r.status }).toEqual({ sub: sub.slice(0, 20), edge: r.edge, status: 401 });
        expect((JSON.parse(r.body) as ErrorJson).error.code).toBe('UNAUTHORIZED');
      }
    }
    // The same id is refused by the API with the same schema.
    expect((await t.api(`/v1/users/${encodeURIComponent(hostile)}`)).status).toBe(400);
    const bad = await forge({ sub: 'alice', purpose: '../x' }, inAnHour());
    for (const r of await edges(bad)) expect(r.status).toBe(401);
  });

  it('refuses a token that lives longer than CHIPMUNK_UPLOAD_TOKEN_MAX_AGE, however it was signed', async () => {
    const century = await forge({ sub: 'alice', purpose: 'image' }, Math.floor(Date.now() / 1000) + 100 * 365 * 86400);
    for (const r of await edges(century)) {
      expect(r.status).toBe(401);
      expect((JSON.parse(r.body) as ErrorJson).error.message).toMatch(/at most 86400 seconds/);
    }
    const mint = await t.api('/v1/upload-tokens', { method: 'POST', json: { userId: 'alice', purpose: 'image', expiresIn: 2 * 86400 } });
    expect(mint.status).toBe(400);
    expect(((await mint.json()) as ErrorJson).error.message).toMatch(/CHIPMUNK_UPLOAD_TOKEN_MAX_AGE/);
    expect((await t.api('/v1/upload-tokens', { method: 'POST', json: { userId: 'alice', purpose: 'image', expiresIn: 86400 } })).status).toBe(201);
  });

  it('a token minted with maxUploads starts that many uploads and no more; a refused upload spends none', async () => {
    await t.api('/v1/users/single', { method: 'PUT', json: { quotaBytes: 10 } });
    const minted = await t.api('/v1/upload-tokens', { method: 'POST', json: { userId: 'single', purpose: 'image', maxUploads: 1 } });
    expect(minted.status).toBe(201);
    const { token, maxUploads } = (await minted.json()) as { token: string; maxUploads: number };
    expect(maxUploads).toBe(1);
    // Refused for quota: the use is given back.
    const refused = await tusUpload(`${t.url}/uploads`, photo, { token });
    expect(refused.ok ? 201 : refused.status).toBe(413);
    await t.api('/v1/users/single', { method: 'PUT', json: { quotaBytes: 100_000_000 } });
    const first = await tusUpload(`${t.url}/uploads`, photo, { token });
    expect(first.ok).toBe(true);
    const second = await tusUpload(`${t.url}/uploads`, photo, { token });
    expect(second.ok ? 201 : second.status).toBe(401);
    expect((JSON.parse((second as { body: string }).body) as ErrorJson).error.message).toMatch(/used for its 1 upload/);
    for (const r of await edges(token)) expect(r.status).toBe(401);

    // Concurrent creations never exceed the bound.
    const three = (
      (await (await t.api('/v1/upload-tokens', { method: 'POST', json: { userId: 'single', purpose: 'image', maxUploads: 3 } })).json()) as { token: string }
    ).token;
    const statuses = await Promise.all(
      Array.from({ length: 8 }, () =>
        fetch(`${t.url}/uploads`, { method: 'POST', headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': '1000', Authorization: `Bearer ${three}` } }).then(
          (r) => r.status,
        ),
      ),
    );
    expect(statuses.filter((s) => s === 201).length).toBe(3);
    expect(statuses.filter((s) => s === 401).length).toBe(5);
  });
});
