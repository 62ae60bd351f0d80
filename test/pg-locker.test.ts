import { setTimeout as sleep } from 'node:timers/promises';
import { ERRORS } from '@tus/server';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PgLocker } from '../src/db/pg/locker.js';
import { createTestDatabase, testServices } from './helpers/services.js';

// Two PgLockers on one real PostgreSQL play two Chipmunk nodes.

let db: { url: string; drop(): Promise<void> };
let admin: pg.Client;
const lockers: PgLocker[] = [];

beforeAll(async () => {
  db = await createTestDatabase(testServices(), 'locker');
  admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
});
afterEach(async () => {
  await Promise.all(lockers.splice(0).map((l) => l.close()));
});
afterAll(async () => {
  await admin?.end();
  await db?.drop();
});

function node(opts: { acquireLockTimeoutMs?: number; onSessionLost?: () => void } = {}): PgLocker {
  const l = new PgLocker({ url: db.url, acquireLockTimeoutMs: opts.acquireLockTimeoutMs ?? 10_000, onSessionLost: opts.onSessionLost });
  lockers.push(l);
  return l;
}

/** Advisory locks held in this test's database, by any session. */
async function advisoryLocks(): Promise<number> {
  const { rows } = await admin.query<{ n: string }>(
    "SELECT count(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
  );
  return Number(rows[0]!.n);
}

const never = () => new AbortController().signal;

describe('PgLocker (tus locks across nodes on PostgreSQL advisory locks)', () => {
  it('gives an upload to one node at a time; the holder is asked across nodes to let go, and the other then gets it', async () => {
    const a = node();
    const b = node();
    const events: string[] = [];
    const lockA = a.newLock('upload-1');
    // As tus does: the release handler cancels the request, whose cleanup unlocks.
    await lockA.lock(never(), async () => {
      events.push('a asked to release');
      await sleep(20);
      events.push('a unlocks');
      await lockA.unlock();
    });
    expect(a.heldIds()).toEqual(['upload-1']);
    expect(await advisoryLocks()).toBe(1);

    const lockB = b.newLock('upload-1');
    await lockB.lock(never(), () => undefined);
    events.push('b holds');
    expect(events).toEqual(['a asked to release', 'a unlocks', 'b holds']);
    expect(a.heldIds()).toEqual([]);
    expect(b.heldIds()).toEqual(['upload-1']);
    expect(await advisoryLocks()).toBe(1);
    await lockB.unlock();
    expect(await advisoryLocks()).toBe(0);
  });

  it('times out with tus ERR_LOCK_TIMEOUT while a holder refuses to let go, and leaves the holder be', async () => {
    const a = node();
    const b = node({ acquireLockTimeoutMs: 400 });
    let asked = 0;
    const lockA = a.newLock('upload-2');
    await lockA.lock(never(), () => {
      asked++;
    });
    await expect(b.newLock('upload-2').lock(never(), () => undefined)).rejects.toBe(ERRORS.ERR_LOCK_TIMEOUT);
    expect(asked).toBeGreaterThan(0);
    expect(a.heldIds()).toEqual(['upload-2']);
    expect(b.heldIds()).toEqual([]);
    expect(await advisoryLocks()).toBe(1);

    // Once released, the other node gets it on its first try.
    await lockA.unlock();
    const lockB = b.newLock('upload-2');
    await lockB.lock(never(), () => undefined);
    await lockB.unlock();
    expect(await advisoryLocks()).toBe(0);
  });

  it('stops trying when the request is aborted', async () => {
    const a = node();
    const b = node();
    const lockA = a.newLock('upload-3');
    await lockA.lock(never(), () => undefined);
    const stop = new AbortController();
    const attempt = b.newLock('upload-3').lock(stop.signal, () => undefined);
    setTimeout(() => stop.abort(), 100);
    await expect(attempt).rejects.toBe(ERRORS.ERR_LOCK_TIMEOUT);
    expect(b.heldIds()).toEqual([]);
    await lockA.unlock();
  });

  it("frees a dead node's locks with its session, and tells that node's holders to stop", async () => {
    let lost = 0;
    const a = node({ onSessionLost: () => lost++ });
    const b = node();
    let aReleaseCalls = 0;
    await a.newLock('upload-4').lock(never(), () => {
      aReleaseCalls++; // refuses to let go: only the session's death frees the lock
    });
    await a.newLock('upload-5').lock(never(), () => {
      aReleaseCalls++;
    });
    expect(await advisoryLocks()).toBe(2);

    // The node's connection dies (as when its process is killed).
    await admin.query('SELECT pg_terminate_backend($1)', [await a.sessionPid()]);
    const lockB = b.newLock('upload-4');
    await lockB.lock(never(), () => undefined);
    expect(b.heldIds()).toEqual(['upload-4']);
    expect(lost).toBe(1);
    expect(a.heldIds()).toEqual([]);
    expect(aReleaseCalls).toBeGreaterThanOrEqual(2);
    await lockB.unlock();
    expect(await advisoryLocks()).toBe(0);

    // The node reconnects for its next lock.
    const again = a.newLock('upload-5');
    await again.lock(never(), () => undefined);
    expect(a.heldIds()).toEqual(['upload-5']);
    await again.unlock();
  });

  it('keeps two requests of the same node apart (advisory locks are re-entrant within a session)', async () => {
    const a = node();
    const first = a.newLock('upload-6');
    let firstAsked = false;
    await first.lock(never(), async () => {
      firstAsked = true;
      await first.unlock();
    });
    const second = a.newLock('upload-6');
    await second.lock(never(), () => undefined);
    expect(firstAsked).toBe(true);
    expect(a.heldIds()).toEqual(['upload-6']);
    await second.unlock();
    await expect(second.unlock()).rejects.toThrow(/unlocked lock/);
    expect(await advisoryLocks()).toBe(0);
  });

  it('leaks no lock when two nodes contend for many uploads at once', async () => {
    const nodes = [node(), node()];
    const ids = Array.from({ length: 10 }, (_, i) => `upload-many-${i}`);
    const inside = new Map<string, number>();
    let overlaps = 0;
    await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        const id = ids[i % ids.length]!;
        const lock = nodes[i % 2]!.newLock(id);
        await lock.lock(never(), () => undefined); // holders let go by themselves, quickly
        inside.set(id, (inside.get(id) ?? 0) + 1);
        if (inside.get(id)! > 1) overlaps++;
        await sleep(5);
        inside.set(id, inside.get(id)! - 1);
        await lock.unlock();
      }),
    );
    expect(overlaps).toBe(0);
    expect(nodes.flatMap((n) => n.heldIds())).toEqual([]);
    expect(await advisoryLocks()).toBe(0);
  });

  it('releases everything a node holds when it closes', async () => {
    const a = node();
    await a.newLock('upload-7').lock(never(), () => undefined);
    await a.newLock('upload-8').lock(never(), () => undefined);
    expect(await advisoryLocks()).toBe(2);
    await a.close();
    for (let i = 0; i < 100 && (await advisoryLocks()) > 0; i++) await sleep(20);
    expect(await advisoryLocks()).toBe(0);
  });
});
