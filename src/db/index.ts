import Database from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { chmodSync, closeSync, existsSync, openSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as schema from './schema.js';

export type Db = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

// drizzle/ sits at the package root, both for src/ (tests) and dist/src/ (the built server).
const migrationsFolder = fileURLToPath(new URL(import.meta.url.includes('/dist/') ? '../../../drizzle' : '../../drizzle', import.meta.url));

/** Opens (creating if needed) the SQLite database and applies the committed migrations. */
export function openDatabase(file: string): Db {
  // 0600 before SQLite opens it: the WAL and shared-memory files it creates take the database's mode.
  closeSync(openSync(file, 'a', 0o600));
  for (const f of [file, `${file}-wal`, `${file}-shm`]) if (existsSync(f)) chmodSync(f, 0o600);
  const sqlite = new Database(file);
  // WAL lets delivery reads run while an upload commits; NORMAL sync is durable across process crashes.
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma('busy_timeout = 5000');
  const db = drizzle(sqlite, { schema });
  migrate(db, { migrationsFolder });
  return db as Db;
}
