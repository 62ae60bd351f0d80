import { rm, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Repository } from '../db/repository.js';

// GET /ready: can this process do its job right now? Each check answers ok plus a detail; any
// failed check makes the answer 503, so a load balancer stops sending uploads here.

export type ReadinessCheck = { ok: boolean; detail?: string | number | Record<string, number> };
export type ReadinessReport = { ready: boolean; checks: Record<string, ReadinessCheck> };

export type ReadinessDeps = {
  repo: Repository;
  dataDir: string;
  disk: { freeBytes(): Promise<number>; marginBytes: number };
  /** The ffmpeg executable, or undefined when none is found. */
  ffmpegPath: () => Promise<string | undefined>;
  queueDepth: () => Promise<Record<string, number>>;
  /** With the blobs in a bucket: resolves when the bucket answers (a one-key listing). */
  storageProbe?: () => Promise<void>;
};

/** Free bytes for an unprivileged writer on the volume holding `dir`. */
export async function statfsFreeBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return Number(s.bavail) * Number(s.bsize);
}

export function createReadiness(deps: ReadinessDeps) {
  let ffmpeg: string | undefined;
  return {
    async check(): Promise<ReadinessReport> {
      const checks: Record<string, ReadinessCheck> = {};
      try {
        await deps.repo.probeWrite();
        checks.database = { ok: true };
      } catch (err) {
        checks.database = { ok: false, detail: (err as Error).message };
      }
      const probe = path.join(deps.dataDir, `.ready-${process.pid}-${Date.now()}`);
      try {
        await writeFile(probe, 'ok');
        await rm(probe, { force: true });
        checks.dataDir = { ok: true };
      } catch (err) {
        checks.dataDir = { ok: false, detail: (err as NodeJS.ErrnoException).code ?? (err as Error).message };
      }
      try {
        const free = await deps.disk.freeBytes();
        checks.disk = { ok: free > deps.disk.marginBytes, detail: { freeBytes: free, marginBytes: deps.disk.marginBytes } };
      } catch (err) {
        checks.disk = { ok: false, detail: (err as Error).message };
      }
      if (deps.storageProbe) {
        try {
          await deps.storageProbe();
          checks.storage = { ok: true };
        } catch (err) {
          checks.storage = { ok: false, detail: (err as Error).message };
        }
      }
      ffmpeg ??= await deps.ffmpegPath();
      checks.ffmpeg = ffmpeg ? { ok: true, detail: ffmpeg } : { ok: false, detail: 'ffmpeg not found (audio cannot be processed)' };
      try {
        checks.queue = { ok: true, detail: await deps.queueDepth() };
      } catch (err) {
        checks.queue = { ok: false, detail: (err as Error).message };
      }
      return { ready: Object.values(checks).every((c) => c.ok), checks };
    },
  };
}
