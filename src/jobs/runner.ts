import type { JobQueue } from '../db/ports.js';
import type { JobRow } from '../db/schema.js';
import type { Logger } from '../log.js';

// Background jobs of the one persisted queue (processing, audio renditions, webhook deliveries).
// At least once: a job left 'running' by a stopped process runs again, so handlers are idempotent.
// A handler answers explicitly: done, retry after a delay, or failed with a reason; a throw is a
// retry with backoff unless its failure is final (FinalJobError). After `maxAttempts` it is failed.
// Fair between users: jobs are taken round-robin by user, and one user holds at most
// `perUserLimit` of the slots, so another user's job waits for at most one job to end.

export type JobResult = { result: 'done' } | { result: 'retry'; afterMs?: number; reason: string } | { result: 'failed'; reason: string };

export type JobHandler = {
  /** Does the work. Must be safe to run twice: a crash may interrupt it at any point. */
  run(job: JobRow, signal: AbortSignal): Promise<JobResult | void>;
  /** The job will not be tried again; record the outcome on what it was for (the file). */
  fail(job: JobRow, reason: string): Promise<void> | void;
  maxAttempts?: number;
  /**
   * Attempts that never ended (the process was killed under them) before the job is given up;
   * default maxAttempts. A job that keeps killing its process must end, but a kill is rarely its fault.
   */
  maxInterruptions?: number;
  /** Delay before attempt n+1 after attempt n failed. */
  retryDelayMs?: (attempt: number) => number;
};

/** A failure that retrying cannot fix (the content is bad); its message is shown to people. */
export class FinalJobError extends Error {
  override name = 'FinalJobError';
}

export type JobRunnerOptions = {
  jobs: JobQueue;
  logger: Logger;
  handlers: Record<string, JobHandler>;
  concurrency: number;
  /** Slots one user may hold at once (default: all of them). */
  perUserLimit?: number;
  maxAttempts?: number;
  retryDelayMs?: (attempt: number) => number;
  /** Every attempt's outcome, for /metrics. */
  onOutcome?: (type: string, outcome: 'done' | 'retry' | 'failed' | 'interrupted') => void;
};

type Running = { job: JobRow; controller: AbortController; settled: Promise<void> };

export function createJobRunner(opts: JobRunnerOptions) {
  const { jobs, logger, handlers } = opts;
  const types = Object.keys(handlers);
  const perUserLimit = opts.perUserLimit ?? opts.concurrency;
  const running = new Map<number, Running>();
  let started = false;
  let closing = false;
  let timer: NodeJS.Timeout | undefined;
  let pumping: Promise<void> | undefined;
  let again = false;
  let lastUser = '';
  let idleWaiters: Array<() => void> = [];

  const busyUsers = () => {
    const perUser = new Map<string, number>();
    for (const r of running.values()) perUser.set(r.job.userId, (perUser.get(r.job.userId) ?? 0) + 1);
    return [...perUser].filter(([, n]) => n >= perUserLimit).map(([u]) => u);
  };

  /** Claims while slots are free; one pump at a time, a wake during it runs it again. */
  function wake(): void {
    if (!started || closing) return;
    if (pumping) {
      again = true;
      return;
    }
    pumping = pump().finally(() => {
      pumping = undefined;
      if (again) {
        again = false;
        wake();
      }
    });
  }

  async function pump(): Promise<void> {
    try {
      while (running.size < opts.concurrency && !closing) {
        const job = await jobs.claim(types, { at: Date.now(), afterUser: lastUser, busyUsers: busyUsers(), perUserLimit });
        if (!job) break;
        lastUser = job.userId;
        const controller = new AbortController();
        const entry: Running = { job, controller, settled: Promise.resolve() };
        running.set(job.id, entry);
        entry.settled = execute(job, controller.signal).finally(() => {
          running.delete(job.id);
          wake();
        });
      }
      await scheduleDelayed();
      if (running.size === 0 && (await jobs.nextDueAt(types)) === undefined) {
        const waiters = idleWaiters;
        idleWaiters = [];
        for (const resolve of waiters) resolve();
      }
    } catch (err) {
      // The database refused (busy, disk full): never an exception out of a timer; try again shortly.
      logger.error('job queue unavailable; retrying', { err });
      setTimer(1_000);
    }
  }

  function setTimer(ms: number): void {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      wake();
    }, ms);
    timer.unref();
  }

  /** Wakes up for the next delayed retry. */
  async function scheduleDelayed(): Promise<void> {
    const due = await jobs.nextDueAt(types);
    if (due === undefined || running.size >= opts.concurrency || closing) return;
    setTimer(Math.max(10, due - Date.now()));
  }

  /** Never rejects: whatever happens ends in the job's row (or, if even that fails, in the log and the next start). */
  async function execute(job: JobRow, signal: AbortSignal): Promise<void> {
    try {
      await attempt(job, signal);
    } catch (err) {
      logger.error('job bookkeeping failed; the next start resumes it', { jobId: job.id, fileId: job.fileId, err });
    }
  }

  async function attempt(job: JobRow, signal: AbortSignal): Promise<void> {
    const handler = handlers[job.type]!;
    const maxAttempts = handler.maxAttempts ?? opts.maxAttempts ?? 3;
    const retryDelayMs = handler.retryDelayMs ?? opts.retryDelayMs ?? ((n: number) => 5_000 * 4 ** (n - 1));
    const log = logger.child({ jobId: job.id, jobType: job.type, fileId: job.fileId, attempt: job.attempts });
    const maxInterruptions = Math.max(maxAttempts, handler.maxInterruptions ?? maxAttempts);
    if (job.attempts > maxInterruptions) {
      // Claimed again and again without ending: the process stopped during each attempt.
      return giveUp(job, handler, `Processing was interrupted ${maxInterruptions} times; giving up.`, log);
    }
    let result: JobResult;
    try {
      log.debug('job started');
      result = (await handler.run(job, signal)) ?? { result: 'done' };
    } catch (err) {
      if (signal.aborted && closing) {
        // Stopped by a shutdown, not by its own fault: the next start runs it again.
        await jobs.requeue(job.id, { runAfter: Date.now(), refundAttempt: true });
        opts.onOutcome?.(job.type, 'interrupted');
        log.info('job interrupted by shutdown; queued again');
        return;
      }
      if (signal.aborted)
        result = { result: 'done' }; // cancelled: its file was deleted
      else if (err instanceof FinalJobError) result = { result: 'failed', reason: err.message };
      else result = { result: 'retry', reason: err instanceof Error ? err.message : String(err) };
      if (result.result !== 'done') log.warn('job attempt failed', { err: err instanceof FinalJobError ? undefined : err });
    }
    if (result.result === 'done') {
      await jobs.finish(job.id, { state: 'done' });
      opts.onOutcome?.(job.type, 'done');
      log.info('job done');
      return;
    }
    if (result.result === 'failed' || job.attempts >= maxAttempts) return giveUp(job, handler, result.reason, log);
    const delay = result.afterMs ?? retryDelayMs(job.attempts);
    await jobs.requeue(job.id, { runAfter: Date.now() + delay, error: result.reason });
    opts.onOutcome?.(job.type, 'retry');
    log.warn('job will retry', { reason: result.reason, retryInMs: delay });
  }

  async function giveUp(job: JobRow, handler: JobHandler, reason: string, log: Logger): Promise<void> {
    await jobs.finish(job.id, { state: 'failed', error: reason.slice(0, 500) });
    opts.onOutcome?.(job.type, 'failed');
    log.warn('job failed', { reason });
    try {
      await handler.fail(job, reason);
    } catch (failErr) {
      log.error('recording a failed job failed', { err: failErr });
    }
  }

  return {
    types,
    /** Resumes what a stopped process left, then runs queued jobs. */
    async start(): Promise<void> {
      const resumed = await jobs.requeueRunning();
      if (resumed) logger.info('resuming interrupted jobs', { count: resumed });
      started = true;
      closing = false;
      wake();
    },

    /** Queues a job (its own transaction) and wakes the runner. */
    async enqueue(job: { fileId: string; type: string; userId?: string }): Promise<JobRow> {
      if (!handlers[job.type]) throw new Error(`No handler for job type ${job.type}`);
      const row = await jobs.enqueue({ fileId: job.fileId, type: job.type, userId: job.userId ?? '' });
      wake();
      return row;
    },

    /** Something was queued in a committed transaction: claim it now, in-process. */
    wake,

    /** Aborts the file's running jobs (its file is being deleted); their handlers stop their children. */
    abortFile(fileId: string): void {
      for (const r of running.values()) if (r.job.fileId === fileId) r.controller.abort(new Error('The file was deleted.'));
    },

    /** Resolves when nothing runs and nothing waits (delayed retries included). */
    idle(): Promise<void> {
      return new Promise((resolve) => {
        idleWaiters.push(resolve);
        wake();
      });
    },

    get active(): number {
      return running.size;
    },

    /** Stops claiming, aborts running jobs (they are queued again) and waits for them to settle. */
    async close(): Promise<void> {
      closing = true;
      if (timer) clearTimeout(timer);
      for (const { controller } of running.values()) controller.abort(new Error('The server is stopping.'));
      await Promise.allSettled([...running.values()].map((r) => r.settled));
      await pumping?.catch(() => undefined);
      const waiters = idleWaiters;
      idleWaiters = [];
      for (const resolve of waiters) resolve();
    },
  };
}

export type JobRunner = ReturnType<typeof createJobRunner>;
