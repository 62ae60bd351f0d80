import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { errors, restoreAppError, type AppError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ImageProcessorOptions } from './images.js';
import type { WorkerError, WorkerReply, WorkerRequest } from './image-worker.js';
import { createLimiter } from './limiter.js';
import type { MediaProcessor, ProcessInput, ProcessResult } from './processor.js';

// Images are processed in worker processes, one image at a time each, as many as
// CHIPMUNK_CONCURRENCY. Three reasons, measured or seen:
// - libvips pipelines in one process hold each other up: two ladders at once gave 1.6× the
//   throughput of one inside a process, 1.95× in two processes, on the same 2-core machine;
// - a decoder that crashes on a hostile file takes down one worker, not the server;
// - the server's event loop never runs image code (option marshalling, thumbhash), so delivery
//   latency does not depend on uploads.
// Workers start on first use and stay; a worker that dies is replaced at the next image.

const here = fileURLToPath(import.meta.url);
// From the TypeScript sources (tests, benches) the worker runs under tsx; from dist/ it is plain JS.
const fromSources = here.endsWith('.ts');
const workerFile = path.join(path.dirname(here), fromSources ? 'image-worker.ts' : 'image-worker.js');

type Pending = { resolve: (result: ProcessResult) => void; reject: (err: AppError) => void };
type Worker = { child: ChildProcess; pending: Map<number, Pending> };

export type ImageWorkerPool = MediaProcessor & {
  readonly queued: number;
  readonly active: number;
  /** Process ids of the live workers (for operators and tests). */
  readonly pids: number[];
  /** Ends the workers; images in flight fail. */
  close(): Promise<void>;
};

export function createImageWorkerPool(opts: ImageProcessorOptions & { logger: Logger }): ImageWorkerPool {
  const size = Math.max(1, opts.concurrency);
  const limit = createLimiter(size);
  const idle: Worker[] = [];
  const all = new Set<Worker>();
  let nextId = 1;
  let closed = false;

  function start(): Worker {
    const child = fork(workerFile, [JSON.stringify({ maxPixels: opts.maxPixels, maxFrames: opts.maxFrames })], {
      execArgv: fromSources ? ['--import', 'tsx'] : [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const worker: Worker = { child, pending: new Map() };
    all.add(worker);
    child.on('message', (reply: WorkerReply) => {
      const waiting = worker.pending.get(reply.id);
      if (!waiting) return;
      worker.pending.delete(reply.id);
      if ('result' in reply) waiting.resolve(reply.result);
      else waiting.reject(rebuild(reply.error));
    });
    child.once('exit', (code, signal) => {
      all.delete(worker);
      const at = idle.indexOf(worker);
      if (at >= 0) idle.splice(at, 1);
      if (worker.pending.size > 0 && !closed) opts.logger.error('image worker died while processing', { code, signal });
      // The image it held is the likely cause (a decoder crash): the client hears it could not be processed.
      for (const waiting of worker.pending.values()) {
        waiting.reject(closed ? errors.internal(new Error('image workers closed')) : errors.unprocessable('The image could not be processed: its decoder stopped. Convert it to JPEG or PNG and upload again.'));
      }
      worker.pending.clear();
    });
    // An idle worker never keeps the server's process alive.
    child.unref();
    child.channel?.unref();
    return worker;
  }

  function runOn(worker: Worker, input: ProcessInput): Promise<ProcessResult> {
    const id = nextId++;
    return new Promise<ProcessResult>((resolve, reject) => {
      worker.pending.set(id, { resolve, reject });
      worker.child.channel?.ref();
      worker.child.send({ id, input } satisfies WorkerRequest, (err) => {
        if (err && worker.pending.delete(id)) reject(errors.internal(err));
      });
    }).finally(() => worker.child.channel?.unref());
  }

  return {
    get queued() {
      return limit.queued;
    },
    get active() {
      return limit.active;
    },
    get pids() {
      return [...all].map((w) => w.child.pid).filter((pid): pid is number => pid !== undefined);
    },
    process: (input) =>
      limit.run(async () => {
        if (closed) throw errors.internal(new Error('image workers closed'));
        // The limiter admits at most `size` images, so an idle or new worker is always at hand.
        const worker = idle.pop() ?? start();
        try {
          return await runOn(worker, input);
        } finally {
          if (all.has(worker)) idle.push(worker);
        }
      }),
    async close() {
      closed = true;
      const exits = [...all].map((w) => new Promise<void>((resolve) => (w.child.exitCode !== null || w.child.signalCode !== null ? resolve() : w.child.once('exit', () => resolve()))));
      for (const w of all) {
        // Held until they are gone: unref'd workers would let the process end in the middle of close().
        w.child.ref();
        w.child.kill('SIGTERM');
      }
      await Promise.all(exits);
    },
  };
}

function rebuild(e: WorkerError): AppError {
  return restoreAppError(e.code, e.status, e.message, e.cause ? new Error(e.cause) : undefined);
}
