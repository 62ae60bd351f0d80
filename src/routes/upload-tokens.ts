import { Hono } from 'hono';
import { signUploadToken } from '../auth/upload-tokens.js';
import type { Purposes } from '../purposes.js';
import { uploadTokenRequest } from './schemas.js';
import { jsonBody } from './validate.js';

export function uploadTokenRoutes(deps: { secret: string; purposes: Purposes }) {
  return new Hono().post('/', async (c) => {
    const body = await jsonBody(c, uploadTokenRequest);
    deps.purposes.get(body.purpose);
    const { token, expiresAt } = await signUploadToken(deps.secret, body);
    return c.json({ token, expiresAt: new Date(expiresAt * 1000).toISOString() }, 201);
  });
}
