import { Transform, type Readable } from 'node:stream';
import type { AppError } from '../errors.js';

// Request bodies read with a ceiling: the count is kept while the bytes stream, so a body with no
// Content-Length (chunked) is stopped as soon as it passes the cap, before it is ever held whole.

/** Passes bytes through and fails with `tooMany()` once more than `max` have gone by. */
export function byteLimit(max: number, tooMany: () => AppError): Transform & { bytes: () => number } {
  let seen = 0;
  const limiter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      if (seen > max) callback(tooMany());
      else callback(null, chunk);
    },
  });
  return Object.assign(limiter, { bytes: () => seen });
}

/**
 * Reads a whole (small) body into one buffer, refusing it as soon as it passes `max` bytes. With a
 * known length the buffer is allocated once and chunks are copied in as they come, so the body is
 * held once, not twice. On refusal the body is left paused, not destroyed, so the answer can still
 * reach the client (the route closes the connection after it).
 */
export function readCapped(body: Readable, max: number, tooMany: () => AppError, expectedLength?: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const whole = expectedLength !== undefined && expectedLength <= max ? Buffer.allocUnsafe(expectedLength) : undefined;
    let total = 0;
    const stop = (err: unknown) => {
      body.off('data', onData);
      body.pause();
      reject(err);
    };
    const onData = (chunk: Buffer) => {
      if (total + chunk.length > max) return stop(tooMany());
      if (whole && total + chunk.length <= whole.length) chunk.copy(whole, total);
      else chunks.push(chunk);
      total += chunk.length;
    };
    body.on('data', onData);
    body.once('error', stop);
    body.once('end', () => {
      if (whole && total === whole.length) resolve(whole);
      else resolve(Buffer.concat(whole ? [whole.subarray(0, Math.min(total, whole.length)), ...chunks] : chunks, total));
    });
  });
}

/**
 * After an early refusal, the client may still be sending. Closing at once makes its kernel drop the
 * answer (a reset), so the rest of the body is read and dropped for a moment; a body that has not
 * ended by then has its connection cut.
 */
export function discardRest(body: Readable, graceMs = 2000): void {
  if (body.readableEnded || body.destroyed) return;
  const timer = setTimeout(() => body.destroy(), graceMs);
  timer.unref();
  const stop = () => clearTimeout(timer);
  body.once('end', stop).once('close', stop);
  body.on('data', () => undefined);
  body.resume();
}
