import type { HttpBindings } from '@hono/node-server';
import { createRoute } from '@hono/zod-openapi';
import type { Context, MiddlewareHandler } from 'hono';
import { Readable } from 'node:stream';
import type { IncomingHttpHeaders } from 'node:http';
import { isApiKey } from '../auth/api-key.js';
import { bearerToken, claimTokenUse, verifyUploadToken, type TokenUseLedger } from '../auth/upload-tokens.js';
import { errors, formatBytes } from '../errors.js';
import { requestBaseUrl } from '../http.js';
import type { FileService } from '../services/files.js';
import { byteLimit, discardRest } from '../uploads/body.js';
import type { Grant, Ingest } from '../uploads/ingest.js';
import { errorReplies, jsonReply, v1Router } from './declare.js';
import { fileJson, ingestForm, ingestFormFields, ingestJsonRequest } from './schemas.js';
import { parseWith } from './validate.js';

/** The JSON body's fields before `data`, checked as soon as `data` starts. */
const ingestJsonFields = ingestJsonRequest.omit({ data: true });

/** undefined for the API key (the request names user and purpose), else the upload token's grant. */
type Uploader = (Grant & { refund: () => Promise<void> }) | undefined;
type Env = { Bindings: Partial<HttpBindings>; Variables: { uploader: Uploader } };

// POST /v1/files: a whole file from the app backend (API key) or from a client holding an upload
// token, as JSON with base64 `data` or as multipart/form-data. Both end in the tus completion path.

/** What an edge taking upload tokens needs besides the secret: the lifetime cap and the use ledger. */
export type UploadTokenChecks = { maxLifetimeSeconds: number; uses: TokenUseLedger };

export function ingestRoutes(deps: {
  ingest: Ingest;
  files: FileService;
  apiKey: string;
  secret: string;
  publicUrl: string | undefined;
  tokens: UploadTokenChecks;
}) {
  const { ingest } = deps;

  async function uploaderOf(c: Context<Env>): Promise<Uploader> {
    const presented = bearerToken(c.req.header('authorization'));
    if (isApiKey(deps.apiKey, presented)) return undefined;
    if (!presented || presented.split('.').length !== 3) {
      throw errors.unauthorized('POST /v1/files needs the API key or an upload token: send it as "Authorization: Bearer <key or token>".');
    }
    const grant = await verifyUploadToken(deps.secret, presented, { maxLifetimeSeconds: deps.tokens.maxLifetimeSeconds });
    return { userId: grant.userId, purpose: grant.purpose, refund: await claimTokenUse(deps.tokens.uses, grant) };
  }

  /** The route's credentials: the API key or an upload token (which spends one of its uses). */
  const apiKeyOrUploadToken: MiddlewareHandler<Env> = async (c, next) => {
    try {
      c.set('uploader', await uploaderOf(c));
    } catch (err) {
      // Let the refusal reach a client that is still sending.
      if (c.env?.incoming) discardRest(c.env.incoming);
      throw err;
    }
    await next();
  };

  const upload = createRoute({
    method: 'post',
    path: '/',
    summary: 'Upload a whole file: base64 JSON or multipart/form-data',
    description:
      "With the API key the request names `userId` and `purpose`; with an upload token they come from the token (and may only be repeated). Multipart fields come before the `file` part; the file streams to disk. The purpose's size limit, a body cap and the quota are enforced before the bytes are held (413).",
    security: [{ apiKey: [] }, { uploadToken: [] }],
    middleware: apiKeyOrUploadToken,
    request: { body: { required: true, content: { 'application/json': { schema: ingestJsonRequest }, 'multipart/form-data': { schema: ingestForm } } } },
    responses: { 201: jsonReply('the file JSON', fileJson), ...errorReplies(400, 401, 403, 413, 415, 422) },
  });

  const router = v1Router<Env>();
  // Documented with its bodies, but served without the generated body validators: they would read
  // the whole body into memory, and this route streams it (parsing its fields with the same schemas).
  const { middleware: _served, ...documented } = upload;
  router.openAPIRegistry.registerPath(documented);
  return router.openapi({ ...upload, request: {}, hide: true }, async (c) => {
    const token = c.get('uploader');
    let storedId: string;
    try {
      const contentType = c.req.header('content-type') ?? '';
      const contentLength = declaredLength(c.req.header('content-length'));
      if (/^multipart\/form-data\b/i.test(contentType)) {
        storedId = (
          await ingest.fromMultipart({
            headers: requestHeaders(c),
            body: requestBody(c),
            contentLength,
            token,
            parseFields: (fields) => parseWith(ingestFormFields, fields, 'form fields'),
          })
        ).id;
      } else if (/^application\/(json|[\w.+-]+\+json)\s*(;|$)/i.test(contentType)) {
        const cap = ingest.jsonBodyCap(token?.purpose);
        const tooLarge = () =>
          errors.tooLarge(
            `JSON upload bodies may be at most ${formatBytes(cap)}${token ? ` for "${token.purpose}"` : ''}; send larger files as multipart/form-data or with tus.`,
          );
        if (contentLength !== undefined && contentLength > cap) throw tooLarge();
        // Decoded as it streams, through a byte counter: memory stays flat whatever the body's size.
        const body = requestBody(c).pipe(byteLimit(cap, tooLarge));
        storedId = (
          await ingest.fromJsonStream({
            body,
            contentLength,
            token,
            parseFields: (fields) => parseWith(ingestJsonFields, fields, 'request body'),
          })
        ).id;
      } else {
        throw errors.unsupportedType('POST /v1/files takes application/json (base64 "data") or multipart/form-data (a "file" part).');
      }
    } catch (err) {
      // A refused upload does not spend a use of a bounded token.
      await token?.refund();
      // The body may be unread or half read: let the answer reach a client that is still sending.
      if (c.env?.incoming) discardRest(c.env.incoming);
      throw err;
    }
    return c.json(await deps.files.describe(storedId, requestBaseUrl(deps.publicUrl, c.req.raw)), 201);
  });
}

function declaredLength(header: string | undefined): number | undefined {
  if (header === undefined || !/^\d+$/.test(header.trim())) return undefined;
  return Number(header);
}

// On Node the body streams straight from the socket; elsewhere (app.request in tests) from the web Request.
function requestBody(c: Context<Env>): Readable {
  if (c.env?.incoming) return c.env.incoming;
  const body = c.req.raw.body;
  return body ? Readable.fromWeb(body as import('node:stream/web').ReadableStream) : Readable.from([]);
}

function requestHeaders(c: Context<Env>): IncomingHttpHeaders {
  if (c.env?.incoming) return c.env.incoming.headers;
  const headers: IncomingHttpHeaders = {};
  c.req.raw.headers.forEach((value, name) => {
    headers[name] = value;
  });
  return headers;
}
