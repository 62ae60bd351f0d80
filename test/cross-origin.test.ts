import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { build } from 'esbuild';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, type TestBrowser } from './helpers/browser.js';
import { backends } from './helpers/backends.js';
import { corpus, type TestChipmunk } from './helpers/chipmunk.js';
import { startNginx, type TestNginx } from './helpers/nginx.js';

// The usual web setup, in a real Chromium: an app's page on one origin (here http://localhost:<a>)
// uploading with Uppy (@uppy/core + @uppy/tus + @uppy/dashboard, bundled from node_modules, nothing
// from a CDN) to Chipmunk on another (http://127.0.0.1:<b>, alone or behind its nginx), then reading
// what it made through fetch(), a crossOrigin canvas and the waveform's JSON, and showing
// Chipmunk's own sentence when an upload is refused. On the distributed backend the tus answers come
// from the S3 store and the bytes from the bucket (nginx fetching them itself), with the same CORS.

type Variant = { n: number | string; url: string; mimeType: string; bytes: number; width?: number; height?: number };
type FileJson = { id: string; status: string; kind: string; variants: Variant[] };

const require = createRequire(import.meta.url);
const root = path.resolve(import.meta.dirname, '..');

/** The app's page: Uppy's Dashboard, and the one handler an app needs to show Chipmunk's error. */
const pageHtml = `<!doctype html>
<html><head><meta charset="utf-8"><title>An app on another origin</title>
<link rel="stylesheet" href="/uppy.css"></head>
<body>
<div id="dashboard"></div>
<p id="refusal" role="alert"></p>
<script src="/uppy.js"></script>
<script>
  const params = new URLSearchParams(location.search);
  const { Uppy, Tus, Dashboard } = window.UppyKit;
  // Chipmunk answers every refusal with { "error": { "code", "message" } }: show its sentence.
  function chipmunkMessage(error, response) {
    const body = error?.originalResponse?.getBody?.() ?? response?.body?.xhr?.responseText;
    try {
      return JSON.parse(body).error.message;
    } catch {
      return error?.message ?? String(error);
    }
  }
  const uppy = new Uppy({ autoProceed: false, restrictions: { maxNumberOfFiles: 1 } })
    .use(Dashboard, { inline: true, target: '#dashboard', proudlyDisplayPoweredByUppy: false })
    .use(Tus, {
      endpoint: params.get('endpoint'),
      headers: { Authorization: 'Bearer ' + params.get('token') },
      retryDelays: [],
      // A refusal (4xx) will not change on retry: stop, and let the error below be seen.
      onShouldRetry: (err, retryAttempt, options, next) => (err?.originalResponse?.getStatus() ?? 0) < 500 && err?.originalResponse ? false : next(err),
    });
  uppy.on('upload-success', (file, response) => {
    window.uploaded = { uploadURL: response.uploadURL, body: response.body.xhr.responseText };
  });
  uppy.on('upload-error', (file, error, response) => {
    const message = chipmunkMessage(error, response);
    uppy.info(message, 'error', 60000);
    document.getElementById('refusal').textContent = message;
  });
  window.uppy = uppy;
  document.body.dataset.ready = 'true';
</script>
</body></html>`;

let browser: TestBrowser;
let appServer: Server;
let appOrigin: string;

beforeAll(async () => {
  const bundle = await build({
    stdin: {
      contents:
        "import Uppy from '@uppy/core'; import Tus from '@uppy/tus'; import Dashboard from '@uppy/dashboard'; window.UppyKit = { Uppy, Tus, Dashboard };",
      resolveDir: root,
      loader: 'js',
    },
    bundle: true,
    format: 'iife',
    platform: 'browser',
    write: false,
    logLevel: 'error',
  });
  const css = (await Promise.all(['@uppy/core/css/style.min.css', '@uppy/dashboard/css/style.min.css'].map((f) => readFile(require.resolve(f), 'utf8')))).join(
    '\n',
  );
  const assets: Record<string, [string, string | Uint8Array]> = {
    '/': ['text/html; charset=utf-8', pageHtml],
    '/uppy.js': ['text/javascript; charset=utf-8', bundle.outputFiles[0]!.contents],
    '/uppy.css': ['text/css; charset=utf-8', css],
  };
  appServer = createServer((req, res) => {
    const asset = assets[new URL(req.url ?? '/', 'http://x').pathname];
    if (!asset) return void res.writeHead(404).end();
    res.writeHead(200, { 'Content-Type': asset[0] }).end(asset[1]);
  });
  await new Promise<void>((resolve) => appServer.listen(0, '127.0.0.1', resolve));
  const address = appServer.address();
  // "localhost" vs Chipmunk's "127.0.0.1", and another port: a different origin on two counts.
  appOrigin = `http://localhost:${typeof address === 'object' && address ? address.port : 0}`;
  browser = await launchChromium();
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await new Promise<void>((resolve) => (appServer ? appServer.close(() => resolve()) : resolve()));
});

async function openApp(base: string, token: string): Promise<Page> {
  const page = await browser.context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(err.message));
  (page as Page & { problems?: string[] }).problems = problems;
  await page.goto(`${appOrigin}/?endpoint=${encodeURIComponent(`${base}/uploads`)}&token=${encodeURIComponent(token)}`);
  await page.waitForSelector('body[data-ready="true"]');
  return page;
}

/** Picks a file in the Dashboard and presses its upload button, as a user does. */
async function uploadThroughDashboard(page: Page, file: string, mimeType: string): Promise<void> {
  await page.setInputFiles('.uppy-Dashboard-input', { name: path.basename(file), mimeType, buffer: await readFile(file) });
  await page.click('.uppy-StatusBar-actionBtn--upload');
}

async function waitForFile(chipmunk: TestChipmunk, id: string, status: string): Promise<FileJson> {
  let json: FileJson | undefined;
  await expect
    .poll(
      async () => {
        json = (await (await chipmunk.api(`/v1/files/${id}`)).json()) as FileJson;
        return json.status;
      },
      { timeout: 90_000, interval: 250 },
    )
    .toBe(status);
  return json!;
}

describe.each(backends)('$name', (backend) => {
  let chipmunk: TestChipmunk;
  let nginx: TestNginx;

  beforeAll(async () => {
    chipmunk = await backend.start();
    nginx = await startNginx(chipmunk);
  }, 60_000);
  afterAll(async () => {
    await nginx?.close();
    await chipmunk?.close();
  });

  const modes: Array<[string, () => string]> = [
    ['Chipmunk alone', () => chipmunk.url],
    ['Chipmunk behind its nginx', () => nginx.url],
  ];

  describe.each(modes)('an app on another origin, with Uppy, against %s', (_name, base) => {
    it('uploads a photo, then reads a variant through fetch() and draws it on a crossOrigin canvas', async () => {
      const token = await chipmunk.uploadToken('uppy-photo', 'image');
      const page = await openApp(base(), token);
      await uploadThroughDashboard(page, corpus('images/photos/portrait-canal.jpg'), 'image/jpeg');
      await page.waitForFunction(() => (window as unknown as { uploaded?: unknown }).uploaded, undefined, { timeout: 60_000 });
      const uploaded = (await page.evaluate(() => (window as unknown as { uploaded: { uploadURL: string } }).uploaded)) as { uploadURL: string };
      expect(new URL(uploaded.uploadURL).origin).toBe(new URL(base()).origin);
      const file = await waitForFile(chipmunk, uploaded.uploadURL.split('/').pop()!, 'ready');
      // The file JSON was read straight from Chipmunk (the backend's view): the same link, asked of base().
      const found = file.variants.find((v) => v.n === 4)!;
      const rung = { ...found, url: new URL(new URL(found.url).pathname + new URL(found.url).search, base()).href };

      const read = await page.evaluate(async (url) => {
        const res = await fetch(url);
        const bytes = (await res.arrayBuffer()).byteLength;
        return {
          status: res.status,
          bytes,
          length: res.headers.get('content-length'),
          etag: res.headers.get('etag'),
          ranges: res.headers.get('accept-ranges'),
        };
      }, rung.url);
      expect(read).toMatchObject({ status: 200, bytes: rung.bytes, length: String(rung.bytes), ranges: 'bytes' });
      expect(read.etag).toMatch(/^"/);

      const ranged = await page.evaluate(async (url) => {
        const res = await fetch(url, { headers: { Range: 'bytes=0-99' } });
        return { status: res.status, range: res.headers.get('content-range'), bytes: (await res.arrayBuffer()).byteLength };
      }, rung.url);
      expect(ranged).toEqual({ status: 206, range: `bytes 0-99/${rung.bytes}`, bytes: 100 });

      // getImageData throws on a tainted canvas: it only returns pixels if CORS let the image in.
      const drawn = await page.evaluate(
        (url) =>
          new Promise<{ width: number; height: number; opaque: number } | string>((resolve) => {
            const img = new Image();
            img.crossOrigin = 'anonymous';
            img.onload = () => {
              const canvas = document.createElement('canvas');
              canvas.width = img.naturalWidth;
              canvas.height = img.naturalHeight;
              const ctx = canvas.getContext('2d')!;
              ctx.drawImage(img, 0, 0);
              try {
                const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
                let opaque = 0;
                for (let i = 3; i < data.length; i += 4) if (data[i] === 255) opaque++;
                resolve({ width: canvas.width, height: canvas.height, opaque });
              } catch (err) {
                resolve(`tainted: ${(err as Error).message}`);
              }
            };
            img.onerror = () => resolve('the crossOrigin image did not load');
            img.src = url;
          }),
        rung.url,
      );
      expect(drawn).toEqual({ width: rung.width, height: rung.height, opaque: rung.width! * rung.height! });
      expect((page as Page & { problems?: string[] }).problems).toEqual([]);
      await page.close();
    }, 120_000);

    it('shows Chipmunk\'s own sentence when the upload is refused, not just "Failed to upload"', async () => {
      const userId = `uppy-full-${base() === chipmunk.url ? 'a' : 'n'}`;
      await chipmunk.api(`/v1/users/${userId}`, { method: 'PUT', json: { quotaBytes: 100_000 } });
      const token = await chipmunk.uploadToken(userId, 'image');
      const page = await openApp(base(), token);
      await uploadThroughDashboard(page, corpus('images/photos/portrait-canal.jpg'), 'image/jpeg');
      await expect.poll(() => page.textContent('#refusal'), { timeout: 30_000 }).toMatch(/^Storage quota exceeded: .* free, this upload needs .*\.$/);
      // Uppy's own informer shows the same sentence.
      await expect.poll(() => page.textContent('.uppy-Informer'), { timeout: 10_000 }).toMatch(/Storage quota exceeded/);
      await page.close();
    }, 60_000);
  });

  // The song's distributed twin runs behind nginx only: what the bucket changes for it (tus through the
  // S3 store, JSON fetched from the bucket with CORS) is the photo's too, and ffmpeg makes it the slowest.
  describe.each(backend.name === 'embedded' ? modes : modes.slice(1))('an app on another origin, with Uppy, against %s', (_name, base) => {
    it('uploads a song typed application/octet-stream, then fetches and reads its waveform', async () => {
      const token = await chipmunk.uploadToken('uppy-music', 'audio');
      const page = await openApp(base(), token);
      // What a browser says for a file it cannot type.
      await uploadThroughDashboard(page, corpus('audio/ok/flac-vorbis-picture.flac'), 'application/octet-stream');
      await page.waitForFunction(() => (window as unknown as { uploaded?: unknown }).uploaded, undefined, { timeout: 60_000 });
      const uploaded = (await page.evaluate(() => (window as unknown as { uploaded: { uploadURL: string } }).uploaded)) as { uploadURL: string };
      const file = await waitForFile(chipmunk, uploaded.uploadURL.split('/').pop()!, 'ready');
      expect(file.kind).toBe('audio');
      const found = file.variants.find((v) => v.n === 'waveform')!;
      const waveform = { url: new URL(new URL(found.url).pathname + new URL(found.url).search, base()).href };
      const peaks = await page.evaluate(async (url) => {
        const res = await fetch(url);
        const json = (await res.json()) as { version: number; length: number; data: number[] };
        return { status: res.status, type: res.headers.get('content-type'), length: json.length, points: json.data.length };
      }, waveform.url);
      expect(peaks.status).toBe(200);
      expect(peaks.type).toMatch(/^application\/json/);
      expect(peaks.points).toBeGreaterThan(10);
      await page.close();
    }, 150_000);
  });
});
