import path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { tempDirEach } from '../../test/helpers/temp-dir.js';
import { newDeliveryToken, newFileId } from '../ids.js';
import { openDatabase, type Db } from './index.js';
import { createRepository, type Deliverable } from './repository.js';
import { createSqlitePorts } from './sqlite-ports.js';

// The repository holds no delivery cache; it announces, after each commit that could change what
// /f/ serves, which file changed (delivery's caches listen). Told too early, a cache could store
// the old row again before the commit lands: so at the announcement the new state must be visible.

const dir = tempDirEach('deliverables-changed');
let db: Db;
let repo: ReturnType<typeof createRepository>;
// What a reader would see at the announcement: the look-up runs then (better-sqlite3 answers at the call),
// its value is awaited when the test compares.
type Told = { fileId: string | undefined; inTransaction: boolean; seen: Promise<Deliverable | undefined> };
let told: Told[];
let uow: ReturnType<typeof createSqlitePorts>;
const settled = (list: Told[]) => Promise.all(list.map(async (t) => ({ ...t, seen: await t.seen })));
let watched: { token: string; name: string } | undefined;

beforeEach(() => {
  db = openDatabase(path.join(dir(), 'chipmunk.db'));
  told = [];
  watched = undefined;
  repo = createRepository(db, {
    onDeliverablesChanged: (fileId) =>
      told.push({
        fileId,
        inTransaction: db.$client.inTransaction,
        seen: watched ? repo.getDeliverable(watched.token, watched.name) : Promise.resolve(undefined),
      }),
  });
  // Wired as the composition root wires it: the unit of work's announcements go through the repository.
  uow = createSqlitePorts(db, { webhooksEnabled: false, onDeliverablesChanged: (fileId) => repo.deliverablesChanged(fileId) });
});
afterEach(() => db.$client.close());

/** A stored file as the durable pipeline makes one: reserved, received, processed, committed ready. */
async function storedFile() {
  const reserved = await uow.ports.uploads.reserve({
    userId: 'rita',
    purpose: 'image',
    kind: 'image',
    filename: 'a.jpg',
    mimeType: 'image/jpeg',
    length: 10,
    reserveBytes: 10,
    visibility: 'public',
    defaultQuotaBytes: 1000,
    expiresAt: Date.now() + 60_000,
    maxUnfinished: { count: 10, bytes: 1000 },
    newId: newFileId,
    newDeliveryToken,
  });
  if (!reserved.ok) throw new Error(`not reserved: ${reserved.reason}`);
  const id = reserved.file.id;
  await uow.ports.uploads.markReceived(id);
  await uow.ports.files.transition(id, ['received'], 'processing');
  const committed = await uow.ports.files.commit(id, {
    status: 'ready',
    mimeType: 'image/jpeg',
    ext: 'jpg',
    variants: [{ name: '0', path: '0.jpg', mimeType: 'image/jpeg', bytes: 10, width: 1, height: 1 }],
    keepReservedBytes: 0,
  });
  if (!committed || committed === 'quota') throw new Error('not committed');
  return (await repo.getFile(id))!;
}

it('announces the file after the commit that made it deliverable', async () => {
  const file = await storedFile();
  expect(await settled(told)).toEqual([{ fileId: file.id, inTransaction: false, seen: undefined }]);
});

it('announces a token rotation and a visibility change once they are committed', async () => {
  const file = await storedFile();
  watched = { token: file.deliveryToken, name: '0' };
  told = [];
  const generation = repo.deliverablesGeneration();
  await repo.updateFile(file.id, { visibility: 'private' });
  expect(await settled(told)).toEqual([{ fileId: file.id, inTransaction: false, seen: expect.objectContaining({ visibility: 'private' }) }]);
  await repo.updateFile(file.id, { deliveryToken: newDeliveryToken() });
  // Under the old token the file is already gone when the caches hear of it.
  expect((await settled(told))[1]).toEqual({ fileId: file.id, inTransaction: false, seen: undefined });
  expect(repo.deliverablesGeneration()).toBe(generation + 2);
});

it('announces new and replaced variants after their commit', async () => {
  const file = await storedFile();
  watched = { token: file.deliveryToken, name: '3' };
  told = [];
  await uow.ports.files.addVariants(file.id, [{ name: '3', path: '3.webp', mimeType: 'image/webp', bytes: 4, width: 1, height: 1 }]);
  await uow.ports.files.addVariants(file.id, [{ name: '3', path: '3b.webp', mimeType: 'image/webp', bytes: 5, width: 1, height: 1 }]);
  expect((await settled(told)).map((t) => [t.fileId, t.inTransaction, t.seen?.path])).toEqual([
    [file.id, false, '3.webp'],
    [file.id, false, '3b.webp'],
  ]);
});

it('announces a delete once the file is no longer served, and nothing for a write that changed nothing', async () => {
  const file = await storedFile();
  watched = { token: file.deliveryToken, name: '0' };
  told = [];
  await uow.ports.files.beginDelete(file.id);
  expect(await settled(told)).toEqual([{ fileId: file.id, inTransaction: false, seen: undefined }]);
  told = [];
  expect(await uow.ports.files.beginDelete(file.id)).toBeUndefined();
  expect(await repo.updateFile(file.id, { visibility: 'public' })).toBeUndefined();
  expect(await uow.ports.files.addVariants(file.id, [])).toBeUndefined();
  expect(told).toEqual([]);
});

it('the durable pipeline’s unit of work announces each file it changed, once committed', async () => {
  const file = await storedFile();
  watched = { token: file.deliveryToken, name: '0' };
  const announced: Told[] = [];
  const own = createSqlitePorts(db, {
    webhooksEnabled: false,
    onDeliverablesChanged: (fileId) => announced.push({ fileId, inTransaction: db.$client.inTransaction, seen: repo.getDeliverable(file.deliveryToken, '0') }),
  });
  await own.run(async (tx) => {
    await tx.files.transition(file.id, ['ready'], 'deleting');
    expect(announced).toEqual([]);
  });
  expect(await settled(announced)).toEqual([{ fileId: file.id, inTransaction: false, seen: undefined }]);
  // A unit that rolls back announces nothing.
  const other = await storedFile();
  await expect(
    own.run(async (tx) => {
      await tx.files.transition(other.id, ['ready'], 'deleting');
      throw new Error('rolled back');
    }),
  ).rejects.toThrow('rolled back');
  expect(announced).toHaveLength(1);
});
