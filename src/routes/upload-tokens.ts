import { Hono } from 'hono';
import { signUploadToken } from '../auth/upload-tokens.js';
import { errors } from '../errors.js';
import type { Purposes } from '../purposes.js';
import { uploadTokenRequest } from './schemas.js';
import { jsonBody } from './validate.js';

export function uploadTokenRoutes(deps: { secret: string; purposes: Purposes; maxLifetimeSeconds: number }) {
  return new Hono().post('/', async (c) => {
    const body = await jsonBody(c, uploadTokenRequest);
    deps.purposes.get(body.purpose);
    if (body.expiresIn > deps.maxLifetimeSeconds) {
      throw errors.invalidInput(`expiresIn may be at most ${deps.maxLifetimeSeconds} seconds on this server (CHIPMUNK_UPLOAD_TOKEN_MAX_AGE).`);
    }
    const { token, expiresAt } = await signUploadToken(deps.secret, body);
    return c.json({ token, expiresAt: new Date(expiresAt * 1000).toISOString(), ...(body.maxUploads !== undefined ? { maxUploads: body.maxUploads } : {}) }, 201);
  });
}
