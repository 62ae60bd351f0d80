import { createHash, timingSafeEqual } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import { errors } from '../errors.js';
import { bearerToken } from './upload-tokens.js';

/** The app backend's key for /v1, sent as `Authorization: Bearer <key>`, compared in constant time. */
export function isApiKey(apiKey: string, presented: string | undefined): boolean {
  if (!presented) return false;
  // Hashing first gives equal lengths, so timingSafeEqual leaks nothing about the key's length.
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(apiKey), digest(presented));
}

export function requireApiKey(apiKey: string): MiddlewareHandler {
  return async (c, next) => {
    if (!isApiKey(apiKey, bearerToken(c.req.header('authorization')))) {
      throw errors.unauthorized('This route needs the API key: send it as "Authorization: Bearer <CHIPMUNK_API_KEY>".');
    }
    await next();
  };
}
