import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { ConfigError } from '../errors.js';
import { runBounded } from './bounded.js';

// Which ffmpeg Chipmunk runs, decided once at start-up: FFMPEG_PATH, then `ffmpeg` on PATH, then the
// static binary shipped inside the npm package @ffmpeg-installer/ffmpeg (so `npm install && npm start`
// works on a machine without ffmpeg). Each candidate must really run (`-version`) to be chosen.

export type FfmpegSource = 'FFMPEG_PATH' | 'PATH' | '@ffmpeg-installer/ffmpeg';

export type FfmpegTool = Readonly<{
  path: string;
  source: FfmpegSource;
  /** First line of `ffmpeg -version`, e.g. "ffmpeg version 5.1.6-0+deb12u1". */
  version: string;
  /** The Opus encoder to use: libopus when built in, else ffmpeg's own (experimental) one. */
  opusEncoder: 'libopus' | 'opus';
}>;

/** What the media tools are, for the start-up log and readiness endpoints. */
export type MediaTools = Readonly<{
  ffmpeg: { path: string; source: FfmpegSource; version: string } | null;
  /** Why renditions cannot be made, when ffmpeg is null. */
  ffmpegMissing?: string;
}>;

/** A wrong FFMPEG_PATH stops the start like any bad variable. */
export class FfmpegPathError extends ConfigError {
  override name = 'FfmpegPathError';
}

/**
 * `ffmpegPath` is FFMPEG_PATH: a path that must run (a wrong one stops the start with a sentence naming
 * the variable), or `off` to run without renditions on purpose.
 */
export function resolveFfmpeg(opts: { ffmpegPath?: string; searchPath?: boolean; packaged?: boolean } = {}): FfmpegTool | undefined {
  if (opts.ffmpegPath === 'off') return undefined;
  if (opts.ffmpegPath) {
    const tool = probe(opts.ffmpegPath, 'FFMPEG_PATH');
    if (!tool)
      throw new FfmpegPathError(`Invalid environment variable FFMPEG_PATH: ${opts.ffmpegPath} does not run as ffmpeg (use "off" to disable renditions).`);
    return tool;
  }
  if (opts.searchPath !== false) {
    const tool = probe('ffmpeg', 'PATH');
    if (tool) return tool;
  }
  if (opts.packaged !== false) {
    const packaged = packagedFfmpegPath();
    if (packaged) return probe(packaged, '@ffmpeg-installer/ffmpeg');
  }
  return undefined;
}

export function describeTools(tool: FfmpegTool | undefined, ffmpegPath?: string): MediaTools {
  if (tool) return Object.freeze({ ffmpeg: { path: tool.path, source: tool.source, version: tool.version } });
  const ffmpegMissing =
    ffmpegPath === 'off'
      ? 'FFMPEG_PATH is "off": tracks are stored with their metadata, without renditions or waveform.'
      : 'No ffmpeg found (FFMPEG_PATH, PATH, @ffmpeg-installer/ffmpeg): tracks are stored with their metadata, without renditions or waveform.';
  return Object.freeze({ ffmpeg: null, ffmpegMissing });
}

function probe(file: string, source: FfmpegSource): FfmpegTool | undefined {
  const version = spawnSync(file, ['-hide_banner', '-version'], { encoding: 'utf8', timeout: 15_000 });
  if (version.status !== 0 || !version.stdout) return undefined;
  const encoders = spawnSync(file, ['-hide_banner', '-encoders'], { encoding: 'utf8', timeout: 15_000, maxBuffer: 8 * 1024 * 1024 });
  const list = encoders.stdout ?? '';
  // Renditions need an AAC and an Opus encoder; every ffmpeg build since 2016 has the native AAC one.
  if (!/^\s*A\S*\s+aac\s/m.test(list)) return undefined;
  const opusEncoder = /^\s*A\S*\s+libopus\s/m.test(list) ? 'libopus' : 'opus';
  return Object.freeze({ path: file, source, version: version.stdout.split('\n')[0]!.trim(), opusEncoder });
}

function packagedFfmpegPath(): string | undefined {
  try {
    const require = createRequire(import.meta.url);
    return (require('@ffmpeg-installer/ffmpeg') as { path: string }).path;
  } catch {
    // The package (or its binary for this platform) is not installed.
    return undefined;
  }
}

/**
 * Address space ffmpeg maps before it does any work (its shared libraries: 0.29 GB measured for
 * Debian's ffmpeg 5.1); the memory cap of a run is this plus the work's own.
 */
export const FFMPEG_RESERVED_BYTES = 500_000_000;

/**
 * Runs ffmpeg with `args` as a bounded child (bounded.ts: memory cap, time limit, own process group,
 * dies with the server); stdout (a raw PCM pipe, when an output is `pipe:1`) goes to `onStdout`.
 * Rejects with a BoundedChildError whose message is ffmpeg's last error line.
 */
export async function runFfmpeg(
  tool: Pick<FfmpegTool, 'path'>,
  args: string[],
  opts: { timeoutMs: number; memoryBytes?: number; signal?: AbortSignal; onStdout?: (chunk: Buffer) => void },
): Promise<void> {
  await runBounded(tool.path, ['-nostdin', '-hide_banner', '-loglevel', 'error', ...args], {
    memoryBytes: (opts.memoryBytes ?? 1_000_000_000) + FFMPEG_RESERVED_BYTES,
    timeoutMs: opts.timeoutMs,
    signal: opts.signal,
    onStdout: opts.onStdout,
  });
}
