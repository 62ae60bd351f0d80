import { createHmac, randomUUID } from 'node:crypto';
import type { Repository } from '../db/repository.js';
import type { FileRow } from '../db/schema.js';
import type { EventBus } from '../events.js';
import type { Logger } from '../log.js';

// Webhooks: each event is written to SQLite (webhook_deliveries) the moment it happens, then
// POSTed to CHIPMUNK_WEBHOOK_URL until the receiver answers 2xx, with exponential backoff.
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
function fileData(file: FileRow, extra: Record<string, unknown> = {}) {
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

export function createWebhooks(deps: {
  repo: Repository;
  events: EventBus;
  logger: Logger;
  options: WebhookOptions;
  onAttempt?: (outcome: 'delivered' | 'failed') => void;
}) {
  const { repo, logger, options } = deps;
  const maxAttempts = options.maxAttempts ?? 15;
  const maxBackoffMs = options.maxBackoffMs ?? 3600_000;
  const timeoutMs = options.timeoutMs ?? 10_000;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = true;

  // Written synchronously in the listener, so the row exists as soon as the event is emitted.
  const record = (event: WebhookEvent, data: Record<string, unknown>) => {
    const createdAt = Date.now();
    const payload = JSON.stringify({ id: randomUUID(), type: event, createdAt: new Date(createdAt).toISOString(), data });
    repo.enqueueWebhook(event, payload, createdAt);
    kick();
  };
  deps.events.on('file.ready', (file) => record('file.ready', fileData(file)));
  deps.events.on('file.failed', (file, reason) => record('file.failed', fileData(file, { reason })));
  deps.events.on('file.deleted', (file) => record('file.deleted', fileData(file, { status: 'deleted' })));
  deps.events.on('quota.exceeded', (info) => record('quota.exceeded', { ...info }));

  function kick(): void {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    if (timer) clearTimeout(timer);
    timer = undefined;
    running = pump().finally(() => {
      running = undefined;
      if (again) {
        again = false;
        kick();
      } else schedule();
    });
  }

  function schedule(): void {
    if (stopped) return;
    const next = repo.nextWebhookAt(maxAttempts);
    if (next === undefined) return;
    timer = setTimeout(kick, Math.max(0, next - Date.now()));
    timer.unref();
  }

  async function pump(): Promise<void> {
    for (;;) {
      if (stopped) return;
      const due = repo.dueWebhooks(Date.now(), maxAttempts, 10);
      if (due.length === 0) return;
      await Promise.all(due.map((d) => attempt(d)));
    }
  }

  async function attempt(d: { id: number; event: string; payload: string; attempts: number }): Promise<void> {
    const attempts = d.attempts + 1;
    const timestamp = Math.floor(Date.now() / 1000);
    let error: string | undefined;
    try {
      const res = await fetch(options.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'Chipmunk-Webhooks/1',
          'chipmunk-event': d.event,
          'chipmunk-delivery': String(d.id),
          'chipmunk-signature': signWebhook(options.secret, timestamp, d.payload),
        },
        body: d.payload,
        signal: AbortSignal.timeout(timeoutMs),
      });
      await res.body?.cancel().catch(() => {});
      if (!res.ok) error = `receiver answered ${res.status}`;
    } catch (err) {
      error = (err as Error).message;
    }
    if (!error) {
      repo.webhookDelivered(d.id, attempts);
      deps.onAttempt?.('delivered');
      logger.info('webhook delivered', { deliveryId: d.id, event: d.event, attempts });
      return;
    }
    const delay = Math.min(maxBackoffMs, options.backoffMs * 2 ** (attempts - 1));
    const jitter = delay * 0.2 * Math.random();
    repo.webhookFailed(d.id, attempts, Date.now() + delay + jitter, error);
    deps.onAttempt?.('failed');
    const gaveUp = attempts >= maxAttempts;
    logger[gaveUp ? 'error' : 'warn'](gaveUp ? 'webhook given up' : 'webhook failed, will retry', { deliveryId: d.id, event: d.event, attempts, error });
  }

  return {
    /** Starts delivering, including what a previous process left undelivered. */
    start(): void {
      stopped = false;
      kick();
    },
    /** Stops scheduling; waits for the attempts in flight (each bounded by its timeout). */
    async stop(): Promise<void> {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
      await running;
    },
    pending: () => repo.pendingWebhookCount(maxAttempts),
  };
}
