import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { eq, is } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPgPool } from '../src/db/pg/connection.js';
import { migratePg, pgMigrationsFolder } from '../src/db/pg/migrate.js';
import * as pgSchema from '../src/db/pg/schema.js';
import * as sqliteSchema from '../src/db/schema.js';
import { getTableConfig as pgTableConfig, PgTable } from 'drizzle-orm/pg-core';
import { getTableConfig as sqliteTableConfig, SQLiteTable } from 'drizzle-orm/sqlite-core';
import { createTestDatabase, testServices } from './helpers/services.js';

// The committed PostgreSQL migrations applied by several nodes starting at once, on a real server.

let db: { url: string; drop(): Promise<void> };
let admin: pg.Client;
let dir: string;

beforeAll(async () => {
  db = await createTestDatabase(testServices(), 'migrate');
  admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
  dir = await mkdtemp(path.join(tmpdir(), 'chipmunk-pg-migrations-'));
});
afterAll(async () => {
  await admin?.end();
  await db?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const tables = async () =>
  (await admin.query<{ t: string }>("SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")).rows.map((r) => r.t);
const applied = async () => Number((await admin.query<{ n: string }>('SELECT count(*) AS n FROM drizzle.__drizzle_migrations')).rows[0]!.n);
// Only this file's database: the server is shared with tests that hold advisory locks of their own (tus lockers, job enqueues).
const advisoryLocks = async () =>
  Number(
    (
      await admin.query<{ n: string }>(
        "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
      )
    ).rows[0]!.n,
  );

describe('PostgreSQL migrations', () => {
  it('are applied once when four nodes start together', async () => {
    await Promise.all(Array.from({ length: 4 }, () => migratePg({ url: db.url })));
    expect(await tables()).toEqual(['files', 'jobs', 'refused_uploads', 'upload_token_uses', 'users', 'variants', 'webhook_deliveries']);
    const journal = JSON.parse(await readFile(path.join(pgMigrationsFolder, 'meta/_journal.json'), 'utf8'));
    expect(await applied()).toBe(journal.entries.length);
    expect(await advisoryLocks()).toBe(0);
  });

  it('apply a later migration exactly once, however many nodes race to it', async () => {
    // The committed folder plus one more migration, as a release would add it.
    await cp(pgMigrationsFolder, dir, { recursive: true });
    const journalFile = path.join(dir, 'meta/_journal.json');
    const journal = JSON.parse(await readFile(journalFile, 'utf8'));
    const last = journal.entries.at(-1);
    journal.entries.push({ idx: last.idx + 1, version: last.version, when: last.when + 1, tag: '9999_probe', breakpoints: true });
    await writeFile(journalFile, JSON.stringify(journal));
    // Not idempotent on purpose: applied twice, the second run fails.
    await writeFile(
      path.join(dir, '9999_probe.sql'),
      'CREATE TABLE "probe" ("id" bigint PRIMARY KEY);\n--> statement-breakpoint\nINSERT INTO "probe" VALUES (1);',
    );
    await Promise.all(Array.from({ length: 3 }, () => migratePg({ url: db.url, migrationsFolder: dir })));
    expect((await admin.query('SELECT id FROM probe')).rows).toEqual([{ id: '1' }]);
    expect(await applied()).toBe(journal.entries.length);
    expect(await advisoryLocks()).toBe(0);
  });

  it('store byte counts past 2 GiB and millisecond times as bigint, read back as numbers', async () => {
    const pool = createPgPool({ url: db.url, max: 2 });
    try {
      const orm = drizzle(pool, { schema: pgSchema });
      const now = Date.now();
      await orm.insert(pgSchema.users).values({ id: 'big', quotaBytes: 5 * 1024 ** 3, usedBytes: 3 * 1024 ** 3, createdAt: now });
      const [row] = await orm.select().from(pgSchema.users).where(eq(pgSchema.users.id, 'big'));
      expect(row).toEqual({ id: 'big', quotaBytes: 5 * 1024 ** 3, usedBytes: 3 * 1024 ** 3, reservedBytes: 0, createdAt: now });
      const { rows } = await pool.query('SELECT quota_bytes FROM users');
      expect(rows[0].quota_bytes).toBe(5 * 1024 ** 3);
    } finally {
      await pool.end();
    }
  });

  it('mirror the SQLite schema table for table, column for column, index for index', () => {
    const shape = (config: { name: string; columns: { name: string; notNull: boolean }[]; indexes: { config: { name?: string } }[] }) => ({
      name: config.name,
      columns: config.columns.map((c) => `${c.name}${c.notNull ? ' not null' : ''}`).sort(),
      indexes: config.indexes.map((i) => i.config.name).sort(),
    });
    const tablesOf = <T>(schema: Record<string, unknown>, is: (v: unknown) => v is T, config: (t: T) => Parameters<typeof shape>[0]) =>
      Object.values(schema)
        .filter(is)
        .map((t) => shape(config(t)))
        .sort((a, b) => a.name.localeCompare(b.name));
    const isPg = (v: unknown): v is PgTable => is(v, PgTable);
    const isSqlite = (v: unknown): v is SQLiteTable => is(v, SQLiteTable);
    const sqliteTables = tablesOf(sqliteSchema, isSqlite, (t) => sqliteTableConfig(t));
    expect(sqliteTables.map((t) => t.name)).toContain('refused_uploads');
    expect(tablesOf(pgSchema, isPg, (t) => pgTableConfig(t))).toEqual(sqliteTables);
  });
});
