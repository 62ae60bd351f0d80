import { createRoute } from '@hono/zod-openapi';
import { requestBaseUrl } from '../http.js';
import type { FileService } from '../services/files.js';
import type { UserService } from '../services/users.js';
import { anyTypeJson, errorReplies, jsonReply, jsonRequest, v1Router, withApiKey } from './declare.js';
import { fileListResponse, listFilesQuery, setQuotaRequest, userIdParams, userJson } from './schemas.js';

export function userRoutes(deps: { users: UserService; files: FileService; apiKey: string; publicUrl: string | undefined }) {
  const getUser = createRoute({
    method: 'get',
    path: '/{id}',
    summary: "A user's quota and usage",
    ...withApiKey(deps.apiKey),
    request: { params: userIdParams },
    responses: { 200: jsonReply('quota and usage', userJson), ...errorReplies(400, 401) },
  });
  const setQuota = createRoute({
    method: 'put',
    path: '/{id}',
    summary: "Set a user's quota",
    ...withApiKey(deps.apiKey, anyTypeJson),
    request: { params: userIdParams, body: jsonRequest(setQuotaRequest) },
    responses: { 200: jsonReply('quota and usage', userJson), ...errorReplies(400, 401) },
  });
  const listFiles = createRoute({
    method: 'get',
    path: '/{id}/files',
    summary: "A user's files, newest first, page by page",
    ...withApiKey(deps.apiKey),
    request: { params: userIdParams, query: listFilesQuery },
    responses: { 200: jsonReply('one page', fileListResponse), ...errorReplies(400, 401) },
  });

  return v1Router({ param: 'user id' })
    .openapi(getUser, async (c) => c.json(await deps.users.describe(c.req.valid('param').id), 200))
    .openapi(setQuota, async (c) => c.json(await deps.users.setQuota(c.req.valid('param').id, c.req.valid('json').quotaBytes), 200))
    .openapi(listFiles, async (c) =>
      c.json(await deps.files.list(c.req.valid('param').id, c.req.valid('query'), requestBaseUrl(deps.publicUrl, c.req.raw)), 200),
    );
}
