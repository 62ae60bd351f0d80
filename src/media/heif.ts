import { open, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { errors } from '../errors.js';
import { BoundedChildError, runBounded } from './bounded.js';

// HEVC-coded HEIF (the iPhone's HEIC): sharp's bundled libvips has no HEVC decoder, so the picture
// is decoded by Debian's libheif (`heif-convert`, package libheif-examples, libde265 inside) in a
// bounded child. libheif applies the container's irot/imir transforms and assembles grid tiles;
// alpha, depth and other auxiliary images are not written. Its output is a JPEG at quality 95 carrying the
// embedded colour profile (Display P3 on iPhones): every rung is at most 1080 px, a quarter of the
// photo's side or less, so the intermediate's compression is far below anything a rung shows, and
// sharp shrinks a JPEG on load, which makes the ladder cheaper than from a PNG.
// Measured against npm's heic-decode (libheif compiled to WebAssembly) on the corpus's 12 MP iPhone photo:
// 0.63 s and 79 MB resident for heif-convert, 1.67 s and 219 MB for heic-decode, which also returns no
// colour profile (the P3 pixels would be taken as sRGB); see the README.

/**
 * Width × height of every image the container declares, read without decoding anything: each
 * item's `ispe` property, and the output size written in each derived image's own description
 * (`grid`, `iovl`), which is what a decoder allocates for it (libheif makes a grid's canvas from
 * its description, whatever the grid's ispe says).
 */
export async function heifDeclaredSizes(filePath: string): Promise<Array<{ width: number; height: number }>> {
  const handle = await open(filePath, 'r');
  try {
    const { size } = await handle.stat();
    const read = async (at: number, length: number) => {
      const buffer = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buffer, 0, length, at);
      return buffer.subarray(0, bytesRead);
    };
    // The meta box is a top-level box, before the coded data in every file iPhones write.
    for (let at = 0; at + 8 <= size;) {
      const head = await read(at, 16);
      if (head.length < 8) break;
      let boxSize = head.readUInt32BE(0);
      let headerSize = 8;
      if (boxSize === 1 && head.length >= 16) {
        boxSize = Number(head.readBigUInt64BE(8));
        headerSize = 16;
      } else if (boxSize === 0) boxSize = size - at;
      if (boxSize < headerSize) break;
      if (head.toString('latin1', 4, 8) === 'meta') {
        // Item properties of a photo take a few kilobytes; a meta box past this is not a photo's.
        if (boxSize > 4 * 1024 * 1024) throw errors.unprocessable('The HEIF container is malformed (its metadata box is implausibly large).');
        const meta = await read(at + headerSize, boxSize - headerSize);
        const boxes = metaChildren(meta.subarray(4));
        return [...collectIspe(boxes), ...(await derivedImageSizes(boxes, read))];
      }
      at += boxSize;
    }
    return [];
  } finally {
    await handle.close();
  }
}

type Box = { type: string; body: Buffer };

/** The boxes directly inside `b` (32-bit sizes: a photo's metadata boxes are small); stops at the first malformed one. */
function metaChildren(b: Buffer): Box[] {
  const boxes: Box[] = [];
  for (let at = 0; at + 8 <= b.length;) {
    const boxSize = b.readUInt32BE(at);
    if (boxSize < 8 || at + boxSize > b.length) break;
    boxes.push({ type: b.toString('latin1', at + 4, at + 8), body: b.subarray(at + 8, at + boxSize) });
    at += boxSize;
  }
  return boxes;
}

/** Walks iprp → ipco and reads each `ispe` (a full box: version/flags, width, height). */
function collectIspe(meta: Box[]): Array<{ width: number; height: number }> {
  const sizes: Array<{ width: number; height: number }> = [];
  for (const iprp of meta.filter((b) => b.type === 'iprp')) {
    for (const ipco of metaChildren(iprp.body).filter((b) => b.type === 'ipco')) {
      for (const ispe of metaChildren(ipco.body).filter((b) => b.type === 'ispe' && b.body.length >= 12)) {
        sizes.push({ width: ispe.body.readUInt32BE(4), height: ispe.body.readUInt32BE(8) });
      }
    }
  }
  return sizes;
}

/**
 * The output size in the description of every `grid` (ImageGrid) and `iovl` (ImageOverlay) item,
 * found through iinf (item types) and iloc (where each item's data is: in the file or in idat).
 * A description that cannot be located or read is left to the decoder, which refuses it.
 */
async function derivedImageSizes(meta: Box[], read: (at: number, length: number) => Promise<Buffer>): Promise<Array<{ width: number; height: number }>> {
  const derived = itemTypes(meta).filter((item) => item.type === 'grid' || item.type === 'iovl');
  if (derived.length === 0) return [];
  const locations = itemLocations(meta);
  const idat = meta.find((b) => b.type === 'idat')?.body;
  const sizes: Array<{ width: number; height: number }> = [];
  for (const item of derived) {
    const location = locations.get(item.id);
    if (!location) continue;
    // The sizes sit in the first bytes: grid 4 + 2 × 4, overlay 2 + 4 × 2 fill values + 2 × 4.
    const want = item.type === 'grid' ? 12 : 18;
    const parts: Buffer[] = [];
    for (const extent of location.extents) {
      const length = Math.min(want, extent.length || want);
      if (location.method === 0) parts.push(await read(location.base + extent.offset, length));
      else if (location.method === 1 && idat) parts.push(idat.subarray(location.base + extent.offset, location.base + extent.offset + length));
      if (Buffer.concat(parts).length >= want) break;
    }
    const data = Buffer.concat(parts);
    const at = item.type === 'grid' ? 4 : 10;
    const wide = data.length >= 2 && (data[1]! & 1) === 1;
    if (data.length < at + (wide ? 8 : 4)) continue;
    sizes.push(
      wide ? { width: data.readUInt32BE(at), height: data.readUInt32BE(at + 4) } : { width: data.readUInt16BE(at), height: data.readUInt16BE(at + 2) },
    );
  }
  return sizes;
}

/** Each item's id and four-character type, from iinf's `infe` boxes (versions 2 and 3 carry a type). */
function itemTypes(meta: Box[]): Array<{ id: number; type: string }> {
  const iinf = meta.find((b) => b.type === 'iinf')?.body;
  if (!iinf || iinf.length < 6) return [];
  const items: Array<{ id: number; type: string }> = [];
  for (const infe of metaChildren(iinf.subarray(iinf[0] === 0 ? 6 : 8)).filter((b) => b.type === 'infe')) {
    const version = infe.body[0]!;
    if (version === 2 && infe.body.length >= 12) items.push({ id: infe.body.readUInt16BE(4), type: infe.body.toString('latin1', 8, 12) });
    else if (version === 3 && infe.body.length >= 14) items.push({ id: infe.body.readUInt32BE(4), type: infe.body.toString('latin1', 10, 14) });
  }
  return items;
}

type ItemLocation = { method: number; base: number; extents: Array<{ offset: number; length: number }> };

/** iloc (ISO/IEC 14496-12 8.11.3), versions 0-2: where each item's bytes are. */
function itemLocations(meta: Box[]): Map<number, ItemLocation> {
  const locations = new Map<number, ItemLocation>();
  const b = meta.find((box) => box.type === 'iloc')?.body;
  if (!b || b.length < 8) return locations;
  const version = b[0]!;
  const offsetSize = b[4]! >> 4;
  const lengthSize = b[4]! & 15;
  const baseSize = b[5]! >> 4;
  const indexSize = version >= 1 ? b[5]! & 15 : 0;
  let at = 6;
  const uint = (n: number) => {
    if (at + n > b.length) throw new RangeError('iloc ends early');
    let value = 0;
    for (let i = 0; i < n; i++) value = value * 256 + b[at + i]!;
    at += n;
    return value;
  };
  try {
    const count = uint(version < 2 ? 2 : 4);
    for (let i = 0; i < count; i++) {
      const id = uint(version < 2 ? 2 : 4);
      const method = version >= 1 ? uint(2) & 15 : 0;
      uint(2); // data_reference_index
      const base = uint(baseSize);
      const extents: ItemLocation['extents'] = [];
      for (let e = uint(2); e > 0; e--) {
        uint(indexSize);
        extents.push({ offset: uint(offsetSize), length: uint(lengthSize) });
      }
      locations.set(id, { method, base, extents });
    }
  } catch {
    // A cut-off table: the items read so far are located; the decoder judges the rest.
  }
  return locations;
}

export type HeicDecodeOptions = {
  /** Pixels the photo declares (width × height of the primary image); sizes the child's limits. */
  pixels: number;
  signal?: AbortSignal;
};

/** Address space for the decoder: libheif's own needs plus a few bytes per declared pixel (YCbCr planes, RGB, JPEG). */
export const heicMemoryBytes = (pixels: number) => 128 * 1024 * 1024 + 8 * pixels;
/** Generous: 0.6 s for 12 MP here; a decode that takes minutes is a hostile file or a stuck decoder. */
export const heicTimeoutMs = (pixels: number) => 30_000 + Math.ceil(pixels / 1_000_000) * 1_000;

/**
 * Decodes the primary image of a HEIC into `<workDir>/heic-decoded.jpg`: upright (irot/imir applied,
 * so the EXIF orientation it still carries must not be applied again), with the original's colour
 * profile. A decoder failure is the content's fault (422); a server-side stop is not.
 */
export async function decodeHeicToJpeg(sourcePath: string, workDir: string, opts: HeicDecodeOptions): Promise<string> {
  const out = path.resolve(workDir, 'heic-decoded.jpg');
  try {
    // One malloc arena: under an address-space cap, glibc's per-thread arenas (64 MB each reserved
    // for libde265's threads) make thread creation fail in ways that hang the decoder instead of
    // failing it.
    await runBounded('env', ['MALLOC_ARENA_MAX=1', 'heif-convert', '--quiet', '-q', '95', path.resolve(sourcePath), out], {
      memoryBytes: heicMemoryBytes(opts.pixels),
      timeoutMs: heicTimeoutMs(opts.pixels),
      signal: opts.signal,
      cwd: workDir,
    });
  } catch (err) {
    if (err instanceof BoundedChildError && (err.reason === 'aborted' || err.reason === 'signal')) throw err;
    if (err instanceof BoundedChildError && err.exitCode === 127)
      throw new Error('heif-convert is not installed (Debian package libheif-examples)', { cause: err });
    throw errors.unprocessable('The HEIC photo is corrupt or truncated and cannot be decoded.', err);
  }
  return out;
}

/**
 * The HEIC original as it is kept and served: the decoded pixels (upright, their colour profile kept)
 * without any EXIF/XMP (no location, no device), encoded again as HEVC by libheif's heif-enc. HEIF
 * containers are not rewritten in place here, and sharp cannot encode HEVC. x265's fastest preset at
 * quality 60: about 1.5 s for the 12 MP corpus photo here (12 s at the default preset), and about the
 * upload's own size (761 KB for 792 KB; quality 90 made it 3.2 MB, which the user would be charged).
 */
export async function encodeCleanHeic(decodedJpeg: Buffer, workDir: string, opts: HeicDecodeOptions): Promise<string> {
  const input = path.resolve(workDir, 'heic-clean-input.jpg');
  const out = path.resolve(workDir, 'original.heic');
  await writeFile(input, decodedJpeg);
  try {
    await runBounded('env', ['MALLOC_ARENA_MAX=1', 'heif-enc', '-q', '60', '-p', 'preset=ultrafast', '-o', out, input], {
      memoryBytes: heicMemoryBytes(opts.pixels) * 2,
      timeoutMs: heicTimeoutMs(opts.pixels),
      signal: opts.signal,
      cwd: workDir,
    });
  } catch (err) {
    if (err instanceof BoundedChildError && err.exitCode === 127)
      throw new Error('heif-enc is not installed (Debian package libheif-examples)', { cause: err });
    // Our own re-encode failing is not the photo's fault: a server-side failure.
    throw new Error('Re-encoding the HEIC original without its metadata failed.', { cause: err });
  } finally {
    await rm(input, { force: true });
  }
  return out;
}
