import { and, asc, desc, eq, gt, inArray, isNotNull, isNull, lt, lte, ne, notExists, sql } from 'drizzle-orm';
import { errors, formatBytes } from '../errors.js';
import type { Db } from './index.js';
import { files, jobs, users, variants, type FileRow, type JobRow, type UserRow, type VariantRow, type Visibility } from './schema.js';

// The only code that reads or writes SQL. Every change to usage or reservations happens
// inside one transaction together with the file-state change that justifies it, so a crash
// between statements can never leave bytes charged for a file that is not there.

export type { NewVariant } from './ports.js';
import type { NewVariant } from './ports.js';

export type UserSummary = UserRow & { fileCount: number };

/** Just what delivery needs to decide and serve one variant. */
export type Deliverable = {
  fileId: string;
  purpose: string;
  visibility: Visibility;
  filename: string;
  updatedAt: number;
  name: string;
  path: string;
  mimeType: string;
  bytes: number;
};

// What the API shows as a file (received and processing ones included: their JSON says they are not ready yet).
const storedStatuses = ['received', 'processing', 'ready', 'failed'] as const;

export type RepositoryOptions = {
  /**
   * Called after every commit that could change what /f/ serves for a file (token rotation,
   * visibility, delete, new or replaced variants), with its id: delivery's caches listen
   * (src/delivery/invalidation.ts). The persistence layer holds no delivery cache itself.
   */
  onDeliverablesChanged?: (fileId: string | undefined) => void;
};

export function createRepository(db: Db, opts: RepositoryOptions = {}) {
  const now = () => Date.now();

  function ensureUser(userId: string, defaultQuotaBytes: number): UserRow {
    db.insert(users).values({ id: userId, quotaBytes: defaultQuotaBytes, createdAt: now() }).onConflictDoNothing().run();
    return db.select().from(users).where(eq(users.id, userId)).get()!;
  }

  // Delivery's hot path: one prepared join, built once (drizzle's query building costs more than the query).
  const deliverableByToken = db
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
    .innerJoin(variants, and(eq(variants.fileId, files.id), eq(variants.name, sql.placeholder('name'))))
    .where(and(eq(files.deliveryToken, sql.placeholder('token')), inArray(files.status, [...storedStatuses])))
    .prepare();

  // Only after the commit: a reader told earlier could cache the old row again before it lands.
  let deliverablesGeneration = 0;
  const deliverablesChanged = (fileId: string | undefined) => {
    deliverablesGeneration++;
    opts.onDeliverablesChanged?.(fileId);
  };

  return {
    /**
     * Adds generated files to a committed file (audio renditions, covers), charging their bytes and giving
     * back the budget the file kept reserved for them. 'quota' (nothing changed) when they do not fit.
     */
    addVariants(
      fileId: string,
      added: NewVariant[],
      patch: { status?: FileRow['status']; info?: Record<string, unknown>; error?: string | null } = {},
    ): FileRow | 'quota' | undefined {
      const updated = db.transaction((tx) => {
        const file = tx.select().from(files).where(eq(files.id, fileId)).get();
        if (!file || file.status === 'deleting' || file.committedAt === null) return undefined;
        const existing = added.length
          ? tx
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
        // Safe to run twice: a variant already recorded is replaced and its old bytes uncharged.
        const delta = added.reduce((s, v) => s + v.bytes, 0) - existing.reduce((s, v) => s + v.bytes, 0);
        const charged = tx
          .update(users)
          .set({ usedBytes: sql`${users.usedBytes} + ${delta}`, reservedBytes: sql`${users.reservedBytes} - ${file.reservedBytes}` })
          .where(
            and(
              eq(users.id, file.userId),
              // Bracketed: and() does not bracket its parts, and a bare OR would match every user with room.
              sql`(${delta} <= 0 OR ${users.usedBytes} + ${users.reservedBytes} - ${file.reservedBytes} + ${delta} <= ${users.quotaBytes})`,
            ),
          )
          .returning({ id: users.id })
          .get();
        if (!charged) return 'quota' as const;
        for (const v of added) {
          tx.insert(variants)
            .values({ ...v, fileId })
            .onConflictDoUpdate({
              target: [variants.fileId, variants.name],
              set: { path: v.path, mimeType: v.mimeType, bytes: v.bytes, width: v.width, height: v.height },
            })
            .run();
        }
        return tx
          .update(files)
          .set({
            totalBytes: file.totalBytes + delta,
            reservedBytes: 0,
            status: patch.status ?? file.status,
            info: patch.info ? { ...file.info, ...patch.info } : file.info,
            error: patch.error === undefined ? file.error : patch.error,
            updatedAt: now(),
          })
          .where(eq(files.id, fileId))
          .returning()
          .get();
      });
      if (updated && updated !== 'quota') deliverablesChanged(fileId);
      return updated;
    },

    /** Drops an unfinished upload and gives its reservation back. Returns false when there was none. */
    releaseUpload(fileId: string): boolean {
      return db.transaction((tx) => {
        const file = tx
          .select()
          .from(files)
          .where(and(eq(files.id, fileId), eq(files.status, 'uploading')))
          .get();
        if (!file) return false;
        tx.update(users)
          .set({ reservedBytes: sql`${users.reservedBytes} - ${file.reservedBytes}` })
          .where(eq(users.id, file.userId))
          .run();
        tx.delete(files).where(eq(files.id, fileId)).run();
        return true;
      });
    },

    /** Drops an uncommitted received upload and gives its reservation back (fsck --repair). */
    releaseAwaiting(fileId: string): boolean {
      return db.transaction((tx) => {
        const file = tx
          .select()
          .from(files)
          .where(and(eq(files.id, fileId), inArray(files.status, ['received', 'processing']), isNull(files.committedAt)))
          .get();
        if (!file) return false;
        tx.update(users)
          .set({ reservedBytes: sql`${users.reservedBytes} - ${file.reservedBytes}` })
          .where(eq(users.id, file.userId))
          .run();
        tx.delete(files).where(eq(files.id, fileId)).run();
        return true;
      });
    },

    /** releaseUpload for many uploads in one transaction (the expiry sweep); returns the ids released. */
    releaseUploads(fileIds: string[]): string[] {
      if (fileIds.length === 0) return [];
      return db.transaction((tx) => {
        const rows = tx
          .select()
          .from(files)
          .where(and(inArray(files.id, fileIds), eq(files.status, 'uploading')))
          .all();
        const byUser = new Map<string, number>();
        for (const f of rows) byUser.set(f.userId, (byUser.get(f.userId) ?? 0) + f.reservedBytes);
        for (const [userId, bytes] of byUser) {
          tx.update(users)
            .set({ reservedBytes: sql`${users.reservedBytes} - ${bytes}` })
            .where(eq(users.id, userId))
            .run();
        }
        const ids = rows.map((f) => f.id);
        if (ids.length) tx.delete(files).where(inArray(files.id, ids)).run();
        return ids;
      });
    },

    /**
     * First half of a delete: the file stops being served and its bytes go back at once.
     * The folder is removed afterwards; a row left in 'deleting' by a crash is finished at start-up.
     */
    beginDelete(fileId: string): FileRow | undefined {
      const deleting = db.transaction((tx) => {
        const file = tx
          .select()
          .from(files)
          .where(and(eq(files.id, fileId), inArray(files.status, [...storedStatuses])))
          .get();
        if (!file) return undefined;
        tx.update(users)
          .set({ usedBytes: sql`${users.usedBytes} - ${file.totalBytes}`, reservedBytes: sql`${users.reservedBytes} - ${file.reservedBytes}` })
          .where(eq(users.id, file.userId))
          .run();
        // Compare-and-set on the state it was read in: a job that moved it meanwhile makes this a miss.
        return tx
          .update(files)
          .set({ status: 'deleting', totalBytes: 0, reservedBytes: 0, updatedAt: now() })
          .where(and(eq(files.id, fileId), eq(files.status, file.status)))
          .returning()
          .get();
      });
      if (deleting) deliverablesChanged(fileId);
      return deleting;
    },

    finishDelete(fileId: string): void {
      db.delete(files)
        .where(and(eq(files.id, fileId), eq(files.status, 'deleting')))
        .run();
      deliverablesChanged(fileId);
    },

    filesInStatus(status: FileRow['status'], limit = 1000): FileRow[] {
      return db.select().from(files).where(eq(files.status, status)).limit(limit).all();
    },

    expiredUploadIds(at: number, limit: number): string[] {
      return db
        .select({ id: files.id })
        .from(files)
        .where(and(eq(files.status, 'uploading'), lte(files.expiresAt, at)))
        .limit(limit)
        .all()
        .map((r) => r.id);
    },

    getFile(fileId: string): FileRow | undefined {
      return db.select().from(files).where(eq(files.id, fileId)).get();
    },

    /** A stored file (not an upload in flight, not being deleted). */
    getStoredFile(fileId: string): FileRow | undefined {
      return db
        .select()
        .from(files)
        .where(and(eq(files.id, fileId), inArray(files.status, [...storedStatuses])))
        .get();
    },

    /** Moves on after every commit that could change a deliverable (onDeliverablesChanged is told which file). */
    deliverablesGeneration: () => deliverablesGeneration,

    /** For writers outside this object (the durable pipeline's ports): call after such a commit, with the file. */
    deliverablesChanged,

    /** A stored file's variant by delivery token and variant name, or undefined (delivery caches it: src/delivery/). */
    getDeliverable(token: string, name: string): Deliverable | undefined {
      return deliverableByToken.get({ token, name });
    },

    getVariants(fileId: string): VariantRow[] {
      return db.select().from(variants).where(eq(variants.fileId, fileId)).orderBy(asc(variants.name)).all();
    },

    getVariant(fileId: string, name: string): VariantRow | undefined {
      return db
        .select()
        .from(variants)
        .where(and(eq(variants.fileId, fileId), eq(variants.name, name)))
        .get();
    },

    /** Newest first; the cursor is the id of the last file of the previous page. */
    listUserFiles(userId: string, opts: { limit: number; cursor?: string }): FileRow[] {
      const conditions = [eq(files.userId, userId), inArray(files.status, [...storedStatuses])];
      if (opts.cursor) {
        const after = db.select().from(files).where(eq(files.id, opts.cursor)).get();
        if (after) {
          conditions.push(sql`(${files.createdAt} < ${after.createdAt} OR (${files.createdAt} = ${after.createdAt} AND ${files.id} < ${after.id}))`);
        }
      }
      return db
        .select()
        .from(files)
        .where(and(...conditions))
        .orderBy(desc(files.createdAt), desc(files.id))
        .limit(opts.limit)
        .all();
    },

    updateFile(fileId: string, patch: Partial<Pick<FileRow, 'visibility' | 'deliveryToken' | 'status' | 'error' | 'info'>>): FileRow | undefined {
      const updated = db
        .update(files)
        .set({ ...patch, updatedAt: now() })
        .where(and(eq(files.id, fileId), ne(files.status, 'deleting'), ne(files.status, 'uploading')))
        .returning()
        .get();
      if (updated) deliverablesChanged(fileId);
      return updated;
    },

    getUser(userId: string): UserSummary | undefined {
      const user = db.select().from(users).where(eq(users.id, userId)).get();
      if (!user) return undefined;
      const row = db
        .select({ n: sql<number>`count(*)` })
        .from(files)
        .where(and(eq(files.userId, userId), inArray(files.status, [...storedStatuses])))
        .get();
      return { ...user, fileCount: row?.n ?? 0 };
    },

    ensureUser,

    setQuota(userId: string, quotaBytes: number): UserRow {
      db.insert(users).values({ id: userId, quotaBytes, createdAt: now() }).onConflictDoUpdate({ target: users.id, set: { quotaBytes } }).run();
      return db.select().from(users).where(eq(users.id, userId)).get()!;
    },

    /** Sum of what each user's files really weigh, for consistency checks. */
    usageFromFiles(): Array<{ userId: string; used: number; reserved: number }> {
      return db
        .select({
          userId: files.userId,
          used: sql<number>`coalesce(sum(case when ${files.status} <> 'deleting' then ${files.totalBytes} else 0 end), 0)`,
          reserved: sql<number>`coalesce(sum(case when ${files.status} <> 'deleting' then ${files.reservedBytes} else 0 end), 0)`,
        })
        .from(files)
        .groupBy(files.userId)
        .all();
    },

    allUsers(): UserRow[] {
      return db.select().from(users).all();
    },

    // ---- operations: recovery, fsck, readiness, metrics, webhooks ----

    /** Files holding a reservation (uploads in flight, received uploads, budgets for work to come), and the bytes they hold. */
    reservationTotals(): { count: number; bytes: number } {
      const row = db
        .select({ count: sql<number>`count(*)`, bytes: sql<number>`coalesce(sum(${files.reservedBytes}), 0)` })
        .from(files)
        .where(gt(files.reservedBytes, 0))
        .get();
      return { count: row?.count ?? 0, bytes: row?.bytes ?? 0 };
    },

    /** Every file row, page by page in id order (for recovery and fsck walks). */
    filesPage(afterId: string, limit: number, status?: FileRow['status']): FileRow[] {
      const conditions = [gt(files.id, afterId)];
      if (status) conditions.push(eq(files.status, status));
      return db
        .select()
        .from(files)
        .where(and(...conditions))
        .orderBy(asc(files.id))
        .limit(limit)
        .all();
    },

    fileIdsExisting(ids: string[]): Set<string> {
      if (ids.length === 0) return new Set();
      return new Set(
        db
          .select({ id: files.id })
          .from(files)
          .where(inArray(files.id, ids))
          .all()
          .map((r) => r.id),
      );
    },

    /** Sets a user's counters to the given values (fsck --repair). */
    setUserCounters(userId: string, counters: { usedBytes: number; reservedBytes: number }): void {
      db.update(users).set(counters).where(eq(users.id, userId)).run();
    },

    /** Makes a file's total agree with its variants, moving the difference into the user's usage (fsck --repair). */
    setFileTotal(fileId: string, totalBytes: number): void {
      db.transaction((tx) => {
        const file = tx.select().from(files).where(eq(files.id, fileId)).get();
        if (!file || !(storedStatuses as readonly string[]).includes(file.status)) return;
        tx.update(users)
          .set({ usedBytes: sql`${users.usedBytes} + ${totalBytes - file.totalBytes}` })
          .where(eq(users.id, file.userId))
          .run();
        tx.update(files).set({ totalBytes, updatedAt: now() }).where(eq(files.id, fileId)).run();
      });
      deliverablesChanged(fileId);
    },

    /** Jobs by state, webhook deliveries apart (they have their own figure). */
    jobCounts(): { queued: number; running: number; failed: number; byType: Array<{ type: string; state: string; n: number }> } {
      const rows = db
        .select({ type: jobs.type, state: jobs.state, n: sql<number>`count(*)` })
        .from(jobs)
        .groupBy(jobs.type, jobs.state)
        .all();
      const count = (state: string) => rows.filter((r) => r.state === state && r.type !== 'webhook.deliver').reduce((s, r) => s + r.n, 0);
      return { queued: count('queued'), running: count('running'), failed: count('failed'), byType: rows };
    },

    unfinishedJobs(limit = 1000): JobRow[] {
      return db
        .select()
        .from(jobs)
        .where(inArray(jobs.state, ['queued', 'running']))
        .orderBy(asc(jobs.id))
        .limit(limit)
        .all();
    },

    /** Jobs a killed process left 'running' go back to the queue; returns how many. */
    requeueRunningJobs(): number {
      return db.update(jobs).set({ state: 'queued', runAfter: now(), updatedAt: now() }).where(eq(jobs.state, 'running')).run().changes;
    },

    deleteJob(id: number): void {
      db.delete(jobs).where(eq(jobs.id, id)).run();
    },

    /** Proves the database takes writes: a write in a transaction that is then rolled back. */
    probeWrite(): void {
      const rollback = new Error('rollback');
      try {
        db.transaction((tx) => {
          tx.insert(users).values({ id: '\u0000ready-probe', quotaBytes: 0, createdAt: now() }).onConflictDoNothing().run();
          throw rollback;
        });
      } catch (err) {
        if (err !== rollback) throw err;
      }
    },

    /** Webhook deliveries still to make (jobs of the one queue). */
    pendingWebhookCount(): number {
      return (
        db
          .select({ n: sql<number>`count(*)` })
          .from(jobs)
          .where(and(eq(jobs.type, 'webhook.deliver'), inArray(jobs.state, ['queued', 'running'])))
          .get()?.n ?? 0
      );
    },

    /** Every webhook delivery, as its job row (the body is the payload). */
    allWebhooks(): JobRow[] {
      return db.select().from(jobs).where(eq(jobs.type, 'webhook.deliver')).orderBy(asc(jobs.id)).all();
    },

    // Background jobs (audio renditions). A job is queued → running → done | failed; a process that
    // stops mid-job leaves it 'running', and the next start puts it back in the queue.

    jobsForFile(fileId: string): JobRow[] {
      return db.select().from(jobs).where(eq(jobs.fileId, fileId)).orderBy(asc(jobs.id)).all();
    },

    /** Files of a kind left 'processing' with no job waiting for them (a stop between commit and enqueue). */
    processingFilesWithoutJob(kind: FileRow['kind'], type: string): FileRow[] {
      return db
        .select()
        .from(files)
        .where(
          and(
            eq(files.status, 'processing'),
            // Committed tracks only: an uncommitted one is still its processing job's.
            isNotNull(files.committedAt),
            eq(files.kind, kind),
            notExists(
              db
                .select({ id: jobs.id })
                .from(jobs)
                .where(and(eq(jobs.fileId, files.id), eq(jobs.type, type), inArray(jobs.state, ['queued', 'running']))),
            ),
          ),
        )
        .all();
    },
  };
}

export type Repository = ReturnType<typeof createRepository>;
