import { createRoute } from '@hono/zod-openapi';
import { signUploadToken } from '../auth/upload-tokens.js';
import { errors } from '../errors.js';
import type { Purposes } from '../purposes.js';
import { anyTypeJson, errorReplies, jsonReply, jsonRequest, v1Router, withApiKey } from './declare.js';
import { uploadTokenRequest, uploadTokenResponse } from './schemas.js';

export function uploadTokenRoutes(deps: { secret: string; apiKey: string; purposes: Purposes; maxLifetimeSeconds: number }) {
  const mint = createRoute({
    method: 'post',
    path: '/',
    summary: 'Mint an upload token for one user and purpose',
    ...withApiKey(deps.apiKey, anyTypeJson),
    request: { body: jsonRequest(uploadTokenRequest) },
    responses: { 201: jsonReply('the token', uploadTokenResponse), ...errorReplies(400, 401) },
  });

  return v1Router().openapi(mint, async (c) => {
    const body = c.req.valid('json');
    deps.purposes.get(body.purpose);
    if (body.expiresIn > deps.maxLifetimeSeconds) {
      throw errors.invalidInput(`expiresIn may be at most ${deps.maxLifetimeSeconds} seconds on this server (CHIPMUNK_UPLOAD_TOKEN_MAX_AGE).`);
    }
    const { token, expiresAt } = await signUploadToken(deps.secret, body);
    return c.json(
      { token, expiresAt: new Date(expiresAt * 1000).toISOString(), ...(body.maxUploads !== undefined ? { maxUploads: body.maxUploads } : {}) },
      201,
    );
  });
}
