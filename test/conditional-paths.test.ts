import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends } from './helpers/backends.js';
import { corpus, type TestChipmunk } from './helpers/chipmunk.js';
import { startNginx, type TestNginx } from './helpers/nginx.js';

// Conditional and range requests answered alike by Chipmunk alone and by the rendered nginx (its
// static module decides there): the same status and Content-Range for each combination of
// If-None-Match, If-Modified-Since, Range and If-Range a browser or a player sends.

describe.each(backends)('conditional requests on both delivery paths: $name', (backend) => {
  let t: TestChipmunk;
  let nginx: TestNginx;
  let url: string;
  let etag: string;
  let lastModified: string;
  let size: number;

  beforeAll(async () => {
    t = await backend.start();
    nginx = await startNginx(t);
    const form = new FormData();
    form.append('userId', 'conditional');
    form.append('purpose', 'avatar');
    form.append('file', new Blob([await readFile(corpus('images/photos/portrait-canal.jpg'))]), 'canal.jpg');
    const file = (await (await fetch(`${t.url}/v1/files`, { method: 'POST', headers: { authorization: `Bearer ${t.apiKey}` }, body: form })).json()) as {
      variants: Array<{ url: string }>;
    };
    url = file.variants[0]!.url;
    const first = await fetch(url);
    etag = first.headers.get('etag')!;
    lastModified = first.headers.get('last-modified')!;
    size = Number(first.headers.get('content-length'));
    // The validators are the same on both paths.
    const viaNginx = await fetch(url.replace(t.url, nginx.url));
    expect([viaNginx.headers.get('etag'), viaNginx.headers.get('last-modified')]).toEqual([etag, lastModified]);
  }, 60_000);
  afterAll(async () => {
    await nginx?.close();
    await t?.close();
  });

  const shifted = (seconds: number) => new Date(Date.parse(lastModified) + seconds * 1000).toUTCString();
  const asctime = (httpDate: string) => {
    const d = new Date(Date.parse(httpDate));
    const day = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'][d.getUTCDay()];
    const month = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'][d.getUTCMonth()];
    const pad = (n: number) => String(n).padStart(2, '0');
    return `${day} ${month} ${String(d.getUTCDate()).padStart(2, ' ')} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} ${d.getUTCFullYear()}`;
  };

  const rfc850 = (httpDate: string) => {
    const d = new Date(Date.parse(httpDate));
    const day = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'][d.getUTCDay()];
    const [, dd, mon, yyyy, time] = /^\w+, (\d{2}) (\w{3}) (\d{4}) (\S+) GMT$/.exec(httpDate)!;
    return `${day}, ${dd}-${mon}-${yyyy!.slice(2)} ${time} GMT`;
  };

  const cases: Array<[string, () => Record<string, string>]> = [
    ['If-None-Match: the ETag', () => ({ 'If-None-Match': etag })],
    ['If-None-Match: the weak ETag', () => ({ 'If-None-Match': `W/${etag}` })],
    ['If-None-Match: in a list', () => ({ 'If-None-Match': `"x", ${etag}` })],
    ['If-None-Match: *', () => ({ 'If-None-Match': '*' })],
    ['If-None-Match: another', () => ({ 'If-None-Match': '"other"' })],
    ['If-Modified-Since: Last-Modified', () => ({ 'If-Modified-Since': lastModified })],
    ['If-Modified-Since: a minute later', () => ({ 'If-Modified-Since': shifted(60) })],
    ['If-Modified-Since: a minute earlier', () => ({ 'If-Modified-Since': shifted(-60) })],
    ['If-Modified-Since: not a date', () => ({ 'If-Modified-Since': 'yesterday' })],
    ['both, both matching', () => ({ 'If-None-Match': etag, 'If-Modified-Since': lastModified })],
    ['both, only the ETag matching', () => ({ 'If-None-Match': etag, 'If-Modified-Since': shifted(-60) })],
    ['both, only the date matching', () => ({ 'If-None-Match': '"other"', 'If-Modified-Since': lastModified })],
    ['Range', () => ({ Range: 'bytes=0-9' })],
    ['Range, If-Range: the ETag', () => ({ Range: 'bytes=0-9', 'If-Range': etag })],
    ['Range, If-Range: the weak ETag', () => ({ Range: 'bytes=0-9', 'If-Range': `W/${etag}` })],
    ['Range, If-Range: another ETag', () => ({ Range: 'bytes=0-9', 'If-Range': '"other"' })],
    ['Range, If-Range: Last-Modified', () => ({ Range: 'bytes=0-9', 'If-Range': lastModified })],
    ['Range, If-Range: Last-Modified in asctime form', () => ({ Range: 'bytes=0-9', 'If-Range': asctime(lastModified) })],
    ['Range, If-Range: an earlier date', () => ({ Range: 'bytes=0-9', 'If-Range': shifted(-60) })],
    ['Range, If-Range: a later date', () => ({ Range: 'bytes=0-9', 'If-Range': shifted(60) })],
    ['Range and a matching If-None-Match', () => ({ Range: 'bytes=0-9', 'If-None-Match': etag })],
    ['If-Match: the ETag', () => ({ 'If-Match': etag })],
    ['If-Match: another', () => ({ 'If-Match': '"other"' })],
    ['If-Unmodified-Since: Last-Modified', () => ({ 'If-Unmodified-Since': lastModified })],
    ['If-Unmodified-Since: earlier', () => ({ 'If-Unmodified-Since': shifted(-60) })],
    ['If-Unmodified-Since: later', () => ({ 'If-Unmodified-Since': shifted(60) })],
    ['If-Unmodified-Since: not a date', () => ({ 'If-Unmodified-Since': 'yesterday' })],
    ['If-Match: another, with a Range', () => ({ 'If-Match': '"other"', Range: 'bytes=0-9' })],
    ['If-Modified-Since: Last-Modified in RFC 850 form', () => ({ 'If-Modified-Since': rfc850(lastModified) })],
  ];

  it('refuses a failed precondition from Chipmunk alone in JSON, never cached', async () => {
    const res = await fetch(url, { headers: { 'If-Match': '"other"' } });
    expect(res.status).toBe(412);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('PRECONDITION_FAILED');
  });

  it.each(cases)('%s', async (_name, headers) => {
    const answers = [];
    for (const base of [t.url, nginx.url]) {
      const res = await fetch(url.replace(t.url, base), { headers: headers() }).catch((err: Error) => {
        // Say which path dropped the connection, and why (undici hides it in the cause).
        throw new Error(`${base === t.url ? 'Chipmunk alone' : 'nginx'}: ${err.message} (${String((err.cause as Error | undefined)?.message)})`);
      });
      const body = Buffer.from(await res.arrayBuffer());
      answers.push({
        status: res.status,
        contentRange: res.headers.get('content-range'),
        bytes: res.status === 200 ? body.length : res.status === 206 ? body.length : 0,
      });
    }
    expect(answers[0], 'Chipmunk alone').toEqual(answers[1]);
    expect(size).toBeGreaterThan(10);
  });
});
