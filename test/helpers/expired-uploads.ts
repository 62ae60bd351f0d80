import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { sql } from 'drizzle-orm';
import type { Chipmunk } from '../../src/chipmunk.js';
import { files, users } from '../../src/db/schema.js';
import { newDeliveryToken, newFileId } from '../../src/ids.js';

/**
 * Plants `count` unfinished uploads that expired an hour ago, as tus would have left them: a row
 * holding a reservation, the partial bytes and tus's JSON record. Rows go in directly for speed.
 */
export async function plantExpiredUploads(chipmunk: Chipmunk, count: number, userCount = 20): Promise<void> {
  const now = Date.now();
  const declared = 10_000;
  const partial = Buffer.alloc(100, 7);
  const ids = Array.from({ length: count }, () => newFileId());
  chipmunk.db!.transaction((tx) => {
    for (let u = 0; u < userCount; u++) {
      const share = ids.filter((_, i) => i % userCount === u).length;
      tx.insert(users)
        .values({ id: `sweep-${u}`, quotaBytes: 1e12, reservedBytes: share * declared, createdAt: now })
        .onConflictDoUpdate({ target: users.id, set: { reservedBytes: sql`${users.reservedBytes} + ${share * declared}` } })
        .run();
    }
    ids.forEach((id, i) => {
      tx.insert(files)
        .values({
          id,
          userId: `sweep-${i % userCount}`,
          purpose: 'image',
          kind: 'image',
          status: 'uploading',
          filename: 'x.jpg',
          bytes: declared,
          reservedBytes: declared,
          visibility: 'private',
          deliveryToken: newDeliveryToken(),
          createdAt: now - 2 * 3600_000,
          updatedAt: now - 2 * 3600_000,
          expiresAt: now - 3600_000,
        })
        .run();
    });
  });
  const dir = chipmunk.config.uploadDir;
  for (let i = 0; i < ids.length; i += 250) {
    await Promise.all(
      ids
        .slice(i, i + 250)
        .flatMap((id) => [
          writeFile(path.join(dir, id), partial),
          writeFile(
            path.join(dir, `${id}.json`),
            JSON.stringify({ id, size: declared, offset: 0, metadata: {}, creation_date: new Date(now - 2 * 3600_000).toISOString() }),
          ),
        ]),
    );
  }
}

/** GET /health every `pauseMs` until `done` settles (a steady probe, not a flood); returns each latency in ms. */
export async function healthLatencies(url: string, done: Promise<unknown>, pauseMs = 10): Promise<number[]> {
  let finished = false;
  void done.finally(() => (finished = true)).catch(() => {});
  const latencies: number[] = [];
  while (!finished) {
    const t0 = performance.now();
    const res = await fetch(`${url}/health`);
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`/health answered ${res.status}`);
    latencies.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, pauseMs));
  }
  return latencies;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}
