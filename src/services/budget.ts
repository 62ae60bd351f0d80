import type { MediaKind } from '../purposes.js';

// What an upload may cost before it is made: the declared length plus a bounded budget for the bytes
// Chipmunk will generate from it. The budget is reserved with the upload, so the quota refuses (413)
// before any work; the commit then charges what the file really weighs (guarded: usage never passes
// the quota), and gives the rest back. Documented in the README ("Quota budget").

const KiB = 1024;
const MiB = 1024 * KiB;

/** Rendition bitrates (Opus 64 kbps + AAC 160 kbps) in bytes per second, with 10 % for containers. */
const RENDITION_BYTES_PER_SECOND = Math.ceil(((64_000 + 160_000) / 8) * 1.1);
/** A cover's square WebP ladder and the waveform peaks. */
const COVER_AND_WAVEFORM = 1 * MiB;

/** Reserved at creation beside the declared length, from the purpose's kind alone. */
export function creationBudget(kind: MediaKind, length: number): number {
  // Six WebP rungs of at most 1080 px weigh less than a typical photo; tiny lossless sources get a floor.
  if (kind === 'image') return Math.max(256 * KiB, length);
  // Renditions of a low-bitrate source can outweigh it (a 96 kbps MP3 makes 64 + 96 kbps).
  return 2 * length + COVER_AND_WAVEFORM;
}

/** Kept reserved after a track's first commit, for its renditions, once its duration is probed. */
export function renditionBudget(durationMs: number | undefined, fallback: number): number {
  if (durationMs === undefined || !Number.isFinite(durationMs)) return fallback;
  return Math.ceil((durationMs / 1000) * RENDITION_BYTES_PER_SECOND) + COVER_AND_WAVEFORM;
}

/** The largest upload whose length and budget fit in `free` bytes (for a body of unknown size). */
export function largestAffordable(kinds: readonly MediaKind[], free: number): number {
  const cost = (length: number) => length + Math.max(...kinds.map((k) => creationBudget(k, length)));
  let low = 0;
  let high = Math.max(0, free);
  while (low < high) {
    const mid = Math.ceil((low + high) / 2);
    if (cost(mid) <= free) low = mid;
    else high = mid - 1;
  }
  return low;
}
