import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends, readBlob, uploadAreaIds } from './helpers/backends.js';
import { corpus, type TestChipmunk } from './helpers/chipmunk.js';
import { decodedSamples, probe, waitForFile, type AudioFileJson } from './helpers/audio.js';
import { tusUpload } from './helpers/tus.js';

// Music through the whole service: real tus uploads, real music-metadata, real ffmpeg jobs.

describe.each(backends)('$name', (backend) => {
  let t: TestChipmunk;
  /** Where stored blobs are copied for ffprobe and ffmpeg, which read files (the blobs may be in a bucket). */
  let copies: string;
  beforeAll(async () => {
    t = await backend.start();
    copies = await mkdtemp(path.join(tmpdir(), 'chipmunk-audio-blobs-'));
  });
  afterAll(async () => {
    await t?.close();
    if (copies) await rm(copies, { recursive: true, force: true });
  });

  const upload = async (userId: string, file: string, filename = path.basename(file)) => {
    const token = await t.uploadToken(userId, 'audio');
    return tusUpload(`${t.url}/uploads`, await readFile(file), { token, metadata: { filename } });
  };
  const user = async (id: string) => (await (await t.api(`/v1/users/${id}`)).json()) as { usedBytes: number; reservedBytes: number; fileCount: number };
  /** A local copy of a stored blob, read through the server's BlobStorage. */
  const stored = async (id: string, name: string) => {
    const copy = path.join(copies, `${id}-${name}`);
    await writeFile(copy, await readBlob(t, id, name));
    return copy;
  };

  type Expected = Partial<Omit<AudioFileJson, 'cover'>> & { cover: boolean };

  // Facts as music-metadata 11 reads them (see the corpus's SOURCES.md).
  const okFiles: Record<string, Expected> = {
    'aiff-id3.aif': { codec: 'pcm', container: 'aiff', sampleRate: 8000, channels: 1, lossless: true, durationMs: 1000, title: 'AIFF title', cover: false },
    'flac-vorbis-picture.flac': {
      codec: 'flac',
      container: 'flac',
      sampleRate: 44100,
      channels: 2,
      lossless: true,
      durationMs: 3685,
      title: 'Silence',
      artist: 'piman',
      album: 'Quod Libet Test Data',
      year: 2004,
      trackNumber: 2,
      genre: 'Silence',
      cover: true,
    },
    'm4a-aac-cover.m4a': {
      codec: 'aac',
      container: 'mp4',
      sampleRate: 44100,
      channels: 2,
      lossless: false,
      durationMs: 1042,
      title: 'Title',
      artist: 'Artist',
      album: 'Album',
      albumArtist: 'Album Artist',
      year: 2014,
      trackNumber: 3,
      genre: 'Rock',
      cover: true,
    },
    'm4a-alac.m4a': { codec: 'alac', container: 'mp4', sampleRate: 44100, channels: 2, lossless: true, durationMs: 3685, title: 'empty', cover: false },
    'mp3-id3v23-nocover.mp3': {
      codec: 'mp3',
      container: 'mpeg',
      sampleRate: 44100,
      channels: 2,
      lossless: false,
      bitrate: 32000,
      durationMs: 3709,
      title: 'Silence',
      artist: 'piman',
      album: 'Quod Libet Test Data',
      year: 2004,
      trackNumber: 2,
      genre: 'Silence',
      cover: false,
    },
    'mp3-id3v24-two-covers.mp3': {
      codec: 'mp3',
      container: 'mpeg',
      sampleRate: 44100,
      channels: 2,
      lossless: false,
      bitrate: 192000,
      durationMs: 1019,
      title: 'Song',
      artist: 'Artist',
      album: 'Album',
      albumArtist: 'Album Artist',
      year: 2014,
      trackNumber: 2,
      genre: 'Rock',
      cover: true,
    },
    'ogg-vorbis-cover.ogg': {
      codec: 'vorbis',
      container: 'ogg',
      sampleRate: 8000,
      channels: 2,
      lossless: false,
      durationMs: 1038,
      title: 'Title',
      artist: 'Artist',
      album: 'Album',
      albumArtist: 'Album Artist',
      year: 2014,
      trackNumber: 3,
      genre: 'Rock',
      cover: true,
    },
    // Its picture is a 166-byte 1×1 JPEG with corrupt data that the image processor refuses: the track is
    // kept, without a cover.
    'opus-cover.opus': {
      codec: 'opus',
      container: 'ogg',
      sampleRate: 48000,
      channels: 1,
      lossless: false,
      durationMs: 1000,
      title: 'Title',
      artist: 'Artist',
      album: 'Album',
      albumArtist: 'Album Artist',
      year: 2014,
      trackNumber: 3,
      genre: 'Rock',
      cover: false,
    },
    'wav-pcm16-id3-cover.wav': {
      codec: 'pcm',
      container: 'wav',
      sampleRate: 44100,
      channels: 1,
      lossless: true,
      durationMs: 1000,
      title: 'Title',
      artist: 'Artist',
      album: 'Album',
      albumArtist: 'Album Artist',
      year: 2014,
      trackNumber: 3,
      genre: 'Rock',
      cover: true,
    },
    'wav-pcm8-notags.wav': { codec: 'pcm', container: 'wav', sampleRate: 16000, channels: 2, lossless: true, durationMs: 2000, cover: false },
  };

  // Parsing and encoding do not depend on the backend: the distributed run takes three formats that
  // between them have a cover and none, lossless and lossy, which is what travels through the bucket
  // and the queue differently (the whole corpus there would add about a minute of ffmpeg).
  const formats = Object.entries(okFiles).filter(
    ([name]) => backend.name === 'embedded' || ['flac-vorbis-picture.flac', 'm4a-aac-cover.m4a', 'mp3-id3v23-nocover.mp3'].includes(name),
  );

  describe('music from audio/ok', () => {
    it.each(formats)('%s: facts at completion, then renditions, waveform and cover in the background', async (name, expected) => {
      const { cover: hasCover, ...facts } = expected;
      const userId = `u-${name.replace(/[^a-z0-9]/g, '')}`;
      const result = await upload(userId, corpus('audio/ok', name));
      expect(result.ok).toBe(true);
      if (!result.ok) return;
      const first = result.body as AudioFileJson;
      // The final PATCH answers at once with the facts; renditions come later.
      expect(first).toMatchObject({ kind: 'audio', status: 'processing', ...facts });
      expect(first.variants.map((v) => v.n)).toEqual([0]);
      for (const absent of ['title', 'artist', 'album', 'albumArtist', 'year', 'trackNumber', 'genre'] as const) {
        if (!(absent in facts)) expect(first[absent]).toBeUndefined();
      }

      const file = await waitForFile(t, first.id);
      expect(file.error).toBeUndefined();
      expect(file.status).toBe('ready');
      expect(file).toMatchObject(facts);
      expect(file.variants.map((v) => v.n)).toEqual([0, 1, 2, 'waveform']);
      expect(file.variants.map((v) => v.mimeType).slice(1)).toEqual(['audio/webm; codecs=opus', 'audio/mp4', 'application/json']);
      expect(file.renditions?.available).toBe(true);

      // Every byte on disk is charged: the original, renditions, waveform and the cover ladder.
      const rows = await t.chipmunk.inspect.variants(file.id);
      expect(file.totalBytes).toBe(rows.reduce((s, v) => s + v.bytes, 0));
      expect((await user(userId)).usedBytes).toBe(file.totalBytes);
      expect((await t.chipmunk.storage.listNames(file.id)).sort()).toEqual(rows.map((v) => v.path).sort());

      // Renditions: what ffprobe says they are, and they decode to the source's length.
      const opus = probe(await stored(file.id, '1.webm'));
      const aac = probe(await stored(file.id, '2.m4a'));
      expect([opus.codec, opus.formatName]).toEqual(['opus', 'matroska,webm']);
      expect(aac.codec).toBe('aac');
      expect(aac.channels).toBe(opus.channels);
      const rate = 48_000;
      const source = decodedSamples(await stored(file.id, rows.find((v) => v.name === '0')!.path), rate);
      // Opus keeps the exact length (pre-skip and end trim are in the stream). ffmpeg's AAC decoder ignores the
      // MP4 edit list's end trim, so the decoded AAC may carry up to one frame (1024 samples at its own rate)
      // of encoder padding: on these 1-second clips that frame is more than 1%, on real tracks it is nothing.
      expect(Math.abs(decodedSamples(await stored(file.id, '1.webm'), rate) - source)).toBeLessThanOrEqual(source * 0.01);
      const aacFrame = Math.ceil((1024 / aac.sampleRate) * rate);
      expect(Math.abs(decodedSamples(await stored(file.id, '2.m4a'), rate) - source)).toBeLessThanOrEqual(source * 0.01 + aacFrame);
      // faststart: the index (moov) comes before the audio (mdat), so playback starts from the first range.
      const head = (await readFile(await stored(file.id, '2.m4a'))).toString('latin1');
      expect(head.indexOf('moov')).toBeGreaterThan(0);
      expect(head.indexOf('moov')).toBeLessThan(head.indexOf('mdat'));

      // Waveform: audiowaveform JSON v2, 8-bit min/max pairs, the documented length.
      const waveform = JSON.parse(await readFile(await stored(file.id, 'waveform.json'), 'utf8')) as {
        version: number;
        channels: number;
        sample_rate: number;
        samples_per_pixel: number;
        bits: number;
        length: number;
        data: number[];
      };
      expect(waveform).toMatchObject({ version: 2, channels: 1, bits: 8, sample_rate: expected.sampleRate });
      const samples = decodedSamples(await stored(file.id, rows.find((v) => v.name === '0')!.path), waveform.sample_rate);
      expect(waveform.length).toBe(Math.ceil(samples / waveform.samples_per_pixel));
      expect(waveform.length).toBeGreaterThanOrEqual(1000);
      expect(waveform.length).toBeLessThanOrEqual(2000);
      expect(waveform.data).toHaveLength(waveform.length * 2);
      for (let i = 0; i < waveform.data.length; i += 2) {
        expect(waveform.data[i]!).toBeGreaterThanOrEqual(-128);
        expect(waveform.data[i]!).toBeLessThanOrEqual(waveform.data[i + 1]!);
        expect(waveform.data[i + 1]!).toBeLessThanOrEqual(127);
      }

      // Cover: the embedded picture becomes the track's own ladder, named cover-N, not in the main list.
      const coverRows = rows.filter((v) => v.name.startsWith('cover-'));
      if (!hasCover) {
        expect(file.cover).toBeUndefined();
        expect(coverRows).toEqual([]);
        return;
      }
      // The image processor (merged from branch `images`) makes the square WebP ladder 1…6 of the picture;
      // cover-0 is the picture itself, as variant 0 is an upload's original.
      const token = (await t.chipmunk.inspect.file(file.id))!.deliveryToken;
      expect(coverRows.map((v) => v.name).sort()).toEqual(['cover-0', 'cover-1', 'cover-2', 'cover-3', 'cover-4', 'cover-5', 'cover-6']);
      // Audio is private by default: the delivery layer (merged from branch `delivery`) signs each URL.
      expect(file.cover?.variants.map((u) => u.split('?')[0])).toEqual(['0', '1', '2', '3', '4', '5', '6'].map((n) => `${t.url}/f/${token}/cover-${n}`));
      const served = await fetch(file.cover!.variants[3]!);
      expect(served.status).toBe(200);
      expect(served.headers.get('content-type')).toBe('image/webp');
      expect(Buffer.from(await served.arrayBuffer()).length).toBe(coverRows.find((v) => v.name === 'cover-3')!.bytes);
      expect(file.cover?.width).toBeGreaterThan(0);
      expect(file.cover?.height).toBeGreaterThan(0);
      const picture = coverRows.find((v) => v.name === 'cover-0')!;
      expect(picture.mimeType).toMatch(/^image\/(jpeg|png)$/);
      for (const rung of coverRows.filter((v) => v.name !== 'cover-0')) {
        expect(rung.mimeType).toBe('image/webp');
        expect(rung.width).toBe(rung.height);
      }
    });

    it('picks the front cover when a file carries several pictures', async () => {
      const result = await upload('covers', corpus('audio/ok/mp3-id3v24-two-covers.mp3'));
      if (!result.ok) throw result.error;
      const file = await waitForFile(t, (result.body as AudioFileJson).id);
      // The PNG is 'Cover (front)', the JPEG is 'Other'.
      const picture = (await t.chipmunk.inspect.variant(file.id, 'cover-0'))!;
      expect(picture).toMatchObject({ mimeType: 'image/png' });
      // Its text chunks are stripped like any original's.
      expect(picture.bytes).toBeLessThanOrEqual(9876);
    });

    it('serves byte ranges of the renditions that a player can seek into, and the waveform, by their URLs', async () => {
      const result = await upload('ranges', corpus('audio/ok/flac-vorbis-picture.flac'));
      if (!result.ok) throw result.error;
      const file = await waitForFile(t, (result.body as AudioFileJson).id);
      const url = (n: number | string) => file.variants.find((v) => v.n === n)!.url;
      for (const [n, name] of [
        [1, '1.webm'],
        [2, '2.m4a'],
      ] as const) {
        const whole = await readFile(await stored(file.id, name));
        const start = Math.floor(whole.length / 2);
        const res = await fetch(url(n), { headers: { range: `bytes=${start}-` } });
        expect(res.status).toBe(206);
        expect(res.headers.get('content-range')).toBe(`bytes ${start}-${whole.length - 1}/${whole.length}`);
        expect(res.headers.get('content-type')).toBe(file.variants.find((v) => v.n === n)!.mimeType);
        expect(Buffer.from(await res.arrayBuffer()).equals(whole.subarray(start))).toBe(true);
        // The storage interface answers the same range (what nginx or another backend would serve).
        const part = await buffer(t.chipmunk.storage.read(file.id, name, { start, end: whole.length - 1 }));
        expect(part.equals(whole.subarray(start))).toBe(true);
      }
      const waveform = await fetch(url('waveform'));
      expect(waveform.status).toBe(200);
      expect(waveform.headers.get('content-type')).toMatch(/^application\/json/);
      expect(((await waveform.json()) as { version: number }).version).toBe(2);
      // With the index first, a decoder seeks straight to 2 s and decodes only the rest.
      const aac = await stored(file.id, '2.m4a');
      const rest = decodedSamples(aac, 48_000);
      const fromTwo = await import('node:child_process').then(({ spawnSync }) =>
        spawnSync('ffmpeg', ['-nostdin', '-v', 'error', '-ss', '2', '-i', aac, '-ac', '1', '-ar', '48000', '-f', 's16le', 'pipe:1'], {
          maxBuffer: 64 << 20,
        }),
      );
      expect(fromTwo.status).toBe(0);
      expect(Math.abs(fromTwo.stdout.length / 2 - (rest - 2 * 48_000))).toBeLessThan(48_000 * 0.1);
    });
  });

  describe('broken and hostile audio', () => {
    const hostile = [
      'aiff-cwe835-loop.aiff',
      'empty.mp3',
      'flac-oom-header.flac',
      'flac-short-picture-block.flac',
      'flac-too-short-block-size.flac',
      'text-content-with-mp3-extension.mp3',
      'too-short.mp3',
      'truncated-64bit.mp4',
    ];

    it('refuses what is not audio and fails what cannot be decoded; nothing is stuck or left behind', async () => {
      const outcomes: Record<string, string> = {};
      const kept: AudioFileJson[] = [];
      for (const name of hostile) {
        const result = await upload('mallory', corpus('audio/hostile', name));
        if (!result.ok) {
          expect(result.status, name).toBeGreaterThanOrEqual(400);
          expect(result.status, name).toBeLessThan(500);
          const body = JSON.parse(result.body ?? '{}') as { error?: { code: string; message: string } };
          expect(body.error?.message, name).toMatch(/\w+ \w+/);
          outcomes[name] = `${result.status} ${body.error?.code}`;
          continue;
        }
        const file = await waitForFile(t, (result.body as AudioFileJson).id);
        kept.push(file);
        outcomes[name] = file.status;
        expect(file.status, name).toBe('failed');
        expect(file.error, name).toMatch(/\w+ \w+/);
      }
      expect(outcomes).toEqual({
        'aiff-cwe835-loop.aiff': '422 UNPROCESSABLE_MEDIA',
        'empty.mp3': '422 UNPROCESSABLE_MEDIA',
        'flac-oom-header.flac': '422 UNPROCESSABLE_MEDIA',
        'flac-short-picture-block.flac': '422 UNPROCESSABLE_MEDIA',
        'flac-too-short-block-size.flac': '422 UNPROCESSABLE_MEDIA',
        'text-content-with-mp3-extension.mp3': '422 UNPROCESSABLE_MEDIA',
        // An ID3 tag and a fragment of one frame: the tags read, but the decode probe at completion fails.
        'too-short.mp3': '422 UNPROCESSABLE_MEDIA',
        'truncated-64bit.mp4': '422 UNPROCESSABLE_MEDIA',
      });
      expect(kept).toEqual([]);
      // Nothing stuck, nothing charged, nothing left in the upload area or the scratch folders.
      await t.chipmunk.jobs.idle();
      expect(await t.chipmunk.inspect.unfinishedJobs()).toEqual([]);
      const mallory = await user('mallory');
      expect(mallory).toMatchObject({ reservedBytes: 0, usedBytes: 0, fileCount: 0 });
      expect(await uploadAreaIds(t)).toEqual([]);
      // Processing scratch is local on every node, in both modes.
      expect((await readdir(path.join(t.dataDir, 'work')).catch(() => [])).length).toBe(0);
    });

    it('refuses a non-audio file even when it is named and declared as music', async () => {
      const token = await t.uploadToken('mallory2', 'audio');
      const photo = await readFile(corpus('images/photos/portrait-canal.jpg'));
      const result = await tusUpload(`${t.url}/uploads`, photo, { token, metadata: { filename: 'song.mp3', filetype: 'audio/mpeg' } });
      expect(result.ok).toBe(false);
      if (result.ok) return;
      expect(result.status).toBe(415);
      expect((await user('mallory2')).usedBytes).toBe(0);
    });
  });
});
