import { createRoute } from '@hono/zod-openapi';
import { requestBaseUrl } from '../http.js';
import type { FileService } from '../services/files.js';
import { errorReplies, jsonReply, v1Router, withApiKey } from './declare.js';
import { fileIdParams, fileJson } from './schemas.js';

export function fileRoutes(deps: { files: FileService; apiKey: string; publicUrl: string | undefined }) {
  const getFile = createRoute({
    method: 'get',
    path: '/{id}',
    summary: "A file's JSON",
    ...withApiKey(deps.apiKey),
    request: { params: fileIdParams },
    responses: { 200: jsonReply('the file JSON', fileJson), ...errorReplies(400, 401, 404) },
  });
  const deleteFile = createRoute({
    method: 'delete',
    path: '/{id}',
    summary: 'Delete a file and give its bytes back',
    ...withApiKey(deps.apiKey),
    request: { params: fileIdParams },
    responses: { 204: { description: 'deleted' }, ...errorReplies(400, 401, 404) },
  });

  return v1Router({ param: 'file id' })
    .openapi(getFile, async (c) => c.json(await deps.files.describe(c.req.valid('param').id, requestBaseUrl(deps.publicUrl, c.req.raw)), 200))
    .openapi(deleteFile, async (c) => {
      await deps.files.remove(c.req.valid('param').id);
      return c.body(null, 204);
    });
}
