import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp, { type Sharp } from 'sharp';
import { rgbaToThumbHash } from 'thumbhash';
import { AppError, errors } from '../errors.js';
import { looksLikeMemoryFailure } from './bounded.js';
import { decodeHeicToJpeg, encodeCleanHeic, heifDeclaredSizes } from './heif.js';
import { isSrgbProfile } from './icc.js';
import { createLimiter } from './limiter.js';
import { stripLosslessly } from './metadata.js';
import type { ImageInfo } from './info.js';
import {
  avifVariantName,
  type ImageFormat,
  type MediaLimits,
  type MediaProcessor,
  type ProcessInput,
  type ProcessResult,
  type ProducedVariant,
} from './processor.js';

// The only module that imports sharp. An image is decoded once (orientation applied, colour
// converted to sRGB, shrunk to the largest rung on load), then every smaller rung is resized from
// pixels already made and encoded to WebP. Animated GIF/WebP keep their frames, within the limits.

export type Rung = { name: string; box: number; quality: number; effort: number };

/** How the still ladder reads its source: HEIC arrives already upright, so its stale EXIF orientation is not applied. */
type StillLadderOptions = ImageProcessorOptions & { ignoreIcc: boolean; autoOrient?: boolean; formats?: readonly ImageFormat[] };

/**
 * The variant ladder. Quality falls with size (the placeholder is compressed hardest, the 1080 cap
 * least). libwebp's effort 2 everywhere from 160 px up: at the 1080 rung it takes 45% of effort 4's
 * time for 3.5% more bytes and SSIM 0.969 instead of 0.971, so the whole ladder costs less than one
 * encode with sharp's defaults and a 2-core server makes variants twice as fast. The two tiny rungs
 * keep a high effort: it costs nothing at their size. The measurements behind it are printed by
 * `npm run bench:variants` (README).
 */
export const LADDER: readonly Rung[] = Object.freeze([
  { name: '1', box: 10, quality: 20, effort: 6 },
  { name: '2', box: 40, quality: 60, effort: 4 },
  { name: '3', box: 160, quality: 70, effort: 2 },
  { name: '4', box: 320, quality: 75, effort: 2 },
  { name: '5', box: 640, quality: 78, effort: 2 },
  { name: '6', box: 1080, quality: 80, effort: 2 },
]);

export type ImageProcessorOptions = {
  /** Largest width × height (per frame) accepted, checked from the header before decoding. */
  maxPixels: number;
  /** Animations with more frames than this are refused (413), unless the purpose sets its own limit. */
  maxFrames: number;
  /** Animations whose frames hold more pixels than this together are refused (413); default maxPixels. */
  maxAnimationPixels?: number;
  /** Images processed at once; the rest wait their turn. */
  concurrency: number;
};

/** This rung's pixels are kept for the smaller rungs and the thumbhash; larger ones come from the top rung's. */
const KEEP_PIXELS_AT = 320;

type Raw = { data: Buffer; width: number; height: number; channels: 1 | 2 | 3 | 4 };

/** Formats the bundled libvips decodes; anything else that sniffs as an image is refused by name. */
const decodable = new Set(['jpeg', 'png', 'webp', 'gif', 'tiff', 'heif']);
const animatable = new Set(['image/gif', 'image/webp']);
const heifFamily = new Set(['image/heic', 'image/heif', 'image/avif']);
/** Formats whose original is cleaned from its bytes (metadata.ts): read whole once, and decoded from those bytes. */
const readWhole = new Set(['image/jpeg', 'image/png', 'image/webp', 'image/gif']);

/** What sharp reads an image from: its path, or its bytes when they are in memory already. */
type Source = string | Buffer;

export function createImageProcessor(opts: ImageProcessorOptions): MediaProcessor<ImageInfo> & { readonly queued: number; readonly active: number } {
  // Uploads are unique files: libvips' operation cache would only hold memory. Parallelism comes
  // from processing several images at once (bounded below), not from threads inside one image.
  sharp.cache(false);
  sharp.concurrency(1);
  const limit = createLimiter(Math.max(1, opts.concurrency));

  return {
    get queued() {
      return limit.queued;
    },
    get active() {
      return limit.active;
    },
    process: (input) => limit.run(() => processImage(input, opts)),
  };
}

async function processImage(input: ProcessInput, opts: ImageProcessorOptions): Promise<ProcessResult<ImageInfo>> {
  const { sourcePath, sniffed, square, workDir, formats } = input;
  const canAnimate = animatable.has(sniffed.mimeType);
  // HEIF/AVIF: the container's own declarations first, before any libheif (sharp's or the HEVC child) parses it.
  if (heifFamily.has(sniffed.mimeType)) await checkHeifDeclaredSizes(sourcePath, opts.maxPixels);
  // One read of the file serves the header, the decode and the cleaned original (no second read, no
  // reopening of the file by each sharp call).
  const source: Source = readWhole.has(sniffed.mimeType) ? await readFile(sourcePath) : sourcePath;
  const meta = await readHeader(source, sniffed.mimeType, canAnimate);

  if (!decodable.has(meta.format))
    throw errors.unsupportedType(`Images in ${meta.format} format are not supported; upload JPEG, PNG, WebP, GIF, AVIF or TIFF.`);

  const frameHeight = meta.pageHeight ?? meta.height;
  const framePixels = meta.width * frameHeight;
  if (framePixels > opts.maxPixels) {
    throw errors.tooLarge(
      `The image is ${meta.width} × ${frameHeight} pixels (${megapixels(framePixels)}); at most ${megapixels(opts.maxPixels)} are accepted. Scale it down and upload again.`,
    );
  }
  const pages = canAnimate ? (meta.pages ?? 1) : 1;
  const animated = pages > 1;
  // Every rung decodes and encodes every frame: the work (and the bytes made) grows with frames ×
  // pixels, so both are bounded before any frame is decoded.
  if (animated)
    checkAnimation(
      { width: meta.width, height: frameHeight, pages },
      {
        maxFrames: input.limits?.maxFrames ?? opts.maxFrames,
        maxAnimationPixels: input.limits?.maxAnimationPixels ?? opts.maxAnimationPixels ?? opts.maxPixels,
      },
    );

  const frame = { width: meta.width, height: frameHeight };
  // EXIF orientations 5-8 turn the picture a quarter. HEIF decoders apply their rotation box
  // themselves and report no orientation, so nothing is turned twice.
  const oriented = (meta.orientation ?? 1) >= 5 ? { width: frame.height, height: frame.width } : frame;
  const produced = animated
    ? await animatedLadder(source, frame, square, workDir, opts)
    : meta.format === 'heif' && meta.compression === 'hevc'
      ? await heicLadder(sourcePath, oriented, square, workDir, { ...opts, formats })
      : await stillLadder(source, oriented, square, workDir, { ...opts, ignoreIcc: isSrgbProfile(meta.icc), formats });

  const original = produced.original ?? (await cleanOriginal(source, meta, sniffed.ext, workDir, opts));
  const placeholderFile = produced.variants.find((v) => v.name === '1')!.file;
  const placeholder = `data:image/webp;base64,${(await readFile(placeholderFile)).toString('base64')}`;
  return {
    width: produced.width,
    height: produced.height,
    info: {
      placeholder,
      thumbhash: Buffer.from(rgbaToThumbHash(produced.hashSource.width, produced.hashSource.height, produced.hashSource.data)).toString('base64'),
    },
    variants: produced.variants,
    status: 'ready',
    original,
  };
}

/**
 * The original as it will be served: JPEG, PNG, WebP and GIF rewritten without their metadata (the
 * coded pixels untouched, metadata.ts); TIFF and AVIF/HEIF, whose containers are not rewritten here,
 * re-encoded without metadata (TIFF losslessly with LZW, AVIF at quality 90), upright, ICC kept.
 */
async function cleanOriginal(source: Source, meta: Header, ext: string, workDir: string, opts: ImageProcessorOptions): Promise<{ file: string }> {
  const file = path.join(workDir, `original.${ext}`);
  let cleaned: Buffer | undefined;
  try {
    cleaned = stripLosslessly(meta.format, typeof source === 'string' ? await readFile(source) : source, meta.orientation);
  } catch (err) {
    throw errors.unprocessable('The image file is malformed around its pixel data and cannot be stored safely.', err);
  }
  if (cleaned) {
    await writeFile(file, cleaned);
    return { file };
  }
  try {
    const pipeline = sharp(source, { limitInputPixels: opts.maxPixels, failOn: 'warning' }).autoOrient().keepIccProfile();
    await (meta.format === 'tiff' ? pipeline.tiff({ compression: 'lzw' }) : pipeline.heif({ compression: 'av1', quality: 90, effort: 2 })).toFile(file);
  } catch (err) {
    throw decodeError(err);
  }
  return { file };
}

/** Refuses (413) an animation over its purpose's frame or total-pixel limit, naming the limit. */
export function checkAnimation(frame: { width: number; height: number; pages: number }, limits: Pick<MediaLimits, 'maxFrames' | 'maxAnimationPixels'>): void {
  if (frame.pages > limits.maxFrames) {
    throw errors.tooLarge(`The animation has ${frame.pages} frames; at most ${limits.maxFrames} are accepted. Shorten it and upload again.`);
  }
  const total = frame.width * frame.height * frame.pages;
  if (total > limits.maxAnimationPixels) {
    throw errors.tooLarge(
      `The animation is ${frame.width} × ${frame.height} pixels × ${frame.pages} frames (${megapixels(total)} in all); at most ${megapixels(limits.maxAnimationPixels)} over all frames are accepted. Shorten it or scale it down and upload again.`,
    );
  }
}

type Ladder = { width: number; height: number; variants: ProducedVariant[]; hashSource: Raw; original?: { file: string } };

/**
 * One decode of the source into the largest rung, then each smaller rung resized from pixels already
 * made, one after the other on the image's one slot: a busy server keeps its throughput, and the
 * ladder costs little more than the single 1080 encode that dominates it.
 */
async function stillLadder(
  sourcePath: Source,
  oriented: { width: number; height: number },
  square: boolean,
  workDir: string,
  opts: StillLadderOptions,
): Promise<Ladder> {
  const [topRung, ...smaller] = [...LADDER].sort((a, b) => b.box - a.box) as [Rung, ...Rung[]];
  const topSize = rungSize(oriented, topRung.box, square);
  let top: Raw;
  try {
    // An embedded sRGB profile needs no conversion to sRGB: skipping it gives the same pixels, faster.
    const source = sharp(sourcePath, { limitInputPixels: opts.maxPixels, failOn: 'warning', ignoreIcc: opts.ignoreIcc });
    const decoder = (opts.autoOrient === false ? source : source.autoOrient())
      .resize(topSize.width, topSize.height, square ? { fit: 'cover', position: 'attention' } : { fit: 'fill' })
      .toColourspace('srgb');
    const { data, info } = await decoder.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    top = { data, width: info.width, height: info.height, channels: info.channels };
  } catch (err) {
    throw decodeError(err);
  }

  const variants = [
    ...(await encodeAvif(top, avifRung(topRung.name, opts.formats), workDir, topSize)),
    await encode(sharp(top.data, { raw: rawShape(top) }), topRung, workDir, topSize),
  ];
  // Rungs down to 320 are resized from the top rung's pixels and encoded in the same call; the 320
  // rung's pixels are kept for the smaller ones and the thumbhash. Each sharp call has a fixed cost
  // (about a millisecond) worth saving on a ladder of small images.
  let kept = top;
  for (const rung of smaller) {
    const size = rungSize(oriented, rung.box, square);
    if (rung.box === KEEP_PIXELS_AT) {
      if (size.width !== kept.width || size.height !== kept.height) kept = await resizeRaw(kept, size);
      variants.push(...(await encodeAvif(kept, avifRung(rung.name, opts.formats), workDir, size)));
      variants.push(await encode(sharp(kept.data, { raw: rawShape(kept) }), rung, workDir, size));
    } else {
      // AVIF rungs need this rung's pixels twice: resized once here instead of inside each encode.
      if (avifRung(rung.name, opts.formats)) {
        const pixels = await resizeRaw(kept, size);
        variants.push(...(await encodeAvif(pixels, avifRung(rung.name, opts.formats), workDir, size)));
        variants.push(await encode(sharp(pixels.data, { raw: rawShape(pixels) }), rung, workDir, size));
        continue;
      }
      variants.push(await encode(sharp(kept.data, { raw: rawShape(kept) }).resize(size.width, size.height, { fit: 'fill' }), rung, workDir, size));
    }
  }
  return { ...oriented, variants: byName(variants), hashSource: thumbhashInput(kept) };
}

/** Animations are small by construction (frame cap, pixel budget): each rung decodes its own frames. */
async function animatedLadder(
  sourcePath: Source,
  frame: { width: number; height: number },
  square: boolean,
  workDir: string,
  opts: ImageProcessorOptions,
): Promise<Ladder> {
  const variants: ProducedVariant[] = [];
  try {
    for (const rung of LADDER) {
      const size = rungSize(frame, rung.box, square);
      // The placeholder is inlined in pages: its first frame is enough.
      const frames = rung.name === '1' ? { pages: 1 } : { animated: true };
      const pipeline = sharp(sourcePath, { ...frames, limitInputPixels: opts.maxPixels, failOn: 'warning' })
        .resize(size.width, size.height, square ? { fit: 'cover', position: 'centre' } : { fit: 'fill' })
        .toColourspace('srgb');
      variants.push(await encode(pipeline, rung, workDir, size));
    }
    const first = await sharp(sourcePath, { pages: 1, failOn: 'warning' })
      .resize(rungSize(frame, 100, square).width, rungSize(frame, 100, square).height, square ? { fit: 'cover', position: 'centre' } : { fit: 'fill' })
      .ensureAlpha()
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    return { ...frame, variants, hashSource: { data: first.data, width: first.info.width, height: first.info.height, channels: 4 } };
  } catch (err) {
    throw decodeError(err);
  }
}

async function encode(pipeline: Sharp, rung: Rung, workDir: string, size: { width: number; height: number }): Promise<ProducedVariant> {
  const storedAs = `${rung.name}.webp`;
  const file = path.join(workDir, storedAs);
  await pipeline.webp({ quality: rung.quality, effort: rung.effort }).toFile(file);
  return { name: rung.name, file, storedAs, mimeType: 'image/webp', format: 'webp', width: size.width, height: size.height };
}

async function resizeRaw(raw: Raw, size: { width: number; height: number }): Promise<Raw> {
  const { data, info } = await sharp(raw.data, { raw: rawShape(raw) })
    .resize(size.width, size.height, { fit: 'fill' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

/**
 * The thumbhash's input: at most 100 × 100 RGBA, box-averaged here from pixels already made (the
 * hash keeps only a few low frequencies, so a box filter loses nothing it would keep).
 */
export function thumbhashInput(raw: Raw): Raw {
  const { width, height } = rungSize(raw, 100, false);
  const out = Buffer.alloc(width * height * 4);
  const c = raw.channels;
  for (let y = 0; y < height; y++) {
    const y0 = Math.floor((y * raw.height) / height);
    const y1 = Math.max(y0 + 1, Math.floor(((y + 1) * raw.height) / height));
    for (let x = 0; x < width; x++) {
      const x0 = Math.floor((x * raw.width) / width);
      const x1 = Math.max(x0 + 1, Math.floor(((x + 1) * raw.width) / width));
      let r = 0;
      let g = 0;
      let b = 0;
      let a = 0;
      for (let sy = y0; sy < y1; sy++) {
        for (let sx = x0; sx < x1; sx++) {
          const i = (sy * raw.width + sx) * c;
          // Grey (1–2 channels) repeats its one value; a missing alpha is opaque.
          r += raw.data[i]!;
          g += raw.data[i + (c >= 3 ? 1 : 0)]!;
          b += raw.data[i + (c >= 3 ? 2 : 0)]!;
          a += c === 4 ? raw.data[i + 3]! : c === 2 ? raw.data[i + 1]! : 255;
        }
      }
      const n = (y1 - y0) * (x1 - x0);
      const o = (y * width + x) * 4;
      out[o] = Math.round(r / n);
      out[o + 1] = Math.round(g / n);
      out[o + 2] = Math.round(b / n);
      out[o + 3] = Math.round(a / n);
    }
  }
  return { data: out, width, height, channels: 4 };
}

const rawShape = (raw: Raw) => ({ width: raw.width, height: raw.height, channels: raw.channels });

/**
 * The size of one rung: square purposes get n × n (n capped by the shorter side), others fit
 * inside n × n keeping the aspect ratio. Never larger than the source, never below 1 pixel.
 */
export function rungSize(source: { width: number; height: number }, box: number, square: boolean): { width: number; height: number } {
  if (square) {
    const side = Math.min(box, source.width, source.height);
    return { width: side, height: side };
  }
  const scale = Math.min(1, box / Math.max(source.width, source.height));
  return { width: Math.max(1, Math.round(source.width * scale)), height: Math.max(1, Math.round(source.height * scale)) };
}

type Header = { format: string; compression?: string; width: number; height: number; pageHeight?: number; pages?: number; orientation?: number; icc?: Buffer };

/** Reads the header only (no pixels), so the size checks happen before any decoding. */
async function readHeader(sourcePath: Source, mimeType: string, animated: boolean): Promise<Header> {
  try {
    // No pixel limit here: the header's declared size is what the caller checks, with a clear message.
    const meta = await sharp(sourcePath, { limitInputPixels: false, ...(animated ? { animated: true } : {}) }).metadata();
    if (!meta.width || !meta.height) throw new Error('no dimensions in the header');
    return { ...meta, format: meta.format, width: meta.width, height: meta.height };
  } catch (err) {
    if ((mimeType === 'image/avif' || mimeType === 'image/heif') && /unsupported image format/i.test(String((err as Error).message))) {
      throw errors.unsupportedType('This AVIF/HEIF variant (for example an image sequence) is not supported; upload a still AVIF, JPEG, PNG, WebP or GIF.');
    }
    if (mimeType === 'image/bmp' && /unsupported image format/i.test(String((err as Error).message))) {
      throw errors.unsupportedType('BMP images are not supported; convert it to PNG or JPEG and upload again.');
    }
    throw decodeError(err);
  }
}

/** A decoder failure is the content's fault: the client gets a 4xx and the cause goes to the logs. */
function decodeError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  const message = String((err as Error)?.message ?? err);
  if (/exceeds pixel limit/i.test(message)) return errors.tooLarge('The image has more pixels than this server accepts. Scale it down and upload again.');
  // libvips failing an allocation under the worker's memory cap: the file asks for more than one file may.
  if (looksLikeMemoryFailure(message))
    return errors.unprocessable(
      'Decoding the image needs more memory than this server allows for one file. Scale it down or convert it to JPEG and upload again.',
      err,
    );
  return errors.unprocessable('The image is corrupt or truncated and cannot be decoded.', err);
}

const megapixels = (pixels: number) => `${Number((pixels / 1e6).toFixed(1))} megapixels`;

function byName(variants: ProducedVariant[]): ProducedVariant[] {
  // '6-avif' sorts with rung 6.
  return [...variants].sort((a, b) => parseInt(a.name, 10) - parseInt(b.name, 10) || a.name.localeCompare(b.name));
}

// ── HEIC input and AVIF output (issue 17) ────────────────────────────────────────────────────────

/**
 * Refuses a HEIF/AVIF whose container declares an image item over the pixel limit, before any
 * decoder runs. Every item counts, not just the primary: a grid may declare a small canvas and
 * large tiles.
 */
async function checkHeifDeclaredSizes(sourcePath: string, maxPixels: number): Promise<void> {
  const largest = (await heifDeclaredSizes(sourcePath)).reduce((max, s) => (s.width * s.height > max.width * max.height ? s : max), { width: 0, height: 0 });
  const pixels = largest.width * largest.height;
  if (pixels > maxPixels) {
    throw errors.tooLarge(
      `The image is ${largest.width} × ${largest.height} pixels (${megapixels(pixels)}); at most ${megapixels(maxPixels)} are accepted. Scale it down and upload again.`,
    );
  }
}

/**
 * A HEIC photo: libheif (a bounded child, heif.ts) decodes it upright with its colour profile, then
 * the same still ladder as any photo runs on that, converting the profile (Display P3) to sRGB.
 */
async function heicLadder(
  sourcePath: string,
  oriented: { width: number; height: number },
  square: boolean,
  workDir: string,
  opts: ImageProcessorOptions & { formats?: readonly ImageFormat[] },
): Promise<Ladder> {
  const decoded = await decodeHeicToJpeg(sourcePath, workDir, { pixels: oriented.width * oriented.height });
  try {
    // Its EXIF orientation describes the coded picture, which libheif has already turned by irot.
    const ladder = await stillLadder(decoded, oriented, square, workDir, { ...opts, ignoreIcc: false, autoOrient: false });
    // The decoder copies the EXIF (GPS, device) into its JPEG: stripped before the original is made from it.
    const clean = stripLosslessly('jpeg', await readFile(decoded), 1);
    if (!clean) throw new Error('The decoded HEIC could not be cleaned of its metadata.');
    return { ...ladder, original: { file: await encodeCleanHeic(clean, workDir, { pixels: oriented.width * oriented.height }) } };
  } finally {
    await rm(decoded, { force: true });
  }
}

export type AvifRung = { name: string; quality: number; effort: number };

/**
 * The rungs that get an AVIF beside their WebP, at the quality whose SSIM matches the WebP rung's
 * (q59–60 on the corpus photos, `npm run bench:variants`). 10, 40 and 160 px are left out: there
 * AVIF is larger than WebP at the same SSIM (its container alone outweighs the 10 px WebP). Effort 0
 * (libaom's fastest): on these rungs it made files within a few percent of effort 2's at a fifth
 * to a tenth of its time.
 */
export const AVIF_LADDER: readonly AvifRung[] = Object.freeze([
  { name: '4', quality: 60, effort: 0 },
  { name: '5', quality: 60, effort: 0 },
  { name: '6', quality: 60, effort: 0 },
]);

/** The AVIF settings for this rung when the purpose asks for AVIF and the rung has them. */
export function avifRung(name: string, formats: readonly ImageFormat[] | undefined): AvifRung | undefined {
  return formats?.includes('avif') ? AVIF_LADDER.find((r) => r.name === name) : undefined;
}

/** The AVIF twin of a rung, from the same pixels as its WebP; nothing when the rung has none. */
async function encodeAvif(raw: Raw, rung: AvifRung | undefined, workDir: string, size: { width: number; height: number }): Promise<ProducedVariant[]> {
  if (!rung) return [];
  const storedAs = `${rung.name}.avif`;
  const file = path.join(workDir, storedAs);
  // 4:2:0 like WebP: the SSIM match and the byte comparison are like for like.
  await sharp(raw.data, { raw: rawShape(raw) })
    .avif({ quality: rung.quality, effort: rung.effort, chromaSubsampling: '4:2:0' })
    .toFile(file);
  return [{ name: avifVariantName(rung.name), file, storedAs, mimeType: 'image/avif', format: 'avif', width: size.width, height: size.height }];
}
