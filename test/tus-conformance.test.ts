import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestChipmunk } from './helpers/chipmunk.js';
import { startNginx, type TestNginx } from './helpers/nginx.js';
import { backends } from './helpers/backends.js';

describe.each(backends)('$name', (backend) => {
  // tus 1.0.0, MUST by MUST and SHOULD by SHOULD (core protocol, then each extension Chipmunk
  // offers: creation, creation-with-upload, termination, expiration, checksum), spoken in raw HTTP
  // the way a client nobody here wrote speaks it. The same suite runs against Chipmunk alone and
  // through its rendered nginx. Uploads here never complete: what is answered around completion
  // belongs to the upload lifecycle tests.

  let t: TestChipmunk;
  let nginx: TestNginx;

  beforeAll(async () => {
    t = await backend.start();
    nginx = await startNginx(t);
  }, 60_000);
  afterAll(async () => {
    await nginx?.close();
    await t?.close();
  });

  type Target = { name: string; base: () => string };
  const targets: Target[] = [
    { name: 'Chipmunk alone', base: () => t.url },
    { name: 'through the rendered nginx', base: () => nginx.url },
  ];

  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const digest = (algorithm: string, data: Buffer) => createHash(algorithm).update(data).digest('base64');

  describe.each(targets)('tus 1.0.0 $name', ({ base }) => {
    const endpoint = () => `${base()}/uploads`;
    const userId = `conf-${randomBytes(4).toString('hex')}`;
    let token: string;

    beforeAll(async () => {
      token = await t.uploadToken(userId, 'image');
    });

    /** A tus request: Tus-Resumable 1.0.0 unless the test says otherwise. */
    const tus = (url: string, method: string, headers: Record<string, string> = {}, body?: Buffer) =>
      fetch(url, { method, headers: { 'Tus-Resumable': '1.0.0', ...headers }, body: body ? new Uint8Array(body) : undefined });

    /** Creates an upload of `length` bytes (never finished here); returns its URL. */
    async function create(length = 1000, extra: Record<string, string> = {}): Promise<string> {
      const res = await tus(endpoint(), 'POST', {
        Authorization: `Bearer ${token}`,
        'Upload-Length': String(length),
        'Upload-Metadata': `filename ${b64('a.jpg')}`,
        ...extra,
      });
      expect(res.status, await res.clone().text()).toBe(201);
      return new URL(res.headers.get('location')!, endpoint()).href;
    }

    const patch = (url: string, offset: number, body: Buffer, headers: Record<string, string> = {}) =>
      tus(url, 'PATCH', { 'Content-Type': 'application/offset+octet-stream', 'Upload-Offset': String(offset), ...headers }, body);

    const offsetOf = async (url: string) => Number((await tus(url, 'HEAD')).headers.get('upload-offset'));

    /** Every refusal: Chipmunk's JSON error, labelled as JSON. */
    async function expectJsonError(res: Response, status: number, code?: string | RegExp): Promise<{ code: string; message: string }> {
      expect(res.status).toBe(status);
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(typeof body.error.message).toBe('string');
      expect(body.error.message.length).toBeGreaterThan(10);
      if (code) expect(body.error.code).toMatch(code);
      return body.error;
    }

    describe('core protocol', () => {
      it('OPTIONS answers 204 with Tus-Version (no Tus-Resumable needed) and the extensions offered', async () => {
        const res = await fetch(endpoint(), { method: 'OPTIONS' });
        expect(res.status).toBe(204);
        expect(
          res.headers
            .get('tus-version')
            ?.split(',')
            .map((v) => v.trim()),
        ).toContain('1.0.0');
        const extensions = res.headers
          .get('tus-extension')!
          .split(',')
          .map((e) => e.trim());
        expect(extensions.sort()).toEqual(['checksum', 'creation', 'creation-with-upload', 'expiration', 'termination']);
        // Advertised only what is supported: deferred length is not.
        expect(extensions).not.toContain('creation-defer-length');
        expect(res.headers.get('tus-checksum-algorithm')!.split(',')).toEqual(expect.arrayContaining(['sha1', 'sha256']));
      });

      it('every answer but OPTIONS carries Tus-Resumable: 1.0.0, refusals included', async () => {
        const url = await create();
        const answers = [
          await tus(url, 'HEAD'),
          await patch(url, 0, Buffer.alloc(10)),
          await patch(url, 999, Buffer.alloc(1)),
          await tus(`${endpoint()}/nosuchupload0000000000`, 'HEAD'),
          await tus(endpoint(), 'POST', { 'Upload-Length': '10' }),
        ];
        for (const res of answers) expect(res.headers.get('tus-resumable')).toBe('1.0.0');
      });

      it('an unsupported Tus-Resumable is refused with 412 and the versions the server speaks', async () => {
        const url = await create();
        for (const [method, headers] of [
          ['POST', { Authorization: `Bearer ${token}`, 'Upload-Length': '10', 'Tus-Resumable': '0.2.2' }],
          ['PATCH', { 'Tus-Resumable': '2.0.0', 'Content-Type': 'application/offset+octet-stream', 'Upload-Offset': '0' }],
        ] as const) {
          const res = await fetch(method === 'POST' ? endpoint() : url, { method, headers, body: method === 'PATCH' ? Buffer.alloc(5) : undefined });
          expect(res.headers.get('tus-version')).toBe('1.0.0');
          const error = await expectJsonError(res, 412, 'TUS_VERSION_UNSUPPORTED');
          expect(error.message).toContain('1.0.0');
        }
        const head = await fetch(url, { method: 'HEAD', headers: { 'Tus-Resumable': '0.2.2' } });
        expect(head.status).toBe(412);
        expect(head.headers.get('tus-version')).toBe('1.0.0');
        // The refused PATCH wrote nothing.
        expect(await offsetOf(url)).toBe(0);
      });

      it('a request without Tus-Resumable is refused with 412 (JSON)', async () => {
        const res = await fetch(endpoint(), { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Upload-Length': '10' } });
        expect(res.headers.get('tus-version')).toBe('1.0.0');
        await expectJsonError(res, 412, 'TUS_VERSION_UNSUPPORTED');
      });

      it('HEAD answers the offset and length, forbids caching, and returns Upload-Metadata exactly as sent', async () => {
        const metadata = `filename ${b64('holiday photo.jpg')},filetype ${b64('image/jpeg')},is_confidential`;
        const res = await tus(endpoint(), 'POST', { Authorization: `Bearer ${token}`, 'Upload-Length': '1000', 'Upload-Metadata': metadata });
        expect(res.status).toBe(201);
        const url = new URL(res.headers.get('location')!, endpoint()).href;
        const head = await tus(url, 'HEAD');
        expect(head.status).toBe(200);
        expect(head.headers.get('upload-offset')).toBe('0');
        expect(head.headers.get('upload-length')).toBe('1000');
        expect(head.headers.get('cache-control')).toBe('no-store');
        // Not the server's bookkeeping (user, purpose): what the client sent.
        expect(head.headers.get('upload-metadata')).toBe(metadata);
        expect(await head.text()).toBe('');
      });

      it('HEAD of an upload that does not exist is 404 without a body, labelled JSON', async () => {
        const res = await tus(`${endpoint()}/nosuchupload0000000000`, 'HEAD');
        expect(res.status).toBe(404);
        expect(res.headers.get('content-type')).toMatch(/^application\/json/);
        expect(await res.text()).toBe('');
      });

      it('PATCH appends at Upload-Offset and answers 204 with the new offset', async () => {
        const url = await create(1000);
        const first = await patch(url, 0, randomBytes(300));
        expect(first.status).toBe(204);
        expect(first.headers.get('upload-offset')).toBe('300');
        const second = await patch(url, 300, randomBytes(200));
        expect(second.status).toBe(204);
        expect(second.headers.get('upload-offset')).toBe('500');
        expect(await offsetOf(url)).toBe(500);
      });

      it('a PATCH cut mid-body keeps the bytes that arrived (SHOULD), and the upload resumes from there', async () => {
        const url = await create(100_000);
        const sent = randomBytes(40_000);
        await new Promise<void>((resolve) => {
          const req = http.request(url, {
            method: 'PATCH',
            headers: { 'Tus-Resumable': '1.0.0', 'Content-Type': 'application/offset+octet-stream', 'Upload-Offset': '0', 'Content-Length': '100000' },
          });
          req.on('error', () => resolve());
          req.on('response', () => resolve());
          req.write(sent, () => setTimeout(() => req.destroy(), 300));
        });
        // Settled: the cut request has been handled and its lock released (the offset no longer moves).
        let offset = -1;
        await expect
          .poll(
            async () => {
              const before = await offsetOf(url);
              await new Promise((r) => setTimeout(r, 200));
              const after = await offsetOf(url);
              offset = after;
              return after > 0 && after === before;
            },
            { timeout: 15_000 },
          )
          .toBe(true);
        expect(offset).toBeLessThanOrEqual(40_000);
        const rest = await patch(url, offset, randomBytes(1000));
        expect(rest.status).toBe(204);
        expect(rest.headers.get('upload-offset')).toBe(String(offset + 1000));
      });

      it('PATCH at the wrong offset is 409 and leaves the upload unchanged', async () => {
        const url = await create(1000);
        await patch(url, 0, randomBytes(100));
        const error = await expectJsonError(await patch(url, 50, randomBytes(100)), 409, 'OFFSET_MISMATCH');
        expect(error.message).toMatch(/HEAD/);
        expect(await offsetOf(url)).toBe(100);
      });

      it('PATCH without application/offset+octet-stream is 415 and writes nothing', async () => {
        const url = await create(1000);
        for (const type of ['application/octet-stream', 'text/plain', undefined]) {
          const headers: Record<string, string> = { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0' };
          if (type) headers['Content-Type'] = type;
          const res = await fetch(url, { method: 'PATCH', headers, body: randomBytes(100) });
          await expectJsonError(res, 415, 'UNSUPPORTED_MEDIA_TYPE');
        }
        expect(await offsetOf(url)).toBe(0);
      });

      it('PATCH without Upload-Offset is refused (JSON) and writes nothing', async () => {
        const url = await create(1000);
        const res = await tus(url, 'PATCH', { 'Content-Type': 'application/offset+octet-stream' }, randomBytes(10));
        expect(res.status).toBeGreaterThanOrEqual(400);
        expect(res.status).toBeLessThan(500);
        await expectJsonError(res, res.status);
        expect(await offsetOf(url)).toBe(0);
      });

      it('PATCH to an upload that does not exist is 404 (JSON)', async () => {
        await expectJsonError(await patch(`${endpoint()}/nosuchupload0000000000`, 0, randomBytes(10)), 404, 'UPLOAD_NOT_FOUND');
      });

      it('a malformed header is 400 (JSON), not plain text', async () => {
        const url = await create(1000);
        await expectJsonError(await patch(url, 0, randomBytes(10), { 'Upload-Offset': 'ten' }), 400);
        await expectJsonError(await tus(endpoint(), 'POST', { Authorization: `Bearer ${token}`, 'Upload-Length': '-5' }), 400);
      });

      it('a method tus does not define is 405 with Allow (JSON)', async () => {
        const res = await tus(endpoint(), 'PUT', {}, Buffer.alloc(1));
        expect(res.headers.get('allow')).toContain('PATCH');
        await expectJsonError(res, 405, 'METHOD_NOT_ALLOWED');
      });

      it('X-HTTP-Method-Override is the method: POST carrying PATCH, HEAD and DELETE', async () => {
        // What the user held before the upload (its reservation is the length plus the quota budget).
        const before = (await (await t.api(`/v1/users/${userId}`)).json()) as { reservedBytes: number };
        const url = await create(1000);
        const appended = await tus(
          url,
          'POST',
          { 'X-HTTP-Method-Override': 'PATCH', 'Content-Type': 'application/offset+octet-stream', 'Upload-Offset': '0' },
          randomBytes(400),
        );
        expect(appended.status).toBe(204);
        expect(appended.headers.get('upload-offset')).toBe('400');
        const head = await tus(url, 'POST', { 'X-HTTP-Method-Override': 'HEAD' });
        expect(head.status).toBe(200);
        expect(head.headers.get('upload-offset')).toBe('400');
        const deleted = await tus(url, 'POST', { 'X-HTTP-Method-Override': 'DELETE' });
        expect(deleted.status).toBe(204);
        expect((await tus(url, 'HEAD')).status).toBe(404);
        await expect
          .poll(async () => ((await (await t.api(`/v1/users/${userId}`)).json()) as { reservedBytes: number }).reservedBytes)
          .toBe(before.reservedBytes);
        // No upload was created by the overridden POSTs.
        const bogus = await tus(endpoint(), 'POST', { 'X-HTTP-Method-Override': 'PUT' });
        await expectJsonError(bogus, 400);
      });
    });

    describe('creation', () => {
      it('POST with Upload-Length answers 201 with the upload URL in Location', async () => {
        const res = await tus(endpoint(), 'POST', { Authorization: `Bearer ${token}`, 'Upload-Length': '1000' });
        expect(res.status).toBe(201);
        const location = new URL(res.headers.get('location')!, endpoint());
        // Through nginx the Location points back at nginx, not at the Chipmunk behind it.
        expect(location.origin).toBe(new URL(base()).origin);
        expect(location.pathname).toMatch(/^\/uploads\/[A-Za-z0-9_-]+$/);
        expect((await tus(location.href, 'HEAD')).headers.get('upload-offset')).toBe('0');
      });

      it('POST without Upload-Length (and without deferring) is 400 (JSON)', async () => {
        await expectJsonError(await tus(endpoint(), 'POST', { Authorization: `Bearer ${token}` }), 400);
      });

      it('deferred length is not offered: Upload-Defer-Length is refused with a sentence saying so', async () => {
        const error = await expectJsonError(
          await tus(endpoint(), 'POST', { Authorization: `Bearer ${token}`, 'Upload-Defer-Length': '1' }),
          400,
          'LENGTH_REQUIRED',
        );
        expect(error.message).toMatch(/Upload-Length/);
      });

      it('Upload-Metadata that is not key/base64 pairs is 400 (JSON)', async () => {
        await expectJsonError(
          await tus(endpoint(), 'POST', { Authorization: `Bearer ${token}`, 'Upload-Length': '10', 'Upload-Metadata': 'filename not base64!,,' }),
          400,
        );
      });

      it("a creation the hooks refuse carries Chipmunk's sentence", async () => {
        const error = await expectJsonError(await tus(endpoint(), 'POST', { 'Upload-Length': '10' }), 401, 'UNAUTHORIZED');
        expect(error.message).toMatch(/upload token/);
        await expectJsonError(await tus(endpoint(), 'POST', { Authorization: `Bearer ${token}`, 'Upload-Length': String(60_000_000) }), 413, 'FILE_TOO_LARGE');
      });
    });

    describe('creation-with-upload', () => {
      it('POST may carry the first bytes: 201 with Location and Upload-Offset', async () => {
        const res = await tus(
          endpoint(),
          'POST',
          { Authorization: `Bearer ${token}`, 'Upload-Length': '1000', 'Content-Type': 'application/offset+octet-stream' },
          randomBytes(250),
        );
        expect(res.status).toBe(201);
        expect(res.headers.get('upload-offset')).toBe('250');
        const url = new URL(res.headers.get('location')!, endpoint()).href;
        expect(await offsetOf(url)).toBe(250);
      });
    });

    describe('expiration', () => {
      it('creation and PATCH answers carry Upload-Expires as an RFC 9110 date in the future', async () => {
        const res = await tus(endpoint(), 'POST', { Authorization: `Bearer ${token}`, 'Upload-Length': '1000' });
        const url = new URL(res.headers.get('location')!, endpoint()).href;
        for (const answer of [res, await patch(url, 0, randomBytes(10))]) {
          const expires = answer.headers.get('upload-expires');
          expect(expires).toMatch(/^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
          expect(Date.parse(expires!)).toBeGreaterThan(Date.now());
        }
      });
    });

    describe('termination', () => {
      it('DELETE answers 204, the upload is gone, and its reservation is released', async () => {
        const reserved = async () => ((await (await t.api(`/v1/users/${userId}`)).json()) as { reservedBytes: number }).reservedBytes;
        const before = await reserved();
        const url = await create(4321);
        expect(await reserved()).toBeGreaterThan(before + 4321);
        await patch(url, 0, randomBytes(100));
        const res = await tus(url, 'DELETE');
        expect(res.status).toBe(204);
        expect((await tus(url, 'HEAD')).status).toBe(404);
        await expectJsonError(await patch(url, 100, randomBytes(10)), 404);
        await expect.poll(reserved).toBe(before);
      });
    });

    describe('checksum', () => {
      it('a chunk whose sha1 or sha256 matches Upload-Checksum is applied', async () => {
        const url = await create(1000);
        const a = randomBytes(300);
        const res1 = await patch(url, 0, a, { 'Upload-Checksum': `sha1 ${digest('sha1', a)}` });
        expect(res1.status).toBe(204);
        const b = randomBytes(300);
        const res2 = await patch(url, 300, b, { 'Upload-Checksum': `sha256 ${digest('sha256', b)}` });
        expect(res2.status).toBe(204);
        expect(res2.headers.get('upload-offset')).toBe('600');
      });

      it('a mismatch is 460 Checksum Mismatch and the chunk is not applied', async () => {
        const url = await create(1000);
        await patch(url, 0, randomBytes(100));
        const chunk = randomBytes(300);
        const res = await patch(url, 100, chunk, { 'Upload-Checksum': `sha256 ${digest('sha256', randomBytes(300))}` });
        const error = await expectJsonError(res, 460, 'CHECKSUM_MISMATCH');
        expect(error.message).toMatch(/not applied/);
        expect(await offsetOf(url)).toBe(100);
        // The same chunk, sent again with its real checksum, goes through from the same offset.
        const retry = await patch(url, 100, chunk, { 'Upload-Checksum': `sha256 ${digest('sha256', chunk)}` });
        expect(retry.status).toBe(204);
        expect(retry.headers.get('upload-offset')).toBe('400');
      });

      it('an algorithm the server does not offer is 400 and writes nothing', async () => {
        const url = await create(1000);
        const chunk = randomBytes(50);
        await expectJsonError(await patch(url, 0, chunk, { 'Upload-Checksum': `crc32 AAAAAA==` }), 400);
        await expectJsonError(await patch(url, 0, chunk, { 'Upload-Checksum': 'sha1' }), 400);
        expect(await offsetOf(url)).toBe(0);
      });

      it('creation-with-upload bytes are checked too: a mismatch keeps none of them, the upload is created', async () => {
        const chunk = randomBytes(200);
        const res = await tus(
          endpoint(),
          'POST',
          {
            Authorization: `Bearer ${token}`,
            'Upload-Length': '1000',
            'Content-Type': 'application/offset+octet-stream',
            'Upload-Checksum': `sha1 ${digest('sha1', randomBytes(4))}`,
          },
          chunk,
        );
        // The upload exists (so the client has a Location to resume from) but holds none of the bytes.
        expect(res.status).toBe(201);
        expect(res.headers.get('upload-offset')).toBe('0');
        const url = new URL(res.headers.get('location')!, endpoint()).href;
        expect(await offsetOf(url)).toBe(0);
        const good = await tus(
          endpoint(),
          'POST',
          {
            Authorization: `Bearer ${token}`,
            'Upload-Length': '1000',
            'Content-Type': 'application/offset+octet-stream',
            'Upload-Checksum': `sha1 ${digest('sha1', chunk)}`,
          },
          chunk,
        );
        expect(good.status).toBe(201);
        expect(good.headers.get('upload-offset')).toBe('200');
      });
    });

    describe('CORS (browsers on another origin)', () => {
      const origin = 'http://app.localhost:3000';

      it('answers the preflight of a tus PATCH with every header tus-js-client sends', async () => {
        const url = await create(1000);
        const res = await fetch(url, {
          method: 'OPTIONS',
          headers: {
            Origin: origin,
            'Access-Control-Request-Method': 'PATCH',
            'Access-Control-Request-Headers': 'tus-resumable, upload-offset, content-type, upload-checksum, x-http-method-override',
          },
        });
        expect(res.status).toBe(204);
        expect(res.headers.get('access-control-allow-origin')).toBe('*');
        expect(res.headers.get('access-control-allow-methods')).toMatch(/PATCH/);
        const allowed = res.headers.get('access-control-allow-headers')!.toLowerCase();
        for (const h of [
          'tus-resumable',
          'upload-offset',
          'content-type',
          'upload-checksum',
          'x-http-method-override',
          'authorization',
          'upload-length',
          'upload-metadata',
        ]) {
          expect(allowed).toContain(h);
        }
      });

      it('exposes Location, Upload-Offset, Upload-Expires and the rest on answers and refusals', async () => {
        const res = await tus(endpoint(), 'POST', { Origin: origin, Authorization: `Bearer ${token}`, 'Upload-Length': '1000' });
        expect(res.headers.get('access-control-allow-origin')).toBe('*');
        const exposed = res.headers.get('access-control-expose-headers')!.toLowerCase();
        for (const h of ['location', 'upload-offset', 'upload-length', 'upload-expires', 'upload-metadata', 'tus-resumable']) expect(exposed).toContain(h);
        const refused = await tus(endpoint(), 'POST', { Origin: origin, 'Upload-Length': '10', 'Tus-Resumable': '9.9.9' });
        expect(refused.status).toBe(412);
        expect(refused.headers.get('access-control-allow-origin')).toBe('*');
      });
    });
  });
});
