// In-process wake-ups for requests waiting on a file's processing job: the job settles the file's
// id when it ends (ready, refused, failed, deleted) and every waiter resumes at once, with no polling.

export type CompletionWaits = ReturnType<typeof createCompletionWaits>;

export function createCompletionWaits() {
  const waiters = new Map<string, Set<() => void>>();

  return {
    /**
     * Resolves when `fileId` is settled or after `ms`. `isSettled` is checked after subscribing, so a
     * job that ended just before the call is never missed.
     */
    async wait(fileId: string, ms: number, isSettled: () => Promise<boolean>): Promise<void> {
      let wake!: () => void;
      const woken = new Promise<void>((resolve) => (wake = resolve));
      const set = waiters.get(fileId) ?? new Set();
      set.add(wake);
      waiters.set(fileId, set);
      let timer: NodeJS.Timeout | undefined;
      try {
        if (await isSettled()) return;
        await Promise.race([woken, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
      } finally {
        if (timer) clearTimeout(timer);
        set.delete(wake);
        if (set.size === 0 && waiters.get(fileId) === set) waiters.delete(fileId);
      }
    },

    settle(fileId: string): void {
      for (const wake of waiters.get(fileId) ?? []) wake();
    },

    get waiting(): number {
      let n = 0;
      for (const set of waiters.values()) n += set.size;
      return n;
    },
  };
}
