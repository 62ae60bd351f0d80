import { createHash, createHmac } from 'node:crypto';
import { request } from 'node:http';
import { readFile, rm, symlink } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mediaPath } from '../src/storage/local.js';
import { backends, readBlob } from './helpers/backends.js';
import { corpus, storedForm, type TestChipmunk } from './helpers/chipmunk.js';
import { startNginx, type TestNginx } from './helpers/nginx.js';
import { tusUpload } from './helpers/tus.js';

// One access-control suite, run against Chipmunk alone and against real nginx in front of it
// (auth_request to Chipmunk's internal port, bytes from the media folder).

type Variant = { n: number | string; bytes: number; mimeType: string; url: string };
type FileJson = { id: string; visibility: string; variants: Variant[] };

const sha256 = (b: Buffer | Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A GET/HEAD with the path sent byte for byte (fetch would normalise dot segments and escapes). */
function raw(base: string, rawPath: string, method = 'GET'): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, path: rawPath, method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Refusals through nginx may lag by the auth cache lifetime (≤ 5 s); Chipmunk alone refuses at once. */
async function eventuallyStatus(url: string, expected: number): Promise<number> {
  let status = 0;
  for (let i = 0; i < 150; i++) {
    status = (await fetch(url)).status;
    if (status === expected) return status;
    await new Promise((r) => setTimeout(r, 100));
  }
  return status;
}

const modes = [
  ['Chipmunk alone', false],
  ['nginx in front', true],
] as const;
const combinations = backends.flatMap((backend) => modes.map(([mode, viaNginx]) => ({ name: backend.name, mode, viaNginx, backend })));

describe.each(combinations)('delivery access control: $name, $mode', ({ viaNginx, backend }) => {
  let t: TestChipmunk;
  let nginx: TestNginx | undefined;
  let base: string;
  let photo: Buffer;
  let song: Buffer;
  let extra: Buffer;

  const upload = async (userId: string, purpose: string, data: Buffer, filename: string): Promise<FileJson> => {
    const result = await tusUpload(`${t.url}/uploads`, data, { token: await t.uploadToken(userId, purpose), metadata: { filename } });
    if (!result.ok) throw result.error;
    return result.body as FileJson;
  };
  /** A second variant, so signatures can be tried across variants (the image ladder adds its own). */
  const withSecondVariant = async (file: FileJson): Promise<FileJson> => {
    if (!(await t.chipmunk.inspect.variant(file.id, '1'))) {
      const bytes = await t.chipmunk.storage.write(file.id, '1.webp', extra);
      await t.chipmunk.uow.ports.files.addVariants(file.id, [{ name: '1', path: '1.webp', mimeType: 'image/webp', bytes, width: 1, height: 1 }]);
    }
    return (await (await t.api(`/v1/files/${file.id}`)).json()) as FileJson;
  };
  const at = (url: string) => url.replace(/^https?:\/\/[^/]+/, base);
  const variant = (file: FileJson, n: number | string) => file.variants.find((v) => v.n === n)!;
  const tokenOf = (file: FileJson) => /\/f\/([0-9a-z]{32})\//.exec(variant(file, 0).url)![1]!;
  const sign = (pathname: string, exp: number) => createHmac('sha256', t.secret).update(`${pathname}?exp=${exp}`).digest('base64url');

  beforeAll(async () => {
    t = await backend.start();
    if (viaNginx) nginx = await startNginx(t);
    base = nginx?.url ?? t.url;
    photo = await storedForm(corpus('images/photos/portrait-canal.jpg'));
    song = await readFile(corpus('audio/ok/mp3-id3v23-nocover.mp3'));
    extra = await readFile(corpus('images/photos/gps-tagged-samsung.jpg'));
  });
  afterAll(async () => {
    await nginx?.close();
    await t?.close();
  });

  it('serves a public file at its token URL: exact bytes and the right headers', async () => {
    const file = await upload('pub', 'avatar', photo, 'me.jpg');
    expect(file.visibility).toBe('public');
    const url = at(variant(file, 0).url);
    expect(url).toMatch(/\/f\/[0-9a-z]{32}\/0$/);
    expect(url).not.toContain(file.id);
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(sha256(photo));
    expect(res.headers.get('content-type')).toBe('image/jpeg');
    expect(res.headers.get('content-length')).toBe(String(photo.length));
    expect(res.headers.get('etag')).toMatch(/^"[0-9a-f]+-[0-9a-f]+"$/);
    expect(Date.parse(res.headers.get('last-modified')!)).toBeGreaterThan(0);
    expect(res.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('content-disposition')).toBeNull();
  });

  it('serves a private file only with a valid signature for that very variant', async () => {
    const file = await withSecondVariant(await upload('priv', 'image', photo, 'secret.jpg'));
    expect(file.visibility).toBe('private');
    const signed = at(variant(file, 0).url);
    expect(signed).toMatch(/\?exp=\d+&sig=[A-Za-z0-9_-]{43}$/);
    const ok = await fetch(signed);
    expect(ok.status).toBe(200);
    expect(sha256(Buffer.from(await ok.arrayBuffer()))).toBe(sha256(photo));
    expect(ok.headers.get('cache-control')).toMatch(/^private, max-age=\d+, immutable$/);

    const token = tokenOf(file);
    const p0 = `/f/${token}/0`;
    const exp = Number(new URL(signed).searchParams.get('exp'));
    const sig = new URL(signed).searchParams.get('sig')!;
    const unsigned = await fetch(`${base}${p0}`);
    expect(unsigned.status).toBe(401);
    expect(((await unsigned.json()) as { error: { code: string } }).error.code).toBe('SIGNATURE_REQUIRED');
    const tampered = `${sig.slice(0, -2)}${sig.endsWith('AA') ? 'BB' : 'AA'}`;
    expect((await fetch(`${base}${p0}?exp=${exp}&sig=${tampered}`)).status).toBe(403);
    expect((await fetch(`${base}${p0}?exp=${exp + 60}&sig=${sig}`)).status).toBe(403);
    // A signature for variant 1 does not open variant 0, and vice versa.
    const p1 = `/f/${token}/1`;
    const sig1 = sign(p1, exp);
    expect((await fetch(`${base}${p1}?exp=${exp}&sig=${sig1}`)).status).toBe(200);
    const crossed = await fetch(`${base}${p0}?exp=${exp}&sig=${sig1}`);
    expect(crossed.status).toBe(403);
    expect(((await crossed.json()) as { error: { code: string } }).error.code).toBe('INVALID_SIGNATURE');
    // Correctly signed but expired.
    const past = Math.floor(Date.now() / 1000) - 60;
    const expired = await fetch(`${base}${p0}?exp=${past}&sig=${sign(p0, past)}`);
    expect(expired.status).toBe(403);
    expect(((await expired.json()) as { error: { code: string } }).error.code).toBe('LINK_EXPIRED');
  });

  it('mints signed links on request, with coarse expiry', async () => {
    const file = await withSecondVariant(await upload('links', 'image', photo, 'a.jpg'));
    const res = await t.api(`/v1/files/${file.id}/url?variant=1&expiresIn=600`);
    expect(res.status).toBe(200);
    const link = (await res.json()) as { url: string; expiresAt: string };
    const exp = Number(new URL(link.url).searchParams.get('exp'));
    expect(new Date(link.expiresAt).getTime()).toBe(exp * 1000);
    expect(exp % 300).toBe(0);
    expect(exp).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000) + 600);
    const got = await fetch(at(link.url));
    expect(got.status).toBe(200);
    const stored = await readBlob(t, file.id, (await t.chipmunk.inspect.variant(file.id, '1'))!.path);
    expect(sha256(Buffer.from(await got.arrayBuffer()))).toBe(sha256(stored));
    expect((await t.api(`/v1/files/${file.id}/url?variant=..%2F0&expiresIn=600`)).status).toBe(400);
    expect((await t.api(`/v1/files/${file.id}/url?variant=9`)).status).toBe(404);
    expect((await t.api(`/v1/files/${file.id}/url?expiresIn=0`)).status).toBe(400);
  });

  it('switches visibility with PATCH', async () => {
    const file = await upload('vis', 'image', photo, 'v.jpg');
    const token = tokenOf(file);
    const patched = await t.api(`/v1/files/${file.id}`, { method: 'PATCH', json: { visibility: 'public' } });
    expect(patched.status).toBe(200);
    const json = (await patched.json()) as FileJson;
    expect(json.visibility).toBe('public');
    expect(variant(json, 0).url).toMatch(new RegExp(`/f/${token}/0$`));
    // Distinct URIs so nginx's auth cache (keyed by the full URI) has not seen them yet.
    expect((await fetch(`${base}/f/${token}/0?as=public`)).status).toBe(200);
    await t.api(`/v1/files/${file.id}`, { method: 'PATCH', json: { visibility: 'private' } });
    expect((await fetch(`${base}/f/${token}/0?as=private`)).status).toBe(401);
    expect((await t.api(`/v1/files/${file.id}`, { method: 'PATCH', json: { visibility: 'secret' } })).status).toBe(400);
  });

  it('kills old links when the token is rotated', async () => {
    const file = await upload('rot', 'avatar', photo, 'r.jpg');
    const old = at(variant(file, 0).url);
    expect((await fetch(old)).status).toBe(200);
    const res = await t.api(`/v1/files/${file.id}/rotate-token`, { method: 'POST' });
    expect(res.status).toBe(200);
    const rotated = (await res.json()) as FileJson;
    const fresh = at(variant(rotated, 0).url);
    expect(fresh).not.toBe(old);
    expect((await fetch(fresh)).status).toBe(200);
    expect(await eventuallyStatus(old, 404)).toBe(404);
    if (!viaNginx) expect((await fetch(old)).status).toBe(404);
  });

  it('refuses a deleted file', async () => {
    const file = await upload('del', 'image', photo, 'd.jpg');
    const url = at(variant(file, 0).url);
    expect((await fetch(url)).status).toBe(200);
    expect((await t.api(`/v1/files/${file.id}`, { method: 'DELETE' })).status).toBe(204);
    expect(await eventuallyStatus(url, 404)).toBe(404);
    // Through nginx each worker keeps its own auth answer for up to CHIPMUNK_AUTH_CACHE seconds, so one
    // 404 does not mean every worker has seen the delete yet: ask until the refusal is what answers.
    await expect
      .poll(
        async () => {
          const res = await fetch(url);
          return res.status === 404 ? ((await res.json()) as { error: { code: string } }).error.code : res.status;
        },
        { timeout: 15_000 },
      )
      .toBe('NOT_FOUND');
  });

  it('never serves an upload still in flight', async () => {
    const token = await t.uploadToken('flight', 'avatar');
    const created = await fetch(`${t.url}/uploads`, {
      method: 'POST',
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(photo.length), Authorization: `Bearer ${token}` },
    });
    expect(created.status).toBe(201);
    const id = created.headers.get('location')!.split('/').pop()!;
    const row = (await t.chipmunk.inspect.file(id))!;
    expect(row.status).toBe('uploading');
    expect((await fetch(`${base}/f/${row.deliveryToken}/0`)).status).toBe(404);
  });

  it('answers ranges, HEAD and conditional requests', async () => {
    const file = await upload('range', 'avatar', photo, 'range.jpg');
    const url = at(variant(file, 0).url);
    const part = await fetch(url, { headers: { Range: 'bytes=100-1099' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 100-1099/${photo.length}`);
    expect(part.headers.get('content-length')).toBe('1000');
    expect(Buffer.from(await part.arrayBuffer()).equals(photo.subarray(100, 1100))).toBe(true);
    const tail = await fetch(url, { headers: { Range: 'bytes=-10' } });
    expect(tail.status).toBe(206);
    expect(Buffer.from(await tail.arrayBuffer()).equals(photo.subarray(photo.length - 10))).toBe(true);
    expect((await fetch(url, { headers: { Range: `bytes=${photo.length + 10}-` } })).status).toBe(416);

    const head = await fetch(url, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(photo.length));
    expect(head.headers.get('content-type')).toBe('image/jpeg');
    expect((await head.arrayBuffer()).byteLength).toBe(0);

    const etag = head.headers.get('etag')!;
    const again = await fetch(url, { headers: { 'If-None-Match': etag } });
    expect(again.status).toBe(304);
    expect(again.headers.get('etag')).toBe(etag);
    expect((await fetch(url, { headers: { 'If-None-Match': '"other"' } })).status).toBe(200);
  });

  it('streams a large original whole and in ranges', async () => {
    const big = await readFile(corpus('images/photos/landscape-saw-6mp.jpg'));
    const file = await upload('big', 'avatar', big, 'big.jpg');
    const url = at(variant(file, 0).url);
    const whole = await fetch(url);
    expect(whole.headers.get('content-length')).toBe(String(big.length));
    expect(sha256(Buffer.from(await whole.arrayBuffer()))).toBe(sha256(big));
    const middle = await fetch(url, { headers: { Range: 'bytes=500000-599999' } });
    expect(middle.status).toBe(206);
    expect(Buffer.from(await middle.arrayBuffer()).equals(big.subarray(500_000, 600_000))).toBe(true);
  });

  it('serves an audio original as an attachment', async () => {
    const file = await upload('music', 'audio', song, 'Déjà vu "live".mp3');
    const res = await fetch(at(variant(file, 0).url));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('audio/mpeg');
    expect(res.headers.get('content-disposition')).toBe(`attachment; filename="D_j_ vu _live_.mp3"; filename*=UTF-8''D%C3%A9j%C3%A0%20vu%20%22live%22.mp3`);
    expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(sha256(song));
  });

  it('answers 404 to traversal, encoded slashes, NULs and listings', async () => {
    const file = await upload('trav', 'avatar', photo, 't.jpg');
    const token = tokenOf(file);
    const attempts = [
      `/f/${token}/..%2F..%2F..%2Fsecrets.json`,
      `/f/..%2F..%2Fchipmunk.db`,
      `/f/${token}%2F0`,
      `/f/${token}/0%00`,
      `/f/${token}/0%2500`,
      `/f/${token}/%2e%2e/0`,
      `/f/${token}/../../../secrets.json`,
      `/f/../chipmunk.db`,
      `/f/${token}/0.jpg`,
      `/f/${token}/`,
      `/f/${token}`,
      `/f/`,
    ];
    for (const attempt of attempts) {
      const res = await raw(base, attempt);
      expect({ attempt, status: res.status }).toEqual({ attempt, status: 404 });
      expect(res.body.includes(Buffer.from('secret'))).toBe(false);
    }
    expect((await raw(base, `/f/${token}/0`)).status).toBe(200);
  });

  it('keeps the auth endpoint off the public side', async () => {
    const res = await fetch(`${base}/internal/auth`, { headers: { 'X-Original-URI': '/f/x/0' } });
    expect(res.status).toBe(404);
    expect((await fetch(`${base}/f/${'a'.repeat(32)}/0`, { method: 'POST' })).status).toBeGreaterThanOrEqual(404);
  });
});

describe.each(backends)('the one /f/ implementation (Chipmunk alone): $name', (backend) => {
  let t: TestChipmunk;
  beforeAll(async () => {
    t = await backend.start();
  });
  afterAll(() => t?.close());

  const uploadPhoto = async (name: string) => {
    const photo = await storedForm(corpus('images/photos/portrait-canal.jpg'));
    const result = await tusUpload(`${t.url}/uploads`, photo, { token: await t.uploadToken('one', 'avatar'), metadata: { filename: name } });
    if (!result.ok) throw result.error;
    return result.body as FileJson;
  };

  it('is answered by the listening server before the app: the Hono app has no /f/ route', async () => {
    const file = await uploadPhoto('a.jpg');
    const url = new URL(file.variants[0]!.url);
    expect((await fetch(url)).status).toBe(200);
    const viaApp = await t.chipmunk.app.request(`${url.pathname}${url.search}`);
    expect(viaApp.status).toBe(404);
    expect(((await viaApp.json()) as { error: { message: string } }).error.message).toBe('Route not found.');
  });

  it('answers the request id like every other route, on files and on refusals', async () => {
    const file = await uploadPhoto('b.jpg');
    const served = await fetch(file.variants[0]!.url, { headers: { 'x-request-id': 'delivery-trace.1' } });
    expect(served.status).toBe(200);
    expect(served.headers.get('x-request-id')).toBe('delivery-trace.1');
    const refused = await fetch(`${t.url}/f/${'a'.repeat(32)}/0`);
    expect(refused.status).toBe(404);
    expect(refused.headers.get('x-request-id')).toMatch(/^[0-9a-z]{16}$/);
  });

  it('serves a replaced variant’s new bytes right after the commit that replaced it (the cached bytes go)', async () => {
    const file = await uploadPhoto('c.jpg');
    const rung = file.variants.find((v) => v.n !== 0)!;
    const before = Buffer.from(await (await fetch(rung.url)).arrayBuffer());
    expect(before.length).toBe(rung.bytes);
    // A re-run writing the rung again (bytes of another length, under a new name), then its commit.
    const replacement = Buffer.concat([before, Buffer.from('again')]);
    const bytes = await t.chipmunk.storage.write(file.id, 'again.webp', replacement);
    await t.chipmunk.uow.ports.files.addVariants(file.id, [{ name: String(rung.n), path: 'again.webp', mimeType: 'image/webp', bytes, width: 1, height: 1 }]);
    const after = await fetch(rung.url);
    expect(after.status).toBe(200);
    expect(Buffer.from(await after.arrayBuffer()).equals(replacement)).toBe(true);
  });

  // Embedded only: the failure is made in the local media folder (a symlink loop), which a bucket has no equivalent of.
  if (backend.name === 'embedded')
    it('renders a storage failure as the JSON 500, with no path or stack, and keeps serving', async () => {
      const file = await uploadPhoto('d.jpg');
      const rung = file.variants.find((v) => v.n !== 0)!;
      // The variant's file replaced by a symlink to itself: its stat fails with ELOOP, an error, not "absent".
      const where = mediaPath(t.chipmunk.config.mediaDir, file.id, (await t.chipmunk.inspect.variant(file.id, String(rung.n)))!.path);
      await rm(where);
      await symlink(where, where);
      const res = await fetch(rung.url);
      expect(res.status).toBe(500);
      expect(res.headers.get('content-type')).toBe('application/json');
      expect(res.headers.get('cache-control')).toBe('no-store');
      const text = await res.text();
      expect(JSON.parse(text)).toEqual({ error: { code: 'INTERNAL', message: 'Something went wrong on our side.' } });
      expect(text).not.toContain(t.dataDir);
      expect((await fetch(file.variants[0]!.url)).status).toBe(200);
    });
});
