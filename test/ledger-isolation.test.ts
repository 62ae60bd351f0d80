import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends } from './helpers/backends.js';
import { corpus, type TestChipmunk } from './helpers/chipmunk.js';
import { waitForFile, type AudioFileJson } from './helpers/audio.js';
import { tusUpload } from './helpers/tus.js';

// One user's work moves only that user's counters. The hostile corpus found the opposite: a track's
// renditions landing (the background audio job) charged their bytes to, and released the track's kept
// budget from, every other user with room in their quota (a guard `id = ? AND a OR b` that matched
// other users' rows), so a bystander holding nothing ended with usage it never had and a negative
// reservation. Here a bystander holds a stored photo and an upload in flight while another user's
// track goes through its renditions. On the distributed backend the ledger is PostgreSQL's (its own
// guarded UPDATEs) and the renditions job is claimed from the shared queue.

type Usage = { usedBytes: number; reservedBytes: number; fileCount: number };

describe.each(backends)('$name', (backend) => {
  let t: TestChipmunk;
  beforeAll(async () => {
    t = await backend.start();
  });
  afterAll(() => t?.close());

  const usage = async (userId: string) => (await (await t.api(`/v1/users/${userId}`)).json()) as Usage;
  const filesOf = async (userId: string) =>
    ((await (await t.api(`/v1/users/${userId}/files?limit=100`)).json()) as { files: Array<{ totalBytes: number }> }).files;

  describe('the quota ledger', () => {
    it("a track's renditions charge its owner alone: a bystander's usage and reservation do not move", async () => {
      const photo = await tusUpload(`${t.url}/uploads`, await readFile(corpus('images/photos', 'portrait-canal.jpg')), {
        token: await t.uploadToken('bystander', 'image'),
        metadata: { filename: 'photo.jpg' },
      });
      expect(photo.ok, !photo.ok ? String(photo.error) : '').toBe(true);
      // An upload in flight: created, no byte sent, its reservation held.
      const inFlight = await fetch(`${t.url}/uploads`, {
        method: 'POST',
        headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': '5000', authorization: `Bearer ${await t.uploadToken('bystander', 'image')}` },
      });
      expect(inFlight.status).toBe(201);
      const before = await usage('bystander');
      expect(before.usedBytes).toBeGreaterThan(0);
      expect(before.reservedBytes).toBeGreaterThan(0);

      const sent = await tusUpload(`${t.url}/uploads`, await readFile(corpus('audio/ok', 'mp3-id3v23-nocover.mp3')), {
        token: await t.uploadToken('ringo', 'audio'),
        metadata: { filename: 'track.mp3' },
      });
      if (!sent.ok) throw sent.error;
      const track = sent.body as AudioFileJson;
      // The track commits first and keeps a budget for its renditions, which land in a job of their own.
      expect(track.status).toBe('processing');
      const done = await waitForFile(t, track.id);
      expect(done.status).toBe('ready');
      await t.chipmunk.jobs.idle();

      expect(await usage('bystander')).toEqual(before);
      const owner = await usage('ringo');
      expect(owner.usedBytes).toBe((await filesOf('ringo')).reduce((s, f) => s + f.totalBytes, 0));
      expect(owner.usedBytes).toBe(done.totalBytes);
      expect(owner.reservedBytes).toBe(0);
      const report = await t.chipmunk.inspect.fsck({ live: true });
      expect(report.problems).toEqual([]);
    }, 120_000);
  });
});
