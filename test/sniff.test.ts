import { readdir } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { sniffBytes, sniffFile } from '../src/media/sniff.js';
import { corpus } from './helpers/chipmunk.js';

describe('sniffing by bytes', () => {
  it('recognises every well-formed audio file in the corpus as audio', async () => {
    for (const name of await readdir(corpus('audio/ok'))) {
      const sniffed = await sniffFile(corpus('audio/ok', name));
      expect(sniffed?.kind, name).toBe('audio');
    }
  });

  it.each([
    ['images/photos/portrait-canal.jpg', 'image/jpeg'],
    ['images/formats/webp-lossy-fjord.webp', 'image/webp'],
    ['images/formats/anim-loop3.gif', 'image/gif'],
    ['images/formats/avif-alpha.avif', 'image/avif'],
    ['images/formats/heic-iphone8plus-orientation6.heic', 'image/heic'],
    ['images/formats/tiff-lzw-rgb-hopper.tif', 'image/tiff'],
    ['images/hostile/png-content-with-jpg-extension.jpg', 'image/png'],
    ['images/hostile/jpeg-content-with-png-extension.png', 'image/jpeg'],
    ['images/formats/svg-simple-check.svg', 'image/svg+xml'],
    ['audio/ok/flac-vorbis-picture.flac', 'audio/flac'],
    ['audio/ok/m4a-aac-cover.m4a', 'audio/mp4'],
  ])('%s is %s, whatever its name says', async (file, mimeType) => {
    expect((await sniffFile(corpus(file)))?.mimeType).toBe(mimeType);
  });

  it('does not recognise text, empty or tiny inputs', async () => {
    expect(await sniffFile(corpus('audio/hostile/text-content-with-mp3-extension.mp3'))).toBeUndefined();
    expect(await sniffFile(corpus('audio/hostile/empty.mp3'))).toBeUndefined();
    expect(sniffBytes(Buffer.from([0xff]))).toBeUndefined();
  });
});
