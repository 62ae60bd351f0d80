import { open } from 'node:fs/promises';
import type { MediaKind } from '../purposes.js';

// What a file is, decided by its first bytes — never by its name or the client's claim.

export type Sniffed = { kind: MediaKind | 'other'; mimeType: string; ext: string };

export const SNIFF_BYTES = 4100;

export async function sniffFile(filePath: string): Promise<Sniffed | undefined> {
  const handle = await open(filePath, 'r');
  try {
    const buffer = Buffer.alloc(SNIFF_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, SNIFF_BYTES, 0);
    return sniffBytes(buffer.subarray(0, bytesRead));
  } finally {
    await handle.close();
  }
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
    const head = ascii(b, 0, Math.min(b.length, 128));
    if (head.includes('OpusHead')) return { kind: 'audio', mimeType: 'audio/ogg; codecs=opus', ext: 'opus' };
    return { kind: 'audio', mimeType: 'audio/ogg', ext: 'ogg' };
  }
  if (ascii(b, 0, 3) === 'ID3') return { kind: 'audio', mimeType: 'audio/mpeg', ext: 'mp3' };
  // An MPEG audio frame sync (11 set bits) with a valid layer; ADTS AAC has layer bits 00.
  if (b[0] === 0xff && ((b[1] ?? 0) & 0xe0) === 0xe0) {
    const layer = ((b[1] ?? 0) >> 1) & 0x03;
    if (layer === 0) return { kind: 'audio', mimeType: 'audio/aac', ext: 'aac' };
    return { kind: 'audio', mimeType: 'audio/mpeg', ext: 'mp3' };
  }
  if (startsWith(b, [0x42, 0x4d]) && b.length >= 26) return { kind: 'image', mimeType: 'image/bmp', ext: 'bmp' };
  if (looksLikeSvg(b)) return { kind: 'other', mimeType: 'image/svg+xml', ext: 'svg' };
  return undefined;
}

function looksLikeSvg(b: Uint8Array): boolean {
  const text = Buffer.from(b.subarray(0, 1024)).toString('utf8').replace(/^\uFEFF/, '').trimStart();
  return /^(<\?xml[^>]*>\s*)?(<!--[\s\S]*?-->\s*)*(<!DOCTYPE svg[^>]*>\s*)?<svg[\s>]/i.test(text);
}
