import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { createImageProcessor, LADDER, rungSize } from '../src/media/images.js';
import { sniffFile } from '../src/media/sniff.js';

// npm run bench:variants
// For each corpus photo: the whole ladder (variants + placeholder + thumbhash + metadata, through
// the real processor) over one sharp resize of the same source to a 1080 px WebP with the same
// encoder settings as rung 6, both measured here; then two ladders at once over one. Then the
// bytes/quality table the ladder was chosen from. Ends with one JSON line of the worst photos.

const photosDir = path.resolve(import.meta.dirname, '../../shared/corpus/images/photos');
const REPEATS = 5;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
async function timeIt(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

const work = await mkdtemp(path.join(tmpdir(), 'chipmunk-bench-'));
let dirSeq = 0;
const freshDir = async () => {
  const dir = path.join(work, String(++dirSeq));
  await mkdir(dir);
  return dir;
};

try {
  const processor = createImageProcessor({ maxPixels: 50_000_000, maxFrames: 100, concurrency: 2 });
  const top = LADDER.find((r) => r.name === '6')!;
  const photos = (await readdir(photosDir)).filter((n) => /\.jpe?g$/i.test(n)).sort();
  const rows: Array<{ photo: string; single: number; ladder: number; ladderOverSingle: number; twoOverOne: number }> = [];

  console.log(`ladder vs one 1080 px WebP (q${top.quality} e${top.effort}), medians of ${REPEATS} runs, sharp ${sharp.versions.sharp} / libvips ${sharp.versions.vips}`);
  console.log('photo                                 size        single ms  ladder ms  ladder/single  two-at-once/one');
  for (const photo of photos) {
    const source = path.join(photosDir, photo);
    const sniffed = (await sniffFile(source))!;
    const meta = await sharp(source).metadata();
    const single = async () => {
      const out = path.join(await freshDir(), 'single.webp');
      await sharp(source).autoOrient().resize(top.box, top.box, { fit: 'inside', withoutEnlargement: true }).webp({ quality: top.quality, effort: top.effort }).toFile(out);
    };
    const ladder = async () => processor.process({ fileId: 'bench', sourcePath: source, sniffed, square: false, workDir: await freshDir() });
    await single();
    await ladder();
    const singles: number[] = [];
    const ladders: number[] = [];
    for (let i = 0; i < REPEATS; i++) {
      singles.push(await timeIt(single));
      ladders.push(await timeIt(ladder));
    }
    const pairs: number[] = [];
    for (let i = 0; i < 3; i++) pairs.push(await timeIt(() => Promise.all([ladder(), ladder()])));
    const one = median(ladders);
    const row = { photo, single: median(singles), ladder: one, ladderOverSingle: one / median(singles), twoOverOne: (2 * one) / median(pairs) };
    rows.push(row);
    console.log(
      `${photo.padEnd(37)} ${`${meta.width}×${meta.height}`.padEnd(11)} ${row.single.toFixed(1).padStart(9)}  ${row.ladder.toFixed(1).padStart(9)}  ${row.ladderOverSingle.toFixed(3).padStart(13)}  ${row.twoOverOne.toFixed(3).padStart(15)}`,
    );
  }

  await qualityTable(photos.map((p) => path.join(photosDir, p)));

  const worst = { ladderOverSingle: Math.max(...rows.map((r) => r.ladderOverSingle)), twoOverOne: Math.min(...rows.map((r) => r.twoOverOne)) };
  console.log(JSON.stringify({ ladderOverSingle: Number(worst.ladderOverSingle.toFixed(3)), twoOverOne: Number(worst.twoOverOne.toFixed(3)) }));
} finally {
  await rm(work, { recursive: true, force: true });
}

/**
 * Bytes against visible quality per rung: each candidate (quality, effort) encodes the exact pixels
 * the ladder hands that rung (one decode, then the cascade), decoded again and compared with them.
 * SSIM is on luma with 8 × 8 windows; ms is one encode, summed over the photos.
 */
async function qualityTable(sources: string[]) {
  const candidates: Record<string, Array<[number, number]>> = {
    '1': [[5, 6], [20, 6], [40, 6], [60, 6]],
    '2': [[50, 4], [60, 4], [70, 4], [80, 4]],
    '3': [[60, 2], [70, 2], [75, 2], [80, 2], [70, 4]],
    '4': [[70, 2], [75, 2], [80, 2], [75, 4]],
    '5': [[75, 2], [78, 2], [80, 2], [78, 4], [80, 4]],
    '6': [[75, 4], [80, 4], [85, 4], [80, 0], [80, 2], [80, 6]],
  };
  type Ref = { data: Buffer; width: number; height: number; luma: Float64Array };
  const refs = new Map<string, Ref[]>();
  for (const source of sources) {
    const oriented = (await sharp(source).metadata()).autoOrient;
    const size6 = rungSize(oriented, 1080, false);
    let { data, info } = await sharp(source).autoOrient().resize(size6.width, size6.height, { fit: 'fill' }).toColourspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true });
    for (const rung of [...LADDER].sort((a, b) => b.box - a.box)) {
      const size = rungSize(oriented, rung.box, false);
      if (size.width !== info.width || size.height !== info.height) {
        ({ data, info } = await sharp(data, { raw: { width: info.width, height: info.height, channels: 3 } }).resize(size.width, size.height, { fit: 'fill' }).raw().toBuffer({ resolveWithObject: true }));
      }
      const list = refs.get(rung.name) ?? [];
      list.push({ data, width: info.width, height: info.height, luma: luma(data) });
      refs.set(rung.name, list);
    }
  }
  console.log('\nquality table (mean over the photos; * = the ladder)');
  console.log('rung  box   quality effort   mean bytes   SSIM     PSNR dB   encode ms');
  for (const rung of LADDER) {
    for (const [quality, effort] of candidates[rung.name]!) {
      let bytes = 0;
      let ssimSum = 0;
      let psnrSum = 0;
      let ms = 0;
      for (const ref of refs.get(rung.name)!) {
        const start = performance.now();
        const webp = await sharp(ref.data, { raw: { width: ref.width, height: ref.height, channels: 3 } }).webp({ quality, effort }).toBuffer();
        ms += performance.now() - start;
        bytes += webp.length;
        const decoded = await sharp(webp).removeAlpha().raw().toBuffer();
        ssimSum += ssim(ref.luma, luma(decoded), ref.width, ref.height);
        psnrSum += psnr(ref.data, decoded);
      }
      const n = refs.get(rung.name)!.length;
      const chosen = quality === rung.quality && effort === rung.effort ? '*' : ' ';
      console.log(
        `${chosen}${rung.name.padEnd(4)} ${String(rung.box).padEnd(5)} ${`q${quality}`.padEnd(7)} ${`e${effort}`.padEnd(6)} ${(bytes / n).toFixed(0).padStart(10)}   ${(ssimSum / n).toFixed(4)}   ${(psnrSum / n).toFixed(2).padStart(6)}   ${ms.toFixed(1).padStart(9)}`,
      );
    }
  }
}

function luma(rgb: Buffer): Float64Array {
  const out = new Float64Array(rgb.length / 3);
  for (let i = 0; i < out.length; i++) out[i] = 0.299 * rgb[i * 3]! + 0.587 * rgb[i * 3 + 1]! + 0.114 * rgb[i * 3 + 2]!;
  return out;
}

function psnr(a: Buffer, b: Buffer): number {
  let se = 0;
  for (let i = 0; i < a.length; i++) se += (a[i]! - b[i]!) ** 2;
  return se === 0 ? 99 : 10 * Math.log10((255 * 255 * a.length) / se);
}

/** Mean SSIM over win × win windows (stride win/2); tiny rungs use one window the size of the image. */
function ssim(a: Float64Array, b: Float64Array, width: number, height: number): number {
  const win = Math.max(1, Math.min(8, width, height));
  const step = Math.max(1, win >> 1);
  const c1 = (0.01 * 255) ** 2;
  const c2 = (0.03 * 255) ** 2;
  const count = win * win;
  let sum = 0;
  let windows = 0;
  for (let y = 0; y + win <= height; y += step) {
    for (let x = 0; x + win <= width; x += step) {
      let ma = 0;
      let mb = 0;
      for (let j = 0; j < win; j++) for (let i = 0; i < win; i++) {
        ma += a[(y + j) * width + x + i]!;
        mb += b[(y + j) * width + x + i]!;
      }
      ma /= count;
      mb /= count;
      let va = 0;
      let vb = 0;
      let cov = 0;
      for (let j = 0; j < win; j++) for (let i = 0; i < win; i++) {
        const da = a[(y + j) * width + x + i]! - ma;
        const db = b[(y + j) * width + x + i]! - mb;
        va += da * da;
        vb += db * db;
        cov += da * db;
      }
      const norm = Math.max(1, count - 1);
      sum += ((2 * ma * mb + c1) * ((2 * cov) / norm + c2)) / ((ma * ma + mb * mb + c1) * ((va + vb) / norm + c2));
      windows++;
    }
  }
  return windows ? sum / windows : 1;
}
