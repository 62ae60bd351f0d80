import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FileStore } from '@tus/file-store';
import { Server } from '@tus/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PgLocker } from '../src/db/pg/locker.js';
import { createTestDatabase, testServices } from './helpers/services.js';
import { tusUpload } from './helpers/tus.js';

// Two real @tus/server nodes over one shared upload folder, each with its own PgLocker on a real
// PostgreSQL: the wiring the distributed mode will use, before Chipmunk itself runs that way.

type Node = { url: string; locker: PgLocker; close(): Promise<void> };

let db: { url: string; drop(): Promise<void> };
let dir: string;
let a: Node;
let b: Node;

async function startNode(directory: string): Promise<Node> {
  const locker = new PgLocker({ url: db.url, acquireLockTimeoutMs: 10_000 });
  const tus = new Server({ path: '/files', datastore: new FileStore({ directory }), locker });
  const server = http.createServer((req, res) => void tus.handle(req, res));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/files`,
    locker,
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await locker.close();
    },
  };
}

beforeAll(async () => {
  db = await createTestDatabase(testServices(), 'tuslock');
  dir = await mkdtemp(path.join(tmpdir(), 'chipmunk-tus-nodes-'));
  a = await startNode(dir);
  b = await startNode(dir);
});
afterAll(async () => {
  await a?.close();
  await b?.close();
  await db?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('tus across two nodes with PgLocker', () => {
  it("stops a node's PATCH when another node is asked about the same upload, which then answers the true offset and finishes it", async () => {
    const data = randomBytes(3 * 1024 * 1024);
    const created = await fetch(a.url, {
      method: 'POST',
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(data.length) },
    });
    expect(created.status).toBe(201);
    const id = new URL(created.headers.get('location')!, a.url).pathname.split('/').pop()!;

    // Node A receives the first megabyte, then the client stalls with the request still open.
    const patch = http.request(`${a.url}/${id}`, {
      method: 'PATCH',
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' },
    });
    const aEnded = new Promise<void>((resolve) => {
      patch.on('response', (res) => {
        res.resume();
        res.on('end', resolve);
      });
      patch.on('error', () => resolve()); // the server may cut the connection instead of answering
      patch.on('close', () => resolve());
    });
    patch.write(data.subarray(0, 1024 * 1024));
    for (let i = 0; i < 500 && ((await stat(path.join(dir, id)).catch(() => undefined))?.size ?? 0) < 1024 * 1024; i++) await sleep(10);
    expect(a.locker.heldIds()).toEqual([id]);

    // Node B is asked where the upload stands: it must take the lock from A first.
    const head = await fetch(`${b.url}/${id}`, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
    expect(head.status).toBe(200);
    const offset = Number(head.headers.get('upload-offset'));
    expect(offset).toBe(1024 * 1024);
    await aEnded;
    expect(a.locker.heldIds()).toEqual([]);
    // A stopped writing: bytes still sent to it no longer land.
    if (!patch.destroyed) patch.write(data.subarray(offset, offset + 64 * 1024));
    await sleep(100);
    expect((await stat(path.join(dir, id))).size).toBe(offset);
    patch.destroy();

    // The client resumes through B, from the offset B answered, with the real tus-js-client.
    const resumed = await tusUpload(b.url, data, { uploadUrl: `${b.url}/${id}`, chunkSize: 1024 * 1024 });
    expect(resumed.ok).toBe(true);
    const stored = await readFile(path.join(dir, id));
    expect(createHash('sha256').update(stored).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    expect(a.locker.heldIds()).toEqual([]);
    expect(b.locker.heldIds()).toEqual([]);
  });
});
