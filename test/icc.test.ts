import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { isSrgbProfile, profileDescription } from '../src/media/icc.js';
import { corpus } from './helpers/chipmunk.js';

// The ladder skips the colour transform for sRGB-tagged photos; these pin down which profiles count
// as sRGB and that skipping changes no pixel.

const iccOf = async (rel: string) => (await sharp(corpus(rel)).metadata()).icc;

describe('sRGB profile detection', () => {
  it('recognises the sRGB IEC61966-2.1 profile cameras embed', async () => {
    const icc = await iccOf('images/photos/person-headshot-canon.jpg');
    expect(profileDescription(icc!)).toBe('sRGB IEC61966-2.1');
    expect(isSrgbProfile(icc)).toBe(true);
  });

  it('refuses wide-gamut, CMYK and missing profiles', async () => {
    for (const rel of [
      'images/color/adobergb-a98-icc.jpg',
      'images/color/display-p3-icc.png',
      'images/color/prophoto-icc-orion.jpg',
      'images/color/cmyk-swop-icc.jpg',
    ]) {
      const icc = await iccOf(rel);
      expect(icc, rel).toBeDefined();
      expect(isSrgbProfile(icc), rel).toBe(false);
    }
    expect(isSrgbProfile(await iccOf('images/photos/landscape-saw-6mp.jpg'))).toBe(false);
  });

  it('says false, never throws, for truncated or garbage profiles', async () => {
    const icc = (await iccOf('images/photos/person-headshot-canon.jpg'))!;
    for (const cut of [0, 100, 140, 200, 400]) expect(isSrgbProfile(icc.subarray(0, cut))).toBe(false);
    const garbage = Buffer.from(icc);
    // A tag count far past the end and no 'desc' entry: the walk must stop at the buffer's end.
    garbage.writeUInt32BE(0xffffffff, 128);
    garbage.fill(0, 132);
    expect(isSrgbProfile(garbage)).toBe(false);
    // A 'desc' entry pointing outside the profile.
    const outside = Buffer.from(icc);
    outside.writeUInt32BE(1, 128);
    outside.write('desc', 132, 'latin1');
    outside.writeUInt32BE(icc.length - 4, 136);
    outside.writeUInt32BE(64, 140);
    expect(isSrgbProfile(outside)).toBe(false);
  });

  it('skipping the transform for an sRGB-tagged photo changes no pixel', async () => {
    const source = corpus('images/photos/portrait-canal.jpg');
    const converted = await sharp(source).toColourspace('srgb').raw().toBuffer();
    const skipped = await sharp(source, { ignoreIcc: true }).toColourspace('srgb').raw().toBuffer();
    expect(skipped.equals(converted)).toBe(true);
  });
});
