import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, truncate, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { newFileId } from '../src/ids.js';
import { fsck } from '../src/ops/fsck.js';
import { mediaPath } from '../src/storage/local.js';
import { corpus, startChipmunk, storedForm, type TestChipmunk } from './helpers/chipmunk.js';
import { tusUpload } from './helpers/tus.js';
import { creationBudget } from '../src/services/budget.js';

type FileJson = { id: string; totalBytes: number };

const tusHeaders = (token?: string) => ({ 'Tus-Resumable': '1.0.0', ...(token ? { Authorization: `Bearer ${token}` } : {}) });

async function create(t: TestChipmunk, token: string, length: number): Promise<string> {
  const res = await fetch(`${t.url}/uploads`, { method: 'POST', headers: { ...tusHeaders(token), 'Upload-Length': String(length) } });
  if (res.status !== 201) throw new Error(`create: ${res.status} ${await res.text()}`);
  return res.headers.get('location')!.split('/').pop()!;
}

async function patch(t: TestChipmunk, id: string, offset: number, bytes: Buffer): Promise<Response> {
  return fetch(`${t.url}/uploads/${id}`, {
    method: 'PATCH',
    headers: { ...tusHeaders(), 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream' },
    body: new Uint8Array(bytes),
  });
}

/** Builds, in a stopped Chipmunk's data dir, every half-done state a kill -9 can leave. */
async function crashLeftovers() {
  const t = await startChipmunk();
  const media = path.join(t.dataDir, 'media');
  const uploads = path.join(t.dataDir, 'uploads');
  const photo = await readFile(corpus('images/photos/portrait-canal.jpg'));
  const token = await t.uploadToken('rita', 'image');
  const stored: FileJson[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await tusUpload(`${t.url}/uploads`, Buffer.concat([photo, Buffer.from([i])]), { token });
    if (!r.ok) throw r.error;
    stored.push(r.body as FileJson);
  }
  const [kept, deleting, tempHolder] = stored as [FileJson, FileJson, FileJson];
  // A resumable upload: 1000 bytes of a whole photo (a valid image once finished).
  const partial = await create(t, token, photo.length);
  expect((await patch(t, partial, 0, photo.subarray(0, 1000))).status).toBe(204);
  // Killed between the move into its folder and the commit.
  const moved = await create(t, token, photo.length);
  await mkdir(mediaPath(media, moved), { recursive: true });
  await writeFile(mediaPath(media, moved, '0.jpg'), photo);
  await rm(path.join(uploads, moved));
  // Killed after the last byte landed, before completion ran.
  const full = await create(t, token, photo.length);
  await writeFile(path.join(uploads, full), photo);
  // Killed while tus wrote its record.
  const torn = await create(t, token, 3000);
  await truncate(path.join(uploads, `${torn}.json`), 10);
  // Killed after the reservation, before tus created its files.
  const bare = await create(t, token, 4000);
  await rm(path.join(uploads, bare));
  await rm(path.join(uploads, `${bare}.json`));
  // Created, intact, but no byte ever sent: a reservation that costs its client nothing to make again.
  const empty = await create(t, token, 5000);
  // Upload files no row accounts for.
  const orphanUpload = newFileId();
  await writeFile(path.join(uploads, orphanUpload), 'abc');
  await writeFile(path.join(uploads, `${orphanUpload}.json`), '{}');
  // Killed mid-delete: bytes given back, folder still there.
  await t.chipmunk.uow.ports.files.beginDelete(deleting.id);
  // Processing scratch, a temporary blob and a folder with no row.
  await mkdir(path.join(t.dataDir, 'work', newFileId()), { recursive: true });
  const temp = mediaPath(media, tempHolder.id, '1.webp.tmp-0badc0de');
  await writeFile(temp, 'half a variant');
  const old = new Date(Date.now() - 3600_000);
  await utimes(temp, old, old);
  const orphanFolder = newFileId();
  await mkdir(mediaPath(media, orphanFolder), { recursive: true });
  await writeFile(mediaPath(media, orphanFolder, '0.jpg'), photo);
  await t.stop();
  return { t, media, uploads, photo, token, kept, deleting, tempHolder, partial, moved, full, torn, bare, empty, orphanUpload, temp, orphanFolder };
}

describe('start-up recovery', () => {
  it('settles every half-done state a kill leaves, keeps resumable uploads, and fsck then agrees', async () => {
    const s = await crashLeftovers();
    const t = await startChipmunk({}, { dataDir: s.t.dataDir });
    try {
      expect(t.chipmunk.recovery).toEqual({
        uploadsSettled: 4,
        uploadsReceived: 1,
        processingResumed: 1,
        orphanUploads: 1,
        orphanReceived: 0,
        deletesFinished: 1,
        workspaces: 1,
        jobsRequeued: 0,
      });
      for (const id of [s.moved, s.torn, s.bare, s.empty, s.deleting.id]) expect(await t.chipmunk.inspect.file(id), id).toBeUndefined();
      // Every byte of `full` had arrived: a crash after the last byte no longer throws the upload away.
      await t.chipmunk.jobs.idle();
      const full = (await t.chipmunk.inspect.file(s.full))!;
      expect(full.status).toBe('ready');
      expect(await readFile(mediaPath(s.media, s.full, '0.jpg'))).toEqual(await storedForm(s.photo));
      expect(existsSync(mediaPath(s.media, s.moved))).toBe(false);
      expect(existsSync(mediaPath(s.media, s.deleting.id))).toBe(false);
      expect((await readdir(s.uploads)).sort()).toEqual([s.partial, `${s.partial}.json`].sort());
      expect(await readdir(path.join(t.dataDir, 'work'))).toEqual([]);
      expect(await readdir(path.join(t.dataDir, 'received'))).toEqual([]);
      // The background walk removes the old temporary blob and the folder no row accounts for.
      await expect.poll(() => existsSync(s.temp) || existsSync(mediaPath(s.media, s.orphanFolder))).toBe(false);
      expect(existsSync(mediaPath(s.media, s.tempHolder.id, '0.jpg'))).toBe(true);

      const user = (await (await t.api('/v1/users/rita')).json()) as { usedBytes: number; reservedBytes: number; fileCount: number };
      const reservation = s.photo.length + creationBudget('image', s.photo.length);
      expect(user).toMatchObject({ usedBytes: s.kept.totalBytes + s.tempHolder.totalBytes + full.totalBytes, reservedBytes: reservation, fileCount: 3 });
      const report = await t.chipmunk.inspect.fsck();
      expect(report.problems).toEqual([]);
      expect(report.notices.map((n) => n.kind)).toEqual(['upload-in-progress']);

      // The partial upload resumes where it stopped and completes.
      const head = await fetch(`${t.url}/uploads/${s.partial}`, { method: 'HEAD', headers: tusHeaders() });
      expect(head.headers.get('upload-offset')).toBe('1000');
      const rest = s.photo.subarray(1000);
      expect((await patch(t, s.partial, 1000, rest)).status).toBe(200);
      expect(await t.api('/v1/users/rita').then((r) => r.json())).toMatchObject({ reservedBytes: 0, fileCount: 4 });
    } finally {
      await t.close();
    }
  });
});

describe('fsck', () => {
  it('reports each kind of damage, repairs what is safe and says what it did', async () => {
    const s = await crashLeftovers();
    const { createChipmunk } = await import('../src/chipmunk.js');
    const { loadConfig } = await import('../src/config.js');
    const { silentLogger } = await import('../src/log.js');
    // Opened without listening: no recovery runs, fsck sees the raw leftovers.
    const c = createChipmunk(loadConfig({ CHIPMUNK_DATA_DIR: s.t.dataDir }), { logger: silentLogger, defaultMetrics: false });
    try {
      await c.repo.setUserCounters('rita', { usedBytes: 1, reservedBytes: 2 });
      await rm(mediaPath(s.media, s.kept.id, '0.jpg'));
      await writeFile(mediaPath(s.media, s.tempHolder.id, 'stray.bin'), 'x');
      const deps = { repo: c.repo, storage: c.storage, area: c.area, received: c.received };
      const found = await fsck(deps);
      const kinds = found.problems.map((p) => p.kind).sort();
      expect(kinds).toEqual(
        [
          'missing-variant',
          'orphan-folder',
          'orphan-upload',
          'reservation',
          'stale-reservation',
          'stale-reservation',
          'stale-reservation',
          'temp-file',
          'unexpected-file',
          'unfinished-delete',
          'usage',
          'workspace-leftover',
        ].sort(),
      );
      const repaired = await fsck(deps, { repair: true });
      expect(repaired.repaired).toHaveLength(found.problems.filter((p) => p.repairable).length - 1); // usage + reservation: one repair
      expect(repaired.repaired.join('\n')).toMatch(/released the upload .* \(\d+ bytes of reservation\)/);
      const after = await fsck(deps);
      expect(after.problems.map((p) => p.kind)).toEqual(['missing-variant']);
      const rita = (await c.repo.getUser('rita'))!;
      // The partial upload, the complete one (processed at the next start) and the empty one (released
      // at the next start, harmless until then) keep their reservations.
      expect(rita.reservedBytes).toBe(2 * (s.photo.length + creationBudget('image', s.photo.length)) + 5000 + creationBudget('image', 5000));
      expect(rita.usedBytes).toBe(s.kept.totalBytes + s.tempHolder.totalBytes);
    } finally {
      await c.close();
      await rm(s.t.dataDir, { recursive: true, force: true });
    }
  });
});
