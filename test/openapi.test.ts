import { Validator } from '@seriousme/openapi-schema-validator';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { z } from 'zod';
import { DELIVERY_ROUTE } from '../src/delivery/serve.js';
import { servedRoutes } from '../src/openapi.js';
import { ingestJsonRequest, setQuotaRequest, tusCreateHeaders } from '../src/routes/schemas.js';
import { startChipmunk, type TestChipmunk } from './helpers/chipmunk.js';

type Doc = {
  openapi: string;
  paths: Record<string, Record<string, { parameters: Array<{ name: string; in: string }>; requestBody?: { content: Record<string, { schema: unknown }> } }>>;
};

let t: TestChipmunk;
let doc: Doc;

beforeAll(async () => {
  t = await startChipmunk();
  const res = await fetch(`${t.url}/openapi.json`);
  expect(res.status).toBe(200);
  doc = (await res.json()) as Doc;
});
afterAll(() => t?.close());

it('is a valid OpenAPI 3.1 document', async () => {
  expect(doc.openapi).toBe('3.1.0');
  const validator = new Validator();
  const result = await validator.validate(structuredClone(doc) as unknown as Record<string, unknown>);
  expect(result.errors ?? []).toEqual([]);
  expect(result.valid).toBe(true);
  expect(validator.version).toBe('3.1');
});

it('stays valid with the demo routes too (demo mode)', async () => {
  const demo = await startChipmunk({ CHIPMUNK_DEMO: 'on' });
  try {
    const everything = (await (await fetch(`${demo.url}/openapi.json`)).json()) as Doc;
    const result = await new Validator().validate(structuredClone(everything) as unknown as Record<string, unknown>);
    expect(result.errors ?? []).toEqual([]);
    expect(Object.keys(everything.paths)).toEqual(
      expect.arrayContaining(['/', '/demo/assets/{name}', '/demo/api/config', '/demo/api/users/{id}/quota', '/demo/api/files/{id}']),
    );
    expect(Object.keys(doc.paths).filter((p) => p === '/' || p.startsWith('/demo'))).toEqual([]);
  } finally {
    await demo.close();
  }
});

it('documents every route the app serves, and only those', () => {
  // /f/ is answered before the app, by the listening server (delivery/serve.ts): listed by hand.
  const served = [...servedRoutes(t.chipmunk.app), DELIVERY_ROUTE];
  expect(served.length).toBeGreaterThan(8);
  // Hono's "/v1/files/:id" is OpenAPI's "/v1/files/{id}"; a catch-all ("/uploads/*") owns the paths below it.
  const exact = new Map<string, string>();
  const prefixes: string[] = [];
  for (const route of served) {
    const [method, honoPath] = route.split(' ') as [string, string];
    if (honoPath.endsWith('/*')) prefixes.push(honoPath.slice(0, -1));
    else exact.set(honoPath.replace(/:(\w+)/g, '{$1}'), method);
  }
  const documented = Object.keys(doc.paths);
  for (const path of documented) expect(exact.has(path) || prefixes.some((p) => path.startsWith(p)), `${path} is documented but not served`).toBe(true);
  for (const route of served) {
    const [method, honoPath] = route.split(' ') as [string, string];
    if (honoPath.endsWith('/*')) {
      const below = documented.filter((p) => p.startsWith(honoPath.slice(0, -1)));
      expect(below.length, route).toBeGreaterThan(0);
    } else {
      const item = doc.paths[honoPath.replace(/:(\w+)/g, '{$1}')];
      expect(item, route).toBeDefined();
      if (method === 'ALL') expect(Object.keys(item!).length, route).toBeGreaterThan(0);
      else expect(item![method.toLowerCase()], route).toBeDefined();
    }
  }
});

it('covers the tus endpoint with its headers', () => {
  expect(Object.keys(doc.paths['/uploads']!).sort()).toEqual(['options', 'post']);
  expect(Object.keys(doc.paths['/uploads/{id}']!).sort()).toEqual(['delete', 'head', 'options', 'patch']);
  const headers = (path: string, method: string) => doc.paths[path]![method]!.parameters.filter((p) => p.in === 'header').map((p) => p.name);
  expect(headers('/uploads', 'post')).toEqual(expect.arrayContaining(['Tus-Resumable', 'Upload-Length', 'Upload-Metadata', 'Authorization']));
  expect(headers('/uploads/{id}', 'patch')).toEqual(expect.arrayContaining(['Tus-Resumable', 'Upload-Offset', 'Content-Type']));
  expect(headers('/uploads/{id}', 'head')).toContain('Tus-Resumable');
  expect(headers('/uploads/{id}', 'delete')).toContain('Tus-Resumable');
  // Generated from the zod schema: every header it declares is there.
  expect(headers('/uploads', 'post').sort()).toEqual(Object.keys(tusCreateHeaders.shape).sort());
});

it('takes its request bodies from the schemas the routes validate with', () => {
  type Obj = { properties: Record<string, { pattern?: string }>; required?: string[] };
  const body = (path: string, method: string, type = 'application/json') => doc.paths[path]![method]!.requestBody!.content[type]!.schema as Obj;
  const fields = (schema: Obj) => ({ names: Object.keys(schema.properties).sort(), required: [...(schema.required ?? [])].sort() });
  const required = (shape: Record<string, z.ZodType>) =>
    Object.keys(shape)
      .filter((k) => !shape[k]!.safeParse(undefined).success)
      .sort();
  expect(fields(body('/v1/files', 'post'))).toEqual({ names: Object.keys(ingestJsonRequest.shape).sort(), required: required(ingestJsonRequest.shape) });
  expect(Object.keys(doc.paths['/v1/files']!.post!.requestBody!.content).sort()).toEqual(['application/json', 'multipart/form-data']);
  expect(fields(body('/v1/users/{id}', 'put'))).toEqual({ names: ['quotaBytes'], required: required(setQuotaRequest.shape) });
  expect(body('/v1/files/{id}', 'patch').properties.visibility).toEqual({ type: 'string', enum: ['public', 'private'] });
});
