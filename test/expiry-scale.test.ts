import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { healthLatencies, percentile, plantExpiredUploads } from './helpers/expired-uploads.js';
import { startChipmunk } from './helpers/chipmunk.js';

describe('expiry at scale', () => {
  it('sweeps 10,000 expired uploads while /health keeps answering', async () => {
    const t = await startChipmunk({ CHIPMUNK_EXPIRY_INTERVAL: '86400' });
    try {
      await plantExpiredUploads(t.chipmunk, 10_000);
      expect(await t.chipmunk.inspect.reservationTotals()).toEqual({ count: 10_000, bytes: 10_000 * 10_000 });
      const started = performance.now();
      const sweep = t.chipmunk.sweepExpiredUploads();
      const latencies = await healthLatencies(t.url, sweep);
      const swept = await sweep;
      const seconds = (performance.now() - started) / 1000;
      console.log(
        `expiry: swept ${swept} uploads in ${seconds.toFixed(1)} s; ${latencies.length} health checks answered meanwhile, p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms, max ${Math.max(...latencies).toFixed(1)} ms`,
      );
      expect(swept).toBe(10_000);
      // The server kept answering during the sweep, not only before or after it.
      expect(latencies.length).toBeGreaterThan(10);
      expect(await t.chipmunk.inspect.reservationTotals()).toEqual({ count: 0, bytes: 0 });
      for (const u of await t.chipmunk.inspect.users()) expect(u.reservedBytes).toBe(0);
      expect(await readdir(path.join(t.dataDir, 'uploads'))).toEqual([]);
    } finally {
      await t.close();
    }
  }, 180_000);
});
