import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { tempDirEach } from '../../test/helpers/temp-dir.js';
import { StorageError } from './absent.js';
import { createLocalStorage, mediaPath } from './local.js';

// Only ENOENT means "absent". The other failures are real ones made on the spot: a regular file
// where a folder should be gives ENOTDIR (tests run as root, where chmod 000 would deny nothing).

const id = 'a'.repeat(24);
const root = tempDirEach('storage');
let mediaDir: string;
beforeEach(() => {
  mediaDir = path.join(root(), 'media');
});

const storageAt = (media: string) => createLocalStorage({ mediaDir: media, workDir: path.join(root(), 'work') });

describe('local storage', () => {
  it('answers absent for what does not exist', async () => {
    const storage = storageAt(mediaDir);
    expect(await storage.stat(id, '0.jpg')).toBeUndefined();
    expect(await storage.listNames(id)).toEqual([]);
    expect(await storage.listWorkspaces()).toEqual([]);
    const folders: string[] = [];
    for await (const f of storage.listFolders()) folders.push(f);
    expect(folders).toEqual([]);
  });

  it('answers what exists', async () => {
    const storage = storageAt(mediaDir);
    await storage.write(id, '0.jpg', Buffer.from('abc'));
    expect(await storage.stat(id, '0.jpg')).toMatchObject({ size: 3 });
    expect(await storage.listNames(id)).toEqual(['0.jpg']);
    const folders: string[] = [];
    for await (const f of storage.listFolders()) folders.push(f);
    expect(folders).toEqual([id]);
  });

  it('turns any other failure into a StorageError with its cause, never into absence', async () => {
    // The file's folder is a regular file: stat and readdir under it fail with ENOTDIR.
    const folder = mediaPath(mediaDir, id);
    await mkdir(path.dirname(folder), { recursive: true });
    await writeFile(folder, 'not a folder');
    const storage = storageAt(mediaDir);
    const statFailure = await storage.stat(id, '0.jpg').catch((err: unknown) => err);
    expect(statFailure).toBeInstanceOf(StorageError);
    expect((statFailure as Error).message).toMatch(new RegExp(`Reading ${id}/0.jpg failed: ENOTDIR`));
    expect((statFailure as Error).cause).toMatchObject({ code: 'ENOTDIR' });
    await expect(storage.listNames(id)).rejects.toThrow(StorageError);
  });

  it('fails listing folders when the media root cannot be read', async () => {
    const storage = storageAt(mediaDir);
    await rm(mediaDir, { recursive: true });
    await writeFile(mediaDir, 'not a folder');
    const listing = (async () => {
      for await (const _ of storage.listFolders());
    })();
    await expect(listing).rejects.toMatchObject({ name: 'StorageError', cause: { code: 'ENOTDIR' } });
  });
});
