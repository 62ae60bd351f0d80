import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request as httpRequest, Agent } from 'node:http';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { corpus } from './helpers/chipmunk.js';

// A flood of distinct junk query parameters on one public URL must not grow the server: delivery
// caches are keyed by what decides access (token, variant, exp, sig) and bounded by bytes
// (src/delivery/cache.ts). The server runs in its own process so its RSS is measured alone.

let child: ChildProcess;
let server: { url: string; apiKey: string };

beforeAll(async () => {
  child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'helpers/child-chipmunk.ts')], { stdio: ['ignore', 'pipe', 'inherit'] });
  server = JSON.parse(
    await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once('line', resolve);
      child.once('exit', (code) => reject(new Error(`server exited early (${code})`)));
    }),
  );
});
afterAll(async () => {
  if (child && child.exitCode === null) {
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
  }
});

const rssOf = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

it('10,000 requests with distinct junk parameters on one public URL keep the server RSS bounded', async () => {
  const form = new FormData();
  form.append('userId', 'flood');
  form.append('purpose', 'avatar');
  form.append('file', new Blob([readFileSync(corpus('images/photos/portrait-canal.jpg'))]), 'a.jpg');
  const file = (await (
    await fetch(`${server.url}/v1/files`, { method: 'POST', headers: { authorization: `Bearer ${server.apiKey}` }, body: form })
  ).json()) as {
    variants: Array<{ n: number; url: string }>;
  };
  const target = new URL(file.variants.find((v) => v.n === 3)!.url);
  const agent = new Agent({ keepAlive: true, maxSockets: 8 });
  const get = (query: string) =>
    new Promise<number>((resolve, reject) => {
      const req = httpRequest({ hostname: target.hostname, port: target.port, path: `${target.pathname}?${query}`, agent }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      });
      req.on('error', reject);
      req.end();
    });
  // Warm up (the first answers build the grant and read the variant), then measure.
  for (let i = 0; i < 200; i++) await get(`warm=${i}`);
  const pid = child.pid!;
  const before = rssOf(pid);
  let peak = before;
  const junk = 'x'.repeat(6000);
  for (let batch = 0; batch < 100; batch++) {
    const statuses = await Promise.all(
      Array.from({ length: 100 }, (_, i) => get(`utm_source=${batch}-${i}&junk=${junk}${batch * 100 + i}&exp=${i}&sig=${'A'.repeat(43)}`)),
    );
    expect(new Set(statuses)).toEqual(new Set([200]));
    peak = Math.max(peak, rssOf(pid));
  }
  agent.destroy();
  const growth = peak - before;
  console.log(`junk-query flood: server RSS ${(before / 2 ** 20).toFixed(1)} → peak ${(peak / 2 ** 20).toFixed(1)} MiB over 10,000 distinct URLs`);
  // Keyed by the raw target, 10,000 entries of ~6 KB keys and grants would hold some 60 MB;
  // keyed by token and variant, one entry. The margin is the GC's.
  expect(growth).toBeLessThan(40 * 1024 * 1024);
}, 180_000);
