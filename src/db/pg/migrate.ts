import { drizzle } from 'drizzle-orm/node-postgres';
import { migrate } from 'drizzle-orm/node-postgres/migrator';
import { fileURLToPath } from 'node:url';
import { advisoryKey, connectPgSession, type PgOptions } from './connection.js';

/** The committed PostgreSQL migrations (drizzle-kit's output for `src/db/pg/`). */
// drizzle/ sits at the package root, both for src/ (tests) and dist/src/ (the built server).
export const pgMigrationsFolder = fileURLToPath(
  new URL(import.meta.url.includes('/dist/') ? '../../../../drizzle/pg' : '../../../drizzle/pg', import.meta.url),
);

const migrationLock = advisoryKey('chipmunk', 'migrations');

/**
 * Applies the committed migrations not applied yet, holding a cluster-wide advisory lock so
 * nodes starting together take turns: the first applies them, the others then find nothing to do.
 * The lock belongs to this function's own session, so a node dying mid-way releases it (and its
 * transaction rolls back).
 */
export async function migratePg(opts: PgOptions & { migrationsFolder?: string; lockTimeoutMs?: number }): Promise<void> {
  const session = await connectPgSession({ ...opts, applicationName: 'chipmunk-migrate' });
  try {
    await session.query(`SET lock_timeout = ${Math.max(1, Math.floor(opts.lockTimeoutMs ?? 120_000))}`);
    await session.query('SELECT pg_advisory_lock($1::bigint)', [migrationLock]);
    try {
      await migrate(drizzle(session), { migrationsFolder: opts.migrationsFolder ?? pgMigrationsFolder });
    } finally {
      await session.query('SELECT pg_advisory_unlock($1::bigint)', [migrationLock]);
    }
  } finally {
    await session.end();
  }
}
