import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileIdPattern } from '../ids.js';
import { unlessAbsent } from './absent.js';
import type { BlobStorage } from './storage.js';

/**
 * Processing scratch: one private folder per file under `workDir`, always on this machine's disk
 * (sharp and ffmpeg read and write local files), whichever store keeps the blobs.
 */
export function createWorkspaces(workDir: string): Pick<BlobStorage, 'workspace' | 'discardWorkspace' | 'listWorkspaces' | 'discardAllWorkspaces'> {
  return {
    async workspace(fileId) {
      if (!fileIdPattern.test(fileId)) throw new Error(`Refusing unsafe file id ${JSON.stringify(fileId)}`);
      const dir = path.join(workDir, fileId);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      return dir;
    },

    async discardWorkspace(fileId) {
      if (!fileIdPattern.test(fileId)) return;
      await rm(path.join(workDir, fileId), { recursive: true, force: true });
    },

    async listWorkspaces() {
      return unlessAbsent(`Listing ${workDir}`, () => readdir(workDir), []);
    },

    discardAllWorkspaces: () => emptyFolder(workDir),
  };
}

/**
 * Removes everything inside `dir`, keeping the folder itself: the scratch of a dead process, and its
 * temporary folder (TMPDIR, where @tus/s3-store spools parts). Returns how many entries went.
 */
export async function emptyFolder(dir: string): Promise<number> {
  const names = await unlessAbsent(`Listing ${dir}`, () => readdir(dir), []);
  for (const name of names) await rm(path.join(dir, name), { recursive: true, force: true });
  return names.length;
}
