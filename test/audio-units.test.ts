import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { planRenditions, renditionArgs, type AudioInfo } from '../src/media/audio.js';
import { resolveFfmpeg } from '../src/media/ffmpeg.js';
import { sniffBytes, sniffFile } from '../src/media/sniff.js';
import { MAX_POINTS, PeakReducer } from '../src/media/waveform.js';
import { corpus } from './helpers/chipmunk.js';

const pcm = (samples: number[]) => {
  const b = Buffer.alloc(samples.length * 2);
  samples.forEach((s, i) => b.writeInt16LE(s, i * 2));
  return b;
};

describe('waveform peaks', () => {
  it('gives the documented length for any number of samples', () => {
    for (const total of [1, 999, 2000, 2001, 4001, 8000, 44_100, 65_535, 65_536, 65_537, 1_000_003, 10_584_000]) {
      const reducer = new PeakReducer();
      const chunk = pcm(new Array(Math.min(total, 100_000)).fill(0));
      for (let left = total; left > 0; left -= 100_000) reducer.push(left >= 100_000 ? chunk : chunk.subarray(0, left * 2));
      const w = reducer.finish(44_100)!;
      expect(w.length, `${total}`).toBe(Math.ceil(total / w.samples_per_pixel));
      expect(w.length).toBeLessThanOrEqual(MAX_POINTS);
      if (total >= 2000) expect(w.length).toBeGreaterThanOrEqual(1000);
      if (total >= 65_536) expect(w.length).toBeGreaterThanOrEqual(1886);
      expect(w.data).toHaveLength(w.length * 2);
    }
  });

  it('keeps exact extremes, converts to 8 bits like audiowaveform, and survives chunks that split a sample', () => {
    const samples = Array.from({ length: 300_001 }, (_, i) => Math.round(Math.sin(i / 50) * 20_000));
    samples[123_456] = -32768;
    samples[200_000] = 32767;
    const whole = new PeakReducer();
    whole.push(pcm(samples));
    const split = new PeakReducer();
    const bytes = pcm(samples);
    for (let at = 0; at < bytes.length; at += 7777) split.push(bytes.subarray(at, at + 7777));
    const a = whole.finish(48_000)!;
    expect(split.finish(48_000)).toEqual(a);
    expect(a).toMatchObject({ version: 2, channels: 1, bits: 8, sample_rate: 48_000 });
    expect(Math.min(...a.data)).toBe(-128);
    expect(Math.max(...a.data)).toBe(127);
    // Each pair covers samples_per_pixel samples; check one against the samples directly.
    const p = 700;
    const span = samples.slice(p * a.samples_per_pixel, (p + 1) * a.samples_per_pixel);
    expect([a.data[2 * p], a.data[2 * p + 1]]).toEqual([Math.min(...span) >> 8, Math.max(...span) >> 8]);
  });

  it('has nothing to say about no audio', () => {
    expect(new PeakReducer().finish(44_100)).toBeUndefined();
  });
});

describe('rendition plan: never encode up', () => {
  const base: AudioInfo = { codec: 'flac', container: 'flac', lossless: true, sampleRate: 44_100, channels: 2 };
  const plan = (info: Partial<AudioInfo>) =>
    planRenditions({ ...base, ...info }).map(({ codec, mode, bitrate, sampleRate, stereo }) => ({ codec, mode, bitrate, sampleRate, stereo }));

  it('lossless stereo gets the targets', () => {
    expect(plan({})).toEqual([
      { codec: 'opus', mode: 'encode', bitrate: 64_000, sampleRate: undefined, stereo: false },
      { codec: 'aac', mode: 'encode', bitrate: 160_000, sampleRate: undefined, stereo: false },
    ]);
  });

  it('a 96 kbps MP3 gives a 96 kbps AAC, not 160', () => {
    expect(plan({ codec: 'mp3', container: 'mpeg', lossless: false, bitrate: 96_000 }).map((p) => p.bitrate)).toEqual([64_000, 96_000]);
  });

  it('copies a stream already in the target codec at or under the target', () => {
    expect(plan({ codec: 'aac', container: 'mp4', lossless: false, bitrate: 128_000 }).map((p) => p.mode)).toEqual(['encode', 'copy']);
    expect(plan({ codec: 'opus', container: 'ogg', lossless: false, bitrate: 48_000, sampleRate: 48_000 }).map((p) => p.mode)).toEqual(['copy', 'encode']);
    // A heavy Opus is re-encoded to the light target.
    expect(plan({ codec: 'opus', container: 'ogg', lossless: false, bitrate: 160_000, sampleRate: 48_000 })[0]).toMatchObject({
      mode: 'encode',
      bitrate: 64_000,
    });
  });

  it('keeps floors for very low sources, gives mono less, downmixes surround, caps AAC at 48 kHz', () => {
    expect(plan({ codec: 'vorbis', container: 'ogg', lossless: false, bitrate: 16_000 }).map((p) => p.bitrate)).toEqual([24_000, 32_000]);
    expect(plan({ channels: 1 }).map((p) => p.bitrate)).toEqual([48_000, 96_000]);
    expect(plan({ channels: 6 }).map((p) => p.stereo)).toEqual([true, true]);
    expect(plan({ sampleRate: 96_000 })[1]).toMatchObject({ sampleRate: 48_000 });
  });

  it('puts the MP4 index first and leaves tags out of renditions', () => {
    const [opus, aac] = planRenditions(base) as [ReturnType<typeof planRenditions>[number], ReturnType<typeof planRenditions>[number]];
    const aacArgs = renditionArgs(aac, { opusEncoder: 'libopus' }, '/tmp/2.m4a');
    expect(aacArgs.join(' ')).toContain('-movflags +faststart');
    expect(aacArgs.join(' ')).toContain('-map_metadata -1');
    expect(renditionArgs(opus, { opusEncoder: 'libopus' }, '/tmp/1.webm').join(' ')).toContain('-c:a libopus -b:a 64000');
  });
});

describe('ffmpeg resolution', () => {
  it('finds a working ffmpeg, and the npm-packaged one runs here too', () => {
    expect(resolveFfmpeg()?.source).toMatch(/^(PATH|@ffmpeg-installer\/ffmpeg)$/);
    const packaged = resolveFfmpeg({ searchPath: false });
    expect(packaged?.source).toBe('@ffmpeg-installer/ffmpeg');
    expect(packaged?.version).toMatch(/^ffmpeg version/);
    expect(resolveFfmpeg({ ffmpegPath: 'off' })).toBeUndefined();
    expect(resolveFfmpeg({ searchPath: false, packaged: false })).toBeUndefined();
  });
});

describe('sniffing audio', () => {
  it('recognises every corpus format', async () => {
    const expected: Record<string, string> = {
      'aiff-id3.aif': 'audio/aiff',
      'flac-vorbis-picture.flac': 'audio/flac',
      'm4a-aac-cover.m4a': 'audio/mp4',
      'm4a-alac.m4a': 'audio/mp4',
      'mp3-id3v23-nocover.mp3': 'audio/mpeg',
      'mp3-id3v24-two-covers.mp3': 'audio/mpeg',
      'ogg-vorbis-cover.ogg': 'audio/ogg',
      'opus-cover.opus': 'audio/ogg; codecs=opus',
      'wav-pcm16-id3-cover.wav': 'audio/wav',
      'wav-pcm8-notags.wav': 'audio/wav',
    };
    for (const [name, mimeType] of Object.entries(expected)) expect((await sniffFile(corpus('audio/ok', name)))?.mimeType, name).toBe(mimeType);
  });

  it('looks past an ID3 tag: FLAC or AAC behind one stays FLAC or AAC', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'chipmunk-sniff-'));
    try {
      // An ID3v2.4 tag of 5000 bytes (syncsafe size 0x27 0x08), longer than the sniffed head.
      const header = Buffer.from([0x49, 0x44, 0x33, 4, 0, 0, 0, 0, 0x27, 0x08]);
      const body = Buffer.alloc(5000, 0x41);
      const cases: Array<[Buffer, string]> = [
        [Buffer.from('fLaC\0\0\0\x22', 'latin1'), 'audio/flac'],
        [Buffer.from([0xff, 0xf1, 0x50, 0x80, 0, 0x1f, 0xfc]), 'audio/aac'],
        [Buffer.from([0xff, 0xfb, 0x90, 0x64]), 'audio/mpeg'],
        [Buffer.alloc(8), 'audio/mpeg'],
      ];
      for (const [after, mimeType] of cases) {
        const file = path.join(dir, 'x');
        await writeFile(file, Buffer.concat([header, body, after]));
        expect((await sniffFile(file))?.mimeType).toBe(mimeType);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses reserved MPEG header values and Ogg streams that are not audio', () => {
    expect(sniffBytes(Buffer.from([0xff, 0xfb, 0xf0, 0x64]))).toBeUndefined(); // bitrate index 15
    expect(sniffBytes(Buffer.from([0xff, 0xfb, 0x9c, 0x64]))).toBeUndefined(); // sample-rate index 3
    expect(sniffBytes(Buffer.from([0xff, 0xe9, 0x90, 0x64]))).toBeUndefined(); // MPEG version 'reserved'
    const page = (packet: string) =>
      Buffer.concat([Buffer.from('OggS\0\x02', 'latin1'), Buffer.alloc(20), Buffer.from([1, packet.length]), Buffer.from(packet, 'latin1')]);
    expect(sniffBytes(page('\x80theora'))?.kind).toBe('other');
    expect(sniffBytes(page('\x01vorbis'))?.mimeType).toBe('audio/ogg');
    expect(sniffBytes(page('OpusHead'))?.mimeType).toBe('audio/ogg; codecs=opus');
  });
});
