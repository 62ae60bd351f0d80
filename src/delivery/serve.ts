import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { AppError, toAppError } from '../errors.js';
import { rawHeader } from '../http.js';
import type { Logger } from '../log.js';
import type { Deliverable } from '../db/repository.js';
import type { BlobStorage } from '../storage/storage.js';
import { deliveryErrors, type DeliveryResolver } from './resolve.js';

// Chipmunk's own delivery, for when no nginx stands in front: the same URLs and access rules as the
// nginx path (both go through the one resolver), streaming from storage with the headers nginx's
// static module would send — the same ETag format, so validators survive putting nginx in front.

type Plan = {
  status: number;
  headers: Record<string, string>;
  /** Inclusive byte range to send; undefined for header-only answers. */
  body?: { fileId: string; name: string; start: number; end: number; memory: Buffer | undefined };
  error?: AppError;
};

/** What is known about one stored variant's bytes; small ones carry the bytes themselves. */
type Blob = { size: number; etag: string; lastModified: string; mtime: number; bytes: Buffer | undefined };

/**
 * Small variants (thumbnails, avatars) are kept in memory, bounded by total size. Entries are keyed
 * by the file's updatedAt and the variant's recorded size: bytes only change through a repository
 * update (a re-run replacing a variant), which moves updatedAt, so a stale entry is never looked up.
 */
function createBlobCache(maxBytes: number, maxEntryBytes: number) {
  const entries = new Map<string, Blob>();
  let total = 0;
  return {
    maxEntryBytes,
    get(key: string): Blob | undefined {
      const hit = entries.get(key);
      if (hit) {
        // Refresh its place: Map order is the LRU order.
        entries.delete(key);
        entries.set(key, hit);
      }
      return hit;
    },
    set(key: string, blob: Blob): void {
      if (!blob.bytes || blob.size > maxEntryBytes || entries.has(key)) return;
      entries.set(key, blob);
      total += blob.size;
      for (const [k, old] of entries) {
        if (total <= maxBytes) break;
        entries.delete(k);
        total -= old.size;
      }
    },
  };
}

const methodNotAllowed = () => new AppError('METHOD_NOT_ALLOWED', 405, 'Files are read with GET or HEAD.');

export function createDeliveryServer(deps: {
  resolve: DeliveryResolver;
  storage: BlobStorage;
  logger: Logger;
  /** Memory for small variants' bytes (default 32 MB, variants up to 256 KB); 0 turns it off. */
  memoryCacheBytes?: number;
  /** Told the status of every answer (metrics). */
  onAnswer?: (status: number) => void;
}) {
  const { resolve, storage, logger } = deps;
  const cache = createBlobCache(deps.memoryCacheBytes ?? 32 * 1024 * 1024, 256 * 1024);
  // Each deliverable's cache key is built once: the repository hands out the same object until a
  // write replaces it, so the hot path neither concatenates nor hashes a new string.
  const keys = new WeakMap<Deliverable, string>();
  const blobKey = (v: Deliverable): string => {
    let key = keys.get(v);
    if (key === undefined) {
      key = `${v.fileId}/${v.path}/${v.updatedAt}/${v.bytes}`;
      keys.set(v, key);
    }
    return key;
  };

  async function blobOf(fileId: string, name: string, key: string): Promise<Blob | undefined> {
    const cached = cache.get(key);
    if (cached) return cached;
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
    };
    if (blob.bytes && blob.bytes.length !== blob.size) return { ...blob, bytes: undefined };
    cache.set(key, blob);
    return blob;
  }

  /**
   * The answer to one request. Synchronous when the variant's bytes are already in memory (the hot
   * path: no promise, no tick); otherwise it waits for the disk once. `requestId` goes on the lines
   * it logs (the fast path runs outside the request's async context).
   */
  function plan(method: string, target: string, header: (name: string) => string | undefined, requestId: string | undefined): Plan | Promise<Plan> {
    try {
      if (method !== 'GET' && method !== 'HEAD') throw methodNotAllowed();
      const d = resolve(target, header('accept'));
      const v = d.target;
      const key = blobKey(v);
      const cached = cache.get(key);
      if (cached) return answered(planFor(method, d, cached, header));
      return blobOf(v.fileId, v.path, key).then(
        (blob) => answered(blob ? planFor(method, d, blob, header) : refusal(deliveryErrors.notFound(), requestId)),
        (err: unknown) => answered(refusal(err, requestId)),
      );
    } catch (err) {
      return answered(refusal(err, requestId));
    }
  }

  function answered(p: Plan): Plan {
    deps.onAnswer?.(p.status);
    return p;
  }

  function planFor(method: string, d: ReturnType<DeliveryResolver>, blob: Blob, header: (name: string) => string | undefined): Plan {
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
    const body = method === 'GET' && size > 0 ? { fileId: v.fileId, name: v.path, start, end, memory: blob.bytes } : undefined;
    return { status: range ? 206 : 200, headers, body };
  }

  function refusal(err: unknown, requestId: string | undefined): Plan {
    const error = toAppError(err);
    if (error.status >= 500) logger.error('delivery failed', { err, requestId });
    return {
      status: error.status,
      headers: { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff', ...(error.status === 405 ? { Allow: 'GET, HEAD' } : {}) },
      error,
    };
  }

  function send(req: IncomingMessage, res: ServerResponse, p: Plan, requestId: string | undefined): void {
    // One writeHead with every header: a setHeader before it sends Node down its slow merging path.
    if (requestId) p.headers['x-request-id'] = requestId;
    if (p.error) {
      const json = JSON.stringify(p.error.toJSON());
      p.headers['Content-Length'] = String(Buffer.byteLength(json));
      res.writeHead(p.status, p.headers);
      res.end(req.method === 'HEAD' ? undefined : json);
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
     * On Node: writes straight to the socket (the fast path). `target` is the raw request target;
     * `requestId`, when given, is answered as x-request-id. Returns a promise only when it had to
     * wait for the disk: a thumbnail already in memory is answered within the call.
     */
    handleNode(req: IncomingMessage, res: ServerResponse, requestId?: string): void | Promise<void> {
      const planned = plan(req.method ?? 'GET', req.url ?? '/', (name) => rawHeader(req.rawHeaders, name), requestId);
      if (planned instanceof Promise) return planned.then((p) => send(req, res, p, requestId));
      send(req, res, planned, requestId);
    },

    /** Anywhere else (app.request in tests): a web Response. */
    async handleWeb(req: Request): Promise<Response> {
      const url = new URL(req.url);
      const p = await plan(req.method, `${url.pathname}${url.search}`, (name) => req.headers.get(name) ?? undefined, undefined);
      if (p.error) return new Response(req.method === 'HEAD' ? null : JSON.stringify(p.error.toJSON()), { status: p.status, headers: p.headers });
      if (p.body?.memory) return new Response(new Uint8Array(p.body.memory.subarray(p.body.start, p.body.end + 1)), { status: p.status, headers: p.headers });
      const body = p.body ? (Readable.toWeb(storage.read(p.body.fileId, p.body.name, { start: p.body.start, end: p.body.end })) as ReadableStream) : null;
      return new Response(body, { status: p.status, headers: p.headers });
    },
  };
}

export type DeliveryServer = ReturnType<typeof createDeliveryServer>;

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
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
