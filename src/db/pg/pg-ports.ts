import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { and, asc, eq, inArray, lte, ne, notInArray, or, sql } from 'drizzle-orm';
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import type pg from 'pg';
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
} from '../ports.js';
import type { FileRow, JobRow, RefusedUploadRow, VariantRow } from '../schema.js';
import { advisoryKey } from './connection.js';
import type { JobLeases } from './node-session.js';
import * as schema from './schema.js';
import { files, jobs, refusedUploads, users, variants } from './schema.js';

// The ports on PostgreSQL, with the semantics of sqlite-ports.ts. A unit of work is one READ COMMITTED
// transaction on one pooled client; what SQLite gets from running one unit at a time is had here from
// row locks: a guarded UPDATE re-checks its WHERE on the row another transaction just committed, the
// file a commit or a failure is about is locked FOR UPDATE before it is read, a reservation locks its
// user's row before counting unfinished uploads, jobs are claimed FOR UPDATE SKIP LOCKED and an enqueue
// that de-duplicates holds a transaction advisory lock on (file, type). A deadlock or serialization
// failure reruns the unit from the start (units only call their ports, so that is safe).

export type PgPortsOptions = {
  /** Outbox rows are only written when a receiver is configured. */
  webhooksEnabled: boolean;
  /** After a commit that queued jobs: wake the runner in-process. */
  onJobsQueued?: () => void;
  /** After a commit that changed what is deliverable (new variants, a delete): once per file changed. */
  onDeliverablesChanged?: (fileId: string) => void;
  /** How many times a unit is run when PostgreSQL aborts it as a deadlock or serialization failure. */
  maxAttempts?: number;
  /** A unit PostgreSQL aborted is about to run again (for a log line). */
  onRetry?: (err: unknown, attempt: number) => void;
  /**
   * This node's leases on the jobs it runs (node-session.ts). With them, requeueRunning() puts back
   * only jobs whose node is gone, so any node may call it at any time; without them (one node), all.
   */
  leases?: JobLeases;
};

type PgDb = NodePgDatabase<typeof schema>;
// Columns read back through their schema type (bigint as number); a computed value (count, sum, min)
// comes as PostgreSQL's text for int8/numeric, because drizzle passes its own type parsers: hence mapWith(Number).
/** What one transaction's commit should announce. */
type Effects = { queued: boolean; deliverables: Set<string> };
type OpenUnit = { ports: Ports; open: boolean };

// Text compared and ordered byte-wise, as SQLite does, whatever the database's collation: the
// round-robin order of users and the order of variant names are the same on both backends.
const byteOrder = (column: typeof jobs.userId | typeof variants.name) => sql`${column} collate "C"`;

// 40001 serialization_failure, 40P01 deadlock_detected: the transaction was aborted and may simply run again.
const RETRYABLE = new Set(['40001', '40P01']);
function retryable(err: unknown): boolean {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string' && RETRYABLE.has(e.code)) return true;
  }
  return false;
}

function bindPorts(db: PgDb, effects: Effects, opts: PgPortsOptions): Ports {
  const now = () => Date.now();

  const uploads: UploadLedger = {
    async reserve(input: ReserveUploadInput): Promise<ReserveOutcome> {
      await db.insert(users).values({ id: input.userId, quotaBytes: input.defaultQuotaBytes, createdAt: now() }).onConflictDoNothing();
      // The unfinished-upload bounds are a count: the user's row lock makes this user's reservations
      // take turns, so two of them never both see room for one more.
      const [user] = await db.select().from(users).where(eq(users.id, input.userId)).for('update');
      const [held = { count: 0, bytes: 0 }] = await db
        .select({ count: sql<number>`count(*)`.mapWith(Number), bytes: sql<number>`coalesce(sum(${files.uploadLength}), 0)`.mapWith(Number) })
        .from(files)
        .where(and(eq(files.userId, input.userId), eq(files.status, 'uploading')));
      if (held.count + 1 > input.maxUnfinished.count) return { ok: false, reason: 'unfinished-count', held };
      if (held.bytes + input.length > input.maxUnfinished.bytes) return { ok: false, reason: 'unfinished-bytes', held };
      const [admitted] = await db
        .update(users)
        .set({ reservedBytes: sql`${users.reservedBytes} + ${input.reserveBytes}` })
        .where(and(eq(users.id, input.userId), sql`${users.usedBytes} + ${users.reservedBytes} + ${input.reserveBytes} <= ${users.quotaBytes}`))
        .returning({ id: users.id });
      if (!admitted) return { ok: false, reason: 'quota', freeBytes: Math.max(0, user!.quotaBytes - user!.usedBytes - user!.reservedBytes) };
      const at = now();
      for (let attempt = 0; ; attempt++) {
        const [inserted] = await db.insert(files).values(newUploadRow(input, at)).onConflictDoNothing().returning();
        if (inserted) return { ok: true, file: inserted };
        if (attempt >= 5) throw new Error('Could not allocate a unique file id.');
      }
    },

    async markReceived(fileId) {
      const [row] = await db
        .update(files)
        .set({ status: 'received', expiresAt: null, updatedAt: now() })
        .where(and(eq(files.id, fileId), eq(files.status, 'uploading')))
        .returning();
      return row;
    },

    async extendExpiry(fileId, expiresAt) {
      await db
        .update(files)
        .set({ expiresAt })
        .where(and(eq(files.id, fileId), eq(files.status, 'uploading'), sql`${files.expiresAt} < ${expiresAt}`));
    },

    async recordUploadOffset(fileId, offset) {
      await db
        .update(files)
        .set({ uploadOffset: offset })
        .where(and(eq(files.id, fileId), eq(files.status, 'uploading')));
    },

    async uploadOffset(fileId) {
      const [row] = await db
        .select({ offset: files.uploadOffset })
        .from(files)
        .where(and(eq(files.id, fileId), eq(files.status, 'uploading')));
      return row?.offset ?? null;
    },

    async release(fileId, from) {
      const [file] = await db
        .delete(files)
        .where(and(eq(files.id, fileId), inArray(files.status, [...from]), sql`${files.committedAt} is null`))
        .returning();
      if (!file) return undefined;
      await db
        .update(users)
        .set({ reservedBytes: sql`${users.reservedBytes} - ${file.reservedBytes}` })
        .where(eq(users.id, file.userId));
      await db.delete(jobs).where(and(eq(jobs.fileId, fileId), eq(jobs.state, 'queued'), sql`${jobs.type} <> ${WEBHOOK_JOB}`));
      return file;
    },

    async recordRefusal(row: RefusedUploadRow) {
      await db.insert(refusedUploads).values(row).onConflictDoUpdate({ target: refusedUploads.id, set: row });
    },

    async refusal(fileId) {
      const [row] = await db.select().from(refusedUploads).where(eq(refusedUploads.id, fileId));
      return row;
    },

    async dropExpiredRefusals(at) {
      return (await db.delete(refusedUploads).where(lte(refusedUploads.expiresAt, at))).rowCount ?? 0;
    },
  };

  /** The file's row, locked until the unit ends, if it is an uncommitted one in one of `states`. */
  async function lockUncommitted(fileId: string, states: FileRow['status'][]): Promise<FileRow | undefined> {
    const [file] = await db
      .select()
      .from(files)
      .where(and(eq(files.id, fileId), inArray(files.status, states), sql`${files.committedAt} is null`))
      .for('update');
    return file;
  }

  const catalogue: FileCatalogue = {
    async get(fileId) {
      const [row] = await db.select().from(files).where(eq(files.id, fileId));
      return row;
    },

    async transition(fileId, from, to, patch = {}) {
      const [row] = await db
        .update(files)
        .set({ status: to, updatedAt: now(), ...(patch.error !== undefined ? { error: patch.error } : {}) })
        .where(and(eq(files.id, fileId), inArray(files.status, [...from])))
        .returning();
      if (row && to === 'deleting') effects.deliverables.add(fileId);
      return row;
    },

    async commit(fileId, input: CommitInput) {
      // Locked before it is read: a second commit of the same file waits here, then finds it committed.
      const file = await lockUncommitted(fileId, ['processing']);
      if (!file) return undefined;
      const totalBytes = input.variants.reduce((sum, v) => sum + v.bytes, 0);
      const keep = Math.min(input.keepReservedBytes, file.reservedBytes);
      const [charged] = await db
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
        .returning({ id: users.id });
      if (!charged) return 'quota';
      if (input.variants.length) await db.insert(variants).values(input.variants.map((v) => ({ ...v, fileId })));
      effects.deliverables.add(fileId);
      const original = input.variants.find((v) => v.name === '0');
      const [row] = await db
        .update(files)
        .set(committedFileRow(input, { originalBytes: original?.bytes ?? 0, totalBytes, keep, at: now() }))
        .where(eq(files.id, fileId))
        .returning();
      return row;
    },

    async fail(fileId, reason) {
      const file = await lockUncommitted(fileId, ['received', 'processing']);
      if (!file) return undefined;
      await db
        .update(users)
        .set({ reservedBytes: sql`${users.reservedBytes} - ${file.reservedBytes}` })
        .where(eq(users.id, file.userId));
      const [row] = await db
        .update(files)
        .set({ status: 'failed', error: reason, reservedBytes: 0, totalBytes: 0, committedAt: now(), updatedAt: now() })
        .where(eq(files.id, fileId))
        .returning();
      return row;
    },

    async variants(fileId): Promise<VariantRow[]> {
      return db.select().from(variants).where(eq(variants.fileId, fileId)).orderBy(byteOrder(variants.name));
    },

    async addVariants(fileId, added, patch = {}) {
      // Locked before it is read: a second call for the same file waits, then finds the budget spent.
      const [file] = await db
        .select()
        .from(files)
        .where(and(eq(files.id, fileId), ne(files.status, 'deleting'), sql`${files.committedAt} is not null`))
        .for('update');
      if (!file) return undefined;
      const existing = added.length
        ? await db
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
        : [];
      const { delta, row } = addedVariantsFacts(file, added, existing, patch, now());
      // The owner's row alone: or() keeps the guard one conjunct (and() does not bracket a bare OR).
      const [charged] = await db
        .update(users)
        .set({ usedBytes: sql`${users.usedBytes} + ${delta}`, reservedBytes: sql`${users.reservedBytes} - ${file.reservedBytes}` })
        .where(
          and(
            eq(users.id, file.userId),
            or(sql`cast(${delta} as bigint) <= 0`, sql`${users.usedBytes} + ${users.reservedBytes} - ${file.reservedBytes} + ${delta} <= ${users.quotaBytes}`),
          ),
        )
        .returning({ id: users.id });
      if (!charged) return 'quota';
      for (const v of added) {
        await db
          .insert(variants)
          .values({ ...v, fileId })
          .onConflictDoUpdate({
            target: [variants.fileId, variants.name],
            set: { path: v.path, mimeType: v.mimeType, bytes: v.bytes, width: v.width, height: v.height },
          });
      }
      effects.deliverables.add(fileId);
      const [updated] = await db.update(files).set(row).where(eq(files.id, fileId)).returning();
      return updated;
    },

    async beginDelete(fileId) {
      const [file] = await db
        .select()
        .from(files)
        .where(and(eq(files.id, fileId), inArray(files.status, [...storedStatuses])))
        .for('update');
      if (!file) return undefined;
      await db
        .update(users)
        .set({ usedBytes: sql`${users.usedBytes} - ${file.totalBytes}`, reservedBytes: sql`${users.reservedBytes} - ${file.reservedBytes}` })
        .where(eq(users.id, file.userId));
      effects.deliverables.add(fileId);
      const [row] = await db
        .update(files)
        .set({ status: 'deleting', totalBytes: 0, reservedBytes: 0, updatedAt: now() })
        .where(eq(files.id, fileId))
        .returning();
      return row;
    },
  };

  const jobQueue: JobQueue = {
    async enqueue(job: NewJob): Promise<JobRow> {
      const at = now();
      if (!job.payload) {
        // Two units queueing the same job take turns here, so the second finds the first's row.
        await db.execute(sql`select pg_advisory_xact_lock(${advisoryKey('chipmunk-job', `${job.fileId}\0${job.type}`)}::bigint)`);
        const [pending] = await db
          .select()
          .from(jobs)
          .where(and(eq(jobs.fileId, job.fileId), eq(jobs.type, job.type), inArray(jobs.state, ['queued', 'running'])))
          .limit(1);
        if (pending) return pending;
      }
      effects.queued = true;
      const [row] = await db
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
        .returning();
      return row!;
    },

    async claim(types, { at, afterUser, busyUsers, perUserLimit }) {
      // Round-robin: users after `afterUser` first (in byte order), then wrapping around; a job another
      // node is claiming right now is skipped rather than waited for.
      const [next] = await db
        .select({ id: jobs.id })
        .from(jobs)
        .where(
          and(
            eq(jobs.state, 'queued'),
            lte(jobs.runAfter, at),
            inArray(jobs.type, [...types]),
            busyUsers.length ? notInArray(jobs.userId, [...busyUsers]) : undefined,
            // Fair across nodes: a user whose jobs already fill the limit on all nodes together waits.
            perUserLimit === undefined
              ? undefined
              : sql`${jobs.userId} not in (select r.user_id from jobs r where r.state = 'running' and r.type in ${[...types]} group by r.user_id having count(*) >= ${perUserLimit})`,
          ),
        )
        .orderBy(sql`${byteOrder(jobs.userId)} > ${afterUser} desc`, byteOrder(jobs.userId), asc(jobs.runAfter), asc(jobs.id))
        .limit(1)
        .for('update', { skipLocked: true });
      if (!next) return undefined;
      const [row] = await db
        .update(jobs)
        .set({ state: 'running', attempts: sql`${jobs.attempts} + 1`, updatedAt: now() })
        .where(and(eq(jobs.id, next.id), eq(jobs.state, 'queued')))
        .returning();
      // Taken before the claim commits: a failure here leaves the job queued.
      if (row) await opts.leases?.take(row.id);
      return row;
    },

    async finish(id, outcome) {
      await db
        .update(jobs)
        .set({ state: outcome.state, error: outcome.error ?? null, updatedAt: now() })
        .where(eq(jobs.id, id));
      await opts.leases?.drop(id);
    },

    async requeue(id, o) {
      await db
        .update(jobs)
        .set({
          state: 'queued',
          runAfter: wholeMs(o.runAfter),
          error: o.error ?? null,
          attempts: o.refundAttempt ? sql`greatest(0, ${jobs.attempts} - 1)` : jobs.attempts,
          updatedAt: now(),
        })
        .where(and(eq(jobs.id, id), eq(jobs.state, 'running')));
      await opts.leases?.drop(id);
    },

    async requeueRunning() {
      const requeue = async (ids?: number[]) =>
        (
          await db
            .update(jobs)
            .set({ state: 'queued', runAfter: now(), updatedAt: now() })
            .where(and(eq(jobs.state, 'running'), ids ? inArray(jobs.id, ids) : undefined))
        ).rowCount ?? 0;
      if (!opts.leases) return requeue();
      const running = (await db.select({ id: jobs.id }).from(jobs).where(eq(jobs.state, 'running'))).map((r) => r.id);
      const orphans = await opts.leases.orphaned(running);
      try {
        return orphans.length ? await requeue(orphans) : 0;
      } finally {
        await opts.leases.release(orphans);
      }
    },

    async cancelForFile(fileId) {
      return (await db.delete(jobs).where(and(eq(jobs.fileId, fileId), eq(jobs.state, 'queued'), sql`${jobs.type} <> ${WEBHOOK_JOB}`))).rowCount ?? 0;
    },

    async nextDueAt(types) {
      const [row] = await db
        .select({ at: sql<number | null>`min(${jobs.runAfter})`.mapWith(Number) })
        .from(jobs)
        .where(and(eq(jobs.state, 'queued'), inArray(jobs.type, [...types])));
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

  return { uploads, files: catalogue, jobs: jobQueue, outbox };
}

/** The ports over a pool made by `createPgPool` (its int8 parser reads byte counts and times as numbers). */
export function createPgPorts(pool: pg.Pool, opts: PgPortsOptions): UnitOfWork {
  const maxAttempts = Math.max(1, opts.maxAttempts ?? 5);
  // The unit open in this async context; a unit started inside it joins it, but only while it is open
  // (a callback it left behind that runs later gets a transaction of its own).
  const current = new AsyncLocalStorage<OpenUnit>();

  async function once<T>(work: (tx: Ports) => Promise<T>): Promise<{ result: T; effects: Effects }> {
    const client = await pool.connect();
    const effects: Effects = { queued: false, deliverables: new Set() };
    const unit: OpenUnit = { ports: bindPorts(drizzle(client, { schema }), effects, opts), open: true };
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await current.run(unit, () => work(unit.ports));
      await client.query('COMMIT');
      return { result, effects };
    } catch (err) {
      await client.query('ROLLBACK').catch((e: Error) => (broken = e));
      throw err;
    } finally {
      unit.open = false;
      // A client whose ROLLBACK failed is in an unknown state: it leaves the pool.
      client.release(broken);
    }
  }

  async function inTransaction<T>(work: (tx: Ports) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        const { result, effects } = await once(work);
        for (const fileId of effects.deliverables) opts.onDeliverablesChanged?.(fileId);
        if (effects.queued) opts.onJobsQueued?.();
        return result;
      } catch (err) {
        if (attempt >= maxAttempts || !retryable(err)) throw err;
        opts.onRetry?.(err, attempt);
      }
    }
  }

  const uow: UnitOfWork = {
    run<T>(work: (tx: Ports) => Promise<T>): Promise<T> {
      const open = current.getStore();
      if (open?.open) return work(open.ports);
      return inTransaction(work);
    },
    ports: wrapEach((call) => uow.run(call), opts),
  };
  return uow;
}

/** Ports whose every call is `uow.run` of the same call on the unit's ports (a transaction each, or the open unit's). */
function wrapEach(run: <T>(work: (tx: Ports) => Promise<T>) => Promise<T>, opts: PgPortsOptions): Ports {
  type AnyPort = Record<string, (...args: unknown[]) => Promise<unknown>>;
  // Only the method names are read from this one; it never runs a query.
  const shape = bindPorts(undefined as never, { queued: false, deliverables: new Set() }, opts) as unknown as Record<keyof Ports, AnyPort>;
  const wrapped = {} as Record<keyof Ports, AnyPort>;
  for (const name of Object.keys(shape) as (keyof Ports)[]) {
    wrapped[name] = Object.fromEntries(
      Object.keys(shape[name]).map((method) => [method, (...args: unknown[]) => run((tx) => (tx[name] as unknown as AnyPort)[method]!(...args))]),
    );
  }
  return wrapped as unknown as Ports;
}
