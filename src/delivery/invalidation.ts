// How delivery's caches learn that what /f/ serves for a file may have changed. The writer (the
// repository, after a commit: token rotation, visibility, delete, new or replaced variants) calls
// `changed(fileId)`; each cache subscribed with `onChange` drops what it holds for that file.
// In one process the two ends are the same object; across nodes (issue 16) a PostgreSQL
// LISTEN/NOTIFY listener can call `changed` on every node with the file id the writer notified.

/** A committed change to `fileId`, or to anything (`undefined`: e.g. after a lost notification connection). */
export type DeliveryChangeListener = (fileId: string | undefined) => void;

/** What caches depend on: a subscription to committed changes. */
export type DeliveryInvalidation = {
  /** Returns the unsubscribe. Listeners run synchronously, in the writer's call, after its commit. */
  onChange(listener: DeliveryChangeListener): () => void;
};

/** The in-process channel: the repository's after-commit hook calls `changed`. */
export type DeliveryChanges = DeliveryInvalidation & { changed: DeliveryChangeListener };

export function createDeliveryChanges(): DeliveryChanges {
  const listeners = new Set<DeliveryChangeListener>();
  return {
    onChange(listener) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    changed(fileId) {
      for (const listener of listeners) listener(fileId);
    },
  };
}
