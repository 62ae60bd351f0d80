import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { createChipmunk } from 'chipmunk/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends } from './helpers/backends.js';
import { createDistributedEnvironment } from './helpers/services.js';
import { wavHeader } from './helpers/wav.js';
import { expectReservationAfterCommit } from './helpers/reservations.js';

// A 200 MB multipart upload must stream to disk: the server's resident memory may not grow with it.
// The server runs in its own process so its RSS is measured alone (from /proc, sampled while the
// upload runs). Holding the upload would add ≥ 200 MB; streaming adds a few stream buffers plus
// whatever the garbage collector has not yet returned. 80 MB is far below the upload's size and
// leaves room for that noise. On the distributed backend the bytes then stream on to the bucket
// (received area, then the file's objects) and the ledger is PostgreSQL's: the same bound holds.

const UPLOAD_BYTES = 200_000_000;
const MAX_GROWTH = 80 * 1024 * 1024;
/**
 * What writing to the bucket holds on top, by design and whatever the file's size: the SDK's multipart
 * writer (src/storage/s3.ts) keeps two 8 MiB parts in flight and assembles a third (measured: about
 * 30 MiB more than embedded). The 200 MB upload's bound stays far below what holding it would add.
 */
const S3_WRITER_BYTES = 3 * 8 * 1024 * 1024;

const rssOf = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

/** The RSS of process `pid` before `work` and its peak while it runs, sampled every `everyMs`. */
async function rssDuring(pid: number, everyMs: number, work: () => Promise<void>): Promise<{ before: number; peak: number }> {
  const before = rssOf(pid);
  let peak = before;
  const sampler = setInterval(() => {
    peak = Math.max(peak, rssOf(pid));
  }, everyMs);
  try {
    await work();
  } finally {
    clearInterval(sampler);
  }
  return { before, peak: Math.max(peak, rssOf(pid)) };
}

/** A valid PCM WAV (16-bit stereo, 44.1 kHz) of `dataBytes` bytes of a tone, made as it streams. */
async function* wav(dataBytes: number) {
  const header = wavHeader(dataBytes);
  yield header;
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < chunk.length / 4; i++) {
    const sample = Math.round(Math.sin((i * 2 * Math.PI * 441) / 44_100) * 12_000);
    chunk.writeInt16LE(sample, i * 4);
    chunk.writeInt16LE(sample, i * 4 + 2);
  }
  for (let left = dataBytes; left > 0; left -= chunk.length) yield left >= chunk.length ? chunk : chunk.subarray(0, left);
}

/** The last `n` bytes a stream of chunks yields (n no larger than its last chunk). */
async function lastBytes(chunks: AsyncIterable<Buffer>, n: number): Promise<Buffer> {
  let last: Buffer = Buffer.alloc(0);
  for await (const chunk of chunks) last = chunk;
  return Buffer.from(last.subarray(last.length - n));
}

describe.each(backends)('$name', (backend) => {
  let child: ChildProcess;
  let server: { url: string; apiKey: string; secret: string; dataDir: string };
  /** The database and bucket of the distributed server; undefined when embedded. */
  let distributed: Awaited<ReturnType<typeof createDistributedEnvironment>> | undefined;

  beforeAll(async () => {
    distributed = backend.name === 'distributed' ? await createDistributedEnvironment('ingest_memory') : undefined;
    // Stopped with the big track's renditions still running: waiting out the default 15 s shutdown
    // deadline for them would test nothing here.
    const env = { ...distributed?.env, CHIPMUNK_SHUTDOWN_TIMEOUT: '1' };
    child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'helpers/child-chipmunk.ts'), JSON.stringify(env)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const firstLine = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once('line', resolve);
      child.once('exit', (code) => reject(new Error(`server exited early (${code})`)));
    });
    server = JSON.parse(firstLine);
  });
  const maxGrowth = backend.name === 'distributed' ? MAX_GROWTH + S3_WRITER_BYTES : MAX_GROWTH;
  afterAll(async () => {
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    }
    await distributed?.drop();
  });

  it('keeps the server RSS flat during a 200 MB multipart upload', async () => {
    const kit = createChipmunk({ baseUrl: server.url, apiKey: server.apiKey });
    // Warm up the code paths once, so the measurement sees the upload and not module loading.
    await kit.uploadStream({ userId: 'warm', purpose: 'audio', filename: 'warm.wav', stream: wav(4_000_000), size: 4_000_044 });
    let fileId = '';
    const { before, peak } = await rssDuring(child.pid!, 20, async () => {
      const file = await kit.uploadStream({
        userId: 'big',
        purpose: 'audio',
        filename: 'tone.wav',
        stream: wav(UPLOAD_BYTES - 44),
        size: UPLOAD_BYTES,
        mimeType: 'audio/wav',
      });
      expect(file).toMatchObject({ bytes: UPLOAD_BYTES, kind: 'audio', mimeType: 'audio/wav' });
      fileId = file.id;
    });
    const growth = peak - before;
    console.log(
      `server RSS before ${(before / 2 ** 20).toFixed(1)} MiB, peak ${(peak / 2 ** 20).toFixed(1)} MiB, growth ${(growth / 2 ** 20).toFixed(1)} MiB for a ${UPLOAD_BYTES / 1e6} MB upload`,
    );
    expect(growth).toBeLessThan(maxGrowth);
    await expectReservationAfterCommit({ file: () => kit.getFile(fileId), reservedBytes: async () => (await kit.getUser('big')).reservedBytes });
    expect((await kit.getUser('big')).usedBytes).toBeGreaterThanOrEqual(UPLOAD_BYTES);
    // The whole body landed where the server keeps originals (the media folder or the bucket): its
    // last bytes come back through the server's own delivery.
    const original = (await kit.getFile(fileId)).variants.find((v) => v.n === 0)!;
    const tail = await fetch(new URL(original.url, server.url), { headers: { range: 'bytes=-16' } });
    expect(tail.status).toBe(206);
    expect(tail.headers.get('content-range')).toBe(`bytes ${UPLOAD_BYTES - 16}-${UPLOAD_BYTES - 1}/${UPLOAD_BYTES}`);
    expect(Buffer.from(await tail.arrayBuffer())).toEqual(await lastBytes(wav(UPLOAD_BYTES - 44), 16));
  });

  it('streams a base64 upload: the server RSS stays flat, far below the file', async () => {
    const kit = createChipmunk({ baseUrl: server.url, apiKey: server.apiKey });
    const size = 30_000_000;
    const chunks: Buffer[] = [];
    for await (const chunk of wav(size - 44)) chunks.push(Buffer.from(chunk));
    const data = Buffer.concat(chunks).toString('base64');
    chunks.length = 0;
    const { before, peak } = await rssDuring(child.pid!, 10, async () => {
      const file = await kit.uploadBase64({ userId: 'b64', purpose: 'audio', filename: 'tone.wav', data });
      expect(file).toMatchObject({ bytes: size, mimeType: 'audio/wav' });
    });
    const growth = peak - before;
    console.log(`base64: server RSS growth ${(growth / 2 ** 20).toFixed(1)} MiB for a ${size / 1e6} MB file (${(data.length / 1e6).toFixed(0)} MB of base64)`);
    // Decoded as it streams (src/uploads/json-base64.ts): a socket chunk, its decoded bytes and the
    // write queue at a time. Reading it whole would hold the body, its text and the decoded bytes:
    // about 4 times the file (120 MB here).
    expect(growth).toBeLessThan(MAX_GROWTH);
  });

  it('refuses six concurrent 100 MB JSON bodies for a user without quota before reading them; RSS stays under 300 MB', async () => {
    const api = (p: string, body: unknown, method = 'POST') =>
      fetch(`${server.url}${p}`, {
        method,
        headers: { authorization: `Bearer ${server.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    await api('/v1/users/noquota', { quotaBytes: 0 }, 'PUT');
    const { token } = (await (await api('/v1/upload-tokens', { userId: 'noquota', purpose: 'audio' })).json()) as { token: string };
    const fileBytes = 100_000_000;
    const head = Buffer.from('{"filename":"big.wav","data":"');
    const tail = Buffer.from('"}');
    const base64Chars = Math.ceil(fileBytes / 3) * 4;
    const length = head.length + base64Chars + tail.length;
    const pid = child.pid!;
    let peak = rssOf(pid);
    const sampler = setInterval(() => {
      peak = Math.max(peak, rssOf(pid));
    }, 10);
    const { hostname, port } = new URL(server.url);
    const send = () =>
      new Promise<{ status: number; code: string; sent: number }>((resolve, reject) => {
        const chunk = Buffer.alloc(1 << 20, 'A');
        let sent = 0;
        let answered = false;
        const req = httpRequest({
          hostname,
          port,
          method: 'POST',
          path: '/v1/files',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': length },
        });
        req.on('response', (res) => {
          answered = true;
          let text = '';
          res.on('data', (d) => (text += d));
          res.on('end', () => {
            resolve({ status: res.statusCode!, code: (JSON.parse(text) as { error: { code: string } }).error.code, sent });
            req.destroy();
          });
        });
        req.on('error', (err) => (answered ? undefined : reject(err)));
        const pump = () => {
          while (!answered && sent < base64Chars) {
            const n = Math.min(chunk.length, base64Chars - sent);
            sent += n;
            if (!req.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void req.once('drain', pump);
          }
          if (!answered) req.end(tail);
        };
        req.write(head);
        pump();
      });
    try {
      const results = await Promise.all(Array.from({ length: 6 }, send));
      for (const r of results) expect(r).toMatchObject({ status: 413, code: 'QUOTA_EXCEEDED' });
      console.log(
        `six 100 MB JSON bodies, no quota: peak server RSS ${(peak / 2 ** 20).toFixed(1)} MiB; client sent ${results.map((r) => (r.sent / 1e6).toFixed(0)).join(', ')} MB before the answer`,
      );
    } finally {
      clearInterval(sampler);
    }
    expect(Math.max(peak, rssOf(pid))).toBeLessThan(300 * 1024 * 1024);
    const user = (await (await fetch(`${server.url}/v1/users/noquota`, { headers: { authorization: `Bearer ${server.apiKey}` } })).json()) as {
      reservedBytes: number;
      fileCount: number;
    };
    expect(user).toMatchObject({ reservedBytes: 0, fileCount: 0 });
  }, 120_000);
});
