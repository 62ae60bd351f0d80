import { Hono } from 'hono';
import { z } from 'zod';
import type { DeliveryLinks } from '../delivery/links.js';
import { MAX_LINK_SECONDS } from '../delivery/signing.js';
import { requestBaseUrl } from '../http.js';
import type { FileService } from '../services/files.js';
import { fileIdParams } from './schemas.js';
import { jsonBody, parseWith } from './validate.js';

// /v1/files/:id delivery controls: signed links, token rotation, visibility.

const linkQuery = z.object({
  variant: z.string().regex(/^[0-9a-z][0-9a-z-]{0,31}$/, 'a variant name such as 0, 3 or waveform').default('0'),
  expiresIn: z.coerce.number().int().min(1).max(MAX_LINK_SECONDS).default(3600).describe('seconds'),
});
const visibilityRequest = z.object({ visibility: z.enum(['public', 'private']) });

export function fileDeliveryRoutes(deps: { files: FileService; links: DeliveryLinks; publicUrl: string | undefined }) {
  const base = (req: Request) => requestBaseUrl(deps.publicUrl, req);
  return new Hono()
    .get('/:id/url', (c) => {
      const { id } = parseWith(fileIdParams, c.req.param(), 'file id');
      const { variant, expiresIn } = parseWith(linkQuery, c.req.query(), 'query');
      return c.json(deps.links.signedUrl(id, variant, expiresIn, base(c.req.raw)));
    })
    .post('/:id/rotate-token', (c) => {
      const { id } = parseWith(fileIdParams, c.req.param(), 'file id');
      deps.links.rotateToken(id);
      return c.json(deps.files.describe(id, base(c.req.raw)));
    })
    .patch('/:id', async (c) => {
      const { id } = parseWith(fileIdParams, c.req.param(), 'file id');
      const { visibility } = await jsonBody(c, visibilityRequest);
      deps.links.setVisibility(id, visibility);
      return c.json(deps.files.describe(id, base(c.req.raw)));
    });
}
