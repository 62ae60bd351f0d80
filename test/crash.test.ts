import { createHash, randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { SignJWT } from 'jose';
import { Upload } from 'tus-js-client';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import type { FileRow } from '../src/db/schema.js';
import { stripLosslessly } from '../src/media/metadata.js';
import { backends, serverEnvironmentOn } from './helpers/backends.js';
import { corpus } from './helpers/chipmunk.js';
import { runCli, spawnServer, type ServerProcess } from './helpers/server-process.js';
import { openStores } from './helpers/stores.js';

// The crash test: the real server as a child process, concurrent tus uploads and deletes, and a
// kill -9 at a random moment of each round, then a restart on the same data. At the end the data
// must be exactly consistent: fsck clean, usage = the files' totals, no reservation, and every
// upload the client saw succeed byte-identical in storage. On both backends: the data directory,
// and PostgreSQL with the bucket (where every restart also reconnects and re-checks the migrations).

const ROUNDS = Number(process.env.CRASH_ROUNDS ?? 22);
const USERS = ['ana', 'ben', 'cyd'];
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

// Every random choice (sizes, users, chunk sizes, which file to delete, the waits and the kill
// moments) comes from one seeded generator, so a failure can be replayed with the seed it prints:
// CHIPMUNK_CRASH_SEED=<seed> npm run test:crash. (The server's own timing still varies between runs.)
const SEED = Number(process.env.CHIPMUNK_CRASH_SEED ?? randomInt(2 ** 31));
const random = mulberry32(SEED);
const rand = (min: number, max: number) => min + Math.floor(random() * (max - min));
/** n seeded bytes (the uploads' unique tails). */
const seededBytes = (n: number) => {
  const bytes = Buffer.alloc(n);
  for (let i = 0; i < n; i++) bytes[i] = Math.floor(random() * 256);
  return bytes;
};

/** A small, fast 32-bit PRNG; plenty for choosing test inputs. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What Chipmunk stores of an upload (the JPEG without its metadata and trailing bytes: src/media/metadata.ts). */
const stored = (data: Buffer) => stripLosslessly('jpeg', data, 1)!;

let base: Buffer;
beforeAll(async () => {
  base = await readFile(corpus('images/photos/portrait-canal.jpg'));
});

// How long a round runs before its kill. An upload to the bucket takes about three times as long as to
// the data directory (S3 round trips for each chunk and each variant), so rounds run longer there:
// with the embedded window almost no upload and no delete completed mid-round on the distributed pair.
const killWindowMs = { embedded: [150, 1_500], distributed: [500, 4_000] } as const;

type Pending = { url: string; data: Buffer; userId: string; chunkSize: number };

describe.each(backends)('crash safety ($name)', (backend) => {
  let dataDir: string;
  let env: Record<string, string>;
  let drop: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    ({ dataDir, env, drop } = await serverEnvironmentOn(backend, 'crash', {
      CHIPMUNK_SHUTDOWN_TIMEOUT: '10',
      // Uploads whose creation answer a kill swallowed are dead (the client has no URL to resume):
      // a short expiry lets the sweep release them within the test.
      CHIPMUNK_UPLOAD_EXPIRY: '12',
      CHIPMUNK_EXPIRY_INTERVAL: '1',
    }));
  }, 120_000);
  afterAll(() => drop?.());

  it(`survives ${ROUNDS} kill -9 at random moments with uploads and deletes in flight`, async () => {
    console.log(`crash test (${backend.name}) seed ${SEED} (replay: CHIPMUNK_CRASH_SEED=${SEED} npm run test:crash)`);
    onTestFailed(() => console.error(`crash test (${backend.name}) failed with seed ${SEED}: replay with CHIPMUNK_CRASH_SEED=${SEED} npm run test:crash`));
    const key = new TextEncoder().encode(env.CHIPMUNK_SECRET);
    const tokens = new Map<string, string>();
    for (const u of USERS) {
      tokens.set(u, await new SignJWT({ purpose: 'image' }).setProtectedHeader({ alg: 'HS256' }).setSubject(u).setExpirationTime('2h').sign(key));
    }
    const api = (url: string, p: string, init: RequestInit = {}) =>
      fetch(`${url}${p}`, { ...init, headers: { authorization: `Bearer ${env.CHIPMUNK_API_KEY}` } });

    const succeeded = new Map<string, { sha: string; userId: string; bytes: number }>();
    const deleted = new Set<string>();
    const maybeDeleted = new Set<string>();
    let pending: Pending[] = [];
    let kills = 0;
    let refusedAfterRestart = 0;

    const upload = (url: string, data: Buffer, userId: string, chunkSize: number, uploadUrl?: string) =>
      new Promise<{ ok: true; id: string } | { ok: false; url: string | null; status?: number }>((resolve) => {
        const u: Upload = new Upload(data, {
          endpoint: `${url}/uploads`,
          uploadUrl,
          chunkSize,
          retryDelays: [],
          headers: { Authorization: `Bearer ${tokens.get(userId)}` },
          metadata: { filename: 'crash.jpg' },
          onSuccess: (payload) => {
            const body = payload.lastResponse.getBody();
            // A resume whose final answer a kill swallowed: HEAD says every byte is there and names the
            // file it became (no second upload).
            if (!body) {
              const id = payload.lastResponse.getHeader('Chipmunk-File-Id');
              return resolve(id ? { ok: true, id } : { ok: false, url: u.url });
            }
            resolve({ ok: true, id: (JSON.parse(body) as { id: string }).id });
          },
          onError: (err) => resolve({ ok: false, url: u.url, status: (err as { originalResponse?: { getStatus(): number } }).originalResponse?.getStatus() }),
        });
        u.start();
      });

    const record = (res: Awaited<ReturnType<typeof upload>>, p: Pending) => {
      if (res.ok) succeeded.set(res.id, { sha: sha256(stored(p.data)), userId: p.userId, bytes: p.data.length });
      else if (res.status !== undefined && res.status >= 400 && res.status < 500) refusedAfterRestart++;
      else if (res.url) pending.push({ ...p, url: res.url });
    };

    const newData = () => Buffer.concat([base, seededBytes(random() < 0.5 ? rand(1_000, 60_000) : rand(200_000, 700_000))]);

    async function round(server: ServerProcess, stop: { now: boolean }) {
      const uploader = async () => {
        while (!stop.now) {
          const userId = USERS[rand(0, USERS.length)]!;
          const data = newData();
          const chunkSize = rand(32_000, 200_000);
          record(await upload(server.url, data, userId, chunkSize), { url: '', data, userId, chunkSize });
        }
      };
      const resumer = async () => {
        while (!stop.now && pending.length) {
          const p = pending.shift()!;
          record(await upload(server.url, p.data, p.userId, p.chunkSize, p.url), p);
        }
      };
      const deleter = async () => {
        while (!stop.now) {
          const candidates = [...succeeded.keys()].filter((id) => !deleted.has(id) && !maybeDeleted.has(id));
          if (candidates.length < 3) {
            await new Promise((r) => setTimeout(r, 20));
            continue;
          }
          const id = candidates[rand(0, candidates.length)]!;
          try {
            const res = await api(server.url, `/v1/files/${id}`, { method: 'DELETE' });
            if (res.status === 204) deleted.add(id);
            else maybeDeleted.add(id); // a 404 would mean a delete we did not see finished
          } catch {
            maybeDeleted.add(id);
          }
          await new Promise((r) => setTimeout(r, rand(5, 60)));
        }
      };
      await Promise.all([uploader(), uploader(), uploader(), uploader(), resumer(), deleter()]);
    }

    for (let i = 0; i < ROUNDS; i++) {
      const server = await spawnServer(env);
      const stop = { now: false };
      const work = round(server, stop);
      await new Promise((r) => setTimeout(r, rand(killWindowMs[backend.name][0], killWindowMs[backend.name][1])));
      server.proc.kill('SIGKILL');
      const how = await server.exited;
      expect(how.signal).toBe('SIGKILL');
      kills++;
      stop.now = true;
      await work;
    }

    // A last clean run: resume what is left (or give it up), then a graceful stop.
    const server = await spawnServer(env);
    const left = pending;
    pending = [];
    for (const p of left) {
      const res = await upload(server.url, p.data, p.userId, p.chunkSize, p.url);
      if (res.ok) succeeded.set(res.id, { sha: sha256(stored(p.data)), userId: p.userId, bytes: p.data.length });
      else if (res.url && res.status !== 404) await Upload.terminate(res.url, { headers: { Authorization: `Bearer ${tokens.get(p.userId)}` } }).catch(() => {});
    }
    // Dead uploads expire and give their reservations back while the server runs.
    for (const u of USERS) {
      await expect
        .poll(async () => ((await (await api(server.url, `/v1/users/${u}`)).json()) as { reservedBytes: number }).reservedBytes, {
          timeout: 40_000,
          interval: 250,
        })
        .toBe(0);
    }
    server.proc.kill('SIGTERM');
    expect(await server.exited).toEqual({ code: 0, signal: null });
    // SQLite only: closed cleanly, its WAL checkpointed.
    if (backend.name === 'embedded') expect(existsSync(path.join(dataDir, 'chipmunk.db-wal'))).toBe(false);
    // The kills' temporary files (on the bucket, the store's spool of cut PATCHes) went with a later start.
    expect(await readdir(path.join(dataDir, 'tmp'))).toEqual([]);
    expect(kills).toBe(ROUNDS);
    expect(succeeded.size).toBeGreaterThan(ROUNDS);
    // Deletes ran beside the uploads and kills (not only uploads resumed at the end).
    expect(deleted.size + maybeDeleted.size).toBeGreaterThan(0);

    // fsck agrees, through the real command.
    const check = await runCli(['fsck'], env);
    expect(check.stdout).toContain('fsck: clean');
    expect(check.code).toBe(0);

    // The rest through the server's own ports, so it holds on the database and bucket as on the data directory.
    const stores = openStores(env);
    try {
      const rows: FileRow[] = [];
      for (let page = await stores.repo.filesPage('', 500); page.length; page = await stores.repo.filesPage(page.at(-1)!.id, 500)) rows.push(...page);
      const unsettled = rows.filter((f) => ['uploading', 'received', 'deleting'].includes(f.status) || (f.status === 'processing' && f.committedAt === null));
      expect(unsettled.map((f) => `${f.id} ${f.status}`)).toEqual([]);
      // Nothing waits in the received area once every job ended, and no job is left unfinished.
      expect(await stores.received.list()).toEqual([]);
      const jobs = await stores.repo.jobCounts();
      expect({ queued: jobs.queued, running: jobs.running }).toEqual({ queued: 0, running: 0 });
      // Kills interrupt processing but never make it fail: a received upload is never thrown away.
      expect(rows.filter((f) => f.status === 'failed').map((f) => f.id)).toEqual([]);
      // Usage equals the files' totals exactly, no reservation is left.
      const charged = rows.filter((f) => ['processing', 'ready', 'failed'].includes(f.status));
      for (const u of await stores.repo.allUsers()) {
        expect(u.reservedBytes, u.id).toBe(0);
        expect(u.usedBytes, u.id).toBe(charged.filter((f) => f.userId === u.id).reduce((sum, f) => sum + f.totalBytes, 0));
      }
      // Stored bytes are what the database charges.
      for (const row of charged) {
        let stored = 0;
        for (const name of await stores.storage.listNames(row.id)) stored += (await stores.storage.stat(row.id, name))?.size ?? 0;
        expect(stored, row.id).toBe(row.totalBytes);
      }
      // Every upload the client saw succeed is intact, unless the client deleted it.
      let intact = 0;
      for (const [id, s] of succeeded) {
        const file = await stores.repo.getFile(id);
        const original = file && (await stores.repo.getVariant(id, '0'));
        if (deleted.has(id)) {
          expect(file, id).toBeUndefined();
          expect(await stores.storage.listNames(id), id).toEqual([]);
          continue;
        }
        if (maybeDeleted.has(id) && !file) continue;
        expect(original, id).toBeDefined();
        expect(sha256(await stores.readBlob(id, original!.path)), id).toBe(s.sha);
        intact++;
      }
      console.log(
        `crash test (${backend.name}): ${kills} kills, ${succeeded.size} uploads seen succeed (${intact} kept and verified, ${deleted.size} deleted, ${maybeDeleted.size} deletes cut by a kill), ${refusedAfterRestart} resumes refused after a restart`,
      );
      expect(await stores.uploadAreaIds()).toEqual([]);
    } finally {
      await stores.close();
    }
  }, 300_000);
});
