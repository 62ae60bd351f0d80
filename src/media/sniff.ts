import { open } from 'node:fs/promises';
import type { MediaKind } from '../purposes.js';

// What a file is, decided by its first bytes — never by its name or the client's claim.

export type Sniffed = { kind: MediaKind | 'other'; mimeType: string; ext: string };

export const SNIFF_BYTES = 4100;

export async function sniffFile(filePath: string): Promise<Sniffed | undefined> {
  const handle = await open(filePath, 'r');
  try {
    const buffer = Buffer.alloc(SNIFF_BYTES);
    let { bytesRead } = await handle.read(buffer, 0, SNIFF_BYTES, 0);
    let head = buffer.subarray(0, bytesRead);
    // An ID3v2 tag (often with a cover, far longer than the sniffed head) may precede MP3 frames, but
    // also ADTS AAC or FLAC written by taggers that prepend one: look at what follows the tag(s).
    let offset = 0;
    for (let tags = 0; tags < 4 && id3v2Size(head) !== undefined; tags++) {
      offset += id3v2Size(head)!;
      ({ bytesRead } = await handle.read(buffer, 0, SNIFF_BYTES, offset));
      head = buffer.subarray(0, bytesRead);
    }
    if (offset === 0) return sniffBytes(head);
    const after = sniffBytes(head);
    if (after && after.kind === 'audio') return after;
    // Padding or a damaged stream after the tag: taken as MP3, the parser decides whether it plays.
    return mp3;
  } finally {
    await handle.close();
  }
}

const mp3: Sniffed = { kind: 'audio', mimeType: 'audio/mpeg', ext: 'mp3' };

/** Total size of an ID3v2 tag starting at b[0] (header, syncsafe body size, footer), or undefined. */
function id3v2Size(b: Uint8Array): number | undefined {
  if (b.length < 10 || ascii(b, 0, 3) !== 'ID3' || b[3]! > 4 || b[3] === 0xff) return undefined;
  if ((b[6]! | b[7]! | b[8]! | b[9]!) & 0x80) return undefined;
  const body = (b[6]! << 21) | (b[7]! << 14) | (b[8]! << 7) | b[9]!;
  const footer = b[5]! & 0x10 ? 10 : 0;
  return 10 + body + footer;
}

const ascii = (b: Uint8Array, start: number, end: number) => Buffer.from(b.subarray(start, end)).toString('latin1');
const startsWith = (b: Uint8Array, bytes: number[], at = 0) => bytes.every((x, i) => b[at + i] === x);

const isoBrands: Record<string, Sniffed> = {
  avif: { kind: 'image', mimeType: 'image/avif', ext: 'avif' },
  avis: { kind: 'image', mimeType: 'image/avif', ext: 'avif' },
  heic: { kind: 'image', mimeType: 'image/heic', ext: 'heic' },
  heix: { kind: 'image', mimeType: 'image/heic', ext: 'heic' },
  heim: { kind: 'image', mimeType: 'image/heic', ext: 'heic' },
  heis: { kind: 'image', mimeType: 'image/heic', ext: 'heic' },
  hevc: { kind: 'image', mimeType: 'image/heic', ext: 'heic' },
  mif1: { kind: 'image', mimeType: 'image/heif', ext: 'heif' },
  msf1: { kind: 'image', mimeType: 'image/heif', ext: 'heif' },
  'M4A ': { kind: 'audio', mimeType: 'audio/mp4', ext: 'm4a' },
  'M4B ': { kind: 'audio', mimeType: 'audio/mp4', ext: 'm4a' },
  'M4P ': { kind: 'audio', mimeType: 'audio/mp4', ext: 'm4a' },
  'F4A ': { kind: 'audio', mimeType: 'audio/mp4', ext: 'm4a' },
};

export function sniffBytes(b: Uint8Array): Sniffed | undefined {
  if (b.length < 4) return undefined;
  if (startsWith(b, [0xff, 0xd8, 0xff])) return { kind: 'image', mimeType: 'image/jpeg', ext: 'jpg' };
  if (startsWith(b, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return { kind: 'image', mimeType: 'image/png', ext: 'png' };
  if (ascii(b, 0, 6) === 'GIF87a' || ascii(b, 0, 6) === 'GIF89a') return { kind: 'image', mimeType: 'image/gif', ext: 'gif' };
  if (ascii(b, 0, 4) === 'RIFF' && b.length >= 12) {
    const form = ascii(b, 8, 12);
    if (form === 'WEBP') return { kind: 'image', mimeType: 'image/webp', ext: 'webp' };
    if (form === 'WAVE') return { kind: 'audio', mimeType: 'audio/wav', ext: 'wav' };
  }
  if (startsWith(b, [0x49, 0x49, 0x2a, 0x00]) || startsWith(b, [0x4d, 0x4d, 0x00, 0x2a])) return { kind: 'image', mimeType: 'image/tiff', ext: 'tif' };
  if (ascii(b, 4, 8) === 'ftyp' && b.length >= 12) {
    const brands = [ascii(b, 8, 12)];
    const boxSize = Math.min(b.length, new DataView(b.buffer, b.byteOffset).getUint32(0));
    for (let at = 16; at + 4 <= boxSize; at += 4) brands.push(ascii(b, at, at + 4));
    for (const brand of brands) if (isoBrands[brand]) return isoBrands[brand];
    // Generic MP4 with no more precise brand: taken as audio (an .m4a saved by many tools).
    if (brands.some((x) => ['isom', 'mp41', 'mp42', 'iso2', 'dash'].includes(x))) return { kind: 'audio', mimeType: 'audio/mp4', ext: 'm4a' };
    return undefined;
  }
  if (ascii(b, 0, 4) === 'fLaC') return { kind: 'audio', mimeType: 'audio/flac', ext: 'flac' };
  if (ascii(b, 0, 4) === 'FORM' && b.length >= 12 && ['AIFF', 'AIFC'].includes(ascii(b, 8, 12))) {
    return { kind: 'audio', mimeType: 'audio/aiff', ext: 'aiff' };
  }
  if (ascii(b, 0, 4) === 'OggS') {
    // The first page holds the first packet of the first stream: its codec's identification header.
    const first = b.length >= 27 ? ascii(b, 27 + (b[26] ?? 0), Math.min(b.length, 27 + (b[26] ?? 0) + 8)) : '';
    if (first.startsWith('OpusHead')) return { kind: 'audio', mimeType: 'audio/ogg; codecs=opus', ext: 'opus' };
    if (first.startsWith('\x01vorbis') || first.startsWith('\x7fFLAC') || first.startsWith('Speex   '))
      return { kind: 'audio', mimeType: 'audio/ogg', ext: 'ogg' };
    // Theora video, Ogg skeletons, …: not music.
    return { kind: 'other', mimeType: 'application/ogg', ext: 'ogx' };
  }
  if (id3v2Size(b) !== undefined) return mp3;
  const frame = mpegAudioFrame(b);
  if (frame) return frame;
  if (startsWith(b, [0x42, 0x4d]) && b.length >= 26) return { kind: 'image', mimeType: 'image/bmp', ext: 'bmp' };
  if (looksLikeSvg(b)) return { kind: 'other', mimeType: 'image/svg+xml', ext: 'svg' };
  return undefined;
}

/**
 * A headerless MPEG audio stream starts with a frame header: 11 sync bits, then fields that must not hold
 * their reserved values. ADTS (raw AAC) has 12 sync bits and layer 00.
 */
function mpegAudioFrame(b: Uint8Array): Sniffed | undefined {
  if (b.length < 4 || b[0] !== 0xff) return undefined;
  const b1 = b[1]!;
  const b2 = b[2]!;
  if ((b1 & 0xf6) === 0xf0) {
    // ADTS: sampling frequency index 13–15 is reserved.
    return ((b2 >> 2) & 0x0f) <= 12 ? { kind: 'audio', mimeType: 'audio/aac', ext: 'aac' } : undefined;
  }
  if ((b1 & 0xe0) !== 0xe0) return undefined;
  const version = (b1 >> 3) & 0x03;
  const layer = (b1 >> 1) & 0x03;
  const bitrateIndex = b2 >> 4;
  const rateIndex = (b2 >> 2) & 0x03;
  if (version === 1 || layer === 0 || bitrateIndex === 0x0f || rateIndex === 3) return undefined;
  return mp3;
}

function looksLikeSvg(b: Uint8Array): boolean {
  const text = Buffer.from(b.subarray(0, 1024))
    .toString('utf8')
    .replace(/^\uFEFF/, '')
    .trimStart();
  return /^(<\?xml[^>]*>\s*)?(<!--[\s\S]*?-->\s*)*(<!DOCTYPE svg[^>]*>\s*)?<svg[\s>]/i.test(text);
}
