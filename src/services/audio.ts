import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { UnitOfWork } from '../db/ports.js';
import type { Repository, NewVariant } from '../db/repository.js';
import { fileData } from '../ops/webhooks.js';
import type { FileRow, JobRow } from '../db/schema.js';
import type { EventBus } from '../events.js';
import { FinalJobError, type JobHandler } from '../jobs/runner.js';
import type { Logger } from '../log.js';
import { AudioDecodeError, readAudio, renderAudio } from '../media/audio.js';
import type { AudioFileInfo, AudioInfo, CoverInfo, ImageInfo } from '../media/info.js';
import type { FfmpegTool } from '../media/ffmpeg.js';
import type { MediaLimits, MediaProcessor, ProducedVariant } from '../media/processor.js';
import { defaultMediaBounds, type MediaBounds } from '../media/audio-tags.js';
import { sniffBytes, type Sniffed } from '../media/sniff.js';
import type { BlobStorage } from '../storage/storage.js';

// The background half of a music upload: renditions 1 and 2, the waveform peaks and the cover's image
// ladder, made from the stored original and charged to the track in one step. Safe to run twice: outputs
// are made in a scratch folder, then moved in and recorded together; a rerun replaces them.

export const AUDIO_JOB = 'audio.derive';

export type AudioServiceDeps = {
  repo: Repository;
  uow: UnitOfWork;
  storage: BlobStorage;
  events: EventBus;
  logger: Logger;
  ffmpeg: FfmpegTool | undefined;
  /** The image processor, for the cover's square ladder (like an avatar's). */
  images: MediaProcessor<ImageInfo>;
  /** Memory and time of each media child (tag parser, ffmpeg); default 1 GB and 60 s. */
  bounds?: Omit<MediaBounds, 'signal'>;
  /** The limits of a file's purpose (its duration limit bounds the decode). */
  limitsFor?: (purpose: string) => Partial<MediaLimits>;
};

export function createAudioService(deps: AudioServiceDeps) {
  const { repo, storage, events, logger, ffmpeg } = deps;

  const bounds = deps.bounds ?? defaultMediaBounds;

  async function makeCover(
    file: FileRow,
    sourcePath: string,
    sniffed: Sniffed,
    workDir: string,
    signal: AbortSignal,
  ): Promise<{ variants: ProducedVariant[]; info: CoverInfo } | undefined> {
    let picture;
    try {
      picture = (await readAudio(sourcePath, sniffed, { ...bounds, signal })).cover;
    } catch (err) {
      if (signal.aborted) throw err;
      logger.warn('cover not read', { fileId: file.id, err });
      return undefined;
    }
    if (!picture) return undefined;
    // The picture's own bytes decide what it is, as for any upload; a declared 'image/svg+xml' or junk is skipped.
    const image = sniffBytes(picture.data);
    if (!image || image.kind !== 'image') {
      logger.info('cover skipped: not an image format Chipmunk takes', { fileId: file.id, declared: picture.format });
      return undefined;
    }
    const coverDir = path.join(workDir, 'cover');
    await mkdir(coverDir, { recursive: true });
    const coverPath = path.join(coverDir, `cover-0.${image.ext}`);
    await writeFile(coverPath, picture.data);
    try {
      const ladder = await deps.images.process({ fileId: file.id, sourcePath: coverPath, sniffed: image, square: true, workDir: coverDir, signal });
      return {
        variants: [
          {
            name: 'cover-0',
            file: ladder.original?.file ?? coverPath,
            storedAs: `cover-0.${image.ext}`,
            mimeType: image.mimeType,
            width: ladder.width,
            height: ladder.height,
          },
          ...ladder.variants.map((v) => ({ ...v, name: `cover-${v.name}`, storedAs: `cover-${v.storedAs}` })),
        ],
        info: { ...ladder.info, ...(ladder.width ? { width: ladder.width } : {}), ...(ladder.height ? { height: ladder.height } : {}) },
      };
    } catch (err) {
      if (signal.aborted) throw err;
      // A broken cover does not make the music unplayable: the track is kept without one.
      logger.warn('cover refused by the image processor', { fileId: file.id, err });
      return undefined;
    }
  }

  const handler: JobHandler = {
    maxAttempts: 3,
    async run(job: JobRow, signal: AbortSignal): Promise<void> {
      const file = repo.getStoredFile(job.fileId);
      // Deleted meanwhile, or finished by an earlier run that stopped before recording the job as done.
      if (!file || file.status !== 'processing') return;
      const original = repo.getVariant(file.id, '0');
      if (!original) throw new FinalJobError('The original file is missing.');
      const sniffed: Sniffed = { kind: 'audio', mimeType: file.mimeType ?? 'application/octet-stream', ext: file.ext ?? 'bin' };
      const audioInfo = file.info as unknown as AudioInfo;
      // Leftovers of an interrupted attempt go first.
      await storage.discardWorkspace(file.id);
      const workDir = await storage.workspace(file.id);
      try {
        // ffmpeg and the tag parser read a local file: object storage downloads the original into scratch.
        const sourcePath = await storage.fetchToWorkspace(file.id, original.path);
        const produced: ProducedVariant[] = [];
        const info: Partial<AudioFileInfo> = {};
        if (ffmpeg) {
          const started = Date.now();
          let rendered;
          try {
            const maxDurationSeconds = deps.limitsFor?.(file.purpose).maxDurationSeconds;
            rendered = await renderAudio({ ffmpeg, sourcePath, workDir, info: audioInfo, signal, memoryBytes: bounds.memoryBytes, maxDurationSeconds });
          } catch (err) {
            if (err instanceof AudioDecodeError) throw new FinalJobError(err.message);
            throw err;
          }
          produced.push(...rendered.variants);
          info.renditions = {
            available: true,
            streams: rendered.plans.map((p) => ({
              n: p.n,
              codec: p.codec,
              made: p.mode === 'copy' ? 'copied' : 'encoded',
              ...(p.bitrate ? { bitrate: p.bitrate } : {}),
            })),
          };
          if (audioInfo.durationMs === undefined) info.durationMs = rendered.decodedMs;
          logger.info('audio rendered', { fileId: file.id, ms: Date.now() - started, waveformPoints: rendered.waveform.length });
        }
        const cover = await makeCover(file, sourcePath, sniffed, workDir, signal);
        if (cover) {
          produced.push(...cover.variants);
          info.cover = cover.info;
        }
        if (signal.aborted) throw signal.reason;
        if (!repo.getStoredFile(file.id)) return;
        const stored: NewVariant[] = [];
        for (const v of produced) {
          const bytes = await storage.adopt(file.id, v.storedAs, v.file);
          stored.push({ name: v.name, path: v.storedAs, mimeType: v.mimeType, bytes, width: v.width ?? null, height: v.height ?? null });
        }
        // The renditions are charged (against the budget the track kept) and announced in one unit.
        const updated = await deps.uow.run(async (tx) => {
          const row = await tx.files.addVariants(file.id, stored, { status: 'ready', info, error: null });
          if (row && row !== 'quota') await tx.outbox.add('file.ready', fileData(row), { fileId: row.id, userId: row.userId });
          return row;
        });
        if (updated === 'quota') {
          for (const v of stored) await storage.removeName(file.id, v.path);
          throw new FinalJobError('Storage quota exceeded: the renditions do not fit in the quota.');
        }
        if (!updated) {
          // Deleted while we worked: its folder is going away; make sure what we just moved in goes too.
          await storage.removeFolder(file.id);
          return;
        }
        events.emit('file.ready', updated);
      } finally {
        await storage.discardWorkspace(file.id);
      }
    },

    async fail(job: JobRow, reason: string): Promise<void> {
      const updated = await deps.uow.run(async (tx) => {
        const row = await tx.files.addVariants(job.fileId, [], { status: 'failed', error: reason });
        if (row && row !== 'quota') await tx.outbox.add('file.failed', fileData(row, { reason }), { fileId: row.id, userId: row.userId });
        return row;
      });
      if (updated && updated !== 'quota') events.emit('file.failed', updated, reason);
    },
  };

  return {
    handler,
    /** Whether a stored file needs the background job. */
    needsJob: (file: FileRow) => file.kind === 'audio' && file.status === 'processing',
  };
}

export type AudioService = ReturnType<typeof createAudioService>;
