import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { coarseExpiry as kitCoarseExpiry } from '../src/client/index.js';
import { coarseExpiry } from '../src/delivery/signing.js';
import { corpus, startChipmunk, type TestChipmunk } from './helpers/chipmunk.js';

// Installs the kit the way a backend does — `npm pack` of packages/client, then `npm install` of
// that tarball into a scratch project that has nothing else of Chipmunk — and runs the README's
// integration snippet there, as a reader would, against a listening server. Offline: the kit's one
// dependency (jose) is packed from the installed copy, and tus-js-client (the snippet's stand-in
// for the browser) is linked from this repository's node_modules.

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '..');
const npm = (args: string[], cwd: string) =>
  run('npm', [...args, '--offline', '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd,
    env: { ...process.env, npm_config_update_notifier: 'false' },
    maxBuffer: 16 * 1024 * 1024,
  });

let t: TestChipmunk;
let scratch: string;

beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'chipmunk-kit-'));
  const tarballs = path.join(scratch, 'tarballs');
  await mkdir(tarballs);
  const packed = async (dir: string) => {
    const { stdout } = await npm(['pack', '--pack-destination', tarballs, dir], root);
    return path.join(tarballs, stdout.trim().split('\n').at(-1)!);
  };
  // `npm pack` runs the kit's prepack (its build).
  const kit = await packed(path.join(root, 'packages/client'));
  const jose = await packed(path.join(root, 'node_modules/jose'));
  const app = path.join(scratch, 'app');
  await mkdir(app);
  await writeFile(path.join(app, 'package.json'), JSON.stringify({ name: 'scratch-backend', private: true, type: 'module' }));
  await npm(['install', kit, jose], app);
  await symlink(path.join(root, 'node_modules/tus-js-client'), path.join(app, 'node_modules/tus-js-client'), 'dir');
  t = await startChipmunk();
}, 240_000);
afterAll(async () => {
  await t?.close();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

it('installs the packed kit into a scratch project and runs the README integration snippet there', async () => {
  const readme = await readFile(path.join(root, 'README.md'), 'utf8');
  // The install line the README gives is the package that was packed.
  const kitName = JSON.parse(await readFile(path.join(root, 'packages/client/package.json'), 'utf8')).name as string;
  expect(readme).toContain(`npm install ${kitName}`);
  const snippet = /<!-- readme-test: integration -->\s*```js\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(snippet).toBeDefined();
  expect(snippet).toContain(`from '${kitName}'`);
  const app = path.join(scratch, 'app');
  const installed = JSON.parse(await readFile(path.join(app, 'node_modules', kitName, 'package.json'), 'utf8')) as { name: string };
  expect(installed.name).toBe(kitName);
  const script = path.join(app, 'integration.mjs');
  await writeFile(script, snippet!);
  const { stdout } = await run(process.execPath, [script, corpus('images/photos/portrait-canal.jpg')], {
    cwd: app,
    env: { ...process.env, CHIPMUNK_URL: t.url, CHIPMUNK_API_KEY: t.apiKey, CHIPMUNK_SECRET: t.secret },
  });
  const out = JSON.parse(stdout.trim().split('\n').at(-1)!) as { file: string; status: string; url: string; avatar: string; usedBytes: number };
  const file = (await (await t.api(`/v1/files/${out.file}`)).json()) as { userId: string; purpose: string; totalBytes: number };
  const avatar = (await (await t.api(`/v1/files/${out.avatar}`)).json()) as { userId: string; purpose: string; totalBytes: number };
  expect(file).toMatchObject({ userId: 'alice', purpose: 'image' });
  expect(avatar).toMatchObject({ userId: 'alice', purpose: 'avatar' });
  expect(out.status).toBe('ready');
  expect(out.usedBytes).toBe(file.totalBytes + avatar.totalBytes);
  // The signed URL follows the delivery scheme: HMAC-SHA256 over "/f/<token>/<n>?exp=<seconds>".
  const url = new URL(out.url);
  expect(url.origin).toBe(t.url);
  const exp = Number(url.searchParams.get('exp'));
  expect(exp).toBeGreaterThan(Date.now() / 1000 + 3000);
  // Coarse, like the server's own links: on a 5-minute boundary for an hour's link.
  expect(exp % 300).toBe(0);
  const signed = `${url.pathname}?exp=${exp}`;
  expect(url.pathname).toMatch(/^\/f\/[0-9a-z]{32}\/0$/);
  expect(url.searchParams.get('sig')).toBe(createHmac('sha256', t.secret).update(signed).digest('base64url'));
  const res = await fetch(out.url);
  expect(res.status).toBe(200);
});

it("the kit's signUrl rounds expiry exactly as the server's links do", () => {
  const now = Date.UTC(2026, 0, 1, 12, 7, 13, 500);
  for (const expiresIn of [1, 59, 60, 300, 599, 600, 601, 3599, 3600, 3601, 7200, 86_399, 86_400, 604_800]) {
    for (const offset of [0, 999, 61_000, 299_000, 3_599_000]) {
      expect(kitCoarseExpiry(now + offset, expiresIn)).toBe(coarseExpiry(now + offset, expiresIn));
    }
  }
});
