import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { S3Settings } from '../src/config.js';
import { mediaKey } from '../src/storage/objects.js';
import { createS3Client, createS3ObjectStore } from '../src/storage/s3.js';
import { corpus, startChipmunk, storedForm, type TestChipmunk } from './helpers/chipmunk.js';
import { startNginx, type TestNginx } from './helpers/nginx.js';
import { createTestBucket, testServices, s3Environment } from './helpers/services.js';
import { tusUpload } from './helpers/tus.js';

// Real nginx in front of a Chipmunk whose blobs are in a real Ceph RGW bucket: the config rendered
// by `chipmunk nginx-config` from the same environment; nginx fetches the bytes from the bucket with
// the presigned GET the auth answer carries, never showing it, and answers as Chipmunk alone does.

type Variant = { n: number | string; bytes: number; mimeType: string; url: string };
type FileJson = { id: string; variants: Variant[] };

/** The headers a client is shown, without the ones that differ by hop (date, connection, request id). */
const shown = (res: Response) => {
  const out: Record<string, string> = {};
  res.headers.forEach((value, name) => {
    if (!['date', 'connection', 'keep-alive', 'x-request-id', 'server', 'transfer-encoding'].includes(name)) out[name] = value;
  });
  return out;
};

describe('nginx in front, blobs in S3', () => {
  let bucket: Awaited<ReturnType<typeof createTestBucket>>;
  let t: TestChipmunk;
  let nginx: TestNginx;
  let photo: Buffer;
  let file: FileJson;
  const via = (base: string, url: string) => url.replace(/^https?:\/\/[^/]+/, base);

  beforeAll(async () => {
    bucket = await createTestBucket(testServices(), 'nginx');
    const env = s3Environment(bucket.s3);
    t = await startChipmunk(env);
    nginx = await startNginx(t, { env });
    photo = await storedForm(corpus('images/photos/portrait-canal.jpg'));
    const result = await tusUpload(`${nginx.url}/uploads`, photo, { token: await t.uploadToken('ada', 'image'), metadata: { filename: 'canal.jpg' } });
    if (!result.ok) throw result.error;
    file = result.body as FileJson;
  });
  afterAll(async () => {
    await nginx?.close();
    await t?.close();
    await bucket?.drop();
  });

  it('renders one config: the media folder first, else the bucket through an internal location', () => {
    expect(nginx.config).toContain('try_files /$chipmunk_path @chipmunk_object;');
    expect(nginx.config).toContain(`server ${new URL(bucket.s3.endpoint!).host};`);
    expect(nginx.config).toMatch(/location @chipmunk_object \{[\s\S]*proxy_pass http:\/\/chipmunk_objects\$chipmunk_object;/);
  });

  it('serves every variant from the bucket with the same headers and bytes as Chipmunk alone', async () => {
    for (const v of file.variants) {
      const [direct, proxied] = [await fetch(via(t.url, v.url)), await fetch(via(nginx.url, v.url))];
      expect(proxied.status).toBe(200);
      const [a, b] = [Buffer.from(await direct.arrayBuffer()), Buffer.from(await proxied.arrayBuffer())];
      expect(b.length).toBe(v.bytes);
      expect(b.equals(a)).toBe(true);
      // A private link's max-age counts down to its expiry; nginx's cached auth answer may be up to 5 s older.
      const maxAge = (h: Record<string, string>) => Number(/max-age=(\d+)/.exec(h['cache-control'] ?? '')?.[1]);
      const [p, d] = [shown(proxied), shown(direct)];
      expect(Math.abs((maxAge(p) || 0) - (maxAge(d) || 0))).toBeLessThanOrEqual(6);
      const sameAge = (h: Record<string, string>) => ({ ...h, 'cache-control': h['cache-control']?.replace(/max-age=\d+/, 'max-age=N') });
      expect(sameAge(p)).toEqual(sameAge(d));
    }
    expect(Buffer.from(await (await fetch(via(nginx.url, file.variants[0]!.url))).arrayBuffer()).equals(photo)).toBe(true);
  });

  it('takes the bytes from the bucket, not from Chipmunk, and never shows where they are', async () => {
    const rung = file.variants.find((v) => v.n === 1)!;
    const name = (await t.chipmunk.inspect.variant(file.id, '1'))!.path;
    // Chipmunk alone keeps this small rung in memory once read; the bucket gets other bytes of the same size.
    const before = Buffer.from(await (await fetch(via(t.url, rung.url))).arrayBuffer());
    const client = createS3Client(bucket.s3);
    try {
      const replaced = Buffer.from(before.map((byte) => byte ^ 0xff));
      await createS3ObjectStore({ client, bucket: bucket.s3.bucket }).put(mediaKey(file.id, name), replaced);
      const res = await fetch(via(nginx.url, rung.url));
      const served = Buffer.from(await res.arrayBuffer());
      expect(served.equals(replaced)).toBe(true);
      expect(Buffer.from(await (await fetch(via(t.url, rung.url))).arrayBuffer()).equals(before)).toBe(true);
      const pairs: string[] = [];
      res.headers.forEach((value, name) => pairs.push(`${name}: ${value}`));
      const headers = pairs.join('\n');
      expect(headers).not.toMatch(/amz|rgw|X-Chipmunk|chipmunk-test|\/t-nginx/i);
      expect(headers).not.toContain(bucket.s3.bucket);
    } finally {
      client.destroy();
    }
  });

  it('answers ranges, conditional requests and HEAD as Chipmunk alone does', async () => {
    const url = file.variants[0]!.url;
    const first = await fetch(via(nginx.url, url), { headers: { range: 'bytes=0-99' } });
    expect(first.status).toBe(206);
    expect(first.headers.get('content-range')).toBe(`bytes 0-99/${photo.length}`);
    expect(Buffer.from(await first.arrayBuffer()).equals(photo.subarray(0, 100))).toBe(true);
    const suffix = await fetch(via(nginx.url, url), { headers: { range: 'bytes=-50' } });
    expect(suffix.status).toBe(206);
    expect(Buffer.from(await suffix.arrayBuffer()).equals(photo.subarray(photo.length - 50))).toBe(true);
    const seek = await fetch(via(nginx.url, url), { headers: { range: 'bytes=1000-1999' } });
    expect(seek.status).toBe(206);
    expect(Buffer.from(await seek.arrayBuffer()).equals(photo.subarray(1000, 2000))).toBe(true);

    const whole = await fetch(via(nginx.url, url));
    await whole.arrayBuffer();
    const etag = whole.headers.get('etag')!;
    expect(etag).toBe((await fetch(via(t.url, url), { method: 'HEAD' })).headers.get('etag'));
    expect((await fetch(via(nginx.url, url), { headers: { 'if-none-match': etag } })).status).toBe(304);
    expect((await fetch(via(nginx.url, url), { headers: { 'if-modified-since': whole.headers.get('last-modified')! } })).status).toBe(304);
    const head = await fetch(via(nginx.url, url), { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(photo.length));
    expect(head.headers.get('etag')).toBe(etag);
  });

  it('refuses as Chipmunk does: an unknown token, a deleted file, an object missing from the bucket', async () => {
    const unknown = await fetch(`${nginx.url}/f/${'0'.repeat(32)}/0`);
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND');

    const lost = (await tusUpload(`${nginx.url}/uploads`, photo, { token: await t.uploadToken('lin', 'image') })) as { ok: true; body: FileJson };
    await t.chipmunk.storage.removeName(lost.body.id, (await t.chipmunk.inspect.variant(lost.body.id, '0'))!.path);
    const missing = await fetch(via(nginx.url, lost.body.variants[0]!.url));
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND');

    const doomed = (await tusUpload(`${nginx.url}/uploads`, photo, { token: await t.uploadToken('lin', 'image') })) as { ok: true; body: FileJson };
    expect((await fetch(via(nginx.url, doomed.body.variants[0]!.url))).status).toBe(200);
    expect((await t.api(`/v1/files/${doomed.body.id}`, { method: 'DELETE' })).status).toBe(204);
    let status = 0;
    // The auth answer may be cached for up to 5 s.
    for (let i = 0; i < 100 && status !== 404; i++) {
      status = (await fetch(via(nginx.url, doomed.body.variants[0]!.url))).status;
      if (status !== 404) await new Promise((r) => setTimeout(r, 100));
    }
    expect(status).toBe(404);
  });
});
