import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { and, asc, eq, gt, inArray, lte, ne, notInArray, or, sql } from 'drizzle-orm';
import type { Db } from './index.js';
import {
  WEBHOOK_JOB,
  addedVariantsFacts,
  committedFileRow,
  newUploadRow,
  storedStatuses,
  wholeMs,
  type CommitInput,
  type FileCatalogue,
  type JobQueue,
  type NewJob,
  type Outbox,
  type Ports,
  type ReserveOutcome,
  type ReserveUploadInput,
  type UnitOfWork,
  type UploadLedger,
} from './ports.js';
import { files, jobs, refusedUploads, users, variants, type FileRow, type FileStatus, type JobRow } from './schema.js';

// The ports on better-sqlite3. Statements are synchronous; a unit of work holds an in-process mutex
// around BEGIN IMMEDIATE … COMMIT so two units never interleave on the one connection. Quota checks are
// guarded UPDATEs (… WHERE used + reserved + n <= quota), which PostgreSQL runs the same way.

export { WEBHOOK_JOB };

export type SqlitePortsOptions = {
  /** Outbox rows are only written when a receiver is configured. */
  webhooksEnabled: boolean;
  /** After a commit that queued jobs: wake the runner in-process. */
  onJobsQueued?: () => void;
  /** After a commit that changed what is deliverable (new variants, a delete): once per file changed. */
  onDeliverablesChanged?: (fileId: string) => void;
};

export function createSqlitePorts(db: Db, opts: SqlitePortsOptions): UnitOfWork {
  const now = () => Date.now();
  let queued = false;
  const deliverables = new Set<string>();
  // Marks the async context of the open unit, so a unit started inside it joins it (and only while it is
  // open: a continuation it left behind that runs later must queue for a transaction of its own, or its
  // statements would land in whichever unit holds the connection then and be undone with it).
  const inUnit = new AsyncLocalStorage<{ open: boolean }>();

  const uploads: UploadLedger = {
    async reserve(input: ReserveUploadInput): Promise<ReserveOutcome> {
      db.insert(users).values({ id: input.userId, quotaBytes: input.defaultQuotaBytes, createdAt: now() }).onConflictDoNothing().run();
      const held = db
        .select({ count: sql<number>`count(*)`, bytes: sql<number>`coalesce(sum(${files.uploadLength}), 0)` })
        .from(files)
        .where(and(eq(files.userId, input.userId), eq(files.status, 'uploading')))
        .get() ?? { count: 0, bytes: 0 };
      if (held.count + 1 > input.maxUnfinished.count) return { ok: false, reason: 'unfinished-count', held };
      if (held.bytes + input.length > input.maxUnfinished.bytes) return { ok: false, reason: 'unfinished-bytes', held };
      const admitted = db
        .update(users)
        .set({ reservedBytes: sql`${users.reservedBytes} + ${input.reserveBytes}` })
        .where(and(eq(users.id, input.userId), sql`${users.usedBytes} + ${users.reservedBytes} + ${input.reserveBytes} <= ${users.quotaBytes}`))
        .returning({ id: users.id })
        .get();
      if (!admitted) {
        const user = db.select().from(users).where(eq(users.id, input.userId)).get()!;
        return { ok: false, reason: 'quota', freeBytes: Math.max(0, user.quotaBytes - user.usedBytes - user.reservedBytes) };
      }
      const at = now();
      for (let attempt = 0; ; attempt++) {
        const inserted = db.insert(files).values(newUploadRow(input, at)).onConflictDoNothing().returning().get();
        if (inserted) return { ok: true, file: inserted };
        if (attempt >= 5) throw new Error('Could not allocate a unique file id.');
      }
    },

    async markReceived(fileId) {
      return db
        .update(files)
        .set({ status: 'received', expiresAt: null, updatedAt: now() })
        .where(and(eq(files.id, fileId), eq(files.status, 'uploading')))
        .returning()
        .get();
    },

    async extendExpiry(fileId, expiresAt) {
      db.update(files)
        .set({ expiresAt })
        .where(and(eq(files.id, fileId), eq(files.status, 'uploading'), sql`${files.expiresAt} < ${expiresAt}`))
        .run();
    },

    async recordUploadOffset(fileId, offset) {
      db.update(files)
        .set({ uploadOffset: offset })
        .where(and(eq(files.id, fileId), eq(files.status, 'uploading')))
        .run();
    },

    async uploadOffset(fileId) {
      const row = db
        .select({ offset: files.uploadOffset })
        .from(files)
        .where(and(eq(files.id, fileId), eq(files.status, 'uploading')))
        .get();
      return row?.offset ?? null;
    },

    async release(fileId, from) {
      const file = db
        .delete(files)
        .where(and(eq(files.id, fileId), inArray(files.status, [...from]), sql`${files.committedAt} is null`))
        .returning()
        .get();
      if (!file) return undefined;
      db.update(users)
        .set({ reservedBytes: sql`${users.reservedBytes} - ${file.reservedBytes}` })
        .where(eq(users.id, file.userId))
        .run();
      db.delete(jobs)
        .where(and(eq(jobs.fileId, fileId), eq(jobs.state, 'queued'), sql`${jobs.type} <> ${WEBHOOK_JOB}`))
        .run();
      return file;
    },

    async recordRefusal(row) {
      db.insert(refusedUploads).values(row).onConflictDoUpdate({ target: refusedUploads.id, set: row }).run();
    },

    async refusal(fileId) {
      return db.select().from(refusedUploads).where(eq(refusedUploads.id, fileId)).get();
    },

    async dropExpiredRefusals(at) {
      return db.delete(refusedUploads).where(lte(refusedUploads.expiresAt, at)).run().changes;
    },
  };

  const catalogue: FileCatalogue = {
    async get(fileId) {
      return db.select().from(files).where(eq(files.id, fileId)).get();
    },

    async transition(fileId, from, to, patch = {}) {
      const row = db
        .update(files)
        .set({ status: to, updatedAt: now(), ...(patch.error !== undefined ? { error: patch.error } : {}) })
        .where(and(eq(files.id, fileId), inArray(files.status, [...from])))
        .returning()
        .get();
      if (row && to === 'deleting') deliverables.add(fileId);
      return row;
    },

    async commit(fileId, input: CommitInput) {
      const file = db
        .select()
        .from(files)
        .where(and(eq(files.id, fileId), eq(files.status, 'processing'), sql`${files.committedAt} is null`))
        .get();
      if (!file) return undefined;
      const totalBytes = input.variants.reduce((sum, v) => sum + v.bytes, 0);
      const keep = Math.min(input.keepReservedBytes, file.reservedBytes);
      // Usage never passes the quota: the file's own reservation is swapped for what it really weighs
      // (plus the budget it keeps), and only if that fits beside everything else held.
      const charged = db
        .update(users)
        .set({
          reservedBytes: sql`${users.reservedBytes} - ${file.reservedBytes} + ${keep}`,
          usedBytes: sql`${users.usedBytes} + ${totalBytes}`,
        })
        .where(
          and(
            eq(users.id, file.userId),
            sql`${users.usedBytes} + ${users.reservedBytes} - ${file.reservedBytes} + ${keep} + ${totalBytes} <= ${users.quotaBytes}`,
          ),
        )
        .returning({ id: users.id })
        .get();
      if (!charged) return 'quota';
      db.insert(variants)
        .values(input.variants.map((v) => ({ ...v, fileId })))
        .run();
      deliverables.add(fileId);
      const original = input.variants.find((v) => v.name === '0');
      return db
        .update(files)
        .set(committedFileRow(input, { originalBytes: original?.bytes ?? 0, totalBytes, keep, at: now() }))
        .where(eq(files.id, fileId))
        .returning()
        .get();
    },

    async fail(fileId, reason) {
      const file = db
        .select()
        .from(files)
        .where(and(eq(files.id, fileId), inArray(files.status, ['received', 'processing']), sql`${files.committedAt} is null`))
        .get();
      if (!file) return undefined;
      db.update(users)
        .set({ reservedBytes: sql`${users.reservedBytes} - ${file.reservedBytes}` })
        .where(eq(users.id, file.userId))
        .run();
      return db
        .update(files)
        .set({ status: 'failed', error: reason, reservedBytes: 0, totalBytes: 0, committedAt: now(), updatedAt: now() })
        .where(eq(files.id, fileId))
        .returning()
        .get();
    },

    async variants(fileId) {
      return db.select().from(variants).where(eq(variants.fileId, fileId)).orderBy(asc(variants.name)).all();
    },

    async addVariants(fileId, added, patch = {}) {
      const file = db
        .select()
        .from(files)
        .where(and(eq(files.id, fileId), ne(files.status, 'deleting'), sql`${files.committedAt} is not null`))
        .get();
      if (!file) return undefined;
      const existing = added.length
        ? db
            .select()
            .from(variants)
            .where(
              and(
                eq(variants.fileId, fileId),
                inArray(
                  variants.name,
                  added.map((v) => v.name),
                ),
              ),
            )
            .all()
        : [];
      const { delta, row } = addedVariantsFacts(file, added, existing, patch, now());
      // The owner's row alone: or() keeps the guard one conjunct (and() does not bracket a bare OR).
      const charged = db
        .update(users)
        .set({ usedBytes: sql`${users.usedBytes} + ${delta}`, reservedBytes: sql`${users.reservedBytes} - ${file.reservedBytes}` })
        .where(
          and(
            eq(users.id, file.userId),
            or(sql`${delta} <= 0`, sql`${users.usedBytes} + ${users.reservedBytes} - ${file.reservedBytes} + ${delta} <= ${users.quotaBytes}`),
          ),
        )
        .returning({ id: users.id })
        .get();
      if (!charged) return 'quota';
      for (const v of added) {
        db.insert(variants)
          .values({ ...v, fileId })
          .onConflictDoUpdate({
            target: [variants.fileId, variants.name],
            set: { path: v.path, mimeType: v.mimeType, bytes: v.bytes, width: v.width, height: v.height },
          })
          .run();
      }
      deliverables.add(fileId);
      return db.update(files).set(row).where(eq(files.id, fileId)).returning().get();
    },

    async beginDelete(fileId) {
      const file = db
        .select()
        .from(files)
        .where(and(eq(files.id, fileId), inArray(files.status, [...storedStatuses])))
        .get();
      if (!file) return undefined;
      db.update(users)
        .set({ usedBytes: sql`${users.usedBytes} - ${file.totalBytes}`, reservedBytes: sql`${users.reservedBytes} - ${file.reservedBytes}` })
        .where(eq(users.id, file.userId))
        .run();
      deliverables.add(fileId);
      return db.update(files).set({ status: 'deleting', totalBytes: 0, reservedBytes: 0, updatedAt: now() }).where(eq(files.id, fileId)).returning().get();
    },
  };

  const jobQueue: JobQueue = {
    async enqueue(job: NewJob) {
      const at = now();
      if (!job.payload) {
        const pending = db
          .select()
          .from(jobs)
          .where(and(eq(jobs.fileId, job.fileId), eq(jobs.type, job.type), inArray(jobs.state, ['queued', 'running'])))
          .get();
        if (pending) return pending;
      }
      queued = true;
      return db
        .insert(jobs)
        .values({
          fileId: job.fileId,
          userId: job.userId,
          type: job.type,
          payload: job.payload ?? null,
          state: 'queued',
          runAfter: wholeMs(job.runAfter ?? at),
          createdAt: at,
          updatedAt: at,
        })
        .returning()
        .get();
    },

    async claim(types, { at, afterUser, busyUsers }) {
      const due = and(
        eq(jobs.state, 'queued'),
        lte(jobs.runAfter, at),
        inArray(jobs.type, [...types]),
        busyUsers.length ? notInArray(jobs.userId, [...busyUsers]) : undefined,
      );
      const pick = (cond: ReturnType<typeof and>) =>
        db.select({ id: jobs.id }).from(jobs).where(cond).orderBy(asc(jobs.userId), asc(jobs.runAfter), asc(jobs.id)).limit(1).get();
      const next = pick(and(due, gt(jobs.userId, afterUser))) ?? pick(due);
      if (!next) return undefined;
      return db
        .update(jobs)
        .set({ state: 'running', attempts: sql`${jobs.attempts} + 1`, updatedAt: now() })
        .where(and(eq(jobs.id, next.id), eq(jobs.state, 'queued')))
        .returning()
        .get();
    },

    async finish(id, outcome) {
      db.update(jobs)
        .set({ state: outcome.state, error: outcome.error ?? null, updatedAt: now() })
        .where(eq(jobs.id, id))
        .run();
    },

    async requeue(id, o) {
      db.update(jobs)
        .set({
          state: 'queued',
          runAfter: wholeMs(o.runAfter),
          error: o.error ?? null,
          attempts: o.refundAttempt ? sql`max(0, ${jobs.attempts} - 1)` : jobs.attempts,
          updatedAt: now(),
        })
        .where(and(eq(jobs.id, id), eq(jobs.state, 'running')))
        .run();
    },

    async requeueRunning() {
      return db.update(jobs).set({ state: 'queued', runAfter: now(), updatedAt: now() }).where(eq(jobs.state, 'running')).run().changes;
    },

    async cancelForFile(fileId) {
      return db
        .delete(jobs)
        .where(and(eq(jobs.fileId, fileId), eq(jobs.state, 'queued'), sql`${jobs.type} <> ${WEBHOOK_JOB}`))
        .run().changes;
    },

    async nextDueAt(types) {
      const row = db
        .select({ at: sql<number | null>`min(${jobs.runAfter})` })
        .from(jobs)
        .where(and(eq(jobs.state, 'queued'), inArray(jobs.type, [...types])))
        .get();
      return row?.at ?? undefined;
    },
  };

  const outbox: Outbox = {
    async add(event, data, link) {
      if (!opts.webhooksEnabled) return;
      const createdAt = now();
      const payload = JSON.stringify({ id: randomUUID(), type: event, createdAt: new Date(createdAt).toISOString(), data });
      await jobQueue.enqueue({ type: WEBHOOK_JOB, fileId: link.fileId, userId: link.userId, payload, runAfter: createdAt });
    },
  };

  const ports: Ports = { uploads, files: catalogue, jobs: jobQueue, outbox };

  // One unit at a time on the connection; a unit started inside another joins it.
  let tail: Promise<unknown> = Promise.resolve();

  function afterCommit(): void {
    const wake = queued;
    const changed = [...deliverables];
    queued = false;
    deliverables.clear();
    for (const fileId of changed) opts.onDeliverablesChanged?.(fileId);
    if (wake) opts.onJobsQueued?.();
  }

  async function inTransaction<T>(work: (tx: Ports) => Promise<T>): Promise<T> {
    db.$client.exec('BEGIN IMMEDIATE');
    const unit = { open: true };
    try {
      const result = await inUnit.run(unit, () => work(ports));
      unit.open = false;
      db.$client.exec('COMMIT');
      afterCommit();
      return result;
    } catch (err) {
      unit.open = false;
      if (db.$client.inTransaction) db.$client.exec('ROLLBACK');
      queued = false;
      deliverables.clear();
      throw err;
    }
  }

  const uow: UnitOfWork = {
    run<T>(work: (tx: Ports) => Promise<T>): Promise<T> {
      if (inUnit.getStore()?.open) return work(ports);
      const run = tail.then(() => inTransaction(work));
      tail = run.catch(() => undefined);
      return run;
    },
    // Single calls outside a unit are one statement group each; wrap them so their hooks fire too.
    ports: wrapEach(ports, (call) => uow.run(() => call())),
  };
  return uow;
}

type AnyPorts = Record<string, Record<string, (...args: never[]) => Promise<unknown>>>;

function wrapEach(ports: Ports, run: <T>(call: () => Promise<T>) => Promise<T>): Ports {
  const wrapped: AnyPorts = {};
  for (const [name, port] of Object.entries(ports as unknown as AnyPorts)) {
    wrapped[name] = Object.fromEntries(Object.entries(port).map(([method, fn]) => [method, (...args: never[]) => run(() => fn(...args))]));
  }
  return wrapped as unknown as Ports;
}

export type { FileRow, FileStatus, JobRow };
