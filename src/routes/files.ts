import { Hono } from 'hono';
import { requestBaseUrl } from '../http.js';
import type { FileService } from '../services/files.js';
import { fileIdParams } from './schemas.js';
import { parseWith } from './validate.js';

export function fileRoutes(deps: { files: FileService; publicUrl: string | undefined }) {
  return new Hono()
    .get('/:id', (c) => {
      const { id } = parseWith(fileIdParams, c.req.param(), 'file id');
      return c.json(deps.files.describe(id, requestBaseUrl(deps.publicUrl, c.req.raw)));
    })
    .delete('/:id', async (c) => {
      const { id } = parseWith(fileIdParams, c.req.param(), 'file id');
      await deps.files.remove(id);
      return c.body(null, 204);
    });
}
