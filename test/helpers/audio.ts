import { spawnSync } from 'node:child_process';
import type { AudioInfo } from '../../src/media/audio.js';
import type { TestChipmunk } from './chipmunk.js';

// Audio test helpers: waiting for background jobs, and asking the real ffmpeg/ffprobe about outputs.

/** The file JSON of a track: the file's fields and its facts (as the server reads them, any may be absent). */
export type AudioFileJson = Partial<AudioInfo> & {
  id: string;
  status: string;
  kind: string;
  bytes: number;
  totalBytes: number;
  error?: string;
  renditions?: { available: boolean; reason?: string; streams?: Array<{ n: number; codec: string; made: string; bitrate?: number }> };
  cover?: { width?: number; height?: number; variants: string[] };
  variants: Array<{ n: number | string; bytes: number; mimeType: string; url: string }>;
};

/** Polls the file until its background work ends (or the bound passes, which fails the test). */
export async function waitForFile(t: Pick<TestChipmunk, 'api'>, id: string, boundMs = 60_000): Promise<AudioFileJson> {
  const until = Date.now() + boundMs;
  for (;;) {
    const file = (await (await t.api(`/v1/files/${id}`)).json()) as AudioFileJson;
    if (file.status !== 'processing') return file;
    if (Date.now() > until) throw new Error(`file ${id} still processing after ${boundMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Decodes a file with ffmpeg to mono 16-bit PCM at `rate`; returns the sample count (throws when ffmpeg fails). */
export function decodedSamples(file: string, rate = 48_000): number {
  const out = spawnSync(
    'ffmpeg',
    ['-nostdin', '-v', 'error', '-xerror', '-i', file, '-map', '0:a:0', '-ac', '1', '-ar', String(rate), '-f', 's16le', 'pipe:1'],
    {
      maxBuffer: 512 * 1024 * 1024,
    },
  );
  if (out.status !== 0) throw new Error(`ffmpeg could not decode ${file}: ${out.stderr.toString()}`);
  return out.stdout.length / 2;
}

export function probe(file: string): { codec: string; sampleRate: number; channels: number; duration: number; formatName: string } {
  const out = spawnSync(
    'ffprobe',
    ['-v', 'error', '-select_streams', 'a:0', '-show_entries', 'stream=codec_name,sample_rate,channels:format=duration,format_name', '-of', 'json', file],
    {
      encoding: 'utf8',
    },
  );
  if (out.status !== 0) throw new Error(`ffprobe failed on ${file}: ${out.stderr}`);
  const json = JSON.parse(out.stdout) as {
    streams: Array<{ codec_name: string; sample_rate: string; channels: number }>;
    format: { duration: string; format_name: string };
  };
  const s = json.streams[0]!;
  return {
    codec: s.codec_name,
    sampleRate: Number(s.sample_rate),
    channels: s.channels,
    duration: Number(json.format.duration),
    formatName: json.format.format_name,
  };
}

/** Makes a test track with ffmpeg's signal generators (a tone over quiet noise), as FLAC. */
export function generateTrack(file: string, seconds: number, opts: { rate?: number; channels?: number } = {}): void {
  const rate = opts.rate ?? 44_100;
  const layout = (opts.channels ?? 2) === 1 ? 'mono' : 'stereo';
  const out = spawnSync('ffmpeg', [
    '-nostdin',
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    `sine=frequency=440:sample_rate=${rate}:duration=${seconds}`,
    '-f',
    'lavfi',
    '-i',
    `anoisesrc=color=pink:amplitude=0.05:sample_rate=${rate}:duration=${seconds}`,
    '-filter_complex',
    `[0][1]amix=inputs=2:normalize=0,aformat=channel_layouts=${layout}`,
    '-c:a',
    'flac',
    file,
  ]);
  if (out.status !== 0) throw new Error(`could not generate ${file}: ${out.stderr.toString()}`);
}
