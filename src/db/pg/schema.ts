import { bigint, index, integer, jsonb, pgTable, primaryKey, text, uniqueIndex } from 'drizzle-orm/pg-core';
import { fileStatuses } from '../schema.js';

// The PostgreSQL twin of src/db/schema.ts (distributed mode), table for table and column for
// column. Byte counts and millisecond times are bigint: integer overflows at 2 GiB and at
// today's Date.now(). They read back as numbers (see connection.ts). Keep both files in step.

const int8 = (name: string) => bigint(name, { mode: 'number' });

export const users = pgTable('users', {
  id: text('id').primaryKey(),
  quotaBytes: int8('quota_bytes').notNull(),
  usedBytes: int8('used_bytes').notNull().default(0),
  reservedBytes: int8('reserved_bytes').notNull().default(0),
  createdAt: int8('created_at').notNull(),
});

export const files = pgTable(
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
    bytes: int8('bytes').notNull(),
    totalBytes: int8('total_bytes').notNull().default(0),
    reservedBytes: int8('reserved_bytes').notNull().default(0),
    width: integer('width'),
    height: integer('height'),
    visibility: text('visibility', { enum: ['public', 'private'] }).notNull(),
    deliveryToken: text('delivery_token').notNull(),
    info: jsonb('info').$type<Record<string, unknown>>().notNull().default({}),
    error: text('error'),
    createdAt: int8('created_at').notNull(),
    updatedAt: int8('updated_at').notNull(),
    expiresAt: int8('expires_at'),
    uploadLength: int8('upload_length'),
    committedAt: int8('committed_at'),
    uploadOffset: int8('upload_offset'),
  },
  (t) => [
    uniqueIndex('files_delivery_token').on(t.deliveryToken),
    index('files_user_created').on(t.userId, t.createdAt),
    index('files_status_expires').on(t.status, t.expiresAt),
  ],
);

export const variants = pgTable(
  'variants',
  {
    fileId: text('file_id')
      .notNull()
      .references(() => files.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    path: text('path').notNull(),
    mimeType: text('mime_type').notNull(),
    bytes: int8('bytes').notNull(),
    width: integer('width'),
    height: integer('height'),
  },
  (t) => [primaryKey({ columns: [t.fileId, t.name] })],
);

export const jobs = pgTable(
  'jobs',
  {
    id: int8('id').primaryKey().generatedAlwaysAsIdentity(),
    fileId: text('file_id').notNull(),
    userId: text('user_id').notNull().default(''),
    type: text('type').notNull(),
    payload: text('payload'),
    state: text('state', { enum: ['queued', 'running', 'done', 'failed'] }).notNull(),
    attempts: integer('attempts').notNull().default(0),
    runAfter: int8('run_after').notNull(),
    error: text('error'),
    createdAt: int8('created_at').notNull(),
    updatedAt: int8('updated_at').notNull(),
  },
  (t) => [index('jobs_state_run_after').on(t.state, t.runAfter), index('jobs_file').on(t.fileId)],
);

export const refusedUploads = pgTable('refused_uploads', {
  id: text('id').primaryKey(),
  userId: text('user_id').notNull(),
  code: text('code').notNull(),
  status: integer('status').notNull(),
  message: text('message').notNull(),
  expiresAt: int8('expires_at').notNull(),
});

export const webhookDeliveries = pgTable(
  'webhook_deliveries',
  {
    id: int8('id').primaryKey().generatedAlwaysAsIdentity(),
    event: text('event').notNull(),
    payload: text('payload').notNull(),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAt: int8('next_attempt_at').notNull(),
    deliveredAt: int8('delivered_at'),
    lastError: text('last_error'),
    createdAt: int8('created_at').notNull(),
  },
  (t) => [index('webhook_pending').on(t.deliveredAt, t.nextAttemptAt)],
);

/** expires_at is in seconds here (a JWT's exp), as in SQLite. */
export const uploadTokenUses = pgTable('upload_token_uses', {
  jti: text('jti').primaryKey(),
  uses: integer('uses').notNull(),
  expiresAt: int8('expires_at').notNull(),
});
