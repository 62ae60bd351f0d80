import { serve, type ServerType } from '@hono/node-server';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { createApp } from './app.js';
import type { Config } from './config.js';
import { openDatabase } from './db/index.js';
import { createRepository } from './db/repository.js';
import { loadDemoAssets } from './demo/assets.js';
import { createEventBus } from './events.js';
import { createLogger, type Logger } from './log.js';
import { originalOnlyProcessor } from './media/processor.js';
import { loadPurposes } from './purposes.js';
import { createFileService } from './services/files.js';
import { createUploadService } from './services/uploads.js';
import { createLocalStorage } from './storage/local.js';
import { sweepExpiredUploads } from './uploads/expiry.js';
import { createTusServer } from './uploads/tus.js';

// The composition root: builds every part from the config and wires them together.
// Tests build a whole Chipmunk in a temporary data directory through this same function.

export function createChipmunk(config: Config, opts: { logger?: Logger } = {}) {
  const logger = opts.logger ?? createLogger(config.logLevel);
  for (const dir of [config.uploadDir, config.mediaDir]) mkdirSync(dir, { recursive: true });
  const db = openDatabase(config.databasePath);
  const repo = createRepository(db);
  const storage = createLocalStorage({ mediaDir: config.mediaDir, workDir: path.join(config.dataDir, 'work') });
  const purposes = loadPurposes(config.purposesFile);
  const events = createEventBus();
  const files = createFileService({ repo, storage, logger, events });
  const uploads = createUploadService({
    repo,
    storage,
    purposes,
    processors: { image: originalOnlyProcessor, audio: originalOnlyProcessor },
    logger,
    events,
    defaultQuotaBytes: config.defaultQuotaBytes,
    uploadExpiryMs: config.uploadExpiryMs,
  });
  const tus = createTusServer({ uploadDir: config.uploadDir, secret: config.secret, publicUrl: config.publicUrl, uploadExpiryMs: config.uploadExpiryMs, repo, uploads, files, logger });
  const app = createApp({ config, repo, purposes, files, tus: tus.server, logger, demoAssets: config.demo ? loadDemoAssets() : undefined });

  const sweep = () => sweepExpiredUploads({ repo, uploads, discardUpload: tus.discardUpload, logger });
  let server: ServerType | undefined;
  let timer: NodeJS.Timeout | undefined;

  return {
    config,
    app,
    db,
    repo,
    storage,
    uploads,
    files,
    events,
    logger,
    sweepExpiredUploads: sweep,

    /** Finishes work a previous process left half done, then listens. */
    async listen(): Promise<{ port: number }> {
      await files.finishInterruptedDeletes();
      await sweep();
      timer = setInterval(() => void sweep().catch((err) => logger.error('expiry sweep failed', { err })), config.expiryIntervalMs);
      timer.unref();
      return new Promise((resolve) => {
        server = serve({ fetch: app.fetch, port: config.port, hostname: config.host }, (info) => resolve({ port: info.port }));
      });
    },

    async close(): Promise<void> {
      if (timer) clearInterval(timer);
      if (server) {
        const s = server;
        await new Promise<void>((resolve) => s.close(() => resolve()));
        if ('closeAllConnections' in s) s.closeAllConnections();
      }
      db.$client.close();
    },
  };
}

export type Chipmunk = ReturnType<typeof createChipmunk>;
