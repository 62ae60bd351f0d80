import { copyFile, link, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileIdPattern } from '../ids.js';

// Uploads whose last byte arrived, kept (out of the tus area) until their processing job has
// committed or refused them. A crash never loses them; the next start resumes their job. Two
// implementations: the local folder `<data dir>/received/<id>` (the embedded default) and a key
// prefix of the S3 bucket (storage/s3-received.ts), so that any node can run the job.

export interface ReceivedArea {
  /**
   * Keeps the bytes at `from` (the upload area's `dataPath`) as the received upload `id`, leaving `from`
   * in place. True when the bytes are kept (now or by an earlier call); false when `from` is gone and
   * nothing was kept. Safe to call twice and from racing requests.
   */
  keep(id: string, from: string): Promise<boolean>;
  /** Moves the local file `from` here (a carrier that owns its temporary file). */
  take(id: string, from: string): Promise<void>;
  /** Where the received bytes are (a path or a key), or undefined when they are not here. */
  locate(id: string): Promise<string | undefined>;
  /**
   * A local file with the received bytes, for processing: the kept file itself in the local area, a
   * copy fetched into `scratchDir` (the file's processing workspace, removed with it) from the bucket.
   */
  toLocal(id: string, scratchDir: string): Promise<string | undefined>;
  remove(id: string): Promise<void>;
  list(): Promise<string[]>;
}

export function createReceivedArea(dir: string): ReceivedArea & { dir: string; pathOf(id: string): string } {
  const pathOf = (id: string) => {
    if (!fileIdPattern.test(id)) throw new Error(`Refusing unsafe file id ${JSON.stringify(id)}`);
    return path.join(dir, id);
  };
  const exists = async (p: string) => {
    try {
      return (await stat(p)).isFile();
    } catch {
      return false;
    }
  };

  return {
    dir,
    pathOf,

    /** A hard link, so no second copy on disk (a copy across file systems). */
    async keep(id: string, from: string): Promise<boolean> {
      await mkdir(dir, { recursive: true });
      try {
        await link(from, pathOf(id));
        return true;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EEXIST') return true;
        if (code === 'ENOENT') return exists(pathOf(id));
        if (code !== 'EXDEV' && code !== 'EPERM') throw err;
      }
      const temp = `${pathOf(id)}.tmp-${process.pid}`;
      await copyFile(from, temp);
      await rename(temp, pathOf(id));
      return true;
    },

    async take(id: string, from: string): Promise<void> {
      await mkdir(dir, { recursive: true });
      await rename(from, pathOf(id));
    },

    async locate(id: string): Promise<string | undefined> {
      return (await exists(pathOf(id))) ? pathOf(id) : undefined;
    },

    /** Already on this disk: the kept file itself (processing links it, never moves it). */
    async toLocal(id: string): Promise<string | undefined> {
      return (await exists(pathOf(id))) ? pathOf(id) : undefined;
    },

    async remove(id: string): Promise<void> {
      await rm(pathOf(id), { force: true });
    },

    async list(): Promise<string[]> {
      try {
        return (await readdir(dir)).filter((n) => fileIdPattern.test(n));
      } catch {
        return [];
      }
    },
  };
}
