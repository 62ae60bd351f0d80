import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseEnvironment } from '../src/config.js';
import { backends } from './helpers/backends.js';
import { corpus, type TestChipmunk } from './helpers/chipmunk.js';
import { startNginx, type TestNginx } from './helpers/nginx.js';
import { tusUpload } from './helpers/tus.js';

// Delivery read from a page on another origin: the same CORS answers from Chipmunk alone and from
// its rendered nginx, with every origin allowed (the default) and with a configured list, on both
// backends (with a bucket, nginx's answer comes from the object store through its internal location).

type Variant = { n: number | string; url: string };
type FileJson = { id: string; variants: Variant[] };

const app = 'http://app.localhost:5173';
const stranger = 'http://evil.localhost:6666';

async function uploadPhoto(t: TestChipmunk, base: string, visibility: 'public' | 'private' = 'private'): Promise<FileJson> {
  const token = await t.uploadToken(`cors-${visibility}`, visibility === 'public' ? 'avatar' : 'image');
  const result = await tusUpload(`${base}/uploads`, await readFile(corpus('images/photos/portrait-canal.jpg')), {
    token,
    metadata: { filename: 'canal.jpg', filetype: 'image/jpeg' },
  });
  if (!result.ok) throw new Error(`upload failed: ${result.status} ${result.body}`);
  return result.body as FileJson;
}

describe.each(backends)('$name', (backend) => {
  describe.each([
    ['every origin (the default)', {} as Record<string, string>],
    ['a configured list', { CHIPMUNK_CORS_ORIGINS: `${app}, https://other.example.com` }],
  ])('CORS on /f/ with %s', (_name, env) => {
    let t: TestChipmunk;
    let nginx: TestNginx;
    const listed = Boolean(env.CHIPMUNK_CORS_ORIGINS);

    beforeAll(async () => {
      t = await backend.start(env);
      nginx = await startNginx(t, { env });
    }, 60_000);
    afterAll(async () => {
      await nginx?.close();
      await t?.close();
    });

    describe.each([
      ['Chipmunk alone', () => t.url],
      ['the rendered nginx', () => nginx.url],
    ])('from %s', (_where, base) => {
      let file: FileJson;
      let url: string;
      beforeAll(async () => {
        file = await uploadPhoto(t, base());
        url = file.variants.find((v) => v.n === 3)!.url;
      });

      const expectAllowed = (res: Response, origin: string) => {
        expect(res.headers.get('access-control-allow-origin')).toBe(listed ? origin : '*');
        if (listed) expect(res.headers.get('vary')).toMatch(/Origin/i);
        else expect(res.headers.get('vary') ?? '').not.toMatch(/Origin/i);
      };

      it('a GET from an allowed origin may read the bytes and the exposed headers', async () => {
        const res = await fetch(url, { headers: { Origin: app } });
        expect(res.status).toBe(200);
        expectAllowed(res, app);
        const exposed = res.headers
          .get('access-control-expose-headers')!
          .split(',')
          .map((h) => h.trim().toLowerCase());
        expect(exposed).toEqual(expect.arrayContaining(['content-length', 'content-range', 'accept-ranges', 'etag']));
      });

      it('range, 304 and refusals carry the same headers (a page can read the error)', async () => {
        const ranged = await fetch(url, { headers: { Origin: app, Range: 'bytes=0-9' } });
        expect(ranged.status).toBe(206);
        expectAllowed(ranged, app);
        const etag = ranged.headers.get('etag')!;
        const unchanged = await fetch(url, { headers: { Origin: app, 'If-None-Match': etag } });
        expect(unchanged.status).toBe(304);
        expectAllowed(unchanged, app);
        const forged = await fetch(url.replace(/sig=[^&]+/, 'sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'), { headers: { Origin: app } });
        expect(forged.status).toBe(403);
        expectAllowed(forged, app);
        expect(forged.headers.get('content-type')).toMatch(/^application\/json/);
        const missing = await fetch(`${base()}/f/${'0'.repeat(32)}/1`, { headers: { Origin: app } });
        expect(missing.status).toBe(404);
        expectAllowed(missing, app);
      });

      it('answers the preflight of a cross-origin ranged fetch (OPTIONS /f/… is 204, not 405)', async () => {
        const res = await fetch(url, {
          method: 'OPTIONS',
          headers: { Origin: app, 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'range, if-none-match' },
        });
        expect(res.status).toBe(204);
        expectAllowed(res, app);
        expect(res.headers.get('access-control-allow-methods')).toMatch(/GET/);
        expect(res.headers.get('access-control-allow-headers')!.toLowerCase()).toMatch(/range.*if-none-match|if-none-match.*range/);
        expect(Number(res.headers.get('access-control-max-age'))).toBeGreaterThan(0);
      });

      it(listed ? 'an origin not on the list gets no Allow-Origin' : 'any origin may read', async () => {
        const res = await fetch(url, { headers: { Origin: stranger } });
        expect(res.status).toBe(200);
        if (listed) {
          expect(res.headers.get('access-control-allow-origin')).toBeNull();
          expect(res.headers.get('vary')).toMatch(/Origin/i);
        } else {
          expect(res.headers.get('access-control-allow-origin')).toBe('*');
        }
      });

      it('tus answers follow the same policy', async () => {
        const res = await fetch(`${base()}/uploads`, { method: 'OPTIONS', headers: { Origin: app, 'Access-Control-Request-Method': 'POST' } });
        expect(res.status).toBe(204);
        expect(res.headers.get('access-control-allow-origin')).toBe(listed ? app : '*');
        const other = await fetch(`${base()}/uploads`, { method: 'OPTIONS', headers: { Origin: stranger, 'Access-Control-Request-Method': 'POST' } });
        expect(other.headers.get('access-control-allow-origin')).toBe(listed ? null : '*');
      });
    });
  });
});

describe('CHIPMUNK_CORS_ORIGINS', () => {
  it('refuses something that is not an origin, naming the variable', () => {
    expect(() => parseEnvironment({ CHIPMUNK_CORS_ORIGINS: 'app.example.com/path' })).toThrow(/CHIPMUNK_CORS_ORIGINS.*not an origin/);
    expect(parseEnvironment({ CHIPMUNK_CORS_ORIGINS: 'https://App.example.com/ , http://localhost:3000' }).CHIPMUNK_CORS_ORIGINS).toEqual([
      'https://app.example.com',
      'http://localhost:3000',
    ]);
  });
});
