import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { newFileId } from '../src/ids.js';
import { fsck } from '../src/ops/fsck.js';
import { fsckCommand } from '../src/ops/fsck-command.js';
import { creationBudget } from '../src/services/budget.js';
import { sweepExpiredUploads } from '../src/uploads/expiry.js';
import { backends, hasFolder, readBlob, uploadAreaIds, type Backend } from './helpers/backends.js';
import { corpus, storedForm, type TestChipmunk } from './helpers/chipmunk.js';
import { localFile, rawUploadArea } from './helpers/crash-states.js';
import { tusUpload } from './helpers/tus.js';

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

/** Builds, in a stopped Chipmunk's data (its data directory, or its database and bucket), every half-done state a kill -9 can leave. */
async function crashLeftovers(backend: Backend) {
  const t = await backend.start();
  const raw = rawUploadArea(t);
  const storage = t.chipmunk.storage;
  const photo = await readFile(corpus('images/photos/portrait-canal.jpg'));
  const token = await t.uploadToken('rita', 'image');
  const stored: FileJson[] = [];
  for (let i = 0; i < 4; i++) {
    const r = await tusUpload(`${t.url}/uploads`, Buffer.concat([photo, Buffer.from([i])]), { token });
    if (!r.ok) throw r.error;
    stored.push(r.body as FileJson);
  }
  const [kept, deleting, tempHolder, settled] = stored as [FileJson, FileJson, FileJson, FileJson];
  try {
    // A resumable upload: 1000 bytes of a whole photo (a valid image once finished).
    const partial = await create(t, token, photo.length);
    expect((await patch(t, partial, 0, photo.subarray(0, 1000))).status).toBe(204);
    // Killed between the move into its folder and the commit.
    const moved = await create(t, token, photo.length);
    await storage.write(moved, '0.jpg', photo);
    await raw.removeBytes(moved);
    // Killed after the last byte landed, before completion ran.
    const full = await create(t, token, photo.length);
    await raw.landAllBytes(full, photo);
    // Killed after tus made the bytes one whole, before the commitment.
    const completed = await create(t, token, photo.length + 1);
    await raw.landCompleted(completed, Buffer.concat([photo, Buffer.from([9])]));
    // Killed while tus wrote its record.
    const torn = await create(t, token, 3000);
    await raw.tearRecord(torn);
    // Killed after the reservation, before tus created its files.
    const bare = await create(t, token, 4000);
    await t.chipmunk.area.discard(bare);
    // Created, intact, but no byte ever sent: a reservation that costs its client nothing to make again.
    const empty = await create(t, token, 5000);
    // Upload files no row accounts for.
    const orphanUpload = newFileId();
    await raw.plantLeftover(orphanUpload);
    // Received bytes no row accounts for (killed between keeping them and recording it).
    const orphanReceived = newFileId();
    const carrier = await localFile(photo);
    await t.chipmunk.received.take(orphanReceived, carrier.path);
    await carrier.remove();
    // Killed after its processing committed, before its received bytes and its upload files were removed.
    await raw.plantLeftover(settled.id);
    const keptCopy = await localFile(photo);
    await t.chipmunk.received.take(settled.id, keptCopy.path);
    await keptCopy.remove();
    // Killed mid-delete: bytes given back, folder still there.
    await t.chipmunk.uow.ports.files.beginDelete(deleting.id);
    // Processing scratch, a temporary blob and a folder with no row.
    await storage.workspace(newFileId());
    // The S3 upload store's spool of a PATCH cut by the kill, and a folder of its incomplete-part download.
    const tmpDir = path.join(t.dataDir, 'tmp');
    await writeFile(path.join(tmpDir, 'Zk3vQ8aPx1-0'), Buffer.alloc(1000));
    await mkdir(path.join(tmpDir, 'tus-s3-incomplete-part-Zk3vQ8aPx1'));
    const tempName = '1.webp.tmp-0badc0de';
    await storage.write(tempHolder.id, tempName, Buffer.from('half a variant'));
    const orphanFolder = newFileId();
    await storage.write(orphanFolder, '0.jpg', photo);
    await t.stop();
    return {
      t,
      photo,
      token,
      kept,
      deleting,
      tempHolder,
      settled,
      partial,
      moved,
      full,
      completed,
      torn,
      bare,
      empty,
      orphanUpload,
      orphanReceived,
      tempName,
      orphanFolder,
    };
  } finally {
    raw.close();
  }
}

const reservation = (bytes: number) => bytes + creationBudget('image', bytes);
const ids = async (list: Promise<string[]> | string[]) => (await list).sort();

describe.each(backends)('$name', (backend) => {
  const distributed = backend.name === 'distributed';

  describe('start-up recovery', () => {
    it('settles every half-done state a kill leaves that is surely its own, keeps resumable uploads, and fsck then agrees', async () => {
      const s = await crashLeftovers(backend);
      let t = await backend.restart(s.t);
      try {
        const { storage, received } = t.chipmunk;
        // Embedded, the starting process is alone on its data: whatever no live request can own is settled
        // now. Distributed, another live node may be creating the upload with no byte yet, or keeping the
        // bytes it has not recorded yet (src/services/recovery.ts, `shared`): a start-up never releases
        // those on a guess; they are left to the expiry sweeps and to `chipmunk fsck --repair` (checked below).
        // The leftovers of a file past its upload (`settled`, already stored) are nobody's: removed on both.
        expect(t.chipmunk.recovery).toEqual({
          uploadsSettled: distributed ? 0 : 4,
          uploadsReceived: 2,
          processingResumed: 2,
          orphanUploads: distributed ? 1 : 2,
          orphanReceived: distributed ? 1 : 2,
          deletesFinished: 1,
          workspaces: 1,
          temporaryFiles: 2,
          jobsRequeued: 0,
        });
        expect(await readdir(path.join(s.t.dataDir, 'tmp'))).toEqual([]);
        expect(await t.chipmunk.inspect.file(s.deleting.id)).toBeUndefined();
        expect(await hasFolder(t, s.deleting.id)).toBe(false);
        // Every byte of `full` had arrived: a crash after the last byte no longer throws the upload away.
        await t.chipmunk.jobs.idle();
        const full = (await t.chipmunk.inspect.file(s.full))!;
        expect(full.status).toBe('ready');
        expect(await readBlob(t, s.full, '0.jpg')).toEqual(await storedForm(s.photo));
        const completed = (await t.chipmunk.inspect.file(s.completed))!;
        expect(completed.status).toBe('ready');
        expect(await readBlob(t, s.completed, '0.jpg')).toEqual(await storedForm(Buffer.concat([s.photo, Buffer.from([9])])));
        expect(await storage.listWorkspaces()).toEqual([]);
        // The background walk removes the old temporary blob and the folder no row accounts for.
        await expect.poll(async () => (await storage.stat(s.tempHolder.id, s.tempName)) !== undefined || (await hasFolder(t, s.orphanFolder))).toBe(false);
        expect(await storage.stat(s.tempHolder.id, '0.jpg')).toBeDefined();

        const unsettled = [s.moved, s.torn, s.bare, s.empty];
        const rita = () => t.api('/v1/users/rita').then((r) => r.json() as Promise<{ usedBytes: number; reservedBytes: number; fileCount: number }>);
        const used = s.kept.totalBytes + s.tempHolder.totalBytes + s.settled.totalBytes + full.totalBytes + completed.totalBytes;
        if (!distributed) {
          for (const id of unsettled) expect(await t.chipmunk.inspect.file(id), id).toBeUndefined();
          expect(await hasFolder(t, s.moved)).toBe(false);
          expect(await uploadAreaIds(t)).toEqual([s.partial]);
          expect(await received.list()).toEqual([]);
          expect(await rita()).toMatchObject({ usedBytes: used, reservedBytes: reservation(s.photo.length), fileCount: 5 });
          const report = await t.chipmunk.inspect.fsck();
          expect(report.problems).toEqual([]);
          expect(report.notices.map((n) => n.kind)).toEqual(['upload-in-progress']);
        } else {
          for (const id of unsettled) expect((await t.chipmunk.inspect.file(id))?.status, id).toBe('uploading');
          expect(await hasFolder(t, s.moved)).toBe(true);
          // The expiry sweep that runs at start removes what no row records (uploads/expiry.ts,
          // sweepUploadLeftovers: a row precedes tus's first object, so such an object is nobody's).
          await expect.poll(() => ids(uploadAreaIds(t))).toEqual(await ids([s.partial, s.moved, s.torn, s.empty]));
          await expect.poll(() => received.list()).toEqual([]);
          const held = reservation(s.photo.length) * 2 + reservation(3000) + reservation(4000) + reservation(5000);
          expect(await rita()).toMatchObject({ usedBytes: used, reservedBytes: held, fileCount: 5 });
          // Beside a live node fsck only reads, and names what is stuck.
          const report = await t.chipmunk.inspect.fsck({ live: true });
          expect(report.problems.map((p) => `${p.kind} ${p.subject}`).sort()).toEqual([`stale-reservation ${s.torn}`, `stale-reservation ${s.bare}`].sort());
        }

        // The partial upload resumes where it stopped and completes.
        const head = await fetch(`${t.url}/uploads/${s.partial}`, { method: 'HEAD', headers: tusHeaders() });
        expect(head.headers.get('upload-offset')).toBe('1000');
        const rest = s.photo.subarray(1000);
        expect((await patch(t, s.partial, 1000, rest)).status).toBe(200);
        if (!distributed) {
          expect(await rita()).toMatchObject({ reservedBytes: 0, fileCount: 6 });
          return;
        }

        // Distributed, the time-based sweep releases the uploads that never got a byte once their idle
        // window has passed (whichever node runs it: their creators would have sent a byte by then).
        const swept = await sweepExpiredUploads({
          repo: t.chipmunk.repo,
          uploads: t.chipmunk.uploads,
          discardUpload: t.chipmunk.area.discard,
          logger: t.chipmunk.logger,
          now: Date.now() + t.chipmunk.config.uploadIdleExpiryMs + 1000,
        });
        expect(swept).toBe(unsettled.length);
        for (const id of unsettled) expect(await t.chipmunk.inspect.file(id), id).toBeUndefined();
        expect(await uploadAreaIds(t)).toEqual([]);
        expect(await rita()).toMatchObject({ reservedBytes: 0, fileCount: 6 });
        // What no row records and no sweep removes (the folder of an upload that never finished) is left to `chipmunk fsck --repair`, every node stopped.
        await t.stop();
        const toolEnv = { ...t.serviceEnv!, CHIPMUNK_DATA_DIR: t.dataDir, CHIPMUNK_LOG_LEVEL: 'silent' };
        expect(await fsckCommand(['--repair'], toolEnv)).toBe(0);
        t = await backend.restart(t);
        expect(await uploadAreaIds(t)).toEqual([]);
        expect(await t.chipmunk.received.list()).toEqual([]);
        expect(await hasFolder(t, s.moved)).toBe(false);
        const report = await t.chipmunk.inspect.fsck();
        expect(report.problems).toEqual([]);
      } finally {
        await t.close();
      }
    });
  });

  describe('fsck', () => {
    it('reports each kind of damage, repairs what is safe and says what it did', async () => {
      const s = await crashLeftovers(backend);
      const { createChipmunk } = await import('../src/chipmunk.js');
      const { loadConfig } = await import('../src/config.js');
      const { silentLogger } = await import('../src/log.js');
      // Opened without listening: no recovery runs, fsck sees the raw leftovers (distributed: in the database and the bucket).
      const c = createChipmunk(loadConfig({ CHIPMUNK_DATA_DIR: s.t.dataDir, ...s.t.serviceEnv }), { logger: silentLogger, defaultMetrics: false });
      try {
        await c.repo.setUserCounters('rita', { usedBytes: 1, reservedBytes: 2 });
        await c.storage.removeName(s.kept.id, '0.jpg');
        await c.storage.write(s.tempHolder.id, 'stray.bin', Buffer.from('x'));
        const deps = { repo: c.repo, storage: c.storage, area: c.area, received: c.received };
        const found = await fsck(deps);
        const kinds = found.problems.map((p) => p.kind).sort();
        expect(kinds).toEqual(
          [
            'missing-variant',
            'orphan-folder',
            'orphan-upload',
            'orphan-upload',
            'orphan-received',
            'orphan-received',
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
        // In the bucket tus completes an upload at its received key: the completed upload's bytes are already there (and kept).
        expect(await c.received.list()).toEqual(distributed ? [s.completed] : []);
        expect(await ids([...(await c.area.list()).keys()])).toEqual(await ids([s.partial, s.full, s.completed, s.empty]));
        const rita = (await c.repo.getUser('rita'))!;
        // The partial upload, the complete ones (processed at the next start) and the empty one (released
        // at the next start, harmless until then) keep their reservations.
        expect(rita.reservedBytes).toBe(2 * reservation(s.photo.length) + reservation(s.photo.length + 1) + reservation(5000));
        expect(rita.usedBytes).toBe(s.kept.totalBytes + s.tempHolder.totalBytes + s.settled.totalBytes);
      } finally {
        await c.close();
        await s.t.close();
      }
    });
  });
});
