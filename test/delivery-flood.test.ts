import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request as httpRequest, Agent } from 'node:http';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends } from './helpers/backends.js';
import { corpus } from './helpers/chipmunk.js';
import { createDistributedEnvironment } from './helpers/services.js';

// A flood of distinct junk query parameters on one public URL must not grow the server: delivery
// caches are keyed by what decides access (token, variant, exp, sig) and bounded by bytes
// (src/delivery/cache.ts). The server runs in its own process so its RSS is measured alone. On the
// distributed backend /f/ streams from the bucket and the caches listen for changes from PostgreSQL:
// the same bound holds there.

type FileJson = { id: string; variants: Array<{ n: number; url: string; bytes: number }> };

const rssOf = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

describe.each(backends)('$name', (backend) => {
  let child: ChildProcess;
  let server: { url: string; apiKey: string };
  let distributed: Awaited<ReturnType<typeof createDistributedEnvironment>> | undefined;

  beforeAll(async () => {
    distributed = backend.name === 'distributed' ? await createDistributedEnvironment('flood') : undefined;
    child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'helpers/child-chipmunk.ts'), JSON.stringify(distributed?.env ?? {})], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    server = JSON.parse(
      await new Promise<string>((resolve, reject) => {
        createInterface({ input: child.stdout! }).once('line', resolve);
        child.once('exit', (code) => reject(new Error(`server exited early (${code})`)));
      }),
    );
  }, 60_000);
  afterAll(async () => {
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    }
    await distributed?.drop();
  });

  it('10,000 requests with distinct junk parameters on one public URL keep the server RSS bounded, while another file rotates its token', async () => {
    const api = (pathname: string, init: RequestInit = {}) =>
      fetch(`${server.url}${pathname}`, { ...init, headers: { authorization: `Bearer ${server.apiKey}` } });
    const upload = async (photo: string): Promise<FileJson> => {
      const form = new FormData();
      form.append('userId', 'flood');
      form.append('purpose', 'avatar');
      form.append('file', new Blob([readFileSync(corpus('images/photos', photo))]), photo);
      return (await (await api('/v1/files', { method: 'POST', body: form })).json()) as FileJson;
    };
    const variantUrl = (file: FileJson, n: number) => new URL(file.variants.find((v) => v.n === n)!.url);
    const target = variantUrl(await upload('portrait-canal.jpg'), 3);
    // A second file's token rotates once per batch: each rotation drops its cached entries (on the
    // distributed backend through a notification from PostgreSQL) while the flood reads the first.
    // Its original (800 KB, over the in-memory bound) is streamed from the disk or the bucket each time.
    let rotating = await upload('landscape-cardinal-bird-2mp.jpg');
    expect(rotating.variants.find((v) => v.n === 0)!.bytes).toBeGreaterThan(256 * 1024);
    const rotatedAway: URL[] = [];
    const agent = new Agent({ keepAlive: true, maxSockets: 8 });
    const get = (query: string, url = target) =>
      new Promise<number>((resolve, reject) => {
        const req = httpRequest({ hostname: url.hostname, port: url.port, path: `${url.pathname}?${query}`, agent }, (res) => {
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
    const rotate = async (batch: number) => {
      const old = [variantUrl(rotating, 3), variantUrl(rotating, 0)];
      expect(await Promise.all(old.map((url) => get(`junk=${junk}${batch}`, url)))).toEqual([200, 200]);
      const res = await api(`/v1/files/${rotating.id}/rotate-token`, { method: 'POST' });
      expect(res.status).toBe(200);
      rotating = (await res.json()) as FileJson;
      rotatedAway.push(...old);
    };
    for (let batch = 0; batch < 100; batch++) {
      const [statuses] = await Promise.all([
        Promise.all(Array.from({ length: 100 }, (_, i) => get(`utm_source=${batch}-${i}&junk=${junk}${batch * 100 + i}&exp=${i}&sig=${'A'.repeat(43)}`))),
        rotate(batch),
      ]);
      expect(new Set(statuses)).toEqual(new Set([200]));
      peak = Math.max(peak, rssOf(pid));
    }
    // The announcements reached the caches: every rotated-away link is refused, the current one served.
    await expect.poll(async () => new Set(await Promise.all(rotatedAway.map((url) => get('', url)))), { timeout: 10_000 }).toEqual(new Set([404]));
    expect(await Promise.all([3, 0].map((n) => get('', variantUrl(rotating, n))))).toEqual([200, 200]);
    agent.destroy();
    const growth = peak - before;
    console.log(
      `junk-query flood (${backend.name}): server RSS ${(before / 2 ** 20).toFixed(1)} → peak ${(peak / 2 ** 20).toFixed(1)} MiB over 10,000 distinct URLs`,
    );
    // Keyed by the raw target, 10,000 entries of ~6 KB keys and grants would hold some 60 MB;
    // keyed by token and variant, one entry. The margin is the GC's.
    expect(growth).toBeLessThan(40 * 1024 * 1024);
  }, 180_000);
});
