import type { ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AppError, errors, restoreAppError } from '../errors.js';
import { forkBounded, killGroup, looksLikeMemoryFailure } from './bounded.js';
import type { Logger } from '../log.js';
import type { ImageProcessorOptions } from './images.js';
import type { WorkerError, WorkerReply, WorkerRequest } from './image-worker.js';
import { createLimiter } from './limiter.js';
import type { ImageInfo } from './info.js';
import type { MediaProcessor, ProcessInput, ProcessResult } from './processor.js';

// Images are processed in worker processes, one image at a time each, as many as
// CHIPMUNK_CONCURRENCY. Three reasons, measured or seen:
// - libvips pipelines in one process hold each other up: two ladders at once gave 1.6× the
//   throughput of one inside a process, 1.95× in two processes, on the same 2-core machine;
// - a decoder that crashes on a hostile file takes down one worker, not the server;
// - the server's event loop never runs image code (option marshalling, thumbhash), so delivery
//   latency does not depend on uploads.
// Workers start on first use and stay; a worker that dies is replaced at the next image.
// Each is a bounded child (bounded.ts): memory-capped, in its own process group (a SIGTERM to the
// server's group or a Ctrl-C does not reach it; close() decides), killed by the kernel if the server
// dies. One image gets CHIPMUNK_MEDIA_TIMEOUT: past it, or past its memory, the worker is killed and the
// image refused (422), the verdict on a file that asks too much. A worker that dies of anything else
// (killed from outside, crashed, closed) fails its image as a server-side error: retried, never a 422.

const here = fileURLToPath(import.meta.url);
// From the TypeScript sources (tests, benches) the worker runs under tsx; from dist/ it is plain JS.
const fromSources = here.endsWith('.ts');
const workerFile = path.join(path.dirname(here), fromSources ? 'image-worker.ts' : 'image-worker.js');

type Pending = { resolve: (result: ProcessResult<ImageInfo>) => void; reject: (err: Error) => void };
type Worker = {
  child: ChildProcess;
  pending: Map<number, Pending>;
  /** Why the pool killed it, when it did. */
  killedFor?: 'timeout' | 'aborted';
  abortReason?: unknown;
  /** The tail of its stderr: V8 and libvips say there when memory ran out. */
  stderr: string;
  /** Started (its modules loaded): a worker that dies before is a server fault, never the image's. */
  ready: boolean;
  whenReady: Array<() => void>;
};

export type ImageWorkerPoolOptions = ImageProcessorOptions & {
  logger: Logger;
  /** Working memory of one worker (on top of what Node reserves); default 1 GB. */
  memoryBytes?: number;
  /** Wall-clock limit of one image; default 60 s. */
  timeoutMs?: number;
};

export type ImageWorkerPool = MediaProcessor<ImageInfo> & {
  readonly queued: number;
  readonly active: number;
  /** Process ids of the live workers (for operators and tests). */
  readonly pids: number[];
  /** Ends the workers; images in flight fail. */
  close(): Promise<void>;
};

export function createImageWorkerPool(opts: ImageWorkerPoolOptions): ImageWorkerPool {
  const size = Math.max(1, opts.concurrency);
  const limit = createLimiter(size);
  const memoryBytes = opts.memoryBytes ?? 1_000_000_000;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const idle: Worker[] = [];
  const all = new Set<Worker>();
  let nextId = 1;
  let closed = false;

  function start(): Worker {
    const settings = { maxPixels: opts.maxPixels, maxFrames: opts.maxFrames, maxAnimationPixels: opts.maxAnimationPixels };
    const child = forkBounded(workerFile, [JSON.stringify(settings)], {
      memoryBytes,
      // The JS heap holds little (options, thumbhash); pixels live in libvips' memory.
      heapMb: 256,
      capAddressSpace: !fromSources,
      execArgv: fromSources ? ['--import', 'tsx'] : [],
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    });
    const worker: Worker = { child, pending: new Map(), stderr: '', ready: false, whenReady: [] };
    all.add(worker);
    child.stderr!.on('data', (chunk: Buffer) => {
      worker.stderr = (worker.stderr + chunk.toString('utf8')).slice(-8192);
      process.stderr.write(chunk);
    });
    // The pipe would keep the server alive as much as the worker would.
    (child.stderr as Socket).unref();
    child.on('message', (reply: WorkerReply | { ready: true }) => {
      if ('ready' in reply) {
        worker.ready = true;
        for (const go of worker.whenReady.splice(0)) go();
        return;
      }
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
      if (worker.pending.size === 0) return;
      const failure = whyItDied(worker, { code, signal });
      if (!(failure instanceof AppError) && !closed && worker.killedFor !== 'aborted')
        opts.logger.error('image worker died while processing', { code, signal, stderr: worker.stderr.slice(-500) });
      for (const waiting of worker.pending.values()) waiting.reject(failure);
      worker.pending.clear();
    });
    // An idle worker never keeps the server's process alive.
    child.unref();
    child.channel?.unref();
    return worker;
  }

  function whyItDied(worker: Worker, end: { code: number | null; signal: NodeJS.Signals | null }): Error {
    if (worker.killedFor === 'aborted')
      return worker.abortReason instanceof Error ? worker.abortReason : new Error('image processing was cancelled', { cause: worker.abortReason });
    if (!worker.ready)
      return new Error(`The image worker could not start (${end.signal ?? `exit code ${end.code}`}): ${worker.stderr.trim().split('\n').pop() ?? ''}`);
    if (worker.killedFor === 'timeout') {
      return errors.unprocessable(
        `Processing the image took longer than ${Number((timeoutMs / 1000).toFixed(1))} s, the limit for one file. Scale it down or convert it to JPEG and upload again.`,
      );
    }
    if (looksLikeMemoryFailure(worker.stderr)) {
      return errors.unprocessable(
        `Decoding the image needs more than the ${Math.round(memoryBytes / 1e6)} MB of memory this server allows for one file. Scale it down or convert it to JPEG and upload again.`,
      );
    }
    // Closed, killed from outside, crashed: nothing says the image is at fault, so it may be tried again.
    const how = closed ? 'the image workers were closed' : end.signal ? `killed by ${end.signal}` : `exit code ${end.code}`;
    return new Error(`The image worker stopped before it answered (${how}).`);
  }

  function runOn(worker: Worker, input: ProcessInput): Promise<ProcessResult<ImageInfo>> {
    const id = nextId++;
    const { signal, ...request } = input;
    // Timeouts and aborts kill the whole worker: a decoder cannot be interrupted from inside.
    const kill = (why: 'timeout' | 'aborted') => {
      worker.killedFor ??= why;
      if (why === 'aborted') worker.abortReason = signal?.reason;
      killGroup(worker.child);
    };
    // The image's time starts when the worker is up: a slow start is not the image's fault.
    let timer: NodeJS.Timeout | undefined;
    const startClock = () => (timer = setTimeout(() => kill('timeout'), timeoutMs));
    if (worker.ready) startClock();
    else worker.whenReady.push(startClock);
    const onAbort = () => kill('aborted');
    return new Promise<ProcessResult<ImageInfo>>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason instanceof Error ? signal.reason : new Error('image processing was cancelled'));
      signal?.addEventListener('abort', onAbort, { once: true });
      worker.pending.set(id, { resolve, reject });
      worker.child.channel?.ref();
      worker.child.send({ id, input: request } satisfies WorkerRequest, (err) => {
        if (err && worker.pending.delete(id)) reject(err);
      });
    }).finally(() => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      worker.child.channel?.unref();
    });
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
        if (closed) throw new Error('The image workers are closed.');
        // The limiter admits at most `size` images, so an idle or new worker is always at hand.
        const worker = idle.pop() ?? start();
        try {
          return await runOn(worker, input);
        } finally {
          if (all.has(worker) && !worker.killedFor) idle.push(worker);
        }
      }),
    async close() {
      closed = true;
      const exits = [...all].map(
        (w) => new Promise<void>((resolve) => (w.child.exitCode !== null || w.child.signalCode !== null ? resolve() : w.child.once('exit', () => resolve()))),
      );
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
