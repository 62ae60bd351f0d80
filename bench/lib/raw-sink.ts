import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

// The baseline every upload figure is divided by: a bare Node HTTP server, in its own process,
// that pipes each request body to a new file on disk and answers 204.

export async function startRawSink(dir: string): Promise<{ url: string; close(): Promise<void> }> {
  const child = fork(fileURLToPath(new URL('./raw-sink-server.js', import.meta.url)), [dir], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m) => resolve((m as { port: number }).port));
    child.once('error', reject);
  });
  return {
    url: `http://127.0.0.1:${port}/`,
    close: async () => {
      child.kill('SIGTERM');
    },
  };
}
