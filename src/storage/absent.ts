// Stores translate low-level failures where they happen: only ENOENT means "not there". Any other
// failure (EACCES, EIO, EMFILE, ENOTDIR…) is an error that says what failed and keeps its cause, so
// a transient fault is never taken for absence (and, say, every resumable upload released for it).

export class StorageError extends Error {
  override name = 'StorageError';
}

const isAbsent = (err: unknown): boolean => (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';

/** What `read` returns, or `absent` when the thing it reads does not exist; any other failure is a StorageError. */
export async function unlessAbsent<T, A>(what: string, read: () => Promise<T>, absent: A): Promise<T | A> {
  try {
    return await read();
  } catch (err) {
    if (isAbsent(err)) return absent;
    throw new StorageError(`${what} failed: ${(err as Error).message}`, { cause: err });
  }
}
