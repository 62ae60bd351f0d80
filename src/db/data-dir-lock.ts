import Database from 'better-sqlite3';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../errors.js';

// One process owns a data directory at a time: the server for its whole life, `fsck --repair` while
// it repairs. Two servers on one directory (a rolling deploy, a restart overlap, pm2 cluster mode)
// would run each other's start-up recovery, empty each other's work/ and remove each other's pid
// file. The lock is an OS-level one (SQLite's fcntl lock on <data dir>/chipmunk.lock, taken with
// locking_mode=EXCLUSIVE and an open BEGIN EXCLUSIVE), so it dies with its process, kill -9 included:
// there is never a stale lock to clear by hand. The pid file beside it is only for people and tools.

export const LOCK_FILE = 'chipmunk.lock';
export const PID_FILE = 'chipmunk.pid';

export type DataDirLock = {
  /** Gives the directory up: removes the pid file, then the lock. Safe to call twice. */
  release(): void;
};

/** Takes the lock, or returns undefined when another process holds it. */
export function tryLockDataDir(dataDir: string, opts: { pidFile?: boolean } = {}): DataDirLock | undefined {
  const db = new Database(path.join(dataDir, LOCK_FILE));
  try {
    db.pragma('busy_timeout = 0');
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code === 'SQLITE_BUSY' || (err as { code?: string }).code === 'SQLITE_LOCKED') return undefined;
    throw err;
  }
  const pidFile = path.join(dataDir, PID_FILE);
  if (opts.pidFile !== false) writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o600 });
  let held = true;
  return {
    release() {
      if (!held) return;
      held = false;
      if (opts.pidFile !== false) rmSync(pidFile, { force: true });
      db.close();
    },
  };
}

/** Takes the lock for a server, or stops the start with a sentence naming the other process. */
export function lockDataDir(dataDir: string, what = 'start'): DataDirLock {
  const lock = tryLockDataDir(dataDir, { pidFile: what === 'start' });
  if (lock) return lock;
  const pid = recordedPid(dataDir);
  throw new ConfigError(
    `Another Chipmunk${pid ? ` (pid ${pid})` : ''} is using the data directory ${dataDir}; refusing to ${what} beside it. ` +
      'Stop it first, or give this one its own CHIPMUNK_DATA_DIR.',
  );
}

/** The pid the lock holder wrote, for messages only (the lock, not this file, decides). */
export function recordedPid(dataDir: string): number | undefined {
  const file = path.join(dataDir, PID_FILE);
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, 'utf8').trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}
