import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { AppError, toAppError } from '../errors.js';
import type { Logger } from '../log.js';
import type { BlobStorage } from '../storage/storage.js';
import { deliveryErrors, type DeliveryResolver } from './resolve.js';

// Chipmunk's own delivery, for when no nginx stands in front: the same URLs and access rules as the
// nginx path (both go through the one resolver), streaming from storage with the headers nginx's
// static module would send — the same ETag format, so validators survive putting nginx in front.

type Plan = {
  status: number;
  headers: Record<string, string>;
  /** Inclusive byte range to send; undefined for header-only answers. */
  body?: { fileId: string; name: string; start: number; end: number };
  error?: AppError;
};

const methodNotAllowed = () => new AppError('METHOD_NOT_ALLOWED', 405, 'Files are read with GET or HEAD.');

export function createDeliveryServer(deps: { resolve: DeliveryResolver; storage: BlobStorage; logger: Logger }) {
  const { resolve, storage, logger } = deps;

  async function plan(method: string, target: string, header: (name: string) => string | undefined): Promise<Plan> {
    try {
      if (method !== 'GET' && method !== 'HEAD') throw methodNotAllowed();
      const d = resolve(target);
      const stat = await storage.stat(d.file.id, d.variant.path);
      if (!stat) throw deliveryErrors.notFound();
      const size = stat.size;
      const mtime = Math.floor(stat.mtimeMs / 1000);
      // nginx's format ("<mtime hex>-<size hex>"), so both delivery paths agree on validators.
      const etag = `"${mtime.toString(16)}-${size.toString(16)}"`;
      const lastModified = new Date(mtime * 1000).toUTCString();
      const headers: Record<string, string> = {
        'Content-Type': d.contentType,
        'Last-Modified': lastModified,
        ETag: etag,
        'Cache-Control': d.cacheControl,
        'Accept-Ranges': 'bytes',
        'X-Content-Type-Options': 'nosniff',
      };
      if (d.contentDisposition) headers['Content-Disposition'] = d.contentDisposition;

      if (notModified(header('if-none-match'), header('if-modified-since'), etag, mtime)) {
        delete headers['Content-Type'];
        return { status: 304, headers };
      }
      const range = usableRange(header('range'), header('if-range'), etag, lastModified, size);
      if (range === 'unsatisfiable') {
        return { status: 416, headers: { 'Content-Range': `bytes */${size}`, 'X-Content-Type-Options': 'nosniff', 'Content-Length': '0' } };
      }
      const [start, end] = range ?? [0, size - 1];
      headers['Content-Length'] = String(Math.max(0, end - start + 1));
      if (range) headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
      const body = method === 'GET' && size > 0 ? { fileId: d.file.id, name: d.variant.path, start, end } : undefined;
      return { status: range ? 206 : 200, headers, body };
    } catch (err) {
      const error = toAppError(err);
      if (error.status >= 500) logger.error('delivery failed', { err });
      return {
        status: error.status,
        headers: { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff', ...(error.status === 405 ? { Allow: 'GET, HEAD' } : {}) },
        error,
      };
    }
  }

  return {
    /** On Node: writes straight to the socket (the fast path). `target` is the raw request target. */
    async handleNode(req: IncomingMessage, res: ServerResponse): Promise<void> {
      const p = await plan(req.method ?? 'GET', req.url ?? '/', (name) => headerValue(req.headers[name]));
      if (p.error) {
        const json = JSON.stringify(p.error.toJSON());
        res.writeHead(p.status, { ...p.headers, 'Content-Length': Buffer.byteLength(json) });
        res.end(req.method === 'HEAD' ? undefined : json);
        return;
      }
      res.writeHead(p.status, p.headers);
      if (!p.body) {
        res.end();
        return;
      }
      const stream = storage.read(p.body.fileId, p.body.name, { start: p.body.start, end: p.body.end });
      stream.on('error', (err) => {
        logger.error('delivery read failed', { err });
        res.destroy(err);
      });
      res.on('close', () => stream.destroy());
      stream.pipe(res);
    },

    /** Anywhere else (app.request in tests): a web Response. */
    async handleWeb(req: Request): Promise<Response> {
      const url = new URL(req.url);
      const p = await plan(req.method, `${url.pathname}${url.search}`, (name) => req.headers.get(name) ?? undefined);
      if (p.error) return new Response(req.method === 'HEAD' ? null : JSON.stringify(p.error.toJSON()), { status: p.status, headers: p.headers });
      const body = p.body ? (Readable.toWeb(storage.read(p.body.fileId, p.body.name, { start: p.body.start, end: p.body.end })) as ReadableStream) : null;
      return new Response(body, { status: p.status, headers: p.headers });
    },
  };
}

export type DeliveryServer = ReturnType<typeof createDeliveryServer>;

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v;
}

/** If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2). */
function notModified(ifNoneMatch: string | undefined, ifModifiedSince: string | undefined, etag: string, mtime: number): boolean {
  if (ifNoneMatch !== undefined) {
    return ifNoneMatch.split(',').some((tag) => {
      const t = tag.trim();
      return t === '*' || t.replace(/^W\//, '') === etag;
    });
  }
  if (ifModifiedSince !== undefined) {
    const since = Date.parse(ifModifiedSince);
    return Number.isFinite(since) && Math.floor(since / 1000) >= mtime;
  }
  return false;
}

/**
 * One byte range (music seeking needs no more); several ranges, or a stale If-Range, get the
 * whole file as nginx does with max_ranges 1.
 */
function usableRange(
  header: string | undefined,
  ifRange: string | undefined,
  etag: string,
  lastModified: string,
  size: number,
): [number, number] | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  if (ifRange !== undefined && ifRange !== etag && ifRange !== lastModified) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return undefined;
  }
  if (start >= size) return 'unsatisfiable';
  return [start, end];
}
