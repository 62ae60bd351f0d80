// bench:expiry — 10,000 expired unfinished uploads swept while the server answers /health.
// Baselines measured in the same run: /health p99 with nothing to sweep, and during the stock
// tus cleanup (FileStore.deleteExpired) of the same 10,000 uploads (files only, no quota work).
// Ends with one JSON line: {"uploads", "sweep_seconds", "health_p99_ms", "idle_p99_ms", "stock_p99_ms", "stock_seconds", "p99_vs_idle", "p99_vs_stock"}.
import { FileStore } from '@tus/file-store';
import { startChipmunk } from '../test/helpers/chipmunk.js';
import { healthLatencies, percentile, plantExpiredUploads } from '../test/helpers/expired-uploads.js';

const UPLOADS = Number(process.env.UPLOADS ?? 10_000);
const round = (n: number, d = 1) => Math.round(n * 10 ** d) / 10 ** d;

const t = await startChipmunk({ CHIPMUNK_EXPIRY_INTERVAL: '86400' });
try {
  // Idle: the same probe for two seconds with nothing to sweep.
  const idle = await healthLatencies(t.url, new Promise((r) => setTimeout(r, 2_000)));

  // Stock tus cleanup over 10,000 expired uploads (it lists and reads them all, then deletes them at once).
  await plantExpiredUploads(t.chipmunk, UPLOADS);
  const stockStore = new FileStore({ directory: t.chipmunk.config.uploadDir, expirationPeriodInMilliseconds: 1000 });
  let started = performance.now();
  const stockRun = stockStore.deleteExpired();
  const stock = await healthLatencies(t.url, stockRun);
  const stockRemoved = await stockRun;
  const stockSeconds = (performance.now() - started) / 1000;
  // Its rows are still there (stock tus knows nothing of quotas); remove them the same way ours does.
  await t.chipmunk.sweepExpiredUploads();

  // Ours: the same number of uploads, rows and reservations included.
  await plantExpiredUploads(t.chipmunk, UPLOADS);
  started = performance.now();
  const sweep = t.chipmunk.sweepExpiredUploads();
  const during = await healthLatencies(t.url, sweep);
  const swept = await sweep;
  const sweepSeconds = (performance.now() - started) / 1000;
  if (swept !== UPLOADS) throw new Error(`swept ${swept} of ${UPLOADS}`);
  if ((await t.chipmunk.repo.reservationTotals()).count !== 0) throw new Error('reservations left after the sweep');

  const p99 = percentile(during, 99);
  const idleP99 = percentile(idle, 99);
  const stockP99 = percentile(stock, 99);
  console.log(`idle:  ${idle.length} health checks, p99 ${idleP99.toFixed(1)} ms`);
  console.log(
    `stock: tus deleteExpired removed ${stockRemoved} in ${stockSeconds.toFixed(1)} s; ${stock.length} health checks, p99 ${stockP99.toFixed(1)} ms, max ${Math.max(...stock).toFixed(1)} ms`,
  );
  console.log(
    `ours:  swept ${swept} (rows, reservations, files) in ${sweepSeconds.toFixed(1)} s; ${during.length} health checks, p99 ${p99.toFixed(1)} ms, max ${Math.max(...during).toFixed(1)} ms`,
  );
  console.log(
    JSON.stringify({
      uploads: UPLOADS,
      sweep_seconds: round(sweepSeconds),
      health_p99_ms: round(p99),
      idle_p99_ms: round(idleP99),
      stock_p99_ms: round(stockP99),
      stock_seconds: round(stockSeconds),
      p99_vs_idle: round(p99 / idleP99, 2),
      p99_vs_stock: round(p99 / stockP99, 2),
    }),
  );
} finally {
  await t.close();
}
