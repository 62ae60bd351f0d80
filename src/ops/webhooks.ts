import { createHmac } from 'node:crypto';
import type { UnitOfWork } from '../db/ports.js';
import type { FileRow, JobRow } from '../db/schema.js';
import type { JobHandler, JobResult } from '../jobs/runner.js';
import type { EventBus } from '../events.js';
import type { Logger } from '../log.js';

// Webhooks: each event is written to the job queue in the transaction of the change it announces,
// then POSTed to CHIPMUNK_WEBHOOK_URL until the receiver answers 2xx, with exponential backoff.
// A restart picks up whatever was not delivered. Each request is signed:
//   Chipmunk-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, `${t}.${body}`)>

export const WEBHOOK_EVENTS = ['file.ready', 'file.failed', 'file.deleted', 'quota.exceeded'] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];

export type WebhookOptions = {
  url: string;
  secret: string;
  /** First retry delay; each further one doubles, up to maxBackoffMs. */
  backoffMs: number;
  maxBackoffMs?: number;
  maxAttempts?: number;
  timeoutMs?: number;
};

export type Webhooks = ReturnType<typeof createWebhooks>;

export function signWebhook(secret: string, timestamp: number, body: string): string {
  const v1 = createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
  return `t=${timestamp},v1=${v1}`;
}

/** What a receiver sees of a file: never its delivery token. */
export function fileData(file: FileRow, extra: Record<string, unknown> = {}) {
  return {
    id: file.id,
    userId: file.userId,
    purpose: file.purpose,
    kind: file.kind,
    status: file.status,
    filename: file.filename,
    mimeType: file.mimeType,
    bytes: file.bytes,
    totalBytes: file.totalBytes,
    ...(file.error ? { error: file.error } : {}),
    ...extra,
  };
}

/**
 * Webhook deliveries are jobs of the one queue (type `webhook.deliver`, the body in the job's payload):
 * the row is written in the same unit of work as the change it announces (ports.outbox), and the job
 * runner retries with this backoff until the receiver answers 2xx or the attempts run out.
 */
export function createWebhooks(deps: {
  uow: UnitOfWork;
  events: EventBus;
  logger: Logger;
  options: WebhookOptions;
  /** Deliveries still to make, for /metrics and readiness. */
  pendingCount: () => Promise<number>;
  onAttempt?: (outcome: 'delivered' | 'failed') => void;
}) {
  const { logger, options } = deps;
  const maxAttempts = options.maxAttempts ?? 15;
  const maxBackoffMs = options.maxBackoffMs ?? 3600_000;
  const timeoutMs = options.timeoutMs ?? 10_000;

  // A refusal at creation has no unit of work of its own: its row is its own transaction.
  deps.events.on('quota.exceeded', (info) => {
    deps.uow.ports.outbox
      .add('quota.exceeded', { ...info }, { fileId: '', userId: info.userId })
      .catch((err: unknown) => logger.error('could not record a webhook', { err }));
  });

  const handler: JobHandler = {
    maxAttempts,
    retryDelayMs: (attempt) => {
      const delay = Math.min(maxBackoffMs, options.backoffMs * 2 ** (attempt - 1));
      return delay + delay * 0.2 * Math.random();
    },
    async run(job: JobRow, signal: AbortSignal): Promise<JobResult> {
      const payload = job.payload ?? '{}';
      const event = (JSON.parse(payload) as { type?: string }).type ?? 'unknown';
      const timestamp = Math.floor(Date.now() / 1000);
      let error: string | undefined;
      try {
        const res = await fetch(options.url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'user-agent': 'Chipmunk-Webhooks/1',
            'chipmunk-event': event,
            'chipmunk-delivery': String(job.id),
            'chipmunk-signature': signWebhook(options.secret, timestamp, payload),
          },
          body: payload,
          signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
        });
        await res.body?.cancel().catch(() => {});
        if (!res.ok) error = `receiver answered ${res.status}`;
      } catch (err) {
        if (signal.aborted) throw err;
        error = (err as Error).message;
      }
      deps.onAttempt?.(error ? 'failed' : 'delivered');
      if (!error) {
        logger.info('webhook delivered', { deliveryId: job.id, event, attempts: job.attempts });
        return { result: 'done' };
      }
      logger[job.attempts >= maxAttempts ? 'error' : 'warn']('webhook failed', { deliveryId: job.id, event, attempts: job.attempts, error });
      return { result: 'retry', reason: error };
    },
    fail(job: JobRow, reason: string): void {
      logger.error('webhook given up', { deliveryId: job.id, attempts: job.attempts, reason });
    },
  };

  return { handler, pending: deps.pendingCount };
}
