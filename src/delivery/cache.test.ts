import { describe, expect, it } from 'vitest';
import { createDeliveryCache } from './cache.js';
import { createDeliveryChanges } from './invalidation.js';

// The one cache delivery keeps things in: bounded by bytes, entries dying after their TTL, and a
// file's entries dropped when a committed change to it is announced.

type Entry = { fileId: string; size: number };
const entry = (fileId: string, size = 100): Entry => ({ fileId, size });

function cacheWith(opts: { maxBytes?: number; ttlMs?: number; maxEntryBytes?: number; now?: () => number } = {}) {
  const changes = createDeliveryChanges();
  const cache = createDeliveryCache<Entry>({
    maxBytes: opts.maxBytes ?? 1_000_000,
    ttlMs: opts.ttlMs ?? 60_000,
    maxEntryBytes: opts.maxEntryBytes,
    now: opts.now,
    invalidation: changes,
    fileOf: (e) => e.fileId,
    sizeOf: (e) => e.size,
  });
  return { cache, changes };
}

describe('delivery cache', () => {
  it('holds no more than its bytes, however many distinct keys arrive, keeping the most recent', () => {
    const { cache } = cacheWith({ maxBytes: 10_000 });
    for (let i = 0; i < 5_000; i++) cache.set(`k${i}`, entry(`f${i}`, 1_000));
    expect(cache.bytes).toBeLessThanOrEqual(10_000);
    expect(cache.size).toBeGreaterThan(0);
    expect(cache.size).toBeLessThan(10);
    expect(cache.get('k4999')?.fileId).toBe('f4999');
    expect(cache.get('k0')).toBeUndefined();
  });

  it('does not keep an entry larger than its per-entry bound', () => {
    const { cache } = cacheWith({ maxBytes: 10_000, maxEntryBytes: 2_000 });
    cache.set('big', entry('f', 5_000));
    cache.set('small', entry('f', 500));
    expect(cache.get('big')).toBeUndefined();
    expect(cache.get('small')).toBeDefined();
  });

  it('forgets an entry once its TTL has passed', () => {
    let now = 1_000;
    const { cache } = cacheWith({ ttlMs: 60_000, now: () => now });
    cache.set('k', entry('f'));
    now += 59_999;
    expect(cache.get('k')).toBeDefined();
    now += 2;
    expect(cache.get('k')).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it('drops every entry of a file when a change to it is announced, and only those', () => {
    const { cache, changes } = cacheWith();
    cache.set('a/0', entry('a'));
    cache.set('a/3', entry('a'));
    cache.set('b/0', entry('b'));
    changes.changed('a');
    expect(cache.get('a/0')).toBeUndefined();
    expect(cache.get('a/3')).toBeUndefined();
    expect(cache.get('b/0')).toBeDefined();
    // An entry made again after the change is kept, and goes at the next one.
    cache.set('a/0', entry('a'));
    expect(cache.get('a/0')).toBeDefined();
    changes.changed('a');
    expect(cache.get('a/0')).toBeUndefined();
  });

  it('drops everything when a change names no file', () => {
    const { cache, changes } = cacheWith();
    cache.set('a/0', entry('a'));
    cache.set('b/0', entry('b'));
    changes.changed(undefined);
    expect(cache.size).toBe(0);
    expect(cache.bytes).toBe(0);
  });

  it('follows an entry that moved to another file (a replaced value under the same key)', () => {
    const { cache, changes } = cacheWith();
    cache.set('k', entry('a'));
    cache.set('k', entry('b'));
    changes.changed('a');
    expect(cache.get('k')?.fileId).toBe('b');
    changes.changed('b');
    expect(cache.get('k')).toBeUndefined();
  });

  it('refuses a value read before a change that was announced while it was being read', () => {
    const { cache, changes } = cacheWith();
    const since = cache.epoch();
    // …an asynchronous read starts here; meanwhile a commit changes the file…
    changes.changed('a');
    cache.set('a/0', entry('a'), since);
    expect(cache.get('a/0')).toBeUndefined();
    // Read again after the change: kept.
    cache.set('a/0', entry('a'), cache.epoch());
    expect(cache.get('a/0')).toBeDefined();
  });

  it('stops listening once closed', () => {
    const { cache, changes } = cacheWith();
    cache.set('a/0', entry('a'));
    cache.close();
    changes.changed('a');
    expect(cache.get('a/0')).toBeDefined();
  });

  it('needs fileOf to be told of changes', () => {
    expect(() => createDeliveryCache<Entry>({ maxBytes: 1_000, ttlMs: 1_000, sizeOf: () => 1, invalidation: createDeliveryChanges() })).toThrow(/fileOf/);
  });
});
