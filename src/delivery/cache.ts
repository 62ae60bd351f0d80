import { LRUCache } from 'lru-cache';

// Every cache delivery keeps (grants, valid signatures, small variants' bytes) is one of these:
// bounded by bytes, not entries, so a flood of distinct keys costs a fixed amount of memory; entries
// die after a TTL; and a cache told the repository's deliverablesGeneration() drops everything when
// a write could have changed a deliverable (token rotation, visibility, delete, new variants).
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
  /** The repository's deliverablesGeneration(): when it moves, every entry goes. */
  generation?: () => number;
};

export type DeliveryCache<V> = {
  get(key: string): V | undefined;
  set(key: string, value: V): void;
  delete(key: string): void;
  clear(): void;
  readonly size: number;
  /** The estimated bytes held. */
  readonly bytes: number;
};

export function createDeliveryCache<V extends object>(opts: DeliveryCacheOptions<V>): DeliveryCache<V> {
  const lru = new LRUCache<string, V>({
    maxSize: Math.max(1, opts.maxBytes),
    maxEntrySize: opts.maxEntryBytes ?? opts.maxBytes,
    sizeCalculation: (value, key) => Math.max(1, Math.ceil(opts.sizeOf(value, key))),
    ttl: opts.ttlMs,
    // Expired entries are found on access; no timers.
    ttlAutopurge: false,
  });
  let seen = opts.generation?.();
  const current = () => {
    if (!opts.generation) return;
    const generation = opts.generation();
    if (generation !== seen) {
      lru.clear();
      seen = generation;
    }
  };
  return {
    get(key) {
      current();
      return lru.get(key);
    },
    set(key, value) {
      current();
      lru.set(key, value);
    },
    delete: (key) => void lru.delete(key),
    clear: () => lru.clear(),
    get size() {
      return lru.size;
    },
    get bytes() {
      return lru.calculatedSize;
    },
  };
}

/** A rough size for a string key or field: UTF-16 in the heap, plus the object header. */
export const stringBytes = (s: string | undefined) => (s ? 16 + s.length * 2 : 0);
