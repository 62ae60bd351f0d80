import { serve, type ServerType } from '@hono/node-server';
import { chmodSync, mkdirSync } from 'node:fs';
import { createServer, type RequestListener, type Server } from 'node:http';
import path from 'node:path';
import { createApp } from './app.js';
import { ConfigError, type Config } from './config.js';
import { openPersistence } from './db/open.js';
import { loadDemoAssets } from './demo/assets.js';
import { createDeliveryLinks } from './delivery/links.js';
import { createDeliveryChanges } from './delivery/invalidation.js';
import { createDeliveryResolver } from './delivery/resolve.js';
import { createDeliveryServer, withDeliveryFastPath } from './delivery/serve.js';
import { createEventBus } from './events.js';
import { createLogger, type Logger } from './log.js';
import { WEBHOOK_JOB } from './db/ports.js';
import { createCompletionWaits } from './jobs/completion.js';
import { createJobRunner } from './jobs/runner.js';
import { createAudioProcessor } from './media/audio.js';
import { describeTools, resolveFfmpeg, type FfmpegTool } from './media/ffmpeg.js';
import { createImageWorkerPool } from './media/image-pool.js';
import { lockDataDir, type DataDirLock } from './db/data-dir-lock.js';
import { createMetrics, observeEvents } from './ops/metrics.js';
import { createReadiness, statfsFreeBytes } from './ops/readiness.js';
import { createRequestContext } from './ops/request-context.js';
import { createWebhooks } from './ops/webhooks.js';
import { keepsOriginalPrivate, loadPurposes, purposeLimits } from './purposes.js';
import { internalAuthListener } from './routes/internal-auth.js';
import { AUDIO_JOB, createAudioService } from './services/audio.js';
import { createFileService } from './services/files.js';
import { createProcessing, PROCESS_JOB } from './services/processing.js';
import { recoverAtStartup, sweepMediaLeftovers, type RecoveryReport } from './services/recovery.js';
import { createUploadService } from './services/uploads.js';
import { openBlobStorage } from './storage/open.js';
import { emptyFolder } from './storage/workspaces.js';
import { S3_MAX_OBJECT_BYTES } from './storage/s3-received.js';
import { openUploadAreas } from './uploads/open.js';
import { sweepExpiredUploads, sweepUploadLeftovers } from './uploads/expiry.js';
import { createIngest } from './uploads/ingest.js';
import { createFinishedUploads } from './uploads/finished.js';
import { createTusServer } from './uploads/tus.js';
import { createTusProtocol } from './uploads/tus-protocol.js';
import { createLifecycle, type Part } from './lifecycle.js';
import { fsck } from './ops/fsck.js';
import type { FileRow } from './db/schema.js';
import { createCors } from './delivery/cors.js';

// The composition root: builds every part from the config and wires them together.
// Tests build a whole Chipmunk in a temporary data directory through this same function.

export type ChipmunkOptions = {
  /** A ready-made logger (tests pass a silent one); otherwise JSON lines on stdout with request ids. */
  logger?: Logger;
  /** Where log lines go when no logger is given (tests capture them). */
  logWrite?: (line: string) => void;
  /** Free bytes of the data volume; statfs by default (tests inject a small disk). */
  freeBytes?: () => Promise<number>;
  /** Finds ffmpeg for /ready; the ffmpeg audio uses by default. */
  ffmpegPath?: () => Promise<string | undefined>;
  /** Node's process metrics in /metrics (on by default). */
  defaultMetrics?: boolean;
  /** An ffmpeg to use instead of FFMPEG_PATH/PATH/the npm one; `null` runs without renditions. */
  ffmpeg?: FfmpegTool | null;
};

export function createChipmunk(config: Config, opts: ChipmunkOptions = {}) {
  const requestContext = createRequestContext();
  const logger = opts.logger ?? createLogger(config.logLevel, {}, opts.logWrite, { context: requestContext.fields });
  // ffmpeg: FFMPEG_PATH, then PATH, then the npm-packaged binary; `opts.ffmpeg: null` runs without.
  // Resolved first: a wrong FFMPEG_PATH stops the start before anything is opened.
  const ffmpeg = opts.ffmpeg === null ? undefined : (opts.ffmpeg ?? resolveFfmpeg({ ffmpegPath: config.ffmpegPath }));
  const mediaTools = describeTools(ffmpeg, opts.ffmpeg === null ? 'off' : config.ffmpegPath);
  const workDir = path.join(config.dataDir, 'work');
  // Unfinished uploads, received bytes and scratch: Chipmunk's alone (0700); the media folder's modes are storage's.
  for (const dir of [config.uploadDir, workDir, path.join(config.dataDir, 'received'), config.tmpDir]) {
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o700);
  }
  // Committed changes to files are announced (on PostgreSQL, by every node); delivery's caches listen.
  const deliveryChanges = createDeliveryChanges();
  // The metadata: SQLite in the data directory, or PostgreSQL when CHIPMUNK_DATABASE_URL is set (db/open.ts).
  // A commit that queued jobs wakes their runner (on PostgreSQL, every node's).
  const persistence = openPersistence(
    config,
    {
      onDeliverablesChanged: deliveryChanges.changed,
      onJobsQueued: () => {
        jobs.wake();
        webhookRunner?.wake();
      },
      onFileSettled: (fileId) => waits.settle(fileId),
      onWarning: (message, fields) => logger.warn(message, fields),
    },
    { webhooksEnabled: config.webhook !== undefined },
  );
  const { repo, uow } = persistence;
  const db = persistence.sqlite;
  // The media blobs: the local media folder, or the S3 bucket when CHIPMUNK_S3_BUCKET is set.
  const blobs = openBlobStorage(config, workDir);
  const storage = blobs.storage;
  // Unfinished and received uploads: the data directory, or the bucket's uploads/ and received/ with CHIPMUNK_S3_BUCKET.
  const uploadAreas = openUploadAreas(config);
  const area = uploadAreas.area;
  const purposes = loadPurposes(
    config.purposesFile,
    {
      maxFrames: config.maxFrames,
      maxAnimationPixels: config.maxAnimationPixels,
      maxDurationSeconds: config.maxDurationSeconds,
    },
    config.s3 ? { bytes: S3_MAX_OBJECT_BYTES, why: 'with CHIPMUNK_S3_BUCKET an upload is one object, which S3 caps at 5 TiB' } : undefined,
  );
  const events = createEventBus();
  const disk = { freeBytes: opts.freeBytes ?? (() => statfsFreeBytes(config.dataDir)), marginBytes: config.diskMarginBytes };
  const received = uploadAreas.received;
  const waits = createCompletionWaits();
  // A file whose processing ends here is announced too: its upload's final PATCH may wait on another node.
  const settleEverywhere = (fileId: string) => {
    waits.settle(fileId);
    persistence.announceSettled(fileId);
  };
  const webhooks = config.webhook
    ? createWebhooks({
        uow,
        events,
        logger,
        options: config.webhook,
        pendingCount: () => repo.pendingWebhookCount(),
        onAttempt: (outcome) => metrics.webhookAttempt(outcome),
      })
    : undefined;
  const queueDepth = async () => {
    const counts = await repo.jobCounts();
    return { jobs: counts.queued + counts.running, webhooks: (await webhooks?.pending()) ?? 0 };
  };
  const metrics = createMetrics(
    { queueDepth, reservations: () => repo.reservationTotals(), jobStates: async () => (await repo.jobCounts()).byType },
    { defaultMetrics: opts.defaultMetrics },
  );
  observeEvents(events, metrics);
  const privateOriginal = (purpose: string) => keepsOriginalPrivate(purposes, purpose);
  const links = createDeliveryLinks({ repo, secret: config.secret, privateOriginal });
  const resolveDelivery = createDeliveryResolver({ repo, invalidation: deliveryChanges, secret: config.secret, privateOriginal });
  const cors = createCors(config.corsOrigins);
  const delivery = createDeliveryServer({
    resolve: resolveDelivery,
    invalidation: deliveryChanges,
    storage,
    logger,
    cors,
    onAnswer: (status) => metrics.deliveryAnswered(status),
  });
  // One pool of image workers (and its concurrency bound) for uploads and for tracks' cover ladders.
  const imageProcessor = createImageWorkerPool({
    maxPixels: config.maxPixels,
    maxFrames: config.maxFrames,
    maxAnimationPixels: config.maxAnimationPixels,
    concurrency: config.concurrency,
    memoryBytes: config.mediaMemoryBytes,
    timeoutMs: config.mediaTimeoutMs,
    logger,
  });
  const mediaBounds = { memoryBytes: config.mediaMemoryBytes, timeoutMs: config.mediaTimeoutMs };
  const audio = createAudioService({
    repo,
    uow,
    storage,
    events,
    logger,
    ffmpeg,
    images: imageProcessor,
    bounds: mediaBounds,
    limitsFor: (name) => (purposes.all().some((p) => p.name === name) ? purposeLimits(purposes.get(name)) : {}),
  });
  const processing = createProcessing({
    uow,
    storage,
    received,
    purposes,
    processors: { image: imageProcessor, audio: createAudioProcessor({ ffmpeg, bounds: mediaBounds, maxDurationSeconds: config.maxDurationSeconds }) },
    events,
    logger,
    waits: { settle: settleEverywhere },
    audioJob: AUDIO_JOB,
    refusalTtlMs: config.uploadExpiryMs,
    carrierPath: area.dataPath,
    discardCarrier: area.discard,
  });
  // One queue, two lanes: media work (fair between users) and webhook deliveries (network-bound).
  const jobs = createJobRunner({
    jobs: uow.ports.jobs,
    logger,
    handlers: { [PROCESS_JOB]: processing.handler, [AUDIO_JOB]: audio.handler },
    concurrency: config.concurrency,
    perUserLimit: config.jobsPerUser,
    onOutcome: (type, outcome) => metrics.jobOutcome(type, outcome),
  });
  const webhookRunner = webhooks
    ? createJobRunner({
        jobs: uow.ports.jobs,
        logger,
        handlers: { [WEBHOOK_JOB]: webhooks.handler },
        concurrency: 4,
        onOutcome: (type, outcome) => metrics.jobOutcome(type, outcome),
      })
    : undefined;
  const files = createFileService({
    repo,
    uow,
    storage,
    received,
    logger,
    events,
    variantUrl: links.variantUrl,
    onDeleted: (fileId) => {
      jobs.abortFile(fileId);
      settleEverywhere(fileId);
    },
  });
  const uploads = createUploadService({
    repo,
    uow,
    received,
    waits,
    purposes,
    logger,
    events,
    defaultQuotaBytes: config.defaultQuotaBytes,
    uploadExpiryMs: config.uploadExpiryMs,
    idleExpiryMs: config.uploadIdleExpiryMs,
    maxUnfinished: { count: config.maxUnfinishedUploads, bytes: config.maxUnfinishedBytes },
    completionWaitMs: config.completionWaitMs,
    disk,
  });
  const tokens = { maxLifetimeSeconds: config.uploadTokenMaxSeconds, uses: persistence.tokenUses };
  const tus = createTusServer({
    tokens,
    area,
    datastore: uploadAreas.datastore,
    onBytesReceived: (n) => metrics.bytesReceived(n),
    secret: config.secret,
    publicUrl: config.publicUrl,
    uploadExpiryMs: config.uploadExpiryMs,
    repo,
    uow,
    uploads,
    files,
    logger,
    // PostgreSQL advisory locks across nodes; tus's in-process MemoryLocker on one node.
    locker: persistence.locker,
  });
  const readiness = createReadiness({
    repo,
    dataDir: config.dataDir,
    disk,
    ffmpegPath: opts.ffmpegPath ?? (async () => mediaTools.ffmpeg?.path),
    queueDepth,
    storageProbe: blobs.probe,
  });
  let stopping = false;
  const inFlight = { requests: 0 };
  const ingest = createIngest({
    dir: path.join(config.dataDir, 'ingest'),
    uploads,
    repo,
    purposes,
    defaultQuotaBytes: config.defaultQuotaBytes,
    logger,
    maxBase64Bytes: 100_000_000,
  });
  const app = createApp({
    config,
    repo,
    purposes,
    files,
    tus: createTusProtocol({ server: tus.server, cors, finished: createFinishedUploads({ uow, uploads, files, publicUrl: config.publicUrl }) }),
    ingest,
    links,
    logger,
    requestContext,
    inFlight,
    ops: { ready: () => readiness.check(), metrics, isStopping: () => stopping },
    tokens,
    demoAssets: config.demo ? loadDemoAssets() : undefined,
  });

  // Background work the process must let finish (or stop) before closing the database.
  const background = new Set<Promise<unknown>>();
  const track = <T>(work: Promise<T>): Promise<T> => {
    background.add(work);
    void work.finally(() => background.delete(work)).catch(() => {});
    return work;
  };

  let sweeping: Promise<number> | undefined;
  const sweep = () => {
    sweeping ??= track(
      sweepExpiredUploads({ repo, uploads, discardUpload: area.discard, logger, shouldStop: () => stopping })
        // Refusals are answered (410) on the upload URL for as long as an upload could have lived.
        .then(async (swept) => {
          await uow.ports.uploads.dropExpiredRefusals(Date.now());
          // Several nodes: what a killed node left in the shared upload and received areas (start-up recovery leaves it here).
          if (persistence.kind === 'postgres') await sweepUploadLeftovers({ repo, area, received, logger, shouldStop: () => stopping });
          return swept;
        })
        .finally(() => {
          sweeping = undefined;
        }),
    );
    return sweeping;
  };
  let recovery: RecoveryReport | undefined;
  const ports = { public: 0, internal: 0 };
  let released: Promise<void> | undefined;
  const releaseResources = () =>
    (released ??= (async () => {
      await imageProcessor.close();
      blobs.close();
      uploadAreas.close();
      await persistence.close();
    })());
  const until = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, ms)).unref());

  // The parts that run, in start order; they stop in reverse, against one deadline (lifecycle.ts).
  let dataDirLock: DataDirLock | undefined;
  const dataDirPart: Part = {
    name: 'data-dir lock',
    // One process per data directory, before anything in it is touched (ops/data-dir-lock.ts).
    async start() {
      dataDirLock = lockDataDir(config.dataDir);
      await persistence.start();
    },
    // The database is closed (its WAL checkpointed) before another process may take the directory.
    async stop() {
      await releaseResources();
      dataDirLock?.release();
    },
  };
  const recoveryPart: Part = {
    name: 'start-up recovery',
    async start() {
      recovery = await recoverAtStartup({
        repo,
        uow,
        storage,
        area,
        received,
        uploads,
        files,
        logger,
        audioJob: AUDIO_JOB,
        // Under the data directory's lock: what is in tmp/ now is a dead process's.
        discardTemporaryFiles: () => emptyFolder(config.tmpDir),
        shared: persistence.kind === 'postgres',
      });
      if (mediaTools.ffmpeg) logger.info('ffmpeg found', mediaTools.ffmpeg);
      else logger.warn('ffmpeg unavailable', { reason: mediaTools.ffmpegMissing });
    },
    stop: async () => undefined,
  };
  let orphanSweep: NodeJS.Timeout | undefined;
  const jobsPart: Part = {
    name: 'job runners',
    async start() {
      await jobs.start();
      await webhookRunner?.start();
      // Several nodes: a node that died left its jobs running; their leases went with it.
      if (persistence.kind === 'postgres') {
        orphanSweep = setInterval(() => {
          persistence.sweepOrphanedJobs().then(
            (n) => {
              if (n === 0) return;
              logger.info('resuming jobs of a node that stopped', { count: n });
              jobs.wake();
              webhookRunner?.wake();
            },
            (err) => logger.warn('sweeping orphaned jobs failed', { err }),
          );
        }, config.orphanSweepMs);
        orphanSweep.unref();
      }
    },
    async stop(deadline) {
      if (orphanSweep) clearInterval(orphanSweep);
      // Jobs get what is left of the deadline; any still running are handed back to the queue.
      await Promise.race([jobs.idle(), until(deadline - Date.now())]);
      await jobs.close();
      await webhookRunner?.close();
    },
  };
  let timer: NodeJS.Timeout | undefined;
  const sweepsPart: Part = {
    name: 'background sweeps',
    async start() {
      await ingest.recoverInterrupted();
      const startedAt = Date.now();
      void sweep().catch((err) => logger.error('expiry sweep failed', { err }));
      track(sweepMediaLeftovers({ repo, storage, logger, startedAt, shouldStop: () => stopping })).catch((err) =>
        logger.error('media leftovers sweep failed', { err }),
      );
      timer = setInterval(() => void sweep().catch((err) => logger.error('expiry sweep failed', { err })), config.expiryIntervalMs);
      timer.unref();
    },
    async stop(deadline) {
      if (timer) clearInterval(timer);
      await Promise.race([Promise.allSettled([...background]), until(deadline + 5_000 - Date.now())]);
    },
  };
  let server: ServerType | undefined;
  let internalServer: Server | undefined;
  const listenersPart: Part = {
    name: 'listeners',
    async start() {
      ports.public = await new Promise<number>((resolve, reject) => {
        // /f/ requests take a fast path before the router and any web Request object.
        const withFastPath = ((options: object, listener: RequestListener) =>
          createServer(
            options,
            withDeliveryFastPath(delivery, listener, (req, res) => requestContext.trackNode(logger, req, res)),
          )) as unknown as typeof createServer;
        server = serve({ fetch: app.fetch, port: config.port, hostname: config.host, createServer: withFastPath }, (info) => resolve(info.port));
        server.once('error', (err: NodeJS.ErrnoException) =>
          reject(
            err.code === 'EADDRINUSE' ? new ConfigError(`Port ${config.port} on ${config.host} is already in use: stop the other server or set PORT.`) : err,
          ),
        );
      });
      // nginx's auth_request endpoint lives on its own port so the public side can never reach it.
      const internal = createServer(
        internalAuthListener({
          resolve: resolveDelivery,
          relativePath: (id, name) => storage.relativePath(id, name),
          locate: blobs.locate,
          authCacheSeconds: config.authCacheSeconds,
          logger,
          onAnswer: (status) => metrics.deliveryAnswered(status),
        }),
      );
      // Longer than nginx's upstream keepalive, so nginx always closes idle connections first.
      internal.keepAliveTimeout = 75_000;
      internalServer = internal;
      ports.internal = await new Promise<number>((resolve, reject) => {
        internal.once('error', (err: NodeJS.ErrnoException) =>
          reject(
            err.code === 'EADDRINUSE'
              ? new ConfigError(
                  `Internal port ${config.internalPort} on ${config.internalHost} is already in use: stop the other server or set CHIPMUNK_INTERNAL_PORT.`,
                )
              : err,
          ),
        );
        internal.listen(config.internalPort, config.internalHost, () => {
          const address = internal.address();
          resolve(typeof address === 'object' && address ? address.port : config.internalPort);
        });
      });
      logger.info('internal auth endpoint listening', { host: config.internalHost, port: ports.internal });
    },
    async stop(deadline) {
      // Requests waiting for a job answer before their connection is cut: the file as it is (processing).
      const settle = setTimeout(() => waits.settleAll(), Math.max(0, deadline - Date.now() - 250));
      settle.unref();
      for (const s of [server, internalServer]) {
        if (!s) continue;
        const closed = new Promise<void>((resolve) => s.close(() => resolve()));
        // Keep-alive connections whose request just finished would otherwise linger until their timeout.
        const idle = setInterval(() => 'closeIdleConnections' in s && s.closeIdleConnections(), 100);
        await Promise.race([closed, until(deadline - Date.now())]);
        clearInterval(idle);
        if ('closeAllConnections' in s) s.closeAllConnections();
        await closed;
      }
      clearTimeout(settle);
      // A handler may still run after its socket was cut (a completion mid-processing): a short grace.
      while (inFlight.requests > 0 && Date.now() < deadline + 5_000) await until(20);
    },
  };
  const lifecycle = createLifecycle([dataDirPart, recoveryPart, sweepsPart, jobsPart, listenersPart], logger);

  /** Read-only views of the state behind the API, for tests and operator tools (writes go through the services). */
  const inspect = {
    file: (fileId: string) => repo.getFile(fileId),
    variants: (fileId: string) => repo.getVariants(fileId),
    variant: (fileId: string, name: string) => repo.getVariant(fileId, name),
    jobs: (fileId: string) => repo.jobsForFile(fileId),
    jobCounts: () => repo.jobCounts(),
    unfinishedJobs: () => repo.unfinishedJobs(),
    usageFromFiles: () => repo.usageFromFiles(),
    reservationTotals: () => repo.reservationTotals(),
    users: () => repo.allUsers(),
    webhooks: () => repo.allWebhooks(),
    filesPage: (afterId: string, limit: number, status?: FileRow['status']) => repo.filesPage(afterId, limit, status),
    /** `chipmunk fsck` on this instance's data (read-only unless `repair`), as if at `now`. */
    fsck: (opts?: Parameters<typeof fsck>[1] & { now?: number }) => fsck({ repo, storage, area, received, now: opts?.now }, opts),
  };

  return {
    config,
    inspect,
    app,
    db,
    repo,
    storage,
    area,
    uploads,
    files,
    links,
    events,
    logger,
    metrics,
    webhooks,
    jobs,
    webhookRunner,
    uow,
    received,
    waits,
    /** Which ffmpeg renders audio (or why none), for the start-up log and readiness checks. */
    mediaTools,
    sweepExpiredUploads: sweep,
    get recovery() {
      return recovery;
    },

    /** Settles what a previous process left half done, then listens; slow cleanups continue in the background. */
    async listen(): Promise<{ port: number; internalPort: number }> {
      await lifecycle.start(config.shutdownTimeoutMs);
      return { port: ports.public, internalPort: ports.internal };
    },

    /**
     * Graceful stop: no new connections, requests and jobs in flight get until the shutdown
     * deadline, then connections are cut; the database is closed last (checkpointing its WAL).
     * An instance that never listened has nothing to wait for.
     */
    async close(): Promise<void> {
      if (stopping) return;
      stopping = true;
      await lifecycle.stop(Date.now() + config.shutdownTimeoutMs);
      await releaseResources();
      logger.info('chipmunk stopped');
    },
  };
}

export type Chipmunk = ReturnType<typeof createChipmunk>;
