import type { Repository } from '../db/repository.js';
import type { JobRow } from '../db/schema.js';
import type { Logger } from '../log.js';

// Background jobs kept in SQLite. A bounded number run at once; a job that throws is retried with a
// growing delay unless its failure is final (bad content); a job that keeps failing, or keeps stopping
// the process, ends 'failed' after `maxAttempts` — never stuck, never thrown out of the runner.
// Jobs left 'running' by a stopped process are queued again at start().

export type JobHandler = {
  /** Does the work. Must be safe to run twice: a crash may interrupt it at any point. */
  run(job: JobRow, signal: AbortSignal): Promise<void>;
  /** The job will not be tried again; record the outcome on what it was for (the file). */
  fail(job: JobRow, reason: string): Promise<void> | void;
};

/** A failure that retrying cannot fix (the content is bad); its message is shown to people. */
export class FinalJobError extends Error {
  override name = 'FinalJobError';
}

export type JobRunnerOptions = {
  repo: Repository;
  logger: Logger;
  handlers: Record<string, JobHandler>;
  concurrency: number;
  maxAttempts?: number;
  /** Delay before attempt n+1 after attempt n failed. */
  retryDelayMs?: (attempt: number) => number;
};

export function createJobRunner(opts: JobRunnerOptions) {
  const { repo, logger, handlers } = opts;
  const types = Object.keys(handlers);
  const maxAttempts = opts.maxAttempts ?? 3;
  const retryDelayMs = opts.retryDelayMs ?? ((attempt: number) => 5_000 * 4 ** (attempt - 1));
  const running = new Map<number, { controller: AbortController; settled: Promise<void> }>();
  let started = false;
  let closing = false;
  let timer: NodeJS.Timeout | undefined;
  let idleWaiters: Array<() => void> = [];

  function pump(): void {
    if (!started || closing) return;
    while (running.size < opts.concurrency) {
      const job = repo.claimJob(types);
      if (!job) break;
      const controller = new AbortController();
      const settled = execute(job, controller.signal).finally(() => {
        running.delete(job.id);
        pump();
      });
      running.set(job.id, { controller, settled });
    }
    scheduleDelayed();
    if (running.size === 0 && repo.nextJobDueAt(types) === undefined) {
      const waiters = idleWaiters;
      idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  /** Wakes up for the next delayed retry. */
  function scheduleDelayed(): void {
    if (timer) clearTimeout(timer);
    timer = undefined;
    const due = repo.nextJobDueAt(types);
    if (due === undefined || running.size >= opts.concurrency) return;
    timer = setTimeout(pump, Math.max(10, due - Date.now()));
    timer.unref();
  }

  async function execute(job: JobRow, signal: AbortSignal): Promise<void> {
    const handler = handlers[job.type]!;
    const log = logger.child({ jobId: job.id, jobType: job.type, fileId: job.fileId, attempt: job.attempts });
    if (job.attempts > maxAttempts) {
      // Claimed again and again without ending: the process stopped during each attempt.
      return giveUp(job, handler, `Processing was interrupted ${maxAttempts} times; giving up.`, log);
    }
    try {
      log.debug('job started');
      await handler.run(job, signal);
      repo.finishJob(job.id, { state: 'done' });
      log.info('job done');
    } catch (err) {
      if (closing && signal.aborted) {
        // Stopped by a shutdown, not by its own fault: the next start runs it again.
        repo.requeueJob(job.id, { refundAttempt: true });
        log.info('job interrupted by shutdown; queued again');
        return;
      }
      const reason = err instanceof Error ? err.message : String(err);
      if (err instanceof FinalJobError || job.attempts >= maxAttempts) return giveUp(job, handler, reason, log, err);
      const delay = retryDelayMs(job.attempts);
      repo.requeueJob(job.id, { runAfter: Date.now() + delay, error: reason });
      log.warn('job failed; will retry', { err, retryInMs: delay });
    }
  }

  async function giveUp(job: JobRow, handler: JobHandler, reason: string, log: Logger, err?: unknown): Promise<void> {
    repo.finishJob(job.id, { state: 'failed', error: reason });
    log.warn('job failed', { reason, err: err instanceof FinalJobError ? undefined : err });
    try {
      await handler.fail(job, reason);
    } catch (failErr) {
      log.error('recording a failed job failed', { err: failErr });
    }
  }

  return {
    /** Resumes what a stopped process left, then runs queued jobs. */
    start(): void {
      const resumed = repo.requeueRunningJobs();
      if (resumed) logger.info('resuming interrupted jobs', { count: resumed });
      started = true;
      closing = false;
      pump();
    },

    enqueue(fileId: string, type: string): JobRow {
      if (!handlers[type]) throw new Error(`No handler for job type ${type}`);
      const job = repo.enqueueJob(fileId, type);
      // After the caller's current step (the upload response) rather than inside it.
      setImmediate(pump);
      return job;
    },

    /** Resolves when nothing runs and nothing waits (delayed retries included). */
    idle(): Promise<void> {
      return new Promise((resolve) => {
        idleWaiters.push(resolve);
        setImmediate(pump);
      });
    },

    get active(): number {
      return running.size;
    },

    /** Stops claiming, aborts running jobs (they are queued again) and waits for them to settle. */
    async close(): Promise<void> {
      closing = true;
      if (timer) clearTimeout(timer);
      for (const { controller } of running.values()) controller.abort();
      await Promise.allSettled([...running.values()].map((r) => r.settled));
      const waiters = idleWaiters;
      idleWaiters = [];
      for (const resolve of waiters) resolve();
    },
  };
}

export type JobRunner = ReturnType<typeof createJobRunner>;
