import type { Deliverable } from '../db/repository.js';
import { createDeliveryCache, stringBytes } from './cache.js';
import type { DeliveryInvalidation } from './invalidation.js';

// Every /f/ request needs one deliverable (and a ladder rung the look-up of its AVIF twin): found
// ones are remembered here, in delivery, not in the persistence layer, until a committed change to
// their file is announced (a rotated token, a visibility change, a delete, replaced variants) or
// their TTL ends. Misses are not remembered: a file that finishes uploading becomes deliverable at
// once, and a flood of random tokens cannot fill the cache.

export type FindDeliverable = (token: string, name: string) => Promise<Deliverable | undefined>;

export type DeliverableCacheOptions = {
  find: FindDeliverable;
  invalidation: DeliveryInvalidation;
  /** Memory for remembered deliverables (default 4 MB, some 8,000 of them). */
  maxBytes?: number;
  /** Re-read at least this often, should an announcement be missed (default 60 s). */
  ttlMs?: number;
};

export type CachedDeliverables = FindDeliverable & { readonly cached: { entries: number; bytes: number } };

export function createDeliverableCache(opts: DeliverableCacheOptions): CachedDeliverables {
  const cache = createDeliveryCache<Deliverable>({
    maxBytes: opts.maxBytes ?? 4 * 1024 * 1024,
    ttlMs: opts.ttlMs ?? 60_000,
    invalidation: opts.invalidation,
    fileOf: (d) => d.fileId,
    sizeOf: (d, key) =>
      240 + stringBytes(key) + stringBytes(d.fileId) + stringBytes(d.purpose) + stringBytes(d.filename) + stringBytes(d.path) + stringBytes(d.mimeType),
  });
  const find = async (token: string, name: string): Promise<Deliverable | undefined> => {
    const key = `${token}/${name}`;
    const known = cache.get(key);
    if (known) return known;
    const since = cache.epoch();
    const found = await opts.find(token, name);
    if (found) cache.set(key, found, since);
    return found;
  };
  return Object.defineProperty(find, 'cached', { get: () => ({ entries: cache.size, bytes: cache.bytes }) }) as CachedDeliverables;
}
