import { crc32 } from 'node:zlib';

// Strips what a photo says about its owner (GPS position, camera and serial numbers, capture time,
// editing history, captions: EXIF, XMP, IPTC/Photoshop, comments) from an original without touching
// its pixels: the container is rewritten, the coded image data is copied byte for byte. What is
// kept is what the picture needs to display as it did: the ICC profile, Adobe's colour-transform
// marker, and an EXIF block holding only the Orientation tag (when it is not the default).
//
// JPEG, PNG, WebP and GIF are cleaned here. Anything else (TIFF, AVIF/HEIF) returns undefined and
// the image processor writes a re-encoded copy instead (see images.ts).

/** The formats stripLosslessly can clean (sharp's format names). */
export const losslesslyCleanable = new Set(['jpeg', 'png', 'webp', 'gif']);

/**
 * The cleaned bytes, or undefined for a format this module does not rewrite. Throws on a container
 * that does not parse (the decoder has accepted the file by then, so this is a truncated tail).
 */
export function stripLosslessly(format: string, data: Buffer, orientation: number | undefined): Buffer | undefined {
  const keepOrientation = orientation && orientation >= 2 && orientation <= 8 ? orientation : undefined;
  switch (format) {
    case 'jpeg':
      return stripJpeg(data, keepOrientation);
    case 'png':
      return stripPng(data, keepOrientation);
    case 'webp':
      return stripWebp(data, keepOrientation);
    case 'gif':
      return stripGif(data);
    default:
      return undefined;
  }
}

/** A big-endian TIFF structure with one IFD holding only Orientation (tag 0x0112, SHORT). */
export function orientationOnlyTiff(orientation: number): Buffer {
  const tiff = Buffer.alloc(26);
  tiff.write('MM', 0, 'latin1');
  tiff.writeUInt16BE(42, 2);
  tiff.writeUInt32BE(8, 4); // IFD0 right after the header
  tiff.writeUInt16BE(1, 8); // one entry
  tiff.writeUInt16BE(0x0112, 10);
  tiff.writeUInt16BE(3, 12); // SHORT
  tiff.writeUInt32BE(1, 14); // one value
  tiff.writeUInt16BE(orientation, 18); // left-justified in the 4-byte value field
  tiff.writeUInt32BE(0, 22); // no next IFD
  return tiff;
}

const EXIF_HEADER = Buffer.from('Exif\0\0', 'latin1');

class NotParseable extends Error {}

function need(ok: boolean, what: string): void {
  if (!ok) throw new NotParseable(`malformed ${what}`);
}

// ---------------------------------------------------------------- JPEG

const startsWith = (data: Buffer, at: number, text: string) => data.toString('latin1', at, at + text.length) === text;

/**
 * Keeps SOI, the JFIF APP0, ICC_PROFILE APP2 segments, Adobe APP14 and every non-APP segment
 * (tables, frame header); drops APP1 (EXIF, XMP), APP13 (IPTC), COM and the other APPn. From the
 * first SOS on, the coded data is copied up to and including EOI; whatever follows EOI (Samsung's
 * and Apple's appended depth maps and MPF images, with their own EXIF) is dropped.
 */
function stripJpeg(data: Buffer, orientation: number | undefined): Buffer {
  need(data[0] === 0xff && data[1] === 0xd8, 'JPEG start');
  const parts: Buffer[] = [data.subarray(0, 2)];
  let insertedExif = false;
  const exif = () => {
    if (insertedExif || !orientation) return;
    insertedExif = true;
    const payload = Buffer.concat([EXIF_HEADER, orientationOnlyTiff(orientation)]);
    const header = Buffer.from([0xff, 0xe1, 0, 0]);
    header.writeUInt16BE(payload.length + 2, 2);
    parts.push(header, payload);
  };
  let at = 2;
  for (;;) {
    need(at + 4 <= data.length, 'JPEG segment');
    need(data[at] === 0xff, 'JPEG marker');
    // Fill bytes (repeated 0xFF) may precede a marker.
    while (data[at + 1] === 0xff) at++;
    const marker = data[at + 1]!;
    if (marker === 0xd9) break; // EOI before any scan: nothing to show, but not ours to judge
    const length = data.readUInt16BE(at + 2);
    need(length >= 2 && at + 2 + length <= data.length, 'JPEG segment length');
    const segment = data.subarray(at, at + 2 + length);
    const body = at + 4;
    if (marker === 0xda) {
      exif();
      parts.push(data.subarray(at, endOfImage(data, at + 2 + length)));
      return Buffer.concat(parts);
    }
    const isApp = marker >= 0xe0 && marker <= 0xef;
    const keep =
      !isApp && marker !== 0xfe
        ? true
        : (marker === 0xe0 && (startsWith(data, body, 'JFIF\0') || startsWith(data, body, 'JFXX\0'))) ||
          (marker === 0xe2 && startsWith(data, body, 'ICC_PROFILE\0')) ||
          (marker === 0xee && startsWith(data, body, 'Adobe'));
    // The orientation EXIF goes right after JFIF/before the tables, where readers look for APP1.
    if (!isApp) exif();
    if (keep) parts.push(segment);
    at += 2 + length;
  }
  parts.push(Buffer.from([0xff, 0xd9]));
  return Buffer.concat(parts);
}

/** The offset just past the EOI that ends the image whose coded data starts at `from`. */
function endOfImage(data: Buffer, from: number): number {
  // In coded data every 0xFF is followed by 0x00 (stuffing) or a marker; the first EOI ends the image.
  for (let i = data.indexOf(0xff, from); i >= 0 && i + 1 < data.length; i = data.indexOf(0xff, i + 1)) {
    if (data[i + 1] === 0xd9) return i + 2;
  }
  // No EOI (a truncated file the decoder tolerated): keep everything.
  return data.length;
}

// ---------------------------------------------------------------- PNG

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const pngDropped = new Set(['eXIf', 'tEXt', 'iTXt', 'zTXt', 'tIME']);

function pngChunk(type: string, payload: Buffer): Buffer {
  const out = Buffer.alloc(12 + payload.length);
  out.writeUInt32BE(payload.length, 0);
  out.write(type, 4, 'latin1');
  payload.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + payload.length)), 8 + payload.length);
  return out;
}

function stripPng(data: Buffer, orientation: number | undefined): Buffer {
  need(data.subarray(0, 8).equals(PNG_SIGNATURE), 'PNG signature');
  const parts: Buffer[] = [PNG_SIGNATURE];
  let at = 8;
  for (;;) {
    need(at + 12 <= data.length, 'PNG chunk');
    const length = data.readUInt32BE(at);
    const type = data.toString('latin1', at + 4, at + 8);
    need(at + 12 + length <= data.length, 'PNG chunk length');
    if (!pngDropped.has(type)) parts.push(data.subarray(at, at + 12 + length));
    if (type === 'IHDR' && orientation) parts.push(pngChunk('eXIf', orientationOnlyTiff(orientation)));
    at += 12 + length;
    if (type === 'IEND') return Buffer.concat(parts);
  }
}

// ---------------------------------------------------------------- WebP

function stripWebp(data: Buffer, orientation: number | undefined): Buffer {
  need(startsWith(data, 0, 'RIFF') && startsWith(data, 8, 'WEBP'), 'WebP header');
  const end = Math.min(data.length, 8 + data.readUInt32LE(4));
  const chunks: Buffer[] = [];
  let vp8x: Buffer | undefined;
  let at = 12;
  while (at + 8 <= end) {
    const type = data.toString('latin1', at, at + 4);
    const size = data.readUInt32LE(at + 4);
    const padded = size + (size & 1);
    need(at + 8 + size <= end, 'WebP chunk length');
    const chunk = Buffer.from(data.subarray(at, Math.min(end, at + 8 + padded)));
    if (type === 'VP8X') {
      vp8x = chunk;
      chunks.push(chunk);
    } else if (type !== 'EXIF' && type !== 'XMP ') {
      chunks.push(chunk);
    }
    at += 8 + padded;
  }
  if (vp8x) {
    // Flags: 0x08 EXIF present, 0x04 XMP present.
    vp8x[8] = (vp8x[8]! & ~0x0c) | (orientation ? 0x08 : 0);
    if (orientation) {
      const tiff = orientationOnlyTiff(orientation);
      const header = Buffer.alloc(8);
      header.write('EXIF', 0, 'latin1');
      header.writeUInt32LE(tiff.length, 4);
      // EXIF comes after the image data (and ALPH/ANIM frames) in the chunk order.
      chunks.push(header, tiff);
    }
  }
  const body = Buffer.concat(chunks);
  const head = Buffer.alloc(12);
  head.write('RIFF', 0, 'latin1');
  head.writeUInt32LE(body.length + 4, 4);
  head.write('WEBP', 8, 'latin1');
  return Buffer.concat([head, body]);
}

// ---------------------------------------------------------------- GIF

/** Drops comment extensions and application extensions other than the looping ones (XMP lives there). */
function stripGif(data: Buffer): Buffer {
  need(startsWith(data, 0, 'GIF8'), 'GIF header');
  const flags = data[10]!;
  let at = 13 + (flags & 0x80 ? 3 * 2 ** ((flags & 0x07) + 1) : 0);
  const parts: Buffer[] = [data.subarray(0, at)];
  const skipSubBlocks = (from: number) => {
    let i = from;
    for (;;) {
      need(i < data.length, 'GIF sub-block');
      const n = data[i]!;
      i += 1 + n;
      if (n === 0) return i;
    }
  };
  for (;;) {
    need(at < data.length, 'GIF block');
    const introducer = data[at]!;
    if (introducer === 0x3b) {
      parts.push(data.subarray(at, at + 1));
      return Buffer.concat(parts);
    }
    if (introducer === 0x2c) {
      need(at + 10 <= data.length, 'GIF image descriptor');
      const local = data[at + 9]!;
      const tableEnd = at + 10 + (local & 0x80 ? 3 * 2 ** ((local & 0x07) + 1) : 0);
      const next = skipSubBlocks(tableEnd + 1); // +1: the LZW minimum code size
      parts.push(data.subarray(at, next));
      at = next;
      continue;
    }
    need(introducer === 0x21, 'GIF block introducer');
    const label = data[at + 1]!;
    const next = skipSubBlocks(at + 2);
    const application = label === 0xff ? data.toString('latin1', at + 3, at + 14) : '';
    const keep = label === 0xf9 || label === 0x01 || application === 'NETSCAPE2.0' || application === 'ANIMEXTS1.0';
    if (keep) parts.push(data.subarray(at, next));
    at = next;
  }
}
