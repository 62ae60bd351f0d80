// The Docker check's client half (run.sh starts the stack): drives Chipmunk through the published
// nginx port from this machine, as an app and its users would.
//   node e2e.mjs upload <base url> <secrets.json> <state.json>   upload, wait for the variants, fetch one
//   node e2e.mjs verify <base url> <secrets.json> <state.json>   after down/up: same file, same bytes
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import sharp from 'sharp';
import { Upload } from 'tus-js-client';

const [mode, base, secretsFile, stateFile] = process.argv.slice(2);
const { apiKey } = JSON.parse(await readFile(secretsFile, 'utf8'));

function check(ok, message) {
  if (!ok) throw new Error(message);
}

async function api(path, init = {}) {
  const res = await fetch(base + path, { ...init, headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json', ...init.headers } });
  const body = await res.text();
  check(res.ok, `${init.method ?? 'GET'} ${path} answered ${res.status}: ${body}`);
  return JSON.parse(body);
}

async function checkHealth() {
  const health = await fetch(`${base}/health`);
  const body = await health.json();
  check(health.status === 200 && body.status === 'ok', `/health through nginx: ${health.status} ${JSON.stringify(body)}`);
  // Operator endpoints stay off the public listener (the container's healthcheck asks Chipmunk itself).
  const ready = await fetch(`${base}/ready`);
  check(ready.status === 404, `/ready through nginx should be 404, got ${ready.status} ${await ready.text()}`);
  console.log('docker-e2e: /health answers 200 through nginx, /ready is not public');
}

/** A photo-sized JPEG with detail (noise), so the ladder has several rungs to make. */
function photo() {
  return sharp({ create: { width: 1600, height: 1200, channels: 3, background: '#6a8', noise: { type: 'gaussian', mean: 120, sigma: 40 } } })
    .jpeg({ quality: 85 })
    .toBuffer();
}

function tusUpload(bytes, token) {
  return new Promise((resolve, reject) => {
    const upload = new Upload(bytes, {
      endpoint: `${base}/uploads`,
      headers: { Authorization: `Bearer ${token}` },
      metadata: { filename: 'docker-e2e.jpg', filetype: 'image/jpeg' },
      chunkSize: 256 * 1024, // several PATCH requests through nginx, not one
      retryDelays: [],
      onSuccess: ({ lastResponse }) => resolve(JSON.parse(lastResponse.getBody())),
      onError: reject,
    });
    upload.start();
  });
}

async function readyFile(id) {
  for (let i = 0; i < 240; i++) {
    const file = await api(`/v1/files/${id}`);
    if (file.status === 'ready') return file;
    check(file.status !== 'failed', `processing failed: ${JSON.stringify(file)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`file ${id} not ready after 60 s`);
}

/** Fetches a variant through nginx and checks it is the WebP the file JSON describes. */
async function fetchVariant(variant) {
  const res = await fetch(variant.url);
  const bytes = Buffer.from(await res.arrayBuffer());
  check(res.status === 200, `variant ${variant.n} through nginx: ${res.status} ${bytes.toString().slice(0, 200)}`);
  check(res.headers.get('content-type') === variant.mimeType, `variant content-type ${res.headers.get('content-type')}, expected ${variant.mimeType}`);
  check(bytes.length === variant.bytes, `variant is ${bytes.length} bytes, the file JSON says ${variant.bytes}`);
  check(bytes.subarray(0, 4).toString() === 'RIFF' && bytes.subarray(8, 12).toString() === 'WEBP', 'the variant is not a WebP');
  const meta = await sharp(bytes).metadata();
  check(
    meta.width === variant.width && meta.height === variant.height,
    `variant decodes as ${meta.width}×${meta.height}, the JSON says ${variant.width}×${variant.height}`,
  );
  return createHash('sha256').update(bytes).digest('hex');
}

/** The same link with its signature altered: nginx must refuse it with Chipmunk's JSON error. */
async function checkTamperedRefused(url) {
  const u = new URL(url);
  const sig = u.searchParams.get('sig');
  check(sig, `the private file's link is not signed: ${url}`);
  u.searchParams.set('sig', (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1));
  const res = await fetch(u);
  const body = await res.json().catch(() => undefined);
  check(res.status === 403 && typeof body?.error?.code === 'string', `a tampered link answered ${res.status} ${JSON.stringify(body)}`);
}

function pickVariant(file) {
  // The largest ladder rung: real image bytes, not the placeholder.
  const variant = file.variants.filter((v) => v.n !== 0 && v.mimeType === 'image/webp').sort((a, b) => b.width - a.width)[0];
  check(variant, `no WebP variant in ${JSON.stringify(file.variants)}`);
  check(new URL(variant.url).origin === base, `variant URL ${variant.url} is not on ${base}`);
  return variant;
}

if (mode === 'upload') {
  await checkHealth();
  const { token } = await api('/v1/upload-tokens', { method: 'POST', body: JSON.stringify({ userId: 'docker-e2e', purpose: 'image' }) });
  const bytes = await photo();
  const uploaded = await tusUpload(bytes, token);
  check(typeof uploaded.id === 'string', `the tus upload's last answer is not the file JSON: ${JSON.stringify(uploaded)}`);
  const file = await readyFile(uploaded.id);
  check(file.bytes === bytes.length, `stored ${file.bytes} bytes of ${bytes.length}`);
  const variant = pickVariant(file);
  const sha256 = await fetchVariant(variant);
  await checkTamperedRefused(variant.url);
  await writeFile(stateFile, JSON.stringify({ id: file.id, n: variant.n, sha256 }));
  console.log(
    `docker-e2e: uploaded ${bytes.length} bytes with tus-js-client through nginx; ${file.variants.length} variants; variant ${variant.n} (${variant.width}×${variant.height} WebP) served by nginx; a tampered link refused`,
  );
} else if (mode === 'verify') {
  await checkHealth();
  const state = JSON.parse(await readFile(stateFile, 'utf8'));
  const file = await api(`/v1/files/${state.id}`); // the API key from before still works: secrets kept
  check(file.status === 'ready', `after down/up the file is ${file.status}`);
  const variant = file.variants.find((v) => v.n === state.n);
  check(variant, `after down/up variant ${state.n} is gone: ${JSON.stringify(file.variants)}`);
  const sha256 = await fetchVariant(variant);
  check(sha256 === state.sha256, 'after down/up the variant has other bytes');
  const usage = await api('/v1/users/docker-e2e');
  check(usage.usedBytes === file.totalBytes, `after down/up usage is ${usage.usedBytes}, the file counts ${file.totalBytes}`);
  console.log(`docker-e2e: after down/up the file, its variant's bytes, the usage and the secrets are all still there`);
} else {
  throw new Error(`unknown mode ${mode}`);
}
