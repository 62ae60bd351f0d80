import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';

// Every table Chipmunk keeps. Byte counts are integers; times are unix milliseconds.

export const users = sqliteTable('users', {
  id: text('id').primaryKey(),
  quotaBytes: integer('quota_bytes').notNull(),
  // Invariant: usedBytes = sum(files.total_bytes) of the user's files (0 until committed, 0 once deleting);
  // reservedBytes = sum(files.reserved_bytes) of the user's files (uploads in flight, received uploads
  // waiting for their job, and the generated-bytes budget a committed track keeps for its renditions).
  usedBytes: integer('used_bytes').notNull().default(0),
  reservedBytes: integer('reserved_bytes').notNull().default(0),
  createdAt: integer('created_at').notNull(),
});

// uploading → received → processing → ready | failed, and deleting (see README, "Durable processing").
export const fileStatuses = ['uploading', 'received', 'processing', 'ready', 'failed', 'deleting'] as const;
export type FileStatus = (typeof fileStatuses)[number];
export type Visibility = 'public' | 'private';

export const files = sqliteTable(
  'files',
  {
    id: text('id').primaryKey(),
    userId: text('user_id').notNull(),
    purpose: text('purpose').notNull(),
    kind: text('kind', { enum: ['image', 'audio'] }).notNull(),
    status: text('status', { enum: fileStatuses }).notNull(),
    filename: text('filename').notNull(),
    mimeType: text('mime_type'),
    ext: text('ext'),
    /** Size of the original (variant 0). While uploading: the declared Upload-Length. */
    bytes: integer('bytes').notNull(),
    /** Original plus everything generated; what the user is charged once stored. */
    totalBytes: integer('total_bytes').notNull().default(0),
    /** Bytes held against the quota while the upload is in flight. */
    reservedBytes: integer('reserved_bytes').notNull().default(0),
    width: integer('width'),
    height: integer('height'),
    visibility: text('visibility', { enum: ['public', 'private'] }).notNull(),
    deliveryToken: text('delivery_token').notNull(),
    /** Kind-specific facts as JSON: placeholder, thumbhash, audio tags, failure reason… */
    info: text('info', { mode: 'json' }).$type<Record<string, unknown>>().notNull().default({}),
    error: text('error'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
    /** When an unfinished upload stops being resumable and its reservation is released. */
    expiresAt: integer('expires_at'),
    /** The length the upload declared (tus Upload-Length), kept for HEAD after completion. */
    uploadLength: integer('upload_length'),
    /** Set in the transaction that records the variants: from then on only a delete removes the folder. */
    committedAt: integer('committed_at'),
    /**
     * Where an S3 upload's bytes stood after the last PATCH that recorded it (null while a write is
     * under way, or after one that did not record): lets the node that wrote it skip re-reading the bucket.
     */
    uploadOffset: integer('upload_offset'),
  },
  (t) => [
    uniqueIndex('files_delivery_token').on(t.deliveryToken),
    index('files_user_created').on(t.userId, t.createdAt),
    index('files_status_expires').on(t.status, t.expiresAt),
  ],
);

export const variants = sqliteTable(
  'variants',
  {
    fileId: text('file_id')
      .notNull()
      .references(() => files.id, { onDelete: 'cascade' }),
    /** '0' is the original, '1'…'6' the WebP ladder; later kinds add names such as 'waveform'. */
    name: text('name').notNull(),
    /** File name inside the file's folder, e.g. '0.jpg', '3.webp'. */
    path: text('path').notNull(),
    mimeType: text('mime_type').notNull(),
    bytes: integer('bytes').notNull(),
    width: integer('width'),
    height: integer('height'),
  },
  (t) => [primaryKey({ columns: [t.fileId, t.name] })],
);

export const jobs = sqliteTable(
  'jobs',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    fileId: text('file_id').notNull(),
    /** Whose job it is, for fair scheduling ('' for jobs of no user). */
    userId: text('user_id').notNull().default(''),
    type: text('type').notNull(),
    /** Job-specific input as JSON (a webhook's body). */
    payload: text('payload'),
    state: text('state', { enum: ['queued', 'running', 'done', 'failed'] }).notNull(),
    attempts: integer('attempts').notNull().default(0),
    runAfter: integer('run_after').notNull(),
    error: text('error'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
  },
  (t) => [index('jobs_state_run_after').on(t.state, t.runAfter), index('jobs_file').on(t.fileId)],
);

/**
 * Uploads refused on their content (or given up), kept as long as tus records are, so HEAD on the
 * upload URL answers 410 with the reason instead of 404 (which would make a client upload again).
 */
export const refusedUploads = sqliteTable('refused_uploads', {
  id: text('id').primaryKey(),
  userId: text('user_id').notNull(),
  code: text('code').notNull(),
  status: integer('status').notNull(),
  message: text('message').notNull(),
  expiresAt: integer('expires_at').notNull(),
});

export const webhookDeliveries = sqliteTable(
  'webhook_deliveries',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    event: text('event').notNull(),
    payload: text('payload').notNull(),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAt: integer('next_attempt_at').notNull(),
    deliveredAt: integer('delivered_at'),
    lastError: text('last_error'),
    createdAt: integer('created_at').notNull(),
  },
  (t) => [index('webhook_pending').on(t.deliveredAt, t.nextAttemptAt)],
);

/** Uses of upload tokens minted with maxUploads (by their jti), kept until the token expires. */
export const uploadTokenUses = sqliteTable('upload_token_uses', {
  jti: text('jti').primaryKey(),
  uses: integer('uses').notNull(),
  expiresAt: integer('expires_at').notNull(),
});

export type UserRow = typeof users.$inferSelect;
export type FileRow = typeof files.$inferSelect;
export type VariantRow = typeof variants.$inferSelect;
export type JobRow = typeof jobs.$inferSelect;
export type RefusedUploadRow = typeof refusedUploads.$inferSelect;
