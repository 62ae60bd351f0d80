import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { errors, renderError } from '../errors.js';
import { rawHeader } from '../http.js';
import type { Logger } from '../log.js';
import type { Deliverable } from '../db/repository.js';
import type { BlobStorage } from '../storage/storage.js';
import { notModified, preconditionsHold, usableRange } from './conditional.js';
import type { Cors } from './cors.js';
import { createDeliveryCache, stringBytes } from './cache.js';
import type { DeliveryInvalidation } from './invalidation.js';
import { deliveryErrors, type Delivery, type DeliveryResolver } from './resolve.js';

// Chipmunk's own delivery, for when no nginx stands in front: the same URLs and access rules as the
// nginx path (both go through the one resolver), streaming from storage with the headers nginx's
// static module would send — the same ETag format, so validators survive putting nginx in front.
// It is the only /f/ code: a bare Node handler the listening server calls before Hono (measured
// faster than any route: no web Request, no router), rendering errors with the one renderError and
// answering the request id the Hono middleware would (ops/request-context.ts).

export const DELIVERY_PREFIX = '/f/';
/** How /f/ appears among the app's routes (openapi.ts documents it; Hono never serves it). */
export const DELIVERY_ROUTE = 'ALL /f/*';

type Plan = {
  status: number;
  headers: Record<string, string>;
  /** Inclusive byte range to send; undefined for header-only answers. */
  body?: { fileId: string; name: string; start: number; end: number; memory: Buffer | undefined };
  /** The rendered JSON error body, for refusals. */
  error?: string;
};

/** What is known about one stored variant's bytes; small ones carry the bytes themselves. */
type Blob = {
  size: number;
  etag: string;
  lastModified: string;
  mtime: number;
  bytes: Buffer | undefined;
  /** The file's id and the row it was read for: an entry made for another row is not used. */
  fileId: string;
  updatedAt: number;
  recordedBytes: number;
};

/**
 * Small variants (thumbnails, avatars) are kept in memory, bounded by total size (cache.ts), keyed by
 * file and variant path. A file's entries go when a committed change to it is announced (a re-run
 * replacing a variant, a delete); an entry read for an older row of the file (another updatedAt or
 * recorded size, should an announcement be missed) is not used.
 */
function createBlobCache(maxBytes: number, maxEntryBytes: number, invalidation: DeliveryInvalidation) {
  const cache = createDeliveryCache<Blob>({
    maxBytes,
    maxEntryBytes: maxEntryBytes + 1024,
    ttlMs: 600_000,
    invalidation,
    fileOf: (blob) => blob.fileId,
    sizeOf: (blob, key) => 200 + stringBytes(key) + blob.size,
  });
  return {
    maxEntryBytes,
    epoch: () => cache.epoch(),
    get(v: Deliverable): Blob | undefined {
      const blob = cache.get(`${v.fileId}/${v.path}`);
      return blob && blob.updatedAt === v.updatedAt && blob.recordedBytes === v.bytes ? blob : undefined;
    },
    /** `since`: epoch() before the disk was read; a change announced meanwhile keeps the entry out. */
    set(v: Deliverable, blob: Blob, since: number): void {
      if (!blob.bytes || blob.size > maxEntryBytes || maxBytes <= 0) return;
      cache.set(`${v.fileId}/${v.path}`, blob, since);
    },
  };
}

export function createDeliveryServer(deps: {
  resolve: DeliveryResolver;
  storage: BlobStorage;
  logger: Logger;
  /** Committed changes to files: their variants' remembered bytes go at once. */
  invalidation: DeliveryInvalidation;
  /** Memory for small variants' bytes (default 32 MB, variants up to 256 KB); 0 turns it off. */
  memoryCacheBytes?: number;
  /** Told the status of every answer (metrics). */
  onAnswer?: (status: number) => void;
  /** Cross-origin reads (every answer, preflights included); none when absent. */
  cors?: Cors;
}) {
  const { resolve, storage, logger } = deps;
  const cache = createBlobCache(deps.memoryCacheBytes ?? 32 * 1024 * 1024, 256 * 1024, deps.invalidation);

  async function blobOf(v: Deliverable): Promise<Blob | undefined> {
    const { fileId, path: name } = v;
    const since = cache.epoch();
    const stat = await storage.stat(fileId, name);
    if (!stat) return undefined;
    const mtime = Math.floor(stat.mtimeMs / 1000);
    let small: Buffer | undefined;
    if (stat.size <= cache.maxEntryBytes) {
      try {
        small = await readAll(storage.read(fileId, name));
      } catch (err) {
        // Gone between stat and read: a delete finishing right now.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
    }
    const blob: Blob = {
      size: stat.size,
      mtime,
      // nginx's format ("<mtime hex>-<size hex>"), so both delivery paths agree on validators.
      etag: `"${mtime.toString(16)}-${stat.size.toString(16)}"`,
      lastModified: new Date(mtime * 1000).toUTCString(),
      bytes: small,
      fileId,
      updatedAt: v.updatedAt,
      recordedBytes: v.bytes,
    };
    if (blob.bytes && blob.bytes.length !== blob.size) return { ...blob, bytes: undefined };
    cache.set(v, blob, since);
    return blob;
  }

  /**
   * The answer to one request. Synchronous when the variant's bytes are already in memory (the hot
   * path: no promise, no tick); otherwise it waits for the disk once. `requestId` goes on the lines
   * it logs (the fast path runs outside the request's async context).
   */
  function plan(method: string, target: string, header: (name: string) => string | undefined, requestId: string | undefined): Plan | Promise<Plan> {
    const origin = deps.cors ? header('origin') : undefined;
    const answered = (p: Plan): Plan => {
      if (deps.cors) {
        // Vary is merged, not replaced: a rung with an AVIF twin already varies on Accept.
        const { Vary: byOrigin, ...allow } = deps.cors.delivery(origin);
        Object.assign(p.headers, allow);
        if (byOrigin) p.headers.Vary = p.headers.Vary ? `${p.headers.Vary}, ${byOrigin}` : byOrigin;
      }
      deps.onAnswer?.(p.status);
      return p;
    };
    try {
      if (method === 'OPTIONS' && deps.cors) return answered({ status: 204, headers: deps.cors.deliveryPreflight(origin) });
      if (method !== 'GET' && method !== 'HEAD') throw errors.methodNotAllowed();
      const resolved = resolve(target, header('accept'));
      const serveIt = (d: Delivery): Plan | Promise<Plan> => {
        const cached = cache.get(d.target);
        if (cached) return answered(planFor(method, d, cached, header));
        return blobOf(d.target).then((blob) => answered(blob ? planFor(method, d, blob, header) : refusal(deliveryErrors.notFound(), requestId)));
      };
      // A remembered grant answers synchronously; a look-up in the database does not.
      const planned = resolved instanceof Promise ? resolved.then(serveIt) : serveIt(resolved);
      return planned instanceof Promise ? planned.catch((err: unknown) => answered(refusal(err, requestId))) : planned;
    } catch (err) {
      return answered(refusal(err, requestId));
    }
  }

  function planFor(method: string, d: Delivery, blob: Blob, header: (name: string) => string | undefined): Plan {
    const v = d.target;
    const { size, mtime, etag, lastModified } = blob;
    const headers: Record<string, string> = {
      'Content-Type': d.contentType,
      'Last-Modified': lastModified,
      ETag: etag,
      'Cache-Control': d.cacheControl,
      'Accept-Ranges': 'bytes',
      'X-Content-Type-Options': 'nosniff',
    };
    if (d.contentDisposition) headers['Content-Disposition'] = d.contentDisposition;
    if (d.vary) headers.Vary = d.vary;

    if (!preconditionsHold(header('if-match'), header('if-unmodified-since'), etag, mtime)) return refusal(errors.preconditionFailed(), undefined);
    if (notModified(header('if-none-match'), header('if-modified-since'), etag, mtime)) {
      delete headers['Content-Type'];
      return { status: 304, headers };
    }
    const range = usableRange(header('range'), header('if-range'), etag, mtime, size);
    if (range === 'unsatisfiable') {
      // A refusal like any other (JSON, no-store), with the size the client may ask within.
      const refused = refusal(errors.rangeNotSatisfiable(), undefined);
      refused.headers['Content-Range'] = `bytes */${size}`;
      return refused;
    }
    const [start, end] = range ?? [0, size - 1];
    headers['Content-Length'] = String(Math.max(0, end - start + 1));
    if (range) headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
    const body = method === 'GET' && size > 0 ? { fileId: v.fileId, name: v.path, start, end, memory: blob.bytes } : undefined;
    return { status: range ? 206 : 200, headers, body };
  }

  function refusal(err: unknown, requestId: string | undefined): Plan {
    const { status, headers, body } = renderError(err);
    if (status >= 500) logger.error('delivery failed', { err, requestId });
    return {
      status,
      headers: { ...headers, 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff', ...(status === 405 ? { Allow: 'GET, HEAD' } : {}) },
      error: body,
    };
  }

  function send(req: IncomingMessage, res: ServerResponse, p: Plan, requestId: string | undefined): void {
    // One writeHead with every header: a setHeader before it sends Node down its slow merging path.
    if (requestId) p.headers['x-request-id'] = requestId;
    if (p.error) {
      p.headers['Content-Length'] = String(Buffer.byteLength(p.error));
      res.writeHead(p.status, p.headers);
      res.end(req.method === 'HEAD' ? undefined : p.error);
      return;
    }
    res.writeHead(p.status, p.headers);
    if (!p.body) {
      res.end();
      return;
    }
    if (p.body.memory) {
      res.end(p.body.start === 0 && p.body.end === p.body.memory.length - 1 ? p.body.memory : p.body.memory.subarray(p.body.start, p.body.end + 1));
      return;
    }
    const stream = storage.read(p.body.fileId, p.body.name, { start: p.body.start, end: p.body.end });
    stream.on('error', (err) => {
      logger.error('delivery read failed', { err, requestId });
      res.destroy(err);
    });
    res.on('close', () => stream.destroy());
    stream.pipe(res);
  }

  return {
    /**
     * Answers one /f/ request, writing straight to the socket; `req.url` is the raw request target
     * and `requestId`, when given, is answered as x-request-id. Returns a promise only when it had to
     * wait for the disk: a thumbnail already in memory is answered within the call. Never throws or
     * rejects: whatever fails becomes the rendered 500 (or a cut connection once bytes have left).
     */
    handle(req: IncomingMessage, res: ServerResponse, requestId?: string): void | Promise<void> {
      const failed = (err: unknown) => {
        if (res.headersSent) {
          logger.error('delivery failed', { err, requestId });
          res.destroy();
          return;
        }
        const refused = refusal(err, requestId);
        deps.onAnswer?.(refused.status);
        send(req, res, refused, requestId);
      };
      try {
        const planned = plan(req.method ?? 'GET', req.url ?? '/', (name) => rawHeader(req.rawHeaders, name), requestId);
        if (planned instanceof Promise) return planned.then((p) => send(req, res, p, requestId)).catch(failed);
        send(req, res, planned, requestId);
      } catch (err) {
        failed(err);
      }
    },
  };
}

export type DeliveryServer = ReturnType<typeof createDeliveryServer>;

/**
 * The listening server's request listener: /f/ requests go to delivery before any web Request object
 * or router is built; everything else goes to `app` (Hono). `requestIdFor` gives the request its id
 * and its request log line (RequestContext.trackNode, the Hono middleware's twin).
 */
export function withDeliveryFastPath(
  delivery: DeliveryServer,
  app: RequestListener,
  requestIdFor: (req: IncomingMessage, res: ServerResponse) => string | undefined = () => undefined,
): RequestListener {
  return (req, res) => {
    if (!req.url?.startsWith(DELIVERY_PREFIX)) return app(req, res);
    void delivery.handle(req, res, requestIdFor(req, res));
  };
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
