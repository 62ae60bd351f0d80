import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Upload } from 'tus-js-client';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createChipmunk } from '../src/chipmunk.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { secretsNotice } from '../src/index.js';
import { silentLogger } from '../src/log.js';
import { createImageWorkerPool } from '../src/media/image-pool.js';
import { sniffFile } from '../src/media/sniff.js';
import { fsckCommand } from '../src/ops/fsck-command.js';
import { corpus, startChipmunk, type TestChipmunk } from './helpers/chipmunk.js';
import { ensureBuilt, runCli, serverEnvironment, spawnServer } from './helpers/server-process.js';
import { tusUpload } from './helpers/tus.js';

// One server per data directory (an OS lock held for its life), private file modes, secrets kept
// out of logs, and error bodies without stacks or paths.

const mode = async (p: string) => (await stat(p)).mode & 0o7777;

describe('one server per data directory', () => {
  let t: TestChipmunk;
  let partialUrl: string;
  const photo = readFileSync(corpus('images/photos/landscape-saw-6mp.jpg'));

  beforeAll(async () => {
    ensureBuilt();
    t = await startChipmunk();
    // An upload in flight on the first server: one chunk in, then the client pauses.
    const token = await t.uploadToken('first', 'image');
    partialUrl = await new Promise<string>((resolve, reject) => {
      const upload: Upload = new Upload(photo, {
        endpoint: `${t.url}/uploads`,
        chunkSize: 200_000,
        retryDelays: [],
        headers: { Authorization: `Bearer ${token}` },
        metadata: { filename: 'first.jpg' },
        onChunkComplete: () => void upload.abort(false).then(() => resolve(upload.url!)),
        onError: reject,
      });
      upload.start();
    });
  }, 180_000);
  afterAll(() => t?.close());

  it('a second server on the same directory refuses to start, and the first keeps working', async () => {
    const scratch = path.join(t.dataDir, 'work', 'a'.repeat(24));
    await mkdir(scratch, { recursive: true });
    const pidBefore = readFileSync(path.join(t.dataDir, 'chipmunk.pid'), 'utf8');

    // In this process (as a test builds one)…
    const second = createChipmunk(loadConfig({ PORT: '0', HOST: '127.0.0.1', CHIPMUNK_DATA_DIR: t.dataDir, CHIPMUNK_INTERNAL_PORT: '0' }), {
      logger: silentLogger,
      defaultMetrics: false,
    });
    await expect(second.listen()).rejects.toThrow(ConfigError);
    await expect(second.listen()).rejects.toThrow(/Another Chipmunk \(pid \d+\) is using the data directory/);
    await second.close();

    // …and as another process, the way a rolling deploy would start it.
    const cli = await runCli([], { PORT: '0', HOST: '127.0.0.1', CHIPMUNK_DATA_DIR: t.dataDir, CHIPMUNK_INTERNAL_PORT: '0', CHIPMUNK_LOG_LEVEL: 'silent' });
    expect(cli.code).toBe(2);
    expect(cli.stderr).toMatch(/Another Chipmunk \(pid \d+\) is using the data directory .*; refusing to start beside it/);

    // The first server's pid file, scratch and upload in flight are untouched; the upload resumes and completes.
    expect(readFileSync(path.join(t.dataDir, 'chipmunk.pid'), 'utf8')).toBe(pidBefore);
    expect(existsSync(scratch)).toBe(true);
    await rm(scratch, { recursive: true });
    const head = await fetch(partialUrl, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
    expect(head.status).toBe(200);
    expect(Number(head.headers.get('upload-offset'))).toBe(200_000);
    const done = await tusUpload(`${t.url}/uploads`, photo, { token: await t.uploadToken('first', 'image'), uploadUrl: partialUrl, chunkSize: 200_000 });
    expect(done.ok).toBe(true);
  });

  it('fsck --repair refuses beside a live server; read-only fsck reports its running job as a notice', async () => {
    const env = { CHIPMUNK_DATA_DIR: t.dataDir };
    const out: string[] = [];
    const errs: string[] = [];
    const stdout = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => (out.push(String(chunk)), true));
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => (errs.push(String(chunk)), true));
    try {
      expect(await fsckCommand(['--repair'], env)).toBe(2);
      expect(errs.join('')).toMatch(/is using .*; stop it before --repair/);

      // A job the live server is running right now.
      const file = (await (await fetch(`${t.url}/v1/users/first/files`, { headers: { authorization: `Bearer ${t.apiKey}` } })).json()) as {
        items?: Array<{ id: string }>;
        files?: Array<{ id: string }>;
      };
      const fileId = (file.items ?? file.files)![0]!.id;
      await t.chipmunk.uow.ports.jobs.enqueue({ type: 'test.running', fileId, userId: 'first' });
      t.chipmunk.db!.$client.prepare("update jobs set state = 'running' where file_id = ? and type = 'test.running'").run(fileId);
      out.length = 0;
      const code = await fsckCommand([], env);
      const report = out.join('');
      expect(report).toMatch(/notice {2}running-job/);
      expect(report).not.toMatch(/PROBLEM unfinished-job/);
      expect(code).toBe(0);
      t.chipmunk.db!.$client.prepare("delete from jobs where type = 'test.running'").run();
    } finally {
      stdout.mockRestore();
      stderr.mockRestore();
    }
  });

  it('the lock dies with its process: after the first stops, the next start takes the directory', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'chipmunk-lock-'));
    const first = await startChipmunk({}, { dataDir });
    await first.stop();
    const next = await startChipmunk({}, { dataDir });
    expect(readFileSync(path.join(dataDir, 'chipmunk.pid'), 'utf8').trim()).toBe(String(process.pid));
    await next.close();
    expect(existsSync(path.join(dataDir, 'chipmunk.pid'))).toBe(false);
  });
});

describe('file modes', () => {
  it('the database, its WAL and unfinished uploads are 0600; the media are group-readable, never world-readable', async () => {
    const t = await startChipmunk();
    try {
      const token = await t.uploadToken('modes', 'image');
      const photo = readFileSync(corpus('images/photos/landscape-saw-6mp.jpg'));
      await new Promise<void>((resolve, reject) => {
        const upload: Upload = new Upload(photo, {
          endpoint: `${t.url}/uploads`,
          chunkSize: 200_000,
          retryDelays: [],
          headers: { Authorization: `Bearer ${token}` },
          metadata: { filename: 'partial.jpg' },
          onChunkComplete: () => void upload.abort(false).then(() => resolve()),
          onError: reject,
        });
        upload.start();
      });
      const done = await tusUpload(`${t.url}/uploads`, readFileSync(corpus('images/photos/portrait-canal.jpg')), { token });
      expect(done.ok).toBe(true);

      for (const name of ['chipmunk.db', 'chipmunk.db-wal', 'chipmunk.db-shm', 'secrets.json'])
        expect(await mode(path.join(t.dataDir, name)), name).toBe(0o600);
      expect(await mode(path.join(t.dataDir, 'uploads'))).toBe(0o700);
      expect(await mode(path.join(t.dataDir, 'work'))).toBe(0o700);
      const uploads = await readdir(path.join(t.dataDir, 'uploads'));
      expect(uploads.length).toBe(2);
      for (const name of uploads) expect(await mode(path.join(t.dataDir, 'uploads', name)), name).toBe(0o600);

      const media = path.join(t.dataDir, 'media');
      const walk = async (dir: string): Promise<string[]> => {
        const found = [dir];
        for (const entry of await readdir(dir, { withFileTypes: true })) {
          const p = path.join(dir, entry.name);
          found.push(...(entry.isDirectory() ? await walk(p) : [p]));
        }
        return found;
      };
      const entries = await walk(media);
      expect(entries.length).toBeGreaterThan(7);
      for (const p of entries) {
        const s = await stat(p);
        expect(s.mode & 0o7777, p).toBe(s.isDirectory() ? 0o750 : 0o640);
        // Shared with nginx's group (nogroup when the tests run as root), else the process's group.
        if (process.getuid?.() === 0) expect(s.gid, p).toBe(65534);
      }
    } finally {
      await t.close();
    }
  });
});

describe('secrets are not written to logs', () => {
  it('a first start not on a terminal says where the secrets are, never their values', async () => {
    const { dataDir, env } = await serverEnvironment('secrets');
    delete (env as Record<string, string | undefined>).CHIPMUNK_API_KEY;
    delete (env as Record<string, string | undefined>).CHIPMUNK_SECRET;
    const server = await spawnServer({ ...env, CHIPMUNK_LOG_LEVEL: 'info' });
    try {
      const secrets = JSON.parse(await readFile(path.join(dataDir, 'secrets.json'), 'utf8')) as { apiKey: string; secret: string };
      await new Promise((r) => setTimeout(r, 200));
      const output = server.output();
      expect(output).toContain(`${dataDir}/secrets.json`);
      expect(output).not.toContain(secrets.apiKey);
      expect(output).not.toContain(secrets.secret);
    } finally {
      server.proc.kill('SIGTERM');
      await server.exited;
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('on a terminal the values are shown once', () => {
    const config = { dataDir: '/srv/chipmunk', apiKey: 'ck_key', secret: 's3cret' };
    expect(secretsNotice(config, true)).toContain('CHIPMUNK_API_KEY=ck_key');
    expect(secretsNotice(config, false)).not.toContain('ck_key');
  });
});

describe('error bodies', () => {
  it('an unexpected failure inside an image worker reaches the caller without its stack or server paths', async () => {
    const pool = createImageWorkerPool({ maxPixels: 50_000_000, maxFrames: 100, concurrency: 1, logger: silentLogger });
    const work = await mkdtemp(path.join(tmpdir(), 'chipmunk-err-'));
    try {
      const sourcePath = corpus('images/photos/portrait-canal.jpg');
      // A workDir that does not exist: the encoder's write fails with a plain (non-AppError) error.
      const err = (await pool
        .process({ fileId: 'err-test', sourcePath, sniffed: (await sniffFile(sourcePath))!, square: false, workDir: path.join(work, 'missing') })
        .catch((e: unknown) => e)) as { code: string; status: number; message: string; toJSON(): unknown };
      expect(err).toMatchObject({ code: 'INTERNAL', status: 500 });
      const body = JSON.stringify(err.toJSON());
      expect(body).not.toMatch(/\/|\bat\s|\.ts|\.js/);
    } finally {
      await pool.close();
      await rm(work, { recursive: true, force: true });
    }
  });
});
