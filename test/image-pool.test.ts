import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { AppError } from '../src/errors.js';
import { createImageWorkerPool } from '../src/media/image-pool.js';
import { sniffFile } from '../src/media/sniff.js';
import { silentLogger } from '../src/log.js';
import { corpus } from './helpers/chipmunk.js';
import { isAlive as alive } from './helpers/server-process.js';

// The worker processes behind image processing: results and refusals cross the process boundary
// intact, a worker that dies fails only the image it held, and close() leaves no process behind.

const work = await mkdtemp(path.join(tmpdir(), 'chipmunk-pool-'));
afterAll(() => rm(work, { recursive: true, force: true }));
let dirs = 0;
const input = async (rel: string) => {
  const sourcePath = corpus(rel);
  const workDir = path.join(work, String(++dirs));
  await mkdir(workDir);
  return { fileId: 'pool-test', sourcePath, sniffed: (await sniffFile(sourcePath))!, square: false, workDir };
};

const processGroup = (pid: number) =>
  Number(
    readFileSync(`/proc/${pid}/stat`, 'utf8')
      .replace(/^.*\) /, '')
      .split(' ')[2],
  );

describe('image worker pool', () => {
  it('makes the ladder in a worker, refuses bad bytes with the processor’s own error, survives a worker’s death and closes clean', async () => {
    const pool = createImageWorkerPool({ maxPixels: 50_000_000, maxFrames: 100, concurrency: 1, logger: silentLogger });
    try {
      const made = await pool.process(await input('images/photos/portrait-canal.jpg'));
      expect(made.variants.map((v) => v.name)).toEqual(['1', '2', '3', '4', '5', '6']);
      expect((await stat(made.variants[5]!.file)).size).toBeGreaterThan(1000);
      expect(made.info).toMatchObject({ thumbhash: expect.any(String) });

      await expect(pool.process(await input('images/hostile/truncated-photo.jpg'))).rejects.toMatchObject({ status: 422, code: 'UNPROCESSABLE_MEDIA' });

      const [first] = pool.pids;
      expect(first).toBeGreaterThan(0);
      // The worker leads its own process group: a signal to the server's group does not reach it.
      expect(processGroup(first!)).toBe(first);
      expect(processGroup(first!)).not.toBe(processGroup(process.pid));
      // Killed from outside, it fails its image as a server-side error (retryable), not as a verdict on the image.
      const dying = pool.process(await input('images/photos/landscape-leaf-jolla-8mp.jpg'));
      process.kill(first!, 'SIGKILL');
      const died = await dying.catch((e: unknown) => e);
      expect(died).toBeInstanceOf(Error);
      expect(died).not.toBeInstanceOf(AppError);
      expect((died as Error).message).toMatch(/stopped before it answered \(killed by SIGKILL\)/);

      const again = await pool.process(await input('images/photos/person-headshot-canon.jpg'));
      expect(again.variants).toHaveLength(6);
      expect(pool.pids).not.toContain(first);
    } finally {
      const pids = pool.pids;
      await pool.close();
      expect(pool.pids).toEqual([]);
      for (const pid of pids) expect(alive(pid)).toBe(false);
    }
  });
  it('kills a worker past the time limit (a 422 naming it) and on abort (the abort reason), and starts a fresh one', async () => {
    const pool = createImageWorkerPool({ maxPixels: 50_000_000, maxFrames: 100, concurrency: 1, logger: silentLogger, timeoutMs: 50 });
    try {
      await expect(pool.process(await input('images/photos/landscape-leaf-jolla-8mp.jpg'))).rejects.toMatchObject({
        status: 422,
        message: expect.stringMatching(/took longer than 0.1 s, the limit for one file/),
      });
      expect(pool.pids).toEqual([]);
    } finally {
      await pool.close();
    }
    const patient = createImageWorkerPool({ maxPixels: 50_000_000, maxFrames: 100, concurrency: 1, logger: silentLogger });
    try {
      const controller = new AbortController();
      const running = patient.process({ ...(await input('images/photos/landscape-leaf-jolla-8mp.jpg')), signal: controller.signal });
      await expect.poll(() => patient.pids.length).toBe(1);
      const [pid] = patient.pids;
      controller.abort(new Error('the file was deleted'));
      await expect(running).rejects.toThrow('the file was deleted');
      expect(alive(pid!)).toBe(false);
      const after = await patient.process(await input('images/photos/portrait-canal.jpg'));
      expect(after.variants).toHaveLength(6);
    } finally {
      await patient.close();
    }
  });
});
