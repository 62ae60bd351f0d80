import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDirEach } from '../../test/helpers/temp-dir.js';
import { StorageError } from '../storage/absent.js';
import { createUploadArea } from './area.js';

// Recovery releases an upload whose bytes are absent: so only ENOENT may read as absent. Any other
// failure (here ENOTDIR, made by a regular file where the upload folder should be) must be an error.

const id = 'b'.repeat(24);
const root = tempDirEach('area');

describe('upload area', () => {
  it('reads uploads present, and absent ones as absent', async () => {
    const dir = path.join(root(), 'uploads');
    const area = createUploadArea(dir);
    expect(await area.list()).toEqual(new Map());
    await mkdir(dir);
    await writeFile(path.join(dir, id), 'x'.repeat(10));
    await writeFile(path.join(dir, `${id}.json`), JSON.stringify({ id }));
    await writeFile(path.join(dir, 'README'), 'not ours');
    expect([...(await area.list()).values()]).toEqual([{ id, hasSidecar: true }]);
    expect(await area.receivedBytes(id)).toBe(10);
    expect(await area.sidecarReadable(id)).toBe(true);
    expect(await area.receivedBytes('c'.repeat(24))).toBeUndefined();
    expect(await area.sidecarReadable('c'.repeat(24))).toBe(false);
  });

  it('reads a half-written record as unreadable', async () => {
    const dir = path.join(root(), 'uploads');
    await mkdir(dir);
    await writeFile(path.join(dir, `${id}.json`), '{"id":"bbb');
    expect(await createUploadArea(dir).sidecarReadable(id)).toBe(false);
  });

  it('turns any other failure into a StorageError with its cause, never into absence', async () => {
    const dir = path.join(root(), 'uploads');
    await writeFile(dir, 'not a folder');
    const area = createUploadArea(dir);
    // Each read starts only when awaited: made together, a later one rejects unobserved meanwhile.
    for (const attempt of [() => area.list(), () => area.receivedBytes(id), () => area.sidecarReadable(id)]) {
      await expect(attempt()).rejects.toSatisfy((err: unknown) => err instanceof StorageError && (err.cause as NodeJS.ErrnoException).code === 'ENOTDIR');
    }
  });
});
