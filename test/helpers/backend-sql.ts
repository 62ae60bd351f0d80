import Database from 'better-sqlite3';
import path from 'node:path';
import pg from 'pg';
import type { TestChipmunk } from './chipmunk.js';

/** Runs one statement (`?` placeholders) and answers its rows (none for a write). */
export type SqlQuery = <Row = Record<string, unknown>>(text: string, params?: unknown[]) => Promise<Row[]>;

/**
 * Raw SQL on a stopped test Chipmunk's database, whichever it is: the SQLite file in its data
 * directory (embedded) or its PostgreSQL database (distributed), for tests that stage what a crash
 * leaves behind. The schemas share table and column names; `?` becomes `$n` for PostgreSQL.
 */
export async function withDatabase<T>(t: TestChipmunk, use: (query: SqlQuery) => Promise<T>): Promise<T> {
  const url = t.serviceEnv?.CHIPMUNK_DATABASE_URL;
  if (!url) {
    const db = new Database(path.join(t.dataDir, 'chipmunk.db'), { fileMustExist: true });
    try {
      return await use(async <Row>(text: string, params: unknown[] = []) => {
        const statement = db.prepare(text);
        return (statement.reader ? statement.all(...params) : (statement.run(...params), [])) as Row[];
      });
    } finally {
      db.close();
    }
  }
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await use(async <Row>(text: string, params: unknown[] = []) => {
      let n = 0;
      const { rows } = await client.query(
        text.replace(/\?/g, () => `$${++n}`),
        params,
      );
      return rows as Row[];
    });
  } finally {
    await client.end();
  }
}
