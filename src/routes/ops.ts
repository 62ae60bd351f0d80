import { Hono } from 'hono';
import type { Metrics } from '../ops/metrics.js';
import type { ReadinessReport } from '../ops/readiness.js';

// Operator routes: liveness, readiness and Prometheus metrics. None needs a key and none reveals
// a secret; put them behind your private network if their figures are sensitive to you.

export function opsRoutes(deps: { ready: () => Promise<ReadinessReport>; metrics: Metrics; isStopping: () => boolean }) {
  return new Hono()
    .get('/health', (c) => c.json({ status: 'ok' }))
    .get('/ready', async (c) => {
      const report = await deps.ready();
      if (deps.isStopping()) {
        report.ready = false;
        report.checks.shutdown = { ok: false, detail: 'shutting down' };
      }
      return c.json(report, report.ready ? 200 : 503);
    })
    .get('/metrics', async (c) => c.body(await deps.metrics.render(), 200, { 'content-type': deps.metrics.contentType }));
}
