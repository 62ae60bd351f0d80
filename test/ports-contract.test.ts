import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/index.js';
import { createPgPool } from '../src/db/pg/connection.js';
import { migratePg } from '../src/db/pg/migrate.js';
import { createPgPorts } from '../src/db/pg/pg-ports.js';
import { WEBHOOK_JOB, type NewVariant, type ReserveUploadInput, type UnitOfWork } from '../src/db/ports.js';
import type { FileRow, FileStatus } from '../src/db/schema.js';
import { createSqlitePorts } from '../src/db/sqlite-ports.js';
import { createTemplateDatabase, createTestDatabase, testServices } from './helpers/services.js';

// One contract for the persistence ports, run over SQLite and over a real PostgreSQL, each test on a
// fresh database (PostgreSQL: a copy of a migrated template). `uow` and `other` play two nodes: on
// PostgreSQL they are two pools (every concurrent unit has a connection of its own); on SQLite, where
// one process owns the file, they are the same unit of work, and the same concurrency tests check parity.

type Row = Record<string, unknown>;
type Harness = {
  uow: UnitOfWork;
  other: UnitOfWork;
  /** How often each after-commit callback fired. */
  fired: { queued: number; deliverables: number };
  /** Plain SQL both dialects read the same way (no parameters). */
  query(text: string): Promise<Row[]>;
  close(): Promise<void>;
};
type Backend = (opts: { webhooksEnabled: boolean }) => Promise<Harness>;

const callbacks = () => {
  const fired = { queued: 0, deliverables: 0 };
  return { fired, hooks: { onJobsQueued: () => void fired.queued++, onDeliverablesChanged: () => void fired.deliverables++ } };
};

const sqliteBackend: Backend = async ({ webhooksEnabled }) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'chipmunk-ports-'));
  const db = openDatabase(path.join(dir, 'chipmunk.db'));
  const { fired, hooks } = callbacks();
  const uow = createSqlitePorts(db, { webhooksEnabled, ...hooks });
  return {
    uow,
    other: uow,
    fired,
    query: async (text) => {
      const statement = db.$client.prepare(text);
      if (statement.reader) return statement.all() as Row[];
      statement.run();
      return [];
    },
    async close() {
      db.$client.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
};

let template: { name: string; drop(): Promise<void> } | undefined;
type TestDb = Awaited<ReturnType<typeof createTestDatabase>>;
// The next test's database is copied while this one runs (a copy takes a moment on a loaded machine).
let spare: Promise<TestDb> | undefined;
async function freshPgDatabase(): Promise<TestDb> {
  const services = testServices();
  template ??= await createTemplateDatabase(services, 'ports', (url) => migratePg({ url }));
  const copy = () => createTestDatabase(services, 'ports', { template: template!.name });
  const db = await (spare ?? copy());
  spare = copy();
  spare.catch(() => undefined);
  return db;
}
/** Units PostgreSQL aborted and the ports ran again, by SQLSTATE. */
const retried: string[] = [];
const pgBackend: Backend = async ({ webhooksEnabled }) => {
  const db = await freshPgDatabase();
  const pools = [createPgPool({ url: db.url, max: 30 }), createPgPool({ url: db.url, max: 30 })] as const;
  const { fired, hooks } = callbacks();
  const onRetry = (err: unknown) => void retried.push(String((err as { cause?: { code?: string } }).cause?.code ?? (err as { code?: string }).code));
  return {
    uow: createPgPorts(pools[0], { webhooksEnabled, onRetry, ...hooks }),
    other: createPgPorts(pools[1], { webhooksEnabled, onRetry, ...hooks }),
    fired,
    query: async (text) => (await pools[0].query(text)).rows,
    async close() {
      await Promise.all(pools.map((p) => p.end()));
      await db.drop();
    },
  };
};

afterAll(async () => {
  await (await spare?.catch(() => undefined))?.drop();
  await template?.drop();
});

describe.each([
  ['sqlite', sqliteBackend],
  ['postgres', pgBackend],
] as const)('persistence ports on %s', (_name, backend) => {
  let h: Harness;
  const extra: Harness[] = [];
  beforeEach(async () => {
    h = await backend({ webhooksEnabled: true });
  });
  afterEach(async () => {
    await h?.close();
    await Promise.all(extra.splice(0).map((x) => x.close()));
  });

  let ids = 0;
  const newIds = () => {
    const id = `f${String(++ids).padStart(5, '0')}`;
    return { newId: () => id, newDeliveryToken: () => `tok-${id}` };
  };
  const reserveInput = (over: Partial<ReserveUploadInput> = {}): ReserveUploadInput => ({
    userId: 'u1',
    purpose: 'avatar',
    kind: 'image',
    filename: 'a.jpg',
    mimeType: 'image/jpeg',
    length: 100,
    reserveBytes: 150,
    visibility: 'public',
    defaultQuotaBytes: 10_000,
    expiresAt: 5_000_000,
    maxUnfinished: { count: 100, bytes: 1_000_000 },
    ...newIds(),
    ...over,
  });
  const reserved = async (over: Partial<ReserveUploadInput> = {}, uow = h.uow): Promise<FileRow> => {
    const outcome = await uow.ports.uploads.reserve(reserveInput(over));
    if (!outcome.ok) throw new Error(`reserve refused: ${outcome.reason}`);
    return outcome.file;
  };
  /** A reserved upload moved on to `status` the way the pipeline moves it. */
  const fileIn = async (status: 'uploading' | 'received' | 'processing', over: Partial<ReserveUploadInput> = {}): Promise<FileRow> => {
    let file = await reserved(over);
    if (status === 'uploading') return file;
    file = (await h.uow.ports.uploads.markReceived(file.id))!;
    if (status === 'received') return file;
    return (await h.uow.ports.files.transition(file.id, ['received'], 'processing'))!;
  };
  const user = async (id = 'u1') => {
    const [row] = await h.query(`select quota_bytes as quota, used_bytes as used, reserved_bytes as reserved from users where id = '${id}'`);
    return row as { quota: number; used: number; reserved: number } | undefined;
  };
  const jobsOf = async (fileId: string) =>
    h.query(`select id, type, user_id as "userId", state, attempts, run_after as "runAfter", error, payload from jobs where file_id = '${fileId}' order by id`);
  const fileCount = async () => Number((await h.query('select count(*) as n from files'))[0]!.n);
  const variant = (name: string, bytes: number): NewVariant => ({ name, path: `${name}.webp`, mimeType: 'image/webp', bytes, width: 10, height: 10 });
  const commitInput = (variants: NewVariant[], over: { status?: 'processing' | 'ready'; keepReservedBytes?: number } = {}) => ({
    status: over.status ?? 'ready',
    mimeType: 'image/jpeg',
    ext: 'jpg',
    width: 10,
    height: 20,
    info: { placeholder: 'x' },
    variants,
    keepReservedBytes: over.keepReservedBytes ?? 0,
  });

  /** A track committed to 'processing' that keeps `keep` of its reservation for its renditions. */
  const committedTrack = async (over: Partial<ReserveUploadInput> & { keep?: number; original?: number } = {}) => {
    const { keep = 400, original = 300, ...reserve } = over;
    const file = await fileIn('processing', { reserveBytes: 1_000, ...reserve });
    const row = await h.uow.ports.files.commit(file.id, commitInput([variant('0', original)], { status: 'processing', keepReservedBytes: keep }));
    if (!row || row === 'quota') throw new Error(`commit: ${row}`);
    return row;
  };
  /** What the user's counters should be: the sums over the user's files (what fsck checks). */
  const fromFiles = async (id: string) => {
    const [row] = await h.query(
      `select coalesce(sum(total_bytes), 0) as used, coalesce(sum(reserved_bytes), 0) as reserved from files where user_id = '${id}' and status <> 'deleting'`,
    );
    return { used: Number(row!.used), reserved: Number(row!.reserved) };
  };

  describe('UploadLedger', () => {
    it('reserve creates the user with the default quota, holds the reservation and makes an uploading file', async () => {
      const outcome = await h.uow.ports.uploads.reserve(reserveInput({ length: 100, reserveBytes: 150 }));
      expect(outcome.ok).toBe(true);
      const file = (outcome as { file: FileRow }).file;
      expect(file).toMatchObject({
        userId: 'u1',
        purpose: 'avatar',
        kind: 'image',
        status: 'uploading',
        filename: 'a.jpg',
        mimeType: 'image/jpeg',
        bytes: 100,
        uploadLength: 100,
        totalBytes: 0,
        reservedBytes: 150,
        visibility: 'public',
        expiresAt: 5_000_000,
        committedAt: null,
        info: {},
      });
      expect(file.deliveryToken).toBe(`tok-${file.id}`);
      expect(await h.uow.ports.files.get(file.id)).toEqual(file);
      expect(await user()).toEqual({ quota: 10_000, used: 0, reserved: 150 });
      // The quota is the user's from then on, whatever default a later reservation passes.
      await reserved({ defaultQuotaBytes: 1 });
      expect(await user()).toEqual({ quota: 10_000, used: 0, reserved: 300 });
    });

    it('reserve refuses what does not fit with the free bytes, holding nothing and making nothing', async () => {
      await reserved({ reserveBytes: 9_000 });
      const outcome = await h.uow.ports.uploads.reserve(reserveInput({ reserveBytes: 1_001 }));
      expect(outcome).toEqual({ ok: false, reason: 'quota', freeBytes: 1_000 });
      expect(await user()).toEqual({ quota: 10_000, used: 0, reserved: 9_000 });
      expect(await fileCount()).toBe(1);
      // Exactly what is left fits.
      expect((await h.uow.ports.uploads.reserve(reserveInput({ reserveBytes: 1_000 }))).ok).toBe(true);
      expect(await user()).toEqual({ quota: 10_000, used: 0, reserved: 10_000 });
    });

    it('reserve bounds the unfinished uploads by count and by declared bytes; received ones no longer count', async () => {
      const bounds = { maxUnfinished: { count: 2, bytes: 250 } };
      const first = await reserved({ ...bounds, length: 100 });
      await reserved({ ...bounds, length: 100 });
      expect(await h.uow.ports.uploads.reserve(reserveInput({ ...bounds, length: 10 }))).toEqual({
        ok: false,
        reason: 'unfinished-count',
        held: { count: 2, bytes: 200 },
      });
      await h.uow.ports.uploads.markReceived(first.id);
      expect(await h.uow.ports.uploads.reserve(reserveInput({ ...bounds, length: 151 }))).toEqual({
        ok: false,
        reason: 'unfinished-bytes',
        held: { count: 1, bytes: 100 },
      });
      expect(await user()).toEqual({ quota: 10_000, used: 0, reserved: 300 });
      expect((await h.uow.ports.uploads.reserve(reserveInput({ ...bounds, length: 150 }))).ok).toBe(true);
      // Another user's uploads are theirs.
      expect((await h.uow.ports.uploads.reserve(reserveInput({ ...bounds, userId: 'u2', length: 250 }))).ok).toBe(true);
    });

    it('reserve draws another id when one is taken, and gives up after a few', async () => {
      const taken = await reserved();
      const fresh = newIds().newId();
      const queue = [taken.id, taken.id, fresh];
      const outcome = await h.uow.ports.uploads.reserve(reserveInput({ newId: () => queue.shift()!, newDeliveryToken: () => `tok-${queue.length}` }));
      expect(outcome.ok && outcome.file.id).toBe(fresh);
      await expect(h.uow.ports.uploads.reserve(reserveInput({ newId: () => taken.id }))).rejects.toThrow(/unique file id/);
      // The failed unit held nothing.
      expect(await user()).toEqual({ quota: 10_000, used: 0, reserved: 300 });
    });

    it('markReceived moves uploading → received once; the loser gets undefined', async () => {
      const file = await reserved();
      const won = await h.uow.ports.uploads.markReceived(file.id);
      expect(won).toMatchObject({ id: file.id, status: 'received', expiresAt: null });
      expect(await h.uow.ports.uploads.markReceived(file.id)).toBeUndefined();
      expect(await h.uow.ports.uploads.markReceived('nope')).toBeUndefined();
    });

    it('extendExpiry only moves the expiry later, and only while uploading', async () => {
      const file = await reserved({ expiresAt: 1_000 });
      await h.uow.ports.uploads.extendExpiry(file.id, 2_000);
      expect((await h.uow.ports.files.get(file.id))!.expiresAt).toBe(2_000);
      await h.uow.ports.uploads.extendExpiry(file.id, 1_500);
      expect((await h.uow.ports.files.get(file.id))!.expiresAt).toBe(2_000);
      await h.uow.ports.uploads.markReceived(file.id);
      await h.uow.ports.uploads.extendExpiry(file.id, 9_000);
      expect((await h.uow.ports.files.get(file.id))!.expiresAt).toBeNull();
    });

    it('recordUploadOffset keeps where an uploading file stands (null: unknown), past 2 GiB; uploadOffset reads it only while uploading', async () => {
      const file = await reserved();
      expect(await h.uow.ports.uploads.uploadOffset(file.id)).toBeNull();
      await h.uow.ports.uploads.recordUploadOffset(file.id, 5 * 2 ** 30 + 7);
      expect(await h.uow.ports.uploads.uploadOffset(file.id)).toBe(5 * 2 ** 30 + 7);
      await h.uow.ports.uploads.recordUploadOffset(file.id, null);
      expect(await h.uow.ports.uploads.uploadOffset(file.id)).toBeNull();
      await h.uow.ports.uploads.recordUploadOffset(file.id, 8);
      await h.uow.ports.uploads.markReceived(file.id);
      expect(await h.uow.ports.uploads.uploadOffset(file.id)).toBeNull();
      await h.uow.ports.uploads.recordUploadOffset(file.id, 16);
      expect((await h.uow.ports.files.get(file.id))!.uploadOffset).toBe(8);
      expect(await h.uow.ports.uploads.uploadOffset('nope')).toBeNull();
    });

    it('release drops an uncommitted file in the given states, gives its reservation back and its waiting jobs (not its webhooks)', async () => {
      const file = await fileIn('received', { reserveBytes: 400 });
      await h.uow.ports.jobs.enqueue({ type: 'process', fileId: file.id, userId: 'u1' });
      await h.uow.ports.outbox.add('file.refused', { id: file.id }, { fileId: file.id, userId: 'u1' });
      expect(await h.uow.ports.uploads.release(file.id, ['uploading'])).toBeUndefined();
      expect(await user()).toMatchObject({ reserved: 400 });
      const released = await h.uow.ports.uploads.release(file.id, ['received', 'processing']);
      expect(released).toMatchObject({ id: file.id, status: 'received', reservedBytes: 400 });
      expect(await h.uow.ports.files.get(file.id)).toBeUndefined();
      expect(await user()).toEqual({ quota: 10_000, used: 0, reserved: 0 });
      expect((await jobsOf(file.id)).map((j) => j.type)).toEqual([WEBHOOK_JOB]);
      expect(await h.uow.ports.uploads.release(file.id, ['received'])).toBeUndefined();
      expect(await user()).toEqual({ quota: 10_000, used: 0, reserved: 0 });
    });

    it('release never drops a committed file', async () => {
      const file = await fileIn('processing');
      await h.uow.ports.files.commit(file.id, commitInput([variant('0', 50)], { status: 'processing', keepReservedBytes: 20 }));
      expect(await h.uow.ports.uploads.release(file.id, ['processing'])).toBeUndefined();
      expect(await h.uow.ports.files.get(file.id)).toMatchObject({ status: 'processing' });
      expect(await user()).toMatchObject({ used: 50, reserved: 20 });
    });

    it('recordRefusal keeps one tombstone per upload (the latest), refusal reads it, dropExpiredRefusals counts what it drops', async () => {
      const row = { id: 'r1', userId: 'u1', code: 'UNSUPPORTED_MEDIA', status: 415, message: 'Not an image.', expiresAt: 1_000 };
      await h.uow.ports.uploads.recordRefusal(row);
      await h.uow.ports.uploads.recordRefusal({ ...row, code: 'UNPROCESSABLE_MEDIA', status: 422, message: 'Corrupt.', expiresAt: 2_000 });
      await h.uow.ports.uploads.recordRefusal({ ...row, id: 'r2', expiresAt: 3_000 });
      expect(await h.uow.ports.uploads.refusal('r1')).toEqual({ ...row, code: 'UNPROCESSABLE_MEDIA', status: 422, message: 'Corrupt.', expiresAt: 2_000 });
      expect(await h.uow.ports.uploads.refusal('nope')).toBeUndefined();
      expect(await h.uow.ports.uploads.dropExpiredRefusals(1_999)).toBe(0);
      expect(await h.uow.ports.uploads.dropExpiredRefusals(2_000)).toBe(1);
      expect(await h.uow.ports.uploads.refusal('r1')).toBeUndefined();
      expect(await h.uow.ports.uploads.refusal('r2')).toMatchObject({ id: 'r2' });
    });
  });

  describe('FileCatalogue', () => {
    it('transition is a compare-and-set on the state, with an optional error; the loser gets undefined', async () => {
      const file = await fileIn('received');
      const won = await h.uow.ports.files.transition(file.id, ['received', 'uploading'], 'processing', { error: 'was slow' });
      expect(won).toMatchObject({ status: 'processing', error: 'was slow' });
      expect(await h.uow.ports.files.transition(file.id, ['received'], 'processing')).toBeUndefined();
      expect(await h.uow.ports.files.transition('nope', ['received'], 'processing')).toBeUndefined();
      // Without a patch the error stays; null clears it.
      expect(await h.uow.ports.files.transition(file.id, ['processing'], 'received')).toMatchObject({ error: 'was slow' });
      expect(await h.uow.ports.files.transition(file.id, ['received'], 'processing', { error: null })).toMatchObject({ error: null });
      expect(h.fired.deliverables).toBe(0);
    });

    it('a transition to deleting announces a deliverables change after its commit', async () => {
      const file = await fileIn('processing');
      await h.uow.ports.files.commit(file.id, commitInput([variant('0', 10)]));
      const before = h.fired.deliverables;
      await h.uow.ports.files.transition(file.id, ['ready'], 'deleting');
      expect(h.fired.deliverables).toBe(before + 1);
    });

    it('commit records the variants and swaps the reservation for what the file weighs', async () => {
      const file = await fileIn('processing', { reserveBytes: 1_000 });
      await reserved({ reserveBytes: 500 });
      const row = await h.uow.ports.files.commit(file.id, commitInput([variant('1', 30), variant('0', 100), variant('2', 70)]));
      expect(row).toMatchObject({
        id: file.id,
        status: 'ready',
        mimeType: 'image/jpeg',
        ext: 'jpg',
        bytes: 100,
        totalBytes: 200,
        reservedBytes: 0,
        width: 10,
        height: 20,
        info: { placeholder: 'x' },
        expiresAt: null,
      });
      expect(row !== 'quota' && row?.committedAt).toEqual(expect.any(Number));
      expect(await user()).toEqual({ quota: 10_000, used: 200, reserved: 500 });
      expect((await h.uow.ports.files.variants(file.id)).map((v) => [v.name, v.bytes, v.fileId])).toEqual([
        ['0', 100, file.id],
        ['1', 30, file.id],
        ['2', 70, file.id],
      ]);
      expect(await h.uow.ports.files.get(file.id)).toEqual(row);
      expect(h.fired.deliverables).toBe(1);
    });

    it('commit to processing keeps a budget for work to come, never more than the file held', async () => {
      const track = await fileIn('processing', { reserveBytes: 1_000 });
      const row = await h.uow.ports.files.commit(track.id, commitInput([variant('0', 300)], { status: 'processing', keepReservedBytes: 400 }));
      expect(row).toMatchObject({ status: 'processing', reservedBytes: 400, totalBytes: 300 });
      expect(await user()).toMatchObject({ used: 300, reserved: 400 });
      const greedy = await fileIn('processing', { reserveBytes: 100 });
      expect(await h.uow.ports.files.commit(greedy.id, commitInput([variant('0', 50)], { status: 'processing', keepReservedBytes: 5_000 }))).toMatchObject({
        reservedBytes: 100,
      });
      expect(await user()).toMatchObject({ used: 350, reserved: 500 });
    });

    it('commit is guarded: only a processing, uncommitted file; the second commit is a loser that charges nothing', async () => {
      const waiting = await fileIn('received');
      expect(await h.uow.ports.files.commit(waiting.id, commitInput([variant('0', 10)]))).toBeUndefined();
      const file = await fileIn('processing');
      await h.uow.ports.files.commit(file.id, commitInput([variant('0', 10)], { status: 'processing' }));
      // Still 'processing', but committed: a replayed commit must not record or charge again.
      expect(await h.uow.ports.files.commit(file.id, commitInput([variant('0', 10)]))).toBeUndefined();
      expect(await h.uow.ports.files.commit('nope', commitInput([variant('0', 10)]))).toBeUndefined();
      expect(await user()).toMatchObject({ used: 10, reserved: 150 });
      expect(await h.uow.ports.files.variants(file.id)).toHaveLength(1);
    });

    it("commit answers 'quota' when what the file weighs does not fit beside everything else held, and changes nothing", async () => {
      const file = await fileIn('processing', { reserveBytes: 1_000 });
      await reserved({ reserveBytes: 8_000 });
      // 8000 held by the other + 2001 > 10000.
      expect(await h.uow.ports.files.commit(file.id, commitInput([variant('0', 2_001)]))).toBe('quota');
      expect(await user()).toEqual({ quota: 10_000, used: 0, reserved: 9_000 });
      expect(await h.uow.ports.files.get(file.id)).toMatchObject({ status: 'processing', committedAt: null, reservedBytes: 1_000 });
      expect(await h.uow.ports.files.variants(file.id)).toEqual([]);
      expect(h.fired.deliverables).toBe(0);
      // Exactly the room there is fits.
      expect(await h.uow.ports.files.commit(file.id, commitInput([variant('0', 2_000)]))).toMatchObject({ status: 'ready' });
      expect(await user()).toEqual({ quota: 10_000, used: 2_000, reserved: 8_000 });
    });

    it('fail ends a received or processing upload failed, releasing its reservation; committed files and losers get undefined', async () => {
      const received = await fileIn('received', { reserveBytes: 300 });
      const processing = await fileIn('processing', { reserveBytes: 200 });
      expect(await h.uow.ports.files.fail(received.id, 'worker died')).toMatchObject({
        status: 'failed',
        error: 'worker died',
        reservedBytes: 0,
        totalBytes: 0,
        committedAt: expect.any(Number),
      });
      expect(await h.uow.ports.files.fail(processing.id, 'disk full')).toMatchObject({ status: 'failed' });
      expect(await user()).toEqual({ quota: 10_000, used: 0, reserved: 0 });
      expect(await h.uow.ports.files.fail(received.id, 'again')).toBeUndefined();
      const uploading = await fileIn('uploading');
      expect(await h.uow.ports.files.fail(uploading.id, 'no')).toBeUndefined();
      const committed = await fileIn('processing');
      await h.uow.ports.files.commit(committed.id, commitInput([variant('0', 10)], { status: 'processing' }));
      expect(await h.uow.ports.files.fail(committed.id, 'no')).toBeUndefined();
      expect(await user()).toEqual({ quota: 10_000, used: 10, reserved: 150 });
    });

    it('byte counts past 2 GiB and millisecond times go through every step exactly', async () => {
      const GiB = 1024 ** 3;
      const at = Date.UTC(2026, 11, 1);
      const file = await fileIn('processing', {
        length: 3 * GiB,
        reserveBytes: 5 * GiB,
        defaultQuotaBytes: 12 * GiB,
        expiresAt: at,
        maxUnfinished: { count: 5, bytes: 4 * GiB },
      });
      expect(file).toMatchObject({ bytes: 3 * GiB, uploadLength: 3 * GiB, reservedBytes: 5 * GiB });
      expect(await user()).toEqual({ quota: 12 * GiB, used: 0, reserved: 5 * GiB });
      const row = await h.uow.ports.files.commit(
        file.id,
        commitInput([variant('0', 3 * GiB), variant('1', GiB + 7)], { status: 'processing', keepReservedBytes: 2 * GiB }),
      );
      expect(row).toMatchObject({ bytes: 3 * GiB, totalBytes: 4 * GiB + 7, reservedBytes: 2 * GiB });
      expect(await user()).toEqual({ quota: 12 * GiB, used: 4 * GiB + 7, reserved: 2 * GiB });
      const job = await h.uow.ports.jobs.enqueue({ type: 'audio', fileId: file.id, userId: 'u1', runAfter: at });
      expect(job.runAfter).toBe(at);
      expect(await h.uow.ports.jobs.nextDueAt(['audio'])).toBe(at);
    });

    it('addVariants charges a committed file its new variants and spends the budget it kept, once', async () => {
      const track = await committedTrack({ keep: 400, original: 300 });
      const before = h.fired.deliverables;
      const row = await h.uow.ports.files.addVariants(track.id, [variant('1', 200), variant('2', 100)], {
        status: 'ready',
        info: { renditions: 2 },
        error: null,
      });
      expect(row).toMatchObject({ status: 'ready', totalBytes: 600, reservedBytes: 0, error: null, info: { placeholder: 'x', renditions: 2 } });
      expect(await user()).toEqual({ quota: 10_000, used: 600, reserved: 0 });
      expect((await h.uow.ports.files.variants(track.id)).map((v) => [v.name, v.bytes])).toEqual([
        ['0', 300],
        ['1', 200],
        ['2', 100],
      ]);
      expect(h.fired.deliverables).toBe(before + 1);
      // Run again (an at-least-once job): a name already there is replaced, only the difference is
      // charged, and the spent budget is not given back a second time.
      expect(await h.uow.ports.files.addVariants(track.id, [variant('1', 250)])).toMatchObject({ status: 'ready', totalBytes: 650, reservedBytes: 0 });
      expect(await user()).toEqual({ quota: 10_000, used: 650, reserved: 0 });
      expect(await user()).toEqual({ quota: 10_000, ...(await fromFiles('u1')) });
    });

    it('addVariants with nothing added (renditions that failed) gives the kept budget back and records the outcome', async () => {
      await committedTrack({ keep: 400 });
      const track = await committedTrack({ keep: 250 });
      expect(await user()).toMatchObject({ used: 600, reserved: 650 });
      expect(await h.uow.ports.files.addVariants(track.id, [], { status: 'failed', error: 'ffmpeg died' })).toMatchObject({
        status: 'failed',
        error: 'ffmpeg died',
        totalBytes: 300,
        reservedBytes: 0,
      });
      expect(await user()).toMatchObject({ used: 600, reserved: 400 });
      expect(await h.uow.ports.files.addVariants(track.id, [], { status: 'failed', error: 'again' })).toMatchObject({ reservedBytes: 0 });
      expect(await user()).toMatchObject({ used: 600, reserved: 400 });
    });

    it("addVariants answers 'quota' when the variants do not fit beside everything else held, and changes nothing", async () => {
      const track = await committedTrack({ keep: 400, original: 300 });
      await reserved({ reserveBytes: 8_000 });
      // 300 used + 8000 held + 1701 > 10000 (the track's own 400 is given back in the same statement).
      expect(await h.uow.ports.files.addVariants(track.id, [variant('1', 1_701)], { status: 'ready' })).toBe('quota');
      expect(await user()).toEqual({ quota: 10_000, used: 300, reserved: 8_400 });
      expect(await h.uow.ports.files.get(track.id)).toMatchObject({ status: 'processing', totalBytes: 300, reservedBytes: 400 });
      expect(await h.uow.ports.files.variants(track.id)).toHaveLength(1);
      expect(await h.uow.ports.files.addVariants(track.id, [variant('1', 1_700)], { status: 'ready' })).toMatchObject({ totalBytes: 2_000 });
      expect(await user()).toEqual({ quota: 10_000, used: 2_000, reserved: 8_000 });
    });

    it('addVariants only adds to a committed file that is not being deleted; others get undefined and nothing moves', async () => {
      const uncommitted = await fileIn('processing');
      expect(await h.uow.ports.files.addVariants(uncommitted.id, [variant('1', 10)])).toBeUndefined();
      const deleting = await committedTrack();
      await h.uow.ports.files.transition(deleting.id, ['processing'], 'deleting');
      expect(await h.uow.ports.files.addVariants(deleting.id, [variant('1', 10)])).toBeUndefined();
      expect(await h.uow.ports.files.addVariants('nope', [])).toBeUndefined();
      expect(await user()).toEqual({ quota: 10_000, used: 300, reserved: 550 });
      expect(await h.uow.ports.files.variants(uncommitted.id)).toEqual([]);
    });

    // The sequence the hostile corpus drifted on: one user's track got its renditions while another
    // user held a stored file and uploads in flight, and the renditions' guard matched that user's row
    // too. Every call that moves counters is run here beside a bystander whose counters must not move.
    it("no ledger call moves another user's counters: a bystander keeps its usage and reservation throughout", async () => {
      const bystander = { userId: 'u2', defaultQuotaBytes: 50_000 };
      const stored = await fileIn('processing', { ...bystander, reserveBytes: 2_000 });
      await h.uow.ports.files.commit(stored.id, commitInput([variant('0', 1_200)]));
      await reserved({ ...bystander, reserveBytes: 3_000 });
      const held = await user('u2');
      expect(held).toEqual({ quota: 50_000, used: 1_200, reserved: 3_000 });
      const unmoved = async (step: string) => expect(await user('u2'), step).toEqual(held);

      const track = await committedTrack({ keep: 400 });
      await unmoved('reserve, commit to processing');
      await h.uow.ports.files.addVariants(track.id, [variant('1', 200), variant('2', 100)], { status: 'ready', error: null });
      await unmoved('addVariants');
      const failing = await committedTrack({ keep: 300 });
      await h.uow.ports.files.addVariants(failing.id, [], { status: 'failed', error: 'no renditions' });
      await unmoved('addVariants of a failure');
      const greedy = await committedTrack({ keep: 500 });
      expect(await h.uow.ports.files.addVariants(greedy.id, [variant('1', 9_000)])).toBe('quota');
      await unmoved("addVariants answering 'quota'");
      expect(await h.uow.ports.uploads.reserve(reserveInput({ reserveBytes: 9_000 }))).toMatchObject({ ok: false, reason: 'quota' });
      await unmoved("reserve answering 'quota'");
      const tooBig = await fileIn('processing');
      expect(await h.uow.ports.files.commit(tooBig.id, commitInput([variant('0', 9_000)]))).toBe('quota');
      await unmoved("commit answering 'quota'");
      await h.uow.ports.files.fail(tooBig.id, 'gave up');
      await unmoved('fail');
      const dropped = await fileIn('received');
      await h.uow.ports.uploads.release(dropped.id, ['received']);
      await unmoved('release');

      // And each user's counters are what its files say.
      expect(await user('u1')).toEqual({ quota: 10_000, ...(await fromFiles('u1')) });
      expect(await user('u2')).toEqual({ quota: 50_000, ...(await fromFiles('u2')) });
    });

    it('variants are listed by name in byte order', async () => {
      const file = await fileIn('processing');
      await h.uow.ports.files.commit(file.id, commitInput([variant('waveform', 1), variant('Z', 1), variant('6', 1), variant('0', 1), variant('a', 1)]));
      expect((await h.uow.ports.files.variants(file.id)).map((v) => v.name)).toEqual(['0', '6', 'Z', 'a', 'waveform']);
      expect(await h.uow.ports.files.variants('nope')).toEqual([]);
    });
  });

  describe('JobQueue', () => {
    const claimAll = { at: Number.MAX_SAFE_INTEGER, afterUser: '', busyUsers: [] as string[] };

    it('enqueue queues once per file and type while one waits or runs; payload jobs always queue; wakes the runner after commit', async () => {
      const job = await h.uow.ports.jobs.enqueue({ type: 'process', fileId: 'f1', userId: 'u1', runAfter: 10 });
      expect(job).toMatchObject({ type: 'process', fileId: 'f1', userId: 'u1', state: 'queued', attempts: 0, runAfter: 10, payload: null, error: null });
      expect(h.fired.queued).toBe(1);
      expect(await h.uow.ports.jobs.enqueue({ type: 'process', fileId: 'f1', userId: 'u1' })).toEqual(job);
      expect(h.fired.queued).toBe(1);
      expect((await h.uow.ports.jobs.enqueue({ type: 'audio', fileId: 'f1', userId: 'u1' })).id).not.toBe(job.id);
      await h.uow.ports.jobs.claim(['process'], claimAll);
      expect((await h.uow.ports.jobs.enqueue({ type: 'process', fileId: 'f1', userId: 'u1' })).id).toBe(job.id);
      await h.uow.ports.jobs.finish(job.id, { state: 'done' });
      const again = await h.uow.ports.jobs.enqueue({ type: 'process', fileId: 'f1', userId: 'u1' });
      expect(again.id).not.toBe(job.id);
      const p1 = await h.uow.ports.jobs.enqueue({ type: 'hook', fileId: 'f1', userId: 'u1', payload: '{"n":1}' });
      const p2 = await h.uow.ports.jobs.enqueue({ type: 'hook', fileId: 'f1', userId: 'u1', payload: '{"n":1}' });
      expect(p2.id).not.toBe(p1.id);
      expect(p1.payload).toBe('{"n":1}');
      expect(h.fired.queued).toBe(5);
    });

    it('claim takes a due job of the given types, marks it running and counts the attempt', async () => {
      const later = await h.uow.ports.jobs.enqueue({ type: 'process', fileId: 'f1', userId: 'u1', runAfter: 200 });
      await h.uow.ports.jobs.enqueue({ type: 'audio', fileId: 'f2', userId: 'u1', runAfter: 0 });
      expect(await h.uow.ports.jobs.claim(['process'], { at: 199, afterUser: '', busyUsers: [] })).toBeUndefined();
      const claimed = await h.uow.ports.jobs.claim(['process'], { at: 200, afterUser: '', busyUsers: [] });
      expect(claimed).toMatchObject({ id: later.id, state: 'running', attempts: 1 });
      expect(await h.uow.ports.jobs.claim(['process'], claimAll)).toBeUndefined();
      expect(await h.uow.ports.jobs.claim(['process', 'audio'], claimAll)).toMatchObject({ type: 'audio' });
      expect(await h.uow.ports.jobs.claim(['process', 'audio'], claimAll)).toBeUndefined();
    });

    it('claim is round-robin by user (in byte order after afterUser, wrapping around) and skips busy users', async () => {
      // Three users, three jobs each, queued in an order that favours none of them.
      for (const [i, u] of ['uC', 'uA', 'uB', 'uA', 'uC', 'uB', 'uB', 'uA', 'uC'].entries()) {
        await h.uow.ports.jobs.enqueue({ type: 'process', fileId: `f${i}-${u}`, userId: u, runAfter: i });
      }
      const order: string[] = [];
      let afterUser = '';
      for (;;) {
        const job = await h.uow.ports.jobs.claim(['process'], { ...claimAll, afterUser });
        if (!job) break;
        order.push(job.fileId);
        afterUser = job.userId;
      }
      // Each user's own jobs in the order they fell due.
      expect(order).toEqual(['f1-uA', 'f2-uB', 'f0-uC', 'f3-uA', 'f5-uB', 'f4-uC', 'f7-uA', 'f6-uB', 'f8-uC']);

      await h.uow.ports.jobs.enqueue({ type: 'process', fileId: 'g1', userId: 'uA' });
      await h.uow.ports.jobs.enqueue({ type: 'process', fileId: 'g2', userId: 'uB' });
      await h.uow.ports.jobs.enqueue({ type: 'process', fileId: 'g3', userId: 'uC' });
      // After uC wraps to uA; uA busy: uB.
      expect(await h.uow.ports.jobs.claim(['process'], { ...claimAll, afterUser: 'uC', busyUsers: ['uA'] })).toMatchObject({ fileId: 'g2' });
      expect(await h.uow.ports.jobs.claim(['process'], { ...claimAll, afterUser: 'uA', busyUsers: ['uA', 'uC'] })).toBeUndefined();
      // A user between others ('uAB' sorts between 'uA' and 'uB') gets their turn in order.
      await h.uow.ports.jobs.enqueue({ type: 'process', fileId: 'g4', userId: 'uAB' });
      expect(await h.uow.ports.jobs.claim(['process'], { ...claimAll, afterUser: 'uA' })).toMatchObject({ fileId: 'g4' });
    });

    it('finish records the outcome; requeue puts a running job back, optionally refunding its attempt', async () => {
      const job = await h.uow.ports.jobs.enqueue({ type: 'process', fileId: 'f1', userId: 'u1' });
      await h.uow.ports.jobs.claim(['process'], claimAll);
      await h.uow.ports.jobs.requeue(job.id, { runAfter: 500, error: 'worker died' });
      expect(await jobsOf('f1')).toEqual([expect.objectContaining({ state: 'queued', runAfter: 500, error: 'worker died', attempts: 1 })]);
      // Only a running job goes back: a queued one is left as it is.
      await h.uow.ports.jobs.requeue(job.id, { runAfter: 900 });
      expect(await jobsOf('f1')).toEqual([expect.objectContaining({ runAfter: 500, error: 'worker died' })]);
      await h.uow.ports.jobs.claim(['process'], claimAll);
      await h.uow.ports.jobs.requeue(job.id, { runAfter: 600, refundAttempt: true });
      expect(await jobsOf('f1')).toEqual([expect.objectContaining({ state: 'queued', runAfter: 600, error: null, attempts: 1 })]);
      await h.uow.ports.jobs.requeue(job.id, { runAfter: 600, refundAttempt: true });
      await h.uow.ports.jobs.claim(['process'], claimAll);
      await h.uow.ports.jobs.finish(job.id, { state: 'failed', error: 'gave up' });
      expect(await jobsOf('f1')).toEqual([expect.objectContaining({ state: 'failed', error: 'gave up', attempts: 2 })]);
      await h.uow.ports.jobs.finish(job.id, { state: 'done' });
      expect(await jobsOf('f1')).toEqual([expect.objectContaining({ state: 'done', error: null })]);
    });

    it('keeps a fractional run time (a retry delay with jitter) as the next whole millisecond', async () => {
      const job = await h.uow.ports.jobs.enqueue({ type: 'process', fileId: 'f1', userId: 'u1', runAfter: 10.25 });
      expect(await jobsOf('f1')).toEqual([expect.objectContaining({ runAfter: 11 })]);
      await h.uow.ports.jobs.claim(['process'], claimAll);
      await h.uow.ports.jobs.requeue(job.id, { runAfter: 1_796_150_620_460.1938, error: 'receiver answered 503' });
      expect(await jobsOf('f1')).toEqual([expect.objectContaining({ state: 'queued', runAfter: 1_796_150_620_461 })]);
    });

    it('an attempt refunded from zero stays at zero', async () => {
      const job = await h.uow.ports.jobs.enqueue({ type: 'process', fileId: 'f1', userId: 'u1' });
      await h.uow.ports.jobs.claim(['process'], claimAll);
      await h.query(`update jobs set attempts = 0 where id = ${job.id}`);
      await h.uow.ports.jobs.requeue(job.id, { runAfter: 1, refundAttempt: true });
      expect(await jobsOf('f1')).toEqual([expect.objectContaining({ attempts: 0 })]);
    });

    it('requeueRunning puts every running job back and counts them', async () => {
      for (const f of ['f1', 'f2', 'f3']) await h.uow.ports.jobs.enqueue({ type: 'process', fileId: f, userId: 'u1' });
      await h.uow.ports.jobs.claim(['process'], claimAll);
      await h.uow.ports.jobs.claim(['process'], claimAll);
      expect(await h.uow.ports.jobs.requeueRunning()).toBe(2);
      expect(await h.uow.ports.jobs.requeueRunning()).toBe(0);
      expect((await h.query("select count(*) as n from jobs where state = 'queued'"))[0]!.n).toBe(3);
    });

    it('cancelForFile removes the file’s waiting jobs, not its running ones nor its webhooks', async () => {
      await h.uow.ports.jobs.enqueue({ type: 'process', fileId: 'f1', userId: 'u1' });
      await h.uow.ports.jobs.claim(['process'], claimAll);
      await h.uow.ports.jobs.enqueue({ type: 'audio', fileId: 'f1', userId: 'u1' });
      await h.uow.ports.jobs.enqueue({ type: 'cover', fileId: 'f1', userId: 'u1' });
      await h.uow.ports.outbox.add('file.deleted', { id: 'f1' }, { fileId: 'f1', userId: 'u1' });
      await h.uow.ports.jobs.enqueue({ type: 'audio', fileId: 'f2', userId: 'u1' });
      expect(await h.uow.ports.jobs.cancelForFile('f1')).toBe(2);
      expect((await jobsOf('f1')).map((j) => [j.type, j.state])).toEqual([
        ['process', 'running'],
        [WEBHOOK_JOB, 'queued'],
      ]);
      expect(await jobsOf('f2')).toHaveLength(1);
      expect(await h.uow.ports.jobs.cancelForFile('f1')).toBe(0);
    });

    it('nextDueAt is the earliest run time of a waiting job of the given types', async () => {
      expect(await h.uow.ports.jobs.nextDueAt(['process'])).toBeUndefined();
      await h.uow.ports.jobs.enqueue({ type: 'process', fileId: 'f1', userId: 'u1', runAfter: 1_796_000_000_000 });
      await h.uow.ports.jobs.enqueue({ type: 'process', fileId: 'f2', userId: 'u1', runAfter: 1_795_000_000_000 });
      await h.uow.ports.jobs.enqueue({ type: 'audio', fileId: 'f3', userId: 'u1', runAfter: 5 });
      expect(await h.uow.ports.jobs.nextDueAt(['process'])).toBe(1_795_000_000_000);
      await h.uow.ports.jobs.claim(['process'], { ...claimAll, at: 1_795_000_000_000 });
      expect(await h.uow.ports.jobs.nextDueAt(['process'])).toBe(1_796_000_000_000);
      expect(await h.uow.ports.jobs.nextDueAt(['process', 'audio'])).toBe(5);
      expect(await h.uow.ports.jobs.nextDueAt(['other'])).toBeUndefined();
    });
  });

  describe('Outbox', () => {
    it('add writes a webhook job carrying the event, one per call', async () => {
      await h.uow.ports.outbox.add('file.ready', { id: 'f1', bytes: 3 }, { fileId: 'f1', userId: 'u1' });
      await h.uow.ports.outbox.add('file.ready', { id: 'f1', bytes: 3 }, { fileId: 'f1', userId: 'u1' });
      const rows = await jobsOf('f1');
      expect(rows).toHaveLength(2);
      expect(rows[0]).toMatchObject({ type: WEBHOOK_JOB, userId: 'u1', state: 'queued' });
      const body = JSON.parse(rows[0]!.payload as string);
      expect(body).toEqual({ id: expect.any(String), type: 'file.ready', createdAt: expect.any(String), data: { id: 'f1', bytes: 3 } });
      expect(new Date(body.createdAt).getTime()).toBe(rows[0]!.runAfter);
      expect(JSON.parse(rows[1]!.payload as string).id).not.toBe(body.id);
      expect(h.fired.queued).toBe(2);
    });

    it('add writes nothing when no receiver is configured', async () => {
      const quiet = await backend({ webhooksEnabled: false });
      extra.push(quiet);
      await quiet.uow.ports.outbox.add('file.ready', { id: 'f1' }, { fileId: 'f1', userId: 'u1' });
      expect(await quiet.query('select * from jobs')).toEqual([]);
      expect(quiet.fired.queued).toBe(0);
    });
  });

  describe('UnitOfWork', () => {
    it('a state change, its webhook and its next job commit together, and the hooks fire once after the commit', async () => {
      const file = await fileIn('processing');
      h.fired.queued = 0;
      h.fired.deliverables = 0;
      const seen: string[] = [];
      const row = await h.uow.run(async (tx) => {
        const committed = await tx.files.commit(file.id, commitInput([variant('0', 10)], { status: 'processing' }));
        await tx.jobs.enqueue({ type: 'audio', fileId: file.id, userId: 'u1' });
        await tx.outbox.add('file.processing', { id: file.id }, { fileId: file.id, userId: 'u1' });
        seen.push(`inside: ${h.fired.queued}/${h.fired.deliverables}`);
        return committed;
      });
      expect(row).toMatchObject({ status: 'processing' });
      expect(seen).toEqual(['inside: 0/0']);
      expect(h.fired).toEqual({ queued: 1, deliverables: 1 });
      expect((await jobsOf(file.id)).map((j) => j.type)).toEqual(['audio', WEBHOOK_JOB]);
    });

    it('a unit that throws leaves nothing behind and fires no hook', async () => {
      const file = await fileIn('processing');
      h.fired.queued = 0;
      h.fired.deliverables = 0;
      await expect(
        h.uow.run(async (tx) => {
          await tx.files.commit(file.id, commitInput([variant('0', 10)]));
          await tx.jobs.enqueue({ type: 'audio', fileId: file.id, userId: 'u1' });
          await tx.outbox.add('file.ready', { id: file.id }, { fileId: file.id, userId: 'u1' });
          throw new Error('boom');
        }),
      ).rejects.toThrow('boom');
      expect(await h.uow.ports.files.get(file.id)).toMatchObject({ status: 'processing', committedAt: null });
      expect(await h.uow.ports.files.variants(file.id)).toEqual([]);
      expect(await jobsOf(file.id)).toEqual([]);
      expect(await user()).toEqual({ quota: 10_000, used: 0, reserved: 150 });
      expect(h.fired).toEqual({ queued: 0, deliverables: 0 });
      // The backend is usable after a rollback.
      expect(await h.uow.ports.files.commit(file.id, commitInput([variant('0', 10)]))).toMatchObject({ status: 'ready' });
    });

    it('a unit started inside a unit joins it (and its calls through uow.ports too): one commit, one rollback', async () => {
      const a = await fileIn('received');
      const b = await fileIn('received');
      await expect(
        h.uow.run(async (tx) => {
          await tx.files.transition(a.id, ['received'], 'processing');
          await h.uow.run((inner) => inner.files.transition(b.id, ['received'], 'processing'));
          await h.uow.ports.jobs.enqueue({ type: 'process', fileId: b.id, userId: 'u1' });
          // The unit sees its own writes made through the joined calls.
          expect(await tx.files.get(b.id)).toMatchObject({ status: 'processing' });
          throw new Error('undo all');
        }),
      ).rejects.toThrow('undo all');
      expect((await h.uow.ports.files.get(a.id))!.status).toBe('received');
      expect((await h.uow.ports.files.get(b.id))!.status).toBe('received');
      expect(await jobsOf(b.id)).toEqual([]);
    });

    it('a call left behind by a finished unit gets a transaction of its own, not the next unit’s', async () => {
      const file = await fileIn('received');
      let go!: () => void;
      const later = new Promise<void>((resolve) => (go = resolve));
      let late: Promise<FileRow | undefined> | undefined;
      // A continuation registered inside the first unit, run once that unit is over.
      await h.uow.run(async () => {
        late = later.then(() => h.uow.ports.files.transition(file.id, ['received'], 'processing'));
      });
      await expect(
        h.uow.run(async (tx) => {
          await tx.jobs.enqueue({ type: 'other', fileId: 'f-other', userId: 'u1' });
          go();
          await new Promise((resolve) => setImmediate(resolve));
          throw new Error('undo this unit only');
        }),
      ).rejects.toThrow('undo this unit only');
      // The late call answered a row: it must have been committed, whatever became of the other unit.
      expect(await late).toMatchObject({ status: 'processing' });
      expect((await h.uow.ports.files.get(file.id))!.status).toBe('processing');
      expect(await jobsOf('f-other')).toEqual([]);
    });

    it('20 concurrent read-then-compare-and-set units: the state ends as the winners left it', async () => {
      // Each unit reads the state and flips it with a compare-and-set; a unit whose read went stale loses.
      const file = await fileIn('received');
      const step = (uow: UnitOfWork) =>
        uow.run(async (tx) => {
          const row = await tx.files.get(file.id);
          const to: FileStatus = row!.status === 'received' ? 'processing' : 'received';
          return tx.files.transition(file.id, [row!.status], to);
        });
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => step(i % 2 ? h.other : h.uow)));
      const won = results.filter(Boolean).length;
      // On one SQLite connection units take turns (all win); on PostgreSQL some read a state another
      // unit changed before their compare-and-set, and lose. Either way the state is the wins' parity.
      expect(won).toBeGreaterThan(0);
      expect((await h.uow.ports.files.get(file.id))!.status).toBe(won % 2 ? 'processing' : 'received');
    });
  });

  describe('under concurrency (on PostgreSQL, every unit on a connection of its own, split over two nodes)', () => {
    it('50 concurrent reservations against a quota that fits exactly 7: exactly 7 succeed and reserved ends exact', async () => {
      await reserved({ reserveBytes: 1 });
      await h.query(`update users set quota_bytes = ${7 * 130 + 1}, reserved_bytes = 1 where id = 'u1'`);
      const outcomes = await Promise.all(
        Array.from({ length: 50 }, (_, i) => (i % 2 ? h.other : h.uow).ports.uploads.reserve(reserveInput({ reserveBytes: 130, length: 100 }))),
      );
      const admitted = outcomes.filter((o) => o.ok);
      expect(admitted).toHaveLength(7);
      expect(outcomes.filter((o) => !o.ok && o.reason === 'quota')).toHaveLength(43);
      expect(await user()).toEqual({ quota: 7 * 130 + 1, used: 0, reserved: 7 * 130 + 1 });
      expect(await fileCount()).toBe(8);
    });

    it('30 concurrent reservations against an unfinished bound of 4: exactly 4 succeed', async () => {
      const outcomes = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          (i % 2 ? h.other : h.uow).ports.uploads.reserve(reserveInput({ reserveBytes: 10, maxUnfinished: { count: 4, bytes: 1_000_000 } })),
        ),
      );
      expect(outcomes.filter((o) => o.ok)).toHaveLength(4);
      expect(outcomes.filter((o) => !o.ok && o.reason === 'unfinished-count')).toHaveLength(26);
      expect(await user()).toMatchObject({ reserved: 40 });
    });

    it('two files committing at once where only one fits: exactly one is charged, usage stays within the quota (10 rounds)', async () => {
      for (let round = 0; round < 10; round++) {
        const userId = `race${round}`;
        const a = await fileIn('processing', { userId, reserveBytes: 300, defaultQuotaBytes: 1_000 });
        const b = await fileIn('processing', { userId, reserveBytes: 300, defaultQuotaBytes: 1_000 });
        // Each weighs 600: one fits (600 + the other's 300 held), both do not.
        const [ra, rb] = await Promise.all([
          h.uow.ports.files.commit(a.id, commitInput([variant('0', 600)])),
          h.other.ports.files.commit(b.id, commitInput([variant('0', 600)])),
        ]);
        expect([ra, rb].filter((r) => r === 'quota')).toHaveLength(1);
        expect([ra, rb].filter((r) => r && r !== 'quota')).toHaveLength(1);
        expect(await user(userId)).toEqual({ quota: 1_000, used: 600, reserved: 300 });
      }
    });

    it('the same file committed twice at once is recorded and charged once (10 rounds)', async () => {
      for (let round = 0; round < 10; round++) {
        const file = await fileIn('processing', { reserveBytes: 500 });
        const results = await Promise.all([
          h.uow.ports.files.commit(file.id, commitInput([variant('0', 100)])),
          h.other.ports.files.commit(file.id, commitInput([variant('0', 100), variant('1', 50)])),
        ]);
        expect(results.filter((r) => r && r !== 'quota')).toHaveLength(1);
        expect(results.filter((r) => r === undefined)).toHaveLength(1);
      }
      const totals = await h.query("select sum(total_bytes) as total from files where user_id = 'u1'");
      expect(await user()).toEqual({ quota: 10_000, used: Number(totals[0]!.total), reserved: 0 });
    });

    it('a file failed and committed at once ends one way, its bytes accounted once', async () => {
      for (let round = 0; round < 10; round++) {
        const file = await fileIn('processing', { reserveBytes: 500 });
        const [committed, failed] = await Promise.all([
          h.uow.ports.files.commit(file.id, commitInput([variant('0', 100)])),
          h.other.ports.files.fail(file.id, 'gave up'),
        ]);
        expect([committed, failed].filter(Boolean)).toHaveLength(1);
      }
      const ready = Number((await h.query("select count(*) as n from files where status = 'ready'"))[0]!.n);
      expect(await user()).toEqual({ quota: 10_000, used: ready * 100, reserved: 0 });
    });

    it("the same track's renditions landing twice at once are charged once and its budget given back once (10 rounds)", async () => {
      for (let round = 0; round < 10; round++) {
        const track = await committedTrack({ keep: 400, original: 100 });
        const results = await Promise.all([
          h.uow.ports.files.addVariants(track.id, [variant('1', 60)], { status: 'ready' }),
          h.other.ports.files.addVariants(track.id, [variant('1', 60)], { status: 'ready' }),
        ]);
        expect(results.map((r) => r && r !== 'quota' && r.totalBytes)).toEqual([160, 160]);
      }
      expect(await user()).toEqual({ quota: 10_000, used: 1_600, reserved: 0 });
      expect(await user()).toEqual({ quota: 10_000, ...(await fromFiles('u1')) });
    });

    it('concurrent compare-and-sets on one file: exactly one wins', async () => {
      const file = await fileIn('uploading');
      const results = await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 ? h.other : h.uow).ports.uploads.markReceived(file.id)));
      expect(results.filter(Boolean)).toHaveLength(1);
      const processing = await Promise.all(
        Array.from({ length: 12 }, (_, i) => (i % 2 ? h.other : h.uow).ports.files.transition(file.id, ['received'], 'processing')),
      );
      expect(processing.filter(Boolean)).toHaveLength(1);
    });

    it('concurrent claims never take the same job: 40 claims for 25 jobs take each job once', async () => {
      for (let i = 0; i < 25; i++) await h.uow.ports.jobs.enqueue({ type: 'process', fileId: `f${i}`, userId: `u${i % 5}` });
      const claims = await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          (i % 2 ? h.other : h.uow).ports.jobs.claim(['process'], { at: Number.MAX_SAFE_INTEGER, afterUser: `u${i % 5}`, busyUsers: [] }),
        ),
      );
      const ids = claims.filter((c) => c !== undefined).map((c) => c.id);
      expect(new Set(ids).size).toBe(ids.length);
      // SKIP LOCKED: a claim that meets a job another claim holds takes the next one rather than failing.
      expect(ids).toHaveLength(25);
      expect((await h.query("select count(*) as n from jobs where state = 'running' and attempts = 1"))[0]!.n).toBe(25);
    });

    it('concurrent enqueues of the same job make one row', async () => {
      const rows = await Promise.all(
        Array.from({ length: 12 }, (_, i) => (i % 2 ? h.other : h.uow).ports.jobs.enqueue({ type: 'process', fileId: 'f1', userId: 'u1' })),
      );
      expect(new Set(rows.map((r) => r.id)).size).toBe(1);
      expect(await jobsOf('f1')).toHaveLength(1);
    });
  });
});

describe('persistence ports on postgres only', () => {
  // What one SQLite connection cannot show: units that are open at the same time.
  let h: Harness;
  beforeAll(async () => {
    h = await pgBackend({ webhooksEnabled: true });
  });
  afterAll(async () => {
    await h?.close();
  });

  /** A promise and its resolver. */
  const gate = () => {
    let open!: () => void;
    const opened = new Promise<void>((resolve) => (open = resolve));
    return { open, opened };
  };

  it('a claim skips a job another node holds in an open unit instead of waiting for it', async () => {
    for (const f of ['s1', 's2']) await h.uow.ports.jobs.enqueue({ type: 'skip', fileId: f, userId: 'u1' });
    const claimed = gate();
    const finish = gate();
    const holder = h.uow.run(async (tx) => {
      const job = await tx.jobs.claim(['skip'], { at: Number.MAX_SAFE_INTEGER, afterUser: '', busyUsers: [] });
      claimed.open();
      await finish.opened;
      return job;
    });
    await claimed.opened;
    // The holder's transaction is still open: its job is locked, not yet 'running' for anyone else.
    const second = await h.other.ports.jobs.claim(['skip'], { at: Number.MAX_SAFE_INTEGER, afterUser: '', busyUsers: [] });
    finish.open();
    const first = await holder;
    expect(first!.fileId).toBe('s1');
    expect(second!.fileId).toBe('s2');
  });

  it('a per-user limit counts the running jobs of every node: a user at the limit on another node waits, others go', async () => {
    const limit = { at: Number.MAX_SAFE_INTEGER, afterUser: '', busyUsers: [] as string[], perUserLimit: 1 };
    for (const [f, u] of [
      ['p1', 'uFair1'],
      ['p2', 'uFair1'],
      ['p3', 'uFair2'],
    ])
      await h.uow.ports.jobs.enqueue({ type: 'fair', fileId: f!, userId: u! });
    // One node runs uFair1's first job; the other node, which runs nothing of uFair1's itself, must skip her.
    expect(await h.uow.ports.jobs.claim(['fair'], limit)).toMatchObject({ fileId: 'p1' });
    expect(await h.other.ports.jobs.claim(['fair'], limit)).toMatchObject({ fileId: 'p3' });
    expect(await h.other.ports.jobs.claim(['fair'], limit)).toBeUndefined();
    // Without the limit (one node's view only), the same claim would have taken her second job.
    expect(await h.other.ports.jobs.claim(['fair'], { ...limit, perUserLimit: undefined })).toMatchObject({ fileId: 'p2' });
  });

  it('a unit PostgreSQL aborts as a deadlock runs again and commits', async () => {
    const a = (await h.uow.ports.uploads.reserve(reserveFor('d1'))) as { file: FileRow };
    const b = (await h.uow.ports.uploads.reserve(reserveFor('d2'))) as { file: FileRow };
    const bothLocked = { count: 0, ready: gate() };
    let runs = 0;
    // Each unit locks one file, waits until the other has locked the other, then wants the other's.
    const crossing = (uow: UnitOfWork, first: string, second: string) =>
      uow.run(async (tx) => {
        runs++;
        await tx.files.transition(first, ['uploading', 'received'], 'received');
        if (++bothLocked.count === 2) bothLocked.ready.open();
        await bothLocked.ready.opened;
        return tx.files.transition(second, ['uploading', 'received'], 'received');
      });
    retried.length = 0;
    const results = await Promise.all([crossing(h.uow, a.file.id, b.file.id), crossing(h.other, b.file.id, a.file.id)]);
    expect(results.map((r) => r?.status)).toEqual(['received', 'received']);
    // One of the two was chosen as the deadlock's victim (40P01) and ran a second time.
    expect(retried).toEqual(['40P01']);
    expect(runs).toBe(3);
  });

  it("a unit's writes stay invisible to other nodes until it commits", async () => {
    const written = gate();
    const finish = gate();
    const unit = h.uow.run(async (tx) => {
      await tx.jobs.enqueue({ type: 'hidden', fileId: 'h1', userId: 'u1', runAfter: 7 });
      written.open();
      await finish.opened;
    });
    await written.opened;
    expect(await h.other.ports.jobs.nextDueAt(['hidden'])).toBeUndefined();
    expect(await h.other.ports.jobs.claim(['hidden'], { at: Number.MAX_SAFE_INTEGER, afterUser: '', busyUsers: [] })).toBeUndefined();
    finish.open();
    await unit;
    expect(await h.other.ports.jobs.nextDueAt(['hidden'])).toBe(7);
    // Every connection went back to the pool outside any transaction.
    const [open] = await h.query("select count(*) as n from pg_stat_activity where datname = current_database() and state like 'idle in transaction%'");
    expect(open!.n).toBe(0);
  });

  function reserveFor(id: string): ReserveUploadInput {
    return {
      userId: 'u1',
      purpose: 'avatar',
      kind: 'image',
      filename: 'a.jpg',
      mimeType: 'image/jpeg',
      length: 1,
      reserveBytes: 1,
      visibility: 'public',
      defaultQuotaBytes: 10_000,
      expiresAt: 5_000_000,
      maxUnfinished: { count: 100, bytes: 1_000_000 },
      newId: () => id,
      newDeliveryToken: () => `tok-${id}`,
    };
  }
});
