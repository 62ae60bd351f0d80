import { execFile, execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mediaPath } from '../src/storage/local.js';
import { startChipmunk, type TestChipmunk } from './helpers/chipmunk.js';
import { buildHeic, type HeifFixtureOptions } from './helpers/heif-builder.js';
import { tusUpload } from './helpers/tus.js';

// Issue 17: the HEIC layouts iPhones (and converters) write, made in code by test/helpers/heif-builder.ts
// since the corpus holds one iPhone file: a grid of 512 px HEVC tiles cropped by its output size,
// irot/imir transforms, an EXIF orientation beside them, a Display P3 profile. Each picture has
// four coloured quadrants, so every turn and flip is told apart by where its colours land.

type Rgb = [number, number, number];
type Variant = { n: number; width?: number; height?: number; mimeType: string };
type FileJson = { id: string; mimeType: string; width?: number; height?: number; variants: Variant[] };
type UserJson = { usedBytes: number; reservedBytes: number; fileCount: number };

/** The coded picture's quadrants: top-left, top-right, bottom-left, bottom-right. */
const A: Rgb = [230, 30, 30];
const B: Rgb = [30, 200, 30];
const C: Rgb = [30, 30, 230];
const D: Rgb = [240, 240, 30];
const MAGENTA: Rgb = [255, 0, 255]; // the builder's filling of a tile past the output size

let t: TestChipmunk;
let work: string;
/** heif-convert behind a shim on PATH that records each run: tells whether a decode was attempted. */
let decodeLog: string;
let savedPath: string | undefined;
let userSeq = 0;
/** The decoder itself (found before the shim goes on PATH), for the test's own decodes, which the shim does not count. */
const realHeifConvert = execFileSync('sh', ['-c', 'command -v heif-convert'], { encoding: 'utf8' }).trim();

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'chipmunk-heic-layouts-'));
  decodeLog = path.join(work, 'heif-convert.log');
  const shimDir = path.join(work, 'bin');
  await mkdir(shimDir);
  await writeFile(path.join(shimDir, 'heif-convert'), `#!/bin/sh\necho "$@" >> '${decodeLog}'\nexec '${realHeifConvert}' "$@"\n`);
  await chmod(path.join(shimDir, 'heif-convert'), 0o755);
  // Bounded children inherit this worker's environment (test files run in forks of their own).
  savedPath = process.env.PATH;
  process.env.PATH = `${shimDir}:${process.env.PATH}`;
  t = await startChipmunk();
});
afterAll(async () => {
  await t?.close();
  process.env.PATH = savedPath;
  await rm(work, { recursive: true, force: true });
});

const decodeRuns = async () => (await readFile(decodeLog, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;

async function upload(data: Buffer, filename: string) {
  const userId = `l${++userSeq}`;
  const token = await t.uploadToken(userId, 'image');
  const result = await tusUpload(`${t.url}/uploads`, data, { token, metadata: { filename } });
  return { result, userId };
}
async function uploadOk(data: Buffer, filename: string): Promise<FileJson> {
  const { result } = await upload(data, filename);
  if (!result.ok) throw new Error(`${filename}: ${result.status} ${result.body}`);
  return result.body as FileJson;
}
const user = async (id: string) => (await (await t.api(`/v1/users/${id}`)).json()) as UserJson;
const rungFile = (file: FileJson, n: number) => mediaPath(path.join(t.dataDir, 'media'), file.id, `${n}.webp`);

/** A picture of `width` × `height` split at its middle into four flat quadrants. */
async function quadrants(width: number, height: number, [tl, tr, bl, br]: Rgb[]): Promise<Buffer> {
  const w = width >> 1;
  const h = height >> 1;
  const flat = ([r, g, b]: Rgb, cw: number, ch: number) =>
    sharp({ create: { width: cw, height: ch, channels: 3, background: { r, g, b } } })
      .png()
      .toBuffer();
  return sharp({ create: { width, height, channels: 3, background: { r: 0, g: 0, b: 0 } } })
    .composite([
      { input: await flat(tl!, w, h), left: 0, top: 0 },
      { input: await flat(tr!, width - w, h), left: w, top: 0 },
      { input: await flat(bl!, w, height - h), left: 0, top: h },
      { input: await flat(br!, width - w, height - h), left: w, top: h },
    ])
    .png()
    .toBuffer();
}

type Decoded = { data: Buffer; width: number; height: number };
const decode = async (file: string): Promise<Decoded> => {
  const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
};
const at = (img: Decoded, x: number, y: number): Rgb => {
  const i = (y * img.width + x) * 3;
  return [img.data[i]!, img.data[i + 1]!, img.data[i + 2]!];
};
/** Mean colour of a patch a tenth of the picture's side around each quadrant's centre: TL, TR, BL, BR. */
function quadrantColours(img: Decoded): Rgb[] {
  return [
    [0.25, 0.25],
    [0.75, 0.25],
    [0.25, 0.75],
    [0.75, 0.75],
  ].map(([fx, fy]) => {
    const r = Math.max(1, Math.round(Math.min(img.width, img.height) / 20));
    const sum = [0, 0, 0];
    let n = 0;
    for (let y = Math.round(fy! * img.height) - r; y < Math.round(fy! * img.height) + r; y++) {
      for (let x = Math.round(fx! * img.width) - r; x < Math.round(fx! * img.width) + r; x++) {
        at(img, x, y).forEach((v, c) => (sum[c]! += v));
        n++;
      }
    }
    return sum.map((s) => Math.round(s / n)) as Rgb;
  });
}
const distance = (a: Rgb, b: Rgb) => Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);
/** The pixels of the outermost rows and columns. */
function border(img: Decoded): Rgb[] {
  const out: Rgb[] = [];
  for (let x = 0; x < img.width; x++) out.push(at(img, x, 0), at(img, x, img.height - 1));
  for (let y = 0; y < img.height; y++) out.push(at(img, 0, y), at(img, img.width - 1, y));
  return out;
}

function expectColours(got: Rgb[], want: Rgb[], label: string, tolerance = 12) {
  got.forEach((colour, i) =>
    expect(distance(colour, want[i]!), `${label}: quadrant ${['TL', 'TR', 'BL', 'BR'][i]} is ${colour}, want ${want[i]}`).toBeLessThan(tolerance),
  );
}

/** The ladder's sizes for a photo of this displayed size (the rungs' boxes, never enlarged). */
const fit = (width: number, height: number, box: number) => {
  const scale = Math.min(1, box / Math.max(width, height));
  return [Math.round(width * scale), Math.round(height * scale)];
};

describe('HEIC layouts made in code', () => {
  it("assembles a 2 × 2 grid of 512 px tiles at its output size (1000 × 900, not the tiles' 1024 × 1024), nothing of the cropped tiles showing", async () => {
    const before = await decodeRuns();
    const heic = await buildHeic({ image: await quadrants(1000, 900, [A, B, C, D]), tileSize: 512 });
    const file = await uploadOk(heic, 'IMG_0002.HEIC');
    expect(await decodeRuns()).toBe(before + 1); // the shim saw the decode: its absence below means something
    expect(file).toMatchObject({ mimeType: 'image/heic', width: 1000, height: 900 });
    const sizes = Object.fromEntries(file.variants.map((v) => [v.n, [v.width, v.height]]));
    expect(sizes).toEqual({
      0: [1000, 900],
      1: fit(1000, 900, 10),
      2: fit(1000, 900, 40),
      3: fit(1000, 900, 160),
      4: fit(1000, 900, 320),
      5: fit(1000, 900, 640),
      6: [1000, 900],
    });
    const top = await decode(rungFile(file, 6));
    expect([top.width, top.height]).toEqual([1000, 900]);
    expectColours(quadrantColours(top), [A, B, C, D], 'grid');
    // The right column and bottom row of tiles run 24 and 124 px past the picture, filled magenta.
    const nearest = Math.min(...border(top).map((c) => distance(c, MAGENTA)));
    expect(nearest).toBeGreaterThan(100);
    expectColours(quadrantColours(await decode(rungFile(file, 4))), [A, B, C, D], 'grid, rung 4');
  });

  // irot turns anti-clockwise; imir 0 exchanges top and bottom, 1 left and right (ISO/IEC
  // 23008-12:2022, as libheif, libavif and Apple read it); listed in the order they apply.
  const transforms: Array<{ name: string; opts: Partial<HeifFixtureOptions>; size: [number, number]; want: Rgb[] }> = [
    { name: 'irot 1 (a quarter anti-clockwise), grid', opts: { tileSize: 512, irot: 1 }, size: [900, 1000], want: [B, D, A, C] },
    { name: "irot 3 (a quarter clockwise, iPhone's orientation 6), grid", opts: { tileSize: 512, irot: 3 }, size: [900, 1000], want: [C, A, D, B] },
    { name: 'irot 2 (half a turn)', opts: { irot: 2 }, size: [1000, 900], want: [D, C, B, A] },
    { name: 'imir 1 (left and right exchanged)', opts: { imir: 1 }, size: [1000, 900], want: [B, A, D, C] },
    { name: 'imir 0 (top and bottom exchanged)', opts: { imir: 0 }, size: [1000, 900], want: [C, D, A, B] },
    { name: 'irot 1 then imir 1 (transposed)', opts: { irot: 1, imir: 1 }, size: [900, 1000], want: [D, B, C, A] },
  ];
  it.each(transforms)('applies $name once: upright at the turned size', async ({ opts, size, want }) => {
    const heic = await buildHeic({ image: await quadrants(1000, 900, [A, B, C, D]), ...opts });
    const file = await uploadOk(heic, 'turned.heic');
    expect([file.width, file.height]).toEqual(size);
    expect(file.variants.find((v) => v.n === 5)).toMatchObject({ width: fit(...size, 640)[0], height: fit(...size, 640)[1] });
    const rung = await decode(rungFile(file, 5));
    expect([rung.width, rung.height]).toEqual(fit(...size, 640));
    expectColours(quadrantColours(rung), want, JSON.stringify(opts));
  });

  it('turns an iPhone-style HEIC once: irot 3 with EXIF Orientation 6 repeating it is a quarter clockwise, not a half turn', async () => {
    const heic = await buildHeic({ image: await quadrants(1000, 900, [A, B, C, D]), tileSize: 512, irot: 3, exifOrientation: 6 });
    expect(heic.includes(Buffer.from('MM\0*', 'latin1'))).toBe(true); // the fixture does carry the EXIF
    const file = await uploadOk(heic, 'IMG_0003.HEIC');
    expect([file.width, file.height]).toEqual([900, 1000]);
    expectColours(quadrantColours(await decode(rungFile(file, 5))), [C, A, D, B], 'irot 3 + EXIF 6');
    // The kept original is the upright picture coded again, with no EXIF left to turn it a second time.
    const original = mediaPath(path.join(t.dataDir, 'media'), file.id, '0.heic');
    const meta = await sharp(original).metadata();
    expect([meta.width, meta.height, meta.orientation, meta.exif]).toEqual([900, 1000, undefined, undefined]);
    const png = path.join(work, 'original.png');
    await promisify(execFile)(realHeifConvert, ['--quiet', original, png]);
    expectColours(quadrantColours(await decode(png)), [C, A, D, B], 'the kept original');
  });

  it("does not turn a HEIC by its EXIF Orientation alone: in HEIF the container's transforms rule, the EXIF tag is informative", async () => {
    const heic = await buildHeic({ image: await quadrants(1000, 900, [A, B, C, D]), exifOrientation: 6 });
    const file = await uploadOk(heic, 'exif-only.heic');
    expect([file.width, file.height]).toEqual([1000, 900]);
    expectColours(quadrantColours(await decode(rungFile(file, 5))), [A, B, C, D], 'EXIF 6 without irot');
  });

  it('converts an embedded Display P3 profile to sRGB: P3 pure red lands on sRGB red clipped, in-gamut colours on their sRGB values, no profile left', async () => {
    const p3 = (
      await sharp(
        await sharp({ create: { width: 8, height: 8, channels: 3, background: 'red' } })
          .withIccProfile('p3')
          .png()
          .toBuffer(),
      ).metadata()
    ).icc!;
    // sRGB colours written as Display P3 numbers (what an iPhone stores), and P3's own red, outside sRGB.
    const srgb: Rgb[] = [
      [40, 200, 60],
      [230, 120, 40],
      [60, 80, 200],
    ];
    const asP3 = async (c: Rgb): Promise<Rgb> => {
      const tagged = await sharp({ create: { width: 4, height: 4, channels: 3, background: { r: c[0], g: c[1], b: c[2] } } })
        .withIccProfile('p3')
        .png()
        .toBuffer();
      return [...(await sharp(tagged, { ignoreIcc: true }).raw().toBuffer())].slice(0, 3) as Rgb;
    };
    const p3Numbers: Rgb[] = [[255, 0, 0], ...(await Promise.all(srgb.map(asP3)))];
    // Read as sRGB numbers the first two would be far off: the test tells a conversion from none.
    expect(distance(p3Numbers[1]!, srgb[0]!)).toBeGreaterThan(50);
    expect(distance(p3Numbers[2]!, srgb[1]!)).toBeGreaterThan(20);

    const heic = await buildHeic({ image: await quadrants(1000, 900, p3Numbers), tileSize: 512, icc: p3, irot: 3 });
    expect((await sharp(heic).metadata()).icc?.length).toBe(p3.length); // the container does carry the profile
    const file = await uploadOk(heic, 'p3.heic');
    for (const n of [4, 5, 6]) {
      const meta = await sharp(rungFile(file, n)).metadata();
      expect([meta.space, meta.icc], `rung ${n}`).toEqual(['srgb', undefined]);
    }
    // irot 3 shows the coded [TL, TR, BL, BR] as [BL, TL, BR, TR]: coded P3 red is shown top-right.
    const [orange, red, blue, green] = quadrantColours(await decode(rungFile(file, 6)));
    // P3 red is outside sRGB: clipped to the reddest sRGB there is.
    expect(red![0], `P3 red became ${red}`).toBeGreaterThan(240);
    expect(red![1], `P3 red became ${red}`).toBeLessThan(25);
    expect(red![2], `P3 red became ${red}`).toBeLessThan(25);
    expectColours([green!, orange!, blue!], srgb, 'P3 → sRGB', 10);
  });
});

describe('HEIC refusals', () => {
  it('refuses a grid whose declared size is over the pixel limit with a 413, without running the decoder, charging nothing', async () => {
    // Four real 512 px tiles (a few hundred bytes each) under a grid and ispe declaring 40000 × 40000:
    // 1.6 gigapixels that a decoder would be asked to allocate.
    const heic = await buildHeic({ image: await quadrants(1000, 900, [A, B, C, D]), tileSize: 512, declaredSize: { width: 40_000, height: 40_000 } });
    expect(heic.length).toBeLessThan(20_000);
    const before = await decodeRuns();
    const { result, userId } = await upload(heic, 'huge-grid.heic');
    expect(result.ok === false && result.status).toBe(413);
    if (!result.ok) expect(JSON.parse(result.body!).error).toMatchObject({ code: 'FILE_TOO_LARGE', message: expect.stringContaining('40000 × 40000') });
    expect(await decodeRuns()).toBe(before);
    expect(await user(userId)).toMatchObject({ usedBytes: 0, reservedBytes: 0, fileCount: 0 });
  });

  // ispe says 1000 × 900; the derived image's description (in idat) says more: 30000 × 30000 in a grid
  // is 900 megapixels, 1.3 GB and 25 s in heif-convert here (which the child's memory cap would cut
  // short as a "corrupt" 422); an overlay's 70000 × 70000 needs its 32-bit fields.
  it.each([
    { derivation: 'grid' as const, side: 30_000 },
    { derivation: 'iovl' as const, side: 70_000 },
  ])(
    "refuses a $derivation whose own description declares $side × $side though its ispe is honest (libheif allocates the description's canvas), without decoding",
    async ({ derivation, side }) => {
      const heic = await buildHeic({ image: await quadrants(1000, 900, [A, B, C, D]), tileSize: 512, derivation, gridSize: { width: side, height: side } });
      expect((await sharp(heic).metadata()).width).toBe(1000); // a reader of ispe alone sees a small photo
      const before = await decodeRuns();
      const { result, userId } = await upload(heic, `lying-${derivation}.heic`);
      expect(result.ok === false && result.status).toBe(413);
      if (!result.ok) expect(JSON.parse(result.body!).error).toMatchObject({ code: 'FILE_TOO_LARGE', message: expect.stringContaining(`${side} × ${side}`) });
      expect(await decodeRuns()).toBe(before);
      expect(await user(userId)).toMatchObject({ usedBytes: 0, reservedBytes: 0, fileCount: 0 });
    },
  );

  it('decodes an honest overlay (iovl) of the same tiles like the grid', async () => {
    const file = await uploadOk(await buildHeic({ image: await quadrants(1000, 900, [A, B, C, D]), tileSize: 512, derivation: 'iovl' }), 'overlay.heic');
    expect([file.width, file.height]).toEqual([1000, 900]);
    expectColours(quadrantColours(await decode(rungFile(file, 6))), [A, B, C, D], 'iovl');
  });

  it('answers 422 for a grid HEIC cut short in its tiles, leaving nothing behind', async () => {
    const heic = await buildHeic({ image: await quadrants(1000, 900, [A, B, C, D]), tileSize: 512 });
    const before = await decodeRuns();
    const { result, userId } = await upload(heic.subarray(0, heic.length - 200), 'cut.heic');
    expect(result.ok === false && result.status).toBe(422);
    if (!result.ok) expect(JSON.parse(result.body!).error.code).toBe('UNPROCESSABLE_MEDIA');
    expect(await decodeRuns()).toBe(before + 1); // refused by the decoder, not before it
    expect(await user(userId)).toMatchObject({ usedBytes: 0, reservedBytes: 0, fileCount: 0 });
  });
});
