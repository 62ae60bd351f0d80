import type { Config } from '../config.js';
import { openDatabase, type Db } from './index.js';
import { advisoryKey, connectPgSession, createPgPool } from './pg/connection.js';
import { PgLocker } from './pg/locker.js';
import { migratePg } from './pg/migrate.js';
import { createPgNodeSession } from './pg/node-session.js';
import { createPgPorts } from './pg/pg-ports.js';
import { createPgRepository } from './pg/pg-repository.js';
import { createPgTokenUses } from './pg/pg-token-uses.js';
import type { UnitOfWork } from './ports.js';
import { createRepository } from './repository.js';
import type { Repository } from './repository-port.js';
import { createSqlitePorts } from './sqlite-ports.js';
import { createTokenUses, type TokenUses } from './token-uses.js';

// The metadata backend, chosen in one place: the SQLite file in the data directory (the embedded
// default), or PostgreSQL when CHIPMUNK_DATABASE_URL is set (several nodes). Everything else is
// written against the ports it returns.

export type PersistenceHooks = {
  /** After a commit that could change what /f/ serves (on PostgreSQL: a commit on any node). */
  onDeliverablesChanged: (fileId: string | undefined) => void;
  /** After a commit that queued jobs (on PostgreSQL: on any node). */
  onJobsQueued: () => void;
  /** Another node ended a file's processing (PostgreSQL): requests waiting here for it may answer. */
  onFileSettled?: (fileId: string) => void;
  onWarning?: (message: string, fields: Record<string, unknown>) => void;
};

export type Persistence = {
  kind: 'sqlite' | 'postgres';
  repo: Repository;
  uow: UnitOfWork;
  tokenUses: TokenUses;
  /** The tus lock: undefined means tus's in-process MemoryLocker (one node). */
  locker: PgLocker | undefined;
  /** The SQLite database (embedded mode only; tests and crash checks read it directly). */
  sqlite: Db | undefined;
  /** Applies migrations (PostgreSQL: under a cluster-wide advisory lock) and starts listening. */
  start(): Promise<void>;
  /** Tells the other nodes a file's processing ended (PostgreSQL; nothing to tell on one node). */
  announceSettled(fileId: string): void;
  /** Running jobs whose node died go back to the queue (PostgreSQL; a no-op for one node). */
  sweepOrphanedJobs(): Promise<number>;
  close(): Promise<void>;
};

export function openPersistence(
  config: Pick<Config, 'databasePath' | 'databaseUrl'>,
  hooks: PersistenceHooks,
  opts: { webhooksEnabled: boolean },
): Persistence {
  return config.databaseUrl ? openPostgres(config.databaseUrl, hooks, opts) : openSqlite(config.databasePath, hooks, opts);
}

function openSqlite(file: string, hooks: PersistenceHooks, opts: { webhooksEnabled: boolean }): Persistence {
  const db = openDatabase(file);
  const repo = createRepository(db, { onDeliverablesChanged: hooks.onDeliverablesChanged });
  const uow = createSqlitePorts(db, {
    webhooksEnabled: opts.webhooksEnabled,
    onJobsQueued: hooks.onJobsQueued,
    onDeliverablesChanged: (fileId) => repo.deliverablesChanged(fileId),
  });
  return {
    kind: 'sqlite',
    repo,
    uow,
    tokenUses: createTokenUses(db),
    locker: undefined,
    sqlite: db,
    start: async () => undefined,
    announceSettled: () => undefined,
    sweepOrphanedJobs: async () => 0,
    async close() {
      if (db.$client.open) db.$client.close();
    },
  };
}

function openPostgres(url: string, hooks: PersistenceHooks, opts: { webhooksEnabled: boolean }): Persistence {
  const pool = createPgPool({ url });
  // Changes are announced to every node (this one hears its own through LISTEN as well, so it also
  // drops its caches at once, before the notification comes back).
  const node = createPgNodeSession(pool, {
    url,
    onDeliverablesChanged: hooks.onDeliverablesChanged,
    onJobsQueued: hooks.onJobsQueued,
    onFileSettled: (fileId) => hooks.onFileSettled?.(fileId),
    onSessionLost: (err) => hooks.onWarning?.('the PostgreSQL node session was lost; reconnecting', { err }),
  });
  const announce = (what: Promise<void>) => void what.catch((err) => hooks.onWarning?.('a change could not be announced to the other nodes', { err }));
  const changed = (fileId: string | undefined) => {
    hooks.onDeliverablesChanged(fileId);
    announce(node.announceDeliverables(fileId));
  };
  const repo = createPgRepository(pool, { onDeliverablesChanged: changed });
  const uow = createPgPorts(pool, {
    webhooksEnabled: opts.webhooksEnabled,
    leases: node.leases,
    onJobsQueued: () => {
      hooks.onJobsQueued();
      announce(node.announceJobs());
    },
    onDeliverablesChanged: (fileId) => repo.deliverablesChanged(fileId),
  });
  // Named by process, so an operator (or a test) can see in pg_stat_activity which node holds an upload's lock.
  const locker = new PgLocker({
    url,
    applicationName: `chipmunk-tus ${process.pid}`,
    onSessionLost: (err) => hooks.onWarning?.('the tus lock session was lost; its locks are gone', { err }),
  });
  let closed = false;
  return {
    kind: 'postgres',
    repo,
    uow,
    tokenUses: createPgTokenUses(pool),
    locker,
    sqlite: undefined,
    async start() {
      await migratePg({ url });
      await node.start();
      await locker.start();
    },
    announceSettled: (fileId) => announce(node.announceSettled(fileId)),
    sweepOrphanedJobs: () => uow.ports.jobs.requeueRunning(),
    async close() {
      if (closed) return;
      closed = true;
      await locker.close();
      await node.close();
      await pool.end();
    },
  };
}

/** What an operator tool (`chipmunk fsck`) needs of the metadata: no node session, no listening. */
export type ToolPersistence = {
  repo: Repository;
  /** Nodes connected to this PostgreSQL now (their node sessions); undefined on SQLite (its data-dir lock says). */
  liveNodes(): Promise<number | undefined>;
  /** A cluster-wide lock for repairs (PostgreSQL); false when another repair holds it. True on SQLite. */
  lockForRepair(): Promise<boolean>;
  close(): Promise<void>;
};

export function openToolPersistence(config: Pick<Config, 'databasePath' | 'databaseUrl'>): ToolPersistence {
  if (!config.databaseUrl) {
    const db = openDatabase(config.databasePath);
    return {
      repo: createRepository(db),
      liveNodes: async () => undefined,
      lockForRepair: async () => true,
      close: async () => void db.$client.close(),
    };
  }
  const url = config.databaseUrl;
  const pool = createPgPool({ url, max: 2 });
  let repairSession: Awaited<ReturnType<typeof connectPgSession>> | undefined;
  return {
    repo: createPgRepository(pool),
    async liveNodes() {
      const { rows } = await pool.query<{ n: string }>(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'chipmunk-node'",
      );
      return Number(rows[0]?.n ?? 0);
    },
    async lockForRepair() {
      repairSession ??= await connectPgSession({ url, applicationName: 'chipmunk-fsck' });
      const { rows } = await repairSession.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [advisoryKey('chipmunk', 'fsck-repair')]);
      return rows[0]?.ok ?? false;
    },
    async close() {
      await repairSession?.end();
      await pool.end();
    },
  };
}
