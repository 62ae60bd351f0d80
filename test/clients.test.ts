import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends, hasFolder, receivedIds, uploadAreaIds } from './helpers/backends.js';
import { corpus, type TestChipmunk } from './helpers/chipmunk.js';
import { tusUpload } from './helpers/tus.js';

// Clients nobody here wrote, configured the way real apps configure them: mobile pickers and Uppy
// send application/octet-stream (or nothing) for files they cannot type; proxies that block PATCH
// need tus-js-client's overridePatchMethod. On the distributed backend the bytes go through
// @tus/s3-store into the bucket, and the verdict at completion reads them back from there.

type FileJson = { id: string; kind: string; status: string; mimeType: string | null; purpose: string };

describe.each(backends)('$name', (backend) => {
  let t: TestChipmunk;

  beforeAll(async () => {
    t = await backend.start();
  }, 60_000);
  afterAll(() => t?.close());

  const fileOf = async (uploadUrl: string) => (await (await t.api(`/v1/files/${uploadUrl.split('/').pop()}`)).json()) as FileJson;

  describe('types a client cannot tell', () => {
    // The bytes reach the sniffer the same way whatever their format (the whole upload fetched into
    // local scratch), so the distributed twin takes one case of each list: the rest is media work.
    const onBackend = <T>(cases: T[]) => (backend.name === 'embedded' ? cases : cases.slice(0, 1));

    it.each(
      onBackend<[string, string, string | RegExp]>([
        ['FLAC', 'flac-vorbis-picture.flac', 'audio/flac'],
        ['Opus', 'opus-cover.opus', /^audio\/(ogg|opus)/],
        ['M4A', 'm4a-aac-cover.m4a', /^audio\/(mp4|m4a|x-m4a|aac)/],
      ]),
    )('an application/octet-stream %s through tus-js-client becomes a track', async (_name, file, mime) => {
      const token = await t.uploadToken('mobile', 'audio');
      const bytes = await readFile(corpus('audio/ok', file));
      const result = await tusUpload(`${t.url}/uploads`, bytes, { token, metadata: { filename: file, filetype: 'application/octet-stream' } });
      expect(result.ok, result.ok ? '' : `${result.status} ${result.body}`).toBe(true);
      if (!result.ok) return;
      const json = await fileOf(result.url);
      expect(json.kind).toBe('audio');
      expect(['processing', 'ready']).toContain(json.status);
      expect(json.mimeType).toMatch(mime);
      expect(await hasFolder(t, json.id)).toBe(true);
    });

    it.each(
      onBackend<[string, string | undefined]>([
        ['no filetype at all', undefined],
        ['an empty filetype', ''],
        ['a type with parameters', 'audio/wav; codecs=1'],
      ]),
    )('%s is judged by the bytes at completion', async (_name, filetype) => {
      const token = await t.uploadToken('mobile', 'audio');
      const bytes = await readFile(corpus('audio/ok/wav-pcm8-notags.wav'));
      const metadata: Record<string, string> = { filename: 'take.wav' };
      if (filetype !== undefined) metadata.filetype = filetype;
      const result = await tusUpload(`${t.url}/uploads`, bytes, { token, metadata });
      expect(result.ok, result.ok ? '' : `${result.status} ${result.body}`).toBe(true);
      if (result.ok) expect((await fileOf(result.url)).kind).toBe('audio');
    });

    it('an octet-stream upload whose bytes are not what the purpose takes is refused at completion, with the reservation released', async () => {
      const token = await t.uploadToken('mobile-2', 'audio');
      const bytes = await readFile(corpus('images/photos/portrait-canal.jpg'));
      const result = await tusUpload(`${t.url}/uploads`, bytes, { token, metadata: { filename: 'x.bin', filetype: 'application/octet-stream' } });
      expect(result.ok).toBe(false);
      if (result.ok) return;
      expect(result.status).toBe(415);
      expect(JSON.parse(result.body!).error.message).toMatch(/audio/);
      const user = (await (await t.api('/v1/users/mobile-2')).json()) as { usedBytes: number; reservedBytes: number };
      expect(user).toMatchObject({ usedBytes: 0, reservedBytes: 0 });
      // Nothing left behind where the bytes went (the data directory or the bucket).
      const id = result.error.message.match(/\/uploads\/([^/\s,]+)/)?.[1];
      expect(id).toBeTruthy();
      expect(await uploadAreaIds(t)).not.toContain(id);
      expect(await receivedIds(t)).not.toContain(id);
      expect(await hasFolder(t, id!)).toBe(false);
    });

    it('a declared type that is definitely wrong for the purpose is still refused at creation', async () => {
      const token = await t.uploadToken('mobile-3', 'audio');
      const result = await tusUpload(`${t.url}/uploads`, Buffer.alloc(1000), { token, metadata: { filename: 'a.pdf', filetype: 'application/pdf' } });
      expect(result.ok).toBe(false);
      if (result.ok) return;
      expect(result.status).toBe(415);
      expect(JSON.parse(result.body!).error.message).toBe('"audio" uploads take audio files; "application/pdf" is not one.');
    });
  });

  describe('proxies that block PATCH', () => {
    it('tus-js-client with overridePatchMethod uploads (POST + X-HTTP-Method-Override), in chunks', async () => {
      const token = await t.uploadToken('behind-proxy', 'image');
      const bytes = await readFile(corpus('images/photos/portrait-canal.jpg'));
      const methods: string[] = [];
      const result = await tusUpload(`${t.url}/uploads`, bytes, {
        token,
        overridePatchMethod: true,
        chunkSize: Math.ceil(bytes.length / 3),
        metadata: { filename: 'canal.jpg', filetype: 'image/jpeg' },
        onBeforeRequest: (req) => {
          methods.push(`${req.getMethod()} ${req.getHeader('X-HTTP-Method-Override') ?? ''}`.trim());
        },
      });
      expect(result.ok, result.ok ? '' : `${result.status} ${result.body}`).toBe(true);
      if (!result.ok) return;
      // Every chunk went as a POST carrying the override; none as a real PATCH.
      expect(methods).toEqual(['POST', 'POST PATCH', 'POST PATCH', 'POST PATCH']);
      const json = await fileOf(result.url);
      expect(json).toMatchObject({ kind: 'image', purpose: 'image' });
      expect(['processing', 'ready']).toContain(json.status);
      const user = (await (await t.api('/v1/users/behind-proxy')).json()) as { reservedBytes: number; fileCount: number };
      expect(user).toMatchObject({ reservedBytes: 0, fileCount: 1 });
    });
  });
});
