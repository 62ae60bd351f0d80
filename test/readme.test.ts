import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { corpus, startChipmunk, type TestChipmunk } from './helpers/chipmunk.js';

// Runs the README's integration snippet, as a reader would, against a listening server: plain
// Node, importing the kit by its package name (`chipmunk/client`, resolved through package.json
// "exports" to the build) and tus-js-client.

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '..');

let t: TestChipmunk;

/** The build the package exports; rebuilt when any source file is newer (npm test builds first anyway). */
async function ensureBuilt() {
  const built = await stat(path.join(root, 'dist/src/client/index.js')).catch(() => undefined);
  const sources = await readdir(path.join(root, 'src'), { recursive: true, withFileTypes: true });
  let newest = 0;
  for (const f of sources) if (f.isFile() && f.name.endsWith('.ts')) newest = Math.max(newest, (await stat(path.join(f.parentPath, f.name))).mtimeMs);
  if (!built || built.mtimeMs < newest) await run(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: root });
}

beforeAll(async () => {
  await ensureBuilt();
  t = await startChipmunk();
}, 180_000);
afterAll(() => t?.close());

it('runs the README integration snippet against a listening server', async () => {
  const readme = await readFile(path.join(root, 'README.md'), 'utf8');
  const snippet = /<!-- readme-test: integration -->\s*```js\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(snippet).toBeDefined();
  // Inside the package, so `chipmunk/client` resolves the way it does for an app that installed it.
  const script = path.join(root, `.readme-integration-${process.pid}.mjs`);
  await writeFile(script, snippet!);
  let stdout: string;
  try {
    ({ stdout } = await run(process.execPath, [script, corpus('images/photos/portrait-canal.jpg')], {
      cwd: root,
      env: { ...process.env, CHIPMUNK_URL: t.url, CHIPMUNK_API_KEY: t.apiKey, CHIPMUNK_SECRET: t.secret },
    }));
  } finally {
    await rm(script, { force: true });
  }
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
  const signed = `${url.pathname}?exp=${exp}`;
  expect(url.pathname).toMatch(/^\/f\/[0-9a-z]{32}\/0$/);
  expect(url.searchParams.get('sig')).toBe(createHmac('sha256', t.secret).update(signed).digest('base64url'));
});
