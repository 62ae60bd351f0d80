import { createHmac, timingSafeEqual } from 'node:crypto';

// Signed delivery links: /f/<token>/<n>?exp=<unix seconds>&sig=<s>, where s is the unpadded
// base64url HMAC-SHA256, keyed with CHIPMUNK_SECRET, of the string "/f/<token>/<n>?exp=<unix seconds>".
// The variant is inside the signed string, so a signature for variant 3 does not open variant 0.

/** Links handed out in file JSON live at least this long (and less than twice as long). */
export const DEFAULT_LINK_SECONDS = 3600;
export const MAX_LINK_SECONDS = 7 * 24 * 3600;

export function deliveryPath(token: string, variant: string): string {
  return `/f/${token}/${variant}`;
}

export function deliverySignature(secret: string, path: string, exp: number): string {
  return createHmac('sha256', secret).update(`${path}?exp=${exp}`).digest('base64url');
}

/** Constant-time check of a presented signature against the one expected for path + exp. */
export function isValidDeliverySignature(secret: string, path: string, exp: number, presented: string): boolean {
  const expected = Buffer.from(deliverySignature(secret, path, exp));
  const given = Buffer.from(presented);
  // Lengths are public (always 43 characters); comparing them first leaks nothing secret.
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/**
 * Expiry rounded UP to a coarse boundary, so every link minted for a variant within the same window
 * is the same URL and browsers and CDNs can cache it. The link lives at least `expiresIn` seconds
 * and less than `expiresIn + step`, with step = 60 s below 10 min, 5 min below 1 h, 1 h below a day,
 * 1 day beyond.
 */
export function coarseExpiry(nowMs: number, expiresIn: number): number {
  const step = expiresIn < 600 ? 60 : expiresIn < 3600 ? 300 : expiresIn < 86_400 ? 3600 : 86_400;
  const target = Math.floor(nowMs / 1000) + Math.ceil(expiresIn);
  return Math.ceil(target / step) * step;
}

export function signDeliveryUrl(secret: string, token: string, variant: string, exp: number): string {
  const path = deliveryPath(token, variant);
  return `${path}?exp=${exp}&sig=${deliverySignature(secret, path, exp)}`;
}
