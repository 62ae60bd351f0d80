import { readFile } from 'node:fs/promises';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { ChipmunkFile, ChipmunkUser } from 'chipmunk/client';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import { contractTypesPath, renderContractTypes } from '../scripts/contract-types.js';
import type { FileJson, UserJson } from '../src/routes/schemas.js';
import { backends } from './helpers/backends.js';
import { corpus, type TestChipmunk } from './helpers/chipmunk.js';
import { waitForFile } from './helpers/audio.js';
import { tusUpload } from './helpers/tus.js';

// Every answer a /v1 route documents, driven on the real server and checked against the schema
// /openapi.json gives for it — made strict here (no field the schema does not name), so a route
// answering a field its schema lacks, or one of the wrong type, fails. The ledger at the end fails
// when a documented answer was never driven.

type Reply = { description: string; content?: Record<string, { schema: unknown }> };
type Operation = { security?: unknown[]; responses: Record<string, Reply> };
type Doc = { paths: Record<string, Record<string, Operation>>; components: { schemas: Record<string, unknown> } };

/** The schema as written, with every object closed to fields it does not name and refs resolved locally. */
function strict(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(strict);
  if (!schema || typeof schema !== 'object') return schema;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema))
    out[k] =
      k === '$ref'
        ? String(v).replace('#/components/schemas/', '#/$defs/')
        : k === 'properties'
          ? Object.fromEntries(Object.entries(v as object).map(([p, s]) => [p, strict(s)]))
          : strict(v);
  if (out.properties && out.additionalProperties === undefined) out.additionalProperties = false;
  return out;
}

// The same contract on both backends: the answers come from the same routes over either persistence.
describe.each(backends)('$name', (backend) => {
  let t: TestChipmunk;
  let doc: Doc;
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats.default(ajv);
  const validators = new Map<string, ValidateFunction>();
  /** The answers driven on this backend, for the ledger at the end. */
  const driven = new Set<string>();

  function validatorFor(method: string, path: string, status: number): ValidateFunction | undefined {
    const key = `${method} ${path} ${status}`;
    const reply = doc.paths[path]?.[method]?.responses[status];
    expect(reply, `${key} is not a documented answer`).toBeDefined();
    const schema = reply!.content?.['application/json']?.schema;
    if (!schema) return undefined;
    if (!validators.has(key)) validators.set(key, ajv.compile({ ...(strict(schema) as object), $defs: strict(doc.components.schemas) as object }));
    return validators.get(key);
  }

  /** Checks one answer against its documented schema and records it in the ledger. */
  async function answer(method: string, path: string, res: Response, expected: number): Promise<unknown> {
    const text = await res.text();
    expect(res.status, `${method.toUpperCase()} ${path}: ${text.slice(0, 300)}`).toBe(expected);
    const validate = validatorFor(method, path, res.status);
    driven.add(`${method} ${path} ${res.status}`);
    if (!validate) {
      expect(text, `${method} ${path} ${res.status} documents no body`).toBe('');
      return undefined;
    }
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const body = JSON.parse(text) as unknown;
    expect(validate(body) ? [] : validate.errors, `${method} ${path} ${res.status}`).toEqual([]);
    return body;
  }

  const noKey = (path: string, init: RequestInit = {}) => fetch(`${t.url}${path}`, init);
  const missingId = '0'.repeat(24);

  let image: FileJson;
  let audio: FileJson;

  beforeAll(async () => {
    t = await backend.start();
    doc = (await (await fetch(`${t.url}/openapi.json`)).json()) as Doc;
    const png = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#3a7' } })
      .png()
      .toBuffer();
    const res = await t.api('/v1/files', {
      method: 'POST',
      json: { userId: 'contract', purpose: 'image', filename: 'green.png', data: png.toString('base64') },
    });
    image = (await answer('post', '/v1/files', res, 201)) as FileJson;
    // A track with a cover: its JSON carries tags, renditions and the cover's ladder once the job ran.
    const token = await t.uploadToken('contract', 'audio');
    const track = await tusUpload(`${t.url}/uploads`, await readFile(corpus('audio/ok/m4a-aac-cover.m4a')), { token, metadata: { filename: 'cover.m4a' } });
    if (!track.ok) throw track.error;
    await waitForFile(t, (track.body as { id: string }).id);
    audio = (await answer('get', '/v1/files/{id}', await t.api(`/v1/files/${(track.body as { id: string }).id}`), 200)) as FileJson;
  }, 120_000);
  afterAll(() => t?.close());

  describe('every documented /v1 answer matches its schema', () => {
    it('checks strictly: an extra field or a wrong type fails', () => {
      const validate = validatorFor('get', '/v1/files/{id}', 200)!;
      expect(validate(image)).toBe(true);
      expect(validate(audio)).toBe(true);
      expect(validate({ ...image, surprise: 1 })).toBe(false);
      expect(validate({ ...image, bytes: String(image.bytes) })).toBe(false);
      expect(validate({ ...image, codec: 'mp3' })).toBe(false);
      expect(validate({ ...audio, cover: { variants: [1] } })).toBe(false);
    });

    it('describes images and tracks by kind, with their facts', () => {
      expect(image).toMatchObject({ kind: 'image', placeholder: expect.stringMatching(/^data:image\/webp;base64,/), thumbhash: expect.any(String) });
      expect(audio).toMatchObject({ kind: 'audio', status: 'ready', codec: 'aac', renditions: { available: true }, cover: { variants: expect.any(Array) } });
    });

    it('POST /v1/upload-tokens', async () => {
      const p = '/v1/upload-tokens';
      const token = (await answer('post', p, await t.api(p, { method: 'POST', json: { userId: 'contract', purpose: 'image', maxUploads: 2 } }), 201)) as {
        maxUploads?: number;
      };
      expect(token.maxUploads).toBe(2);
      await answer('post', p, await t.api(p, { method: 'POST', json: { userId: 'contract', purpose: 'Not a purpose' } }), 400);
      await answer('post', p, await t.api(p, { method: 'POST', body: '{ not json' }), 400);
      await answer('post', p, await noKey(p, { method: 'POST', body: JSON.stringify({ userId: 'x', purpose: 'image' }) }), 401);
    });

    it('POST /v1/files', async () => {
      const p = '/v1/files';
      const post = (json: unknown, headers: Record<string, string> = {}) => t.api(p, { method: 'POST', json, headers });
      await answer('post', p, await post({ userId: 'contract', purpose: 'image' }), 400);
      await answer('post', p, await noKey(p, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }), 401);
      const avatarToken = await t.uploadToken('contract', 'avatar');
      const withToken = await fetch(`${t.url}${p}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${avatarToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ purpose: 'image', data: 'AAAA' }),
      });
      await answer('post', p, withToken, 403);
      await t.api('/v1/users/contract-tiny', { method: 'PUT', json: { quotaBytes: 10 } });
      const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#000' } })
        .png()
        .toBuffer();
      await answer('post', p, await post({ userId: 'contract-tiny', purpose: 'image', data: png.toString('base64') }), 413);
      await answer('post', p, await t.api(p, { method: 'POST', body: 'hello', headers: { 'content-type': 'text/plain' } }), 415);
      const broken = Buffer.concat([png.subarray(0, 40), Buffer.alloc(200, 7)]);
      await answer('post', p, await post({ userId: 'contract', purpose: 'image', data: broken.toString('base64') }), 422);
    });

    it('GET, PATCH and DELETE /v1/files/{id}', async () => {
      const p = '/v1/files/{id}';
      await answer('get', p, await t.api(`/v1/files/${image.id}`), 200);
      await answer('get', p, await t.api('/v1/files/not-an-id'), 400);
      await answer('get', p, await noKey(`/v1/files/${image.id}`), 401);
      await answer('get', p, await t.api(`/v1/files/${missingId}`), 404);

      const patched = (await answer('patch', p, await t.api(`/v1/files/${image.id}`, { method: 'PATCH', json: { visibility: 'public' } }), 200)) as FileJson;
      expect(patched.visibility).toBe('public');
      await answer('patch', p, await t.api(`/v1/files/${image.id}`, { method: 'PATCH', json: { visibility: 'secret' } }), 400);
      await answer('patch', p, await noKey(`/v1/files/${image.id}`, { method: 'PATCH', body: '{"visibility":"private"}' }), 401);
      await answer('patch', p, await t.api(`/v1/files/${missingId}`, { method: 'PATCH', json: { visibility: 'private' } }), 404);

      await answer('delete', p, await t.api('/v1/files/not-an-id', { method: 'DELETE' }), 400);
      await answer('delete', p, await noKey(`/v1/files/${image.id}`, { method: 'DELETE' }), 401);
      await answer('delete', p, await t.api(`/v1/files/${missingId}`, { method: 'DELETE' }), 404);
    });

    it('POST /v1/files/{id}/rotate-token and GET /v1/files/{id}/url', async () => {
      const rotate = '/v1/files/{id}/rotate-token';
      await answer('post', rotate, await t.api(`/v1/files/${audio.id}/rotate-token`, { method: 'POST' }), 200);
      await answer('post', rotate, await t.api('/v1/files/x/rotate-token', { method: 'POST' }), 400);
      await answer('post', rotate, await noKey(`/v1/files/${audio.id}/rotate-token`, { method: 'POST' }), 401);
      await answer('post', rotate, await t.api(`/v1/files/${missingId}/rotate-token`, { method: 'POST' }), 404);

      const url = '/v1/files/{id}/url';
      await answer('get', url, await t.api(`/v1/files/${audio.id}/url?variant=1&expiresIn=600`), 200);
      await answer('get', url, await t.api(`/v1/files/${audio.id}/url?expiresIn=0`), 400);
      await answer('get', url, await noKey(`/v1/files/${audio.id}/url`), 401);
      await answer('get', url, await t.api(`/v1/files/${audio.id}/url?variant=nope`), 404);
    });

    it('GET and PUT /v1/users/{id}, GET /v1/users/{id}/files', async () => {
      const p = '/v1/users/{id}';
      const user = (await answer('get', p, await t.api('/v1/users/contract'), 200)) as UserJson;
      expect(user.fileCount).toBeGreaterThanOrEqual(2);
      await answer('get', p, await t.api('/v1/users/demo-someone'), 400);
      await answer('get', p, await noKey('/v1/users/contract'), 401);
      // A JSON body is read as JSON whatever its Content-Type, as it always was (fetch sends a string as text/plain).
      const set = await fetch(`${t.url}/v1/users/contract-quota`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${t.apiKey}` },
        body: JSON.stringify({ quotaBytes: 5_000_000 }),
      });
      expect(((await answer('put', p, set, 200)) as UserJson).quotaBytes).toBe(5_000_000);
      await answer('put', p, await t.api('/v1/users/contract-quota', { method: 'PUT', json: { quotaBytes: -1 } }), 400);
      await answer('put', p, await noKey('/v1/users/contract-quota', { method: 'PUT', body: '{"quotaBytes":1}' }), 401);

      const list = '/v1/users/{id}/files';
      const page = (await answer('get', list, await t.api('/v1/users/contract/files?limit=10'), 200)) as { files: FileJson[] };
      expect(page.files.map((f) => f.kind).sort()).toEqual(['audio', 'image']);
      await answer('get', list, await t.api('/v1/users/contract/files?limit=0'), 400);
      await answer('get', list, await noKey('/v1/users/contract/files'), 401);
    });

    it('asks for the key before answering 404 to an unknown /v1 path, as before', async () => {
      expect((await noKey('/v1/nothing-here')).status).toBe(401);
      expect((await t.api('/v1/nothing-here')).status).toBe(404);
      expect((await noKey(`/v1/files/${image.id}`, { method: 'PUT' })).status).toBe(401);
    });

    it('deletes last, then has driven every documented answer of every /v1 route', async () => {
      await answer('delete', '/v1/files/{id}', await t.api(`/v1/files/${image.id}`, { method: 'DELETE' }), 204);
      const documented: string[] = [];
      for (const [path, item] of Object.entries(doc.paths)) {
        if (!path.startsWith('/v1/')) continue;
        for (const [method, op] of Object.entries(item)) {
          // Credentials are declared by the route itself, and every one of them refuses a caller without them.
          expect(op.security?.length, `${method} ${path} declares no security`).toBeGreaterThan(0);
          for (const status of Object.keys(op.responses)) documented.push(`${method} ${path} ${status}`);
        }
      }
      expect(documented.length).toBeGreaterThan(35);
      expect(documented.filter((a) => !driven.has(a))).toEqual([]);
    });
  });
});

// The kit's types are generated from the same schemas, and kept current.
it('keeps src/client/contract.ts generated from the schemas (npm run contract:types)', async () => {
  expect(await readFile(contractTypesPath, 'utf8')).toBe(renderContractTypes());
  expectTypeOf<ChipmunkFile>().toEqualTypeOf<FileJson>();
  expectTypeOf<ChipmunkUser>().toEqualTypeOf<UserJson>();
});
