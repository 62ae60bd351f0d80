import type { HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { Hono } from 'hono';
import type { DeliveryServer } from '../delivery/serve.js';

// /f/<token>/<n>: Chipmunk's own delivery. The raw request target is matched by the resolver,
// not by the router, so encoded slashes, dot segments and NULs never reach a lookup.
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
