import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Server } from '@tus/server';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { S3Settings } from '../src/config.js';
import { PgLocker } from '../src/db/pg/locker.js';
import { newFileId } from '../src/ids.js';
import { RECEIVED_PREFIX } from '../src/storage/objects.js';
import { createS3Client } from '../src/storage/s3.js';
import { openUploadAreas, type UploadAreas } from '../src/uploads/open.js';
import { createTusProtocol } from '../src/uploads/tus-protocol.js';
import { createTestBucket, createTestDatabase, testServices } from './helpers/services.js';
import { tusUpload } from './helpers/tus.js';

// Two @tus/server nodes over one bucket, each with Chipmunk's S3 tus store and upload area
// (uploads/open.ts, as a node opens them) and its own PgLocker on a real PostgreSQL: what a
// distributed deployment runs, before Chipmunk's own metadata runs on PostgreSQL (the file rows
// and hooks are then shared too; here the tus layer alone is under test).

const MB = 1024 * 1024;

type Node = { url: string; locker: PgLocker; areas: UploadAreas; close(): Promise<void> };

let db: { url: string; drop(): Promise<void> };
let bucket: { s3: S3Settings; drop(): Promise<void> };
let client: S3Client;
let a: Node;
let b: Node;
/** Where each upload stands as the nodes record it: the files table's upload_offset in Chipmunk, shared by every node. */
const recordedOffsets = new Map<string, number | null>();
const offsets = {
  record: async (id: string, offset: number | null) => void recordedOffsets.set(id, offset),
  read: async (id: string) => recordedOffsets.get(id) ?? null,
};

async function startNode(): Promise<Node> {
  const areas = openUploadAreas({ dataDir: '/nonexistent', uploadDir: '/nonexistent', s3: bucket.s3 });
  const locker = new PgLocker({ url: db.url, acquireLockTimeoutMs: 10_000 });
  const datastore = areas.datastore({ expiryMs: 3600_000, onBytes: () => undefined, offsets });
  // Ids as Chipmunk names uploads (the upload area takes file ids only).
  const tus = new Server({ path: '/files', datastore, locker, namingFunction: () => newFileId() });
  // Chipmunk's protocol layer around tus, as a node runs it (the declared chunk length lets whole parts stream straight in).
  const protocol = createTusProtocol({ server: tus });
  const server = http.createServer((req, res) => void protocol.handle(req, res));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/files`,
    locker,
    areas,
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await locker.close();
      areas.close();
    },
  };
}

beforeAll(async () => {
  db = await createTestDatabase(testServices(), 'tuss3lock');
  bucket = await createTestBucket(testServices(), 'tus-nodes');
  client = createS3Client(bucket.s3);
  a = await startNode();
  b = await startNode();
});
afterAll(async () => {
  await a?.close();
  await b?.close();
  client?.destroy();
  await bucket?.drop();
  await db?.drop();
});

describe('tus across two nodes over one bucket with PgLocker', () => {
  it("stops a node's PATCH when the other is asked about the upload, which answers what the bucket holds and finishes it byte-identical", async () => {
    const data = randomBytes(12 * MB + 99);
    const created = await fetch(a.url, { method: 'POST', headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(data.length) } });
    expect(created.status).toBe(201);
    const id = new URL(created.headers.get('location')!, a.url).pathname.split('/').pop()!;
    // A first chunk through A, whole: one part in the bucket, seen by both nodes.
    const first = await fetch(`${a.url}/${id}`, {
      method: 'PATCH',
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' },
      body: data.subarray(0, 5 * MB),
    });
    expect(first.status).toBe(204);
    expect(await b.areas.area.receivedBytes(id)).toBe(5 * MB);

    // Node A streams the next bytes, then the client stalls with the request still open.
    const patch = http.request(`${a.url}/${id}`, {
      method: 'PATCH',
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': String(5 * MB), 'Content-Type': 'application/offset+octet-stream' },
    });
    const aEnded = new Promise<void>((resolve) => {
      patch.on('response', (res) => {
        res.resume();
        res.on('end', resolve);
      });
      patch.on('error', () => resolve());
      patch.on('close', () => resolve());
    });
    patch.write(data.subarray(5 * MB, 6 * MB));
    for (let i = 0; i < 500 && a.locker.heldIds().length === 0; i++) await sleep(10);
    expect(a.locker.heldIds()).toEqual([id]);

    // Node B is asked where the upload stands: it takes the lock from A first, so A's write has
    // stopped and its bytes are settled in the bucket before B reads the offset.
    const head = await fetch(`${b.url}/${id}`, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
    expect(head.status).toBe(200);
    const offset = Number(head.headers.get('upload-offset'));
    await aEnded;
    expect(a.locker.heldIds()).toEqual([]);
    expect(offset).toBeGreaterThanOrEqual(5 * MB);
    expect(offset).toBeLessThanOrEqual(6 * MB);
    expect(await a.areas.area.receivedBytes(id)).toBe(offset);
    // A stopped writing: bytes still sent to it no longer land.
    if (!patch.destroyed) patch.write(data.subarray(6 * MB, 7 * MB));
    await sleep(200);
    expect(await b.areas.area.receivedBytes(id)).toBe(offset);
    patch.destroy();

    // The client resumes through B, from the offset B answered, with the real tus-js-client.
    const resumed = await tusUpload(b.url, data, { uploadUrl: `${b.url}/${id}`, chunkSize: 5 * MB });
    expect(resumed.ok).toBe(true);
    const stored = await client.send(new GetObjectCommand({ Bucket: bucket.s3.bucket, Key: `${RECEIVED_PREFIX}${id}` }));
    expect(Buffer.from(await stored.Body!.transformToByteArray()).equals(data)).toBe(true);
    expect(a.locker.heldIds()).toEqual([]);
    expect(b.locker.heldIds()).toEqual([]);
    await a.areas.area.discard(id);
    await a.areas.received.remove(id);
    expect(await b.areas.area.list()).toEqual(new Map());
  });

  it("trusts a node's memory of its own last write only while no other node has written since", async () => {
    const data = randomBytes(4 * 8 * MB);
    const created = await fetch(a.url, { method: 'POST', headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(data.length) } });
    const id = new URL(created.headers.get('location')!, a.url).pathname.split('/').pop()!;
    const send = vi.spyOn(S3Client.prototype, 'send');
    const bucketReads = () => send.mock.calls.filter(([command]) => ['ListPartsCommand', 'HeadObjectCommand'].includes(command.constructor.name)).length;
    const patch = async (node: Node, chunk: number) => {
      const before = bucketReads();
      const res = await fetch(`${node.url}/${id}`, {
        method: 'PATCH',
        headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': String(chunk * 8 * MB), 'Content-Type': 'application/offset+octet-stream' },
        body: data.subarray(chunk * 8 * MB, (chunk + 1) * 8 * MB),
      });
      expect(res.status).toBe(204);
      expect(res.headers.get('upload-offset')).toBe(String((chunk + 1) * 8 * MB));
      return bucketReads() - before;
    };
    try {
      // A created the upload and wrote its first part: its next PATCH asks the bucket nothing.
      expect(await patch(a, 0)).toBe(0);
      // B never wrote it: it reads the bucket.
      expect(await patch(b, 1)).toBeGreaterThan(0);
      // A's memory (one part) is stale now that B wrote: A reads the bucket and answers B's offset.
      expect(await patch(a, 2)).toBeGreaterThan(0);
      // B's memory is stale too; the last part through B completes the upload from what it read.
      expect(await patch(b, 3)).toBeGreaterThan(0);
    } finally {
      send.mockRestore();
    }
    const stored = await client.send(new GetObjectCommand({ Bucket: bucket.s3.bucket, Key: `${RECEIVED_PREFIX}${id}` }));
    expect(Buffer.from(await stored.Body!.transformToByteArray()).equals(data)).toBe(true);
    await a.areas.area.discard(id);
    await a.areas.received.remove(id);
  });
});
