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
let told: Array<{ fileId: string | undefined; inTransaction: boolean; seen: Deliverable | undefined }>;
let watched: { token: string; name: string } | undefined;

beforeEach(() => {
  db = openDatabase(path.join(dir(), 'chipmunk.db'));
  told = [];
  watched = undefined;
  repo = createRepository(db, {
    onDeliverablesChanged: (fileId) =>
      told.push({ fileId, inTransaction: db.$client.inTransaction, seen: watched && repo.getDeliverable(watched.token, watched.name) }),
  });
});
afterEach(() => db.$client.close());

/** A stored file as the durable pipeline makes one: reserved, received, processed, committed ready. */
async function storedFile() {
  // Wired as the composition root wires it: the unit of work's announcements go through the repository.
  const uow = createSqlitePorts(db, { webhooksEnabled: false, onDeliverablesChanged: (fileId) => repo.deliverablesChanged(fileId) });
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
  return repo.getFile(id)!;
}

it('announces the file after the commit that made it deliverable', async () => {
  const file = await storedFile();
  expect(told).toEqual([{ fileId: file.id, inTransaction: false, seen: undefined }]);
});

it('announces a token rotation and a visibility change once they are committed', async () => {
  const file = await storedFile();
  watched = { token: file.deliveryToken, name: '0' };
  told = [];
  const generation = repo.deliverablesGeneration();
  repo.updateFile(file.id, { visibility: 'private' });
  expect(told).toEqual([{ fileId: file.id, inTransaction: false, seen: expect.objectContaining({ visibility: 'private' }) }]);
  repo.updateFile(file.id, { deliveryToken: newDeliveryToken() });
  // Under the old token the file is already gone when the caches hear of it.
  expect(told[1]).toEqual({ fileId: file.id, inTransaction: false, seen: undefined });
  expect(repo.deliverablesGeneration()).toBe(generation + 2);
});

it('announces new and replaced variants after their commit', async () => {
  const file = await storedFile();
  watched = { token: file.deliveryToken, name: '3' };
  told = [];
  repo.addVariants(file.id, [{ name: '3', path: '3.webp', mimeType: 'image/webp', bytes: 4, width: 1, height: 1 }]);
  repo.addVariants(file.id, [{ name: '3', path: '3b.webp', mimeType: 'image/webp', bytes: 5, width: 1, height: 1 }]);
  expect(told.map((t) => [t.fileId, t.inTransaction, t.seen?.path])).toEqual([
    [file.id, false, '3.webp'],
    [file.id, false, '3b.webp'],
  ]);
});

it('announces a delete once the file is no longer served, and nothing for a write that changed nothing', async () => {
  const file = await storedFile();
  watched = { token: file.deliveryToken, name: '0' };
  told = [];
  repo.beginDelete(file.id);
  expect(told).toEqual([{ fileId: file.id, inTransaction: false, seen: undefined }]);
  told = [];
  expect(repo.beginDelete(file.id)).toBeUndefined();
  expect(repo.updateFile(file.id, { visibility: 'public' })).toBeUndefined();
  expect(repo.addVariants(file.id, [])).toBeUndefined();
  expect(told).toEqual([]);
});

it('the durable pipeline’s unit of work announces each file it changed, once committed', async () => {
  const file = await storedFile();
  watched = { token: file.deliveryToken, name: '0' };
  const announced: Array<{ fileId: string; inTransaction: boolean; seen: Deliverable | undefined }> = [];
  const uow = createSqlitePorts(db, {
    webhooksEnabled: false,
    onDeliverablesChanged: (fileId) => announced.push({ fileId, inTransaction: db.$client.inTransaction, seen: repo.getDeliverable(file.deliveryToken, '0') }),
  });
  await uow.run(async (tx) => {
    await tx.files.transition(file.id, ['ready'], 'deleting');
    expect(announced).toEqual([]);
  });
  expect(announced).toEqual([{ fileId: file.id, inTransaction: false, seen: undefined }]);
  // A unit that rolls back announces nothing.
  const other = await storedFile();
  await expect(
    uow.run(async (tx) => {
      await tx.files.transition(other.id, ['ready'], 'deleting');
      throw new Error('rolled back');
    }),
  ).rejects.toThrow('rolled back');
  expect(announced).toHaveLength(1);
});
