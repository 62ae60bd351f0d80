import { createRoute } from '@hono/zod-openapi';
import type { DeliveryLinks } from '../delivery/links.js';
import { requestBaseUrl } from '../http.js';
import type { FileService } from '../services/files.js';
import { anyTypeJson, errorReplies, jsonReply, jsonRequest, v1Router, withApiKey } from './declare.js';
import { fileIdParams, fileJson, setVisibilityRequest, signedLinkQuery, signedLinkResponse } from './schemas.js';

// /v1/files/:id delivery controls: signed links, token rotation, visibility.

export function fileDeliveryRoutes(deps: { files: FileService; links: DeliveryLinks; apiKey: string; publicUrl: string | undefined }) {
  const base = (req: Request) => requestBaseUrl(deps.publicUrl, req);
  const signedLink = createRoute({
    method: 'get',
    path: '/{id}/url',
    summary: 'A signed delivery link to one variant',
    ...withApiKey(deps.apiKey),
    request: { params: fileIdParams, query: signedLinkQuery },
    responses: { 200: jsonReply('the link and when it expires', signedLinkResponse), ...errorReplies(400, 401, 404) },
  });
  const rotateToken = createRoute({
    method: 'post',
    path: '/{id}/rotate-token',
    summary: 'Give a file a new delivery token; earlier URLs stop working',
    ...withApiKey(deps.apiKey),
    request: { params: fileIdParams },
    responses: { 200: jsonReply('the file JSON', fileJson), ...errorReplies(400, 401, 404) },
  });
  const setVisibility = createRoute({
    method: 'patch',
    path: '/{id}',
    summary: "Change a file's visibility",
    ...withApiKey(deps.apiKey, anyTypeJson),
    request: { params: fileIdParams, body: jsonRequest(setVisibilityRequest) },
    responses: { 200: jsonReply('the file JSON', fileJson), ...errorReplies(400, 401, 404) },
  });

  return v1Router({ param: 'file id' })
    .openapi(signedLink, async (c) => {
      const { variant, expiresIn } = c.req.valid('query');
      return c.json(await deps.links.signedUrl(c.req.valid('param').id, variant, expiresIn, base(c.req.raw)), 200);
    })
    .openapi(rotateToken, async (c) => {
      const { id } = c.req.valid('param');
      await deps.links.rotateToken(id);
      return c.json(await deps.files.describe(id, base(c.req.raw)), 200);
    })
    .openapi(setVisibility, async (c) => {
      const { id } = c.req.valid('param');
      await deps.links.setVisibility(id, c.req.valid('json').visibility);
      return c.json(await deps.files.describe(id, base(c.req.raw)), 200);
    });
}
