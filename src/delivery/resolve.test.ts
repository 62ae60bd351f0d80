import { describe, expect, it } from 'vitest';
import type { Deliverable } from '../db/repository.js';
import { createDeliveryChanges } from './invalidation.js';
import { createDeliveryResolver } from './resolve.js';
import { signDeliveryUrl } from './signing.js';

// The resolver remembers deliverables and grants; these pin down that the memory never outlives the
// truth: an announced change to the file, a link's expiry, or the seconds its max-age counts down.

const secret = 'x'.repeat(40);
const token = 'a'.repeat(32);

function fakeRepository(visibility: 'public' | 'private') {
  const invalidation = createDeliveryChanges();
  let current: Deliverable | undefined = {
    fileId: 'f'.repeat(24),
    purpose: 'image',
    visibility,
    filename: 'photo.jpg',
    updatedAt: 1,
    name: '3',
    path: '3.webp',
    mimeType: 'image/webp',
    bytes: 100,
  };
  let lookups = 0;
  return {
    repo: {
      getDeliverable: async (t: string, name: string) => {
        lookups++;
        return t === token && name === current?.name ? current : undefined;
      },
    },
    invalidation,
    /** A committed write that changes the file's deliverables, announced after its commit: here, its deletion. */
    remove() {
      const fileId = current!.fileId;
      current = undefined;
      invalidation.changed(fileId);
    },
    lookups: () => lookups,
  };
}

describe('delivery resolver', () => {
  it('answers a repeated target from memory until a change to its file is announced', async () => {
    const store = fakeRepository('public');
    const resolve = createDeliveryResolver({ repo: store.repo, invalidation: store.invalidation, secret });
    const target = `/f/${token}/3`;
    expect((await resolve(target)).target.path).toBe('3.webp');
    expect((await resolve(target)).target.path).toBe('3.webp');
    // The rung and its AVIF twin (absent here), each looked up once.
    expect(store.lookups()).toBe(2);
    store.remove();
    await expect(Promise.resolve().then(() => resolve(target))).rejects.toThrow(expect.objectContaining({ status: 404 }));
  });

  it('keeps what it knows of a file when another file changes', async () => {
    const store = fakeRepository('public');
    const resolve = createDeliveryResolver({ repo: store.repo, invalidation: store.invalidation, secret });
    await resolve(`/f/${token}/3`);
    store.invalidation.changed('o'.repeat(24));
    await resolve(`/f/${token}/3`);
    expect(store.lookups()).toBe(2);
    // An announcement naming no file (a lost notification channel, say) drops everything.
    store.invalidation.changed(undefined);
    await resolve(`/f/${token}/3`);
    expect(store.lookups()).toBe(4);
  });

  it('counts a private grant’s max-age down with the clock and refuses it once expired', async () => {
    const store = fakeRepository('private');
    let nowMs = 1_700_000_000_000;
    const resolve = createDeliveryResolver({ repo: store.repo, invalidation: store.invalidation, secret, now: () => nowMs });
    const exp = 1_700_000_100;
    const target = signDeliveryUrl(secret, token, '3', exp);
    expect((await resolve(target)).cacheControl).toBe('private, max-age=100, immutable');
    nowMs += 500;
    expect((await resolve(target)).cacheControl).toBe('private, max-age=99, immutable');
    nowMs += 40_000;
    expect((await resolve(target)).cacheControl).toBe('private, max-age=59, immutable');
    expect(store.lookups()).toBe(2);
    nowMs = exp * 1000;
    await expect(Promise.resolve().then(() => resolve(target))).rejects.toThrow(expect.objectContaining({ code: 'LINK_EXPIRED' }));
  });

  it('never remembers a refusal', async () => {
    const store = fakeRepository('private');
    const resolve = createDeliveryResolver({ repo: store.repo, invalidation: store.invalidation, secret, now: () => 1_700_000_000_000 });
    const good = signDeliveryUrl(secret, token, '3', 1_700_000_100);
    const tampered = `${good.slice(0, -2)}AA`;
    await expect(Promise.resolve().then(() => resolve(tampered))).rejects.toThrow(expect.objectContaining({ code: 'INVALID_SIGNATURE' }));
    expect((await resolve(good)).target.name).toBe('3');
    await expect(Promise.resolve().then(() => resolve(tampered))).rejects.toThrow(expect.objectContaining({ code: 'INVALID_SIGNATURE' }));
  });

  it('keys grants by token, variant, exp and sig: junk parameters neither miss the cache nor grow it', async () => {
    const store = fakeRepository('public');
    const resolve = createDeliveryResolver({ repo: store.repo, invalidation: store.invalidation, secret });
    for (let i = 0; i < 10_000; i++) expect((await resolve(`/f/${token}/3?v=${i}&utm_source=${'x'.repeat(i % 200)}`)).target.name).toBe('3');
    // One decision: the variant and the look-up of its AVIF twin (negotiate.ts), then only the cache.
    expect(store.lookups()).toBe(2);
    expect(resolve.cached.grants).toBe(1);
  });

  it('bounds the grant cache by bytes, whatever the number of distinct signed links', async () => {
    const store = fakeRepository('private');
    const resolve = createDeliveryResolver({
      repo: store.repo,
      invalidation: store.invalidation,
      secret,
      now: () => 1_700_000_000_000,
      cacheBytes: { grants: 64 * 1024 },
    });
    for (let i = 0; i < 2_000; i++) await resolve(signDeliveryUrl(secret, token, '3', 1_700_000_100 + i));
    expect(resolve.cached.grantBytes).toBeLessThanOrEqual(64 * 1024);
    expect(resolve.cached.grants).toBeLessThan(2_000);
  });
});

describe('a purpose that keeps its original private', () => {
  function originalOf(visibility: 'public' | 'private') {
    const repo = {
      getDeliverable: async (t: string, name: string): Promise<Deliverable | undefined> =>
        t === token
          ? {
              fileId: 'f'.repeat(24),
              purpose: 'kyc',
              visibility,
              filename: 'id.jpg',
              updatedAt: 1,
              name,
              path: name === '0' ? '0.jpg' : `${name}.webp`,
              mimeType: 'image/jpeg',
              bytes: 10,
            }
          : undefined,
    };
    return createDeliveryResolver({ repo, invalidation: createDeliveryChanges(), secret, now: () => 1_700_000_000_000, privateOriginal: (p) => p === 'kyc' });
  }

  it('serves variant 0 of a public file only with a signed link; its other variants stay public', async () => {
    const resolve = originalOf('public');
    expect((await resolve(`/f/${token}/3`)).cacheControl).toMatch(/^public/);
    await expect(Promise.resolve().then(() => resolve(`/f/${token}/0`))).rejects.toThrow(expect.objectContaining({ code: 'SIGNATURE_REQUIRED', status: 401 }));
    // A signature for another variant does not open the original.
    const forThree = signDeliveryUrl(secret, token, '3', 1_700_000_100);
    await expect(Promise.resolve().then(() => resolve(forThree.replace(`/${token}/3?`, `/${token}/0?`)))).rejects.toThrow(
      expect.objectContaining({ code: 'INVALID_SIGNATURE' }),
    );
    const signed = await resolve(signDeliveryUrl(secret, token, '0', 1_700_000_100));
    expect(signed.cacheControl).toBe('private, max-age=100, immutable');
    // A bare request after the signed one is still refused (the signed grant is not the bare one).
    await expect(Promise.resolve().then(() => resolve(`/f/${token}/0`))).rejects.toThrow(expect.objectContaining({ code: 'SIGNATURE_REQUIRED' }));
  });
});
