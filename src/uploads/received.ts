import { copyFile, link, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileIdPattern } from '../ids.js';

// Uploads whose last byte arrived, kept here (out of the tus area) until their processing job has
// committed or refused them: `<data dir>/received/<id>`. A crash never loses them; the next start
// resumes their job.

export type ReceivedArea = ReturnType<typeof createReceivedArea>;

export function createReceivedArea(dir: string) {
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

    /**
     * Keeps the bytes of `from` as the received upload `id`, leaving `from` in place (a hard link, so no
     * second copy on disk; a copy across file systems). Safe to call twice and from racing requests.
     */
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

    /** Moves `from` here (a carrier that owns its temporary file). */
    async take(id: string, from: string): Promise<void> {
      await mkdir(dir, { recursive: true });
      await rename(from, pathOf(id));
    },

    /** The received bytes, or undefined when they are not here. */
    async locate(id: string): Promise<string | undefined> {
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
