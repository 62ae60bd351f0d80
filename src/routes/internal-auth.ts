import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { errors, renderError } from '../errors.js';
import { rawHeader } from '../http.js';
import type { Logger } from '../log.js';
import { deliveryErrors, type DeliveryResolver } from '../delivery/resolve.js';
import type { ObjectLocator } from '../storage/object-location.js';

// GET /internal/auth, for nginx's auth_request. It listens only on the internal port
// (CHIPMUNK_INTERNAL_PORT, bound to CHIPMUNK_INTERNAL_HOST), never on the public one, and is a bare
// Node handler: no routing or middleware between nginx and the one access decision.
//
// nginx sends the client's raw request target in X-Original-URI. The answer:
//   200: X-Chipmunk-Path (relative to the media root), X-Chipmunk-Content-Type, X-Chipmunk-Cache-Control,
//        X-Chipmunk-Content-Disposition (downloads only), X-Chipmunk-Vary (rungs with an AVIF twin: the
//        path is the AVIF or the WebP file as the client's Accept, sent in X-Original-Accept, decides)
//   401 / 403: the refusal, with its JSON body also in X-Chipmunk-Error and its real status (404 for
//        an unknown token, 400…) in X-Chipmunk-Status. Other refusals travel as 403 because
//        auth_request writes an error.log line for any other status: a flood of random tokens must
//        not become a flood of error lines. nginx restores the real status from X-Chipmunk-Status.
//   X-Chipmunk-Size on allowed answers: the variant's bytes, for nginx's 416 Content-Range.
//   With the blobs in a bucket, allowed answers also carry X-Chipmunk-Object (path and query of a
//   presigned GET, which nginx proxies to the S3 endpoint and never shows a client) and the
//   validators Chipmunk's own delivery would send (X-Chipmunk-ETag, X-Chipmunk-Last-Modified); a
//   variant missing from the bucket is refused as 404.
// Every answer carries X-Chipmunk-Status
// and X-Accel-Expires: how long nginx may cache it — the auth cache time, never past a link's expiry.

export const INTERNAL_AUTH_PATH = '/internal/auth';

/** BlobStorage.relativePath: where nginx finds a variant under the media root. */
export type RelativePath = (fileId: string, name: string) => string;

export type AuthAnswer = { status: number; headers: Record<string, string>; body: string; target?: { fileId: string; path: string } };

export async function authAnswer(
  resolve: DeliveryResolver,
  relativePath: RelativePath,
  originalUri: string | undefined,
  cacheSeconds: number,
  nowMs: number,
  accept?: string,
): Promise<AuthAnswer> {
  try {
    if (!originalUri) throw errors.badRequest('X-Original-URI is missing: the nginx config must set it to $request_uri.');
    const d = await resolve(originalUri, accept);
    const left = d.expiresAt === undefined ? cacheSeconds : Math.min(cacheSeconds, Math.floor((d.expiresAt * 1000 - nowMs) / 1000));
    const headers: Record<string, string> = {
      'X-Chipmunk-Status': '200',
      'X-Chipmunk-Path': relativePath(d.target.fileId, d.target.path),
      'X-Chipmunk-Content-Type': d.contentType,
      'X-Chipmunk-Cache-Control': d.cacheControl,
      'X-Accel-Expires': String(Math.max(0, left)),
      'X-Chipmunk-Size': String(d.target.bytes),
    };
    if (d.contentDisposition) headers['X-Chipmunk-Content-Disposition'] = d.contentDisposition;
    if (d.vary) headers['X-Chipmunk-Vary'] = d.vary;
    return { status: 200, headers, body: '', target: { fileId: d.target.fileId, path: d.target.path } };
  } catch (err) {
    return refusedAnswer(err, cacheSeconds);
  }
}

function refusedAnswer(err: unknown, cacheSeconds: number): AuthAnswer {
  const { status, headers, body: json } = renderError(err);
  return {
    status: status >= 500 || status === 401 ? status : 403,
    headers: {
      ...headers,
      'X-Chipmunk-Status': String(status),
      // Header-safe: our messages are ASCII; anything else is escaped by JSON.stringify below.
      'X-Chipmunk-Error': json.replace(/[^\x20-\x7e]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`),
      'X-Accel-Expires': String(status >= 500 ? 0 : cacheSeconds),
    },
    body: json,
  };
}

/** Adds where a bucket holds the bytes to an allowed answer (a missing object is a 404 refusal). */
async function withObjectLocation(answer: AuthAnswer, locate: ObjectLocator, cacheSeconds: number): Promise<AuthAnswer> {
  if (!answer.target) return answer;
  try {
    const at = await locate(answer.target.fileId, answer.target.path);
    if (!at) return refusedAnswer(deliveryErrors.notFound(), cacheSeconds);
    return {
      ...answer,
      headers: {
        ...answer.headers,
        'X-Chipmunk-Object': at.fetch,
        'X-Chipmunk-ETag': at.etag,
        'X-Chipmunk-Last-Modified': at.lastModified,
        'X-Chipmunk-Size': String(at.size),
      },
    };
  } catch (err) {
    return refusedAnswer(err, cacheSeconds);
  }
}

/** The whole internal server: /internal/auth and nothing else. */
export function internalAuthListener(deps: {
  resolve: DeliveryResolver;
  relativePath: RelativePath;
  authCacheSeconds: number;
  logger: Logger;
  now?: () => number;
  onAnswer?: (status: number) => void;
  /** Where a bucket holds a variant (blobs in S3); absent: nginx reads the media folder. */
  locate?: ObjectLocator;
}): RequestListener {
  const now = deps.now ?? Date.now;
  const respond = (req: IncomingMessage, res: ServerResponse, answer: AuthAnswer) => {
    if (answer.status >= 500) deps.logger.error('auth request failed', { status: answer.status, body: answer.body });
    deps.onAnswer?.(answer.status);
    res.writeHead(answer.status, { ...answer.headers, 'Content-Length': Buffer.byteLength(answer.body) });
    res.end(req.method === 'HEAD' ? undefined : answer.body);
  };
  return (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '/';
    const path = url.split('?', 1)[0];
    if (path !== INTERNAL_AUTH_PATH) {
      const { status, headers, body } = renderError(errors.notFound('Route'));
      respond(req, res, { status, headers, body });
      return;
    }
    void authAnswer(
      deps.resolve,
      deps.relativePath,
      rawHeader(req.rawHeaders, 'x-original-uri'),
      deps.authCacheSeconds,
      now(),
      rawHeader(req.rawHeaders, 'x-original-accept'),
    )
      .then((answer) => (deps.locate ? withObjectLocation(answer, deps.locate, deps.authCacheSeconds) : answer))
      .then((answer) => respond(req, res, answer));
  };
}
