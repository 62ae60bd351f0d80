// In-process wake-ups for requests waiting on a file's processing job: the job settles the file's
// id when it ends (ready, refused, failed, deleted) and every waiter resumes at once, with no polling.

export type CompletionWaits = ReturnType<typeof createCompletionWaits>;

export function createCompletionWaits() {
  const waiters = new Map<string, Set<() => void>>();
  // Set by a shutdown: waiters answer at once, whatever the file's state.
  let released = false;

  return {
    /**
     * Resolves when `fileId` is settled or after `ms`. `isSettled` is checked after subscribing, so a
     * job that ended just before the call is never missed.
     */
    async wait(fileId: string, ms: number, isSettled: () => Promise<boolean>): Promise<void> {
      let wake!: () => void;
      let woken = new Promise<void>((resolve) => (wake = resolve));
      const set = waiters.get(fileId) ?? new Set();
      set.add(wake);
      waiters.set(fileId, set);
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)));
      try {
        // A wake-up is a hint (another node's announcement may concern a step short of the end): checked again.
        while (!released && !(await isSettled())) {
          if ((await Promise.race([woken, timedOut])) === 'timeout' || released) return;
          set.delete(wake);
          woken = new Promise<void>((resolve) => (wake = resolve));
          set.add(wake);
        }
      } finally {
        if (timer) clearTimeout(timer);
        set.delete(wake);
        if (set.size === 0 && waiters.get(fileId) === set) waiters.delete(fileId);
      }
    },

    settle(fileId: string): void {
      for (const wake of waiters.get(fileId) ?? []) wake();
    },

    /** Wakes every waiter (a shutdown): each answers with the file's state as it is. */
    settleAll(): void {
      released = true;
      for (const set of waiters.values()) for (const wake of set) wake();
    },

    get waiting(): number {
      let n = 0;
      for (const set of waiters.values()) n += set.size;
      return n;
    },
  };
}
