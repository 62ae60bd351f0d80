import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { corpus, startChipmunk, type TestChipmunk } from './helpers/chipmunk.js';
import { startNginx, type TestNginx } from './helpers/nginx.js';

// The rendered nginx next to Chipmunk alone: the same answers at the edges of RFC 9110's ranges,
// logs that keep no capability and no error line per refused token, operator endpoints off the
// public side.

type FileJson = { id: string; bytes: number; variants: Array<{ n: number; url: string }> };

describe('the rendered nginx and Chipmunk alone', () => {
  let t: TestChipmunk;
  let nginx: TestNginx;
  let file: FileJson;
  let size: number;
  let original: Buffer;

  beforeAll(async () => {
    t = await startChipmunk();
    nginx = await startNginx(t);
    const form = new FormData();
    form.append('userId', 'ranges');
    form.append('purpose', 'avatar');
    form.append('file', new Blob([await readFile(corpus('images/photos/portrait-canal.jpg'))]), 'canal.jpg');
    const res = await fetch(`${t.url}/v1/files`, { method: 'POST', headers: { authorization: `Bearer ${t.apiKey}` }, body: form });
    file = (await res.json()) as FileJson;
    original = Buffer.from(await (await fetch(file.variants[0]!.url)).arrayBuffer());
    size = original.length;
  }, 60_000);
  afterAll(async () => {
    await nginx?.close();
    await t?.close();
  });

  const both = () => [t.url, nginx.url];
  const get = (base: string, range: string) => fetch(file.variants[0]!.url.replace(t.url, base), { headers: { Range: range } });

  it('an end past the file (even past 2^64) is clamped: 206 of the whole file on both paths', async () => {
    for (const base of both()) {
      const res = await get(base, 'bytes=0-99999999999999999999');
      expect(res.status, base).toBe(206);
      expect(res.headers.get('content-range')).toBe(`bytes 0-${size - 1}/${size}`);
      expect(Buffer.from(await res.arrayBuffer()).equals(original)).toBe(true);
      const tail = await get(base, `bytes=${size - 10}-${size + 1000}`);
      expect(tail.status).toBe(206);
      expect(tail.headers.get('content-range')).toBe(`bytes ${size - 10}-${size - 1}/${size}`);
    }
  });

  it('a start past the end is 416 in JSON, one Content-Type, no long-lived cache header, on both paths', async () => {
    for (const base of both()) {
      for (const range of [`bytes=${size + 10}-`, `bytes=${size}-${size + 5}`, 'bytes=99999999999999999999-']) {
        const res = await get(base, range);
        expect({ base, range, status: res.status }).toEqual({ base, range, status: 416 });
        expect(res.headers.get('content-type')).toBe('application/json');
        expect(res.headers.get('cache-control') ?? '').not.toMatch(/immutable|max-age=[1-9]/);
        expect(res.headers.get('content-range')).toBe(`bytes */${size}`);
        expect(((await res.json()) as { error: { code: string } }).error.code).toBe('RANGE_NOT_SATISFIABLE');
      }
    }
  });

  it('an invalid range (start after end, nonsense) is ignored: 200 of the whole file on both paths', async () => {
    for (const base of both()) {
      for (const range of ['bytes=50-10', 'bytes=abc', 'bytes=0-1,5-9,20-30']) {
        const res = await get(base, range);
        expect({ base, range, status: res.status }).toEqual({ base, range, status: 200 });
        expect(Buffer.from(await res.arrayBuffer()).equals(original)).toBe(true);
      }
      // The plain forms stay what they were.
      expect((await get(base, 'bytes=100-')).headers.get('content-range')).toBe(`bytes 100-${size - 1}/${size}`);
      expect((await get(base, 'bytes=-100')).headers.get('content-range')).toBe(`bytes ${size - 100}-${size - 1}/${size}`);
    }
  });

  it('refusals under /f/ never write an error.log line, and the access log masks tokens and signatures', async () => {
    const errorLog = path.join(nginx.prefix, 'error.log');
    const before = await readFile(errorLog, 'utf8').catch(() => '');
    for (let i = 0; i < 200; i++) {
      const res = await fetch(`${nginx.url}/f/${randomBytes(16).toString('hex')}/3`);
      expect(res.status).toBe(404);
      await res.arrayBuffer();
    }
    const privateFile = await (async () => {
      const form = new FormData();
      form.append('userId', 'ranges');
      form.append('purpose', 'image');
      form.append('file', new Blob([new Uint8Array(original)]), 'p.jpg');
      return (await (await fetch(`${t.url}/v1/files`, { method: 'POST', headers: { authorization: `Bearer ${t.apiKey}` }, body: form })).json()) as FileJson;
    })();
    const signed = privateFile.variants[3]!.url.replace(t.url, nginx.url);
    expect((await fetch(signed)).status).toBe(200);
    expect((await fetch(signed.replace(/sig=.{4}/, 'sig=AAAA'))).status).toBe(403);
    expect((await fetch(signed.split('?')[0]!)).status).toBe(401);
    expect(await readFile(errorLog, 'utf8').catch(() => '')).toBe(before);

    // The access log is flushed every second.
    const accessLog = path.join(nginx.prefix, 'access.log');
    await expect.poll(async () => await readFile(accessLog, 'utf8').catch(() => ''), { timeout: 5000 }).toContain('"GET /f/<token>/3 HTTP/1.1" 200');
    const log = await readFile(accessLog, 'utf8');
    const token = new URL(signed).pathname.split('/')[2]!;
    expect(log).toContain('"GET /f/<token>/3 HTTP/1.1" 200');
    expect(log).toContain('"GET /f/<token>/3 HTTP/1.1" 404');
    expect(log).not.toContain(token);
    expect(log).not.toContain('sig=');
    expect(log).not.toMatch(/\/f\/[0-9a-f]{32}/);
  });

  it('operator endpoints are not served on the public nginx listener; Chipmunk still answers them itself', async () => {
    for (const p of ['/metrics', '/ready']) {
      const res = await fetch(`${nginx.url}${p}`);
      expect(res.status, p).toBe(404);
      expect(res.headers.get('content-type')).toBe('application/json');
      expect(await res.text()).not.toMatch(/ffmpeg|disk|chipmunk_/i);
      expect((await fetch(`${t.url}${p}`)).status, p).toBe(200);
    }
    expect((await fetch(`${nginx.url}/health`)).status).toBe(200);
    expect((await fetch(`${nginx.url}/openapi.json`)).status).toBe(200);
  });
});
