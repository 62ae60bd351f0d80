// npm run bench:delivery — requests/s for one 10 KB variant served four ways, in the same run:
//   static:          plain nginx static serving of the same file (the baseline)
//   nginx+auth:      /f/ through nginx, auth_request answered from nginx's auth cache
//   nginx+auth(nc):  /f/ through nginx with the auth cache off (every request asks Chipmunk)
//   Chipmunk alone:  /f/ served by Chipmunk itself
// Chipmunk runs as production runs it: the built server (node dist/src/index.js) in a process of its
// own, on a data folder this script prepared in process. (Run through tsx, as this script is, every
// arrow function in the request path is wrapped by esbuild's keepNames helper, 6–12 % of its CPU.)
//   nginx+auth from S3 against nginx proxying the same object directly (a presigned GET, no auth):
//                    the same 10 KB as an object in a bucket of the test services' RGW
//                    (scripts/services.sh start), through the config rendered for a bucket
// Each as a ratio to static, with p99 latency; the last line is one JSON object.
// Load comes from wrk (Debian: apt-get install wrk), which must be on PATH.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { corpus, startChipmunk } from '../test/helpers/chipmunk.js';
import { startNginx } from '../test/helpers/nginx.js';
import { tusUpload } from '../test/helpers/tus.js';
import { createTestBucket, testServices } from '../test/helpers/services.js';
import { ensureBuilt, freePort, spawnServer } from '../test/helpers/server-process.js';
import type { TestChipmunk } from '../test/helpers/chipmunk.js';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { createS3Client } from '../src/storage/s3.js';
import { mediaKey } from '../src/storage/objects.js';

const DURATION = Number(process.env.BENCH_SECONDS ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);

try {
  execFileSync('wrk', ['--version'], { stdio: 'ignore' });
} catch (err) {
  // wrk --version exits 1 after printing; only a missing binary is fatal.
  if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
    process.stderr.write('bench:delivery needs wrk on PATH (Debian: apt-get install -y wrk).\n');
    process.exit(2);
  }
}

type Run = { rps: number; p99Ms: number; non2xx: number };

async function wrk(url: string, seconds = DURATION): Promise<Run> {
  const { stdout } = await promisify(execFile)('wrk', ['-t', '1', '-c', String(CONNECTIONS), '-d', `${seconds}s`, '--latency', url], { maxBuffer: 1 << 20 });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1]);
  const p99 = /\s99%\s+([\d.]+)(us|ms|s)\b/.exec(stdout);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
  if (!Number.isFinite(rps) || !p99) throw new Error(`could not read wrk output:\n${stdout}`);
  const p99Ms = Number(p99[1]) * (p99[2] === 'us' ? 0.001 : p99[2] === 's' ? 1000 : 1);
  return { rps, p99Ms, non2xx };
}

/**
 * Stops the in-process Chipmunk that prepared `prepared.dataDir` and serves the same data from the
 * built server, on ports of its own; what startNginx needs of it (url, internal port, folder) is returned.
 */
async function asBuilt(prepared: TestChipmunk, env: Record<string, string> = {}) {
  await prepared.stop();
  const internalPort = await freePort();
  const server = await spawnServer({
    PORT: String(await freePort()),
    HOST: '127.0.0.1',
    CHIPMUNK_INTERNAL_PORT: String(internalPort),
    CHIPMUNK_DATA_DIR: prepared.dataDir,
    CHIPMUNK_LOG_LEVEL: 'silent',
    CHIPMUNK_DISK_MARGIN: '0',
    ...(process.getuid?.() === 0 ? { CHIPMUNK_MEDIA_GROUP: 'nogroup' } : {}),
    ...env,
  });
  return {
    ...prepared,
    url: server.url,
    internalPort,
    async close() {
      server.proc.kill('SIGTERM');
      await server.exited;
      await rm(prepared.dataDir, { recursive: true, force: true });
    },
  };
}

ensureBuilt();
const t0 = await startChipmunk({ CHIPMUNK_LOG_LEVEL: 'silent' });
const photo = await readFile(corpus('images/photos/portrait-canal.jpg'));
const up = await tusUpload(`${t0.url}/uploads`, photo, { token: await t0.uploadToken('bench', 'image'), metadata: { filename: 'bench.jpg' } });
if (!up.ok) throw up.error;
const fileId = (up.body as { id: string }).id;
// The 10 KB variant, recorded like any generated variant.
const tenKb = randomBytes(10 * 1024);
const bytes = await t0.chipmunk.storage.write(fileId, 'bench.webp', tenKb);
await t0.chipmunk.uow.ports.files.addVariants(fileId, [{ name: 'bench', path: 'bench.webp', mimeType: 'image/webp', bytes, width: 64, height: 64 }]);
const link = (await (await t0.api(`/v1/files/${fileId}/url?variant=bench&expiresIn=86400`)).json()) as { url: string };
const signedPath = new URL(link.url).pathname + new URL(link.url).search;
const mediaDir = path.join(t0.dataDir, 'media');
const staticPath = `/static/${t0.chipmunk.storage.relativePath(fileId, 'bench.webp')}`;
const t = await asBuilt(t0);
const staticLocation = `        location /static/ {\n            alias ${mediaDir}/;\n        }`;

const cached = await startNginx(t, { authCacheSeconds: 5, extraServerConfig: staticLocation });
const uncached = await startNginx(t, { authCacheSeconds: 0 });

// The same bytes as an object: a Chipmunk on a bucket of its own, nginx rendered for it, and beside
// /f/ a location proxying the object's presigned GET to the same endpoint without asking Chipmunk.
const bucket = await createTestBucket(testServices(), 'bench');
const s3Env = {
  CHIPMUNK_LOG_LEVEL: 'silent',
  CHIPMUNK_S3_BUCKET: bucket.s3.bucket,
  CHIPMUNK_S3_ENDPOINT: bucket.s3.endpoint!,
  CHIPMUNK_S3_REGION: bucket.s3.region,
  CHIPMUNK_S3_ACCESS_KEY_ID: bucket.s3.accessKeyId!,
  CHIPMUNK_S3_SECRET_ACCESS_KEY: bucket.s3.secretAccessKey!,
  CHIPMUNK_S3_FORCE_PATH_STYLE: String(bucket.s3.forcePathStyle),
  CHIPMUNK_S3_CHECKSUMS: bucket.s3.checksums,
};
const onS3Prepared = await startChipmunk(s3Env);
const s3Up = await tusUpload(`${onS3Prepared.url}/uploads`, photo, {
  token: await onS3Prepared.uploadToken('bench', 'image'),
  metadata: { filename: 'bench.jpg' },
});
if (!s3Up.ok) throw s3Up.error;
const s3FileId = (s3Up.body as { id: string }).id;
const s3Bytes = await onS3Prepared.chipmunk.storage.write(s3FileId, 'bench.webp', tenKb);
await onS3Prepared.chipmunk.uow.ports.files.addVariants(s3FileId, [
  { name: 'bench', path: 'bench.webp', mimeType: 'image/webp', bytes: s3Bytes, width: 64, height: 64 },
]);
const s3Link = (await (await onS3Prepared.api(`/v1/files/${s3FileId}/url?variant=bench&expiresIn=86400`)).json()) as { url: string };
const s3Client = createS3Client(bucket.s3);
const presigned = new URL(
  await getSignedUrl(s3Client, new GetObjectCommand({ Bucket: bucket.s3.bucket, Key: mediaKey(s3FileId, 'bench.webp') }), { expiresIn: 86400 }),
);
s3Client.destroy();
const onS3 = await asBuilt(onS3Prepared, s3Env);
const s3DirectLocation = `        location = /s3direct {
            proxy_pass http://chipmunk_objects${presigned.pathname}${presigned.search};
            proxy_http_version 1.1;
            proxy_set_header Host ${presigned.host};
            proxy_set_header Connection "";
            proxy_buffering off;
        }`;
const s3Nginx = await startNginx(onS3, { authCacheSeconds: 5, extraServerConfig: s3DirectLocation, env: s3Env });

// For context only: the same 10 KB from a bare Node http server (Node's own ceiling on this machine),
// in a plain node process of its own like the built server (inside this tsx process it answered about
// half as fast).
const barePort = await freePort();
const bare = spawn(
  process.execPath,
  [
    '-e',
    `const body = Buffer.from(${JSON.stringify(tenKb.toString('base64'))}, 'base64');
     require('node:http').createServer((_req, res) => {
       res.writeHead(200, { 'Content-Type': 'image/webp', 'Content-Length': body.length });
       res.end(body);
     }).listen(${barePort}, '127.0.0.1', () => console.log('listening'));`,
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
await once(bare.stdout!, 'data');

const targets = {
  static: `${cached.url}${staticPath}`,
  nginxAuth: `${cached.url}${signedPath}`,
  nginxAuthUncached: `${uncached.url}${signedPath}`,
  app: `${t.url}${signedPath}`,
  s3Direct: `${s3Nginx.url}/s3direct`,
  nginxS3: `${s3Nginx.url}${new URL(s3Link.url).pathname}${new URL(s3Link.url).search}`,
  bareNode: `http://127.0.0.1:${barePort}/`,
};
for (const [name, url] of Object.entries(targets)) {
  const res = await fetch(url);
  const body = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200 || !body.equals(tenKb)) throw new Error(`${name}: ${res.status}, ${body.length} bytes`);
}

// Each round measures every target once, back to back; each ratio is taken within its round (the
// machine's pace drifts between rounds), and the medians over the rounds are reported.
const rounds: Array<Record<keyof typeof targets, Run>> = [];
try {
  for (const url of Object.values(targets)) await wrk(url, 1); // warm-up
  for (let round = 0; round < ROUNDS; round++) {
    const runs = {} as Record<keyof typeof targets, Run>;
    for (const [name, url] of Object.entries(targets) as Array<[keyof typeof targets, string]>) {
      const run = await wrk(url);
      if (run.non2xx) throw new Error(`${name}: ${run.non2xx} non-2xx responses`);
      runs[name] = run;
    }
    rounds.push(runs);
  }
} finally {
  await cached.close();
  await uncached.close();
  await t.close();
  await s3Nginx.close();
  await onS3.close();
  await bucket.drop();
  bare.kill();
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rps = (name: keyof typeof targets) => median(rounds.map((r) => r[name].rps));
const ratio = (name: keyof typeof targets) => Math.round(median(rounds.map((r) => r[name].rps / r.static.rps)) * 100) / 100;
const p99 = (name: keyof typeof targets) => median(rounds.map((r) => r[name].p99Ms));
const line = (label: string, name: keyof typeof targets) =>
  `${label.padEnd(34)} ${rps(name).toFixed(0).padStart(8)} req/s  ${ratio(name).toFixed(2)}× static  p99 ${p99(name).toFixed(2)} ms`;
console.log(`10 KB variant, wrk -t1 -c${CONNECTIONS} -d${DURATION}s, ${ROUNDS} interleaved rounds; medians (ratios taken within each round)`);
console.log(line('nginx static (baseline)', 'static'));
console.log(line('nginx + auth_request (cached)', 'nginxAuth'));
console.log(line('nginx + auth_request (uncached)', 'nginxAuthUncached'));
console.log(line('Chipmunk alone', 'app'));
console.log(line('(context) bare Node http, same bytes', 'bareNode'));
console.log(line('nginx proxying the S3 object directly', 's3Direct'));
console.log(line('nginx + auth_request, bytes from S3', 'nginxS3'));
const s3Ratio = Math.round(median(rounds.map((r) => r.nginxS3.rps / r.s3Direct.rps)) * 100) / 100;
console.log(`nginx from S3 over nginx proxying S3 directly: ${s3Ratio.toFixed(2)}× (target ≥ 0.8)`);
console.log(
  JSON.stringify({
    nginxAuthOverStatic: ratio('nginxAuth'),
    nginxAuthUncachedOverStatic: ratio('nginxAuthUncached'),
    appOverStatic: ratio('app'),
    appOverBareNode: Math.round(median(rounds.map((r) => r.app.rps / r.bareNode.rps)) * 100) / 100,
    nginxS3OverS3Direct: s3Ratio,
    p99Ms: Math.round(p99('nginxAuth') * 100) / 100,
  }),
);
