import type { FileRow, JobRow, UserRow, VariantRow, Visibility } from './schema.js';

// The reads and the operator writes of the metadata that the durable pipeline's ports (ports.ts) do
// not cover: the API's views, deletes, delivery's lookups, recovery, fsck, readiness, metrics.
// Asynchronous, so that SQLite (repository.ts) and PostgreSQL (pg/pg-repository.ts) implement the same thing.

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

export { storedStatuses } from './ports.js';

export type JobCounts = { queued: number; running: number; failed: number; byType: Array<{ type: string; state: string; n: number }> };

export type RepositoryOptions = {
  /**
   * Called after every commit that could change what /f/ serves for a file (token rotation,
   * visibility, delete, new or replaced variants), with its id: delivery's caches listen
   * (src/delivery/invalidation.ts). The persistence layer holds no delivery cache itself.
   */
  onDeliverablesChanged?: (fileId: string | undefined) => void;
};

export interface Repository {
  /** Drops an unfinished upload and gives its reservation back. False when there was none. */
  releaseUpload(fileId: string): Promise<boolean>;
  /** Drops an uncommitted received upload and gives its reservation back (fsck --repair). */
  releaseAwaiting(fileId: string): Promise<boolean>;
  /** releaseUpload for many uploads in one transaction (the expiry sweep); the ids released. */
  releaseUploads(fileIds: string[]): Promise<string[]>;
  finishDelete(fileId: string): Promise<void>;
  filesInStatus(status: FileRow['status'], limit?: number): Promise<FileRow[]>;
  expiredUploadIds(at: number, limit: number): Promise<string[]>;
  getFile(fileId: string): Promise<FileRow | undefined>;
  /** A stored file (not an upload in flight, not being deleted). */
  getStoredFile(fileId: string): Promise<FileRow | undefined>;
  /** A stored file's variant by delivery token and variant name (delivery caches it: src/delivery/). */
  getDeliverable(token: string, name: string): Promise<Deliverable | undefined>;
  getVariants(fileId: string): Promise<VariantRow[]>;
  getVariant(fileId: string, name: string): Promise<VariantRow | undefined>;
  /** Newest first; the cursor is the id of the last file of the previous page. */
  listUserFiles(userId: string, opts: { limit: number; cursor?: string }): Promise<FileRow[]>;
  updateFile(fileId: string, patch: Partial<Pick<FileRow, 'visibility' | 'deliveryToken' | 'status' | 'error' | 'info'>>): Promise<FileRow | undefined>;
  getUser(userId: string): Promise<UserSummary | undefined>;
  setQuota(userId: string, quotaBytes: number): Promise<UserRow>;
  /** Sum of what each user's files really weigh, for consistency checks. */
  usageFromFiles(): Promise<Array<{ userId: string; used: number; reserved: number }>>;
  allUsers(): Promise<UserRow[]>;
  /** Files holding a reservation (uploads in flight, received uploads, budgets for work to come), and the bytes they hold. */
  reservationTotals(): Promise<{ count: number; bytes: number }>;
  /** Every file row, page by page in id order (for recovery and fsck walks). */
  filesPage(afterId: string, limit: number, status?: FileRow['status']): Promise<FileRow[]>;
  fileIdsExisting(ids: string[]): Promise<Set<string>>;
  /** Sets a user's counters to the given values (fsck --repair). */
  setUserCounters(userId: string, counters: { usedBytes: number; reservedBytes: number }): Promise<void>;
  /** Makes a file's total agree with its variants, moving the difference into the user's usage (fsck --repair). */
  setFileTotal(fileId: string, totalBytes: number): Promise<void>;
  /** Jobs by state, webhook deliveries apart (they have their own figure). */
  jobCounts(): Promise<JobCounts>;
  unfinishedJobs(limit?: number): Promise<JobRow[]>;
  /** Jobs a killed process left 'running' go back to the queue; how many. */
  requeueRunningJobs(): Promise<number>;
  deleteJob(id: number): Promise<void>;
  /** Proves the database takes writes: a write in a transaction that is then rolled back. */
  probeWrite(): Promise<void>;
  /** Webhook deliveries still to make (jobs of the one queue). */
  pendingWebhookCount(): Promise<number>;
  /** Every webhook delivery, as its job row (the body is the payload). */
  allWebhooks(): Promise<JobRow[]>;
  jobsForFile(fileId: string): Promise<JobRow[]>;
  /** Files of a kind left 'processing' with no job waiting for them (a stop between commit and enqueue). */
  processingFilesWithoutJob(kind: FileRow['kind'], type: string): Promise<FileRow[]>;
  /** Moves on after every commit that could change a deliverable. */
  deliverablesGeneration(): number;
  /** For writers outside this object (the durable pipeline's ports): call after such a commit, with the file. */
  deliverablesChanged(fileId: string | undefined): void;
}
