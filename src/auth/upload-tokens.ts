import { jwtVerify, SignJWT, errors as joseErrors } from 'jose';
import { errors } from '../errors.js';

// Upload tokens: short-lived HS256 JWTs signed with CHIPMUNK_SECRET.
// Claims: sub = the app's user id, purpose = what the upload is for, exp = expiry (unix seconds).

export type UploadGrant = { userId: string; purpose: string; expiresAt: number };

export const MAX_UPLOAD_TOKEN_SECONDS = 7 * 24 * 3600;

const key = (secret: string) => new TextEncoder().encode(secret);

export async function signUploadToken(secret: string, grant: { userId: string; purpose: string; expiresIn: number }): Promise<{ token: string; expiresAt: number }> {
  const expiresAt = Math.floor(Date.now() / 1000) + Math.floor(grant.expiresIn);
  const token = await new SignJWT({ purpose: grant.purpose })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(grant.userId)
    .setIssuedAt()
    .setExpirationTime(expiresAt)
    .sign(key(secret));
  return { token, expiresAt };
}

export async function verifyUploadToken(secret: string, token: string): Promise<UploadGrant> {
  try {
    const { payload } = await jwtVerify(token, key(secret), { algorithms: ['HS256'] });
    if (typeof payload.sub !== 'string' || !payload.sub || typeof payload.purpose !== 'string' || typeof payload.exp !== 'number') {
      throw errors.unauthorized('Upload token must carry sub, purpose and exp claims.');
    }
    return { userId: payload.sub, purpose: payload.purpose, expiresAt: payload.exp };
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw errors.unauthorized('Upload token has expired; ask the app for a new one.');
    if (err instanceof joseErrors.JOSEError) throw errors.unauthorized('Upload token is invalid.');
    throw err;
  }
}

/** Reads `Authorization: Bearer <token>`. */
export function bearerToken(header: string | null | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return match?.[1];
}
