import { LRUCache } from 'lru-cache';
import type { DeliveryInvalidation } from './invalidation.js';

// Every cache delivery keeps (deliverables, grants, valid signatures, small variants' bytes) is one
// of these: bounded by bytes, not entries, so a flood of distinct keys costs a fixed amount of
// memory; entries die after a TTL; and a cache subscribed to the delivery invalidation drops the
// entries of a file when a committed write could have changed what it serves (invalidation.ts).
// Keys are built by the callers from what decides access (token, variant, exp, sig), never from the
// raw request, so parameters that decide nothing cannot create entries.

export type DeliveryCacheOptions<V> = {
  /** Upper bound of the estimated memory held (keys and values). */
  maxBytes: number;
  /** Entries are recomputed at least this often. */
  ttlMs: number;
  /** The estimated memory of one entry, in bytes. */
  sizeOf: (value: V, key: string) => number;
  /** Larger entries are not kept at all. */
  maxEntryBytes?: number;
  /** Announces committed changes: the entries of the named file go (all of them when none is named). */
  invalidation?: DeliveryInvalidation;
  /** The file an entry was made from; needed with `invalidation`. */
  fileOf?: (value: V) => string;
  /** A clock in milliseconds for the TTL (tests); performance.now() by default. */
  now?: () => number;
};

export type DeliveryCache<V> = {
  get(key: string): V | undefined;
  /**
   * `since` is epoch() taken before an asynchronous read of what `value` was made from: when a
   * change was announced meanwhile the value may be stale, and it is not kept.
   */
  set(key: string, value: V, since?: number): void;
  delete(key: string): void;
  clear(): void;
  /** Moves at every announced change. */
  epoch(): number;
  readonly size: number;
  /** The estimated bytes held. */
  readonly bytes: number;
  /** Stops listening to the invalidation. */
  close(): void;
};

/** What the per-file index costs for one entry (a Set slot and its share of the Map), in bytes. */
const INDEX_BYTES = 64;

export function createDeliveryCache<V extends object>(opts: DeliveryCacheOptions<V>): DeliveryCache<V> {
  const { fileOf } = opts;
  if (opts.invalidation && !fileOf) throw new Error('A delivery cache with invalidation needs fileOf.');
  // fileId → the keys of its entries, kept in step with the LRU through dispose (evictions, TTL, deletes).
  const byFile = new Map<string, Set<string>>();
  const unindex = (value: V, key: string) => {
    const fileId = fileOf!(value);
    const keys = byFile.get(fileId);
    if (!keys) return;
    keys.delete(key);
    if (keys.size === 0) byFile.delete(fileId);
  };
  const lru = new LRUCache<string, V>({
    maxSize: Math.max(1, opts.maxBytes),
    maxEntrySize: opts.maxEntryBytes ?? opts.maxBytes,
    sizeCalculation: (value, key) => Math.max(1, Math.ceil(opts.sizeOf(value, key) + (fileOf ? INDEX_BYTES : 0))),
    ttl: opts.ttlMs,
    // Expired entries are found on access (or pushed out by size); no timers.
    ttlAutopurge: false,
    ...(opts.now ? { perf: { now: opts.now }, ttlResolution: 0 } : {}),
    ...(fileOf ? { dispose: unindex } : {}),
  });

  let epoch = 0;
  const unsubscribe = opts.invalidation?.onChange((fileId) => {
    epoch++;
    if (fileId === undefined) {
      lru.clear();
      byFile.clear();
      return;
    }
    const keys = byFile.get(fileId);
    if (keys) for (const key of [...keys]) lru.delete(key);
  });

  return {
    get: (key) => lru.get(key),
    set(key, value, since) {
      if (since !== undefined && since !== epoch) return;
      // dispose (run inside set for a replaced entry) unindexes the old value first.
      lru.set(key, value);
      if (fileOf && lru.has(key)) {
        const fileId = fileOf(value);
        let keys = byFile.get(fileId);
        if (!keys) byFile.set(fileId, (keys = new Set()));
        keys.add(key);
      }
    },
    delete: (key) => void lru.delete(key),
    clear: () => lru.clear(),
    epoch: () => epoch,
    get size() {
      return lru.size;
    },
    get bytes() {
      return lru.calculatedSize;
    },
    close: () => unsubscribe?.(),
  };
}

/** A rough size for a string key or field: UTF-16 in the heap, plus the object header. */
export const stringBytes = (s: string | undefined) => (s ? 16 + s.length * 2 : 0);
