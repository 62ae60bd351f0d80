import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { AVIF_LADDER, LADDER, rungSize } from '../../src/media/images.js';
import type { MediaProcessor } from '../../src/media/processor.js';
import { encodeCleanHeic } from '../../src/media/heif.js';
import { sniffFile } from '../../src/media/sniff.js';
import { luma, ssim } from './quality.js';

// The variants bench's issue-17 section: what opting a purpose in to AVIF costs (the whole ladder
// with AVIF rungs over the WebP-only ladder, through the server's worker pool) and saves (bytes per
// rung at matched quality), and what a HEIC costs against a JPEG of the same pixels.
//
// Quality is matched by SSIM on luma (8 × 8 windows, bench/lib/quality.ts) between each rung's exact
// pixels and the decoded file: for each photo and rung the WebP at the ladder's settings gives the
// target, and the AVIF quality (effort as in AVIF_LADDER) is searched for the lowest one reaching it.

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

export type AvifHeicFigures = {
  avifLadderOverWebpLadder: number;
  /** Per rung: 1 − AVIF bytes / WebP bytes at matched SSIM, mean over the photos (negative: AVIF is larger). */
  avifBytesSavedAtMatchedSsim: Record<string, number>;
  /** The same with the ladder's fixed AVIF qualities. */
  avifBytesSavedAsShipped: Record<string, number>;
  heicLadderOverJpegLadder: number;
  heicDecodeMs: number;
  jpegDecodeMs: number;
  /** Re-encoding the HEIC original without its metadata, part of the HEIC ladder (a JPEG's is a lossless rewrite). */
  heicOriginalEncodeMs: number;
};

export async function avifAndHeicSection(deps: {
  processor: MediaProcessor;
  photos: string[];
  heic: string;
  freshDir: () => Promise<string>;
  repeats: number;
  backlog: number;
}): Promise<AvifHeicFigures> {
  const { processor, freshDir } = deps;
  const perItem = async (make: () => Promise<unknown>) => {
    const start = performance.now();
    for (let i = 0; i < deps.backlog; i++) await make();
    return (performance.now() - start) / deps.backlog;
  };

  console.log('\nAVIF rungs (issue 17): the ladder with formats ["webp", "avif"] over the WebP-only ladder, worker pool, ms per item');
  console.log('photo                                 webp ladder ms  +avif ladder ms  ratio');
  const ratios: number[] = [];
  for (const source of deps.photos) {
    const sniffed = (await sniffFile(source))!;
    const ladder = (formats: Array<'webp' | 'avif'>) => async () =>
      processor.process({ fileId: 'bench', sourcePath: source, sniffed, square: false, formats, workDir: await freshDir() });
    await ladder(['webp', 'avif'])();
    const webp: number[] = [];
    const both: number[] = [];
    const r: number[] = [];
    for (let i = 0; i < deps.repeats; i++) {
      const w = await perItem(ladder(['webp']));
      const a = await perItem(ladder(['webp', 'avif']));
      webp.push(w);
      both.push(a);
      r.push(a / w);
    }
    ratios.push(median(r));
    console.log(
      `${path.basename(source).padEnd(37)} ${median(webp).toFixed(1).padStart(14)}  ${median(both).toFixed(1).padStart(15)}  ${median(r).toFixed(2).padStart(5)}`,
    );
  }

  console.log('\nAVIF against WebP per rung at matched SSIM (mean over the photos; effort as shipped)');
  console.log('rung  box    webp bytes  SSIM     avif q (matched)  avif bytes  saved   | shipped q  bytes   SSIM    saved');
  const matched: Record<string, number> = {};
  const shipped: Record<string, number> = {};
  for (const rung of LADDER) {
    const settings = AVIF_LADDER.find((a) => a.name === rung.name);
    const effort = settings?.effort ?? 0;
    const rows: Array<{ webp: number; webpSsim: number; q: number; avif: number; shippedBytes: number; shippedSsim: number }> = [];
    for (const source of deps.photos) {
      const oriented = (await sharp(source).metadata()).autoOrient;
      const size = rungSize(oriented, rung.box, false);
      const { data, info } = await sharp(source)
        .autoOrient()
        .resize(size.width, size.height, { fit: 'fill' })
        .toColourspace('srgb')
        .removeAlpha()
        .raw()
        .toBuffer({ resolveWithObject: true });
      const raw = { raw: { width: info.width, height: info.height, channels: 3 as const } };
      const ref = luma(data);
      const quality = async (file: Buffer) => ssim(ref, luma(await sharp(file).removeAlpha().raw().toBuffer()), info.width, info.height);
      const avifAt = (q: number) => sharp(data, raw).avif({ quality: q, effort, chromaSubsampling: '4:2:0' }).toBuffer();
      const webp = await sharp(data, raw).webp({ quality: rung.quality, effort: rung.effort }).toBuffer();
      const target = await quality(webp);
      // Lowest AVIF quality whose SSIM reaches the WebP's: bisection (SSIM rises with quality, nearly monotonic).
      let lo = 1;
      let hi = 100;
      let best = await avifAt(100);
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        const candidate = await avifAt(mid);
        if ((await quality(candidate)) >= target) {
          hi = mid;
          best = candidate;
        } else lo = mid + 1;
      }
      const ship = settings ? await avifAt(settings.quality) : undefined;
      rows.push({
        webp: webp.length,
        webpSsim: target,
        q: lo,
        avif: best.length,
        shippedBytes: ship?.length ?? NaN,
        shippedSsim: ship ? await quality(ship) : NaN,
      });
    }
    matched[rung.name] = Number((1 - mean(rows.map((x) => x.avif / x.webp))).toFixed(3));
    if (settings) shipped[rung.name] = Number((1 - mean(rows.map((x) => x.shippedBytes / x.webp))).toFixed(3));
    const pct = (x: number) => `${(x * 100).toFixed(1)}%`.padStart(6);
    console.log(
      `${rung.name.padEnd(5)} ${String(rung.box).padEnd(5)} ${mean(rows.map((x) => x.webp))
        .toFixed(0)
        .padStart(11)}  ${mean(rows.map((x) => x.webpSsim)).toFixed(4)}   ${`q${Math.round(mean(rows.map((x) => x.q)))}`.padStart(16)}  ${mean(
        rows.map((x) => x.avif),
      )
        .toFixed(0)
        .padStart(10)}  ${pct(matched[rung.name]!)}` +
        (settings
          ? `  | ${`q${settings.quality}`.padStart(9)}  ${mean(rows.map((x) => x.shippedBytes))
              .toFixed(0)
              .padStart(6)}  ${mean(rows.map((x) => x.shippedSsim)).toFixed(4)}  ${pct(shipped[rung.name]!)}`
          : '  | (no AVIF rung)'),
    );
  }

  return {
    avifLadderOverWebpLadder: Number(Math.max(...ratios).toFixed(3)),
    avifBytesSavedAtMatchedSsim: matched,
    avifBytesSavedAsShipped: shipped,
    ...(await heicAgainstJpeg(deps)),
  };
}

/**
 * A HEIC against a JPEG of the same pixels (libheif's decode re-encoded by sharp, q90, sRGB): the
 * full decode, the whole ladder through the worker pool, and the part of the HEIC ladder that a
 * JPEG does not have, the original coded again as HEVC without its EXIF (heif-enc, src/media/heif.ts).
 */
export async function heicAgainstJpeg(deps: { processor: MediaProcessor; heic: string; freshDir: () => Promise<string>; repeats: number; backlog: number }) {
  const { processor, freshDir } = deps;
  const perItem = async (make: () => Promise<unknown>) => {
    const start = performance.now();
    for (let i = 0; i < deps.backlog; i++) await make();
    return (performance.now() - start) / deps.backlog;
  };
  const dir = await freshDir();
  const decodedJpeg = path.join(dir, 'decoded.jpg');
  const sameJpeg = path.join(dir, 'same-pixels.jpg');
  await promisify(execFile)('heif-convert', ['--quiet', '-q', '95', deps.heic, decodedJpeg]);
  await sharp(decodedJpeg).jpeg({ quality: 90 }).toFile(sameJpeg);
  const heicSniffed = (await sniffFile(deps.heic))!;
  const jpegSniffed = (await sniffFile(sameJpeg))!;
  const heicLadder = async () => processor.process({ fileId: 'bench', sourcePath: deps.heic, sniffed: heicSniffed, square: false, workDir: await freshDir() });
  const jpegLadder = async () => processor.process({ fileId: 'bench', sourcePath: sameJpeg, sniffed: jpegSniffed, square: false, workDir: await freshDir() });
  await heicLadder();
  await jpegLadder();
  const heicTimes: number[] = [];
  const jpegTimes: number[] = [];
  const ladderRatios: number[] = [];
  const heicDecode: number[] = [];
  const jpegDecode: number[] = [];
  const originalEncode: number[] = [];
  const size = await sharp(sameJpeg).metadata();
  const pixels = size.width * size.height;
  const decodedBytes = await readFile(decodedJpeg);
  for (let i = 0; i < deps.repeats; i++) {
    const h = await perItem(heicLadder);
    const j = await perItem(jpegLadder);
    heicTimes.push(h);
    jpegTimes.push(j);
    ladderRatios.push(h / j);
    let start = performance.now();
    await promisify(execFile)('heif-convert', ['--quiet', '-q', '95', deps.heic, path.join(dir, 'again.jpg')]);
    heicDecode.push(performance.now() - start);
    start = performance.now();
    await sharp(sameJpeg).raw().toBuffer();
    jpegDecode.push(performance.now() - start);
    start = performance.now();
    await encodeCleanHeic(decodedBytes, await freshDir(), { pixels });
    originalEncode.push(performance.now() - start);
  }
  const meta = await sharp(sameJpeg).metadata();
  console.log(`\nHEIC (${path.basename(deps.heic)}, ${meta.width}×${meta.height}) against a JPEG of the same pixels`);
  console.log(
    `full decode: heif-convert (HEIC → JPEG q95, child process) ${median(heicDecode).toFixed(0)} ms; sharp JPEG → raw ${median(jpegDecode).toFixed(0)} ms`,
  );
  console.log(
    `ladder through the worker pool: HEIC ${median(heicTimes).toFixed(0)} ms, JPEG ${median(jpegTimes).toFixed(0)} ms, ratio ${median(ladderRatios).toFixed(2)}`,
  );
  console.log(`of which the HEIC original coded again as HEVC without its EXIF (heif-enc q60, ultrafast): ${median(originalEncode).toFixed(0)} ms`);

  return {
    heicLadderOverJpegLadder: Number(median(ladderRatios).toFixed(3)),
    heicDecodeMs: Math.round(median(heicDecode)),
    jpegDecodeMs: Math.round(median(jpegDecode)),
    heicOriginalEncodeMs: Math.round(median(originalEncode)),
  };
}
