import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempDirEach } from '../../test/helpers/temp-dir.js';
import { newDeliveryToken, newFileId } from '../ids.js';
import { openDatabase, type Db } from './index.js';
import { createRepository, type ReserveInput } from './repository.js';

// The quota arithmetic, on a real SQLite: an upload is admitted only when
// used + reserved + length ≤ quota (the guarded UPDATE), and every later step moves bytes
// between reserved and used without losing or inventing any.

const dir = tempDirEach('quota');
let db: Db;
let repo: ReturnType<typeof createRepository>;

beforeEach(() => {
  db = openDatabase(path.join(dir(), 'chipmunk.db'));
  repo = createRepository(db);
});
afterEach(() => db.$client.close());

const reserve = (length: number, over: Partial<ReserveInput> = {}) =>
  repo.reserveUpload({
    userId: 'rita',
    purpose: 'image',
    kind: 'image',
    filename: 'a.jpg',
    mimeType: 'image/jpeg',
    length,
    visibility: 'private',
    defaultQuotaBytes: 1000,
    expiresAt: Date.now() + 60_000,
    newId: newFileId,
    newDeliveryToken,
    ...over,
  });

const counters = () => {
  const u = repo.getUser('rita')!;
  return { used: u.usedBytes, reserved: u.reservedBytes };
};

describe('the guarded reservation', () => {
  it('admits uploads up to the quota exactly, and refuses the byte beyond it', () => {
    reserve(600);
    reserve(400);
    expect(counters()).toEqual({ used: 0, reserved: 1000 });
    expect(() => reserve(1)).toThrow(expect.objectContaining({ code: 'QUOTA_EXCEEDED', status: 413, message: 'Storage quota exceeded: 0 B free, this upload needs 1 B.' }));
    expect(counters()).toEqual({ used: 0, reserved: 1000 });
  });

  it('counts used and reserved bytes alike, and says how much is free', () => {
    const first = reserve(300);
    repo.commitUpload(first.id, { mimeType: 'image/jpeg', ext: 'jpg', status: 'ready', variants: [{ name: '0', path: '0.jpg', mimeType: 'image/jpeg', bytes: 300, width: 1, height: 1 }] });
    reserve(200);
    expect(counters()).toEqual({ used: 300, reserved: 200 });
    expect(() => reserve(501)).toThrow('Storage quota exceeded: 500 B free, this upload needs 501 B.');
    reserve(500);
  });

  it('charges the stored total at commit (variants included) and gives the reservation back', () => {
    const file = reserve(100);
    repo.commitUpload(file.id, {
      mimeType: 'image/jpeg',
      ext: 'jpg',
      status: 'ready',
      variants: [
        { name: '0', path: '0.jpg', mimeType: 'image/jpeg', bytes: 100, width: 10, height: 10 },
        { name: '1', path: '1.webp', mimeType: 'image/webp', bytes: 30, width: 5, height: 5 },
      ],
    });
    expect(counters()).toEqual({ used: 130, reserved: 0 });
  });

  it('releases a refused or abandoned upload’s reservation once, and only once', () => {
    const file = reserve(700);
    expect(repo.releaseUpload(file.id)).toBe(true);
    expect(repo.releaseUpload(file.id)).toBe(false);
    expect(counters()).toEqual({ used: 0, reserved: 0 });
    reserve(1000);
  });
});
