import { Hono } from 'hono';
import type { DeliveryLinks } from '../delivery/links.js';
import { requestBaseUrl } from '../http.js';
import type { FileService } from '../services/files.js';
import { fileIdParams, setVisibilityRequest, signedLinkQuery } from './schemas.js';
import { jsonBody, parseWith } from './validate.js';

// /v1/files/:id delivery controls: signed links, token rotation, visibility.
// Their request shapes live in schemas.ts, so the OpenAPI document is generated from them.

export function fileDeliveryRoutes(deps: { files: FileService; links: DeliveryLinks; publicUrl: string | undefined }) {
  const base = (req: Request) => requestBaseUrl(deps.publicUrl, req);
  return new Hono()
    .get('/:id/url', (c) => {
      const { id } = parseWith(fileIdParams, c.req.param(), 'file id');
      const { variant, expiresIn } = parseWith(signedLinkQuery, c.req.query(), 'query');
      return c.json(deps.links.signedUrl(id, variant, expiresIn, base(c.req.raw)));
    })
    .post('/:id/rotate-token', (c) => {
      const { id } = parseWith(fileIdParams, c.req.param(), 'file id');
      deps.links.rotateToken(id);
      return c.json(deps.files.describe(id, base(c.req.raw)));
    })
    .patch('/:id', async (c) => {
      const { id } = parseWith(fileIdParams, c.req.param(), 'file id');
      const { visibility } = await jsonBody(c, setVisibilityRequest);
      deps.links.setVisibility(id, visibility);
      return c.json(deps.files.describe(id, base(c.req.raw)));
    });
}
