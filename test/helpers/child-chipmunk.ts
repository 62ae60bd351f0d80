import { startChipmunk } from './chipmunk.js';

// A Chipmunk in a process of its own, so a test can measure its memory from outside.
// Prints one JSON line { url, apiKey, secret, dataDir } once listening; stops on SIGTERM.

const t = await startChipmunk(JSON.parse(process.argv[2] ?? '{}') as Record<string, string>);
process.stdout.write(`${JSON.stringify({ url: t.url, apiKey: t.apiKey, secret: t.secret, dataDir: t.dataDir })}\n`);
process.on('SIGTERM', () => {
  void t.close().finally(() => process.exit(0));
});
