import { open, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { errors } from '../errors.js';
import { defaultMediaBounds, readTags, type MediaBounds } from './audio-tags.js';
import { BoundedChildError } from './bounded.js';
import { runFfmpeg, type FfmpegTool } from './ffmpeg.js';
import type { MediaProcessor, ProducedVariant } from './processor.js';
import type { Sniffed } from './sniff.js';
import type { AudioFileInfo, AudioInfo } from './info.js';
import { PeakReducer, type WaveformJson } from './waveform.js';

// Music: the facts (music-metadata, in a bounded child), the renditions and the waveform peaks (ffmpeg). The completion
// path only reads the facts — fast, and the check that the bytes are audio at all; the renditions,
// the waveform and the cover ladder are made by a background job (src/services/audio.ts).

export type { AudioInfo } from './info.js';

export type CoverPicture = { data: Uint8Array; format: string };

/**
 * Reads a track's facts and cover in a bounded child (audio-tags.ts); a file the parser cannot read as
 * audio, or whose reading needs more than one file's memory or time, is refused (422).
 */
export async function readAudio(
  filePath: string,
  sniffed: Sniffed,
  bounds: MediaBounds = defaultMediaBounds,
): Promise<{ info: AudioInfo; cover?: CoverPicture }> {
  const meta = await readTags(filePath, bounds);
  const { format, common } = meta;
  const codec = normaliseCodec(format.codec);
  if (!format.container || !codec || format.hasAudio === false || !(format.sampleRate || format.duration)) {
    throw errors.unprocessable('The file does not hold audio a player can read.');
  }
  let bitrate = format.bitrate && Number.isFinite(format.bitrate) ? format.bitrate : undefined;
  // music-metadata 11 measures Ogg Opus bitrates from the wrong offset (a 100 kbps file reads as 9 kbps),
  // and would make a heavy Opus source look light enough to copy; count the audio pages' bytes instead.
  if (codec === 'opus' && sniffed.ext === 'opus' && format.duration) bitrate = ((await oggAudioBytes(filePath)) * 8) / format.duration || bitrate;
  const info: AudioInfo = {
    ...(format.duration && Number.isFinite(format.duration) ? { durationMs: Math.round(format.duration * 1000) } : {}),
    codec,
    container: containerOf(sniffed),
    ...(bitrate ? { bitrate: Math.round(bitrate) } : {}),
    ...(format.sampleRate ? { sampleRate: format.sampleRate } : {}),
    ...(format.numberOfChannels ? { channels: format.numberOfChannels } : {}),
    lossless: format.lossless ?? ['flac', 'alac', 'pcm'].includes(codec),
    ...text('title', common.title),
    ...text('artist', common.artist),
    ...text('album', common.album),
    ...text('albumArtist', common.albumartist),
    ...(common.year && Number.isInteger(common.year) && common.year > 0 && common.year < 10000 ? { year: common.year } : {}),
    ...(common.trackNo && common.trackNo > 0 ? { trackNumber: common.trackNo } : {}),
    ...text('genre', common.genre?.length ? [...new Set(common.genre)].join(', ') : undefined),
  };
  return { info, cover: meta.cover ? { data: Buffer.from(meta.cover.base64, 'base64'), format: meta.cover.format } : undefined };
}

/** Refuses (413) a track longer than its purpose allows, from the length its headers give. */
export function checkDuration(info: Pick<AudioInfo, 'durationMs'>, maxDurationSeconds: number): void {
  if (info.durationMs !== undefined && info.durationMs > maxDurationSeconds * 1000) {
    throw errors.tooLarge(
      `The track is ${clock(info.durationMs / 1000)} long; at most ${clock(maxDurationSeconds)} are accepted. Shorten it and upload again.`,
    );
  }
}

/** 1:02:03 or 4:05. */
function clock(seconds: number): string {
  const s = Math.round(seconds);
  const hms = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  const [h, m, sec] = hms as [number, number, number];
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}` : `${m}:${String(sec).padStart(2, '0')}`;
}

export type AudioProcessorDeps = {
  ffmpeg: FfmpegTool | undefined;
  /** Memory and time of each child (tag parser, ffmpeg); default 1 GB and 60 s. */
  bounds?: Omit<MediaBounds, 'signal'>;
  /** Used where a purpose sets no duration limit of its own. */
  maxDurationSeconds?: number;
};

/** The completion-time half of audio: validate and describe; the rest is a background job. */
export function createAudioProcessor(deps: AudioProcessorDeps): MediaProcessor<AudioFileInfo> {
  const bounds = deps.bounds ?? defaultMediaBounds;
  return {
    async process({ sourcePath, sniffed, limits, signal }) {
      // The tags and the decode proof are two children that read the file side by side (each bounded
      // on its own): one after the other they added ffmpeg's start to every track's completion. The
      // tags' verdict comes first; a refusal there stops the decode before it is given.
      const stopDecode = new AbortController();
      const decodeSignal = signal ? AbortSignal.any([signal, stopDecode.signal]) : stopDecode.signal;
      const decoding = deps.ffmpeg ? proveDecodable(deps.ffmpeg, sourcePath, { ...bounds, signal: decodeSignal }) : Promise.resolve();
      // Awaited below in every path; until then its failure is not an unhandled rejection.
      decoding.catch(() => undefined);
      let info: AudioInfo;
      let cover: CoverPicture | undefined;
      try {
        ({ info, cover } = await readAudio(sourcePath, sniffed, { ...bounds, signal }));
        checkDuration(info, limits?.maxDurationSeconds ?? deps.maxDurationSeconds ?? Infinity);
        await decoding;
      } catch (err) {
        stopDecode.abort(err);
        await decoding.catch(() => undefined);
        throw err;
      }
      const extra: Pick<AudioFileInfo, 'renditions'> = {};
      if (!deps.ffmpeg) extra.renditions = { available: false, reason: 'No ffmpeg on this server: only the original is served.' };
      // Without ffmpeg and without a cover there is nothing left to make.
      const background = Boolean(deps.ffmpeg || cover);
      return { info: { ...info, ...extra }, variants: [], status: background ? 'processing' : 'ready' };
    },
  };
}

/**
 * Tags can parse while the audio behind them is a fragment no player opens (a truncated MP3):
 * as with images, only a decode proves it. The first seconds are decoded at completion, so such a
 * file is refused with a 422 instead of being stored and failing in the background.
 */
async function proveDecodable(ffmpeg: FfmpegTool, sourcePath: string, bounds: MediaBounds): Promise<void> {
  try {
    await runFfmpeg(ffmpeg, ['-xerror', '-t', '2', '-i', sourcePath, '-map', '0:a:0', '-f', 'null', '-'], bounds);
  } catch (err) {
    // Killed from outside or cancelled: not the file's fault.
    if (!(err instanceof BoundedChildError) || err.reason === 'signal' || err.reason === 'aborted') throw err;
    throw errors.unprocessable(`The audio cannot be decoded (${err.message}).`, err);
  }
}

// ---------------------------------------------------------------------------------------------
// Renditions + waveform

/** Targets for a stereo source; mono gets less, since it carries half the information. */
export const targets = {
  opus: { stereo: 64_000, mono: 48_000, floor: 24_000 },
  aac: { stereo: 160_000, mono: 96_000, floor: 32_000 },
} as const;

export type RenditionPlan = {
  n: 1 | 2;
  codec: 'opus' | 'aac';
  /** 'copy' keeps the source's own stream (already the right codec, at or under the target). */
  mode: 'encode' | 'copy';
  bitrate?: number;
  /** Output sample rate when it must change (AAC above 48 kHz). */
  sampleRate?: number;
  /** Downmix to stereo: sources with more than two channels. */
  stereo: boolean;
};

/**
 * Never encode up. For a lossy source the rendition's bitrate is at most the source's (a 96 kbps MP3
 * gives a 96 kbps AAC, not 160): more bits cannot bring back what the first encoder threw away, they
 * only cost bytes. When the source already is the target codec at or under the target bitrate, its
 * stream is copied (no second generation loss at all). Floors (24 kbps Opus, 32 kbps AAC) keep a very
 * low-bitrate source listenable in the other codec; below them the codecs fall apart.
 */
export function planRenditions(info: AudioInfo): RenditionPlan[] {
  const channels = info.channels ?? 2;
  const stereo = channels > 2;
  const lossyBitrate = !info.lossless && info.bitrate ? info.bitrate : undefined;
  const plan = (n: 1 | 2, codec: 'opus' | 'aac', copyable: boolean): RenditionPlan => {
    const t = targets[codec];
    const target = channels === 1 ? t.mono : t.stereo;
    if (copyable && channels <= 2 && lossyBitrate !== undefined && lossyBitrate <= target * 1.1) return { n, codec, mode: 'copy', stereo: false };
    const bitrate = lossyBitrate === undefined ? target : Math.max(t.floor, Math.min(target, roundKbps(lossyBitrate)));
    const sampleRate = codec === 'aac' && info.sampleRate && info.sampleRate > 48_000 ? 48_000 : undefined;
    return { n, codec, mode: 'encode', bitrate, stereo, ...(sampleRate ? { sampleRate } : {}) };
  };
  return [plan(1, 'opus', info.codec === 'opus'), plan(2, 'aac', info.codec === 'aac' && ['mp4', 'adts'].includes(info.container))];
}

export const renditionFiles = {
  // WebM rather than Ogg: WebM carries a seek index (Cues), so a player seeks with one range request
  // instead of bisecting the file, and Safari plays WebM audio (macOS 11.3+, iOS 15+) while Ogg reached it
  // only in its latest versions, if at all.
  1: { storedAs: '1.webm', mimeType: 'audio/webm; codecs=opus', format: 'webm' },
  // AAC-LC in MP4 plays in every major browser; 'ipod' is ffmpeg's MP4 muxer with the M4A brand.
  2: { storedAs: '2.m4a', mimeType: 'audio/mp4', format: 'ipod' },
} as const;

/** ffmpeg arguments for one rendition's output (after the input). */
export function renditionArgs(p: RenditionPlan, ffmpeg: Pick<FfmpegTool, 'opusEncoder'>, outFile: string): string[] {
  // Tags stay out: the file JSON carries them, and some (base64 pictures in Vorbis comments, lyrics) outweigh the audio.
  const args = ['-map', '0:a:0', '-vn', '-sn', '-dn', '-map_metadata', '-1', '-map_chapters', '-1'];
  if (p.mode === 'copy') args.push('-c:a', 'copy');
  else if (p.codec === 'opus') {
    args.push('-c:a', ffmpeg.opusEncoder, '-b:a', String(p.bitrate));
    if (ffmpeg.opusEncoder === 'opus') args.push('-strict', '-2');
  } else {
    // The 'fast' coder is ffmpeg's constant-quantiser search: at 160 kbps indistinguishable from the
    // default two-loop search by ear, and about twice as fast (the renditions' bottleneck).
    args.push('-c:a', 'aac', '-aac_coder', 'fast', '-b:a', String(p.bitrate));
  }
  if (p.mode === 'encode' && p.stereo) args.push('-ac', '2');
  if (p.sampleRate) args.push('-ar', String(p.sampleRate));
  const file = renditionFiles[p.n];
  if (file.format === 'ipod') args.push('-movflags', '+faststart');
  args.push('-f', file.format, '-y', outFile);
  return args;
}

export type AudioRenderResult = {
  variants: ProducedVariant[];
  plans: RenditionPlan[];
  waveform: WaveformJson;
  /** Duration measured by decoding, from the PCM sample count. */
  decodedMs: number;
};

/** Content that ffmpeg cannot turn into audio: final, retrying will not help. */
export class AudioDecodeError extends Error {
  override name = 'AudioDecodeError';
}

/**
 * Makes renditions 1 and 2 and the waveform. Two ffmpeg processes run side by side: ffmpeg 5 encodes all
 * outputs of one process on one thread, and the two encoders are the whole cost, while decoding the
 * source twice costs a few percent. The waveform rides on the Opus process's decode: a third output,
 * mono 16-bit PCM to a pipe, reduced to peaks as it streams.
 */
export async function renderAudio(input: {
  ffmpeg: FfmpegTool;
  sourcePath: string;
  workDir: string;
  info: AudioInfo;
  signal?: AbortSignal;
  /** Memory of each ffmpeg child; default 1 GB. */
  memoryBytes?: number;
  /** The purpose's limit: decoding stops past it, and a track found longer is refused. */
  maxDurationSeconds?: number;
}): Promise<AudioRenderResult> {
  const { ffmpeg, sourcePath, workDir, info } = input;
  const memoryBytes = input.memoryBytes ?? defaultMediaBounds.memoryBytes;
  const maxSeconds = input.maxDurationSeconds;
  const plans = planRenditions(info);
  const sampleRate = info.sampleRate && info.sampleRate >= 1000 && info.sampleRate <= 768_000 ? info.sampleRate : 48_000;
  const reducer = new PeakReducer();
  // Generous: a decode runs at tens of times realtime; a stuck one is killed, not waited for.
  const timeoutMs = 120_000 + (info.durationMs ?? (maxSeconds ?? 30 * 60) * 1000) * 2;
  const controller = new AbortController();
  const abort = () => controller.abort();
  input.signal?.addEventListener('abort', abort, { once: true });
  const out = (p: RenditionPlan) => path.join(workDir, renditionFiles[p.n].storedAs);
  // Headers can understate the length (checked at completion): decoding stops just past the limit.
  const inputArgs = [...(maxSeconds !== undefined ? ['-t', String(maxSeconds + 1)] : []), '-i', sourcePath];
  const [opus, aac] = plans as [RenditionPlan, RenditionPlan];
  const withWaveform = [
    ...inputArgs,
    ...renditionArgs(opus, ffmpeg, out(opus)),
    '-map',
    '0:a:0',
    '-ac',
    '1',
    '-ar',
    String(sampleRate),
    '-f',
    's16le',
    'pipe:1',
  ];
  const standard = [...inputArgs, ...renditionArgs(aac, ffmpeg, out(aac))];
  try {
    const runs = [
      runFfmpeg(ffmpeg, withWaveform, { memoryBytes, timeoutMs, signal: controller.signal, onStdout: (chunk) => reducer.push(chunk) }),
      runFfmpeg(ffmpeg, standard, { memoryBytes, timeoutMs, signal: controller.signal }),
    ];
    // One failing stops the other at once; the first failure is the one that says why.
    let firstFailure: unknown;
    runs.forEach((r) =>
      r.catch((err: unknown) => {
        firstFailure ??= err;
        abort();
      }),
    );
    await Promise.allSettled(runs);
    if (firstFailure) throw firstFailure;
  } catch (err) {
    if (input.signal?.aborted) throw err;
    // Our caps and ffmpeg's own refusal judge the content; a kill from outside does not.
    if (err instanceof BoundedChildError && err.reason === 'timeout')
      throw new AudioDecodeError('Decoding the audio took far longer than its length; the file is probably damaged.');
    if (err instanceof BoundedChildError && err.reason === 'memory')
      throw new AudioDecodeError(`Decoding the audio needs more than the ${Math.round(memoryBytes / 1e6)} MB of memory this server allows for one file.`);
    if (err instanceof BoundedChildError && err.reason === 'exit' && err.exitCode !== null)
      throw new AudioDecodeError(`The audio could not be decoded: ${err.message}`);
    throw err;
  } finally {
    input.signal?.removeEventListener('abort', abort);
  }
  const waveform = reducer.finish(sampleRate);
  if (!waveform) throw new AudioDecodeError('No audio could be decoded from this file.');
  const decodedSeconds = reducer.totalSamples / sampleRate;
  if (maxSeconds !== undefined && decodedSeconds > maxSeconds) {
    throw new AudioDecodeError(`The track is longer than the ${Math.round(maxSeconds)} s accepted for it (its headers said less).`);
  }
  const waveformFile = path.join(workDir, 'waveform.json');
  await writeFile(waveformFile, JSON.stringify(waveform));
  const variants: ProducedVariant[] = plans.map((p) => ({
    name: String(p.n),
    file: out(p),
    storedAs: renditionFiles[p.n].storedAs,
    mimeType: renditionFiles[p.n].mimeType,
  }));
  variants.push({ name: 'waveform', file: waveformFile, storedAs: 'waveform.json', mimeType: 'application/json' });
  return { variants, plans, waveform, decodedMs: Math.round((reducer.totalSamples / sampleRate) * 1000) };
}

// ---------------------------------------------------------------------------------------------

/** Bytes of an Ogg stream's audio pages (granule position > 0: the header and tag pages have 0). */
export async function oggAudioBytes(filePath: string): Promise<number> {
  const handle = await open(filePath, 'r');
  try {
    const block = Buffer.alloc(282);
    let position = 0;
    let total = 0;
    for (;;) {
      const { bytesRead } = await handle.read(block, 0, 282, position);
      // 27-byte header + up to 255 lacing values.
      if (bytesRead < 27 || block.toString('latin1', 0, 4) !== 'OggS') return total;
      const segments = block[26]!;
      if (bytesRead < 27 + segments) return total;
      let body = 0;
      for (let i = 0; i < segments; i++) body += block[27 + i]!;
      const granule = block.readBigInt64LE(6);
      if (granule > 0n) total += body;
      position += 27 + segments + body;
    }
  } finally {
    await handle.close();
  }
}

const codecNames: Array<[RegExp, string]> = [
  [/layer 3|mp3/i, 'mp3'],
  [/layer 2/i, 'mp2'],
  [/alac/i, 'alac'],
  [/aac/i, 'aac'],
  [/flac/i, 'flac'],
  [/vorbis/i, 'vorbis'],
  [/opus/i, 'opus'],
  [/pcm|lpcm|twos|sowt|raw|ieee_float|float/i, 'pcm'],
];

function normaliseCodec(codec: string | undefined): string | undefined {
  if (!codec) return undefined;
  for (const [pattern, name] of codecNames) if (pattern.test(codec)) return name;
  return codec.toLowerCase().slice(0, 40);
}

function containerOf(sniffed: Sniffed): string {
  const byExt: Record<string, string> = { mp3: 'mpeg', aac: 'adts', m4a: 'mp4', flac: 'flac', wav: 'wav', aiff: 'aiff', ogg: 'ogg', opus: 'ogg' };
  return byExt[sniffed.ext] ?? sniffed.ext;
}

/** Tags are user data: trimmed, control characters removed, bounded. */
function text<K extends string>(key: K, value: string | undefined): Partial<Record<K, string>> {
  const cleaned = value
    ?.replace(/[\u0000-\u001f\u007f]/g, ' ')
    .trim()
    .slice(0, 500);
  return cleaned ? ({ [key]: cleaned } as Record<K, string>) : {};
}

function roundKbps(bps: number): number {
  return Math.max(1000, Math.round(bps / 1000) * 1000);
}
