import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChipmunk as createKit } from '../src/client/index.js';
import { startChipmunk, type TestChipmunk } from './helpers/chipmunk.js';
import { rawRequest } from './helpers/http.js';
import { startNginx, type TestNginx } from './helpers/nginx.js';
import { wavHeader } from './helpers/wav.js';
import { expectReservationAfterCommit } from './helpers/reservations.js';

// A backend behind compose reaches Chipmunk only through its nginx: POST /v1/files must take what
// the README promises there (streamed, the purposes' limits), and nginx's own 413 must say the limit.

let t: TestChipmunk;
let nginx: TestNginx;
let scratch: string;

beforeAll(async () => {
  t = await startChipmunk();
  nginx = await startNginx(t);
  scratch = await mkdtemp(path.join(tmpdir(), 'chipmunk-big-'));
}, 60_000);
afterAll(async () => {
  await nginx?.close();
  await t?.close();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe('POST /v1/files through the rendered nginx', () => {
  it('a 30 MB multipart upload from the kit succeeds', async () => {
    // 30 MB of a quiet 16-bit stereo WAV (three minutes), a track for the audio purpose.
    const dataBytes = 30_000_000 - 44;
    const file = path.join(scratch, 'long-take.wav');
    const samples = Buffer.alloc(dataBytes);
    for (let i = 0; i < dataBytes; i += 2) samples.writeInt16LE(Math.round(3000 * Math.sin(i / 40)), i);
    await writeFile(file, Buffer.concat([wavHeader(dataBytes), samples]));

    const kit = createKit({ baseUrl: nginx.url, apiKey: t.apiKey });
    const stored = await kit.uploadPath({ userId: 'backend', purpose: 'audio', path: file, mimeType: 'audio/wav' });
    expect(stored).toMatchObject({ kind: 'audio', bytes: 30_000_000, userId: 'backend' });
    expect(['processing', 'ready']).toContain(stored.status);
    await expectReservationAfterCommit({ file: () => kit.getFile(stored.id), reservedBytes: async () => (await kit.getUser('backend')).reservedBytes });
  }, 120_000);

  it("nginx's own 413 names the limit of the address that refused the body", async () => {
    // Declared far over every limit: nginx answers from Content-Length, before any byte is read.
    const tooBig = await rawRequest(`${nginx.url}/v1/files`, {
      method: 'POST',
      headers: { 'content-length': String(5_000_000_000), 'content-type': 'multipart/form-data; boundary=x' },
      body: [],
    });
    expect(tooBig.status).toBe(413);
    expect(String(tooBig.headers['content-type'])).toMatch(/^application\/json/);
    const body = JSON.parse(tooBig.body) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('FILE_TOO_LARGE');
    expect(body.error.message).toMatch(/POST \/v1\/files bodies carry at most \d+ MB/);

    const upload = await rawRequest(`${nginx.url}/uploads/abc`, { method: 'PATCH', headers: { 'content-length': String(5_000_000_000) }, body: [] });
    expect(upload.status).toBe(413);
    expect(JSON.parse(upload.body).error.message).toMatch(/Upload requests carry at most 501 MB/);

    const api = await rawRequest(`${nginx.url}/v1/users/someone`, {
      method: 'PUT',
      headers: { 'content-length': String(2_000_000), 'content-type': 'application/json' },
      body: [],
    });
    expect(api.status).toBe(413);
    expect(JSON.parse(api.body).error.message).toMatch(/at most 1 MB/);
  });
});
