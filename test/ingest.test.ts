import { createHash } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { ChipmunkError, createChipmunk, type ChipmunkClient, type ChipmunkFile } from 'chipmunk/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends, readBlob, uploadAreaIds } from './helpers/backends.js';
import { corpus, storedForm, type TestChipmunk } from './helpers/chipmunk.js';
import { rawRequest } from './helpers/http.js';
import { tusUpload } from './helpers/tus.js';
import { creationBudget } from '../src/services/budget.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe.each(backends)('$name', (backend) => {
  let t: TestChipmunk;
  let kit: ChipmunkClient;
  let photo: Buffer;
  let png: Buffer;

  beforeAll(async () => {
    t = await backend.start();
    kit = createChipmunk({ baseUrl: t.url, apiKey: t.apiKey, secret: t.secret });
    photo = await storedForm(corpus('images/photos/portrait-canal.jpg'));
    png = await readFile(corpus('images/color/png8-rgba-basn6a08.png'));
  });
  afterAll(() => t?.close());

  /** Names in a local data folder (the ingest spool is each node's own, in both modes), ignoring dot files. */
  async function entries(dir: string): Promise<string[]> {
    try {
      const found = await readdir(path.join(t.dataDir, dir), { recursive: true, withFileTypes: true });
      return found.filter((d) => d.isFile() && !d.name.startsWith('.')).map((d) => path.join(d.parentPath, d.name));
    } catch {
      return [];
    }
  }

  /** A refused upload leaves nothing: no charge, no reservation, no bytes in any data folder. */
  async function expectNothingLeft(userId: string) {
    expect(await kit.getUser(userId)).toMatchObject({ usedBytes: 0, reservedBytes: 0, fileCount: 0 });
    expect((await t.chipmunk.inspect.usageFromFiles()).filter((u) => u.userId === userId)).toEqual([]);
    // The media folders (key prefixes in a bucket) that hold anything and belong to the user.
    const folders: string[] = [];
    for await (const id of t.chipmunk.storage.listFolders()) if ((await t.chipmunk.storage.listNames(id)).length > 0) folders.push(id);
    const owners = await Promise.all(folders.map(async (id) => (await t.chipmunk.inspect.file(id))?.userId));
    const mediaOfUser = folders.filter((_f, i) => owners[i] === userId);
    expect(mediaOfUser).toEqual([]);
    expect(await entries('ingest')).toEqual([]);
    expect(await uploadAreaIds(t)).toEqual([]);
  }

  /** The structure of a file JSON: its keys and the type of each value, variants included. */
  function shapeOf(file: ChipmunkFile): unknown {
    const typeOf = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);
    return {
      keys: Object.fromEntries(Object.entries(file).map(([k, v]) => [k, typeOf(v)])),
      variants: file.variants.map((v) => Object.fromEntries(Object.entries(v).map(([k, x]) => [k, typeOf(x)]))),
    };
  }

  async function* repeat(chunk: Buffer, times: number) {
    for (let i = 0; i < times; i++) yield chunk;
  }

  function multipartParts(fields: Record<string, string>, file: { name?: string; filename: string; type?: string }, boundary = 'XyZboundary42') {
    let head = '';
    for (const [k, v] of Object.entries(fields)) head += `--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`;
    head += `--${boundary}\r\nContent-Disposition: form-data; name="${file.name ?? 'file'}"; filename="${file.filename}"\r\nContent-Type: ${file.type ?? 'application/octet-stream'}\r\n\r\n`;
    return { head: Buffer.from(head), tail: Buffer.from(`\r\n--${boundary}--\r\n`), contentType: `multipart/form-data; boundary=${boundary}` };
  }

  describe('POST /v1/files through the kit', () => {
    it('stores a base64 avatar and a multipart file with the same file JSON shape as tus', async () => {
      const token = await t.uploadToken('shape', 'avatar');
      const viaTus = await tusUpload(`${t.url}/uploads`, photo, { token, metadata: { filename: 'me.jpg', filetype: 'image/jpeg' } });
      if (!viaTus.ok) throw viaTus.error;
      const tusFile = viaTus.body as ChipmunkFile;

      const viaBase64 = await kit.uploadBase64({ userId: 'shape', purpose: 'avatar', filename: 'me.jpg', data: photo.toString('base64') });
      const viaDataUri = await kit.uploadBase64({
        userId: 'shape',
        purpose: 'avatar',
        filename: 'me.jpg',
        data: `data:image/jpeg;base64,${photo.toString('base64')}`,
      });
      const viaBuffer = await kit.uploadBuffer({ userId: 'shape', purpose: 'avatar', filename: 'me.jpg', data: photo, mimeType: 'image/jpeg' });
      const viaPath = await kit.uploadPath({
        userId: 'shape',
        purpose: 'avatar',
        path: corpus('images/photos/portrait-canal.jpg'),
        filename: 'me.jpg',
        mimeType: 'image/jpeg',
      });

      for (const file of [viaBase64, viaDataUri, viaBuffer, viaPath]) {
        expect(shapeOf(file)).toEqual(shapeOf(tusFile));
        expect(file).toMatchObject({
          userId: 'shape',
          purpose: 'avatar',
          status: 'ready',
          filename: 'me.jpg',
          mimeType: 'image/jpeg',
          bytes: photo.length,
          visibility: 'public',
        });
        expect(file.id).not.toBe(tusFile.id);
        expect(await kit.getFile(file.id)).toEqual(file);
        const stored = await readBlob(t, file.id, '0.jpg');
        expect(sha256(stored)).toBe(sha256(photo));
      }
      const user = await kit.getUser('shape');
      expect(user).toMatchObject({ reservedBytes: 0, fileCount: 5 });
      expect(user.usedBytes).toBe([tusFile, viaBase64, viaDataUri, viaBuffer, viaPath].reduce((s, f) => s + f.totalBytes, 0));
      expect(await entries('ingest')).toEqual([]);
    });

    it('takes an upload token instead of the API key; the token decides user and purpose', async () => {
      const { token } = await kit.signUploadToken({ userId: 'signup', purpose: 'avatar', expiresIn: 600 });
      const res = await fetch(`${t.url}/v1/files`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ filename: 'avatar.png', data: `data:image/png;base64,${png.toString('base64')}` }),
      });
      expect(res.status).toBe(201);
      const file = (await res.json()) as ChipmunkFile;
      expect(file).toMatchObject({ userId: 'signup', purpose: 'avatar', mimeType: 'image/png', bytes: png.length });

      const widened = await fetch(`${t.url}/v1/files`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ purpose: 'audio', data: png.toString('base64') }),
      });
      expect(widened.status).toBe(403);
      const otherUser = await fetch(`${t.url}/v1/files`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ userId: 'mallory', data: png.toString('base64') }),
      });
      expect(otherUser.status).toBe(403);

      // Multipart with the token: no fields needed.
      const { head, tail, contentType } = multipartParts({}, { filename: 'a.png', type: 'image/png' });
      const multipart = await rawRequest(`${t.url}/v1/files`, {
        headers: { authorization: `Bearer ${token}`, 'content-type': contentType },
        body: [head, png, tail],
      });
      expect(multipart.status).toBe(201);
      expect(JSON.parse(multipart.body)).toMatchObject({ userId: 'signup', purpose: 'avatar', bytes: png.length, filename: 'a.png' });

      // Neither the key nor a valid token: 401, and the other /v1 routes still want the key.
      const forged = await fetch(`${t.url}/v1/files`, {
        method: 'POST',
        headers: { authorization: 'Bearer nope', 'content-type': 'application/json' },
        body: '{}',
      });
      expect(forged.status).toBe(401);
      expect((await fetch(`${t.url}/v1/files/${file.id}`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
      expect(await kit.getUser('mallory')).toMatchObject({ usedBytes: 0, reservedBytes: 0 });
    });

    it('works through app.request too (a web Request, no Node socket)', async () => {
      const app = t.chipmunk.app;
      const json = await app.request('/v1/files', {
        method: 'POST',
        headers: { authorization: `Bearer ${t.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ userId: 'webreq', purpose: 'avatar', filename: 'a.png', data: png.toString('base64') }),
      });
      expect(json.status).toBe(201);
      const form = new FormData();
      form.set('userId', 'webreq');
      form.set('purpose', 'image');
      form.set('file', new Blob([new Uint8Array(photo)], { type: 'image/jpeg' }), 'canal.jpg');
      const multipart = await app.request('/v1/files', { method: 'POST', headers: { authorization: `Bearer ${t.apiKey}` }, body: form });
      expect(multipart.status).toBe(201);
      expect(await multipart.json()).toMatchObject({ userId: 'webreq', filename: 'canal.jpg', bytes: photo.length });
      const noBoundary = await app.request('/v1/files', {
        method: 'POST',
        headers: { authorization: `Bearer ${t.apiKey}`, 'content-type': 'multipart/form-data' },
        body: 'x',
      });
      expect(noBoundary.status).toBe(400);
      expect(await kit.getUser('webreq')).toMatchObject({ fileCount: 2, reservedBytes: 0 });
    });

    it('streams a file without a declared size (chunked) and charges its real size', async () => {
      const file = await kit.uploadStream({ userId: 'streamer', purpose: 'image', filename: 'canal.jpg', stream: repeat(photo, 1) });
      expect(file).toMatchObject({ bytes: photo.length, userId: 'streamer' });
      expect(await kit.getUser('streamer')).toMatchObject({ usedBytes: file.totalBytes, reservedBytes: 0 });
    });
  });

  describe('refusals leave nothing', () => {
    it('malformed base64 → 400', async () => {
      for (const data of ['not base64 at all!', 'QUJD=A', 'QUJDR', `data:image/jpeg,${photo.subarray(0, 10).toString('hex')}`]) {
        const err = await kit.uploadBase64({ userId: 'bad64', purpose: 'avatar', data }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(ChipmunkError);
        expect(err).toMatchObject({ status: 400, code: 'INVALID_INPUT' });
      }
      await expectNothingLeft('bad64');
    });

    it('a data: URI whose type disagrees with the bytes → 415', async () => {
      const lie = await kit
        .uploadBase64({ userId: 'liar', purpose: 'avatar', data: `data:image/png;base64,${photo.toString('base64')}` })
        .catch((e: unknown) => e);
      expect(lie).toMatchObject({ status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' });
      expect((lie as Error).message).toMatch(/image\/png.*image\/jpeg/);
      const notMedia = await kit
        .uploadBase64({ userId: 'liar', purpose: 'avatar', data: `data:text/plain;base64,${photo.toString('base64')}` })
        .catch((e: unknown) => e);
      expect(notMedia).toMatchObject({ status: 415 });
      const svg = await readFile(corpus('images/formats/svg-simple-check.svg'));
      const svgAsPng = await kit
        .uploadBase64({ userId: 'liar', purpose: 'avatar', data: `data:image/png;base64,${svg.toString('base64')}` })
        .catch((e: unknown) => e);
      expect(svgAsPng).toMatchObject({ status: 415 });
      await expectNothingLeft('liar');
    });

    it('bytes that are not media → 422, through base64 and multipart', async () => {
      const text = Buffer.from('just some text, not an image '.repeat(50));
      expect(await kit.uploadBase64({ userId: 'texter', purpose: 'avatar', data: text.toString('base64') }).catch((e: unknown) => e)).toMatchObject({
        status: 422,
      });
      expect(await kit.uploadBuffer({ userId: 'texter', purpose: 'avatar', data: text }).catch((e: unknown) => e)).toMatchObject({ status: 422 });
      await expectNothingLeft('texter');
    });

    it('an oversized JSON body → 413, by Content-Length and, without one, while streaming', async () => {
      // 25 MB of base64 is past what an avatar (20 MB) can need, so the token's purpose caps the body.
      const { token } = await kit.signUploadToken({ userId: 'bigjson', purpose: 'avatar' });
      const big = Buffer.alloc(28_000_000, 'A');
      const prefix = Buffer.from('{"data":"');
      const suffix = Buffer.from('"}');
      const withLength = await rawRequest(`${t.url}/v1/files`, {
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': String(prefix.length + big.length + suffix.length) },
        body: [prefix, big, suffix],
      });
      expect(withLength.status).toBe(413);
      expect(JSON.parse(withLength.body).error.message).toMatch(/^JSON upload bodies may be at most 26\.7 MB for "avatar"/);
      // No Content-Length and a body that never closes its JSON: only the running count can stop it.
      let sent = 0;
      const chunked = await rawRequest(`${t.url}/v1/files`, {
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: (async function* () {
          yield prefix;
          for (let i = 0; i < 100; i++, sent += 1_000_000) yield big.subarray(0, 1_000_000);
        })(),
      });
      expect(chunked.status).toBe(413);
      // Decoded as it streams: the purpose's limit on the decoded bytes stops it first.
      expect(JSON.parse(chunked.body).error.message).toMatch(/^(JSON upload bodies|Files for "avatar") may be at most/);
      expect(sent).toBeLessThan(100_000_000);
      // With the API key the purpose is only known once parsed: the decoded size decides.
      const overAvatar = await kit
        .uploadBase64({ userId: 'bigjson', purpose: 'avatar', data: Buffer.concat([photo, Buffer.alloc(21_000_000)]).toString('base64') })
        .catch((e: unknown) => e);
      expect(overAvatar).toMatchObject({ status: 413, code: 'FILE_TOO_LARGE' });
      await expectNothingLeft('bigjson');
    });

    it('an oversized multipart file → 413, by Content-Length and, without one, while streaming', async () => {
      const { token } = await kit.signUploadToken({ userId: 'bigform', purpose: 'avatar' });
      const { head, tail, contentType } = multipartParts({}, { filename: 'huge.jpg' });
      const padding = Buffer.alloc(1_000_000, 1);
      const body = () =>
        (async function* () {
          yield head;
          yield photo;
          for (let i = 0; i < 21; i++) yield padding;
          yield tail;
        })();
      const size = head.length + photo.length + 21 * padding.length + tail.length;
      const withLength = await rawRequest(`${t.url}/v1/files`, {
        headers: { authorization: `Bearer ${token}`, 'content-type': contentType, 'content-length': String(size) },
        body: body(),
      });
      expect(withLength.status).toBe(413);
      const chunked = await rawRequest(`${t.url}/v1/files`, { headers: { authorization: `Bearer ${token}`, 'content-type': contentType }, body: body() });
      expect(chunked.status).toBe(413);
      expect(JSON.parse(chunked.body).error).toMatchObject({ code: 'FILE_TOO_LARGE', message: expect.stringMatching(/"avatar" may be at most 20 MB/) });
      // The kit, with the API key: the declared size is refused before a byte is written.
      const viaKit = await kit.uploadStream({ userId: 'bigform', purpose: 'avatar', stream: body(), size }).catch((e: unknown) => e);
      expect(viaKit).toMatchObject({ status: 413, code: 'FILE_TOO_LARGE' });
      await expectNothingLeft('bigform');
    });

    it('a quota overflow → 413 QUOTA_EXCEEDED, for base64 and multipart, with and without a declared size', async () => {
      await kit.setQuota('tight', photo.length - 1);
      const base64 = await kit.uploadBase64({ userId: 'tight', purpose: 'image', data: photo.toString('base64') }).catch((e: unknown) => e);
      expect(base64).toMatchObject({ status: 413, code: 'QUOTA_EXCEEDED' });
      const sized = await kit.uploadBuffer({ userId: 'tight', purpose: 'image', data: photo }).catch((e: unknown) => e);
      expect(sized).toMatchObject({ status: 413, code: 'QUOTA_EXCEEDED' });
      const unsized = await kit.uploadStream({ userId: 'tight', purpose: 'image', stream: repeat(photo, 1) }).catch((e: unknown) => e);
      expect(unsized).toMatchObject({ status: 413, code: 'QUOTA_EXCEEDED' });
      await expectNothingLeft('tight');
      expect((await kit.getUser('tight')).quotaBytes).toBe(photo.length - 1);
      // Exactly the photo's size is not enough: its variants must fit too (README, "Quota budget").
      await kit.setQuota('tight', photo.length);
      const variantsDoNotFit = await kit.uploadStream({ userId: 'tight', purpose: 'image', stream: repeat(photo, 1) }).catch((e: unknown) => e);
      expect(variantsDoNotFit).toMatchObject({ status: 413, code: 'QUOTA_EXCEEDED' });
      await expectNothingLeft('tight');
      // The photo and its budget fit; what it really weighs is charged, never more than the quota.
      const quota = photo.length + creationBudget('image', photo.length);
      await kit.setQuota('tight', quota);
      const fits = await kit.uploadStream({ userId: 'tight', purpose: 'image', stream: repeat(photo, 1) });
      expect(fits.bytes).toBe(photo.length);
      expect(await kit.getUser('tight')).toMatchObject({ usedBytes: fits.totalBytes, reservedBytes: 0 });
      expect(fits.totalBytes).toBeLessThanOrEqual(quota);
    });

    it('malformed forms → 400: no file, fields after the file, a wrong declared size, two files', async () => {
      const send = (fields: Record<string, string>, file: Buffer | undefined, extra = '') => {
        const { head, tail, contentType } = multipartParts(fields, { filename: 'x.jpg' });
        const body = file ? [head, file, Buffer.from(extra), tail] : [Buffer.from('--XyZboundary42--\r\n')];
        return rawRequest(`${t.url}/v1/files`, { headers: { authorization: `Bearer ${t.apiKey}`, 'content-type': contentType }, body });
      };
      expect((await send({ userId: 'form', purpose: 'image' }, undefined)).status).toBe(400);
      expect((await send({ userId: 'form' }, photo)).status).toBe(400);
      expect((await send({ userId: 'form', purpose: 'image', size: String(photo.length + 5) }, photo)).status).toBe(400);
      expect((await send({ userId: 'form', purpose: 'image', size: String(photo.length - 5) }, photo)).status).toBe(400);
      const twoFiles = `\r\n--XyZboundary42\r\nContent-Disposition: form-data; name="file"; filename="y.jpg"\r\n\r\nxyz`;
      expect((await send({ userId: 'form', purpose: 'image' }, photo, twoFiles)).status).toBe(400);
      expect((await t.api('/v1/files', { method: 'POST', body: 'hello', headers: { 'content-type': 'text/plain' } })).status).toBe(415);
      expect((await t.api('/v1/files', { method: 'POST', body: '{', headers: { 'content-type': 'application/json' } })).status).toBe(400);
      await expectNothingLeft('form');
    });

    it('a client that disconnects mid-upload leaves nothing behind', async () => {
      const { head, contentType } = multipartParts({ userId: 'quitter', purpose: 'image' }, { filename: 'cut.jpg' });
      await new Promise<void>((resolve) => {
        const req = http.request(`${t.url}/v1/files`, {
          method: 'POST',
          headers: { authorization: `Bearer ${t.apiKey}`, 'content-type': contentType, 'content-length': '40000000' },
        });
        req.on('error', () => resolve());
        req.write(head);
        req.write(photo);
        req.write(Buffer.alloc(2_000_000, 3), () => {
          // Cut the connection only once the server has reserved and is writing the file.
          void expect
            .poll(async () => (await kit.getUser('quitter')).reservedBytes)
            .toBeGreaterThan(0)
            .then(() => {
              req.destroy();
              resolve();
            });
        });
      });
      await expect.poll(async () => (await kit.getUser('quitter')).reservedBytes).toBe(0);
      await expect.poll(() => entries('ingest')).toEqual([]);
      await expectNothingLeft('quitter');
    });

    it('a restart releases uploads an earlier process was still receiving', async () => {
      const file = await t.chipmunk.uploads.reserve({ userId: 'crashed', purpose: 'image', length: 5000, filename: 'x.jpg' });
      await writeFile(path.join(t.dataDir, 'ingest', file.id), photo.subarray(0, 1000));
      expect((await kit.getUser('crashed')).reservedBytes).toBe(5000 + creationBudget('image', 5000));
      const { createIngest } = await import('../src/uploads/ingest.js');
      const ingest = createIngest({
        dir: path.join(t.dataDir, 'ingest'),
        uploads: t.chipmunk.uploads,
        repo: t.chipmunk.repo,
        purposes: {
          get: () => {
            throw new Error('unused');
          },
          all: () => [],
        },
        defaultQuotaBytes: 1e9,
        logger: t.chipmunk.logger,
        maxBase64Bytes: 1e6,
      });
      expect(await ingest.recoverInterrupted()).toBe(1);
      await expectNothingLeft('crashed');
    });
  });
});
