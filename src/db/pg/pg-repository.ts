import { and, asc, desc, eq, gt, inArray, isNotNull, lte, ne, notExists, sql } from 'drizzle-orm';
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import type pg from 'pg';
import { storedStatuses, type Deliverable, type Repository, type RepositoryOptions, type UserSummary } from '../repository-port.js';
import type { FileRow } from '../schema.js';
import * as schema from './schema.js';
import { files, jobs, users, variants } from './schema.js';

// The Repository (repository-port.ts) on PostgreSQL, with the semantics of the SQLite one
// (repository.ts). A write that moves a user's counters locks the file row it is about FOR UPDATE
// before reading it, so two nodes releasing the same upload cannot both give its bytes back.
// Computed values (count, sum) come back as text for int8/numeric: hence mapWith(Number).

type PgDb = NodePgDatabase<typeof schema>;

const count = () => sql<number>`count(*)`.mapWith(Number);
// Ordered byte-wise, as SQLite orders text, whatever the database's collation.
const byteOrder = (column: typeof variants.name | typeof files.id) => sql`${column} collate "C"`;

export function createPgRepository(pool: pg.Pool, opts: RepositoryOptions = {}): Repository {
  const db: PgDb = drizzle(pool, { schema });
  const now = () => Date.now();
  let deliverablesGeneration = 0;
  const deliverablesChanged = (fileId: string | undefined) => {
    deliverablesGeneration++;
    opts.onDeliverablesChanged?.(fileId);
  };

  /** Deletes the uncommitted files of `ids` that are in one of `states` and gives their reservations back. */
  async function releaseWhere(ids: string[], condition: ReturnType<typeof and>): Promise<string[]> {
    if (ids.length === 0) return [];
    return db.transaction(async (tx) => {
      const rows = await tx
        .select()
        .from(files)
        .where(and(inArray(files.id, ids), condition))
        .orderBy(asc(files.id))
        .for('update');
      const byUser = new Map<string, number>();
      for (const f of rows) byUser.set(f.userId, (byUser.get(f.userId) ?? 0) + f.reservedBytes);
      for (const [userId, bytes] of [...byUser].sort(([a], [b]) => (a < b ? -1 : 1))) {
        await tx
          .update(users)
          .set({ reservedBytes: sql`${users.reservedBytes} - ${bytes}` })
          .where(eq(users.id, userId));
      }
      const released = rows.map((f) => f.id);
      if (released.length) await tx.delete(files).where(inArray(files.id, released));
      return released;
    });
  }

  return {
    async releaseUpload(fileId) {
      return (await releaseWhere([fileId], eq(files.status, 'uploading'))).length > 0;
    },

    async releaseAwaiting(fileId) {
      return (await releaseWhere([fileId], and(inArray(files.status, ['received', 'processing']), sql`${files.committedAt} is null`))).length > 0;
    },

    releaseUploads: (fileIds) => releaseWhere(fileIds, eq(files.status, 'uploading')),

    async finishDelete(fileId) {
      await db.delete(files).where(and(eq(files.id, fileId), eq(files.status, 'deleting')));
      deliverablesChanged(fileId);
    },

    async filesInStatus(status, limit = 1000) {
      return db.select().from(files).where(eq(files.status, status)).limit(limit);
    },

    async expiredUploadIds(at, limit) {
      const rows = await db
        .select({ id: files.id })
        .from(files)
        .where(and(eq(files.status, 'uploading'), lte(files.expiresAt, at)))
        .limit(limit);
      return rows.map((r) => r.id);
    },

    async getFile(fileId) {
      const [row] = await db.select().from(files).where(eq(files.id, fileId));
      return row;
    },

    async getStoredFile(fileId) {
      const [row] = await db
        .select()
        .from(files)
        .where(and(eq(files.id, fileId), inArray(files.status, [...storedStatuses])));
      return row;
    },

    deliverablesGeneration: () => deliverablesGeneration,
    deliverablesChanged,

    async getDeliverable(token, name): Promise<Deliverable | undefined> {
      const [row] = await db
        .select({
          fileId: files.id,
          purpose: files.purpose,
          visibility: files.visibility,
          filename: files.filename,
          updatedAt: files.updatedAt,
          name: variants.name,
          path: variants.path,
          mimeType: variants.mimeType,
          bytes: variants.bytes,
        })
        .from(files)
        .innerJoin(variants, and(eq(variants.fileId, files.id), eq(variants.name, name)))
        .where(and(eq(files.deliveryToken, token), inArray(files.status, [...storedStatuses])));
      return row;
    },

    async getVariants(fileId) {
      return db.select().from(variants).where(eq(variants.fileId, fileId)).orderBy(byteOrder(variants.name));
    },

    async getVariant(fileId, name) {
      const [row] = await db
        .select()
        .from(variants)
        .where(and(eq(variants.fileId, fileId), eq(variants.name, name)));
      return row;
    },

    async listUserFiles(userId, o) {
      const conditions = [eq(files.userId, userId), inArray(files.status, [...storedStatuses])];
      if (o.cursor) {
        const [after] = await db.select().from(files).where(eq(files.id, o.cursor));
        if (after) {
          conditions.push(sql`(${files.createdAt} < ${after.createdAt} OR (${files.createdAt} = ${after.createdAt} AND ${byteOrder(files.id)} < ${after.id}))`);
        }
      }
      return db
        .select()
        .from(files)
        .where(and(...conditions))
        .orderBy(desc(files.createdAt), desc(byteOrder(files.id)))
        .limit(o.limit);
    },

    async updateFile(fileId, patch) {
      const [updated] = await db
        .update(files)
        .set({ ...patch, updatedAt: now() })
        .where(and(eq(files.id, fileId), ne(files.status, 'deleting'), ne(files.status, 'uploading')))
        .returning();
      if (updated) deliverablesChanged(fileId);
      return updated;
    },

    async getUser(userId): Promise<UserSummary | undefined> {
      const [user] = await db.select().from(users).where(eq(users.id, userId));
      if (!user) return undefined;
      const [row] = await db
        .select({ n: count() })
        .from(files)
        .where(and(eq(files.userId, userId), inArray(files.status, [...storedStatuses])));
      return { ...user, fileCount: row?.n ?? 0 };
    },

    async setQuota(userId, quotaBytes) {
      const [row] = await db
        .insert(users)
        .values({ id: userId, quotaBytes, createdAt: now() })
        .onConflictDoUpdate({ target: users.id, set: { quotaBytes } })
        .returning();
      return row!;
    },

    async usageFromFiles() {
      return db
        .select({
          userId: files.userId,
          used: sql<number>`coalesce(sum(case when ${files.status} <> 'deleting' then ${files.totalBytes} else 0 end), 0)`.mapWith(Number),
          reserved: sql<number>`coalesce(sum(case when ${files.status} <> 'deleting' then ${files.reservedBytes} else 0 end), 0)`.mapWith(Number),
        })
        .from(files)
        .groupBy(files.userId);
    },

    async allUsers() {
      return db.select().from(users);
    },

    async reservationTotals() {
      const [row] = await db
        .select({ count: count(), bytes: sql<number>`coalesce(sum(${files.reservedBytes}), 0)`.mapWith(Number) })
        .from(files)
        .where(gt(files.reservedBytes, 0));
      return { count: row?.count ?? 0, bytes: row?.bytes ?? 0 };
    },

    async filesPage(afterId, limit, status?: FileRow['status']) {
      const conditions = [sql`${byteOrder(files.id)} > ${afterId}`];
      if (status) conditions.push(eq(files.status, status));
      return db
        .select()
        .from(files)
        .where(and(...conditions))
        .orderBy(byteOrder(files.id))
        .limit(limit);
    },

    async fileIdsExisting(ids) {
      if (ids.length === 0) return new Set();
      const rows = await db.select({ id: files.id }).from(files).where(inArray(files.id, ids));
      return new Set(rows.map((r) => r.id));
    },

    async setUserCounters(userId, counters) {
      await db.update(users).set(counters).where(eq(users.id, userId));
    },

    async setFileTotal(fileId, totalBytes) {
      await db.transaction(async (tx) => {
        const [file] = await tx.select().from(files).where(eq(files.id, fileId)).for('update');
        if (!file || !(storedStatuses as readonly string[]).includes(file.status)) return;
        await tx
          .update(users)
          .set({ usedBytes: sql`${users.usedBytes} + ${totalBytes - file.totalBytes}` })
          .where(eq(users.id, file.userId));
        await tx.update(files).set({ totalBytes, updatedAt: now() }).where(eq(files.id, fileId));
      });
      deliverablesChanged(fileId);
    },

    async jobCounts() {
      const rows = await db.select({ type: jobs.type, state: jobs.state, n: count() }).from(jobs).groupBy(jobs.type, jobs.state);
      const byState = (state: string) => rows.filter((r) => r.state === state && r.type !== 'webhook.deliver').reduce((s, r) => s + r.n, 0);
      return { queued: byState('queued'), running: byState('running'), failed: byState('failed'), byType: rows };
    },

    async unfinishedJobs(limit = 1000) {
      return db
        .select()
        .from(jobs)
        .where(inArray(jobs.state, ['queued', 'running']))
        .orderBy(asc(jobs.id))
        .limit(limit);
    },

    async requeueRunningJobs() {
      return (await db.update(jobs).set({ state: 'queued', runAfter: now(), updatedAt: now() }).where(eq(jobs.state, 'running'))).rowCount ?? 0;
    },

    async deleteJob(id) {
      await db.delete(jobs).where(eq(jobs.id, id));
    },

    async probeWrite() {
      const rollback = new Error('rollback');
      try {
        await db.transaction(async (tx) => {
          await tx.insert(users).values({ id: '\u0001ready-probe', quotaBytes: 0, createdAt: now() }).onConflictDoNothing();
          throw rollback;
        });
      } catch (err) {
        if (err !== rollback) throw err;
      }
    },

    async pendingWebhookCount() {
      const [row] = await db
        .select({ n: count() })
        .from(jobs)
        .where(and(eq(jobs.type, 'webhook.deliver'), inArray(jobs.state, ['queued', 'running'])));
      return row?.n ?? 0;
    },

    async allWebhooks() {
      return db.select().from(jobs).where(eq(jobs.type, 'webhook.deliver')).orderBy(asc(jobs.id));
    },

    async jobsForFile(fileId) {
      return db.select().from(jobs).where(eq(jobs.fileId, fileId)).orderBy(asc(jobs.id));
    },

    async processingFilesWithoutJob(kind, type) {
      return db
        .select()
        .from(files)
        .where(
          and(
            eq(files.status, 'processing'),
            isNotNull(files.committedAt),
            eq(files.kind, kind),
            notExists(
              db
                .select({ id: jobs.id })
                .from(jobs)
                .where(and(eq(jobs.fileId, files.id), eq(jobs.type, type), inArray(jobs.state, ['queued', 'running']))),
            ),
          ),
        );
    },
  };
}
