import { OpenAPIHono } from '@hono/zod-openapi';
import type { Env, MiddlewareHandler } from 'hono';
import type { z } from 'zod';
import { requireApiKey } from '../auth/api-key.js';
import { errorResponse } from './schemas.js';
import { invalidInput, readJson } from './validate.js';

// How the /v1 routes are declared (with @hono/zod-openapi's createRoute): one declaration gives the
// route its validation, its typed answers, its credentials and its part of /openapi.json.

/** What a router's inputs are called in a refusal: "Invalid file id (id): not a file id". */
export type InputNames = { param?: string; query?: string; json?: string };

/** A router whose failed input checks are the API's 400 INVALID_INPUT, worded as they always were. */
export function v1Router<E extends Env = Env>(names: InputNames = {}) {
  const named: Record<string, string> = { query: 'query', json: 'request body', ...names };
  return new OpenAPIHono<E>({
    defaultHook: (result) => {
      if (!result.success) throw invalidInput(result.error, named[result.target] ?? result.target);
    },
  });
}

/**
 * The API key, declared by the route itself: documented as its security and checked by its first
 * middleware, so no route depends on where it is mounted to be guarded. `then` runs after the check.
 */
export function withApiKey(apiKey: string, ...then: MiddlewareHandler[]) {
  return { security: [{ apiKey: [] }], middleware: [requireApiKey(apiKey), ...then] };
}

/**
 * The API has always read a JSON body whatever Content-Type came with it (a browser's fetch sends a
 * string body as text/plain). The route's JSON validator only reads bodies typed as JSON, so the body
 * is read here (refusing one that is not JSON at all) and the request is re-typed before it runs.
 */
export const anyTypeJson: MiddlewareHandler = async (c, next) => {
  await readJson(c);
  const headers = new Headers(c.req.raw.headers);
  headers.set('content-type', 'application/json');
  // The body stays cached on c.req, which is where the validator reads it from.
  c.req.raw = new Request(c.req.url, { method: c.req.method, headers });
  await next();
};

/** A required JSON request body. */
export const jsonRequest = <S extends z.ZodType>(schema: S) => ({ required: true, content: { 'application/json': { schema } } });

/** A JSON answer. */
export const jsonReply = <S extends z.ZodType>(description: string, schema: S) => ({ description, content: { 'application/json': { schema } } });

const errorText: Record<number, string> = {
  400: 'invalid input',
  401: 'missing or invalid credentials',
  403: 'not allowed (e.g. a purpose the upload token does not grant)',
  404: 'not found',
  409: 'conflict (tus: Upload-Offset does not match)',
  412: 'tus: Tus-Resumable missing or not 1.0.0 (the answer carries Tus-Version)',
  413: "too large: the purpose's limit, the body cap, or the user's quota (QUOTA_EXCEEDED)",
  415: 'a type the purpose does not take, or a data: type that disagrees with the bytes',
  422: 'the bytes are not a usable image or audio file',
  460: 'tus checksum extension: the chunk does not match Upload-Checksum and was not applied',
};

/** The refusals a route can answer, each with the error JSON. */
export function errorReplies<const S extends readonly number[]>(...statuses: S) {
  return Object.fromEntries(statuses.map((s) => [s, jsonReply(errorText[s] ?? 'error', errorResponse)])) as {
    [K in S[number]]: ReturnType<typeof jsonReply<typeof errorResponse>>;
  };
}
