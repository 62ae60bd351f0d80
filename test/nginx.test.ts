import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nginxConfigCommand } from '../src/cli.js';
import { backends } from './helpers/backends.js';
import { corpus, storedForm, type TestChipmunk } from './helpers/chipmunk.js';
import { NGINX_BIN, startNginx, type TestNginx } from './helpers/nginx.js';
import { tusUpload, uploadFirstChunk } from './helpers/tus.js';

const sha256 = (b: Buffer | Uint8Array) => createHash('sha256').update(b).digest('hex');
type FileJson = { id: string; bytes: number; variants: Array<{ n: number; url: string }> };

// On the distributed backend the same rendered config sits in front of a Chipmunk on PostgreSQL and
// a bucket: tus answers come from the S3 store and the auth answer sends nginx to the bucket.
// What only the bucket has (its internal location, bytes taken from it) is nginx-s3.test.ts's.

describe.each(backends)('tus uploads through nginx: $name', (backend) => {
  let t: TestChipmunk;
  let nginx: TestNginx;
  let photo: Buffer;

  beforeAll(async () => {
    t = await backend.start();
    nginx = await startNginx(t);
    photo = await storedForm(corpus('images/photos/portrait-canal.jpg'));
  });
  afterAll(async () => {
    await nginx?.close();
    await t?.close();
  });

  it('uploads in one request, with Location and file URLs pointing at nginx', async () => {
    const token = await t.uploadToken('alice', 'image');
    const result = await tusUpload(`${nginx.url}/uploads`, photo, { token, metadata: { filename: 'canal.jpg' } });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.url.startsWith(`${nginx.url}/uploads/`)).toBe(true);
    const file = result.body as FileJson;
    expect(file.bytes).toBe(photo.length);
    const original = file.variants.find((v) => v.n === 0)!;
    expect(original.url.startsWith(`${nginx.url}/f/`)).toBe(true);
    const res = await fetch(original.url);
    expect(res.status).toBe(200);
    expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(sha256(photo));
  });

  it('resumes an interrupted upload through nginx', async () => {
    const token = await t.uploadToken('bob', 'image');
    // A larger photo with no metadata: stored byte for byte as sent.
    const data = await readFile(corpus('images/photos/landscape-saw-6mp.jpg'));
    const firstUrl = await uploadFirstChunk(`${nginx.url}/uploads`, data, { token, chunkSize: 100_000, metadata: { filename: 'resume.jpg' } });
    expect(firstUrl.startsWith(`${nginx.url}/uploads/`)).toBe(true);
    const head = await fetch(firstUrl, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
    const offset = Number(head.headers.get('upload-offset'));
    expect(offset).toBeGreaterThan(0);
    expect(offset).toBeLessThan(data.length);
    const result = await tusUpload(`${nginx.url}/uploads`, data, { token, uploadUrl: firstUrl, chunkSize: 100_000 });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const file = result.body as FileJson;
    const res = await fetch(file.variants.find((v) => v.n === 0)!.url);
    expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(sha256(data));
  });

  it('passes API calls and their errors through to Chipmunk', async () => {
    const res = await fetch(`${nginx.url}/v1/users/alice`);
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('UNAUTHORIZED');
  });
});

describe.each(backends)('nginx when Chipmunk is down: $name', (backend) => {
  it('answers JSON 502 for the API and for files', async () => {
    const t = await backend.start();
    const nginx = await startNginx(t, { authCacheSeconds: 0 });
    try {
      await t.chipmunk.close();
      for (const pathname of ['/v1/users/x', `/f/${'a'.repeat(32)}/0`]) {
        const res = await fetch(`${nginx.url}${pathname}`);
        expect(res.status).toBe(502);
        expect(res.headers.get('content-type')).toBe('application/json');
        expect(((await res.json()) as { error: { code: string } }).error.code).toMatch(/UNAVAILABLE/);
      }
    } finally {
      await nginx.close();
      await t.close();
    }
  });
});

// Rendering alone, the same on either backend (the bucket's part of the config: nginx-s3.test.ts).
describe('chipmunk nginx-config', () => {
  const env = { CHIPMUNK_DATA_DIR: '/srv/chipmunk', CHIPMUNK_INTERNAL_PORT: '9091', CHIPMUNK_AUTH_CACHE: '3' };

  it('renders a config nginx accepts, from the server environment', async () => {
    const config = nginxConfigCommand(['--listen', '127.0.0.1:8088', '--upstream', 'http://127.0.0.1:8080'], env);
    expect(config).toContain('root /srv/chipmunk/media;');
    expect(config).toContain('server 127.0.0.1:9091;');
    expect(config).toContain('proxy_cache_valid 200 401 403 404 3s;');
    expect(config).not.toMatch(/^\s*daemon/m);
    const prefix = await mkdtemp(path.join(tmpdir(), 'chipmunk-nginx-t-'));
    try {
      await writeFile(path.join(prefix, 'nginx.conf'), config);
      const { stderr } = await promisify(execFile)(NGINX_BIN, ['-t', '-p', prefix, '-c', path.join(prefix, 'nginx.conf')]);
      expect(stderr).toContain('test is successful');
    } finally {
      await rm(prefix, { recursive: true, force: true });
    }
  });

  it('turns the auth cache off with CHIPMUNK_AUTH_CACHE=0 and refuses bad arguments', () => {
    const config = nginxConfigCommand(['--listen', '8088', '--upstream', 'http://chipmunk:8080'], { ...env, CHIPMUNK_AUTH_CACHE: '0' });
    expect(config).not.toContain('proxy_cache ');
    expect(config).toContain('server chipmunk:9091;');
    expect(() => nginxConfigCommand(['--listen', '8088'], env)).toThrow(/--upstream/);
    expect(() => nginxConfigCommand(['--listen', '8088', '--upstream', 'https://x:1/'], env)).toThrow(/http:\/\//);
    expect(() => nginxConfigCommand(['--listen', '80; evil', '--upstream', 'http://x:1'], env)).toThrow(/cannot go into an nginx config/);
  });

  it('is the config shipped in nginx/ for docker compose', async () => {
    const shipped = await readFile(path.resolve(import.meta.dirname, '../nginx/chipmunk.conf'), 'utf8');
    const rendered = nginxConfigCommand(['--listen', '8088', '--upstream', 'http://chipmunk:8080', '--user', 'nginx'], {
      CHIPMUNK_DATA_DIR: '/data',
      CHIPMUNK_INTERNAL_PORT: '8081',
    });
    expect(shipped).toBe(rendered);
  });
});
