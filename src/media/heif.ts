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

/** Width × height of every image item the container declares (`ispe`), read without decoding anything. */
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
    for (let at = 0; at + 8 <= size; ) {
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
        return collectIspe(meta.subarray(4));
      }
      at += boxSize;
    }
    return [];
  } finally {
    await handle.close();
  }
}

/** Walks meta → iprp → ipco and reads each `ispe` (a full box: version/flags, width, height). */
function collectIspe(meta: Buffer): Array<{ width: number; height: number }> {
  const sizes: Array<{ width: number; height: number }> = [];
  const walk = (b: Buffer, want: string[]) => {
    for (let at = 0; at + 8 <= b.length; ) {
      const boxSize = b.readUInt32BE(at);
      if (boxSize < 8 || at + boxSize > b.length) return;
      const type = b.toString('latin1', at + 4, at + 8);
      const body = b.subarray(at + 8, at + boxSize);
      if (type === want[0] && want.length > 1) walk(body, want.slice(1));
      else if (type === 'ispe' && want[0] === 'ispe' && body.length >= 12) sizes.push({ width: body.readUInt32BE(4), height: body.readUInt32BE(8) });
      at += boxSize;
    }
  };
  walk(meta, ['iprp', 'ipco', 'ispe']);
  return sizes;
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
    if (err instanceof BoundedChildError && err.exitCode === 127) throw new Error('heif-convert is not installed (Debian package libheif-examples)', { cause: err });
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
    if (err instanceof BoundedChildError && err.exitCode === 127) throw new Error('heif-enc is not installed (Debian package libheif-examples)', { cause: err });
    // Our own re-encode failing is not the photo's fault: a server-side failure.
    throw new Error('Re-encoding the HEIC original without its metadata failed.', { cause: err });
  } finally {
    await rm(input, { force: true });
  }
  return out;
}
