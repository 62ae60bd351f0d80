import { AppError, errors } from '../errors.js';
import { createImageProcessor, type ImageProcessorOptions } from './images.js';
import type { ImageInfo } from './info.js';
import type { ProcessInput, ProcessResult } from './processor.js';

// One image worker process (forked by image-pool.ts): it runs the image processor for one image at
// a time and answers over the IPC channel. Refusals travel as their code, status and message.

export type WorkerRequest = { id: number; input: ProcessInput };
export type WorkerError = { code: string; status: number; message: string; cause?: string };
export type WorkerReply = { id: number; result: ProcessResult<ImageInfo> } | { id: number; error: WorkerError };

const options = JSON.parse(process.argv[2] ?? '{}') as Omit<ImageProcessorOptions, 'concurrency'>;
const processor = createImageProcessor({ ...options, concurrency: 1 });

process.on('message', (request: WorkerRequest) => {
  processor.process(request.input).then(
    (result) => reply({ id: request.id, result }),
    (err: unknown) => reply({ id: request.id, error: describe(err) }),
  );
});
// The pool closing the channel (or dying) ends the worker.
process.on('disconnect', () => process.exit(0));
// The server decides when its workers stop (after the images in flight): a worker leads its own
// process group, and a stray interrupt sent to it alone is left to the server as well.
process.on('SIGINT', () => {});

// Loaded: from here on, a death is about the image it holds (the pool tells the two apart).
process.send?.({ ready: true });

function reply(message: WorkerReply): void {
  process.send?.(message);
}

/**
 * A refusal keeps its sentence; anything else becomes the generic internal error, its message and
 * stack kept only as the cause (for the server's log): a client never sees a stack or a server path.
 */
function describe(err: unknown): WorkerError {
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause.message : undefined;
  if (err instanceof AppError) return { code: err.code, status: err.status, message: err.message, cause };
  const internal = errors.internal();
  return { code: internal.code, status: internal.status, message: internal.message, cause: String((err as Error)?.stack ?? err) };
}
