import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EventBus } from '../events.js';

// Prometheus metrics of one Chipmunk. Each Chipmunk owns its Registry (tests build many in one
// process), so nothing here is global. Parts of Chipmunk that are not wired through the event bus
// (delivery, background jobs) call the small methods at the bottom.

export type MetricsSources = {
  /** Work waiting, by queue ('jobs', 'webhooks'). */
  queueDepth(): Promise<Record<string, number>>;
  /** Unfinished uploads holding a reservation, and the bytes they hold. */
  reservations(): Promise<{ count: number; bytes: number }>;
  /** Jobs of the one queue by type and state (absent: not exported). */
  jobStates?(): Promise<Array<{ type: string; state: string; n: number }>>;
};

export type Metrics = ReturnType<typeof createMetrics>;

export function createMetrics(sources: MetricsSources, opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'chipmunk_' });

  const uploadsStarted = new Counter({
    name: 'chipmunk_uploads_started_total',
    help: 'Uploads admitted (quota reserved), by purpose.',
    labelNames: ['purpose'],
    registers: [registry],
  });
  const uploadsFinished = new Counter({
    name: 'chipmunk_uploads_finished_total',
    help: 'Uploads stored and charged, by purpose.',
    labelNames: ['purpose'],
    registers: [registry],
  });
  const uploadsRefused = new Counter({
    name: 'chipmunk_uploads_refused_total',
    help: 'Uploads refused at creation or completion, by purpose and reason (the error code).',
    labelNames: ['purpose', 'reason'],
    registers: [registry],
  });
  const bytesReceived = new Counter({
    name: 'chipmunk_upload_bytes_received_total',
    help: 'Upload bytes written to the upload area.',
    registers: [registry],
  });
  const processingDuration = new Histogram({
    name: 'chipmunk_processing_duration_seconds',
    help: 'Time to check, process and store a finished upload (or run a background job), by kind and outcome.',
    labelNames: ['kind', 'outcome'],
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [registry],
  });
  // Delivery answers are the hottest path in the service: counted in plain numbers per status and
  // handed to prom-client only when /metrics is scraped (a labelled inc per request costs more).
  const deliveryCounts = new Map<number, number>();
  new Counter({
    name: 'chipmunk_delivery_responses_total',
    help: 'Answers of the delivery routes (/f/…), by HTTP status.',
    labelNames: ['status'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [status, count] of deliveryCounts) this.inc({ status: String(status) }, count);
    },
  });
  const quotaRefusals = new Counter({
    name: 'chipmunk_quota_refusals_total',
    help: 'Uploads refused because the user quota was full, by purpose.',
    labelNames: ['purpose'],
    registers: [registry],
  });
  const webhookAttempts = new Counter({
    name: 'chipmunk_webhook_attempts_total',
    help: 'Webhook delivery attempts, by outcome (delivered, failed).',
    labelNames: ['outcome'],
    registers: [registry],
  });
  new Gauge({
    name: 'chipmunk_queue_depth',
    help: 'Work waiting, by queue.',
    labelNames: ['queue'],
    registers: [registry],
    // Read from the database at scrape time (prom-client awaits an async collect).
    async collect() {
      for (const [queue, depth] of Object.entries(await sources.queueDepth())) this.set({ queue }, depth);
    },
  });
  new Gauge({
    name: 'chipmunk_jobs',
    help: 'Jobs of the one queue (processing, audio renditions, webhook deliveries), by type and state.',
    labelNames: ['type', 'state'],
    registers: [registry],
    async collect() {
      const rows = (await sources.jobStates?.()) ?? [];
      this.reset();
      for (const row of rows) this.set({ type: row.type, state: row.state }, row.n);
    },
  });
  const jobOutcomes = new Counter({
    name: 'chipmunk_job_attempts_total',
    help: 'Job attempts, by type and outcome (done, retry, failed, interrupted).',
    labelNames: ['type', 'outcome'],
    registers: [registry],
  });
  new Gauge({
    name: 'chipmunk_reservations_outstanding',
    help: 'Unfinished uploads holding part of a quota.',
    registers: [registry],
    async collect() {
      this.set((await sources.reservations()).count);
    },
  });
  new Gauge({
    name: 'chipmunk_reserved_bytes',
    help: 'Bytes held against quotas by unfinished uploads.',
    registers: [registry],
    async collect() {
      this.set((await sources.reservations()).bytes);
    },
  });

  return {
    registry,
    contentType: registry.contentType,
    render: () => registry.metrics(),

    uploadStarted: (purpose: string) => uploadsStarted.inc({ purpose }),
    uploadFinished: (purpose: string) => uploadsFinished.inc({ purpose }),
    uploadRefused: (purpose: string, reason: string) => uploadsRefused.inc({ purpose, reason }),
    bytesReceived: (bytes: number) => {
      if (bytes > 0) bytesReceived.inc(bytes);
    },
    quotaRefused: (purpose: string) => quotaRefusals.inc({ purpose }),
    webhookAttempt: (outcome: 'delivered' | 'failed') => webhookAttempts.inc({ outcome }),
    jobOutcome: (type: string, outcome: string) => jobOutcomes.inc({ type, outcome }),
    /** Time a piece of processing: `const done = metrics.startProcessing('image'); … done('ok')`. */
    startProcessing(kind: string): (outcome: 'ok' | 'refused' | 'error') => void {
      const end = processingDuration.startTimer({ kind });
      return (outcome) => void end({ outcome });
    },
    /** For background jobs that measured their own duration (audio renditions). */
    observeProcessing: (kind: string, outcome: 'ok' | 'refused' | 'error', seconds: number) => processingDuration.observe({ kind, outcome }, seconds),
    /** For the delivery routes: call once per answer with its status. */
    deliveryAnswered: (status: number) => void deliveryCounts.set(status, (deliveryCounts.get(status) ?? 0) + 1),
  };
}

/** Keeps the upload counters from the domain events, so the services need not know about metrics. */
export function observeEvents(events: EventBus, metrics: Metrics): void {
  events.on('upload.started', (info) => metrics.uploadStarted(info.purpose));
  events.on('upload.stored', (file, info) => {
    metrics.uploadFinished(file.purpose);
    metrics.observeProcessing(file.kind, 'ok', info.ms / 1000);
  });
  events.on('upload.refused', (info) => {
    metrics.uploadRefused(info.purpose, info.code);
    if (info.ms !== undefined) metrics.observeProcessing(info.kind ?? 'unknown', info.status >= 500 ? 'error' : 'refused', info.ms / 1000);
  });
  events.on('quota.exceeded', (info) => metrics.quotaRefused(info.purpose));
}
