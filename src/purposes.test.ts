import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from './config.js';
import { admitToPurpose, kindOfMimeType, loadPurposes, type Purpose } from './purposes.js';

const avatar: Purpose = {
  name: 'avatar',
  kinds: ['image'],
  maxBytes: 20_000_000,
  square: true,
  visibility: 'public',
  original: 'served',
  formats: ['webp'],
  maxFrames: 100,
  maxAnimationPixels: 25_000_000,
  maxDurationSeconds: 7200,
};
const media: Purpose = {
  name: 'media',
  kinds: ['image', 'audio'],
  maxBytes: 1000,
  square: false,
  visibility: 'private',
  original: 'served',
  formats: ['webp'],
  maxFrames: 100,
  maxAnimationPixels: 25_000_000,
  maxDurationSeconds: 7200,
};

describe('admitToPurpose', () => {
  it('admits a file of an accepted kind up to the byte limit, inclusive', () => {
    expect(admitToPurpose(avatar, { length: 20_000_000, mimeType: 'image/png' })).toEqual({ kind: 'image' });
    expect(admitToPurpose(media, { length: 1000, mimeType: 'audio/flac' })).toEqual({ kind: 'audio' });
  });

  it('refuses one byte over the limit with FILE_TOO_LARGE, naming both sizes', () => {
    expect(() => admitToPurpose(avatar, { length: 20_000_001, mimeType: 'image/png' })).toThrow(
      expect.objectContaining({ code: 'FILE_TOO_LARGE', status: 413, message: 'Files for "avatar" may be at most 20 MB; this one is 20 MB.' }),
    );
    expect(() => admitToPurpose(media, { length: 1500 })).toThrow(
      expect.objectContaining({ message: expect.stringContaining('at most 1 KB; this one is 1.5 KB') }),
    );
  });

  it('refuses a declared type of another kind, or of no kind, with UNSUPPORTED_MEDIA_TYPE', () => {
    expect(() => admitToPurpose(avatar, { length: 10, mimeType: 'audio/mpeg' })).toThrow(
      expect.objectContaining({ code: 'UNSUPPORTED_MEDIA_TYPE', status: 415 }),
    );
    expect(() => admitToPurpose(media, { length: 10, mimeType: 'application/pdf' })).toThrow(
      /"media" uploads take image or audio files; "application\/pdf" is not one/,
    );
  });

  it('leaves an undeclared type to the bytes (decided at completion)', () => {
    expect(admitToPurpose(avatar, { length: 10, mimeType: null })).toEqual({ kind: undefined });
    expect(admitToPurpose(avatar, { length: 10 })).toEqual({ kind: undefined });
  });
});

describe('kindOfMimeType', () => {
  it('knows images, audio and the containers audio arrives in', () => {
    expect(kindOfMimeType('image/heic')).toBe('image');
    expect(kindOfMimeType('audio/ogg')).toBe('audio');
    expect(kindOfMimeType('application/ogg')).toBe('audio');
    expect(kindOfMimeType('video/mp4')).toBe('audio');
    expect(kindOfMimeType('video/webm')).toBeUndefined();
    expect(kindOfMimeType('')).toBeUndefined();
  });
});

describe('a bad purposes file', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'chipmunk-purposes-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const refusal = async (contents: string | undefined): Promise<unknown> => {
    const file = path.join(dir, `p-${Math.random().toString(36).slice(2)}.json`);
    if (contents !== undefined) await writeFile(file, contents);
    try {
      loadPurposes(file);
    } catch (err) {
      return err;
    }
    throw new Error('loaded');
  };

  it.each([
    ['missing', undefined, /CHIPMUNK_PURPOSES_FILE \S+ does not exist\./],
    ['not JSON', '{ banner: ', /CHIPMUNK_PURPOSES_FILE \S+ is not valid JSON: /],
    ['not an object', '[1, 2]', /CHIPMUNK_PURPOSES_FILE \S+ is not a JSON object of purposes/],
    ['a bad name', JSON.stringify({ 'Big Banner': { kinds: ['image'], maxBytes: 1 } }), /Purpose name "Big Banner" in CHIPMUNK_PURPOSES_FILE \S+ must be/],
    ['a bad purpose', JSON.stringify({ clip: { kinds: ['video'], maxBytes: 1 } }), /Purpose "clip" is invalid in CHIPMUNK_PURPOSES_FILE \S+: kinds\.0 /],
  ])('%s: stops start-up with a ConfigError sentence', async (_what, contents, sentence) => {
    const err = await refusal(contents);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(sentence);
  });

  it('refuses a purpose larger than where uploads are kept can hold, naming the purpose and the reason', async () => {
    const file = path.join(dir, 'big.json');
    await writeFile(file, JSON.stringify({ film: { kinds: ['audio'], maxBytes: 6 * 1024 ** 4 } }));
    const ceiling = { bytes: 5 * 1024 ** 4, why: 'S3 stores objects of at most 5 TiB' };
    expect(() => loadPurposes(file, undefined, ceiling)).toThrow(ConfigError);
    expect(() => loadPurposes(file, undefined, ceiling)).toThrow(
      `Purpose "film" accepts up to ${6 * 1024 ** 4} bytes, over ${5 * 1024 ** 4}: S3 stores objects of at most 5 TiB.`,
    );
    expect(loadPurposes(file).get('film').maxBytes).toBe(6 * 1024 ** 4);
  });
});
