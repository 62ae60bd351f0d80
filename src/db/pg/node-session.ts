import type pg from 'pg';
import { advisoryKey, connectPgSession, type PgOptions } from './connection.js';

/**
 * One node's own PostgreSQL session (distributed mode), for what belongs to a connection:
 * - LISTEN: committed changes announced by any node (delivery caches drop the file; runners wake);
 * - job leases: a running job holds a session advisory lock, so when a node dies its jobs' leases
 *   vanish with its session and any other node may put them back in the queue.
 * A lost session is reconnected; while it was gone notifications may have been missed, so every
 * cached deliverable is dropped and the runner woken.
 */

export const DELIVERABLES_CHANNEL = 'chipmunk_deliverables';
export const JOBS_CHANNEL = 'chipmunk_jobs';
export const SETTLED_CHANNEL = 'chipmunk_settled';

export type JobLeases = {
  /** Marks the job as this node's; fails when another live node holds it. */
  take(jobId: number): Promise<void>;
  drop(jobId: number): Promise<void>;
  /**
   * The running jobs among `jobIds` that no live node holds (their node died). They stay locked by
   * this session until `release` (so two sweeping nodes don't both requeue them).
   */
  orphaned(jobIds: number[]): Promise<number[]>;
  release(jobIds: number[]): Promise<void>;
};

export type PgNodeSession = {
  leases: JobLeases;
  /** Tells every node (this one included) that a file's deliverables changed; undefined: all of them. */
  announceDeliverables(fileId: string | undefined): Promise<void>;
  announceJobs(): Promise<void>;
  /** A file's processing ended (ready, refused, failed, deleted): requests waiting on any node answer. */
  announceSettled(fileId: string): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
};

export function createPgNodeSession(
  pool: pg.Pool,
  opts: PgOptions & {
    onDeliverablesChanged: (fileId: string | undefined) => void;
    onJobsQueued: () => void;
    onFileSettled: (fileId: string) => void;
    onSessionLost?: (err: unknown) => void;
    reconnectMs?: number;
  },
): PgNodeSession {
  let session: Promise<pg.Client> | undefined;
  let closed = false;
  const held = new Set<number>();
  const leaseKey = (jobId: number) => advisoryKey('chipmunk-job-lease', String(jobId));

  function connect(): Promise<pg.Client> {
    session ??= (async () => {
      const client = await connectPgSession({ ...opts, applicationName: 'chipmunk-node' });
      const lost = (err?: unknown) => {
        if (session === undefined) return;
        session = undefined;
        held.clear();
        client.removeAllListeners();
        client.on('error', () => undefined);
        void client.end().catch(() => undefined);
        if (closed) return;
        opts.onSessionLost?.(err);
        // Whatever was announced while we were not listening: forget it all, look again.
        opts.onDeliverablesChanged(undefined);
        setTimeout(() => void connect().then(opts.onJobsQueued, () => undefined), opts.reconnectMs ?? 1_000).unref();
      };
      client.on('error', lost);
      client.on('end', () => lost());
      client.on('notification', (n) => {
        if (n.channel === DELIVERABLES_CHANNEL) opts.onDeliverablesChanged(n.payload ? n.payload : undefined);
        else if (n.channel === JOBS_CHANNEL) opts.onJobsQueued();
        else if (n.channel === SETTLED_CHANNEL && n.payload) opts.onFileSettled(n.payload);
      });
      await client.query(`LISTEN ${DELIVERABLES_CHANNEL}`);
      await client.query(`LISTEN ${JOBS_CHANNEL}`);
      await client.query(`LISTEN ${SETTLED_CHANNEL}`);
      return client;
    })();
    // A failed connect is tried again by the next caller.
    session.catch(() => (session = undefined));
    return session;
  }

  const tryLock = async (jobId: number) =>
    (await (await connect()).query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [leaseKey(jobId)])).rows[0]?.ok ?? false;
  const unlock = async (jobId: number) => void (await (await connect()).query('SELECT pg_advisory_unlock($1::bigint)', [leaseKey(jobId)]));

  return {
    leases: {
      async take(jobId) {
        if (!(await tryLock(jobId))) throw new Error(`Job ${jobId} is leased by another node.`);
        held.add(jobId);
      },
      async drop(jobId) {
        if (!held.delete(jobId)) return;
        await unlock(jobId);
      },
      async orphaned(jobIds) {
        const out: number[] = [];
        // Advisory locks are re-entrant within a session: this node's own jobs are not asked.
        for (const id of jobIds) if (!held.has(id) && (await tryLock(id))) out.push(id);
        return out;
      },
      async release(jobIds) {
        for (const id of jobIds) await unlock(id);
      },
    },
    async announceDeliverables(fileId) {
      await pool.query('SELECT pg_notify($1, $2)', [DELIVERABLES_CHANNEL, fileId ?? '']);
    },
    async announceJobs() {
      await pool.query('SELECT pg_notify($1, $2)', [JOBS_CHANNEL, '']);
    },
    async announceSettled(fileId) {
      await pool.query('SELECT pg_notify($1, $2)', [SETTLED_CHANNEL, fileId]);
    },
    async start() {
      await connect();
    },
    async close() {
      closed = true;
      const client = await session?.catch(() => undefined);
      session = undefined;
      held.clear();
      if (client) {
        client.removeAllListeners();
        client.on('error', () => undefined);
        await client.end().catch(() => undefined);
      }
    },
  };
}
