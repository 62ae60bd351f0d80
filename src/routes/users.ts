import { Hono } from 'hono';
import type { Repository } from '../db/repository.js';
import { requestBaseUrl } from '../http.js';
import type { FileService } from '../services/files.js';
import { listFilesQuery, setQuotaRequest, userIdParams } from './schemas.js';
import { jsonBody, parseWith } from './validate.js';

export type UserJson = { id: string; quotaBytes: number; usedBytes: number; reservedBytes: number; fileCount: number };

/** A user Chipmunk has not seen yet has the default quota and nothing stored. */
export function describeUser(repo: Repository, id: string, defaultQuotaBytes: number): UserJson {
  const user = repo.getUser(id);
  return {
    id,
    quotaBytes: user?.quotaBytes ?? defaultQuotaBytes,
    usedBytes: user?.usedBytes ?? 0,
    reservedBytes: user?.reservedBytes ?? 0,
    fileCount: user?.fileCount ?? 0,
  };
}

export function userRoutes(deps: { repo: Repository; files: FileService; defaultQuotaBytes: number; publicUrl: string | undefined }) {
  const describe = (id: string) => describeUser(deps.repo, id, deps.defaultQuotaBytes);
  return new Hono()
    .get('/:id', (c) => {
      const { id } = parseWith(userIdParams, c.req.param(), 'user id');
      return c.json(describe(id));
    })
    .put('/:id', async (c) => {
      const { id } = parseWith(userIdParams, c.req.param(), 'user id');
      const { quotaBytes } = await jsonBody(c, setQuotaRequest);
      deps.repo.setQuota(id, quotaBytes);
      return c.json(describe(id));
    })
    .get('/:id/files', (c) => {
      const { id } = parseWith(userIdParams, c.req.param(), 'user id');
      const query = parseWith(listFilesQuery, c.req.query(), 'query');
      return c.json(deps.files.list(id, query, requestBaseUrl(deps.publicUrl, c.req.raw)));
    });
}
