import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import { truncate } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import type { Server } from '@tus/server';
import { NodeRequest, sendNodeResponse } from 'srvx/node';
import type { Cors } from '../delivery/cors.js';
import { AppError, errors, type ErrorBody } from '../errors.js';
import { StreamingFileStore } from './file-store.js';

// The tus 1.0.0 protocol as clients meet it at /uploads, around @tus/server (which keeps the
// upload resources, the hooks and the store): what @tus/server does not do or does otherwise —
// X-HTTP-Method-Override, 412 with Tus-Version for an unsupported version, 415 for a PATCH that is
// not application/offset+octet-stream, the checksum extension, CORS, and one JSON error body with
// `Content-Type: application/json` on every refusal, including those @tus/server writes itself.

export const TUS_VERSION = '1.0.0';
/** Upload-Checksum algorithms offered (Tus-Checksum-Algorithm), by their tus names = Node's hash names. */
export const CHECKSUM_ALGORITHMS = ['sha1', 'sha256', 'sha512', 'md5'] as const;
/**
 * What the store advertises in Tus-Extension. Deferred length is not offered: an upload's quota
 * reservation and the purpose's limit are settled at creation from Upload-Length.
 */
export const TUS_EXTENSIONS = ['creation', 'creation-with-upload', 'termination', 'expiration', 'checksum'];

const TUS_METHODS = ['POST', 'HEAD', 'PATCH', 'DELETE', 'OPTIONS', 'GET'];
/** Methods a client behind a PATCH-blocking proxy may ask for with X-HTTP-Method-Override. */
const OVERRIDABLE = new Set(['PATCH', 'HEAD', 'DELETE']);

export type ExpectedChecksum = {
  algorithm: string;
  digest: string;
  /**
   * A creation's bytes that do not match are dropped rather than refused: the upload still exists
   * (201 with Upload-Offset 0), so the client has its Location to resume from and nothing is orphaned.
   */
  onCreation: boolean;
};

/** The checksum the request being handled declared for its body, handed to the store's write. */
const chunkChecksum = new AsyncLocalStorage<ExpectedChecksum | undefined>();

/** For a store's write (the S3 one, s3-datastore.ts): the checksum the chunk being written must match, if any. */
export const expectedChunkChecksum = (): ExpectedChecksum | undefined => chunkChecksum.getStore();

/** The Content-Length the request being handled declared for its body (the S3 store streams a whole part on it). */
const chunkLength = new AsyncLocalStorage<number | undefined>();
export const declaredChunkLength = (): number | undefined => chunkLength.getStore();

/**
 * The file store (file-store.ts), advertising the extensions above and applying a chunk only if its bytes match
 * the request's Upload-Checksum: on a mismatch (or a cut) the file goes back to the offset it had,
 * so the upload is exactly as before the request.
 */
export class ChecksumFileStore extends StreamingFileStore {
  constructor(options: ConstructorParameters<typeof StreamingFileStore>[0]) {
    super(options);
    this.extensions = [...TUS_EXTENSIONS];
  }

  override async write(readable: Readable, id: string, offset: number): Promise<number> {
    const expected = chunkChecksum.getStore();
    if (!expected) return super.write(readable, id, offset);
    const hash = createHash(expected.algorithm);
    const tap = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        hash.update(chunk);
        callback(null, chunk);
      },
    });
    readable.once('error', (err) => tap.destroy(err));
    const rollBack = () => truncate(path.join(this.directory, id), offset);
    let end: number;
    try {
      end = await super.write(readable.pipe(tap), id, offset);
    } catch (err) {
      await rollBack();
      throw err;
    }
    if (hash.digest('base64') !== expected.digest) {
      await rollBack();
      if (expected.onCreation) return offset;
      throw errors.checksumMismatch(expected.algorithm);
    }
    return end;
  }
}

/** `Upload-Checksum: <algorithm> <base64 digest>`; undefined when absent, an AppError when unusable. */
function parseChecksum(header: string | null, onCreation: boolean): ExpectedChecksum | AppError | undefined {
  if (header === null) return undefined;
  const m = /^\s*([A-Za-z0-9-]+) +([A-Za-z0-9+/]+={0,2})\s*$/.exec(header);
  if (!m) return errors.badRequest('Upload-Checksum must be "<algorithm> <base64 digest>", e.g. "sha256 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".');
  const algorithm = m[1]!.toLowerCase();
  if (!(CHECKSUM_ALGORITHMS as readonly string[]).includes(algorithm)) {
    return errors.badRequest(`Upload-Checksum algorithm "${m[1]}" is not supported; use one of ${CHECKSUM_ALGORITHMS.join(', ')}.`);
  }
  return { algorithm, digest: m[2]!, onCreation };
}

/** The refusals decided from the request line and headers alone, before @tus/server sees it. */
function checkRequest(method: string, headers: Headers): AppError | undefined {
  if (!TUS_METHODS.includes(method)) return errors.methodNotAllowed(`Uploads answer ${TUS_METHODS.join(', ')}.`);
  if (method === 'OPTIONS' || method === 'GET') return undefined;
  const version = headers.get('tus-resumable');
  if (version?.trim() !== TUS_VERSION) return errors.tusVersionUnsupported(version);
  if (method === 'PATCH' && headers.get('content-type')?.trim().toLowerCase() !== 'application/offset+octet-stream') return errors.chunkContentType();
  if (method === 'PATCH' && headers.get('upload-offset') === null)
    return errors.badRequest('PATCH requests need Upload-Offset: where their bytes start (HEAD answers it).');
  if (method === 'POST' && headers.get('upload-defer-length') !== null && headers.get('upload-length') === null) return errors.lengthRequired();
  return undefined;
}

/** The JSON error body of an answer @tus/server made, or one made from its plain-text refusal. */
function errorBody(status: number, text: string): ErrorBody {
  let parsed: Partial<ErrorBody> | undefined;
  try {
    parsed = JSON.parse(text) as Partial<ErrorBody>;
  } catch {
    // @tus/server's own plain-text body
  }
  const ours = typeof parsed?.error?.code === 'string' && typeof parsed.error.message === 'string' ? parsed.error : undefined;
  // Chipmunk's own refusals pass as they are; @tus/server's (TUS_PROTOCOL: its text) get a sentence.
  if (ours && ours.code !== 'TUS_PROTOCOL') return { error: ours };
  if (status === 409) return errors.offsetMismatch().toJSON();
  if (status === 404) return errors.uploadGone().toJSON();
  const message = (ours?.message ?? text).trim().replace(/\n+/g, ' ') || 'Upload request refused.';
  return { error: { code: status >= 500 ? 'INTERNAL' : 'TUS_PROTOCOL', message: /[.!?]$/.test(message) ? message : `${message}.` } };
}

export type TusProtocol = ReturnType<typeof createTusProtocol>;

/** Answers for uploads whose last byte arrived (uploads/finished.ts); undefined hands the request to tus. */
export type FinishedAnswers = { answer(req: Request): Promise<Response | undefined> };

export function createTusProtocol(deps: { server: Pick<Server, 'handleWeb'>; cors?: Cors; finished?: FinishedAnswers }) {
  const { server, cors, finished } = deps;

  function refusal(error: AppError, origin: string | null): Response {
    const body = JSON.stringify(error.toJSON());
    const headers: Record<string, string> = { 'Content-Length': String(Buffer.byteLength(body)) };
    if (error.status === 405) headers.Allow = TUS_METHODS.join(', ');
    return finish(new Response(body, { status: error.status, headers }), origin);
  }

  /** Chipmunk's headers over @tus/server's answer: CORS, the checksum algorithms, JSON errors. */
  async function finishAsync(res: Response, method: string, origin: string | null): Promise<Response> {
    if (res.status < 400) return finish(res, origin, method === 'OPTIONS');
    const body = JSON.stringify(errorBody(res.status, await res.text()));
    const headers = new Headers(res.headers);
    headers.set('Content-Length', String(Buffer.byteLength(body)));
    return finish(new Response(body, { status: res.status, headers }), origin);
  }

  function finish(res: Response, origin: string | null, discovery = false): Response {
    const headers = new Headers(res.headers);
    headers.set('Tus-Resumable', TUS_VERSION);
    if (res.status === 412) headers.set('Tus-Version', TUS_VERSION);
    if (discovery) {
      headers.set('Tus-Version', TUS_VERSION);
      headers.set('Tus-Checksum-Algorithm', CHECKSUM_ALGORITHMS.join(','));
      const allowed = headers.get('access-control-allow-headers') ?? '';
      if (!/upload-checksum/i.test(allowed)) headers.set('Access-Control-Allow-Headers', [allowed, 'Upload-Checksum'].filter(Boolean).join(', '));
    }
    if (cors) {
      headers.delete('access-control-allow-origin');
      for (const [name, value] of Object.entries(cors.upload(origin ?? undefined))) headers.set(name, value);
    }
    if (res.status >= 400) headers.set('Content-Type', 'application/json');
    return new Response(res.body, { status: res.status, headers });
  }

  /** The request's method, after X-HTTP-Method-Override (or the refusal of an override). */
  function effectiveMethod(method: string, headers: { get(name: string): string | null }): string | AppError {
    const override = headers.get('x-http-method-override')?.trim().toUpperCase();
    if (!override || override === method) return method;
    if (!OVERRIDABLE.has(override)) return errors.badRequest(`X-HTTP-Method-Override may name PATCH, HEAD or DELETE, not "${override}".`);
    return override;
  }

  async function respond(request: Request, method: string): Promise<Response> {
    const origin = request.headers.get('origin');
    const refused = checkRequest(method, request.headers);
    if (refused) return refusal(refused, origin);
    const checksum = method === 'PATCH' || method === 'POST' ? parseChecksum(request.headers.get('upload-checksum'), method === 'POST') : undefined;
    if (checksum instanceof AppError) return refusal(checksum, origin);
    // Received, processing, ready, refused and failed uploads are Chipmunk's to answer, not tus's.
    const done = await finished?.answer(request);
    if (done) return finishAsync(done, method, origin);
    const length = /^\d+$/.test(request.headers.get('content-length') ?? '') ? Number(request.headers.get('content-length')) : undefined;
    const res = await chunkLength.run(length, () => chunkChecksum.run(checksum, () => server.handleWeb(request)));
    return finishAsync(res, method, origin);
  }

  return {
    /** On Node: the body streams from the socket to the store, as @tus/server's own handle() does. */
    async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
      const method = effectiveMethod(req.method ?? 'GET', { get: (name) => (req.headers[name] as string | undefined) ?? null });
      let answer: Response;
      if (method instanceof AppError) {
        answer = refusal(method, req.headers.origin ?? null);
      } else {
        req.method = method;
        answer = await respond(new NodeRequest({ req, res }) as unknown as Request, method);
      }
      await sendNodeResponse(res, answer);
    },

    /** Anywhere else (app.request in tests): a web Request in, a web Response out. */
    async handleWeb(req: Request): Promise<Response> {
      const method = effectiveMethod(req.method, req.headers);
      if (method instanceof AppError) return refusal(method, req.headers.get('origin'));
      if (method === req.method) return respond(req, method);
      const overridden = new Request(req.url, { method, headers: req.headers, body: method === 'PATCH' ? req.body : null, duplex: 'half' } as RequestInit);
      return respond(overridden, method);
    },
  };
}
