import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { ListMultipartUploadsCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLocalObjectStore } from '../src/storage/local-objects.js';
import { listAll, mediaKey, mediaPrefix, ObjectStoreError, type ObjectStore } from '../src/storage/objects.js';
import { createS3Client, createS3ObjectStore } from '../src/storage/s3.js';
import { testPrefix, testServices } from './helpers/services.js';

// One contract, two implementations: the local folder (embedded default) and a real Ceph RGW.

type Backend = {
  store: ObjectStore;
  /** A store on the same backend whose every request fails for a reason other than "absent". */
  broken: ObjectStore;
  /** Multipart uploads still open under a prefix (S3 only; a folder has none). */
  openUploads(prefix: string): Promise<number>;
  /** Anything left on disk under a prefix that the listing would hide (local only). */
  hiddenLeftovers(prefix: string): Promise<string[]>;
  close(): Promise<void>;
};

const backends: [string, () => Promise<Backend>][] = [
  [
    'local folder',
    async () => {
      const dir = await mkdtemp(path.join(tmpdir(), 'chipmunk-objects-'));
      const notAFolder = path.join(dir, 'not-a-folder');
      await writeFile(notAFolder, 'x');
      const root = path.join(dir, 'media');
      return {
        store: createLocalObjectStore({ root }),
        broken: createLocalObjectStore({ root: notAFolder }),
        openUploads: async () => 0,
        async hiddenLeftovers(prefix) {
          const entries = await readdir(path.join(root, prefix), { recursive: true }).catch(() => []);
          return entries.filter((e) => e.includes('.tmp-'));
        },
        close: () => rm(dir, { recursive: true, force: true }),
      };
    },
  ],
  [
    'Ceph RGW (S3)',
    async () => {
      const { s3 } = testServices();
      const client = createS3Client(s3);
      const wrongKey = createS3Client({ ...s3, secretAccessKey: 'not-the-secret-key-at-all' });
      return {
        store: createS3ObjectStore({ client, bucket: s3.bucket }),
        broken: createS3ObjectStore({ client: wrongKey, bucket: s3.bucket }),
        openUploads: (prefix) => openMultipartUploads(client, s3.bucket, prefix),
        hiddenLeftovers: async () => [],
        async close() {
          client.destroy();
          wrongKey.destroy();
        },
      };
    },
  ],
];

async function openMultipartUploads(client: S3Client, bucket: string, prefix: string): Promise<number> {
  const r = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
  return r.Uploads?.length ?? 0;
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A stream in chunks of at most 1 MB, as a socket or a file would deliver it. */
const streamOf = (b: Buffer) =>
  Readable.from(
    (function* () {
      for (let i = 0; i < b.length; i += 1024 * 1024) yield b.subarray(i, i + 1024 * 1024);
    })(),
  );

async function rejection(p: Promise<unknown>): Promise<ObjectStoreError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ObjectStoreError);
  return err as ObjectStoreError;
}

describe.each(backends)('object store contract: %s', (_name, open) => {
  let b: Backend;
  let base: string;
  beforeAll(async () => {
    b = await open();
    base = testPrefix('objects');
  });
  afterAll(async () => {
    if (!b) return;
    await b.store.deletePrefix(base);
    await b.close();
  });

  it('round-trips a buffer and a multipart-sized stream, reporting their size and SHA-256', async () => {
    const small = randomBytes(10_000);
    expect(await b.store.put(`${base}rt/small.bin`, small, { size: small.length, sha256: sha256(small) })).toEqual({
      size: small.length,
      sha256: sha256(small),
    });
    expect(await buffer((await b.store.get(`${base}rt/small.bin`))!)).toEqual(small);

    const big = randomBytes(17 * 1024 * 1024 + 3); // three parts of 8 MB on S3
    expect(await b.store.put(`${base}rt/big.bin`, streamOf(big), { size: big.length, sha256: sha256(big) })).toEqual({
      size: big.length,
      sha256: sha256(big),
    });
    const back = await buffer((await b.store.get(`${base}rt/big.bin`))!);
    expect(back.length).toBe(big.length);
    expect(sha256(back)).toBe(sha256(big));
    expect(await b.openUploads(base)).toBe(0);

    // Without expectations the store still reports what it wrote.
    expect(await b.store.put(`${base}rt/free.bin`, streamOf(small))).toEqual({ size: small.length, sha256: sha256(small) });
  });

  it('serves byte ranges, inclusive at both ends, and refuses one outside the object', async () => {
    const data = randomBytes(4096);
    await b.store.put(`${base}ranges/x.bin`, data);
    const part = async (start: number, end: number) => buffer((await b.store.get(`${base}ranges/x.bin`, { range: { start, end } }))!);
    expect(await part(0, 0)).toEqual(data.subarray(0, 1));
    expect(await part(100, 1099)).toEqual(data.subarray(100, 1100));
    expect(await part(4000, 4095)).toEqual(data.subarray(4000));
    expect((await rejection(b.store.get(`${base}ranges/x.bin`, { range: { start: 5000, end: 6000 } }))).reason).toBe('range');
  });

  it('heads an object with its size, an etag and its modification time; an absent key is undefined', async () => {
    await b.store.put(`${base}head/a.txt`, Buffer.from('hello'));
    const info = await b.store.head(`${base}head/a.txt`);
    expect(info).toMatchObject({ key: `${base}head/a.txt`, size: 5 });
    expect(info!.etag).toEqual(expect.any(String));
    expect(Number.isNaN(info!.lastModified.getTime())).toBe(false);
    expect(await b.store.head(`${base}head/missing.txt`)).toBeUndefined();
    expect(await b.store.get(`${base}head/missing.txt`)).toBeUndefined();
    await b.store.delete(`${base}head/missing.txt`); // absent: not an error
    await b.store.delete(`${base}head/a.txt`);
    expect(await b.store.head(`${base}head/a.txt`)).toBeUndefined();
  });

  it('lists by prefix in pages (more than 1,000 keys, and small pages), and deletes a prefix whole', async () => {
    const many = Array.from({ length: 1005 }, (_, i) => `${base}many/${String(i).padStart(4, '0')}/v.bin`);
    const queue = [...many];
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let key = queue.pop(); key; key = queue.pop()) await b.store.put(key, Buffer.from(key));
      }),
    );
    // Neighbours that share the characters of the prefix but not its folder.
    await b.store.put(`${base}many-sibling/v.bin`, Buffer.from('s'));
    await b.store.put(`${base}manyx`, Buffer.from('s'));

    const listed: string[] = [];
    for await (const o of listAll(b.store, `${base}many/`)) listed.push(o.key);
    expect(listed.length).toBe(1005);
    expect(new Set(listed)).toEqual(new Set(many));

    const first = await b.store.listPage(`${base}many/`);
    expect(first.objects.length).toBe(1000);
    expect(first.next).toEqual(expect.any(String));

    const pages: string[][] = [];
    let cursor: string | undefined;
    do {
      const page = await b.store.listPage(`${base}many/00`, { pageSize: 40, cursor });
      pages.push(page.objects.map((o) => o.key));
      cursor = page.next;
    } while (cursor);
    expect(pages.flat().sort()).toEqual(many.slice(0, 100).sort());
    expect(pages.every((p) => p.length <= 40)).toBe(true);
    expect(pages.length).toBeGreaterThanOrEqual(3);

    expect(await b.store.deletePrefix(`${base}many/`)).toBe(1005);
    expect((await b.store.listPage(`${base}many/`)).objects).toEqual([]);
    expect(await b.store.deletePrefix(`${base}many/`)).toBe(0);
    expect(await b.store.head(`${base}many-sibling/v.bin`)).toMatchObject({ size: 1 });
    expect(await b.store.head(`${base}manyx`)).toMatchObject({ size: 1 });
    await expect(b.store.deletePrefix(`${base}many`)).rejects.toThrow(/folder prefix/);
  });

  it('keeps one file to one prefix in the media layout, so deleting the file is deleting its prefix', async () => {
    const fileId = 'abcdefghijklmnopqrstuvwx';
    expect(mediaKey(fileId, '0.jpg')).toBe('ab/cd/abcdefghijklmnopqrstuvwx/0.jpg');
    const prefix = `${base}${mediaPrefix(fileId)}`;
    await b.store.put(`${prefix}0.jpg`, Buffer.from('original'));
    await b.store.put(`${prefix}320.webp`, Buffer.from('variant'));
    expect(await b.store.deletePrefix(prefix)).toBe(2);
    expect(() => mediaKey('../etc', 'passwd')).toThrow(/unsafe/);
    expect(() => mediaKey(fileId, '../x')).toThrow(/unsafe/);
  });

  it.each([
    ['a buffer one byte short', () => randomBytes(999), 1000, undefined],
    ['a stream one byte long', () => randomBytes(1001), 1000, undefined],
    ['a multipart stream that stops early', () => randomBytes(9 * 1024 * 1024), 10 * 1024 * 1024, undefined],
    ['a stream with the wrong checksum', () => randomBytes(1000), 1000, 'f'.repeat(64)],
    ['a multipart stream with the wrong checksum', () => randomBytes(9 * 1024 * 1024), 9 * 1024 * 1024, '0'.repeat(64)],
  ] as const)('refuses %s and leaves nothing behind', async (label, make, size, checksum) => {
    const data = make();
    const key = `${base}refused/${label.replaceAll(' ', '-')}.bin`;
    const body = label.startsWith('a buffer') ? data : streamOf(data);
    const err = await rejection(b.store.put(key, body, { size, sha256: checksum ?? sha256(data) }));
    expect(err.reason).toBe('integrity');
    expect(err.message).toContain(checksum ? 'SHA-256' : 'bytes');
    expect(await b.store.head(key)).toBeUndefined();
    expect((await b.store.listPage(`${base}refused/`)).objects).toEqual([]);
    expect(await b.openUploads(`${base}refused/`)).toBe(0);
    expect(await b.hiddenLeftovers(`${base}refused/`)).toEqual([]);
  });

  it('overwrites an object whole', async () => {
    await b.store.put(`${base}over/x`, Buffer.from('first version'));
    await b.store.put(`${base}over/x`, streamOf(Buffer.from('second')));
    expect((await buffer((await b.store.get(`${base}over/x`))!)).toString()).toBe('second');
  });

  it('turns any failure other than "absent" into an error that keeps its cause', async () => {
    for (const attempt of [
      () => b.broken.get(`${base}x`),
      () => b.broken.head(`${base}x`),
      () => b.broken.put(`${base}x`, Buffer.from('x')),
      () => b.broken.listPage(base),
    ]) {
      const err = await rejection(attempt());
      expect(err.reason).toBe('failure');
      expect(err.cause).toBeInstanceOf(Error);
    }
  });

  it('refuses keys that are not safe relative paths', async () => {
    for (const key of ['', '/abs', 'a//b', '../up', 'a/../b', 'a/./b', 'spa ce', 'a/b/']) {
      await expect(b.store.put(key, Buffer.from('x'))).rejects.toThrow(/unsafe object key/);
    }
  });
});
