import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDirEach } from '../../test/helpers/temp-dir.js';
import type { FileRow } from '../db/schema.js';
import { silentLogger } from '../log.js';
import { createUploadArea } from './area.js';
import { createReceivedArea } from './received.js';
import { sweepUploadLeftovers } from './expiry.js';

// Several nodes: a killed node's upload-area objects are removed by the rows they belong to, never
// those of an upload in flight or of received bytes still waiting for their processing.

const root = tempDirEach('expiry');
const id = (c: string) => c.repeat(24);

describe('sweepUploadLeftovers', () => {
  it('removes the upload and received entries of files stored, deleting or gone, and keeps uploads in flight and bytes awaiting processing', async () => {
    const dir = path.join(root(), 'uploads');
    const receivedDir = path.join(root(), 'received');
    await mkdir(dir);
    await mkdir(receivedDir);
    const rows: Record<string, Pick<FileRow, 'status' | 'committedAt'>> = {
      [id('a')]: { status: 'uploading', committedAt: null },
      [id('b')]: { status: 'received', committedAt: null },
      [id('c')]: { status: 'processing', committedAt: null },
      [id('d')]: { status: 'processing', committedAt: 1 }, // a track's renditions: its upload is done with
      [id('e')]: { status: 'ready', committedAt: 1 },
      [id('f')]: { status: 'deleting', committedAt: 1 },
    };
    for (const c of 'abcdefg') {
      await writeFile(path.join(dir, id(c)), 'bytes');
      await writeFile(path.join(dir, `${id(c)}.json`), JSON.stringify({ id: id(c) }));
      await writeFile(path.join(receivedDir, id(c)), 'bytes');
    }
    const repo = { getFile: async (fileId: string) => rows[fileId] as FileRow | undefined };
    const swept = await sweepUploadLeftovers({ repo, area: createUploadArea(dir), received: createReceivedArea(receivedDir), logger: silentLogger });
    expect(swept).toEqual({ uploads: 4, received: 4 });
    expect((await readdir(dir)).sort()).toEqual([id('a'), `${id('a')}.json`, id('b'), `${id('b')}.json`, id('c'), `${id('c')}.json`]);
    // Received bytes are kept before the row says 'received': an 'uploading' row's copy stays too.
    expect((await readdir(receivedDir)).sort()).toEqual([id('a'), id('b'), id('c')]);
  });
});
