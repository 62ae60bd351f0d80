import { OpenAPIHono } from '@hono/zod-openapi';
import type { HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { requireApiKey } from './auth/api-key.js';
import type { Config } from './config.js';
import type { DemoAsset } from './demo/assets.js';
import { demoRoutes } from './demo/routes.js';
import type { Repository } from './db/repository.js';
import { errors, renderError } from './errors.js';
import type { Logger } from './log.js';
import { documentHandRoutes, openApiDocument } from './openapi.js';
import type { Purposes } from './purposes.js';
import type { RequestContext } from './ops/request-context.js';
import type { DeliveryLinks } from './delivery/links.js';
import { DELIVERY_ROUTE } from './delivery/serve.js';
import { fileDeliveryRoutes } from './routes/file-delivery.js';
import { fileRoutes } from './routes/files.js';
import { opsRoutes } from './routes/ops.js';
import { ingestRoutes, type UploadTokenChecks } from './routes/ingest.js';
import { uploadTokenRoutes } from './routes/upload-tokens.js';
import { userRoutes } from './routes/users.js';
import type { FileService } from './services/files.js';
import { createUserService } from './services/users.js';
import type { Ingest } from './uploads/ingest.js';
import { TUS_PATH } from './uploads/tus.js';
import type { TusProtocol } from './uploads/tus-protocol.js';

export type AppDeps = {
  requestContext: RequestContext;
  /** Requests being handled, for the graceful shutdown. */
  inFlight: { requests: number };
  ops: Parameters<typeof opsRoutes>[0];
  config: Config;
  repo: Repository;
  purposes: Purposes;
  files: FileService;
  tus: TusProtocol;
  ingest: Ingest;
  links: DeliveryLinks;
  logger: Logger;
  /** How upload tokens are checked at POST /v1/files: the lifetime cap and the use ledger. */
  tokens: UploadTokenChecks;
  /** Present only when the demo is on (config.demo): the page's files. */
  demoAssets?: Map<string, DemoAsset>;
};

// Builds the HTTP app from its dependencies; importing this module does no I/O.
export function createApp(deps: AppDeps) {
  const { config, logger } = deps;
  const app = new OpenAPIHono<{ Bindings: Partial<HttpBindings> }>();
  const users = createUserService({ repo: deps.repo, defaultQuotaBytes: config.defaultQuotaBytes });

  app.use('*', deps.requestContext.middleware(logger));
  app.use('*', async (_c, next) => {
    deps.inFlight.requests++;
    try {
      await next();
    } finally {
      deps.inFlight.requests--;
    }
  });
  app.onError((err, c) => {
    const { status, headers, body } = renderError(err);
    if (status >= 500) logger.error('request failed', { method: c.req.method, path: c.req.path, err });
    return c.body(body, status as 400, headers);
  });
  app.notFound((c) => {
    const { status, headers, body } = renderError(errors.notFound('Route'));
    return c.body(body, status as 404, headers);
  });

  app.route('/', opsRoutes(deps.ops));

  // Built on first request, once every route is mounted: it documents exactly what the app serves.
  documentHandRoutes(app.openAPIRegistry);
  let openApi: Record<string, unknown> | undefined;
  app.get('/openapi.json', (c) => c.json((openApi ??= openApiDocument(app, { serverUrl: config.publicUrl }))));

  // tus: on Node the upload body streams straight from the socket to the store; elsewhere
  // (app.request in tests) the web Request is handed over.
  const tusHandler = async (c: { env: Partial<HttpBindings>; req: { raw: Request } }) => {
    if (c.env?.incoming && c.env.outgoing) {
      await deps.tus.handle(c.env.incoming, c.env.outgoing);
      return RESPONSE_ALREADY_SENT;
    }
    return deps.tus.handleWeb(c.req.raw);
  };
  app.all(TUS_PATH, tusHandler);
  app.all(`${TUS_PATH}/*`, tusHandler);

  // Every /v1 route declares its own credentials (routes/declare.ts), wherever it is mounted.
  const { apiKey, publicUrl } = config;
  const v1 = new OpenAPIHono();
  v1.route('/files', ingestRoutes({ ingest: deps.ingest, files: deps.files, apiKey, secret: config.secret, publicUrl, tokens: deps.tokens }));
  v1.route('/upload-tokens', uploadTokenRoutes({ secret: config.secret, apiKey, purposes: deps.purposes, maxLifetimeSeconds: config.uploadTokenMaxSeconds }));
  v1.route('/files', fileDeliveryRoutes({ files: deps.files, links: deps.links, apiKey, publicUrl }));
  v1.route('/files', fileRoutes({ files: deps.files, apiKey, publicUrl }));
  v1.route('/users', userRoutes({ users, files: deps.files, apiKey, publicUrl }));
  // Registered after every route, so it only meets paths no route matched: an unknown /v1 path asks
  // for the key before it says 404, and reveals nothing to a caller without it.
  v1.use('*', requireApiKey(apiKey));
  app.route('/v1', v1);

  if (config.demo && deps.demoAssets) {
    app.route(
      '/',
      demoRoutes({ users, files: deps.files, purposes: deps.purposes, secret: config.secret, publicUrl: config.publicUrl, assets: deps.demoAssets }),
    );
  }

  return app;
}

export type App = ReturnType<typeof createApp>;
