import { serve, type ServerType } from '@hono/node-server';
import { mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import { createApp } from './app.js';
import type { Config } from './config.js';
import { openDatabase } from './db/index.js';
import { createRepository } from './db/repository.js';
import { loadDemoAssets } from './demo/assets.js';
import { createDeliveryLinks } from './delivery/links.js';
import { createDeliveryResolver } from './delivery/resolve.js';
import { createDeliveryServer } from './delivery/serve.js';
import { createEventBus } from './events.js';
import { createLogger, type Logger } from './log.js';
import { createJobRunner } from './jobs/runner.js';
import { createAudioProcessor } from './media/audio.js';
import { describeTools, resolveFfmpeg, type FfmpegTool } from './media/ffmpeg.js';
import { createImageProcessor } from './media/images.js';
import { loadPurposes } from './purposes.js';
import { internalAuthListener } from './routes/internal-auth.js';
import { AUDIO_JOB, createAudioService } from './services/audio.js';
import { createFileService } from './services/files.js';
import { createUploadService } from './services/uploads.js';
import { createLocalStorage } from './storage/local.js';
import { sweepExpiredUploads } from './uploads/expiry.js';
import { createTusServer } from './uploads/tus.js';

// The composition root: builds every part from the config and wires them together.
// Tests build a whole Chipmunk in a temporary data directory through this same function.

export function createChipmunk(config: Config, opts: { logger?: Logger; ffmpeg?: FfmpegTool | null } = {}) {
  const logger = opts.logger ?? createLogger(config.logLevel);
  // ffmpeg: FFMPEG_PATH, then PATH, then the npm-packaged binary; `opts.ffmpeg: null` runs without.
  // Resolved first: a wrong FFMPEG_PATH stops the start before anything is opened.
  const ffmpeg = opts.ffmpeg === null ? undefined : (opts.ffmpeg ?? resolveFfmpeg({ ffmpegPath: config.ffmpegPath }));
  const mediaTools = describeTools(ffmpeg, opts.ffmpeg === null ? 'off' : config.ffmpegPath);
  for (const dir of [config.uploadDir, config.mediaDir]) mkdirSync(dir, { recursive: true });
  const db = openDatabase(config.databasePath);
  const repo = createRepository(db);
  const storage = createLocalStorage({ mediaDir: config.mediaDir, workDir: path.join(config.dataDir, 'work') });
  const purposes = loadPurposes(config.purposesFile);
  const events = createEventBus();
  const links = createDeliveryLinks({ repo, secret: config.secret });
  const resolveDelivery = createDeliveryResolver({ repo, storage, secret: config.secret });
  const delivery = createDeliveryServer({ resolve: resolveDelivery, storage, logger });
  const files = createFileService({ repo, storage, logger, events, variantUrl: links.variantUrl });
  const imageProcessor = createImageProcessor({ maxPixels: config.maxPixels, maxFrames: config.maxFrames, concurrency: config.concurrency });
  const audio = createAudioService({ repo, storage, events, logger, ffmpeg, images: imageProcessor });
  // Each audio job runs two ffmpeg processes side by side, so half as many jobs as cores.
  const jobs = createJobRunner({ repo, logger, handlers: { [AUDIO_JOB]: audio.handler }, concurrency: Math.max(1, Math.floor(config.concurrency / 2)) });
  const uploads = createUploadService({
    repo,
    storage,
    purposes,
    processors: { image: imageProcessor, audio: createAudioProcessor({ ffmpeg }) },
    logger,
    events,
    defaultQuotaBytes: config.defaultQuotaBytes,
    uploadExpiryMs: config.uploadExpiryMs,
    onStored: (file) => {
      if (audio.needsJob(file)) jobs.enqueue(file.id, AUDIO_JOB);
    },
  });
  const tus = createTusServer({ uploadDir: config.uploadDir, secret: config.secret, publicUrl: config.publicUrl, uploadExpiryMs: config.uploadExpiryMs, repo, uploads, files, logger });
  const app = createApp({ config, repo, purposes, files, tus: tus.server, delivery, links, logger, demoAssets: config.demo ? loadDemoAssets() : undefined });

  const sweep = () => sweepExpiredUploads({ repo, uploads, discardUpload: tus.discardUpload, logger });
  let server: ServerType | undefined;
  let internalServer: Server | undefined;
  let timer: NodeJS.Timeout | undefined;

  return {
    config,
    app,
    db,
    repo,
    storage,
    uploads,
    files,
    links,
    events,
    logger,
    jobs,
    /** Which ffmpeg renders audio (or why none), for the start-up log and readiness checks. */
    mediaTools,
    sweepExpiredUploads: sweep,

    /** Finishes work a previous process left half done, then listens (public port, then internal port). */
    async listen(): Promise<{ port: number; internalPort: number }> {
      if (mediaTools.ffmpeg) logger.info('ffmpeg found', mediaTools.ffmpeg);
      else logger.warn('ffmpeg unavailable', { reason: mediaTools.ffmpegMissing });
      await files.finishInterruptedDeletes();
      // A stop between an upload's commit and its enqueue leaves a track 'processing' with no job.
      for (const file of repo.processingFilesWithoutJob('audio', AUDIO_JOB)) repo.enqueueJob(file.id, AUDIO_JOB);
      jobs.start();
      await sweep();
      timer = setInterval(() => void sweep().catch((err) => logger.error('expiry sweep failed', { err })), config.expiryIntervalMs);
      timer.unref();
      const { port } = await new Promise<{ port: number }>((resolve) => {
        server = serve({ fetch: app.fetch, port: config.port, hostname: config.host }, (info) => resolve({ port: info.port }));
      });
      // nginx's auth_request endpoint lives on its own port so the public side can never reach it.
      const internal = createServer(internalAuthListener({ resolve: resolveDelivery, authCacheSeconds: config.authCacheSeconds, logger }));
      // Longer than nginx's upstream keepalive, so nginx always closes idle connections first.
      internal.keepAliveTimeout = 75_000;
      internalServer = internal;
      const internalPort = await new Promise<number>((resolve, reject) => {
        internal.once('error', reject);
        internal.listen(config.internalPort, config.internalHost, () => {
          const address = internal.address();
          resolve(typeof address === 'object' && address ? address.port : config.internalPort);
        });
      });
      return { port, internalPort };
    },

    async close(): Promise<void> {
      if (timer) clearInterval(timer);
      await jobs.close();
      for (const s of [server, internalServer]) {
        if (!s) continue;
        const closed = new Promise<void>((resolve) => s.close(() => resolve()));
        if ('closeIdleConnections' in s) s.closeIdleConnections();
        await closed;
        if ('closeAllConnections' in s) s.closeAllConnections();
      }
      db.$client.close();
    },
  };
}

export type Chipmunk = ReturnType<typeof createChipmunk>;
