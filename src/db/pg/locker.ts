import { setTimeout as sleep } from 'node:timers/promises';
import { ERRORS, type Lock, type Locker, type RequestRelease } from '@tus/server';
import type pg from 'pg';
import { advisoryKey, connectPgSession, type PgOptions } from './connection.js';

/**
 * A tus `Locker` that spans nodes, on PostgreSQL advisory locks (@tus/server ships only the
 * in-process MemoryLocker). Each node holds its locks on one session of its own, so a node that
 * dies releases them with its connection. Asking a holder on another node to let go goes through
 * `NOTIFY`: the holder calls the lock's release handler (tus cancels that request, whose `finally`
 * unlocks), exactly as MemoryLocker does within one process.
 *
 * Advisory locks are re-entrant within a session, so two requests of the same node for one upload
 * are kept apart here, in memory, before PostgreSQL is asked.
 */
export type PgLockerOptions = PgOptions & {
  /** How long `lock()` tries before failing with tus' ERR_LOCK_TIMEOUT (MemoryLocker's default: 30 s). */
  acquireLockTimeoutMs?: number;
  /** Pause between attempts while another holder is asked to let go. */
  retryMs?: number;
  /** The NOTIFY channel shared by every node of one deployment. */
  channel?: string;
  /** Called when the session is lost (its locks are gone): a log line for the operator. */
  onSessionLost?: (err: Error | undefined) => void;
};

type Held = { state: 'acquiring' | 'held'; requestRelease: RequestRelease };

export class PgLocker implements Locker {
  private session: Promise<pg.Client> | undefined;
  private readonly held = new Map<string, Held>();
  private closed = false;
  readonly timeoutMs: number;
  readonly retryMs: number;
  readonly channel: string;

  constructor(private readonly opts: PgLockerOptions) {
    this.timeoutMs = opts.acquireLockTimeoutMs ?? 30_000;
    this.retryMs = opts.retryMs ?? 50;
    this.channel = opts.channel ?? 'chipmunk_tus_release';
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(this.channel)) throw new Error(`Invalid NOTIFY channel name ${JSON.stringify(this.channel)}`);
  }

  newLock(id: string): Lock {
    return new PgLock(id, this);
  }

  /** Connects and starts listening (otherwise done by the first lock). */
  async start(): Promise<void> {
    await this.client();
  }

  /** Ends the session: every lock this node holds is released at once. */
  async close(): Promise<void> {
    this.closed = true;
    const session = this.session;
    this.session = undefined;
    this.held.clear();
    if (session) await (await session.catch(() => undefined))?.end().catch(() => undefined);
  }

  /** The ids this node holds right now (for tests and diagnostics). */
  heldIds(): string[] {
    return [...this.held].filter(([, h]) => h.state === 'held').map(([id]) => id);
  }

  /** The backend pid of this node's session (a test kills it to play a dead node). */
  async sessionPid(): Promise<number> {
    const { rows } = await this.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    return rows[0]!.pid;
  }

  // One session serves every request of the node: its queries go one after the other.
  private queue: Promise<unknown> = Promise.resolve();
  private query<R extends pg.QueryResultRow>(text: string, values?: unknown[], client?: pg.Client): Promise<pg.QueryResult<R>> {
    const run = this.queue.then(async () => (client ?? (await this.client())).query<R>(text, values));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** @internal */
  client(): Promise<pg.Client> {
    if (this.closed) return Promise.reject(new Error('The PostgreSQL tus locker is closed.'));
    this.session ??= this.connect();
    return this.session;
  }

  private async connect(): Promise<pg.Client> {
    const attempt = connectPgSession({ ...this.opts, applicationName: this.opts.applicationName ?? 'chipmunk-tus-locker' });
    let client: pg.Client;
    try {
      client = await attempt;
      client.on('notification', (n) => {
        if (n.channel === this.channel && n.payload) this.releaseRequested(n.payload);
      });
      const lost = (err?: Error) => this.sessionLost(client, err);
      client.on('error', lost);
      client.on('end', () => lost());
      await client.query(`LISTEN ${this.channel}`);
    } catch (err) {
      this.session = undefined;
      throw err;
    }
    return client;
  }

  // The session is gone and PostgreSQL has released its locks: another node may take them now,
  // so every request still holding one here is told to stop.
  private sessionLost(client: pg.Client, err: Error | undefined): void {
    if (!this.session) return;
    void this.session.then(
      (current) => {
        if (current !== client) return;
        this.session = undefined;
        const holders = [...this.held.values()].filter((h) => h.state === 'held');
        this.held.clear();
        if (!this.closed) this.opts.onSessionLost?.(err);
        for (const h of holders) void Promise.resolve(h.requestRelease()).catch(() => undefined);
      },
      () => undefined,
    );
  }

  private releaseRequested(id: string): void {
    const h = this.held.get(id);
    if (h?.state === 'held') void Promise.resolve(h.requestRelease()).catch(() => undefined);
  }

  /** @internal One attempt: true when this request now holds the lock. */
  async tryAcquire(id: string, requestRelease: RequestRelease): Promise<boolean> {
    const local = this.held.get(id);
    if (local) {
      if (local.state === 'held') await local.requestRelease();
      return false;
    }
    const entry: Held = { state: 'acquiring', requestRelease };
    this.held.set(id, entry);
    try {
      const client = await this.client();
      const { rows } = await this.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS locked', [lockKey(id)], client);
      if (rows[0]?.locked && this.held.get(id) === entry) {
        entry.state = 'held';
        return true;
      }
      if (rows[0]?.locked) await this.query('SELECT pg_advisory_unlock($1::bigint)', [lockKey(id)], client);
      // Held elsewhere: ask that node to let go, then try again.
      await this.query('SELECT pg_notify($1, $2)', [this.channel, id], client);
      return false;
    } finally {
      if (this.held.get(id) === entry && entry.state === 'acquiring') this.held.delete(id);
    }
  }

  /** @internal */
  async release(id: string): Promise<void> {
    const h = this.held.get(id);
    if (!h || h.state !== 'held') throw new Error('Releasing an unlocked lock!');
    this.held.delete(id);
    const session = this.session;
    if (!session) return; // the session died: PostgreSQL already released it
    const client = await session;
    try {
      await this.query('SELECT pg_advisory_unlock($1::bigint)', [lockKey(id)], client);
    } catch (err) {
      // A session that just died has released the lock with itself; anything else is a real failure.
      if (this.session === session) throw err;
    }
  }
}

class PgLock implements Lock {
  constructor(
    private readonly id: string,
    private readonly locker: PgLocker,
  ) {}

  async lock(stopSignal: AbortSignal, requestRelease: RequestRelease): Promise<void> {
    const deadline = Date.now() + this.locker.timeoutMs;
    for (;;) {
      if (stopSignal.aborted) throw ERRORS.ERR_LOCK_TIMEOUT;
      if (await this.locker.tryAcquire(this.id, requestRelease)) return;
      const left = deadline - Date.now();
      if (left <= 0) throw ERRORS.ERR_LOCK_TIMEOUT;
      // A little jitter so two nodes waiting for the same upload don't retry in step.
      const pause = Math.min(left, this.locker.retryMs * (0.5 + Math.random()));
      await sleep(pause, undefined, { signal: stopSignal }).catch(() => undefined);
    }
  }

  unlock(): Promise<void> {
    return this.locker.release(this.id);
  }
}

const lockKey = (id: string) => advisoryKey('tus-upload', id);
