import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { signUploadToken } from '../src/auth/upload-tokens.js';
import { fsckCommand } from '../src/ops/fsck-command.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FileJson } from '../src/routes/schemas.js';
import { creationBudget } from '../src/services/budget.js';
import { corpus, startChipmunk, storedForm, type TestChipmunk } from './helpers/chipmunk.js';
import { createDistributedEnvironment } from './helpers/services.js';
import { tusUpload } from './helpers/tus.js';
import { generateTrack } from './helpers/audio.js';
import { freePort, serverEnvironment, spawnServer } from './helpers/server-process.js';
import { startNginxOver } from './helpers/nginx.js';
import { wavHeader } from './helpers/wav.js';
import pg from 'pg';
import { Upload } from 'tus-js-client';
import { randomBytes } from 'node:crypto';

// Two Chipmunk nodes on one PostgreSQL and one bucket (real PostgreSQL, real Ceph RGW): what one
// node commits, the other serves, deletes, and is told about.

let distributed: Awaited<ReturnType<typeof createDistributedEnvironment>>;
let a: TestChipmunk;
let b: TestChipmunk;
let photo: Buffer;

beforeAll(async () => {
  distributed = await createDistributedEnvironment('two-nodes');
  photo = await storedForm(corpus('images/photos/portrait-canal.jpg'));
  // Started together: the migrations take turns under their advisory lock.
  [a, b] = await Promise.all([startChipmunk(distributed.env), startChipmunk(distributed.env)]);
});
afterAll(async () => {
  await a?.close();
  await b?.close();
  await distributed?.drop();
});

async function upload(node: TestChipmunk, userId: string, data: Buffer = photo): Promise<FileJson> {
  const token = await node.uploadToken(userId, 'image');
  const result = await tusUpload(`${node.url}/uploads`, data, { token, metadata: { filename: 'canal.jpg', filetype: 'image/jpeg' } });
  if (!result.ok) throw result.error;
  return result.body as FileJson;
}

describe('two nodes on PostgreSQL and S3', () => {
  it('one node stores, the other describes and serves every variant byte-identically', async () => {
    const file = await upload(a, 'dora');
    expect(file.status).toBe('ready');
    const seen = (await (await b.api(`/v1/files/${file.id}`)).json()) as FileJson;
    expect(seen.id).toBe(file.id);
    expect(seen.variants.map((v) => v.url)).toEqual(file.variants.map((v) => v.url.replace(a.url, b.url)));
    const original = await fetch(seen.variants[0]!.url);
    expect(original.status).toBe(200);
    expect(Buffer.from(await original.arrayBuffer()).equals(photo)).toBe(true);
    for (const v of seen.variants.slice(1)) expect((await fetch(v.url)).status).toBe(200);
    const user = (await (await b.api('/v1/users/dora')).json()) as { usedBytes: number; fileCount: number };
    expect(user.fileCount).toBe(1);
    expect(user.usedBytes).toBe(file.totalBytes);
  });

  it('a token rotation or a delete on one node closes the link on the other within 5 s', async () => {
    const file = await upload(a, 'rotor');
    const onB = file.variants[3]!.url.replace(a.url, b.url);
    expect((await fetch(onB)).status).toBe(200); // remembered by b's delivery cache now
    expect((await a.api(`/v1/files/${file.id}/rotate-token`, { method: 'POST' })).status).toBe(200);
    await expect.poll(async () => (await fetch(onB)).status, { timeout: 5_000, interval: 100 }).toBe(404);

    const other = await upload(b, 'rotor');
    const onA = other.variants[2]!.url.replace(b.url, a.url);
    expect((await fetch(onA)).status).toBe(200);
    expect((await b.api(`/v1/files/${other.id}`, { method: 'DELETE' })).status).toBe(204);
    await expect.poll(async () => (await fetch(onA)).status, { timeout: 5_000, interval: 100 }).toBe(404);
    expect(((await (await a.api('/v1/users/rotor')).json()) as { usedBytes: number }).usedBytes).toBe(file.totalBytes);
  });

  it('races 50 uploads on two nodes against a quota that holds k reservations: at least k are stored, none past the quota', async () => {
    const small = await readFile(corpus('images/photos/portrait-canal.jpg'));
    const k = 7;
    // Each upload holds its length plus its budget until its commit trues it up (services/budget.ts);
    // the quota holds k such reservations and not k + 1. Commits that land early free room for more.
    const reservation = small.length + creationBudget('image', small.length);
    expect((await a.api('/v1/users/racer', { method: 'PUT', json: { quotaBytes: k * reservation + reservation - 1 } })).status).toBe(200);
    const results = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const node = i % 2 ? a : b;
        const token = await node.uploadToken('racer', 'image');
        return tusUpload(`${node.url}/uploads`, small, { token, metadata: { filename: `r${i}.jpg`, filetype: 'image/jpeg' } });
      }),
    );
    const stored = results.filter((r) => r.ok);
    const refused = results.filter((r) => !r.ok);
    for (const r of refused) expect(r.ok === false && r.status).toBe(413);
    expect(stored.length).toBeGreaterThanOrEqual(k);
    expect(refused.length).toBeGreaterThan(0);
    const user = (await (await b.api('/v1/users/racer')).json()) as { usedBytes: number; reservedBytes: number; quotaBytes: number; fileCount: number };
    expect(user.fileCount).toBe(stored.length);
    expect(user.usedBytes).toBe(stored.reduce((sum, r) => sum + (r.ok ? (r.body as FileJson).totalBytes : 0), 0));
    expect(user.usedBytes).toBeLessThanOrEqual(user.quotaBytes);
    expect(user.reservedBytes).toBe(0);
    const report = await a.chipmunk.inspect.fsck({ live: true });
    expect(report.problems).toEqual([]);
  });

  it('a node starting beside a live one leaves the other node’s fresh uploads alone (no byte yet is not abandoned)', async () => {
    const token = await a.uploadToken('newcomer', 'image');
    const created = await fetch(`${a.url}/uploads`, {
      method: 'POST',
      headers: {
        'Tus-Resumable': '1.0.0',
        'Upload-Length': String(photo.length),
        authorization: `Bearer ${token}`,
        'Upload-Metadata': 'filetype aW1hZ2UvanBlZw==',
      },
    });
    expect(created.status).toBe(201);
    const url = new URL(created.headers.get('location')!, a.url).toString();
    const late = await startChipmunk(distributed.env);
    try {
      expect(late.chipmunk.recovery?.uploadsSettled).toBe(0);
      const head = await fetch(url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
      expect(head.status).toBe(200);
      expect(head.headers.get('upload-offset')).toBe('0');
      const done = await fetch(url, {
        method: 'PATCH',
        headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' },
        body: new Uint8Array(photo),
      });
      expect(done.status).toBe(200);
    } finally {
      await late.close();
    }
  });

  it('chipmunk fsck beside live nodes only reads; --repair is refused while any node is connected', async () => {
    const toolDir = await mkdtemp(path.join(tmpdir(), 'chipmunk-fsck-tool-'));
    try {
      const env = { ...distributed.env, CHIPMUNK_DATA_DIR: toolDir, CHIPMUNK_LOG_LEVEL: 'silent' };
      expect(await fsckCommand([], env)).toBe(0);
      expect(await fsckCommand(['--repair'], env)).toBe(2);
    } finally {
      await rm(toolDir, { recursive: true, force: true });
    }
  });
});

describe('a node that dies', () => {
  let dir: string;
  let track: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'chipmunk-dying-node-'));
    track = path.join(dir, 'three-minutes.flac');
    generateTrack(track, 180);
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('mid-job: the surviving node notices its lease is gone and finishes the job', async () => {
    // Node A is a process of its own, started first, so it is the one that takes the track's job.
    const { dataDir, env } = await serverEnvironment('dying', {
      ...distributed.env,
      CHIPMUNK_COMPLETION_WAIT: '0.1',
    });
    const dying = await spawnServer(env);
    let survivor: TestChipmunk | undefined;
    try {
      const token = await signUploadToken(distributed.env.CHIPMUNK_SECRET!, { userId: 'lazarus', purpose: 'audio', expiresIn: 600 });
      const result = await tusUpload(`${dying.url}/uploads`, await readFile(track), { token: token.token, metadata: { filename: 'long.flac' } });
      if (!result.ok) throw result.error;
      const fileId = (result.body as FileJson).id;
      const jobState = async () => (await a.chipmunk.inspect.jobs(fileId)).find((j) => j.type === 'audio.derive')?.state;
      await expect.poll(jobState, { timeout: 30_000, interval: 50 }).toBe('running');
      // A second node that sweeps for orphaned jobs every second, then the first dies under its job.
      survivor = await startChipmunk({ ...distributed.env, CHIPMUNK_ORPHAN_SWEEP_INTERVAL: '1' });
      dying.proc.kill('SIGKILL');
      await dying.exited;
      await expect.poll(async () => (await (await survivor!.api(`/v1/files/${fileId}`)).json()).status, { timeout: 120_000, interval: 250 }).toBe('ready');
      const file = (await (await survivor.api(`/v1/files/${fileId}`)).json()) as FileJson;
      for (const v of file.variants) expect((await fetch(v.url, { method: 'HEAD' })).status).toBe(200);
      const user = (await (await survivor.api('/v1/users/lazarus')).json()) as { usedBytes: number; reservedBytes: number };
      expect(user).toMatchObject({ usedBytes: file.totalBytes, reservedBytes: 0 });
    } finally {
      dying.proc.kill('SIGKILL');
      await survivor?.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('two nodes behind the rendered nginx', () => {
  it('a tus upload in 5 MB chunks whose node is killed mid-PATCH finishes through the other node, byte-identical', async () => {
    const nodes = await Promise.all(
      ['left', 'right'].map(async (name) => {
        const internalPort = await freePort();
        const { dataDir, env } = await serverEnvironment(name, { ...distributed.env, CHIPMUNK_INTERNAL_PORT: String(internalPort) });
        return { dataDir, env, server: await spawnServer(env), internalUrl: `http://127.0.0.1:${internalPort}` };
      }),
    );
    const nginx = await startNginxOver(
      nodes.map((n) => ({ url: n.server.url, internalUrl: n.internalUrl })),
      { ...distributed.env, CHIPMUNK_DATA_DIR: nodes[0]!.dataDir },
    );
    const admin = new pg.Client({ connectionString: distributed.env.CHIPMUNK_DATABASE_URL });
    await admin.connect();
    try {
      // Not a photo, so the stored original is the bytes sent.
      const data = Buffer.concat([wavHeader(16 * 1024 * 1024), randomBytes(16 * 1024 * 1024)]);
      const token = await signUploadToken(distributed.env.CHIPMUNK_SECRET!, { userId: 'phoenix', purpose: 'audio', expiresIn: 600 });
      let killed: number | undefined;
      const result = await new Promise<{ ok: boolean; body?: FileJson; error?: Error }>((resolve) => {
        const upload = new Upload(data, {
          endpoint: `${nginx.url}/uploads`,
          chunkSize: 5 * 1024 * 1024,
          retryDelays: [100, 500, 1000, 2000, 4000],
          headers: { Authorization: `Bearer ${token.token}` },
          metadata: { filename: 'phoenix.wav' },
          onProgress: (sent) => {
            // Mid-body of the second chunk: the node holding the upload's tus lock is the one receiving it.
            if (killed !== undefined || sent < 7 * 1024 * 1024) return;
            killed = 0;
            void (async () => {
              // The PATCH takes the lock as it starts: asked until it shows.
              for (let i = 0; i < 200; i++) {
                const { rows } = await admin.query<{ name: string }>(
                  "SELECT a.application_name AS name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND a.application_name LIKE 'chipmunk-tus %'",
                );
                const node = nodes.find((n) => rows.some((r) => Number(r.name.split(' ')[1]) === n.server.proc.pid));
                if (node) {
                  killed = node.server.proc.pid;
                  node.server.proc.kill('SIGKILL');
                  return;
                }
                await new Promise((r) => setTimeout(r, 10));
              }
              throw new Error("no node took the upload's lock");
            })().catch((error: Error) => resolve({ ok: false, error }));
          },
          onSuccess: (payload) => resolve({ ok: true, body: JSON.parse(payload.lastResponse.getBody()) as FileJson }),
          onError: (error) => resolve({ ok: false, error }),
        });
        upload.start();
      });
      if (!result.ok) throw result.error;
      expect(killed).toBeGreaterThan(0);
      const survivor = nodes.find((n) => n.server.proc.pid !== killed)!;
      expect(survivor.server.proc.exitCode).toBeNull();
      const file = result.body!;
      const original = await fetch(`${survivor.server.url}/v1/files/${file.id}`, { headers: { authorization: `Bearer ${distributed.env.CHIPMUNK_API_KEY}` } });
      const described = (await original.json()) as FileJson;
      const bytes = Buffer.from(await (await fetch(described.variants[0]!.url.replace(survivor.server.url, nginx.url))).arrayBuffer());
      expect(bytes.length).toBe(data.length);
      expect(bytes.equals(data)).toBe(true);
    } finally {
      await admin.end();
      await nginx.close();
      for (const n of nodes) {
        n.server.proc.kill('SIGKILL');
        await n.server.exited;
        await rm(n.dataDir, { recursive: true, force: true });
      }
    }
  });
});

describe("a killed node's temporary files", () => {
  it('the spool of a PATCH cut by kill -9 is in the node’s own tmp/, and its next start empties it', async () => {
    const { dataDir, env } = await serverEnvironment('spool', distributed.env);
    let server = await spawnServer(env);
    try {
      const token = await signUploadToken(distributed.env.CHIPMUNK_SECRET!, { userId: 'spooler', purpose: 'audio', expiresIn: 600 });
      const tus = { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${token.token}` };
      const length = 16 * 1024 * 1024;
      const created = await fetch(`${server.url}/uploads`, {
        method: 'POST',
        headers: { ...tus, 'Upload-Length': String(length), 'Upload-Metadata': `filename ${Buffer.from('spool.wav').toString('base64')}` },
      });
      expect(created.status).toBe(201);
      // A chunk shorter than a part goes through @tus/s3-store's spool file; half of it is sent, then the node dies.
      const chunk = 2 * 1024 * 1024;
      const req = http.request(new URL(created.headers.get('location')!, server.url), {
        method: 'PATCH',
        headers: { ...tus, 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream', 'Content-Length': String(chunk) },
      });
      req.on('error', () => undefined);
      req.write(Buffer.concat([wavHeader(length - 44), randomBytes(chunk / 2 - 44)]));
      const tmpDir = path.join(dataDir, 'tmp');
      await expect.poll(async () => (await readdir(tmpDir)).length, { timeout: 10_000, interval: 50 }).toBeGreaterThan(0);
      server.proc.kill('SIGKILL');
      await server.exited;
      req.destroy();
      server = await spawnServer(env);
      expect(await readdir(tmpDir)).toEqual([]);
    } finally {
      server.proc.kill('SIGKILL');
      await server.exited;
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
