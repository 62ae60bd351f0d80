import { spawn, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { planRenditions, readAudio, renderAudio, renditionArgs, renditionFiles } from '../src/media/audio.js';
import { resolveFfmpeg } from '../src/media/ffmpeg.js';
import { sniffFile } from '../src/media/sniff.js';

// npm run bench:audio — renditions 1 (Opus 64k WebM) and 2 (AAC-LC 160k MP4, faststart) plus the waveform
// peaks of a 4-minute track generated here, through Chipmunk's code (renderAudio: two ffmpeg processes side
// by side, the Opus one also piping mono PCM that Node reduces to peaks), against ffmpeg alone producing the
// same two renditions with the same arguments and the same parallelism, in the same run. Each side runs
// three times, alternating; the figures are medians (the realtime factor from the median time, the ratio
// the median of each round's ratio, as a round's two runs share the machine's load of that moment).

const SECONDS = 240;
const ROUNDS = 3;

const ffmpeg = resolveFfmpeg({ ffmpegPath: process.env.FFMPEG_PATH });
if (!ffmpeg) {
  console.error('bench:audio needs ffmpeg (FFMPEG_PATH, PATH or @ffmpeg-installer/ffmpeg).');
  process.exit(1);
}

const dir = await mkdtemp(path.join(tmpdir(), 'chipmunk-bench-audio-'));
try {
  const source = path.join(dir, 'track.flac');
  // A tone over pink noise, stereo 44.1 kHz: noise keeps the encoders honest (silence encodes for free).
  const gen = spawnSync(ffmpeg.path, [
    '-nostdin',
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    `sine=frequency=440:sample_rate=44100:duration=${SECONDS}`,
    '-f',
    'lavfi',
    '-i',
    `anoisesrc=color=pink:amplitude=0.2:sample_rate=44100:duration=${SECONDS}`,
    '-filter_complex',
    '[0][1]amix=inputs=2:normalize=0,aformat=channel_layouts=stereo',
    '-c:a',
    'flac',
    source,
  ]);
  if (gen.status !== 0) throw new Error(`could not generate the track: ${gen.stderr.toString()}`);
  const { info } = await readAudio(source, (await sniffFile(source))!);
  const plans = planRenditions(info);

  console.log(`ffmpeg: ${ffmpeg.version} (${ffmpeg.source})`);
  console.log(
    `source: ${SECONDS} s FLAC, ${info.sampleRate} Hz, ${info.channels} ch; plan: ${plans.map((p) => `${p.n}=${p.codec} ${p.mode} ${(p.bitrate ?? 0) / 1000}k`).join(', ')}`,
  );

  const runChild = (args: string[]) =>
    new Promise<void>((resolve, reject) => {
      const child = spawn(ffmpeg.path, ['-nostdin', '-hide_banner', '-loglevel', 'error', ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`ffmpeg exit ${code}`))));
    });
  const outDir = async (name: string) => {
    const d = path.join(dir, name);
    await rm(d, { recursive: true, force: true });
    await mkdir(d, { recursive: true });
    return d;
  };
  const time = async (fn: () => Promise<unknown>) => {
    const start = process.hrtime.bigint();
    await fn();
    return Number(process.hrtime.bigint() - start) / 1e9;
  };

  // ffmpeg alone: the same two commands Chipmunk runs, side by side, without the waveform output.
  const ffmpegAlone = async () => {
    const d = await outDir('alone');
    await Promise.all(plans.map((p) => runChild(['-i', source, ...renditionArgs(p, ffmpeg, path.join(d, renditionFiles[p.n].storedAs))])));
  };
  // For context: the naive single process with both outputs (ffmpeg 5 encodes them on one thread).
  const oneProcess = async () => {
    const d = await outDir('one');
    await runChild(['-i', source, ...plans.flatMap((p) => renditionArgs(p, ffmpeg, path.join(d, renditionFiles[p.n].storedAs)))]);
  };
  let points = 0;
  const chipmunk = async () => {
    const d = await outDir('chipmunk');
    const result = await renderAudio({ ffmpeg, sourcePath: source, workDir: d, info });
    points = result.waveform.length;
  };

  const alone: number[] = [];
  const ours: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    alone.push(await time(ffmpegAlone));
    ours.push(await time(chipmunk));
  }
  const single = await time(oneProcess);
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const fmt = (xs: number[]) => xs.map((x) => `${x.toFixed(2)} s`).join(', ');

  console.log(`ffmpeg alone (2 processes, same args):      ${fmt(alone)}`);
  console.log(`chipmunk renderAudio (+ waveform, ${points} pts): ${fmt(ours)}`);
  console.log(`one ffmpeg process, both outputs (context): ${single.toFixed(2)} s`);
  const realtimeFactor = SECONDS / median(ours);
  const overFfmpeg = median(ours.map((t, i) => t / alone[i]!));
  console.log(`realtime factor ${realtimeFactor.toFixed(1)}× (target ≥ 50×); over ffmpeg alone ${overFfmpeg.toFixed(3)}× (target ≤ 1.2×)`);
  console.log(JSON.stringify({ realtimeFactor: Number(realtimeFactor.toFixed(1)), overFfmpeg: Number(overFfmpeg.toFixed(3)) }));
} finally {
  await rm(dir, { recursive: true, force: true });
}
