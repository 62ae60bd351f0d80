import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';
import { ObjectStoreError, type PutOptions, type PutResult } from './objects.js';

/**
 * A pass-through that counts and hashes the bytes on their way to a store. When the stream ends
 * with the wrong size or digest it fails instead of ending, so the store never commits the object
 * (a multipart upload is aborted, a temporary file is removed). Too many bytes fail at once.
 */
export function integrityCheck(key: string, expected: PutOptions): Transform & { result(): PutResult } {
  const hash = createHash('sha256');
  let size = 0;
  let digest: string | undefined;
  const transform = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      size += chunk.byteLength;
      if (expected.size !== undefined && size > expected.size) {
        done(sizeMismatch(key, expected.size, size, 'at least '));
        return;
      }
      hash.update(chunk);
      done(null, chunk);
    },
    flush(done) {
      digest = hash.digest('hex');
      done(verify(key, expected, size, digest));
    },
  });
  return Object.assign(transform, {
    result(): PutResult {
      if (digest === undefined) throw new Error('integrityCheck: the stream has not ended');
      return { size, sha256: digest };
    },
  });
}

/** The same check over bytes already in memory: returns what was written, or throws before writing. */
export function checkBuffer(key: string, body: Uint8Array, expected: PutOptions): PutResult {
  const sha256 = createHash('sha256').update(body).digest('hex');
  const failure = verify(key, expected, body.byteLength, sha256);
  if (failure) throw failure;
  return { size: body.byteLength, sha256 };
}

function verify(key: string, expected: PutOptions, size: number, sha256: string): ObjectStoreError | null {
  if (expected.size !== undefined && size !== expected.size) return sizeMismatch(key, expected.size, size, '');
  if (expected.sha256 !== undefined && sha256 !== expected.sha256.toLowerCase()) {
    return new ObjectStoreError('integrity', `Refused ${key}: its SHA-256 is ${sha256}, expected ${expected.sha256}.`);
  }
  return null;
}

const sizeMismatch = (key: string, expected: number, got: number, qualifier: string) =>
  new ObjectStoreError('integrity', `Refused ${key}: ${qualifier}${got} bytes arrived, expected ${expected}.`);
