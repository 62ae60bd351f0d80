import type { HttpBindings } from '@hono/node-server';
import { OpenAPIHono, type RouteConfig } from '@hono/zod-openapi';
import type { MiddlewareHandler } from 'hono';
import { z } from 'zod';
import { signUploadToken } from '../auth/upload-tokens.js';
import { errors } from '../errors.js';
import { requestBaseUrl } from '../http.js';
import type { Purposes } from '../purposes.js';
import { errorReplies, jsonReply, jsonRequest } from '../routes/declare.js';
import {
  DEMO_USER_PREFIX,
  fileIdParams,
  fileJson,
  fileListResponse,
  listFilesQuery,
  purposeNameSchema,
  setQuotaRequest,
  uploadTokenResponse,
  userIdSchema,
  userJson,
} from '../routes/schemas.js';
import { jsonBody, parseWith } from '../routes/validate.js';
import type { FileService } from '../services/files.js';
import type { UserService } from '../services/users.js';
import { TUS_PATH } from '../uploads/tus.js';
import type { DemoAsset } from './assets.js';

// The demo: a page at / and the few routes it needs under /demo/api. The page plays the part of
// an app's backend and client at once, so these routes mint upload tokens without the API key.
// That is only acceptable on a developer's own machine, hence four fences:
//   - the whole thing exists only when asked for (CHIPMUNK_DEMO=on, `npm run demo`), and then the
//     server listens on loopback only (config.ts refuses another HOST);
//   - it answers only to loopback peers, with no forwarding header naming another client, a Host that
//     names this machine, and (for /demo/api) only same-origin browser requests;
//   - it only ever acts for users named demo-…, and /v1 refuses those names, so the demo can never
//     read or spend an app user's files nor an app theirs.

export { DEMO_USER_PREFIX };
/** Tokens the demo mints live long enough for a slow upload, not for reuse. */
const DEMO_TOKEN_SECONDS = 15 * 60;

export const demoUserId = userIdSchema.refine((id) => id.startsWith(DEMO_USER_PREFIX) && id.length > DEMO_USER_PREFIX.length, {
  message: `demo users are named ${DEMO_USER_PREFIX}…`,
});
export const demoTokenRequest = z.object({ userId: demoUserId, purpose: purposeNameSchema });

export type DemoDeps = {
  users: UserService;
  files: FileService;
  purposes: Purposes;
  secret: string;
  publicUrl: string | undefined;
  assets: Map<string, DemoAsset>;
};

export function demoRoutes(deps: DemoDeps) {
  const { users, files, purposes } = deps;
  const baseUrl = (req: Request) => requestBaseUrl(deps.publicUrl, req);
  const demoFile = async (id: string, req: Request) => {
    const file = await files.describe(parseWith(fileIdParams, { id }, 'file id').id, baseUrl(req));
    if (!file.userId.startsWith(DEMO_USER_PREFIX)) throw errors.notFound('File');
    return file;
  };

  const app = new OpenAPIHono<{ Bindings: Partial<HttpBindings> }>();
  for (const route of demoDocs) app.openAPIRegistry.registerPath(route);

  app.use('/', demoFence({ publicUrl: deps.publicUrl, api: false }));
  app.use('/demo/*', demoFence({ publicUrl: deps.publicUrl, api: false }));
  app.get('/', (c) => serveAsset(c, deps.assets, 'index.html', pageSecurityHeaders(deps.publicUrl)));
  app.get('/demo/assets/:name', (c) => serveAsset(c, deps.assets, c.req.param('name')));

  const api = new OpenAPIHono<{ Bindings: Partial<HttpBindings> }>();
  api.use('*', demoFence({ publicUrl: deps.publicUrl, api: true }));
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
  api.get('/users/:id', async (c) => {
    const id = parseWith(demoUserId, c.req.param('id'), 'user id');
    return c.json(await users.describe(id));
  });
  // Lets a newcomer see a full quota without uploading a gigabyte first.
  api.put('/users/:id/quota', async (c) => {
    const id = parseWith(demoUserId, c.req.param('id'), 'user id');
    const { quotaBytes } = await jsonBody(c, setQuotaRequest);
    return c.json(await users.setQuota(id, quotaBytes));
  });
  api.get('/users/:id/files', async (c) => {
    const id = parseWith(demoUserId, c.req.param('id'), 'user id');
    const query = parseWith(listFilesQuery, c.req.query(), 'query');
    return c.json(await files.list(id, query, baseUrl(c.req.raw)));
  });
  api.get('/files/:id', async (c) => c.json(await demoFile(c.req.param('id'), c.req.raw)));
  api.delete('/files/:id', async (c) => {
    const file = await demoFile(c.req.param('id'), c.req.raw);
    await files.remove(file.id);
    return c.body(null, 204);
  });
  app.route('/demo/api', api);

  return app;
}

// The demo's routes keep their own checks (the fence, demo-… users); their part of /openapi.json is written here.
const demoOnly = 'Demo mode only; answers only same-origin requests from the machine Chipmunk runs on, for users named demo-….';
const demoUser = z.object({ id: demoUserId });
const demoDocs: RouteConfig[] = [
  {
    method: 'get',
    path: '/',
    summary: 'Demo page (demo mode only)',
    security: [],
    responses: { 200: { description: 'the demo page', content: { 'text/html': { schema: z.string() } } } },
  },
  {
    method: 'get',
    path: '/demo/assets/{name}',
    summary: 'Demo page scripts and styles, served from npm packages (demo mode only)',
    security: [],
    request: { params: z.object({ name: z.string() }) },
    responses: {
      200: { description: 'the asset', content: { '*/*': { schema: { type: 'string', contentMediaType: 'application/octet-stream' } } } },
      ...errorReplies(404),
    },
  },
  {
    method: 'get',
    path: '/demo/api/config',
    summary: 'Purposes and limits for the demo page',
    responses: { 200: jsonReply("the page's settings", z.record(z.string(), z.unknown())) },
  },
  {
    method: 'post',
    path: '/demo/api/upload-tokens',
    summary: 'Mint a 15-minute upload token for a demo-… user',
    request: { body: jsonRequest(demoTokenRequest) },
    responses: { 201: jsonReply('an upload token', uploadTokenResponse), ...errorReplies(400, 403) },
  },
  {
    method: 'get',
    path: '/demo/api/users/{id}',
    summary: "A demo user's quota and usage",
    request: { params: demoUser },
    responses: { 200: jsonReply('quota and usage', userJson), ...errorReplies(400, 403) },
  },
  {
    method: 'put',
    path: '/demo/api/users/{id}/quota',
    summary: "Set a demo user's quota",
    request: { params: demoUser, body: jsonRequest(setQuotaRequest) },
    responses: { 200: jsonReply('quota and usage', userJson), ...errorReplies(400, 403) },
  },
  {
    method: 'get',
    path: '/demo/api/users/{id}/files',
    summary: "A demo user's files",
    request: { params: demoUser, query: listFilesQuery },
    responses: { 200: jsonReply('one page', fileListResponse), ...errorReplies(400, 403) },
  },
  {
    method: 'get',
    path: '/demo/api/files/{id}',
    summary: "A demo user's file",
    request: { params: fileIdParams },
    responses: { 200: jsonReply('the file JSON', fileJson), ...errorReplies(400, 403, 404) },
  },
  {
    method: 'delete',
    path: '/demo/api/files/{id}',
    summary: "Delete a demo user's file",
    request: { params: fileIdParams },
    responses: { 204: { description: 'deleted' }, ...errorReplies(400, 403, 404) },
  },
].map((route) => ({ security: [], ...(route.path.startsWith('/demo/api') ? { description: demoOnly } : {}), ...route }) as RouteConfig);

function serveAsset(
  c: { body: (data: Uint8Array, status: 200, headers: Record<string, string>) => Response },
  assets: Map<string, DemoAsset>,
  name: string,
  extra: Record<string, string> = {},
) {
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

const loopback = (address: string | undefined) => !!address && (address === '::1' || /^(::ffff:)?127\.\d+\.\d+\.\d+$/.test(address));

/** Headers a proxy uses to say who the client is; any of them naming another machine is a stranger. */
const forwardingHeaders = [
  'x-forwarded-for',
  'x-real-ip',
  'forwarded',
  'x-client-ip',
  'true-client-ip',
  'cf-connecting-ip',
  'fastly-client-ip',
  'x-cluster-client-ip',
];

/** The client addresses a forwarding header names; `Forwarded: for=…` and plain lists alike. */
function forwardedClients(name: string, value: string): string[] {
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (name !== 'forwarded') return items;
  // RFC 7239: for=1.2.3.4, for="[::1]:80"; an element without for= names nobody we can check.
  return items.map((el) => /(?:^|;)\s*for=("?)\[?([^\]";]*)\]?(?::\d+)?\1/i.exec(el)?.[2] ?? 'unknown');
}

/** Host header values that name this machine (localhost, 127.x, [::1]; and CHIPMUNK_PUBLIC_URL's host). */
function isLocalHostHeader(host: string | undefined, publicUrl: string | undefined, localPort: number | undefined): boolean {
  if (!host) return false;
  if (publicUrl && new URL(publicUrl).host === host) return true;
  const m = /^(localhost|127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\])(?::(\d{1,5}))?$/i.exec(host);
  if (!m) return false;
  // The port the client says it reached must be ours (another local app's page cannot borrow it).
  return localPort === undefined || m[2] === undefined ? true : Number(m[2]) === localPort;
}

/**
 * The demo mints tokens without a key, so it answers only to this machine: the TCP peer must be
 * loopback; no forwarding header may name another client (whichever a proxy uses); the Host must
 * name this machine (DNS rebinding: a page on a stranger's domain that resolves to 127.0.0.1 sends
 * its own name); and a browser must be calling from the demo page itself (Sec-Fetch-Site), not from
 * another site or another localhost port. The page is fenced the same way as its API.
 */
function demoFence(opts: { publicUrl: string | undefined; api: boolean }): MiddlewareHandler<{ Bindings: Partial<HttpBindings> }> {
  return async (c, next) => {
    const socket = c.env?.incoming?.socket;
    const refuse = () =>
      errors.forbidden(
        'The demo answers only to a browser on the machine Chipmunk runs on (http://localhost). Open the page there, or use the /v1 API with the API key.',
      );
    // No socket means an in-process request (app.request), which is local by construction.
    if (socket && !loopback(socket.remoteAddress)) throw refuse();
    for (const name of forwardingHeaders) {
      const value = c.req.header(name);
      if (value !== undefined && forwardedClients(name, value).some((client) => !loopback(client))) throw refuse();
    }
    if (!isLocalHostHeader(c.req.header('host'), opts.publicUrl, socket?.localPort)) {
      throw errors.forbidden('The demo answers only at http://localhost (this request names another host).');
    }
    const site = c.req.header('sec-fetch-site');
    if (site !== undefined && site !== 'same-origin' && !(site === 'none' && !opts.api)) {
      throw errors.forbidden('The demo API only answers to the demo page itself.');
    }
    await next();
  };
}
