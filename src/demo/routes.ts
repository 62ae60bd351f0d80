import type { HttpBindings } from '@hono/node-server';
import { Hono, type MiddlewareHandler } from 'hono';
import { z } from 'zod';
import { signUploadToken } from '../auth/upload-tokens.js';
import type { Repository } from '../db/repository.js';
import { errors } from '../errors.js';
import { requestBaseUrl } from '../http.js';
import type { Purposes } from '../purposes.js';
import { fileIdParams, listFilesQuery, purposeNameSchema, setQuotaRequest, userIdSchema } from '../routes/schemas.js';
import { describeUser } from '../routes/users.js';
import { jsonBody, parseWith } from '../routes/validate.js';
import type { FileService } from '../services/files.js';
import { TUS_PATH } from '../uploads/tus.js';
import type { DemoAsset } from './assets.js';

// The demo: a page at / and the few routes it needs under /demo/api. The page plays the part of
// an app's backend and client at once, so these routes mint upload tokens without the API key.
// That is only acceptable on a developer's own machine, hence three fences:
//   - the whole thing exists only when CHIPMUNK_DEMO is on (off by default with NODE_ENV=production);
//   - /demo/api answers only to loopback peers, and only same-origin browser requests;
//   - it only ever acts for users named demo-…, so it can never read or spend an app user's files.

export const DEMO_USER_PREFIX = 'demo-';
/** Tokens the demo mints live long enough for a slow upload, not for reuse. */
const DEMO_TOKEN_SECONDS = 15 * 60;

export const demoUserId = userIdSchema.refine((id) => id.startsWith(DEMO_USER_PREFIX) && id.length > DEMO_USER_PREFIX.length, {
  message: `demo users are named ${DEMO_USER_PREFIX}…`,
});
export const demoTokenRequest = z.object({ userId: demoUserId, purpose: purposeNameSchema });

export type DemoDeps = {
  repo: Repository;
  files: FileService;
  purposes: Purposes;
  secret: string;
  defaultQuotaBytes: number;
  publicUrl: string | undefined;
  assets: Map<string, DemoAsset>;
};

export function demoRoutes(deps: DemoDeps) {
  const { repo, files, purposes } = deps;
  const baseUrl = (req: Request) => requestBaseUrl(deps.publicUrl, req);
  const demoFile = (id: string, req: Request) => {
    const file = files.describe(parseWith(fileIdParams, { id }, 'file id').id, baseUrl(req));
    if (!file.userId.startsWith(DEMO_USER_PREFIX)) throw errors.notFound('File');
    return file;
  };

  const app = new Hono<{ Bindings: Partial<HttpBindings> }>();

  app.get('/', (c) => serveAsset(c, deps.assets, 'index.html', pageSecurityHeaders(deps.publicUrl)));
  app.get('/demo/assets/:name', (c) => serveAsset(c, deps.assets, c.req.param('name')));

  const api = new Hono<{ Bindings: Partial<HttpBindings> }>();
  api.use('*', localSameOriginOnly());
  api.get('/config', (c) =>
    c.json({
      uploadEndpoint: `${baseUrl(c.req.raw)}${TUS_PATH}`,
      userPrefix: DEMO_USER_PREFIX,
      purposes: purposes.all().map(({ name, kinds, maxBytes, square, visibility }) => ({ name, kinds, maxBytes, square, visibility })),
    }),
  );
  api.post('/upload-tokens', async (c) => {
    const body = await jsonBody(c, demoTokenRequest);
    purposes.get(body.purpose);
    const { token, expiresAt } = await signUploadToken(deps.secret, { ...body, expiresIn: DEMO_TOKEN_SECONDS });
    return c.json({ token, expiresAt: new Date(expiresAt * 1000).toISOString() }, 201);
  });
  api.get('/users/:id', (c) => {
    const id = parseWith(demoUserId, c.req.param('id'), 'user id');
    return c.json(describeUser(repo, id, deps.defaultQuotaBytes));
  });
  // Lets a newcomer see a full quota without uploading a gigabyte first.
  api.put('/users/:id/quota', async (c) => {
    const id = parseWith(demoUserId, c.req.param('id'), 'user id');
    const { quotaBytes } = await jsonBody(c, setQuotaRequest);
    repo.setQuota(id, quotaBytes);
    return c.json(describeUser(repo, id, deps.defaultQuotaBytes));
  });
  api.get('/users/:id/files', (c) => {
    const id = parseWith(demoUserId, c.req.param('id'), 'user id');
    const query = parseWith(listFilesQuery, c.req.query(), 'query');
    return c.json(files.list(id, query, baseUrl(c.req.raw)));
  });
  api.get('/files/:id', (c) => c.json(demoFile(c.req.param('id'), c.req.raw)));
  api.delete('/files/:id', async (c) => {
    const file = demoFile(c.req.param('id'), c.req.raw);
    await files.remove(file.id);
    return c.body(null, 204);
  });
  app.route('/demo/api', api);

  return app;
}

function serveAsset(c: { body: (data: Uint8Array, status: 200, headers: Record<string, string>) => Response }, assets: Map<string, DemoAsset>, name: string, extra: Record<string, string> = {}) {
  const asset = assets.get(name);
  if (!asset) throw errors.notFound('Demo asset');
  return c.body(asset.body, 200, {
    'Content-Type': asset.contentType,
    'Cache-Control': 'no-cache',
    'X-Content-Type-Options': 'nosniff',
    ...extra,
  });
}

// The page loads nothing from elsewhere; media may come from CHIPMUNK_PUBLIC_URL when it differs.
function pageSecurityHeaders(publicUrl: string | undefined): Record<string, string> {
  const media = ["'self'", ...(publicUrl ? [new URL(publicUrl).origin] : [])].join(' ');
  return {
    'Content-Security-Policy': [
      "default-src 'self'",
      `img-src ${media} data: blob:`,
      `media-src ${media} blob:`,
      `connect-src ${media}`,
      "script-src 'self'",
      "style-src 'self'",
      "object-src 'none'",
      "base-uri 'none'",
      "frame-ancestors 'none'",
    ].join('; '),
    'Referrer-Policy': 'no-referrer',
  };
}

const loopback = (address: string | undefined) =>
  !!address && (address === '::1' || /^(::ffff:)?127\.\d+\.\d+\.\d+$/.test(address));

/**
 * Demo routes mint tokens without a key, so they answer only to this machine: the TCP peer and every
 * X-Forwarded-For hop must be loopback, and a browser must be calling from the demo page itself
 * (Sec-Fetch-Site), not from another site or another localhost port.
 */
function localSameOriginOnly(): MiddlewareHandler<{ Bindings: Partial<HttpBindings> }> {
  return async (c, next) => {
    const peer = c.env?.incoming?.socket.remoteAddress;
    const forwarded = (c.req.header('x-forwarded-for') ?? '').split(',').map((s) => s.trim()).filter(Boolean);
    // No socket means an in-process request (app.request), which is local by construction.
    if ((c.env?.incoming && !loopback(peer)) || forwarded.some((hop) => !loopback(hop))) {
      throw errors.forbidden('The demo answers only to a browser on the machine Chipmunk runs on (http://localhost). Open the page there, or use the /v1 API with the API key.');
    }
    const site = c.req.header('sec-fetch-site');
    if (site && site !== 'same-origin' && site !== 'none') {
      throw errors.forbidden('The demo API only answers to the demo page itself.');
    }
    await next();
  };
}
