// npm run bench:completion — what the job hop adds to an avatar's final PATCH.
//
// Since issue 12 the final PATCH no longer processes the photo itself: it makes the upload `received`,
// queues a persisted job and waits for it (CHIPMUNK_COMPLETION_WAIT). The work the job does is the
// direct call the request used to make; its time is measured inside the job (the `upload.stored`
// event's ms, from the claim to the commit). What the PATCH takes beyond that is the hop: linking the
// bytes into the received area, the compare-and-set, the enqueue, the runner's wake-up and claim, the
// waiter's wake-up and the answer. The PATCH also carries the photo's bytes, which the direct call's
// request carried too: each round also times a PATCH of the same bytes that is not the last one (an
// upload one byte longer). Per round: addedMs = final PATCH − that PATCH − the job's own time.
// Median and p95 over the rounds; target < 10 ms.
import { readFile, rm, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import { createChipmunk } from '../src/chipmunk.js';
import { loadConfig } from '../src/config.js';
import { silentLogger } from '../src/log.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 40);
const WARMUP = 5;
const photo = path.resolve(import.meta.dirname, '../../shared/corpus/images/photos', process.env.BENCH_PHOTO ?? 'person-headshot-canon.jpg');

const quantile = (xs: number[], q: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
};
const round2 = (n: number) => Math.round(n * 100) / 100;

async function main() {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'chipmunk-bench-completion-'));
  const purposesFile = path.join(dataDir, 'purposes.json');
  await writeFile(purposesFile, JSON.stringify({ avatar: { kinds: ['image'], maxBytes: 20_000_000, square: true, visibility: 'public' } }));
  const config = loadConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    CHIPMUNK_DATA_DIR: dataDir,
    CHIPMUNK_LOG_LEVEL: 'silent',
    CHIPMUNK_DISK_MARGIN: '0',
    CHIPMUNK_INTERNAL_PORT: '0',
    CHIPMUNK_PURPOSES_FILE: purposesFile,
    CHIPMUNK_DEFAULT_QUOTA: String(10 ** 12),
  });
  const chipmunk = createChipmunk(config, { defaultMetrics: false, logger: silentLogger });
  const jobMs = new Map<string, number>();
  chipmunk.events.on('upload.stored', (file, timing) => jobMs.set(file.id, timing.ms));
  const { port } = await chipmunk.listen();
  const url = `http://127.0.0.1:${port}/uploads`;
  const bytes = await readFile(photo);
  const token = await new SignJWT({ purpose: 'avatar' })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject('bench-user')
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(new TextEncoder().encode(config.secret));
  const tus = { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${token}` };
  const create = async (length: number) => {
    const created = await fetch(url, {
      method: 'POST',
      headers: { ...tus, 'Upload-Length': String(length), 'Upload-Metadata': `filename ${Buffer.from('a.jpg').toString('base64')}` },
    });
    if (created.status !== 201) throw new Error(`creation answered ${created.status}: ${await created.text()}`);
    return created.headers.get('location')!;
  };
  const patch = async (location: string) => {
    const started = performance.now();
    const res = await fetch(location, {
      method: 'PATCH',
      headers: { ...tus, 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' },
      body: bytes,
    });
    const text = await res.text();
    return { res, text, ms: performance.now() - started };
  };
  const added: number[] = [];
  const patchTimes: number[] = [];
  try {
    for (let round = 0; round < WARMUP + ROUNDS; round++) {
      // The same bytes in a PATCH that is not the last: the request's own cost, without completion.
      const partial = await create(bytes.length + 1);
      const written = await patch(partial);
      if (written.res.status !== 204) throw new Error(`partial PATCH answered ${written.res.status}: ${written.text}`);
      await fetch(partial, { method: 'DELETE', headers: tus });
      const location = await create(bytes.length);
      const id = new URL(location).pathname.split('/').pop()!;
      const final = await patch(location);
      const body = JSON.parse(final.text) as { status?: string };
      if (final.res.status !== 200 || body.status !== 'ready') throw new Error(`final PATCH answered ${final.res.status} ${final.text}`);
      const patchMs = final.ms;
      const job = jobMs.get(id);
      if (job === undefined) throw new Error('the job reported no time');
      if (round >= WARMUP) {
        added.push(patchMs - written.ms - job);
        patchTimes.push(patchMs);
      }
      await chipmunk.files.remove(id);
    }
  } finally {
    await chipmunk.close();
    await rm(dataDir, { recursive: true, force: true });
  }
  const figures = {
    avatarPatchAddedMs: round2(quantile(added, 0.5)),
    avatarPatchAddedP95Ms: round2(quantile(added, 0.95)),
    avatarPatchMs: round2(quantile(patchTimes, 0.5)),
  };
  console.log(`avatar final PATCH (${path.basename(photo)}, ${bytes.length} bytes), ${ROUNDS} rounds after ${WARMUP} warm-up:`);
  console.log(`  whole PATCH median ${figures.avatarPatchMs} ms`);
  console.log(`  added by the job hop: median ${figures.avatarPatchAddedMs} ms, p95 ${figures.avatarPatchAddedP95Ms} ms (target < 10 ms)`);
  console.log(JSON.stringify(figures));
}

await main();
