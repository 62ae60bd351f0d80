import type { Deliverable, Repository } from '../db/repository.js';
import { AppError, errors } from '../errors.js';
import { createDeliveryCache, stringBytes } from './cache.js';
import { createDeliverableCache } from './deliverables.js';
import type { DeliveryInvalidation } from './invalidation.js';
import { acceptsAvif, negotiateFormat } from './negotiate.js';
import { deliveryKey, isValidDeliverySignature } from './signing.js';

// The one access decision for /f/<token>/<n>, shared by Chipmunk's own delivery and the nginx
// auth endpoint: the raw request target (path + query, exactly as the client sent it; parameters
// other than exp and sig are ignored) goes in,
// the variant to serve and the headers to serve it with come out, or an AppError.

export type Delivery = {
  /** The file and variant: fileId, name, path (inside the file's folder), mimeType, bytes, updatedAt… */
  target: Deliverable;
  contentType: string;
  cacheControl: string;
  /** Set for originals that must not render inline (audio, anything not a plain image). */
  contentDisposition: string | undefined;
  /** Unix seconds after which this answer stops being true (signed links); undefined for public files. */
  expiresAt: number | undefined;
  /** 'Accept' when the answer depends on the client's Accept (a rung with an AVIF twin). */
  vary: string | undefined;
};

export const deliveryErrors = {
  signatureRequired: errors.signatureRequired,
  invalidSignature: errors.invalidSignature,
  expired: errors.linkExpired,
  notFound: () => errors.notFound('File'),
};

const YEAR = 31_536_000;
// Strict on the raw target: anything percent-encoded, any dot segment, NUL or extra slash fails here.
const targetPattern = /^\/f\/([0-9a-z]{32})\/([0-9a-z][0-9a-z-]{0,31})(?:\?([^#]*))?$/;

/** `accept` is the client's Accept header: it picks between a rung's WebP and AVIF (negotiate.ts). */
/** Synchronous when the grant is remembered (the hot path); a look-up in the database otherwise. */
export type DeliveryResolver = (target: string, accept?: string) => Delivery | Promise<Delivery>;

/** The resolver with a view of its caches: entries and estimated bytes (for tests and operators). */
export type CachingDeliveryResolver = DeliveryResolver & {
  readonly cached: { grants: number; grantBytes: number; signatures: number; deliverables: number; deliverableBytes: number };
};

export type DeliveryResolverDeps = {
  repo: Pick<Repository, 'getDeliverable'>;
  /** Committed changes to files: what is remembered of a changed file goes at once. */
  invalidation: DeliveryInvalidation;
  secret: string;
  now?: () => number;
  /** Purposes whose original (variant 0) is served only with a signed link, whatever the file's visibility. */
  privateOriginal?: (purpose: string) => boolean;
  /** Memory for remembered grants (default 8 MB), valid signatures (default 2 MB) and deliverables (default 4 MB). */
  cacheBytes?: { grants?: number; signatures?: number; deliverables?: number };
};

export function createDeliveryResolver(deps: DeliveryResolverDeps): CachingDeliveryResolver {
  const findDeliverable = createDeliverableCache({
    find: (token, name) => deps.repo.getDeliverable(token, name),
    invalidation: deps.invalidation,
    maxBytes: deps.cacheBytes?.deliverables,
  });
  const secret = deliveryKey(deps.secret);
  const now = deps.now ?? Date.now;
  const privateOriginal = deps.privateOriginal ?? (() => false);
  // Coarse expiry means the same signed URL is presented again and again; an HMAC costs more than
  // the rest of the decision, so signatures already found valid are remembered (never refusals).
  // Safe: the signed string fully determines the answer, and expiry is still checked every time.
  const knownGood = createDeliveryCache<object>({
    maxBytes: deps.cacheBytes?.signatures ?? 2 * 1024 * 1024,
    ttlMs: 3600_000,
    sizeOf: (_v, key) => 64 + stringBytes(key),
  });
  const isValid = (path: string, exp: string, sig: string): boolean => {
    const key = `${path}?exp=${exp}&sig=${sig}`;
    if (knownGood.get(key)) return true;
    if (!/^[1-9]\d{0,11}$/.test(exp) || !isValidDeliverySignature(secret, path, Number(exp), sig)) return false;
    knownGood.set(key, VALID);
    return true;
  };

  // The same variant is asked for again and again (a thumbnail on a busy page): grants already made
  // are remembered, keyed by what decides access — token and variant, plus exp and sig for signed
  // grants — so junk query parameters neither miss the cache nor add to it. A file's grants go when a
  // committed change to it is announced. Private grants still expire on time, and their max-age is
  // recomputed as the seconds pass.
  const granted = createDeliveryCache<Grant>({
    maxBytes: deps.cacheBytes?.grants ?? 8 * 1024 * 1024,
    ttlMs: 60_000,
    invalidation: deps.invalidation,
    fileOf: (g) => g.delivery.target.fileId,
    sizeOf: (g, key) => 400 + stringBytes(key) + stringBytes(g.delivery.target.filename) + stringBytes(g.delivery.contentDisposition),
  });

  const resolve = (requestTarget: string, accept?: string): Delivery | Promise<Delivery> => {
    // AVIF-accepting clients get their own grants: the answer differs for rungs with an AVIF twin.
    const avif = acceptsAvif(accept);
    const match = targetPattern.exec(requestTarget);
    if (!match) throw deliveryErrors.notFound();
    const [, token, name, query] = match as unknown as [string, string, string, string | undefined];
    const { exp, sig } = signatureParams(query);
    // ⌈now⌉ in seconds: left = ⌊(exp·1000 − now) / 1000⌋ = exp − ⌈now / 1000⌉.
    const second = Math.ceil(now() / 1000);
    const bareKey = `${avif ? 'avif ' : ''}${token}/${name}`;
    const signedKey = exp !== undefined && sig !== undefined ? `${bareKey}?${exp}&${sig}` : undefined;
    const known = granted.get(bareKey) ?? (signedKey ? granted.get(signedKey) : undefined);
    if (known) {
      if (known.delivery.expiresAt === undefined) return known.delivery;
      if (second === known.second) return known.delivery;
      if (second < known.delivery.expiresAt) {
        known.second = second;
        known.delivery = { ...known.delivery, cacheControl: privateCacheControl(known.delivery.expiresAt - second) };
        return known.delivery;
      }
      granted.delete(signedKey!);
    }

    return grant(token, name, exp, sig, avif, second, bareKey, signedKey);
  };

  const grant = async (
    token: string,
    name: string,
    exp: string | undefined,
    sig: string | undefined,
    avif: boolean,
    second: number,
    bareKey: string,
    signedKey: string | undefined,
  ): Promise<Delivery> => {
    // Excludes files being uploaded or deleted.
    const asked = await findDeliverable(token, name);
    if (!asked) throw deliveryErrors.notFound();

    let expiresAt: number | undefined;
    let cacheControl = `public, max-age=${YEAR}, immutable`;
    if (asked.visibility === 'private' || (asked.name === '0' && privateOriginal(asked.purpose))) {
      if (exp === undefined || sig === undefined) throw deliveryErrors.signatureRequired();
      if (!isValid(`/f/${token}/${name}`, exp, sig)) {
        throw deliveryErrors.invalidSignature();
      }
      expiresAt = Number(exp);
      const left = expiresAt - second;
      if (left <= 0) throw deliveryErrors.expired();
      // Browsers may keep the bytes as long as the link is valid, never in a shared cache.
      cacheControl = privateCacheControl(left);
    }

    const { target, vary } = await negotiateFormat(asked, token, avif, findDeliverable);
    const delivery: Delivery = {
      target,
      contentType: target.mimeType,
      cacheControl,
      contentDisposition: target.name === '0' && !isInlineSafe(target.mimeType) ? attachment(target.filename) : undefined,
      expiresAt,
      vary,
    };
    granted.set(expiresAt === undefined ? bareKey : signedKey!, { second, delivery });
    return delivery;
  };
  // defineProperty, not Object.assign: assign would copy the getter's value once.
  return Object.defineProperty(resolve, 'cached', {
    get: () => ({
      grants: granted.size,
      grantBytes: granted.bytes,
      signatures: knownGood.size,
      deliverables: findDeliverable.cached.entries,
      deliverableBytes: findDeliverable.cached.bytes,
    }),
  }) as CachingDeliveryResolver;
}

const VALID = Object.freeze({});

type Grant = { second: number; delivery: Delivery };

const privateCacheControl = (left: number) => `private, max-age=${Math.min(left, YEAR)}, immutable`;

/** exp and sig from the query string (first occurrence each); other parameters are ignored. */
function signatureParams(query: string | undefined): { exp?: string; sig?: string } {
  const out: { exp?: string; sig?: string } = {};
  if (!query) return out;
  for (const pair of query.split('&')) {
    if (out.exp === undefined && pair.startsWith('exp=')) out.exp = pair.slice(4);
    else if (out.sig === undefined && pair.startsWith('sig=')) out.sig = pair.slice(4);
  }
  return out;
}

/** Raster images render inline; audio, SVG and anything else are downloads. */
function isInlineSafe(mimeType: string): boolean {
  return mimeType.startsWith('image/') && !mimeType.startsWith('image/svg');
}

/** RFC 6266: an ASCII fallback plus the UTF-8 name; header-safe whatever the upload was called. */
export function attachment(filename: string): string {
  const ascii = filename.replace(/[^\x20-\x7e]/g, '_').replace(/["\\]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(filename).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}`;
}
