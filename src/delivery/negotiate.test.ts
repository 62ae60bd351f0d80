import { describe, expect, it } from 'vitest';
import type { Deliverable } from '../db/repository.js';
import { acceptsAvif, negotiateFormat } from './negotiate.js';

const deliverable = (name: string, mimeType: string): Deliverable => ({
  fileId: 'f'.repeat(24),
  visibility: 'public',
  purpose: 'image',
  filename: 'photo.jpg',
  updatedAt: 1,
  name,
  path: `${name.replace('-avif', '')}.${mimeType.slice(6)}`,
  mimeType,
  bytes: 100,
});

describe('Accept negotiation', () => {
  it('takes AVIF only when Accept names image/avif with a q above 0', () => {
    expect(acceptsAvif('image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8')).toBe(true); // Chrome
    expect(acceptsAvif('image/avif,image/webp,*/*')).toBe(true); // Firefox
    expect(acceptsAvif('image/webp,*/*;q=0.8')).toBe(false);
    expect(acceptsAvif('image/*,*/*')).toBe(false); // wildcards are sent by browsers without AVIF too
    expect(acceptsAvif('image/webp, IMAGE/AVIF ; q=0.5')).toBe(true);
    expect(acceptsAvif('image/avif;q=0,image/webp')).toBe(false);
    expect(acceptsAvif('image/avif;q=0.0')).toBe(false);
    expect(acceptsAvif('image/avifx')).toBe(false);
    expect(acceptsAvif(undefined)).toBe(false);
    expect(acceptsAvif('')).toBe(false);
  });

  it('answers a rung with an AVIF twin by Accept, with Vary, and anything else as asked, without', async () => {
    const webp = deliverable('6', 'image/webp');
    const avif = deliverable('6-avif', 'image/avif');
    const withTwin = async (_t: string, n: string) => (n === '6-avif' ? avif : undefined);
    expect(await negotiateFormat(webp, 't', true, withTwin)).toEqual({ target: avif, vary: 'Accept' });
    expect(await negotiateFormat(webp, 't', false, withTwin)).toEqual({ target: webp, vary: 'Accept' });
    expect(await negotiateFormat(webp, 't', true, async () => undefined)).toEqual({ target: webp, vary: undefined });
    const original = deliverable('0', 'image/jpeg');
    let looked = 0;
    expect(await negotiateFormat(original, 't', true, async () => (looked++, avif))).toEqual({ target: original, vary: undefined });
    expect(await negotiateFormat(avif, 't', true, async () => (looked++, avif))).toEqual({ target: avif, vary: undefined });
    expect(looked).toBe(0);
  });
});
