import type { HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { Hono } from 'hono';
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { DeliveryServer } from '../delivery/serve.js';
import { errors, renderError } from '../errors.js';
import type { Logger } from '../log.js';

// /f/<token>/<n>: Chipmunk's own delivery. The raw request target is matched by the resolver,
// not by the router, so encoded slashes, dot segments and NULs never reach a lookup.

export const DELIVERY_PREFIX = '/f/';

export function deliveryRoutes(delivery: DeliveryServer) {
  return new Hono<{ Bindings: Partial<HttpBindings> }>().all('/*', async (c) => {
    // On Node the bytes go straight from storage to the socket; elsewhere (app.request) a web Response.
    if (c.env?.incoming && c.env.outgoing) {
      await delivery.handleNode(c.env.incoming, c.env.outgoing);
      return RESPONSE_ALREADY_SENT;
    }
    return delivery.handleWeb(c.req.raw);
  });
}

/**
 * The listening server's fast path: /f/ requests go to delivery before any web Request object or
 * router is built (the same handler the Hono route uses); everything else goes to the app.
 */
export function withDeliveryFastPath(
  delivery: DeliveryServer,
  logger: Logger,
  app: RequestListener,
  requestIdFor: (req: IncomingMessage, res: ServerResponse) => string | undefined = () => undefined,
): RequestListener {
  return (req, res) => {
    if (!req.url?.startsWith(DELIVERY_PREFIX)) return app(req, res);
    const requestId = requestIdFor(req, res);
    const answered = delivery.handleNode(req, res, requestId);
    if (answered)
      answered.catch((err: unknown) => {
        logger.error('delivery failed', { err, requestId });
        if (res.headersSent) return void res.destroy();
        // Like every error: JSON, with a body to read.
        const { status, headers, body } = renderError(errors.internal());
        res.writeHead(status, { ...headers, 'Content-Length': Buffer.byteLength(body) });
        res.end(body);
      });
  };
}
