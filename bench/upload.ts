// npm run bench:upload — throughput of a 1 GB tus upload through Chipmunk (one PATCH, and 8 MB
// chunks) against a raw Node pipe-to-disk server measured in the same run, plus Chipmunk's peak RSS.
// Both servers run as child processes on loopback; both are fed by the same client code path.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Upload } from 'tus-js-client';
import { wavHeader } from '../test/helpers/wav.js';
import { startRawSink } from './lib/raw-sink.js';

const SIZE = Number(process.env.BENCH_UPLOAD_BYTES ?? 1024 ** 3);
const CHUNK = 8 * 1024 * 1024;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const root = path.resolve(import.meta.dirname, '..');

async function main() {
  const work = await mkdtemp(path.join(tmpdir(), 'chipmunk-bench-upload-'));
  try {
    const payload = path.join(work, 'payload.wav');
    await writeWav(payload, SIZE);
    const server = await startChipmunkProcess(work);
    const raw = await startRawSink(path.join(work, 'raw'));
    try {
      const results = { raw: [] as number[], single: [] as number[], chunked: [] as number[] };
      // Interleaved rounds, so drift in the machine's load hits every contender alike.
      for (let round = 0; round < ROUNDS; round++) {
        results.raw.push(await timed(() => rawUpload(raw.url, payload)));
        results.single.push(await timed(() => tusUpload(server, payload, Infinity)));
        results.chunked.push(await timed(() => tusUpload(server, payload, CHUNK)));
        console.log(`round ${round + 1}: raw ${mbps(results.raw[round]!)} MB/s, single PATCH ${mbps(results.single[round]!)} MB/s, 8 MB chunks ${mbps(results.chunked[round]!)} MB/s`);
      }
      const best = (xs: number[]) => Math.min(...xs);
      const peakRssMB = await peakRss(server.child.pid!);
      const figures = {
        singlePatchOverRaw: round2(best(results.raw) / best(results.single)),
        chunkedOverRaw: round2(best(results.raw) / best(results.chunked)),
        peakRssMB: Math.round(peakRssMB),
      };
      console.log(`\n1 GB upload, best of ${ROUNDS}: raw pipe ${mbps(best(results.raw))} MB/s`);
      console.log(`  tus single PATCH ${mbps(best(results.single))} MB/s = ${figures.singlePatchOverRaw}× raw (target ≥ 0.9)`);
      console.log(`  tus 8 MB chunks  ${mbps(best(results.chunked))} MB/s = ${figures.chunkedOverRaw}× raw (target ≥ 0.9)`);
      console.log(`  Chipmunk peak RSS ${figures.peakRssMB} MB (target < 150)`);
      console.log(JSON.stringify(figures));
    } finally {
      server.child.kill('SIGTERM');
      await raw.close();
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

type ChipmunkProcess = { child: ChildProcess; url: string; apiKey: string };

async function startChipmunkProcess(work: string): Promise<ChipmunkProcess> {
  const dataDir = path.join(work, 'data');
  const purposes = path.join(work, 'purposes.json');
  await writeFile(purposes, JSON.stringify({ bench: { kinds: ['audio'], maxBytes: 4 * SIZE, visibility: 'private' } }));
  const port = 20000 + Math.floor(Math.random() * 20000);
  const child = spawn(process.execPath, [path.join(root, 'dist/src/index.js')], {
    env: {
      ...process.env,
      PORT: String(port),
      CHIPMUNK_INTERNAL_PORT: '0',
      HOST: '127.0.0.1',
      CHIPMUNK_DATA_DIR: dataDir,
      CHIPMUNK_PURPOSES_FILE: purposes,
      CHIPMUNK_DEFAULT_QUOTA: String(100 * SIZE),
      CHIPMUNK_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${url}/health`)).ok) break;
    } catch {
      if (i > 200) throw new Error('Chipmunk did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const { apiKey } = JSON.parse(await readFile(path.join(dataDir, 'secrets.json'), 'utf8')) as { apiKey: string };
  return { child, url, apiKey };
}

async function tusUpload(server: ChipmunkProcess, file: string, chunkSize: number): Promise<void> {
  const tokenRes = await fetch(`${server.url}/v1/upload-tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${server.apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ userId: 'bench', purpose: 'bench' }),
  });
  const { token } = (await tokenRes.json()) as { token: string };
  const body = await new Promise<{ id: string }>((resolve, reject) => {
    const upload = new Upload(createReadStream(file), {
      endpoint: `${server.url}/uploads`,
      chunkSize,
      retryDelays: [],
      headers: { Authorization: `Bearer ${token}` },
      metadata: { filename: 'bench.wav' },
      onSuccess: (p) => resolve(JSON.parse(p.lastResponse.getBody()) as { id: string }),
      onError: reject,
    });
    upload.start();
  });
  // Delete at once so the next round starts from the same disk state.
  await fetch(`${server.url}/v1/files/${body.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${server.apiKey}` } });
}

function rawUpload(url: string, file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 204 ? resolve() : reject(new Error(`raw sink answered ${res.statusCode}`))));
    });
    req.on('error', reject);
    createReadStream(file).pipe(req);
  });
}

async function writeWav(file: string, size: number): Promise<void> {
  // A valid 16-bit stereo PCM WAV, so the upload passes completion like a real track would.
  const dataBytes = size - 44;
  const header = wavHeader(dataBytes);
  const handle = await open(file, 'w');
  try {
    await handle.write(header);
    const block = randomBytes(4 * 1024 * 1024);
    for (let written = 0; written < dataBytes; written += block.length) {
      await handle.write(block, 0, Math.min(block.length, dataBytes - written));
    }
  } finally {
    await handle.close();
  }
}

async function peakRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return kb / 1024;
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

const mbps = (seconds: number) => (SIZE / 1e6 / seconds).toFixed(0);
const round2 = (x: number) => Math.round(x * 100) / 100;

await main();
