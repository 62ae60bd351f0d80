import type { Logger } from './log.js';

// The order in which the server's parts start and stop. Each part starts after the ones before it
// (recovery before the job runners, the runners before the listeners) and stops in reverse, each
// given the same absolute deadline: what a part does not finish by then it cuts or hands back
// (a job goes back to the queue, a connection is closed).

export type Part = {
  name: string;
  start(): Promise<void>;
  /** `deadline` is a Date.now() value shared by every part of one stop. */
  stop(deadline: number): Promise<void>;
};

export type Lifecycle = ReturnType<typeof createLifecycle>;

export function createLifecycle(parts: readonly Part[], logger: Logger) {
  const started: Part[] = [];
  let stopping: Promise<void> | undefined;

  return {
    /** Starts every part in order; if one fails, the ones already started are stopped again. */
    async start(deadlineOnFailureMs: number): Promise<void> {
      for (const part of parts) {
        try {
          await part.start();
        } catch (err) {
          await this.stop(Date.now() + deadlineOnFailureMs);
          throw err;
        }
        started.push(part);
      }
    },

    /** Stops the started parts in reverse order; a second call returns the first one's promise. */
    stop(deadline: number): Promise<void> {
      stopping ??= (async () => {
        for (const part of [...started].reverse()) {
          try {
            await part.stop(deadline);
          } catch (err) {
            logger.error('a part failed to stop', { part: part.name, err });
          }
        }
        started.length = 0;
      })();
      return stopping;
    },

    get running(): readonly string[] {
      return started.map((p) => p.name);
    },
  };
}
