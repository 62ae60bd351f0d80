import type { OpenAPIHono, RouteConfig } from '@hono/zod-openapi';
import type { Hono } from 'hono';
import { inspectRoutes } from 'hono/dev';
import { z } from 'zod';
import { errorReplies, jsonReply } from './routes/declare.js';
import * as s from './routes/schemas.js';

// The OpenAPI 3.1 document. The /v1 and operator routes are declared with @hono/zod-openapi, which
// documents them from the same declaration that validates and types them; the routes registered by
// hand (tus at /uploads, delivery at /f/, this document) are described here, from the same schemas.

type Registry = OpenAPIHono['openAPIRegistry'];

/** Binary bodies (tus chunks, delivered variants). */
const binary = (contentType: string) => ({ [contentType]: { schema: { type: 'string' as const, contentMediaType: 'application/octet-stream' } } });

// tus 1.0.0 (core, creation, creation-with-upload, termination, expiration, checksum).
const tusVersion = { description: 'tus protocol version', schema: { type: 'string' as const, enum: ['1.0.0'] } };
const tusOffset = { description: 'bytes received so far', schema: { type: 'string' as const, pattern: '^\\d+$' } };
const tusOptionsReply = {
  description: 'what this tus server supports',
  headers: {
    'Tus-Resumable': tusVersion,
    'Tus-Version': { description: 'supported versions', schema: { type: 'string' as const } },
    'Tus-Extension': { description: 'supported extensions', schema: { type: 'string' as const } },
    'Tus-Max-Size': { description: 'largest upload accepted (0: decided per purpose at creation)', schema: { type: 'string' as const } },
    'Tus-Checksum-Algorithm': { description: 'Upload-Checksum algorithms accepted', schema: { type: 'string' as const } },
  },
};
const fileReply = (description: string) => jsonReply(description, s.fileJson);

const tusRoutes: RouteConfig[] = [
  { method: 'options', path: '/uploads', summary: "tus: discover the server's capabilities", security: [], responses: { 204: tusOptionsReply } },
  {
    method: 'post',
    path: '/uploads',
    summary: 'tus: create an upload (creation, creation-with-upload)',
    description:
      "Reserves the declared length against the user's quota. The upload token names the user and the purpose; `Upload-Metadata` may carry `filename`, `filetype` and repeat `purpose` (never change it). A body sent with the creation is the first chunk; when it completes the upload the answer is the file JSON.",
    security: [{ uploadToken: [] }],
    request: { headers: s.tusCreateHeaders, body: { required: true, content: binary('application/offset+octet-stream') } },
    responses: {
      201: {
        description: 'created; send the bytes with PATCH to Location',
        headers: {
          Location: { description: "the upload's URL", schema: { type: 'string', format: 'uri' } },
          'Tus-Resumable': tusVersion,
          'Upload-Offset': tusOffset,
          'Upload-Expires': { description: 'when an unfinished upload is released (RFC 7231 date)', schema: { type: 'string' } },
        },
      },
      200: fileReply('created and complete in one request: the file JSON'),
      ...errorReplies(400, 401, 403, 412, 413, 415, 422, 460),
    },
  },
  {
    method: 'head',
    path: '/uploads/{id}',
    summary: 'tus: how much of the upload has arrived',
    security: [],
    request: { params: s.fileIdParams, headers: s.tusHeaders },
    responses: {
      200: {
        description: "the upload's progress",
        headers: {
          'Tus-Resumable': tusVersion,
          'Upload-Offset': tusOffset,
          'Upload-Length': { description: 'declared length', schema: { type: 'string', pattern: '^\\d+$' } },
          'Upload-Metadata': { description: 'exactly as sent at creation', schema: { type: 'string' } },
        },
      },
      ...errorReplies(404),
    },
  },
  {
    method: 'patch',
    path: '/uploads/{id}',
    summary: 'tus: send bytes from Upload-Offset',
    description: 'The request that completes the upload answers 200 with the file JSON (or the refusal); earlier ones answer 204.',
    security: [],
    request: { params: s.fileIdParams, headers: s.tusPatchHeaders, body: { required: true, content: binary('application/offset+octet-stream') } },
    responses: {
      204: { description: 'bytes stored; more expected', headers: { 'Tus-Resumable': tusVersion, 'Upload-Offset': tusOffset } },
      200: fileReply('the last bytes arrived: the file JSON'),
      ...errorReplies(400, 404, 409, 412, 413, 415, 422, 460),
    },
  },
  {
    method: 'delete',
    path: '/uploads/{id}',
    summary: 'tus: terminate an unfinished upload, giving its reservation back',
    security: [],
    request: { params: s.fileIdParams, headers: s.tusHeaders },
    responses: { 204: { description: 'terminated', headers: { 'Tus-Resumable': tusVersion } }, ...errorReplies(404) },
  },
  {
    method: 'options',
    path: '/uploads/{id}',
    summary: "tus: discover the server's capabilities",
    security: [],
    request: { params: s.fileIdParams },
    responses: { 204: tusOptionsReply },
  },
];

const deliveryRoutes: RouteConfig[] = [
  {
    method: 'get',
    path: '/f/{token}/{n}',
    summary: 'Deliver a variant (public, or private with a signed link)',
    security: [],
    request: { params: s.deliveryParams, query: s.deliveryQuery },
    responses: { 200: { description: "the variant's bytes (Range requests answer 206)", content: binary('*/*') }, ...errorReplies(403, 404) },
  },
  {
    method: 'head',
    path: '/f/{token}/{n}',
    summary: "A variant's headers, without its bytes",
    security: [],
    request: { params: s.deliveryParams, query: s.deliveryQuery },
    responses: { 200: { description: "the variant's headers" }, ...errorReplies(403, 404) },
  },
];

/** Describes the routes registered by hand: tus at /uploads, delivery at /f/, and /openapi.json itself. */
export function documentHandRoutes(registry: Registry): void {
  for (const route of [...tusRoutes, ...deliveryRoutes]) registry.registerPath(route);
  registry.registerPath({
    method: 'get',
    path: '/openapi.json',
    summary: 'This document',
    security: [],
    responses: { 200: jsonReply('OpenAPI 3.1', z.record(z.string(), z.unknown())) },
  });
  registry.registerComponent('securitySchemes', 'apiKey', { type: 'http', scheme: 'bearer', description: "The app backend's key: CHIPMUNK_API_KEY." });
  registry.registerComponent('securitySchemes', 'uploadToken', {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description: 'An upload token: HS256 JWT with sub (user id), purpose and exp, signed with CHIPMUNK_SECRET.',
  });
}

/** The document for everything `app` declares and every route documented by hand. */
export function openApiDocument(app: OpenAPIHono<any, any, any>, opts: { serverUrl?: string } = {}): Record<string, unknown> {
  return app.getOpenAPI31Document({
    openapi: '3.1.0',
    info: {
      title: 'Chipmunk',
      version: '0.1.0',
      description:
        'Self-hosted media service: resumable uploads (tus), quotas, variants, private delivery. Errors are always { "error": { "code", "message" } }.',
    },
    ...(opts.serverUrl ? { servers: [{ url: opts.serverUrl }] } : {}),
  }) as unknown as Record<string, unknown>;
}

/** The routes an app serves, as `METHOD /path` the way Hono registered them (middleware left out). */
export function servedRoutes(app: Hono<any, any, any>): string[] {
  const seen = new Set<string>();
  for (const r of inspectRoutes(app)) if (!r.isMiddleware) seen.add(`${r.method} ${r.path}`);
  return [...seen];
}
