import { createHash } from 'node:crypto';
import pg from 'pg';

/**
 * Connections to PostgreSQL (distributed mode). A pool for queries, and dedicated sessions for
 * what belongs to one connection: advisory locks (released when the session ends) and LISTEN.
 */

// int8 (bigint) columns hold millisecond times and byte counts: well inside 2^53, so numbers.
const types = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === pg.types.builtins.INT8) return (value: string) => Number(value);
    return pg.types.getTypeParser(oid, format);
  },
};

export type PgOptions = { url: string; applicationName?: string; max?: number };

export function createPgPool(opts: PgOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: opts.url,
    application_name: opts.applicationName ?? 'chipmunk',
    max: opts.max ?? 10,
    idleTimeoutMillis: 30_000,
    connectionTimeoutMillis: 10_000,
    types,
  });
  // An idle client losing its connection must not crash the process; the next query reconnects.
  pool.on('error', () => undefined);
  return pool;
}

/** One session of its own, connected; the caller ends it (which releases its advisory locks). */
export async function connectPgSession(opts: PgOptions): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString: opts.url,
    application_name: opts.applicationName ?? 'chipmunk',
    connectionTimeoutMillis: 10_000,
    keepAlive: true,
    types,
  });
  await client.connect();
  return client;
}

/**
 * A 64-bit advisory-lock key for a name within a namespace, as the decimal string PostgreSQL
 * takes for `bigint`. Distinct namespaces keep the migrator, the tus locker and later users apart.
 */
export function advisoryKey(namespace: string, name: string): string {
  return createHash('sha256').update(`${namespace}\0${name}`).digest().readBigInt64BE(0).toString();
}
