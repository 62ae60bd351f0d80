import { AsyncLocalStorage } from 'node:async_hooks';
import type { HttpBindings } from '@hono/node-server';
import type { MiddlewareHandler } from 'hono';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { customAlphabet } from 'nanoid';
import { rawHeader } from '../http.js';
import type { LogFields, Logger } from '../log.js';

// Every log line written while a request is handled carries its request id, including the lines
// of tus hooks and services it calls: the id travels in an AsyncLocalStorage owned by one Chipmunk.

const newRequestId = customAlphabet('0123456789abcdefghijklmnopqrstuvwxyz', 16);
/** An incoming x-request-id is kept when it is short and plain, so a proxy's id links the logs. */
const acceptableId = /^[A-Za-z0-9._:-]{1,128}$/;
/** Delivery tokens (and any other 32+ character capability) are masked in logged paths. */
const capabilitySegment = /^[0-9A-Za-z_-]{32,}$/;
const quietPaths = new Set(['/health', '/ready', '/metrics']);
/** An incoming x-request-id when acceptable, else a new one. */
const requestIdFrom = (incoming: string | undefined) => (incoming !== undefined && acceptableId.test(incoming) ? incoming : newRequestId());

export type RequestContext = ReturnType<typeof createRequestContext>;

export function createRequestContext() {
  const storage = new AsyncLocalStorage<{ requestId: string }>();

  return {
    /** The fields of the request being handled, if any (for the logger). */
    fields(): LogFields | undefined {
      return storage.getStore();
    },

    /**
     * The same for the /f/ fast path, which runs before the router and outside the async context
     * (entering it costs more than serving a cached thumbnail): the request id to answer with, and
     * one request line when the response finishes. Files served are debug lines (a page of
     * thumbnails is dozens of them); refusals are info. The handler puts the id on its own lines.
     */
    trackNode(logger: Logger, req: IncomingMessage, res: ServerResponse): string {
      const requestId = requestIdFrom(rawHeader(req.rawHeaders, 'x-request-id'));
      if (logger.enabled('info')) {
        const started = performance.now();
        res.once('finish', () => {
          if (res.statusCode < 400 && !logger.enabled('debug')) return;
          const path = loggablePath((req.url ?? '/').split('?', 1)[0]!);
          const fields = { requestId, method: req.method, path, status: res.statusCode, ms: Math.round((performance.now() - started) * 10) / 10 };
          if (res.statusCode < 400) logger.debug('request', fields);
          else logger.info('request', fields);
        });
      }
      return requestId;
    },

    /** Gives the request an id (x-request-id in and out), runs it in that context and logs one line for it. */
    middleware(logger: Logger): MiddlewareHandler<{ Bindings: Partial<HttpBindings> }> {
      return async (c, next) => {
        const requestId = requestIdFrom(c.req.header('x-request-id'));
        const started = performance.now();
        // Set on the raw response too: tus writes its own responses straight to the socket.
        c.env?.outgoing?.setHeader('x-request-id', requestId);
        await storage.run({ requestId }, async () => {
          await next();
          c.header('x-request-id', requestId);
          const outgoing = c.env?.outgoing;
          const status = outgoing?.headersSent ? outgoing.statusCode : c.res.status;
          const path = loggablePath(c.req.path);
          const fields = { method: c.req.method, path, status, ms: Math.round((performance.now() - started) * 10) / 10 };
          if (quietPaths.has(c.req.path)) logger.debug('request', fields);
          else logger.info('request', fields);
        });
      };
    },
  };
}

/** The path without its query (signatures live there) and with capability tokens masked. */
export function loggablePath(path: string): string {
  return path
    .split('/')
    .map((segment) => (capabilitySegment.test(segment) ? ':token' : segment))
    .join('/');
}
