import { jwtVerify, SignJWT, errors as joseErrors } from 'jose';
import { nanoid } from 'nanoid';
import { errors } from '../errors.js';
import { purposeNameSchema, userIdSchema } from '../routes/schemas.js';

// Upload tokens: short-lived HS256 JWTs signed with CHIPMUNK_SECRET.
// Claims: sub = the app's user id, purpose = what the upload is for, exp = expiry (unix seconds),
// iat, jti = the token's id, and max = how many uploads it may start (absent: unbounded within exp).
// Every edge that takes a token (tus creation, POST /v1/files) verifies it here: the claims are
// checked with the same schemas as the API's own fields, and a lifetime past the server's cap is
// refused even when the signature is good (a backend signing its own tokens cannot mint forever).

export type UploadGrant = { userId: string; purpose: string; expiresAt: number; jti?: string; maxUploads?: number };

/** The default cap on a token's lifetime (CHIPMUNK_UPLOAD_TOKEN_MAX_AGE). */
export const MAX_UPLOAD_TOKEN_SECONDS = 7 * 24 * 3600;
/** Clock skew tolerated between the backend that signed a token and this server. */
const SKEW_SECONDS = 60;

const key = (secret: string) => new TextEncoder().encode(secret);

export async function signUploadToken(
  secret: string,
  grant: { userId: string; purpose: string; expiresIn: number; maxUploads?: number | undefined },
): Promise<{ token: string; expiresAt: number; jti: string }> {
  const expiresAt = Math.floor(Date.now() / 1000) + Math.floor(grant.expiresIn);
  const jti = nanoid();
  const token = await new SignJWT({ purpose: grant.purpose, ...(grant.maxUploads !== undefined ? { max: grant.maxUploads } : {}) })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(grant.userId)
    .setIssuedAt()
    .setJti(jti)
    .setExpirationTime(expiresAt)
    .sign(key(secret));
  return { token, expiresAt, jti };
}

export async function verifyUploadToken(secret: string, token: string, opts: { maxLifetimeSeconds?: number; now?: number } = {}): Promise<UploadGrant> {
  const maxLifetime = opts.maxLifetimeSeconds ?? MAX_UPLOAD_TOKEN_SECONDS;
  let payload;
  try {
    ({ payload } = await jwtVerify(token, key(secret), { algorithms: ['HS256'], currentDate: opts.now ? new Date(opts.now) : undefined }));
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw errors.unauthorized('Upload token has expired; ask the app for a new one.');
    if (err instanceof joseErrors.JOSEError) throw errors.unauthorized('Upload token is invalid.');
    throw err;
  }
  if (typeof payload.sub !== 'string' || typeof payload.purpose !== 'string' || typeof payload.exp !== 'number') {
    throw errors.unauthorized('Upload token must carry sub, purpose and exp claims.');
  }
  if (!userIdSchema.safeParse(payload.sub).success)
    throw errors.unauthorized('Upload token names an invalid user id (sub): letters, digits and . _ @ : + - only, at most 128.');
  if (!purposeNameSchema.safeParse(payload.purpose).success) throw errors.unauthorized('Upload token names an invalid purpose.');
  const now = Math.floor((opts.now ?? Date.now()) / 1000);
  const issued = typeof payload.iat === 'number' ? payload.iat : now;
  if (payload.exp - Math.min(issued, now) > maxLifetime + SKEW_SECONDS || issued > now + SKEW_SECONDS) {
    throw errors.unauthorized(`Upload token lives longer than this server accepts (at most ${maxLifetime} seconds); ask the app for a shorter-lived one.`);
  }
  const grant: UploadGrant = { userId: payload.sub, purpose: payload.purpose, expiresAt: payload.exp };
  if (payload.max !== undefined) {
    if (
      typeof payload.max !== 'number' ||
      !Number.isSafeInteger(payload.max) ||
      payload.max < 1 ||
      typeof payload.jti !== 'string' ||
      !/^[\w-]{1,64}$/.test(payload.jti)
    ) {
      throw errors.unauthorized('Upload token has an invalid use bound (max needs a positive integer and a jti).');
    }
    grant.jti = payload.jti;
    grant.maxUploads = payload.max;
  }
  return grant;
}

/** Reads `Authorization: Bearer <token>`. */
export function bearerToken(header: string | null | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return match?.[1];
}

/** The use-counting half of a bounded token: a use is claimed before an upload is admitted. */
export type TokenUseLedger = { claim(jti: string, max: number, expiresAt: number): Promise<boolean>; refund(jti: string): Promise<void> };

/** Claims one use of a bounded grant (no-op for unbounded ones); the returned function gives it back. */
export async function claimTokenUse(ledger: TokenUseLedger, grant: UploadGrant): Promise<() => Promise<void>> {
  if (grant.jti === undefined || grant.maxUploads === undefined) return async () => {};
  if (!(await ledger.claim(grant.jti, grant.maxUploads, grant.expiresAt))) {
    throw errors.unauthorized(
      `This upload token has been used for its ${grant.maxUploads} upload${grant.maxUploads === 1 ? '' : 's'}; ask the app for a new one.`,
    );
  }
  const jti = grant.jti;
  let refunded = false;
  return async () => {
    if (refunded) return;
    refunded = true;
    await ledger.refund(jti);
  };
}
