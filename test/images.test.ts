import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import sharp, { type SharpOptions } from 'sharp';
import { thumbHashToAverageRGBA } from 'thumbhash';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rungSize, thumbhashInput } from '../src/media/images.js';
import { backends, readBlob, uploadAreaIds, type Backend } from './helpers/backends.js';
import { corpus, storedForm, type TestChipmunk } from './helpers/chipmunk.js';
import { tusUpload } from './helpers/tus.js';

// End to end through the real tus-js-client and a listening Chipmunk; variants are read back through
// the server's BlobStorage (the media folder or the bucket) and inspected with sharp.

type Variant = { n: number; width?: number; height?: number; bytes: number; mimeType: string; url: string };
type FileJson = {
  id: string;
  mimeType: string;
  width?: number;
  height?: number;
  bytes: number;
  totalBytes: number;
  placeholder?: string;
  thumbhash?: string;
  variants: Variant[];
};
type UserJson = { usedBytes: number; reservedBytes: number; fileCount: number };

/** The server of the suite running now (each describe below starts its own in beforeAll). */
let t: TestChipmunk;
let userSeq = 0;

/** Starts the suite's server on `backend` before its tests, and closes it after them. */
function serverOn(backend: Backend) {
  beforeAll(async () => {
    t = await backend.start();
  });
  afterAll(() => t?.close());
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** A WebP rung's bytes as stored. */
const variant = (file: FileJson, n: number, server = t) => readBlob(server, file.id, `${n}.webp`);
const user = async (id: string) => (await (await t.api(`/v1/users/${id}`)).json()) as UserJson;

async function upload(relPath: string, purpose = 'image', opts: { userId?: string; server?: TestChipmunk } = {}) {
  const server = opts.server ?? t;
  const userId = opts.userId ?? `u${++userSeq}`;
  const data = await readFile(corpus(relPath));
  const token = await server.uploadToken(userId, purpose);
  const result = await tusUpload(`${server.url}/uploads`, data, { token, metadata: { filename: path.basename(relPath) } });
  return { result, data, userId };
}

async function uploadOk(relPath: string, purpose = 'image', server?: TestChipmunk): Promise<FileJson> {
  const { result } = await upload(relPath, purpose, { server });
  if (!result.ok) throw new Error(`${relPath}: ${result.status} ${result.body}`);
  return result.body as FileJson;
}

/** A small greyscale thumbnail of any image, for comparing pictures rather than bytes. */
async function signature(input: string | Buffer, size = 24): Promise<Buffer> {
  return sharp(input).resize(size, size, { fit: 'fill' }).greyscale().raw().toBuffer();
}
const meanAbsDiff = (a: Buffer, b: Buffer) => a.reduce((sum, x, i) => sum + Math.abs(x - b[i]!), 0) / a.length;

describe.each(backends)('$name', (backend) => {
  serverOn(backend);

  describe('image variant ladder', () => {
    it('gives a photo its ladder 1-6 in WebP, with sizes, placeholder and thumbhash in the file JSON', async () => {
      const { result, data, userId } = await upload('images/photos/portrait-canal.jpg');
      expect(result.ok).toBe(true);
      if (!result.ok) return;
      const file = result.body as FileJson;
      expect(file).toMatchObject({ mimeType: 'image/jpeg', width: 600, height: 800, bytes: (await storedForm(data)).length });
      expect(file.variants.map((v) => v.n)).toEqual([0, 1, 2, 3, 4, 5, 6]);
      const sizes = Object.fromEntries(file.variants.map((v) => [v.n, [v.width, v.height]]));
      // Fit inside the box, aspect kept, never upscaled (600 × 800 is below the 1080 box).
      expect(sizes).toEqual({ 0: [600, 800], 1: [8, 10], 2: [30, 40], 3: [120, 160], 4: [240, 320], 5: [480, 640], 6: [600, 800] });
      for (const v of file.variants.filter((x) => x.n > 0)) {
        expect(v.mimeType).toBe('image/webp');
        // Signed (?exp=…&sig=…) once delivery is merged: 'image' is private.
        expect(v.url).toMatch(/\/\d(\?exp=\d+&sig=[\w-]+)?$/);
        const stored = await variant(file, v.n);
        expect(stored.length).toBe(v.bytes);
        const meta = await sharp(stored).metadata();
        expect([meta.format, meta.width, meta.height]).toEqual(['webp', v.width, v.height]);
      }
      expect(file.totalBytes).toBe(file.variants.reduce((sum, v) => sum + v.bytes, 0));
      expect((await user(userId)).usedBytes).toBe(file.totalBytes);
      // The original keeps its coded pixels, only its metadata is stripped (test/privacy.test.ts).
      expect(sha256(await readBlob(t, file.id, '0.jpg'))).toBe(sha256(await storedForm(data)));

      // The placeholder is variant 1 itself, inlined.
      expect(file.placeholder).toMatch(/^data:image\/webp;base64,/);
      const placeholder = Buffer.from(file.placeholder!.split(',')[1]!, 'base64');
      expect(placeholder.equals(await variant(file, 1))).toBe(true);
      expect(placeholder.length).toBeLessThan(400);
      const thumbhash = Buffer.from(file.thumbhash!, 'base64');
      expect(thumbhash.length).toBeGreaterThan(5);
      expect(thumbhash.length).toBeLessThan(40);
      // It describes this photo: its average colour is the photo's, within a few percent.
      const average = thumbHashToAverageRGBA(thumbhash);
      const stats = await sharp(await variant(file, 3)).stats();
      for (const [i, channel] of (['r', 'g', 'b'] as const).entries())
        expect(Math.abs(average[channel] - stats.channels[i]!.mean / 255), channel).toBeLessThan(0.05);
      const described = (await (await t.api(`/v1/files/${file.id}`)).json()) as FileJson;
      expect(described).toMatchObject({ width: 600, height: 800, placeholder: file.placeholder, thumbhash: file.thumbhash });
      expect(described.variants).toEqual(file.variants);
    });

    it('square purposes get exactly n × n, capped by the shorter side, cropped where the content is', async () => {
      const wide = await uploadOk('images/photos/landscape-cardinal-bird-2mp.jpg', 'avatar'); // 1920 × 1080
      expect(wide.variants.filter((v) => v.n > 0).map((v) => [v.n, v.width, v.height])).toEqual([
        [1, 10, 10],
        [2, 40, 40],
        [3, 160, 160],
        [4, 320, 320],
        [5, 640, 640],
        [6, 1080, 1080],
      ]);
      const headshot = await uploadOk('images/photos/person-headshot-canon.jpg', 'avatar'); // 800 × 533
      expect(headshot.variants.filter((v) => v.n > 0).map((v) => v.width)).toEqual([10, 40, 160, 320, 533, 533]);
      for (const file of [wide, headshot]) {
        for (const v of file.variants.filter((x) => x.n > 0)) {
          const meta = await sharp(await variant(file, v.n)).metadata();
          expect([meta.width, meta.height]).toEqual([v.width, v.width]);
        }
      }
      // The crop is content-aware (sharp's attention strategy), not the dead centre.
      for (const [file, rel] of [
        [wide, 'landscape-cardinal-bird-2mp.jpg'],
        [headshot, 'person-headshot-canon.jpg'],
      ] as const) {
        const crop = async (position: string) =>
          signature(
            await sharp(corpus(`images/photos/${rel}`))
              .resize(160, 160, { fit: 'cover', position })
              .toBuffer(),
          );
        const got = await signature(await variant(file, 3));
        expect(meanAbsDiff(got, await crop('attention')), rel).toBeLessThan(6);
        expect(meanAbsDiff(got, await crop('centre')), rel).toBeGreaterThan(12);
      }
    });

    it('never upscales: a tiny source still gets every variant 1-6, none larger than itself', async () => {
      const file = await uploadOk('images/color/png8-rgba-basn6a08.png'); // 32 × 32
      expect(file.variants.map((v) => [v.n, v.width, v.height])).toEqual([
        [0, 32, 32],
        [1, 10, 10],
        [2, 32, 32],
        [3, 32, 32],
        [4, 32, 32],
        [5, 32, 32],
        [6, 32, 32],
      ]);
      const one = await uploadOk('images/hostile/bomb-png-ztxt.png', 'avatar'); // 1 × 1
      expect(one.variants.filter((v) => v.n > 0).map((v) => [v.width, v.height])).toEqual(Array(6).fill([1, 1]));
    });

    it('refuses an animation over the frame limit or over the pixels of all its frames (413 naming the limit), charging nothing', async () => {
      const capped = await backend.start({ CHIPMUNK_MAX_FRAMES: '10', CHIPMUNK_MAX_ANIMATION_PIXELS: '2000000' });
      try {
        // 30 frames of 80 × 80: over 10 frames.
        const frames = await upload('images/formats/anim-rotating-squares.gif', 'image', { server: capped });
        expect(frames.result).toMatchObject({ ok: false, status: 413 });
        if (frames.result.ok) return;
        expect(JSON.parse(frames.result.body!).error).toEqual({
          code: 'FILE_TOO_LARGE',
          message: 'The animation has 30 frames; at most 10 are accepted. Shorten it and upload again.',
        });
        const u = (await (await capped.api(`/v1/users/${frames.userId}`)).json()) as UserJson;
        expect(u).toMatchObject({ usedBytes: 0, reservedBytes: 0, fileCount: 0 });
        // 370 × 285 × 10 frames is 1.05 megapixels: within both limits, animated.
        const small = await uploadOk('images/formats/anim-loop3.gif', 'image', capped);
        expect((await sharp(await variant(small, 6, capped), { animated: true }).metadata()).pages).toBeGreaterThan(1);
      } finally {
        await capped.close();
      }
      const budget = await backend.start({ CHIPMUNK_MAX_ANIMATION_PIXELS: '100000' });
      try {
        const pixels = await upload('images/formats/anim-rotating-squares.gif', 'image', { server: budget });
        expect(pixels.result).toMatchObject({ ok: false, status: 413 });
        if (pixels.result.ok) return;
        expect(JSON.parse(pixels.result.body!).error.message).toBe(
          'The animation is 80 × 80 pixels × 30 frames (0.2 megapixels in all); at most 0.1 megapixels over all frames are accepted. Shorten it or scale it down and upload again.',
        );
      } finally {
        await budget.close();
      }
    });

    it('checks the pixel limit from the header, before decoding, and says so', async () => {
      const small = await backend.start({ CHIPMUNK_MAX_PIXELS: '1000000' });
      try {
        const { result, userId } = await upload('images/photos/landscape-saw-6mp.jpg', 'image', { server: small });
        expect(result.ok).toBe(false);
        if (result.ok) return;
        expect(result.status).toBe(413);
        expect(JSON.parse(result.body!).error.message).toContain('2725 × 2225');
        const u = (await (await small.api(`/v1/users/${userId}`)).json()) as UserJson;
        expect(u).toMatchObject({ usedBytes: 0, reservedBytes: 0, fileCount: 0 });
      } finally {
        await small.close();
      }
      // A 4-gigapixel declaration is refused by its header: the message names the declared size.
      const { result } = await upload('images/hostile/bomb-65536x65536-uint32.png');
      expect(result.ok === false && result.status).toBe(413);
      if (!result.ok) expect(JSON.parse(result.body!).error.message).toContain('65536 × 65536');
    });
  });

  describe('hostile images', () => {
    // Valid images under a misleading name (SOURCES.md), and a valid 1×1 PNG carrying zTXt chunks.
    const validByBytes: Record<string, string> = {
      'looks-like-svg.webp': 'image/webp',
      'png-content-with-jpg-extension.jpg': 'image/png',
      'jpeg-content-with-png-extension.png': 'image/jpeg',
      'bomb-png-ztxt.png': 'image/png',
    };

    it('refuses every invalid file in hostile/ with a 4xx and leaves nothing charged or stored', async () => {
      // A server of its own, so its media folder holds only what this test stored.
      const h = await backend.start();
      try {
        await uploadAllHostile(h);
      } finally {
        await h.close();
      }
    });

    async function uploadAllHostile(h: TestChipmunk) {
      const names = [
        ...(await readdir(corpus('images/hostile'))).filter((n) => n !== 'pngsuite'),
        ...(await readdir(corpus('images/hostile/pngsuite'))).map((n) => `pngsuite/${n}`),
      ];
      expect(names.length).toBeGreaterThan(30);
      const userId = 'hostile';
      const token = await h.uploadToken(userId, 'image');
      const accepted: FileJson[] = [];
      for (const name of names) {
        const data = await readFile(corpus('images/hostile', name));
        const result = await tusUpload(`${h.url}/uploads`, data, { token, metadata: { filename: path.basename(name) } });
        if (name in validByBytes) {
          expect(result.ok, name).toBe(true);
          if (result.ok) {
            expect((result.body as FileJson).mimeType, name).toBe(validByBytes[name]);
            accepted.push(result.body as FileJson);
          }
          continue;
        }
        expect(result.ok, name).toBe(false);
        if (result.ok) continue;
        expect(result.status, name).toBeGreaterThanOrEqual(400);
        expect(result.status, name).toBeLessThan(500);
        expect(JSON.parse(result.body!).error.code, name).toMatch(/^[A-Z_]+$/);
      }
      const u = (await (await h.api(`/v1/users/${userId}`)).json()) as UserJson;
      expect(u).toMatchObject({ reservedBytes: 0, fileCount: accepted.length, usedBytes: accepted.reduce((s, f) => s + f.totalBytes, 0) });
      // Nothing but the accepted files' folders in the media folder, nothing left in the upload area.
      const folders: string[] = [];
      for await (const id of h.chipmunk.storage.listFolders()) folders.push(id);
      expect(folders.sort()).toEqual(accepted.map((f) => f.id).sort());
      expect(await uploadAreaIds(h)).toEqual([]);
      expect(await h.chipmunk.storage.listWorkspaces()).toEqual([]);
    }
  });
});

// The decoding and encoding checks below are sharp's work in the processing workspace, the same
// whichever backend then stores the bytes: one run, on the embedded backend.
describe('image variant ladder: decoding and encoding', () => {
  serverOn(backends[0]!);

  it('applies EXIF orientation exactly once: all 8 orientations come out upright', async () => {
    for (const shape of ['Landscape', 'Portrait']) {
      const reference = await uploadOk(`images/orientation/${shape}_1.jpg`);
      const upright = await signature(await variant(reference, 3));
      const turned = await signature(
        await sharp(await variant(reference, 3))
          .rotate(90)
          .toBuffer(),
      );
      for (const n of [0, 2, 3, 4, 5, 6, 7, 8]) {
        const file = await uploadOk(`images/orientation/${shape}_${n}.jpg`);
        expect([file.width, file.height], `${shape}_${n}`).toEqual([reference.width, reference.height]);
        const sig = await signature(await variant(file, 3));
        // Same picture as orientation 1 (only re-encoding noise), far from a quarter-turned one.
        expect(meanAbsDiff(sig, upright), `${shape}_${n}`).toBeLessThan(6);
        expect(meanAbsDiff(sig, turned), `${shape}_${n}`).toBeGreaterThan(20);
      }
    }
  });

  it('turns a HEIF-family image once when it carries both a rotation box and EXIF orientation', async () => {
    // libheif writes orientation 6 as an irot box and keeps EXIF Orientation = 6 as well: the trap.
    const landscape = await sharp(corpus('images/orientation/Landscape_1.jpg')).resize(600).toBuffer();
    const avif = await sharp(landscape).withMetadata({ orientation: 6 }).avif({ quality: 60, effort: 0 }).toBuffer();
    const exif = (await sharp(avif).metadata()).exif!;
    const tag = exif.indexOf(Buffer.from([0x01, 0x12, 0x00, 0x03]));
    expect(tag >= 0 ? exif.readUInt16BE(tag + 8) : exif.readUInt16LE(exif.indexOf(Buffer.from([0x12, 0x01, 0x03, 0x00])) + 8)).toBe(6);
    const token = await t.uploadToken('heif-rotation', 'image');
    const result = await tusUpload(`${t.url}/uploads`, avif, { token, metadata: { filename: 'turned.avif' } });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const file = result.body as FileJson;
    expect([file.mimeType, file.width, file.height]).toEqual(['image/avif', 400, 600]);
    const rung = await sharp(await variant(file, 5)).metadata();
    expect([rung.width, rung.height]).toEqual([400, 600]); // turned twice would be 600 × 400
    const got = await signature(await variant(file, 5));
    expect(meanAbsDiff(got, await signature(await sharp(landscape).rotate(90).toBuffer()))).toBeLessThan(6);
    expect(meanAbsDiff(got, await signature(await sharp(landscape).rotate(270).toBuffer()))).toBeGreaterThan(20);
  });

  it('converts embedded colour profiles (ProPhoto, Adobe RGB, CMYK) to sRGB', async () => {
    for (const name of ['prophoto-icc-orion.jpg', 'cmyk-swop-icc.jpg', 'adobergb-a98-icc.jpg', 'display-p3-icc.png']) {
      const file = await uploadOk(`images/color/${name}`);
      const six = await variant(file, 6);
      const meta = await sharp(six).metadata();
      expect(meta.space, name).toBe('srgb');
      expect(meta.icc, name).toBeUndefined();
      const mean = async (input: string | Buffer, opts: SharpOptions = {}) => [
        ...(await sharp(input, opts).resize(1, 1, { fit: 'fill' }).removeAlpha().raw().toBuffer()),
      ];
      const converted = await mean(corpus(`images/color/${name}`));
      const naive = await mean(corpus(`images/color/${name}`), { ignoreIcc: true });
      const got = await mean(six);
      const dist = (a: number[], b: number[]) => Math.hypot(...a.map((x, i) => x - b[i]!));
      // The variant's colour is the profile-converted one, not the raw numbers read as sRGB.
      if (dist(converted, naive) > 8) expect(dist(got, converted), name).toBeLessThan(dist(got, naive));
      expect(dist(got, converted), name).toBeLessThan(6);
    }
  });

  it('strips EXIF, GPS, XMP and ICC from every variant', async () => {
    for (const rel of [
      'images/photos/gps-tagged-samsung.jpg',
      'images/photos/landscape-canon-adobergb-2mp.jpg',
      'images/formats/avif-iphone-orientation6-p3.avif',
    ]) {
      const source = await sharp(corpus(rel)).metadata();
      expect(source.exif ?? source.xmp, rel).toBeDefined();
      const file = await uploadOk(rel);
      for (let n = 1; n <= 6; n++) {
        const meta = await sharp(await variant(file, n)).metadata();
        expect({ exif: meta.exif, xmp: meta.xmp, iptc: meta.iptc, icc: meta.icc }, `${rel} ${n}`).toEqual({
          exif: undefined,
          xmp: undefined,
          iptc: undefined,
          icc: undefined,
        });
      }
    }
  });

  it('keeps transparency and handles 16-bit and greyscale inputs', async () => {
    for (const name of ['png8-rgba-basn6a08.png', 'png16-rgba-basn6a16.png', 'png8-rgb-trns-tbrn2c08.png']) {
      const file = await uploadOk(`images/color/${name}`);
      const meta = await sharp(await variant(file, 6)).metadata();
      expect(meta.hasAlpha, name).toBe(true);
      const stats = await sharp(await variant(file, 6)).stats();
      expect(stats.isOpaque, name).toBe(false);
    }
    for (const name of ['png16-grey-basn0g16.png', 'png16-rgb-basn2c16.png', 'grey-jpeg-concert.jpg', 'grey-png-basn0g08.png']) {
      const file = await uploadOk(`images/color/${name}`);
      const original = await signature(corpus(`images/color/${name}`), 8);
      expect(meanAbsDiff(await signature(await variant(file, 6), 8), original), name).toBeLessThan(8);
    }
  });

  it('turns animated GIF and WebP into animated WebP variants, keeping timing and loop count', async () => {
    for (const name of ['anim-rotating-squares.gif', 'anim-loop3.webp', 'anim-loop3.gif']) {
      const source = await sharp(corpus(`images/formats/${name}`), { animated: true }).metadata();
      const file = await uploadOk(`images/formats/${name}`);
      expect([file.width, file.height]).toEqual([source.width, source.pageHeight]);
      for (let n = 2; n <= 6; n++) {
        const meta = await sharp(await variant(file, n), { animated: true }).metadata();
        expect(meta.pages, `${name} ${n}`).toBeGreaterThan(1);
        expect(meta.loop, `${name} ${n}`).toBe(source.loop);
        // Identical neighbouring frames may be merged by the encoder; the running time is the same.
        expect(meta.delay!.reduce((a, b) => a + b, 0)).toBe(source.delay!.reduce((a, b) => a + b, 0));
        expect(meta.pageHeight).toBe(file.variants.find((v) => v.n === n)!.height);
      }
      // The inlined placeholder is the first frame only.
      expect((await sharp(await variant(file, 1), { animated: true }).metadata()).pages ?? 1).toBe(1);
    }
  });

  it('square purposes crop animations to n × n too, keeping them animated', async () => {
    const file = await uploadOk('images/formats/anim-loop3.gif', 'avatar'); // 370 × 285, 10 frames
    expect(file.variants.filter((v) => v.n > 0).map((v) => [v.width, v.height])).toEqual([
      [10, 10],
      [40, 40],
      [160, 160],
      [285, 285],
      [285, 285],
      [285, 285],
    ]);
    const meta = await sharp(await variant(file, 4), { animated: true }).metadata();
    expect([meta.width, meta.pageHeight]).toEqual([285, 285]);
    expect(meta.pages).toBeGreaterThan(1);
  });
});

describe('image processor', () => {
  it('sizes rungs inside the box, never above the source, never below one pixel', () => {
    expect(rungSize({ width: 4000, height: 3000 }, 1080, false)).toEqual({ width: 1080, height: 810 });
    expect(rungSize({ width: 3000, height: 4000 }, 10, false)).toEqual({ width: 8, height: 10 });
    expect(rungSize({ width: 500, height: 300 }, 640, false)).toEqual({ width: 500, height: 300 });
    expect(rungSize({ width: 10000, height: 3 }, 40, false)).toEqual({ width: 40, height: 1 });
    expect(rungSize({ width: 500, height: 300 }, 320, true)).toEqual({ width: 300, height: 300 });
    expect(rungSize({ width: 500, height: 300 }, 160, true)).toEqual({ width: 160, height: 160 });
  });
});

describe('thumbhash input', () => {
  it('box-averages any pixels down to at most 100 × 100 RGBA, grey and missing alpha included', () => {
    // 200 × 100 RGB: left half red, right half blue.
    const rgb = Buffer.alloc(200 * 100 * 3);
    for (let i = 0; i < 200 * 100; i++) rgb.set(i % 200 < 100 ? [255, 0, 0] : [0, 0, 255], i * 3);
    const small = thumbhashInput({ data: rgb, width: 200, height: 100, channels: 3 });
    expect([small.width, small.height, small.channels]).toEqual([100, 50, 4]);
    expect([...small.data.subarray(0, 4)]).toEqual([255, 0, 0, 255]);
    expect([...small.data.subarray(99 * 4, 100 * 4)]).toEqual([0, 0, 255, 255]);
    // Grey with alpha: the grey repeats, the alpha is averaged.
    const greyAlpha = Buffer.from([10, 0, 30, 255]);
    const grey = thumbhashInput({ data: greyAlpha, width: 2, height: 1, channels: 2 });
    expect([grey.width, grey.height]).toEqual([2, 1]);
    expect([...grey.data]).toEqual([10, 10, 10, 0, 30, 30, 30, 255]);
  });
});
