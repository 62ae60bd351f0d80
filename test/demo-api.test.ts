import { mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { request as httpRequest } from 'node:http';
import path from 'node:path';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { corpus, startChipmunk, type TestChipmunk } from './helpers/chipmunk.js';
import { tusUpload } from './helpers/tus.js';

// The demo's fences, without a browser: off in production, loopback and same-origin only,
// and never acting for a user outside demo-….

type ErrorJson = { error: { code: string; message: string } };

describe('demo mode switch', () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'chipmunk-demo-config-'));
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));
  const env = (extra: Record<string, string>) => loadConfig({ CHIPMUNK_DATA_DIR: dataDir, ...extra }).demo;

  it('is off unless asked for, and when on it listens on loopback only', () => {
    expect(env({})).toBe(false);
    expect(env({ NODE_ENV: 'development' })).toBe(false);
    expect(env({ CHIPMUNK_DEMO: 'on' })).toBe(true);
    expect(env({ CHIPMUNK_DEMO: 'off' })).toBe(false);
    expect(() => env({ CHIPMUNK_DEMO: 'yes' })).toThrow(/CHIPMUNK_DEMO/);
    const host = (extra: Record<string, string>) => loadConfig({ CHIPMUNK_DATA_DIR: dataDir, ...extra }).host;
    expect(host({ CHIPMUNK_DEMO: 'on' })).toBe('127.0.0.1');
    expect(host({})).toBe('0.0.0.0');
    expect(host({ CHIPMUNK_DEMO: 'on', HOST: '::1' })).toBe('::1');
    expect(() => env({ CHIPMUNK_DEMO: 'on', HOST: '0.0.0.0' })).toThrow(/HOST: the demo .* only listens on this machine/);
    expect(() => env({ CHIPMUNK_DEMO: 'on', HOST: '192.168.1.5' })).toThrow(/HOST/);
  });

  it('serves neither the page nor its API when off', async () => {
    const off = await startChipmunk({ CHIPMUNK_DEMO: 'off' });
    try {
      for (const p of ['/', '/demo/assets/tus.min.js', '/demo/api/config']) expect((await fetch(`${off.url}${p}`)).status).toBe(404);
      const mint = await fetch(`${off.url}/demo/api/upload-tokens`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ userId: 'demo-x', purpose: 'image' }),
      });
      expect(mint.status).toBe(404);
    } finally {
      await off.close();
    }
  });
});

describe('demo API', () => {
  let t: TestChipmunk;
  beforeAll(async () => {
    t = await startChipmunk({ CHIPMUNK_DEMO: 'on' });
  });
  afterAll(() => t?.close());

  const demo = (path: string, init: RequestInit & { json?: unknown } = {}) => {
    const headers = new Headers(init.headers);
    if (init.json !== undefined) headers.set('content-type', 'application/json');
    return fetch(`${t.url}/demo/api${path}`, { ...init, headers, body: init.json !== undefined ? JSON.stringify(init.json) : init.body });
  };

  it('serves the page with a strict content security policy and the vendored scripts', async () => {
    const page = await fetch(`${t.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(await page.text()).toContain('/demo/assets/tus.min.js');
    const tus = await fetch(`${t.url}/demo/assets/tus.min.js`);
    expect(tus.headers.get('content-type')).toMatch(/javascript/);
    expect(await tus.text()).toContain('tus');
    expect((await fetch(`${t.url}/demo/assets/..%2Fpackage.json`)).status).toBe(404);
  });

  it('mints a short-lived token for a demo user that uploads through /uploads', async () => {
    const res = await demo('/upload-tokens', { method: 'POST', json: { userId: 'demo-minter', purpose: 'avatar' } });
    expect(res.status).toBe(201);
    const { token } = (await res.json()) as { token: string };
    const claims = decodeJwt(token);
    expect(claims).toMatchObject({ sub: 'demo-minter', purpose: 'avatar' });
    expect(claims.exp! - Math.floor(Date.now() / 1000)).toBeLessThanOrEqual(15 * 60);
    const photo = await readFile(corpus('images/photos/portrait-canal.jpg'));
    const up = await tusUpload(`${t.url}/uploads`, photo, { token, metadata: { filename: 'me.jpg', filetype: 'image/jpeg' } });
    expect(up.ok).toBe(true);
  });

  it('never acts for users outside demo-…', async () => {
    const mint = await demo('/upload-tokens', { method: 'POST', json: { userId: 'alice', purpose: 'image' } });
    expect(mint.status).toBe(400);
    expect(((await mint.json()) as ErrorJson).error.message).toContain('demo-');
    expect((await demo('/users/alice')).status).toBe(400);
    expect((await demo('/users/alice/quota', { method: 'PUT', json: { quotaBytes: 1 } })).status).toBe(400);
    expect((await demo('/users/alice/files')).status).toBe(400);

    // A real app user's file: invisible and undeletable through the demo.
    const token = await t.uploadToken('alice', 'image');
    const up = await tusUpload(`${t.url}/uploads`, await readFile(corpus('images/photos/portrait-canal.jpg')), { token, metadata: { filename: 'a.jpg' } });
    if (!up.ok) throw up.error;
    const id = (up.body as { id: string }).id;
    expect((await demo(`/files/${id}`)).status).toBe(404);
    expect((await demo(`/files/${id}`, { method: 'DELETE' })).status).toBe(404);
    expect((await t.api(`/v1/files/${id}`)).status).toBe(200);
  });

  it('answers only same-origin requests from this machine', async () => {
    const crossSite = await demo('/config', { headers: { 'sec-fetch-site': 'cross-site' } });
    expect(crossSite.status).toBe(403);
    // Another app on another localhost port is "same-site", and refused all the same.
    expect(
      (await demo('/upload-tokens', { method: 'POST', headers: { 'sec-fetch-site': 'same-site' }, json: { userId: 'demo-x', purpose: 'image' } })).status,
    ).toBe(403);
    // Behind a proxy on this machine, a visitor from elsewhere is refused.
    const proxied = await demo('/config', { headers: { 'x-forwarded-for': '192.168.1.20' } });
    expect(proxied.status).toBe(403);
    expect(((await proxied.json()) as ErrorJson).error.code).toBe('FORBIDDEN');
    expect((await demo('/config', { headers: { 'sec-fetch-site': 'same-origin', 'x-forwarded-for': '127.0.0.1' } })).status).toBe(200);
  });

  it('refuses any forwarding header that names another machine, whichever header a proxy uses', async () => {
    for (const [name, value] of [
      ['x-forwarded-for', '127.0.0.1, 203.0.113.9'],
      ['x-real-ip', '203.0.113.9'],
      ['forwarded', 'for=203.0.113.9;proto=https'],
      ['forwarded', 'for="[2001:db8::1]:4711"'],
      ['forwarded', 'by=127.0.0.1'],
      ['true-client-ip', '203.0.113.9'],
      ['cf-connecting-ip', '203.0.113.9'],
    ] as Array<[string, string]>) {
      const mint = await demo('/upload-tokens', { method: 'POST', headers: { [name]: value }, json: { userId: 'demo-fwd', purpose: 'image' } });
      expect({ name, value, status: mint.status }).toEqual({ name, value, status: 403 });
      expect((await fetch(`${t.url}/`, { headers: { [name]: value } })).status).toBe(403);
    }
    expect((await demo('/config', { headers: { 'x-real-ip': '127.0.0.1', forwarded: 'for=127.0.0.1' } })).status).toBe(200);
  });

  it('refuses a Host that does not name this machine and port (DNS rebinding)', async () => {
    const port = new URL(t.url).port;
    const raw = (host: string, p = '/demo/api/config') => rawGet(t.url, p, host);
    expect(await raw('evil.example:' + port)).toBe(403);
    expect(await raw('evil.example:' + port, '/')).toBe(403);
    expect(await raw('127.0.0.1.nip.io:' + port)).toBe(403);
    expect(await raw(`localhost:${Number(port) + 1}`)).toBe(403);
    expect(await raw(`localhost:${port}`)).toBe(200);
    expect(await raw(`127.0.0.1:${port}`)).toBe(200);
  });

  it('requires Sec-Fetch-Site: same-origin from a browser; a typed-in API URL (none) is refused too', async () => {
    expect((await demo('/config', { headers: { 'sec-fetch-site': 'none' } })).status).toBe(403);
    expect((await demo('/config', { headers: { 'sec-fetch-site': 'same-origin' } })).status).toBe(200);
    // Navigating to the page itself is "none" and fine.
    expect((await fetch(`${t.url}/`, { headers: { 'sec-fetch-site': 'none' } })).status).toBe(200);
  });

  it('/v1 reserves the demo- prefix: the app cannot name, list, upload for or mint tokens for demo users', async () => {
    const refused = [
      await t.api('/v1/users/demo-q'),
      await t.api('/v1/users/demo-q/files'),
      await t.api('/v1/users/demo-q', { method: 'PUT', json: { quotaBytes: 0 } }),
      await t.api('/v1/upload-tokens', { method: 'POST', json: { userId: 'demo-q', purpose: 'image' } }),
      await t.api('/v1/files', { method: 'POST', json: { userId: 'demo-q', purpose: 'image', data: 'AAAA' } }),
    ];
    for (const res of refused) {
      expect(res.status).toBe(400);
      expect(((await res.json()) as ErrorJson).error.message).toMatch(/demo- prefix is reserved/);
    }
  });

  it("sets a demo user's quota and reports usage like /v1", async () => {
    const set = await demo('/users/demo-q/quota', { method: 'PUT', json: { quotaBytes: 5_000_000 } });
    expect(set.status).toBe(200);
    const shown = await (await demo('/users/demo-q')).json();
    // Demo users are not app users: /v1 refuses their names.
    expect((await t.api('/v1/users/demo-q')).status).toBe(400);
    expect(shown).toMatchObject({ quotaBytes: 5_000_000, usedBytes: 0 });
  });
});

/** A GET with a Host header of our choosing (fetch does not let a caller set Host). */
function rawGet(base: string, pathname: string, host: string): Promise<number> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ hostname, port, path: pathname, headers: { host } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}
