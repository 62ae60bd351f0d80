import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import sharp, { type SharpOptions } from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends, readBlob, type Backend } from './helpers/backends.js';
import { corpus, type TestChipmunk } from './helpers/chipmunk.js';
import { startNginx, type TestNginx } from './helpers/nginx.js';
import { tusUpload } from './helpers/tus.js';

// Issue 17 end to end: iPhone HEIC in (decoded by libheif in a bounded child), AVIF rungs out for
// purposes that ask, chosen by Accept with Vary: Accept through Chipmunk alone and real nginx.

type Format = { mimeType: string; bytes: number; url: string };
type Variant = { n: number; width?: number; height?: number; bytes: number; mimeType: string; url: string; formats?: Format[] };
type FileJson = { id: string; mimeType: string; width?: number; height?: number; bytes: number; totalBytes: number; variants: Variant[] };
type UserJson = { usedBytes: number; reservedBytes: number; fileCount: number };

const heicPath = corpus('images/formats/heic-iphone8plus-orientation6.heic');
const AVIF_ACCEPT = 'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8'; // Chrome's
const WEBP_ACCEPT = 'image/webp,*/*'; // a browser without AVIF

/** The server of the suite running now (each describe below starts its own in beforeAll). */
let t: TestChipmunk;
let work: string;
let purposes: string;
let userSeq = 0;

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'chipmunk-formats-'));
  purposes = path.join(work, 'purposes.json');
  await writeFile(
    purposes,
    JSON.stringify({
      photo: { kinds: ['image'], maxBytes: 20_000_000, visibility: 'public', formats: ['webp', 'avif'] },
      'private-photo': { kinds: ['image'], maxBytes: 20_000_000, visibility: 'private', formats: ['webp', 'avif'] },
      plain: { kinds: ['image'], maxBytes: 20_000_000, visibility: 'public' },
    }),
  );
});
afterAll(() => rm(work, { recursive: true, force: true }));

/** Starts the suite's server on `backend` (with the purposes above) before its tests, and closes it after them. */
function serverOn(backend: Backend) {
  beforeAll(async () => {
    t = await backend.start({ CHIPMUNK_PURPOSES_FILE: purposes });
  });
  afterAll(() => t?.close());
}

async function upload(server: TestChipmunk, data: Buffer, purpose: string, filename: string) {
  const userId = `f${++userSeq}`;
  const token = await server.uploadToken(userId, purpose);
  const result = await tusUpload(`${server.url}/uploads`, data, { token, metadata: { filename } });
  return { result, userId };
}
async function uploadOk(data: Buffer, purpose: string, filename: string): Promise<FileJson> {
  const { result } = await upload(t, data, purpose, filename);
  if (!result.ok) throw new Error(`${filename}: ${result.status} ${result.body}`);
  return result.body as FileJson;
}
const user = async (server: TestChipmunk, id: string) => (await (await server.api(`/v1/users/${id}`)).json()) as UserJson;
/** A WebP rung's bytes as stored. */
const rung = (file: FileJson, n: number) => readBlob(t, file.id, `${n}.webp`);

/** Rows (0 = top) of the first and last pixel darker than the paper in a greyscale picture. */
async function inkRows(input: Buffer): Promise<{ first: number; last: number; height: number }> {
  const { data, info } = await sharp(input).greyscale().raw().toBuffer({ resolveWithObject: true });
  const rows: number[] = [];
  for (let y = 0; y < info.height; y++) {
    for (let x = 0; x < info.width; x++)
      if (data[y * info.width + x]! < 70) {
        rows.push(y);
        break;
      }
  }
  return { first: rows[0]!, last: rows[rows.length - 1]!, height: info.height };
}

describe.each(backends)('$name', (backend) => {
  serverOn(backend);

  describe('HEIC uploads', () => {
    it('turns the real iPhone HEIC (grid tiles, irot 90° + EXIF 6, Display P3) into an upright sRGB ladder at the right size', async () => {
      const data = await readFile(heicPath);
      const { result, userId } = await upload(t, data, 'plain', 'IMG_0001.HEIC');
      expect(result.ok, result.ok ? '' : String(result.body)).toBe(true);
      if (!result.ok) return;
      const file = result.body as FileJson;
      // 4032 × 3024 coded, turned a quarter by irot: portrait. Turned again by EXIF it would be landscape.
      expect(file).toMatchObject({ mimeType: 'image/heic', width: 3024, height: 4032 });
      // The original is kept re-encoded without its EXIF (GPS, device): about the upload's size, never a multiple of it.
      expect(file.bytes).toBeLessThan(data.length * 1.25);
      const original = Buffer.from(await (await fetch(file.variants.find((v) => v.n === 0)!.url)).arrayBuffer());
      expect(original.length).toBe(file.bytes);
      expect(original.includes(Buffer.from('iPhone'))).toBe(false); // the camera model of its EXIF ("Apple" stays: it signs the P3 profile)
      const sizes = Object.fromEntries(file.variants.map((v) => [v.n, [v.width, v.height, v.mimeType]]));
      expect(sizes).toEqual({
        0: [3024, 4032, 'image/heic'],
        1: [8, 10, 'image/webp'],
        2: [30, 40, 'image/webp'],
        3: [120, 160, 'image/webp'],
        4: [240, 320, 'image/webp'],
        5: [480, 640, 'image/webp'],
        6: [810, 1080, 'image/webp'],
      });
      for (let n = 1; n <= 6; n++) {
        const meta = await sharp(await rung(file, n)).metadata();
        expect([meta.format, meta.width, meta.height, meta.space, meta.icc], `rung ${n}`).toEqual(['webp', sizes[n]![0], sizes[n]![1], 'srgb', undefined]);
      }
      // Upright, not upside down: the photo is an arrow pointing up, its tip near the top edge and its
      // base well above the bottom (turned the wrong way, the tip would be at the bottom).
      const ink = await inkRows(await rung(file, 5));
      expect(ink.first / ink.height).toBeLessThan(0.15);
      expect(ink.last / ink.height).toBeLessThan(0.8);
      expect(file.totalBytes).toBe(file.variants.reduce((sum, v) => sum + v.bytes, 0));
      expect((await user(t, userId)).usedBytes).toBe(file.totalBytes);
    });

    it('refuses a HEIC over CHIPMUNK_MAX_PIXELS with a 413 from its declared size, charging nothing', async () => {
      const small = await backend.start({ CHIPMUNK_MAX_PIXELS: '10000000' });
      try {
        const { result, userId } = await upload(small, await readFile(heicPath), 'image', 'big.heic');
        expect(result.ok === false && result.status).toBe(413);
        if (!result.ok) expect(JSON.parse(result.body!).error.message).toMatch(/3024 × 4032|4032 × 3024/);
        expect(await user(small, userId)).toMatchObject({ usedBytes: 0, reservedBytes: 0, fileCount: 0 });
      } finally {
        await small.close();
      }
    });

    it('refuses before decoding when a grid tile declares more pixels than allowed, though the canvas is within the limit', async () => {
      // The tiles' shared ispe property (512 × 512) rewritten to 20000 × 20000, the canvas left at 4032 × 3024;
      // the coded data (mdat) is cut off: a decoder would answer 422, the declared-size check answers 413.
      const data = Buffer.from(await readFile(heicPath));
      const tile = data.indexOf('ispe');
      expect([data.readUInt32BE(tile + 8), data.readUInt32BE(tile + 12)]).toEqual([512, 512]);
      data.writeUInt32BE(20_000, tile + 8);
      data.writeUInt32BE(20_000, tile + 12);
      const header = data.subarray(0, data.indexOf('mdat') + 4096);
      const { result, userId } = await upload(t, header, 'plain', 'tiles.heic');
      expect(result.ok === false && result.status).toBe(413);
      if (!result.ok) expect(JSON.parse(result.body!).error.message).toContain('20000 × 20000');
      expect(await user(t, userId)).toMatchObject({ usedBytes: 0, reservedBytes: 0, fileCount: 0 });
    });

    it("answers 422 for a truncated HEIC (the corpus's, and the real photo cut in half), leaving nothing behind", async () => {
      const real = await readFile(heicPath);
      for (const [name, data] of [
        ['truncated.heic', await readFile(corpus('images/hostile/truncated.heic'))],
        ['half.heic', real.subarray(0, real.length >> 1)],
      ] as const) {
        const { result, userId } = await upload(t, data, 'plain', name);
        expect(result.ok === false && result.status, name).toBe(422);
        if (!result.ok) expect(JSON.parse(result.body!).error.code, name).toBe('UNPROCESSABLE_MEDIA');
        expect(await user(t, userId), name).toMatchObject({ usedBytes: 0, reservedBytes: 0, fileCount: 0 });
      }
    });
  });

  describe('AVIF rungs, chosen by Accept', () => {
    let photo: FileJson;
    let plain: FileJson;
    let nginx: TestNginx;

    beforeAll(async () => {
      const jpeg = await readFile(corpus('images/photos/landscape-cardinal-bird-2mp.jpg'));
      photo = await uploadOk(jpeg, 'photo', 'bird.jpg');
      plain = await uploadOk(jpeg, 'plain', 'bird.jpg');
      nginx = await startNginx(t);
    });
    afterAll(() => nginx?.close());

    it('makes AVIF twins of rungs 4-6 only, listed per rung in the file JSON and counted in the total', async () => {
      expect(photo.variants.map((v) => v.n)).toEqual([0, 1, 2, 3, 4, 5, 6]);
      for (const v of photo.variants) {
        if (v.n < 4) {
          expect(v.formats, `rung ${v.n}`).toBeUndefined();
          continue;
        }
        expect(v.mimeType).toBe('image/webp');
        expect(
          v.formats!.map((f) => f.mimeType),
          `rung ${v.n}`,
        ).toEqual(['image/avif', 'image/webp']);
        const [avif, webp] = v.formats!;
        expect(webp).toEqual({ mimeType: 'image/webp', bytes: v.bytes, url: v.url });
        expect(avif!.url).toBe(`${v.url}-avif`);
        const stored = await readBlob(t, photo.id, `${v.n}.avif`);
        expect(stored.length).toBe(avif!.bytes);
        const meta = await sharp(stored).metadata();
        expect([meta.format, meta.compression, meta.width, meta.height]).toEqual(['heif', 'av1', v.width, v.height]);
        // Smaller than the WebP at the same SSIM: that is why the rung has one.
        expect(avif!.bytes, `rung ${v.n}`).toBeLessThan(v.bytes);
      }
      const avifBytes = photo.variants.reduce((sum, v) => sum + (v.formats?.[0]?.bytes ?? 0), 0);
      expect(photo.totalBytes).toBe(photo.variants.reduce((sum, v) => sum + v.bytes, 0) + avifBytes);
      expect(plain.variants.every((v) => v.formats === undefined)).toBe(true);
    });

    it("keeps Vary: Accept beside CORS's Vary: Origin when the allowed origins are a list, on both paths", async () => {
      const app = 'https://app.example.com';
      const listed = await backend.start({ CHIPMUNK_PURPOSES_FILE: purposes, CHIPMUNK_CORS_ORIGINS: app });
      const front = await startNginx(listed, { env: { CHIPMUNK_CORS_ORIGINS: app } });
      try {
        const { result } = await upload(listed, await readFile(corpus('images/photos/portrait-canal.jpg')), 'photo', 'p.jpg');
        expect(result.ok, String(result.body)).toBe(true);
        const rung6 = new URL((result.body as FileJson).variants.find((v) => v.n === 6)!.url);
        for (const base of [listed.url, front.url]) {
          const res = await fetch(`${base}${rung6.pathname}`, { headers: { accept: AVIF_ACCEPT, origin: app } });
          expect(res.headers.get('content-type'), base).toBe('image/avif');
          expect(res.headers.get('access-control-allow-origin'), base).toBe(app);
          const vary = (res.headers.get('vary') ?? '').toLowerCase();
          expect(vary, base).toContain('accept');
          expect(vary, base).toContain('origin');
          await res.arrayBuffer();
        }
      } finally {
        await front.close();
        await listed.close();
      }
    });

    const paths = [
      ['Chipmunk alone', () => t.url],
      ['nginx', () => nginx.url],
    ] as const;

    for (const [via, base] of paths) {
      const get = (file: FileJson, n: number | string, accept?: string) => {
        const url = new URL(typeof n === 'number' ? file.variants.find((v) => v.n === n)!.url : n);
        return fetch(`${base()}${url.pathname}${url.search}`, { headers: accept ? { accept } : {} });
      };

      it(`${via}: Accept with image/avif gets the AVIF, other Accepts the WebP, both with Vary: Accept`, async () => {
        for (const n of [4, 5, 6]) {
          const avif = await get(photo, n, AVIF_ACCEPT);
          expect([avif.status, avif.headers.get('content-type'), avif.headers.get('vary')], `rung ${n}`).toEqual([200, 'image/avif', 'Accept']);
          const avifBody = Buffer.from(await avif.arrayBuffer());
          expect(avifBody.length).toBe(photo.variants.find((v) => v.n === n)!.formats![0]!.bytes);
          expect((await sharp(avifBody).metadata()).compression).toBe('av1');
          for (const accept of [WEBP_ACCEPT, '*/*', undefined, 'image/avif;q=0,image/webp']) {
            const webp = await get(photo, n, accept);
            expect([webp.status, webp.headers.get('content-type'), webp.headers.get('vary')], `rung ${n}, Accept ${accept}`).toEqual([
              200,
              'image/webp',
              'Accept',
            ]);
            expect((await sharp(Buffer.from(await webp.arrayBuffer())).metadata()).format).toBe('webp');
          }
        }
        // The same URL asked again by each kind of client keeps its answer (remembered grants, nginx's auth cache).
        expect((await get(photo, 6, WEBP_ACCEPT)).headers.get('content-type')).toBe('image/webp');
        expect((await get(photo, 6, AVIF_ACCEPT)).headers.get('content-type')).toBe('image/avif');
      });

      it(`${via}: rungs without a twin and purposes without AVIF serve WebP to everyone, with no Vary`, async () => {
        for (const [file, n] of [
          [photo, 2],
          [photo, 3],
          [plain, 6],
          [plain, 4],
        ] as const) {
          const res = await get(file, n, AVIF_ACCEPT);
          expect([res.status, res.headers.get('content-type'), res.headers.get('vary')], `rung ${n}`).toEqual([200, 'image/webp', null]);
          await res.arrayBuffer();
        }
      });

      it(`${via}: each format's own URL answers in that format whatever the Accept (for <picture>)`, async () => {
        const six = photo.variants.find((v) => v.n === 6)!;
        const res = await get(photo, six.formats![0]!.url, WEBP_ACCEPT);
        expect([res.status, res.headers.get('content-type'), res.headers.get('vary')]).toEqual([200, 'image/avif', null]);
        await res.arrayBuffer();
      });
    }

    it('keeps private AVIF rungs behind the signature of the asked-for rung', async () => {
      const file = await uploadOk(await readFile(corpus('images/photos/portrait-canal.jpg')), 'private-photo', 'canal.jpg');
      const six = file.variants.find((v) => v.n === 6)!;
      for (const base of [t.url, nginx.url]) {
        const signed = new URL(six.url);
        const ok = await fetch(`${base}${signed.pathname}${signed.search}`, { headers: { accept: AVIF_ACCEPT } });
        expect([ok.status, ok.headers.get('content-type'), ok.headers.get('vary')]).toEqual([200, 'image/avif', 'Accept']);
        await ok.arrayBuffer();
        const unsigned = await fetch(`${base}${signed.pathname}`, { headers: { accept: AVIF_ACCEPT } });
        expect(unsigned.status).toBe(401);
        await unsigned.arrayBuffer();
      }
    });
  });
});

// A decoder check (libheif's colour conversion in the workspace) that reads one rung and nothing
// backend-specific: one run, on the embedded backend.
describe('HEIC colour', () => {
  serverOn(backends[0]!);

  it("converts a HEIC's Display P3 profile to sRGB (a saturated colour made with heif-enc)", async () => {
    const png = path.join(work, 'p3.png');
    const heic = path.join(work, 'p3.heic');
    // sharp writes the sRGB colour (40, 200, 60) as Display P3 numbers with the P3 profile; heif-enc keeps the profile.
    await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 40, g: 200, b: 60 } } })
      .withIccProfile('p3')
      .png()
      .toFile(png);
    await promisify(execFile)('heif-enc', ['-q', '90', '-o', heic, png]);
    const file = await uploadOk(await readFile(heic), 'plain', 'p3.heic');
    expect(file.mimeType).toBe('image/heic');
    const mean = async (input: string | Buffer, opts: SharpOptions = {}) => [
      ...(await sharp(input, opts).resize(1, 1, { fit: 'fill' }).removeAlpha().raw().toBuffer()),
    ];
    const converted = await mean(png);
    const naive = await mean(png, { ignoreIcc: true });
    const got = await mean(await rung(file, 6));
    const dist = (a: number[], b: number[]) => Math.hypot(...a.map((x, i) => x - b[i]!));
    expect(dist(converted, naive)).toBeGreaterThan(30);
    expect(dist(got, converted)).toBeLessThan(8);
  });
});
