import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { createImageWorkerPool } from '../src/media/image-pool.js';
import { LADDER, rungSize } from '../src/media/images.js';
import { silentLogger } from '../src/log.js';
import { sniffFile } from '../src/media/sniff.js';
import { avifAndHeicSection } from './lib/avif-heic.js';
import { luma, psnr, ssim } from './lib/quality.js';

// npm run bench:variants
// For each corpus photo: the whole ladder (variants + placeholder + thumbhash + metadata, through
// the server's worker pool) over one sharp resize of the same source to a 1080 px WebP with sharp's
// defaults, both measured here; the same over a single encode with rung 6's own settings, for
// context; then two ladders at once over one. Then the bytes/quality table the ladder was chosen
// from. Ends with one JSON line of the worst photos, headed by ladderOverSameSettings (the ladder's
// cost over its own top rung); its CPU-time twin (the workers' CPU from /proc against this process's
// for the single encode) holds steadier than wall clock on a machine shared with other work.

const photosDir = path.resolve(import.meta.dirname, '../../shared/corpus/images/photos');
const REPEATS = 5;
/** Items timed back to back in each measure. */
const BACKLOG = 8;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
/** CPU milliseconds (user + system) a process has used, from /proc (clock ticks of 10 ms). */
const cpuOf = (pid: number) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8')
    .replace(/^.*\) /, '')
    .split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
};
const ownCpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
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

// The pool the server runs: two worker processes, as on the 2-core machine. The single encode runs
// here with the workers' libvips settings: one thread, no operation cache.
const processor = createImageWorkerPool({ maxPixels: 50_000_000, maxFrames: 100, concurrency: 2, logger: silentLogger });
sharp.concurrency(1);
sharp.cache(false);
try {
  const top = LADDER.find((r) => r.name === '6')!;
  const photos = (await readdir(photosDir)).filter((n) => /\.jpe?g$/i.test(n)).sort();
  const rows: Array<{ photo: string; ladderOverSingle: number; ladderOverSame: number; ladderOverSameCpu: number; twoOverOne: number; floorOverSame: number }> =
    [];

  console.log(
    `sharp ${sharp.versions.sharp} / libvips ${sharp.versions.vips}; ms per item over ${BACKLOG} back to back, medians of ${REPEATS} interleaved rounds`,
  );
  console.log("single  = one sharp resize of the source to a 1080 px WebP with sharp's defaults (q80, effort 4): the issue's baseline");
  console.log(`same    = the same resize encoded with rung 6's own settings (q${top.quality}, effort ${top.effort}), for context`);
  console.log("ladder  = the whole ladder through the server's worker pool: variants 1-6, placeholder, thumbhash, metadata");
  console.log('ladder/same is the headline (target ≤ 1.5); cpu = the same ratio in CPU time');
  console.log("floor   = one decode to the top rung's pixels plus each rung encoded from its own pixels made beforehand (no resize, no");
  console.log('          header, original, thumbhash or worker): what the ladder would cost with nothing but its pixels, over same');
  console.log(
    'photo                                 size        single ms  same ms  ladder ms  ladder/same  ladder/same cpu  ladder/single  two-at-once/one  floor/same',
  );
  // Warm-up: both workers load sharp and compile the ladder before anything is timed.
  {
    const source = path.join(photosDir, photos[0]!);
    const sniffed = (await sniffFile(source))!;
    for (let i = 0; i < 3; i++)
      await Promise.all([0, 1].map(async () => processor.process({ fileId: 'warm', sourcePath: source, sniffed, square: false, workDir: await freshDir() })));
  }
  for (const photo of photos) {
    const source = path.join(photosDir, photo);
    const sniffed = (await sniffFile(source))!;
    const meta = await sharp(source).metadata();
    const resized = () => sharp(source).autoOrient().resize(1080, 1080, { fit: 'inside', withoutEnlargement: true });
    const single = async () =>
      resized()
        .webp()
        .toFile(path.join(await freshDir(), 'single.webp'));
    const same = async () =>
      resized()
        .webp({ quality: top.quality, effort: top.effort })
        .toFile(path.join(await freshDir(), 'same.webp'));
    const ladder = async () => processor.process({ fileId: 'bench', sourcePath: source, sniffed, square: false, workDir: await freshDir() });
    // The floor: each rung's exact pixels made once, outside the timing; timed are the one decode
    // (as the ladder does it) and one encode per rung at its settings.
    const oriented = meta.autoOrient;
    const rungPixels = await Promise.all(
      LADDER.map(async (rung) => {
        const size = rungSize(oriented, rung.box, false);
        const { data, info } = await sharp(source)
          .autoOrient()
          .resize(size.width, size.height, { fit: 'fill' })
          .toColourspace('srgb')
          .raw()
          .toBuffer({ resolveWithObject: true });
        return { rung, data, raw: { width: info.width, height: info.height, channels: info.channels } };
      }),
    );
    const topSize = rungSize(oriented, top.box, false);
    const floor = async () => {
      await sharp(source).autoOrient().resize(topSize.width, topSize.height, { fit: 'fill' }).toColourspace('srgb').raw().toBuffer();
      const dir = await freshDir();
      for (const { rung, data, raw } of rungPixels)
        await sharp(data, { raw })
          .webp({ quality: rung.quality, effort: rung.effort })
          .toFile(path.join(dir, `${rung.name}.webp`));
    };
    // Warm both workers, not just the one a lone ladder would use.
    await single();
    await same();
    await Promise.all([ladder(), ladder()]);
    // Every measure is a steady rate: BACKLOG items back to back, timed together, so neither side
    // pays for waking an idle core. Rounds are interleaved and the ratios' medians reported.
    const perItem = async (make: () => Promise<unknown>) =>
      (await timeIt(async () => {
        for (let i = 0; i < BACKLOG; i++) await make();
      })) / BACKLOG;
    // CPU per item: the encode here runs in this process; the ladder in the workers.
    const cpuPerItem = async (make: () => Promise<unknown>, where: 'here' | 'workers') => {
      const read = () => (where === 'here' ? ownCpu() : processor.pids.reduce((sum, pid) => sum + cpuOf(pid), 0));
      const before = read();
      for (let i = 0; i < BACKLOG; i++) await make();
      return (read() - before) / BACKLOG;
    };
    // Two at a time, as the server's queue runs them: twice the backlog, two slots.
    const twoAtATime = () =>
      timeIt(async () => {
        let taken = 0;
        await Promise.all(
          [0, 1].map(async () => {
            while (taken++ < 2 * BACKLOG) await ladder();
          }),
        );
      });
    const times = { single: [] as number[], same: [] as number[], ladder: [] as number[] };
    const ratios = {
      ladderOverSingle: [] as number[],
      ladderOverSame: [] as number[],
      ladderOverSameCpu: [] as number[],
      twoOverOne: [] as number[],
      floorOverSame: [] as number[],
    };
    for (let i = 0; i < REPEATS; i++) {
      const single1 = await perItem(single);
      const same1 = await perItem(same);
      const ladder1 = await perItem(ladder);
      ratios.floorOverSame.push((await perItem(floor)) / same1);
      const pairRate = (2 * BACKLOG) / (await twoAtATime());
      ratios.ladderOverSameCpu.push((await cpuPerItem(ladder, 'workers')) / (await cpuPerItem(same, 'here')));
      times.single.push(single1);
      times.same.push(same1);
      times.ladder.push(ladder1);
      ratios.ladderOverSingle.push(ladder1 / single1);
      ratios.ladderOverSame.push(ladder1 / same1);
      ratios.twoOverOne.push(pairRate * ladder1);
    }
    const row = {
      photo,
      ladderOverSingle: median(ratios.ladderOverSingle),
      ladderOverSame: median(ratios.ladderOverSame),
      ladderOverSameCpu: median(ratios.ladderOverSameCpu),
      twoOverOne: median(ratios.twoOverOne),
      floorOverSame: median(ratios.floorOverSame),
    };
    rows.push(row);
    console.log(
      `${photo.padEnd(37)} ${`${meta.width}×${meta.height}`.padEnd(11)} ${median(times.single).toFixed(1).padStart(9)}  ${median(times.same).toFixed(1).padStart(7)}  ${median(times.ladder).toFixed(1).padStart(9)}  ${row.ladderOverSame.toFixed(3).padStart(11)}  ${row.ladderOverSameCpu.toFixed(3).padStart(15)}  ${row.ladderOverSingle.toFixed(3).padStart(13)}  ${row.twoOverOne.toFixed(3).padStart(15)}  ${row.floorOverSame.toFixed(3).padStart(10)}`,
    );
  }

  await qualityTable(photos.map((p) => path.join(photosDir, p)));
  // Issue 17, its own section: AVIF rungs' cost and savings, HEIC against JPEG (bench/lib/avif-heic.ts).
  const heic = path.resolve(photosDir, '../formats/heic-iphone8plus-orientation6.heic');
  const avif = await avifAndHeicSection({ processor, photos: photos.map((p) => path.join(photosDir, p)), heic, freshDir, repeats: REPEATS, backlog: 3 });

  const worst = { ladderOverSingle: Math.max(...rows.map((r) => r.ladderOverSingle)), twoOverOne: Math.min(...rows.map((r) => r.twoOverOne)) };
  const worstSame = Math.max(...rows.map((r) => r.ladderOverSame));
  const worstSameCpu = Math.max(...rows.map((r) => r.ladderOverSameCpu));
  const r3 = (x: number) => Number(x.toFixed(3));
  // The floor of the photo whose ladder/same is the worst: how much of the headline is pixels.
  const worstRow = rows.find((r) => r.ladderOverSame === worstSame)!;
  console.log(
    JSON.stringify({
      ladderOverSameSettings: r3(worstSame),
      ladderOverSameSettingsCpu: r3(worstSameCpu),
      twoOverOne: r3(worst.twoOverOne),
      ladderOverSingle: r3(worst.ladderOverSingle),
      floorOverSameSettings: r3(worstRow.floorOverSame),
      floorOverSameSettingsMax: r3(Math.max(...rows.map((r) => r.floorOverSame))),
      ...avif,
    }),
  );
} finally {
  await processor.close();
  await rm(work, { recursive: true, force: true });
}

/**
 * Bytes against visible quality per rung: each candidate (quality, effort) encodes the exact pixels
 * the ladder hands that rung (one decode, then the cascade), decoded again and compared with them.
 * SSIM is on luma with 8 × 8 windows; ms is one encode, summed over the photos.
 */
async function qualityTable(sources: string[]) {
  const candidates: Record<string, Array<[number, number]>> = {
    '1': [
      [5, 6],
      [20, 6],
      [40, 6],
      [60, 6],
    ],
    '2': [
      [50, 4],
      [60, 4],
      [70, 4],
      [80, 4],
    ],
    '3': [
      [60, 2],
      [70, 2],
      [75, 2],
      [80, 2],
      [70, 4],
    ],
    '4': [
      [70, 2],
      [75, 2],
      [80, 2],
      [75, 4],
    ],
    '5': [
      [75, 2],
      [78, 2],
      [80, 2],
      [78, 1],
      [78, 4],
      [80, 4],
    ],
    '6': [
      [75, 4],
      [80, 4],
      [85, 4],
      [80, 0],
      [80, 2],
      [82, 2],
      [80, 6],
    ],
  };
  type Ref = { data: Buffer; width: number; height: number; luma: Float64Array };
  const refs = new Map<string, Ref[]>();
  for (const source of sources) {
    const oriented = (await sharp(source).metadata()).autoOrient;
    const size6 = rungSize(oriented, 1080, false);
    const { data, info } = await sharp(source)
      .autoOrient()
      .resize(size6.width, size6.height, { fit: 'fill' })
      .toColourspace('srgb')
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    // As the processor does: 1080 → 640 → 320 from each other, the smaller rungs from the 320 pixels.
    let kept = { data, info };
    for (const rung of [...LADDER].sort((a, b) => b.box - a.box)) {
      const size = rungSize(oriented, rung.box, false);
      let pixels = kept;
      if (size.width !== kept.info.width || size.height !== kept.info.height) {
        pixels = await sharp(kept.data, { raw: { width: kept.info.width, height: kept.info.height, channels: 3 } })
          .resize(size.width, size.height, { fit: 'fill' })
          .raw()
          .toBuffer({ resolveWithObject: true });
      }
      if (rung.box >= 320) kept = pixels;
      const list = refs.get(rung.name) ?? [];
      list.push({ data: pixels.data, width: pixels.info.width, height: pixels.info.height, luma: luma(pixels.data) });
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
        const webp = await sharp(ref.data, { raw: { width: ref.width, height: ref.height, channels: 3 } })
          .webp({ quality, effort })
          .toBuffer();
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
