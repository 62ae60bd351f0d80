import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { coarseExpiry, deliverySignature, isValidDeliverySignature, signDeliveryUrl } from './signing.js';

const secret = 'x'.repeat(40);

describe('delivery signatures', () => {
  it('are the unpadded base64url HMAC-SHA256 of "/f/<token>/<n>?exp=<exp>"', () => {
    const expected = createHmac('sha256', secret).update('/f/abc/3?exp=1700000000').digest('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
    expect(deliverySignature(secret, '/f/abc/3', 1700000000)).toBe(expected);
    expect(signDeliveryUrl(secret, 'abc', '3', 1700000000)).toBe(`/f/abc/3?exp=1700000000&sig=${expected}`);
  });

  it('only verify for the same path, expiry and secret', () => {
    const sig = deliverySignature(secret, '/f/abc/3', 1700000000);
    expect(isValidDeliverySignature(secret, '/f/abc/3', 1700000000, sig)).toBe(true);
    expect(isValidDeliverySignature(secret, '/f/abc/0', 1700000000, sig)).toBe(false);
    expect(isValidDeliverySignature(secret, '/f/abc/3', 1700000001, sig)).toBe(false);
    expect(isValidDeliverySignature('y'.repeat(40), '/f/abc/3', 1700000000, sig)).toBe(false);
    expect(isValidDeliverySignature(secret, '/f/abc/3', 1700000000, `${sig}=`)).toBe(false);
    expect(isValidDeliverySignature(secret, '/f/abc/3', 1700000000, '')).toBe(false);
  });
});

describe('coarse expiry', () => {
  const now = Date.UTC(2026, 0, 1, 12, 34, 56, 789);
  it('rounds up to a boundary so links minted in the same window are identical', () => {
    for (const [expiresIn, step] of [
      [30, 60],
      [600, 300],
      [3600, 3600],
      [7 * 86400, 86400],
    ] as const) {
      const exp = coarseExpiry(now, expiresIn);
      expect(exp % step).toBe(0);
      expect(exp).toBeGreaterThanOrEqual(Math.floor(now / 1000) + expiresIn);
      expect(exp).toBeLessThan(Math.floor(now / 1000) + expiresIn + step);
      expect(coarseExpiry(now + 1000, expiresIn)).toBe(exp);
    }
  });
});
