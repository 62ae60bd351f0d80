import type { MediaInfo } from './info.js';
import type { Sniffed } from './sniff.js';

// The contract between the completion service and whatever turns an original into variants.
// Implementations write their outputs into `workDir`; the completion service moves them into
// storage and charges their bytes. A refusal of the content is thrown as a 4xx AppError.

/**
 * Limits that bound the work a file may cost, from its purpose (src/purposes.ts), checked from headers
 * before any heavy decoding; a file over one is refused with 413 naming the limit.
 */
export type MediaLimits = {
  /** Frames of an animation. */
  maxFrames: number;
  /** Pixels of all the frames of an animation together (width × height × frames). */
  maxAnimationPixels: number;
  /** Length of a track, in seconds. */
  maxDurationSeconds: number;
};

export type ProcessInput = {
  fileId: string;
  sourcePath: string;
  sniffed: Sniffed;
  /** From the purpose: square (cover-cropped) variants. */
  square: boolean;
  /** From the purpose: the formats its image ladder is made in (default WebP only). */
  formats?: readonly ImageFormat[];
  workDir: string;
  /** The purpose's limits; where absent, the processor's defaults (the server's settings) apply. */
  limits?: Partial<MediaLimits>;
  /** Aborting stops the work and kills its processes (the file was deleted, the server is stopping). */
  signal?: AbortSignal;
};

/** Formats of the image ladder: WebP always; AVIF beside it on the rungs where it pays, when the purpose asks. */
export type ImageFormat = 'webp' | 'avif';

/**
 * An AVIF rung is stored as its own variant next to the WebP one: '6-avif' beside '6'. Delivery of
 * /f/<token>/6 picks between the two by Accept; '6-avif' is also addressable directly (for <picture>).
 */
export const avifVariantName = (rung: string) => `${rung}-avif`;

export type ProducedVariant = {
  /** '1'…'6', or a named extra such as 'waveform'. */
  name: string;
  /** Absolute path of the output inside workDir. */
  file: string;
  /** File name to keep it under inside the file's folder, e.g. '3.webp'. */
  storedAs: string;
  mimeType: string;
  /** Set on image ladder rungs: which format this file is. */
  format?: ImageFormat;
  width?: number;
  height?: number;
};

export type ProcessResult<I extends MediaInfo = MediaInfo> = {
  width?: number;
  height?: number;
  /** Kind-specific facts that go in the file JSON (placeholder, thumbhash, tags…), declared in info.ts. */
  info: I;
  variants: ProducedVariant[];
  /** 'processing' when more is made in the background (audio renditions), else 'ready'. */
  status: 'ready' | 'processing';
  /**
   * A cleaned copy of the original (location, device and time metadata stripped), written in
   * workDir: stored as variant 0 instead of the upload (same mime type and extension).
   * Absent: the upload is stored as it came.
   */
  original?: { file: string };
};

export interface MediaProcessor<I extends MediaInfo = MediaInfo> {
  process(input: ProcessInput): Promise<ProcessResult<I>>;
}
