import { readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { SignJWT } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { backends, serverEnvironmentOn, type Backend } from './helpers/backends.js';
import { corpus } from './helpers/chipmunk.js';
import { isAlive as alive, spawnServer, type ServerProcess } from './helpers/server-process.js';
import { whatIsLeft } from './helpers/stores.js';
import { tusUpload, type TusResult } from './helpers/tus.js';

// Media work against the real server process (dist/): hostile or oversized files are refused with a
// 4xx while the server's own memory stays small and no child is left behind; the media children sit
// outside the server's process group (a group SIGTERM does not turn a good photo into a 422) and die
// with the server (kill -9 leaves no orphan ffmpeg or worker).

const drops: Array<() => Promise<void>> = [];
const servers: ServerProcess[] = [];
afterAll(async () => {
  for (const s of servers) if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
  for (const drop of drops) await drop();
});

async function start(backend: Backend, name: string, extra: Record<string, string>, opts: { detached?: boolean } = {}) {
  const { env, drop } = await serverEnvironmentOn(backend, name, extra);
  drops.push(drop);
  const server = await spawnServer(env, opts);
  servers.push(server);
  const token = (userId: string, purpose: string) =>
    new SignJWT({ purpose })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(userId)
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode(env.CHIPMUNK_SECRET));
  const user = async (userId: string) =>
    (await (await fetch(`${server.url}/v1/users/${userId}`, { headers: { Authorization: `Bearer ${env.CHIPMUNK_API_KEY}` } })).json()) as Record<
      string,
      number
    >;
  return { server, env, token, user };
}

/** Pids whose parent is `pid`. */
function childrenOf(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((tid) =>
      readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number),
    );
  } catch {
    return [];
  }
}
const cmdline = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
};
const rssBytes = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;

/** Runs `work` while sampling the server's RSS every 20 ms; returns its result and the highest RSS seen. */
async function watchingRss<T>(pid: number, work: () => Promise<T>): Promise<{ result: T; maxRss: number }> {
  let maxRss = rssBytes(pid);
  const timer = setInterval(() => (maxRss = Math.max(maxRss, rssBytes(pid))), 20);
  try {
    return { result: await work(), maxRss: Math.max(maxRss, rssBytes(pid)) };
  } finally {
    clearInterval(timer);
  }
}

/** An M4A whose moov holds `depth` nested udta boxes: 8 bytes each, 4 MB for half a million. */
function deeplyNestedM4a(depth: number): Buffer {
  const ftyp = Buffer.alloc(24);
  ftyp.writeUInt32BE(24, 0);
  ftyp.write('ftypM4A ', 4, 'latin1');
  ftyp.write('M4A isom', 16, 'latin1');
  const boxes = Buffer.alloc(8 * (depth + 1));
  for (let i = 0; i <= depth; i++) {
    boxes.writeUInt32BE(8 * (depth + 1 - i), 8 * i);
    boxes.write(i === 0 ? 'moov' : 'udta', 8 * i + 4, 'latin1');
  }
  return Buffer.concat([ftyp, boxes]);
}

/** A mono 16-bit PCM WAV of `seconds` of a 440 Hz tone at `rate` Hz. */
function toneWav(seconds: number, rate = 8000): Buffer {
  const samples = Math.round(seconds * rate);
  const wav = Buffer.alloc(44 + samples * 2);
  wav.write('RIFF', 0);
  wav.writeUInt32LE(36 + samples * 2, 4);
  wav.write('WAVEfmt ', 8);
  wav.writeUInt32LE(16, 16);
  wav.writeUInt16LE(1, 20);
  wav.writeUInt16LE(1, 22);
  wav.writeUInt32LE(rate, 24);
  wav.writeUInt32LE(rate * 2, 28);
  wav.writeUInt16LE(2, 32);
  wav.writeUInt16LE(16, 34);
  wav.write('data', 36);
  wav.writeUInt32LE(samples * 2, 40);
  for (let i = 0; i < samples; i++) wav.writeInt16LE(Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / rate)), 44 + i * 2);
  return wav;
}

const errorOf = (r: TusResult) => (r.ok ? undefined : (JSON.parse(r.body ?? '{}') as { error?: { code: string; message: string } }).error);
const MB = 1_000_000;

describe.each(backends)('bounded media work on the real server ($name)', (backend) => {
  it('refuses a crafted deeply-nested M4A, an animation over the frame limit and a track over the duration limit with 4xx, the server under 300 MB, nothing left behind', async () => {
    // A small memory cap and time limit for each child, so the crafted file meets one of them quickly
    // even when the whole suite loads the machine.
    const { server, env, token, user } = await start(backend, 'bounds', {
      CHIPMUNK_MAX_FRAMES: '10',
      CHIPMUNK_MAX_DURATION: '5',
      CHIPMUNK_MEDIA_MEMORY: String(300 * MB),
      CHIPMUNK_MEDIA_TIMEOUT: '20',
      CHIPMUNK_CONCURRENCY: '1',
    });
    const pid = server.proc.pid!;
    const endpoint = `${server.url}/uploads`;

    const nested = deeplyNestedM4a(500_000);
    expect(nested.length).toBeGreaterThan(3.9 * MB);
    const crafted = await watchingRss(pid, async () =>
      tusUpload(endpoint, nested, { token: await token('mallory', 'audio'), metadata: { filename: 'deep.m4a', filetype: 'audio/mp4' } }),
    );
    expect(crafted.result).toMatchObject({ ok: false, status: 422 });
    expect(errorOf(crafted.result)).toMatchObject({
      code: 'UNPROCESSABLE_MEDIA',
      message: expect.stringMatching(/tags needs more than the 300 MB of memory|tags took longer than 20 s/),
    });
    expect(crafted.maxRss).toBeLessThan(300 * 1024 * 1024);

    const gif = await readFile(corpus('images/formats/anim-rotating-squares.gif')); // 30 frames
    const animation = await watchingRss(pid, async () =>
      tusUpload(endpoint, gif, { token: await token('mallory', 'image'), metadata: { filename: 'long.gif', filetype: 'image/gif' } }),
    );
    expect(animation.result).toMatchObject({ ok: false, status: 413 });
    expect(errorOf(animation.result)).toEqual({
      code: 'FILE_TOO_LARGE',
      message: 'The animation has 30 frames; at most 10 are accepted. Shorten it and upload again.',
    });
    expect(animation.maxRss).toBeLessThan(300 * 1024 * 1024);

    const long = await watchingRss(pid, async () =>
      tusUpload(endpoint, toneWav(12), { token: await token('mallory', 'audio'), metadata: { filename: 'long.wav', filetype: 'audio/wav' } }),
    );
    expect(long.result).toMatchObject({ ok: false, status: 413 });
    expect(errorOf(long.result)).toEqual({
      code: 'FILE_TOO_LARGE',
      message: 'The track is 0:12 long; at most 0:05 are accepted. Shorten it and upload again.',
    });
    expect(long.maxRss).toBeLessThan(300 * 1024 * 1024);

    expect(await user('mallory')).toMatchObject({ usedBytes: 0, reservedBytes: 0, fileCount: 0 });
    // No parser or ffmpeg outlives its request; what stays is the pool's one image worker.
    const left = childrenOf(pid).map(cmdline);
    expect(left.filter((c) => !c.includes('image-worker'))).toEqual([]);
    expect(left.length).toBeLessThanOrEqual(1);
    // Nor any byte of the refused files, in the data directory or the bucket: no folder, no upload,
    // no received copy, no scratch space, no reservation.
    server.proc.kill('SIGTERM');
    expect(await server.exited).toEqual({ code: 0, signal: null });
    expect(await whatIsLeft(env)).toEqual({ folders: [], uploads: [], received: [], workspaces: [], reservations: { count: 0, bytes: 0 } });
  }, 180_000);

  it('a SIGTERM to the whole process group while a photo is processing does not refuse the photo', async () => {
    const { server, token } = await start(
      backend,
      'group-term',
      { CHIPMUNK_SHUTDOWN_TIMEOUT: '60', CHIPMUNK_CONCURRENCY: '1', CHIPMUNK_LOG_LEVEL: 'info' },
      { detached: true },
    );
    const pid = server.proc.pid!;
    // A first photo starts the image worker, so the second one's processing begins at its last byte.
    const warm = await tusUpload(`${server.url}/uploads`, await readFile(corpus('images/photos/portrait-canal.jpg')), { token: await token('zoe', 'image') });
    expect(warm.ok).toBe(true);
    const worker = childrenOf(pid).find((c) => cmdline(c).includes('image-worker'));
    expect(worker).toBeGreaterThan(0);

    const photo = await readFile(corpus('images/photos/landscape-leaf-jolla-8mp.jpg'));
    let signalled = false;
    const result = await tusUpload(`${server.url}/uploads`, photo, {
      token: await token('zoe', 'image'),
      onProgress: (sent, total) => {
        if (sent < total || signalled) return;
        signalled = true;
        // What systemd's KillMode=control-group and `kill -TERM -<pgid>` do: the whole group at once.
        setTimeout(() => process.kill(-pid, 'SIGTERM'), 50);
      },
    });
    expect(signalled).toBe(true);
    expect(result.status).not.toBe(422);
    expect(result, server.output()).toMatchObject({ ok: true, body: { status: expect.stringMatching(/^(ready|processing)$/) } });
    expect(await server.exited).toEqual({ code: 0, signal: null });
    expect(alive(worker!)).toBe(false);
  });

  it('kill -9 of the server leaves no orphan ffmpeg or image worker', async () => {
    const { server, token } = await start(backend, 'orphans', { CHIPMUNK_CONCURRENCY: '2' });
    const pid = server.proc.pid!;
    const photo = await tusUpload(`${server.url}/uploads`, await readFile(corpus('images/photos/portrait-canal.jpg')), { token: await token('ann', 'image') });
    expect(photo.ok).toBe(true);
    // Twenty minutes of tone: its renditions keep ffmpeg busy for a while after the answer.
    const track = await tusUpload(`${server.url}/uploads`, toneWav(20 * 60), {
      token: await token('ann', 'audio'),
      metadata: { filename: 'tone.wav', filetype: 'audio/wav' },
    });
    expect(track.ok).toBe(true);
    let ffmpegs: number[] = [];
    await expect
      .poll(
        () => {
          ffmpegs = childrenOf(pid).filter((c) => cmdline(c).includes('ffmpeg'));
          return ffmpegs.length;
        },
        { timeout: 30_000, interval: 20 },
      )
      .toBeGreaterThan(0);
    const children = childrenOf(pid);
    expect(children.some((c) => cmdline(c).includes('image-worker'))).toBe(true);
    server.proc.kill('SIGKILL');
    await server.exited;
    await expect.poll(() => children.filter(alive), { timeout: 10_000, interval: 50 }).toEqual([]);
  });
});
