import { execFile, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { orientationOnlyTiff, stripLosslessly } from '../src/media/metadata.js';
import { waitForFile } from './helpers/audio.js';
import { backends } from './helpers/backends.js';
import { corpus, type TestChipmunk } from './helpers/chipmunk.js';
import { startNginx, type TestNginx } from './helpers/nginx.js';

// What is served under /f/ says nothing about where, when or with what a photo was taken: every
// variant, public and signed, through Chipmunk alone and through the rendered nginx, read back with
// exiftool. The original keeps its pixels, its ICC profile and its orientation.

const run = promisify(execFile);

type FileJson = { id: string; visibility: string; variants: Array<{ n: number | string; url: string }>; cover?: { variants: string[] } };

/** exiftool's reading of bytes (all groups), as one flat tag → value map. */
async function exif(bytes: Buffer): Promise<Record<string, unknown>> {
  const dir = await mkdtemp(path.join(tmpdir(), 'chipmunk-exif-'));
  try {
    const file = path.join(dir, 'served');
    await writeFile(file, bytes);
    const { stdout } = await run('exiftool', ['-j', '-a', '-G1', '-n', file]);
    return (JSON.parse(stdout) as Array<Record<string, unknown>>)[0]!;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Tags that tell where, when or with what: none may survive. */
const leaking = /^(GPS|IFD0|ExifIFD|IFD1|XMP-|IPTC|Photoshop|MakerNotes|InteropIFD|Samsung|Canon|Apple|MPF)/;
const leaks = (tags: Record<string, unknown>) =>
  Object.keys(tags).filter((k) => leaking.test(k) && k !== 'IFD0:Orientation' && !k.startsWith('ExifTool') && !k.startsWith('System'));

async function pixels(bytes: Buffer): Promise<Buffer> {
  return sharp(bytes).raw().toBuffer();
}

async function upload(t: TestChipmunk, file: string, userId: string, purpose: string, filename = path.basename(file)): Promise<FileJson> {
  const form = new FormData();
  form.append('userId', userId);
  form.append('purpose', purpose);
  form.append('file', new Blob([await readFile(file)]), filename);
  const res = await fetch(`${t.url}/v1/files`, { method: 'POST', headers: { authorization: `Bearer ${t.apiKey}` }, body: form });
  expect(res.status).toBe(201);
  return (await res.json()) as FileJson;
}

const photos = ['gps-tagged-samsung.jpg', 'landscape-leaf-jolla-8mp.jpg', 'landscape-canon-adobergb-2mp.jpg', 'person-headshot-canon.jpg'];

describe.each(backends)('served bytes carry no location or device metadata: $name', (backend) => {
  let t: TestChipmunk;
  let nginx: TestNginx;
  let purposesDir: string | undefined;

  beforeAll(async () => {
    purposesDir = await mkdtemp(path.join(tmpdir(), 'chipmunk-purposes-'));
    t = await backend.start({
      CHIPMUNK_PURPOSES_FILE: await purposesFile({ kyc: { kinds: ['image'], maxBytes: 20_000_000, visibility: 'public', original: 'private' } }),
    });
    nginx = await startNginx(t, { authCacheSeconds: 0 });
  }, 60_000);
  afterAll(async () => {
    await nginx?.close();
    await t?.close();
    if (purposesDir) await rm(purposesDir, { recursive: true, force: true });
  });

  it('the corpus photos really do carry GPS and camera tags (the test would see a leak)', async () => {
    const gps = await exif(await readFile(corpus('images/photos/gps-tagged-samsung.jpg')));
    expect(gps['GPS:GPSLatitude']).toBeDefined();
    expect(leaks(gps).length).toBeGreaterThan(5);
  });

  for (const [purpose, name] of [
    ['avatar', photos[0]!],
    ['image', photos[0]!],
    ['image', photos[1]!],
    ['avatar', photos[2]!],
    ['image', photos[3]!],
  ] as const) {
    it(`${name} as "${purpose}": every variant, public or signed, through Chipmunk and nginx`, async () => {
      const source = corpus('images/photos', name);
      const file = await upload(t, source, 'privacy-user', purpose);
      expect(file.variants.map((v) => String(v.n))).toEqual(['0', '1', '2', '3', '4', '5', '6']);
      for (const v of file.variants) {
        const signed = (await (await t.api(`/v1/files/${file.id}/url?variant=${v.n}`)).json()) as { url: string };
        const urls = [v.url, signed.url];
        for (const url of urls) {
          for (const base of [t.url, nginx.url]) {
            const res = await fetch(url.replace(t.url, base));
            expect(res.status, `${base} ${url}`).toBe(200);
            const bytes = Buffer.from(await res.arrayBuffer());
            expect(leaks(await exif(bytes)), `${name} variant ${v.n} via ${base}`).toEqual([]);
          }
        }
      }
      // The original's pixels are the upload's, bit for bit; its colour profile is still there.
      const served = Buffer.from(
        await (await fetch(((await (await t.api(`/v1/files/${file.id}/url?variant=0`)).json()) as { url: string }).url)).arrayBuffer(),
      );
      const uploaded = await readFile(source);
      expect((await pixels(served)).equals(await pixels(uploaded))).toBe(true);
      expect(Boolean((await sharp(served).metadata()).icc)).toBe(Boolean((await sharp(uploaded).metadata()).icc));
      expect(served.length).toBeLessThan(uploaded.length);
    }, 60_000);
  }

  it('a purpose with "original": "private" serves its original only with a signed link, on both paths', async () => {
    const file = await upload(t, corpus('images/photos/gps-tagged-samsung.jpg'), 'privacy-user', 'kyc');
    expect(file.visibility).toBe('public');
    const original = file.variants.find((v) => v.n === 0)!;
    const thumb = file.variants.find((v) => v.n === 3)!;
    // In the file JSON the original's URL is signed; the thumbnail's is the bare public one.
    expect(original.url).toMatch(/\?exp=\d+&sig=/);
    expect(thumb.url).not.toMatch(/\?/);
    const bare = original.url.split('?')[0]!;
    for (const base of [t.url, nginx.url]) {
      const refused = await fetch(bare.replace(t.url, base));
      expect(refused.status).toBe(401);
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('SIGNATURE_REQUIRED');
      // A signature minted for the thumbnail does not open the original either.
      const signedThumb = (await (await t.api(`/v1/files/${file.id}/url?variant=3`)).json()) as { url: string };
      const swapped = signedThumb.url.replace(/\/3\?/, '/0?').replace(t.url, base);
      expect((await fetch(swapped)).status).toBe(403);
      expect((await fetch(original.url.replace(t.url, base))).status).toBe(200);
      expect((await fetch(thumb.url.replace(t.url, base))).status).toBe(200);
    }
  });

  it("a track's cover ladder, cover-0 included, is served without the picture's EXIF", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'chipmunk-cover-'));
    try {
      const track = path.join(dir, 'track.flac');
      const ff = (args: string[]) => {
        const out = spawnSync('ffmpeg', ['-nostdin', '-v', 'error', '-y', ...args]);
        if (out.status !== 0) throw new Error(out.stderr.toString());
      };
      ff(['-f', 'lavfi', '-i', 'sine=duration=1', '-c:a', 'flac', path.join(dir, 'plain.flac')]);
      ff([
        '-i',
        path.join(dir, 'plain.flac'),
        '-i',
        corpus('images/photos/gps-tagged-samsung.jpg'),
        '-map',
        '0',
        '-map',
        '1',
        '-c',
        'copy',
        '-disposition:v',
        'attached_pic',
        track,
      ]);
      const stored = await upload(t, track, 'privacy-user', 'audio');
      const file = (await waitForFile(t, stored.id)) as unknown as FileJson;
      expect(file.cover?.variants.length).toBe(7);
      for (const url of file.cover!.variants) {
        for (const base of [t.url, nginx.url]) {
          const res = await fetch(url.replace(t.url, base));
          expect(res.status).toBe(200);
          expect(leaks(await exif(Buffer.from(await res.arrayBuffer())))).toEqual([]);
        }
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  async function purposesFile(purposes: Record<string, unknown>): Promise<string> {
    const file = path.join(purposesDir!, 'purposes.json');
    await writeFile(file, JSON.stringify(purposes));
    return file;
  }
});

describe('lossless metadata stripping', () => {
  const gpsExif = { IFD0: { Make: 'Phone', Model: 'X1', Copyright: 'me' }, IFD3: { GPSLatitudeRef: 'N', GPSLatitude: '51/1 30/1 0/1' } };

  for (const format of ['png', 'webp'] as const) {
    it(`${format}: drops EXIF and XMP, keeps the pixels and an Orientation-only EXIF`, async () => {
      const base = sharp({ create: { width: 40, height: 20, channels: 3, background: { r: 200, g: 30, b: 90 } } });
      const tagged = await base
        .withExif(gpsExif)
        .withExifMerge({ IFD0: { Orientation: '6' } })
        .withXmp(
          '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="51,30.0N"/></rdf:RDF></x:xmpmeta>',
        )
        [format](format === 'webp' ? { lossless: true } : {})
        .toBuffer();
      expect(leaks(await exif(tagged)).length).toBeGreaterThan(0);
      const cleaned = stripLosslessly(format, tagged, 6)!;
      const tags = await exif(cleaned);
      expect(leaks(tags)).toEqual([]);
      expect(tags['IFD0:Orientation']).toBe(6);
      expect((await sharp(cleaned).raw().toBuffer()).equals(await sharp(tagged).raw().toBuffer())).toBe(true);
    });
  }

  it('jpeg: an orientation other than 1 is kept, so the original still displays upright', async () => {
    const tagged = await sharp({ create: { width: 30, height: 10, channels: 3, background: '#336699' } })
      .withExif(gpsExif)
      .withExifMerge({ IFD0: { Orientation: '8' } })
      .jpeg()
      .toBuffer();
    const cleaned = stripLosslessly('jpeg', tagged, 8)!;
    const tags = await exif(cleaned);
    expect(leaks(tags)).toEqual([]);
    expect(tags['IFD0:Orientation']).toBe(8);
    expect((await sharp(cleaned).metadata()).orientation).toBe(8);
    expect(orientationOnlyTiff(8).length).toBe(26);
  });

  it('jpeg: data appended after the image (MPF depth maps with their own EXIF) is dropped', async () => {
    const jpeg = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#000' } })
      .jpeg()
      .toBuffer();
    const second = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#fff' } })
      .withExif(gpsExif)
      .jpeg()
      .toBuffer();
    const cleaned = stripLosslessly('jpeg', Buffer.concat([jpeg, second]), 1)!;
    expect(cleaned.length).toBe(jpeg.length);
  });
});
