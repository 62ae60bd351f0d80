import { createReadStream } from 'node:fs';
import { chmodSync, chownSync, mkdirSync } from 'node:fs';
import { chmod, chown, copyFile, mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileIdPattern } from '../ids.js';
import { unlessAbsent } from './absent.js';
import type { BlobStorage } from './storage.js';
import { createWorkspaces } from './workspaces.js';

const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** The one place a path on disk is built from an id and a name; anything unexpected is refused. */
export function mediaPath(mediaRoot: string, fileId: string, name?: string): string {
  if (!fileIdPattern.test(fileId)) throw new Error(`Refusing unsafe file id ${JSON.stringify(fileId)}`);
  // Two fan-out levels keep directories small: a million files spread over 1,296 × 1,296 folders.
  const folder = path.join(mediaRoot, fileId.slice(0, 2), fileId.slice(2, 4), fileId);
  if (name === undefined) return folder;
  if (!namePattern.test(name) || name.includes('..')) throw new Error(`Refusing unsafe file name ${JSON.stringify(name)}`);
  return path.join(folder, name);
}

// Modes: the media are for Chipmunk and nginx only — folders 0750, blobs 0640, readable through a
// group (CHIPMUNK_MEDIA_GROUP, nginx's worker group) and by no one else. Processing scratch is 0700.
const FOLDER_MODE = 0o750;
const BLOB_MODE = 0o640;

export function createLocalStorage(opts: { mediaDir: string; workDir: string; mediaGid?: number }): BlobStorage {
  const { mediaDir, workDir, mediaGid } = opts;
  mkdirSync(mediaDir, { recursive: true, mode: FOLDER_MODE });
  chmodSync(mediaDir, FOLDER_MODE);
  if (mediaGid !== undefined) chownSync(mediaDir, -1, mediaGid);
  const share = async (target: string, mode: number) => {
    await chmod(target, mode);
    if (mediaGid !== undefined) await chown(target, -1, mediaGid);
  };

  async function ensureFolder(fileId: string): Promise<string> {
    const folder = mediaPath(mediaDir, fileId);
    const first = await mkdir(folder, { recursive: true, mode: FOLDER_MODE });
    // Each fan-out level this call created gets the media group.
    if (first) for (let dir = folder; dir.length >= first.length; dir = path.dirname(dir)) await share(dir, FOLDER_MODE);
    return folder;
  }

  const workspaces = createWorkspaces(workDir);
  const tempName = (target: string) => `${target}.tmp-${randomBytes(4).toString('hex')}`;

  return {
    async adopt(fileId, name, sourcePath) {
      await ensureFolder(fileId);
      const target = mediaPath(mediaDir, fileId, name);
      try {
        await rename(sourcePath, target);
      } catch (err) {
        // Another device (a separate uploads volume): copy to a temporary name, then rename.
        if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
        const temp = tempName(target);
        await copyFile(sourcePath, temp);
        await rename(temp, target);
        await unlink(sourcePath);
      }
      // Uploads and scratch are private to Chipmunk; in the media folder nginx's group may read.
      await share(target, BLOB_MODE);
      return (await stat(target)).size;
    },

    async write(fileId, name, data) {
      await ensureFolder(fileId);
      const target = mediaPath(mediaDir, fileId, name);
      const temp = tempName(target);
      const handle = await open(temp, 'w', BLOB_MODE);
      try {
        await handle.writeFile(data);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await share(temp, BLOB_MODE);
      await rename(temp, target);
      return data.byteLength;
    },

    ...workspaces,

    // The blob itself: a local store's files are already where sharp and ffmpeg can read them.
    async fetchToWorkspace(fileId, name) {
      return mediaPath(mediaDir, fileId, name);
    },

    async stat(fileId, name) {
      const file = mediaPath(mediaDir, fileId, name);
      const s = await unlessAbsent(`Reading ${fileId}/${name}`, () => stat(file), undefined);
      return s?.isFile() ? { size: s.size, mtimeMs: s.mtimeMs } : undefined;
    },

    read(fileId, name, range) {
      return createReadStream(mediaPath(mediaDir, fileId, name), range ? { start: range.start, end: range.end } : undefined);
    },

    async removeName(fileId, name) {
      await rm(mediaPath(mediaDir, fileId, name), { force: true });
    },

    async removeFolder(fileId) {
      await rm(mediaPath(mediaDir, fileId), { recursive: true, force: true });
    },

    async *listFolders() {
      for (const a of await subfolders(mediaDir)) {
        for (const b of await subfolders(path.join(mediaDir, a))) {
          for (const id of await readdirSafe(path.join(mediaDir, a, b))) yield id;
        }
      }
    },

    async listNames(fileId) {
      return readdirSafe(mediaPath(mediaDir, fileId));
    },

    relativePath(fileId, name) {
      return path
        .relative(mediaDir, mediaPath(mediaDir, fileId, name))
        .split(path.sep)
        .join('/');
    },
  };
}

/** A folder's names; none when it does not exist (yet). */
function readdirSafe(dir: string): Promise<string[]> {
  return unlessAbsent(`Listing ${dir}`, () => readdir(dir), []);
}

/** The folders inside a folder (a stray file at a fan-out level is not a file's folder). */
async function subfolders(dir: string): Promise<string[]> {
  const entries = await unlessAbsent(`Listing ${dir}`, () => readdir(dir, { withFileTypes: true }), []);
  return entries.filter((e) => e.isDirectory()).map((e) => e.name);
}
