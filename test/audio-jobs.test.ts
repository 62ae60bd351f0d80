import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChipmunk } from '../src/chipmunk.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { silentLogger } from '../src/log.js';
import { withDatabase } from './helpers/backend-sql.js';
import { backends, hasFolder, readBlob } from './helpers/backends.js';
import { corpus, type TestChipmunk } from './helpers/chipmunk.js';
import { decodedSamples, generateTrack, waitForFile, type AudioFileJson } from './helpers/audio.js';
import { tusUpload } from './helpers/tus.js';

// Background audio jobs: restarts, deletes mid-job, the concurrency bound, running without ffmpeg.

let scratch: string;
let longTrack: string;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'chipmunk-audio-jobs-'));
  longTrack = path.join(scratch, 'three-minutes.flac');
  generateTrack(longTrack, 180);
});
afterAll(() => rm(scratch, { recursive: true, force: true }));

/** A stored blob copied out (through the server's BlobStorage) for ffmpeg, which reads files. */
async function storedCopy(t: TestChipmunk, id: string, name: string): Promise<string> {
  const copy = path.join(scratch, `${id}-${name}`);
  await writeFile(copy, await readBlob(t, id, name));
  return copy;
}

async function uploadTo(t: TestChipmunk, userId: string, file: string): Promise<AudioFileJson> {
  const token = await t.uploadToken(userId, 'audio');
  const result = await tusUpload(`${t.url}/uploads`, await readFile(file), { token, metadata: { filename: path.basename(file) } });
  if (!result.ok) throw result.error;
  return result.body as AudioFileJson;
}

describe.each(backends)('audio jobs: $name', (backend) => {
  it('a restart in the middle of a job finishes it', async () => {
    // A shutdown deadline too short for the job to finish, so the stop lands mid-job.
    const first = await backend.start({ CHIPMUNK_SHUTDOWN_TIMEOUT: '0.05' });
    let second: TestChipmunk | undefined;
    try {
      const uploaded = await uploadTo(first, 'ringo', longTrack);
      expect(uploaded.status).toBe('processing');
      // Wait until the job really runs (ffmpeg started), then stop the process under it.
      await until(async () => (await first.chipmunk.inspect.jobs(uploaded.id)).find((j) => j.type === 'audio.derive')?.state === 'running');
      await first.stop();

      const scratchDir = await withDatabase(first, async (query) => {
        const afterStop = await query<{ state: string; attempts: number }>("select state, attempts from jobs where file_id = ? and type = 'audio.derive'", [
          uploaded.id,
        ]);
        // A clean stop puts the job back in the queue without counting the attempt…
        expect(afterStop).toEqual([{ state: 'queued', attempts: 0 }]);
        expect(await query('select status from files where id = ?', [uploaded.id])).toEqual([{ status: 'processing' }]);
        // …and a crash would have left it 'running' with half-written outputs in the scratch folder: do that.
        await query("update jobs set state = 'running', attempts = 1 where file_id = ? and type = 'audio.derive'", [uploaded.id]);
        const dir = await first.chipmunk.storage.workspace(uploaded.id);
        await writeFile(path.join(dir, '1.webm'), 'half a rendition');
        return dir;
      });

      second = await backend.restart(first);
      const done = await waitForFile(second, uploaded.id, 120_000);
      expect(done.status).toBe('ready');
      expect(done.variants.map((v) => v.n)).toEqual([0, 1, 2, 'waveform']);
      await second.chipmunk.jobs.idle();
      const jobs = (await second.chipmunk.inspect.jobs(uploaded.id)).filter((j) => j.type === 'audio.derive');
      expect(jobs.map((j) => [j.state, j.attempts])).toEqual([['done', 2]]);
      expect(existsSync(scratchDir)).toBe(false);
      // Asked before the decodes below: they block this process for seconds, long enough for the server to
      // close the client's idle keep-alive socket just as it is reused (ECONNRESET).
      const user = (await (await second.api('/v1/users/ringo')).json()) as { usedBytes: number };
      expect(user.usedBytes).toBe(done.totalBytes);
      // A long track keeps its exact length through the restart (±1%, no special allowance needed).
      const source = decodedSamples(longTrack);
      for (const name of ['1.webm', '2.m4a']) {
        expect(Math.abs(decodedSamples(await storedCopy(second, uploaded.id, name)) - source)).toBeLessThanOrEqual(source * 0.01);
      }
    } finally {
      await (second ?? first).close();
    }
  });

  it('a job whose process keeps stopping ends failed, not stuck', async () => {
    const first = await backend.start({ FFMPEG_PATH: 'off' });
    let second: TestChipmunk | undefined;
    try {
      const uploaded = await uploadTo(first, 'paul', corpus('audio/ok/opus-cover.opus'));
      await waitForFile(first, uploaded.id);
      await first.stop();
      // As if three processes in a row had died during this job.
      await withDatabase(first, async (query) => {
        await query("update files set status = 'processing' where id = ?", [uploaded.id]);
        await query("update jobs set state = 'running', attempts = 3 where file_id = ? and type = 'audio.derive'", [uploaded.id]);
      });
      second = await backend.restart(first, { FFMPEG_PATH: 'off' });
      const file = await waitForFile(second, uploaded.id);
      expect(file.status).toBe('failed');
      expect(file.error).toMatch(/interrupted 3 times/);
      expect(await second.chipmunk.inspect.unfinishedJobs()).toEqual([]);
    } finally {
      await (second ?? first).close();
    }
  });

  it('deleting a track while its job runs leaves no folder and no charge', async () => {
    const t = await backend.start();
    try {
      const token = await t.uploadToken('george', 'audio');
      const result = await tusUpload(`${t.url}/uploads`, await readFile(longTrack), { token, metadata: { filename: 'long.flac' } });
      if (!result.ok) throw result.error;
      const id = (result.body as AudioFileJson).id;
      await until(async () => (await t.chipmunk.inspect.jobs(id)).some((j) => j.type === 'audio.derive' && j.state === 'running'));
      expect((await t.api(`/v1/files/${id}`, { method: 'DELETE' })).status).toBe(204);
      await t.chipmunk.jobs.idle();
      expect(await hasFolder(t, id)).toBe(false);
      expect(await t.chipmunk.storage.listWorkspaces()).not.toContain(id);
      const user = (await (await t.api('/v1/users/george')).json()) as { usedBytes: number; fileCount: number };
      expect(user).toMatchObject({ usedBytes: 0, fileCount: 0 });
    } finally {
      await t.close();
    }
  });

  it('runs a bounded number of jobs at once', async () => {
    // CHIPMUNK_CONCURRENCY=2 → one audio job at a time (each runs two ffmpeg processes).
    const t = await backend.start({ CHIPMUNK_CONCURRENCY: '2' });
    let most = 0;
    const sampler = setInterval(() => (most = Math.max(most, t.chipmunk.jobs.active)), 5);
    try {
      const token = await t.uploadToken('john', 'audio');
      const data = await readFile(corpus('audio/ok/flac-vorbis-picture.flac'));
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const result = await tusUpload(`${t.url}/uploads`, data, { token, metadata: { filename: `take-${i}.flac` } });
        if (!result.ok) throw result.error;
        ids.push((result.body as AudioFileJson).id);
      }
      for (const id of ids) expect((await waitForFile(t, id)).status).toBe('ready');
      expect(most).toBe(1);
    } finally {
      clearInterval(sampler);
      await t.close();
    }
  });
});

describe.each(backends)('without ffmpeg: $name', (backend) => {
  let t: TestChipmunk;
  beforeAll(async () => {
    t = await backend.start({ FFMPEG_PATH: 'off' });
  });
  afterAll(() => t?.close());

  it('stores tracks with their metadata and says renditions are unavailable', async () => {
    expect(t.chipmunk.mediaTools.ffmpeg).toBeNull();
    const token = await t.uploadToken('yoko', 'audio');
    const plain = await tusUpload(`${t.url}/uploads`, await readFile(corpus('audio/ok/mp3-id3v23-nocover.mp3')), { token });
    if (!plain.ok) throw plain.error;
    // Nothing to make in the background: ready at once.
    expect(plain.body).toMatchObject({ status: 'ready', title: 'Silence', durationMs: 3709, renditions: { available: false } });
    expect((plain.body as AudioFileJson).variants.map((v) => v.n)).toEqual([0]);

    const withCover = await tusUpload(`${t.url}/uploads`, await readFile(corpus('audio/ok/flac-vorbis-picture.flac')), { token });
    if (!withCover.ok) throw withCover.error;
    const file = await waitForFile(t, (withCover.body as AudioFileJson).id);
    // The cover ladder needs no ffmpeg.
    expect(file).toMatchObject({ status: 'ready', renditions: { available: false } });
    expect(file.variants.map((v) => v.n)).toEqual([0]);
    expect(file.cover?.variants).toHaveLength((await t.chipmunk.inspect.variants(file.id)).filter((v) => v.name.startsWith('cover-')).length);
    expect(file.cover?.variants.length).toBeGreaterThanOrEqual(1);
  });
});

// A setting checked before any backend opens: one run is enough.
describe('FFMPEG_PATH', () => {
  it('a wrong FFMPEG_PATH stops the start with a sentence naming the variable', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'chipmunk-ffmpeg-path-'));
    try {
      const config = loadConfig({ CHIPMUNK_DATA_DIR: dataDir, FFMPEG_PATH: path.join(dataDir, 'no-such-ffmpeg') });
      expect(() => createChipmunk(config, { logger: silentLogger })).toThrow(ConfigError);
      expect(() => createChipmunk(config, { logger: silentLogger })).toThrow(/FFMPEG_PATH/);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

async function until(condition: () => boolean | Promise<boolean>, boundMs = 30_000): Promise<void> {
  const end = Date.now() + boundMs;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
