import { OpenAPIHono, createRoute } from '@hono/zod-openapi';
import { z } from 'zod';
import type { Metrics } from '../ops/metrics.js';
import type { ReadinessReport } from '../ops/readiness.js';
import { jsonReply } from './declare.js';

// Operator routes: liveness, readiness and Prometheus metrics. None needs a key and none reveals
// a secret; put them behind your private network if their figures are sensitive to you.

const readinessJson = z.object({
  ready: z.boolean(),
  checks: z.record(z.string(), z.object({ ok: z.boolean(), detail: z.union([z.string(), z.number(), z.record(z.string(), z.number())]).optional() })),
});

const health = createRoute({
  method: 'get',
  path: '/health',
  summary: 'Liveness',
  security: [],
  responses: { 200: jsonReply('up', z.object({ status: z.literal('ok') })) },
});
const ready = createRoute({
  method: 'get',
  path: '/ready',
  summary: 'Readiness: database, disk and shutdown checks',
  security: [],
  responses: { 200: jsonReply('ready', readinessJson), 503: jsonReply('not ready (a check failed, or shutting down)', readinessJson) },
});
const metrics = createRoute({
  method: 'get',
  path: '/metrics',
  summary: 'Prometheus metrics',
  security: [],
  responses: { 200: { description: 'the text exposition format', content: { 'text/plain': { schema: z.string() } } } },
});

export function opsRoutes(deps: { ready: () => Promise<ReadinessReport>; metrics: Metrics; isStopping: () => boolean }) {
  return new OpenAPIHono()
    .openapi(health, (c) => c.json({ status: 'ok' as const }, 200))
    .openapi(ready, async (c) => {
      const report = await deps.ready();
      if (deps.isStopping()) {
        report.ready = false;
        report.checks.shutdown = { ok: false, detail: 'shutting down' };
      }
      return report.ready ? c.json(report, 200) : c.json(report, 503);
    })
    .openapi(metrics, async (c) => c.text(await deps.metrics.render(), 200, { 'Content-Type': deps.metrics.contentType }));
}
