import type { Hono } from 'hono';
import { inspectRoutes } from 'hono/dev';
import { z } from 'zod';
import * as s from './routes/schemas.js';
import { demoTokenRequest, demoUserId } from './demo/routes.js';

// The OpenAPI 3.1 document, generated from the zod schemas in routes/schemas.ts (the ones the routes
// validate with) and from the routes the app really serves: a documented route the app does not
// serve is left out, and `undocumented` names every served route this table does not describe.

type Method = 'get' | 'put' | 'post' | 'delete' | 'options' | 'head' | 'patch';
type Json = Record<string, unknown>;
type Auth = 'apiKey' | 'uploadToken' | 'apiKeyOrUploadToken' | 'none';
type Reply = { description: string; body?: z.ZodType | 'binary'; contentType?: string; headers?: Record<string, { description: string; schema: z.ZodType }> };

type Operation = {
  summary: string;
  description?: string;
  auth: Auth;
  params?: z.ZodObject;
  query?: z.ZodObject;
  headers?: z.ZodObject;
  body?: Record<string, z.ZodType | 'binary'>;
  replies: Record<number, Reply>;
  errors?: number[];
};

/** One route as Hono registers it (`ALL /uploads/*`), the OpenAPI path, and its operations. */
type RouteDoc = { serves: string; path: string; operations: Partial<Record<Method, Operation>> };

const named: Record<string, z.ZodType> = {
  Error: s.errorResponse,
  File: s.fileJson,
  FileList: s.fileListResponse,
  User: s.userJson,
  UploadToken: s.uploadTokenResponse,
};

const errorText: Record<number, string> = {
  400: 'invalid input',
  401: 'missing or invalid credentials',
  403: 'not allowed (e.g. a purpose the upload token does not grant)',
  404: 'not found',
  409: 'conflict (tus: Upload-Offset does not match)',
  413: 'too large: the purpose\'s limit, the body cap, or the user\'s quota (QUOTA_EXCEEDED)',
  415: 'a type the purpose does not take, or a data: type that disagrees with the bytes',
  422: 'the bytes are not a usable image or audio file',
  412: 'tus: Tus-Resumable missing or not 1.0.0 (the answer carries Tus-Version)',
  460: 'tus checksum extension: the chunk does not match Upload-Checksum and was not applied',
};

const fileReply: Reply = { description: 'the file JSON', body: s.fileJson };

// tus 1.0.0 (core, creation, creation-with-upload, termination, expiration, checksum).
const tusVersion = { description: 'tus protocol version', schema: z.literal('1.0.0') };
const tusOffset = { description: 'bytes received so far', schema: z.string().regex(/^\d+$/) };
const tusOptionsReply: Reply = {
  description: 'what this tus server supports',
  headers: {
    'Tus-Resumable': tusVersion,
    'Tus-Version': { description: 'supported versions', schema: z.string() },
    'Tus-Extension': { description: 'supported extensions', schema: z.string() },
    'Tus-Max-Size': { description: 'largest upload accepted (0: decided per purpose at creation)', schema: z.string() },
    'Tus-Checksum-Algorithm': { description: 'Upload-Checksum algorithms accepted', schema: z.string() },
  },
};

export const routeDocs: RouteDoc[] = [
  {
    serves: 'GET /health',
    path: '/health',
    operations: { get: { summary: 'Liveness', auth: 'none', replies: { 200: { description: 'up', body: z.object({ status: z.literal('ok') }) } } } },
  },
  {
    serves: 'GET /ready',
    path: '/ready',
    operations: {
      get: {
        summary: 'Readiness: database, disk and shutdown checks',
        auth: 'none',
        replies: {
          200: { description: 'ready', body: z.object({ ready: z.boolean(), checks: z.record(z.string(), z.unknown()) }).catchall(z.unknown()) },
          503: { description: 'not ready (a check failed, or shutting down)', body: z.object({ ready: z.boolean(), checks: z.record(z.string(), z.unknown()) }).catchall(z.unknown()) },
        },
      },
    },
  },
  {
    serves: 'GET /metrics',
    path: '/metrics',
    operations: { get: { summary: 'Prometheus metrics', auth: 'none', replies: { 200: { description: 'the text exposition format', body: z.string(), contentType: 'text/plain' } } } },
  },
  {
    serves: 'GET /openapi.json',
    path: '/openapi.json',
    operations: { get: { summary: 'This document', auth: 'none', replies: { 200: { description: 'OpenAPI 3.1', body: z.record(z.string(), z.unknown()) } } } },
  },
  {
    serves: 'ALL /uploads',
    path: '/uploads',
    operations: {
      options: { summary: 'tus: discover the server\'s capabilities', auth: 'none', replies: { 204: tusOptionsReply } },
      post: {
        summary: 'tus: create an upload (creation, creation-with-upload)',
        description:
          'Reserves the declared length against the user\'s quota. The upload token names the user and the purpose; `Upload-Metadata` may carry `filename`, `filetype` and repeat `purpose` (never change it). A body sent with the creation is the first chunk; when it completes the upload the answer is the file JSON.',
        auth: 'uploadToken',
        headers: s.tusCreateHeaders,
        body: { 'application/offset+octet-stream': 'binary' },
        replies: {
          201: {
            description: 'created; send the bytes with PATCH to Location',
            headers: {
              Location: { description: 'the upload\'s URL', schema: z.url() },
              'Tus-Resumable': tusVersion,
              'Upload-Offset': tusOffset,
              'Upload-Expires': { description: 'when an unfinished upload is released (RFC 7231 date)', schema: z.string() },
            },
          },
          200: { ...fileReply, description: 'created and complete in one request: the file JSON' },
        },
        errors: [400, 401, 403, 412, 413, 415, 422, 460],
      },
    },
  },
  {
    serves: 'ALL /uploads/*',
    path: '/uploads/{id}',
    operations: {
      head: {
        summary: 'tus: how much of the upload has arrived',
        auth: 'none',
        params: s.fileIdParams,
        headers: s.tusHeaders,
        replies: {
          200: {
            description: 'the upload\'s progress',
            headers: {
              'Tus-Resumable': tusVersion,
              'Upload-Offset': tusOffset,
              'Upload-Length': { description: 'declared length', schema: z.string().regex(/^\d+$/) },
              'Upload-Metadata': { description: 'exactly as sent at creation', schema: z.string() },
            },
          },
        },
        errors: [404],
      },
      patch: {
        summary: 'tus: send bytes from Upload-Offset',
        description: 'The request that completes the upload answers 200 with the file JSON (or the refusal); earlier ones answer 204.',
        auth: 'none',
        params: s.fileIdParams,
        headers: s.tusPatchHeaders,
        body: { 'application/offset+octet-stream': 'binary' },
        replies: {
          204: { description: 'bytes stored; more expected', headers: { 'Tus-Resumable': tusVersion, 'Upload-Offset': tusOffset } },
          200: { ...fileReply, description: 'the last bytes arrived: the file JSON' },
        },
        errors: [400, 404, 409, 412, 413, 415, 422, 460],
      },
      delete: {
        summary: 'tus: terminate an unfinished upload, giving its reservation back',
        auth: 'none',
        params: s.fileIdParams,
        headers: s.tusHeaders,
        replies: { 204: { description: 'terminated', headers: { 'Tus-Resumable': tusVersion } } },
        errors: [404],
      },
      options: { summary: 'tus: discover the server\'s capabilities', auth: 'none', params: s.fileIdParams, replies: { 204: tusOptionsReply } },
    },
  },
  {
    serves: 'POST /v1/upload-tokens',
    path: '/v1/upload-tokens',
    operations: {
      post: { summary: 'Mint an upload token for one user and purpose', auth: 'apiKey', body: { 'application/json': s.uploadTokenRequest }, replies: { 201: { description: 'the token', body: s.uploadTokenResponse } }, errors: [400, 401] },
    },
  },
  {
    serves: 'POST /v1/files',
    path: '/v1/files',
    operations: {
      post: {
        summary: 'Upload a whole file: base64 JSON or multipart/form-data',
        description:
          'With the API key the request names `userId` and `purpose`; with an upload token they come from the token (and may only be repeated). Multipart fields come before the `file` part; the file streams to disk. The purpose\'s size limit, a body cap and the quota are enforced before the bytes are held (413).',
        auth: 'apiKeyOrUploadToken',
        body: { 'application/json': s.ingestJsonRequest, 'multipart/form-data': s.ingestForm },
        replies: { 201: fileReply },
        errors: [400, 401, 403, 413, 415, 422],
      },
    },
  },
  {
    serves: 'GET /v1/files/:id',
    path: '/v1/files/{id}',
    operations: { get: { summary: 'A file\'s JSON', auth: 'apiKey', params: s.fileIdParams, replies: { 200: fileReply }, errors: [400, 401, 404] } },
  },
  {
    serves: 'DELETE /v1/files/:id',
    path: '/v1/files/{id}',
    operations: { delete: { summary: 'Delete a file and give its bytes back', auth: 'apiKey', params: s.fileIdParams, replies: { 204: { description: 'deleted' } }, errors: [400, 401, 404] } },
  },
  {
    serves: 'PATCH /v1/files/:id',
    path: '/v1/files/{id}',
    operations: {
      patch: { summary: 'Change a file\'s visibility', auth: 'apiKey', params: s.fileIdParams, body: { 'application/json': s.setVisibilityRequest }, replies: { 200: fileReply }, errors: [400, 401, 404] },
    },
  },
  {
    serves: 'POST /v1/files/:id/rotate-token',
    path: '/v1/files/{id}/rotate-token',
    operations: { post: { summary: 'Give a file a new delivery token; earlier URLs stop working', auth: 'apiKey', params: s.fileIdParams, replies: { 200: fileReply }, errors: [400, 401, 404] } },
  },
  {
    serves: 'GET /v1/files/:id/url',
    path: '/v1/files/{id}/url',
    operations: {
      get: {
        summary: 'A signed delivery link to one variant',
        auth: 'apiKey',
        params: s.fileIdParams,
        query: s.signedLinkQuery,
        replies: { 200: { description: 'the link and when it expires', body: s.signedLinkResponse } },
        errors: [400, 401, 404],
      },
    },
  },
  {
    serves: 'ALL /f/*',
    path: '/f/{token}/{n}',
    operations: {
      get: {
        summary: 'Deliver a variant (public, or private with a signed link)',
        auth: 'none',
        params: s.deliveryParams,
        query: s.deliveryQuery,
        replies: { 200: { description: 'the variant\'s bytes (Range requests answer 206)', body: 'binary', contentType: '*/*' } },
        errors: [403, 404],
      },
      head: {
        summary: 'A variant\'s headers, without its bytes',
        auth: 'none',
        params: s.deliveryParams,
        query: s.deliveryQuery,
        replies: { 200: { description: 'the variant\'s headers' } },
        errors: [403, 404],
      },
    },
  },
  {
    serves: 'GET /v1/users/:id',
    path: '/v1/users/{id}',
    operations: { get: { summary: 'A user\'s quota and usage', auth: 'apiKey', params: s.userIdParams, replies: { 200: { description: 'quota and usage', body: s.userJson } }, errors: [400, 401] } },
  },
  {
    serves: 'PUT /v1/users/:id',
    path: '/v1/users/{id}',
    operations: {
      put: { summary: 'Set a user\'s quota', auth: 'apiKey', params: s.userIdParams, body: { 'application/json': s.setQuotaRequest }, replies: { 200: { description: 'quota and usage', body: s.userJson } }, errors: [400, 401] },
    },
  },
  {
    serves: 'GET /v1/users/:id/files',
    path: '/v1/users/{id}/files',
    operations: {
      get: { summary: 'A user\'s files, newest first, page by page', auth: 'apiKey', params: s.userIdParams, query: s.listFilesQuery, replies: { 200: { description: 'one page', body: s.fileListResponse } }, errors: [400, 401] },
    },
  },
  // Demo mode only (CHIPMUNK_DEMO=on, the default outside production): the page and the routes it uses.
  {
    serves: 'GET /',
    path: '/',
    operations: { get: { summary: 'Demo page (demo mode only)', auth: 'none', replies: { 200: { description: 'the demo page', body: z.string(), contentType: 'text/html' } } } },
  },
  {
    serves: 'GET /demo/assets/:name',
    path: '/demo/assets/{name}',
    operations: {
      get: { summary: 'Demo page scripts and styles, served from npm packages (demo mode only)', auth: 'none', params: z.object({ name: z.string() }), replies: { 200: { description: 'the asset', body: 'binary' } }, errors: [404] },
    },
  },
  demoDoc('GET /demo/api/config', '/demo/api/config', 'get', { summary: 'Purposes and limits for the demo page', replies: { 200: { description: 'the page\'s settings', body: z.record(z.string(), z.unknown()) } } }),
  demoDoc('POST /demo/api/upload-tokens', '/demo/api/upload-tokens', 'post', {
    summary: 'Mint a 15-minute upload token for a demo-… user',
    body: { 'application/json': demoTokenRequest },
    replies: { 201: { description: 'an upload token', body: s.uploadTokenResponse } },
    errors: [400, 403],
  }),
  demoDoc('GET /demo/api/users/:id', '/demo/api/users/{id}', 'get', { summary: 'A demo user\'s quota and usage', params: z.object({ id: demoUserId }), replies: { 200: { description: 'quota and usage', body: s.userJson } }, errors: [400, 403] }),
  demoDoc('PUT /demo/api/users/:id/quota', '/demo/api/users/{id}/quota', 'put', {
    summary: 'Set a demo user\'s quota',
    params: z.object({ id: demoUserId }),
    body: { 'application/json': s.setQuotaRequest },
    replies: { 200: { description: 'quota and usage', body: s.userJson } },
    errors: [400, 403],
  }),
  demoDoc('GET /demo/api/users/:id/files', '/demo/api/users/{id}/files', 'get', {
    summary: 'A demo user\'s files',
    params: z.object({ id: demoUserId }),
    query: s.listFilesQuery,
    replies: { 200: { description: 'one page', body: s.fileListResponse } },
    errors: [400, 403],
  }),
  demoDoc('GET /demo/api/files/:id', '/demo/api/files/{id}', 'get', { summary: 'A demo user\'s file', params: s.fileIdParams, replies: { 200: fileReply }, errors: [400, 403, 404] }),
  demoDoc('DELETE /demo/api/files/:id', '/demo/api/files/{id}', 'delete', { summary: 'Delete a demo user\'s file', params: s.fileIdParams, replies: { 204: { description: 'deleted' } }, errors: [400, 403, 404] }),
];

/** A demo route: no credentials, answered only to same-origin browsers on this machine. */
function demoDoc(serves: string, path: string, method: Method, op: Omit<Operation, 'auth'>): RouteDoc {
  return {
    serves,
    path,
    operations: { [method]: { ...op, auth: 'none', description: 'Demo mode only; answers only same-origin requests from the machine Chipmunk runs on, for users named demo-….' } },
  };
}

/** The routes an app serves, as `METHOD /path` the way Hono registered them (middleware left out). */
export function servedRoutes(app: Hono<any, any, any>): string[] {
  const seen = new Set<string>();
  for (const r of inspectRoutes(app)) if (!r.isMiddleware) seen.add(`${r.method} ${r.path}`);
  return [...seen];
}

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): Json {
  for (const [name, candidate] of Object.entries(named)) if (candidate === schema) return { $ref: `#/components/schemas/${name}` };
  const { $schema: _ignored, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Json;
  return rest;
}

function parameters(schema: z.ZodObject | undefined, where: 'path' | 'query' | 'header'): Json[] {
  if (!schema) return [];
  const json = z.toJSONSchema(schema, { io: 'input' }) as { properties?: Record<string, Json>; required?: string[] };
  return Object.entries(json.properties ?? {}).map(([name, prop]) => {
    const { description, ...propSchema } = prop;
    return { name, in: where, required: where === 'path' || (json.required ?? []).includes(name), ...(description ? { description } : {}), schema: propSchema };
  });
}

function content(body: z.ZodType | 'binary', contentType: string, io: 'input' | 'output'): Json {
  return { [contentType]: { schema: body === 'binary' ? { type: 'string', contentMediaType: 'application/octet-stream' } : jsonSchema(body, io) } };
}

const security: Record<Auth, Json[]> = {
  apiKey: [{ apiKey: [] }],
  uploadToken: [{ uploadToken: [] }],
  apiKeyOrUploadToken: [{ apiKey: [] }, { uploadToken: [] }],
  none: [],
};

function operation(op: Operation): Json {
  const responses: Json = {};
  for (const [status, reply] of Object.entries(op.replies)) {
    responses[status] = {
      description: reply.description,
      ...(reply.headers
        ? { headers: Object.fromEntries(Object.entries(reply.headers).map(([h, d]) => [h, { description: d.description, schema: jsonSchema(d.schema, 'output') }])) }
        : {}),
      ...(reply.body ? { content: content(reply.body, reply.contentType ?? 'application/json', 'output') } : {}),
    };
  }
  for (const status of op.errors ?? []) {
    responses[status] = { description: errorText[status] ?? 'error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
  }
  return {
    summary: op.summary,
    ...(op.description ? { description: op.description } : {}),
    security: security[op.auth],
    parameters: [...parameters(op.params, 'path'), ...parameters(op.query, 'query'), ...parameters(op.headers, 'header')],
    ...(op.body
      ? { requestBody: { required: true, content: Object.assign({}, ...Object.entries(op.body).map(([type, schema]) => content(schema, type, 'input'))) } }
      : {}),
    responses,
  };
}

/** The document for the routes `served` (from `servedRoutes(app)`), and any served route left undocumented. */
export function openApiDocument(served: string[], opts: { serverUrl?: string } = {}): { document: Json; undocumented: string[] } {
  const servedSet = new Set(served);
  const paths: Record<string, Json> = {};
  for (const doc of routeDocs) {
    if (!servedSet.has(doc.serves)) continue;
    const item = (paths[doc.path] ??= {});
    for (const [method, op] of Object.entries(doc.operations)) item[method] = operation(op);
  }
  const documented = new Set(routeDocs.map((d) => d.serves));
  const document = {
    openapi: '3.1.0',
    info: {
      title: 'Chipmunk',
      version: '0.1.0',
      description: 'Self-hosted media service: resumable uploads (tus), quotas, variants, private delivery. Errors are always { "error": { "code", "message" } }.',
    },
    ...(opts.serverUrl ? { servers: [{ url: opts.serverUrl }] } : {}),
    paths,
    components: {
      schemas: Object.fromEntries(Object.entries(named).map(([name, schema]) => [name, (({ $schema: _ignored, ...rest }) => rest)(z.toJSONSchema(schema, { io: 'output' }) as Json)])),
      securitySchemes: {
        apiKey: { type: 'http', scheme: 'bearer', description: 'The app backend\'s key: CHIPMUNK_API_KEY.' },
        uploadToken: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'An upload token: HS256 JWT with sub (user id), purpose and exp, signed with CHIPMUNK_SECRET.' },
      },
    },
  };
  return { document, undocumented: served.filter((r) => !documented.has(r)) };
}
