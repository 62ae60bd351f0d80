import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { Readable } from 'node:stream';
import { ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand, UploadPartCommand, type S3Client } from '@aws-sdk/client-s3';
import { eq } from 'drizzle-orm';
import { Upload } from 'tus-js-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type S3Settings } from '../src/config.js';
import { files } from '../src/db/schema.js';
import { createS3Client } from '../src/storage/s3.js';
import { RECEIVED_PREFIX, UPLOADS_PREFIX } from '../src/storage/objects.js';
import { openUploadAreas } from '../src/uploads/open.js';
import { waitForFile } from './helpers/audio.js';
import { startChipmunk, type TestChipmunk } from './helpers/chipmunk.js';
import { serverEnvironment, spawnServer } from './helpers/server-process.js';
import { createTestBucket, s3Environment, testServices } from './helpers/services.js';
import { tusUpload, uploadFirstChunk } from './helpers/tus.js';
import { wavHeader } from './helpers/wav.js';

// tus uploads whose unfinished bytes live in the S3 bucket (a real Ceph RGW, a fresh bucket for
// this file) through @tus/s3-store, driven by the real tus-js-client: cut and resumed, completed in
// the bucket by a process that stopped before the commitment, refused, expired and deleted — and
// after each, nothing of the upload is left under uploads/ or received/, no multipart upload either.
// Metadata is SQLite here; audio (a WAV, stored as sent) keeps the original byte-identical.

const MB = 1024 * 1024;
const CHUNK = 5 * MB;

type FileJson = { id: string; status: string; variants: { n: number | string; url: string; bytes: number }[] };

/** A WAV of `bytes` bytes of noise: an audio file Chipmunk stores as sent (variant 0). */
const wav = (bytes: number) => Buffer.concat([wavHeader(bytes - 44), randomBytes(bytes - 44)]);

let bucket: { s3: S3Settings; drop(): Promise<void> };
let client: S3Client;
let env: Record<string, string>;

/** What the bucket holds for uploads: objects under uploads/ and received/, and unfinished multipart uploads. */
async function uploadState(): Promise<{ objects: string[]; multipart: string[] }> {
  const objects: string[] = [];
  for (const prefix of ['uploads/', 'received/']) {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket.s3.bucket, Prefix: prefix }));
    objects.push(...(page.Contents ?? []).map((o) => o.Key!));
  }
  const mp = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket.s3.bucket }));
  return { objects: objects.sort(), multipart: (mp.Uploads ?? []).map((u) => u.Key!).sort() };
}

const idOf = (url: string) => url.split('/').pop()!;

/** Starts a tus-js-client upload in 5 MB chunks and cuts its connection once `cutAt` bytes were sent. */
function uploadCutAt(endpoint: string, data: Buffer, token: string, cutAt: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let cut = false;
    const upload: Upload = new Upload(data, {
      endpoint,
      chunkSize: CHUNK,
      retryDelays: [],
      headers: { Authorization: `Bearer ${token}` },
      metadata: { filename: 'noise.wav' },
      onProgress: (sent) => {
        if (cut || sent < cutAt) return;
        cut = true;
        void upload.abort(false).then(() => resolve(upload.url!));
      },
      onSuccess: () => reject(new Error('the upload finished before it was cut')),
      onError: reject,
    });
    upload.start();
  });
}

beforeAll(async () => {
  bucket = await createTestBucket(testServices(), 'tus-s3');
  client = createS3Client(bucket.s3);
  env = s3Environment(bucket.s3);
});
afterAll(async () => {
  client?.destroy();
  await bucket?.drop();
});

describe('tus uploads in the S3 bucket', () => {
  let t: TestChipmunk;
  const head = (url: string) => fetch(url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });

  beforeAll(async () => {
    t = await startChipmunk(env, { ffmpeg: null });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('resumes a ~12 MB upload in 5 MB chunks cut mid-way, stores it byte-identical, and leaves nothing under uploads/ or received/', async () => {
    const data = wav(12 * MB + 345);
    const token = await t.uploadToken('ada', 'audio');
    const url = await uploadCutAt(`${t.url}/uploads`, data, token, 7 * MB);
    const id = idOf(url);
    // Mid-way the upload is the bucket's: tus's record and one unfinished multipart upload, nothing local.
    const during = await uploadState();
    expect(during.objects).toContain(`${UPLOADS_PREFIX}${id}.info`);
    expect(during.multipart).toEqual([`${RECEIVED_PREFIX}${id}`]);
    const offset = Number((await head(url)).headers.get('upload-offset'));
    expect(offset).toBeGreaterThanOrEqual(CHUNK);
    expect(offset).toBeLessThan(data.length);
    expect(await t.chipmunk.area.receivedBytes(id)).toBe(offset);

    const resumed = await tusUpload(`${t.url}/uploads`, data, { token, uploadUrl: url, chunkSize: CHUNK });
    expect(resumed.ok).toBe(true);
    const file = (await waitForFile(t, id)) as unknown as FileJson;
    expect(file.status).toBe('ready');
    const original = await fetch(file.variants.find((v) => v.n === 0)!.url.replace(/^https?:\/\/[^/]+/, t.url));
    expect(Buffer.from(await original.arrayBuffer()).equals(data)).toBe(true);
    expect(await uploadState()).toEqual({ objects: [], multipart: [] });
    expect((await t.chipmunk.inspect.fsck({ live: true })).problems).toEqual([]);
  });

  it('streams 8 MB chunks straight into parts: a cut mid-part applies none of it, and the upload resumes from the last whole part', async () => {
    const data = wav(20 * MB + 11);
    const token = await t.uploadToken('ada', 'audio');
    const url = await uploadFirstChunk(`${t.url}/uploads`, data, { token, chunkSize: 8 * MB, metadata: { filename: 'noise.wav' } });
    // The next 8 MB declared, 3 MB sent, then the connection drops.
    const patch = http.request(url, {
      method: 'PATCH',
      headers: {
        'Tus-Resumable': '1.0.0',
        'Upload-Offset': String(8 * MB),
        'Content-Type': 'application/offset+octet-stream',
        'Content-Length': String(8 * MB),
        Authorization: `Bearer ${token}`,
      },
    });
    patch.on('error', () => undefined);
    patch.write(data.subarray(8 * MB, 11 * MB));
    await sleep(300);
    patch.destroy();
    expect(Number((await head(url)).headers.get('upload-offset'))).toBe(8 * MB);
    expect((await uploadState()).objects).not.toContain(`${UPLOADS_PREFIX}${idOf(url)}.part`);
    const resumed = await tusUpload(`${t.url}/uploads`, data, { token, uploadUrl: url, chunkSize: 8 * MB });
    expect(resumed.ok).toBe(true);
    const file = (await waitForFile(t, idOf(url))) as unknown as FileJson;
    const original = await fetch(file.variants.find((v) => v.n === 0)!.url.replace(/^https?:\/\/[^/]+/, t.url));
    expect(Buffer.from(await original.arrayBuffer()).equals(data)).toBe(true);
    expect(await uploadState()).toEqual({ objects: [], multipart: [] });
  });

  it('a refusal, a tus DELETE and the expiry sweep each leave no upload object or multipart upload behind', async () => {
    // Refused: not audio at all (bytes that arrived whole, then a verdict on the content).
    const token = await t.uploadToken('bea', 'audio');
    const refused = await tusUpload(`${t.url}/uploads`, randomBytes(6 * MB), { token, chunkSize: CHUNK, metadata: { filename: 'noise.wav' } });
    expect(refused.ok).toBe(false);
    expect(refused.status).toBe(422);

    // Deleted (tus termination) with a tail shorter than a part pending in `<id>.part`.
    const deletedUrl = await uploadFirstChunk(`${t.url}/uploads`, wav(8 * MB), { token, chunkSize: 3 * MB });
    expect((await uploadState()).objects).toContain(`${UPLOADS_PREFIX}${idOf(deletedUrl)}.part`);
    const terminated = await fetch(deletedUrl, { method: 'DELETE', headers: { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${token}` } });
    expect(terminated.status).toBe(204);

    // Expired: one complete part and its multipart upload, then its time runs out.
    const expiredUrl = await uploadFirstChunk(`${t.url}/uploads`, wav(12 * MB), { token, chunkSize: CHUNK });
    const expiredId = idOf(expiredUrl);
    expect((await uploadState()).multipart).toEqual([`${RECEIVED_PREFIX}${expiredId}`]);
    // Whole bytes at its received key whose commitment never came (tus completes there): the release takes them too.
    await client.send(new PutObjectCommand({ Bucket: bucket.s3.bucket, Key: `${RECEIVED_PREFIX}${expiredId}`, Body: 'whole' }));
    t.chipmunk
      .db!.update(files)
      .set({ expiresAt: Date.now() - 1 })
      .where(eq(files.id, expiredId))
      .run();
    expect(await t.chipmunk.sweepExpiredUploads()).toBe(1);

    expect(await uploadState()).toEqual({ objects: [], multipart: [] });
    expect((await (await t.api('/v1/users/bea')).json()) as { reservedBytes: number }).toMatchObject({ reservedBytes: 0 });
    expect((await head(expiredUrl)).status).toBe(404);
    expect((await t.chipmunk.inspect.fsck({ live: true })).problems).toEqual([]);
  });

  it('fsck sees an orphan upload in the bucket and its repair removes it, multipart upload and all', async () => {
    const token = await t.uploadToken('cyd', 'audio');
    const url = await uploadFirstChunk(`${t.url}/uploads`, wav(12 * MB), { token, chunkSize: CHUNK });
    const id = idOf(url);
    // The row goes as a crash between a release and its cleanup would leave it: the bucket still holds the upload.
    t.chipmunk.db!.delete(files).where(eq(files.id, id)).run();
    const report = await t.chipmunk.inspect.fsck();
    expect(report.problems.filter((p) => p.kind === 'orphan-upload').map((p) => p.subject)).toEqual([id]);
    await t.chipmunk.inspect.fsck({ repair: true });
    expect(await uploadState()).toEqual({ objects: [], multipart: [] });
  });
});

describe('an upload complete in the bucket but not yet received when the server stopped', () => {
  it('is made received at the next start, processed and stored byte-identical', async () => {
    const first = await startChipmunk(env, { ffmpeg: null });
    const data = wav(11 * MB);
    const url = await uploadFirstChunk(`${first.url}/uploads`, data, { token: await first.uploadToken('dee', 'audio'), chunkSize: CHUNK });
    const id = idOf(url);
    await first.stop();

    // The rest lands through tus's store alone (no hook ran: as if the process died right after the last part).
    const areas = openUploadAreas(loadConfig({ CHIPMUNK_DATA_DIR: first.dataDir, ...env }));
    try {
      // No record of where the upload stands (as after the process died): the store reads the bucket.
      const store = areas.datastore({ expiryMs: 3600_000, onBytes: () => undefined, offsets: { record: async () => undefined, read: async () => null } });
      const offset = (await store.getUpload(id)).offset;
      expect(await store.write(Readable.from([data.subarray(offset)]), id, offset)).toBe(data.length);
      expect(await areas.area.receivedBytes(id)).toBe(data.length);
    } finally {
      areas.close();
    }
    expect((await uploadState()).multipart).toEqual([]);

    const again = await startChipmunk(env, { ffmpeg: null, dataDir: first.dataDir });
    try {
      expect(again.chipmunk.recovery?.uploadsReceived).toBe(1);
      const file = (await waitForFile(again, id)) as unknown as FileJson;
      expect(file.status).toBe('ready');
      const original = await fetch(file.variants.find((v) => v.n === 0)!.url.replace(/^https?:\/\/[^/]+/, again.url));
      expect(Buffer.from(await original.arrayBuffer()).equals(data)).toBe(true);
      expect(await uploadState()).toEqual({ objects: [], multipart: [] });
    } finally {
      await again.close();
    }
  });
});

describe('an upload whose every byte is in parts when the server stopped (before the multipart upload was completed)', () => {
  it('is completed, made received at the next start and stored byte-identical', async () => {
    const first = await startChipmunk(env, { ffmpeg: null });
    const data = wav(10 * MB + 3);
    const url = await uploadFirstChunk(`${first.url}/uploads`, data, { token: await first.uploadToken('fay', 'audio'), chunkSize: CHUNK });
    const id = idOf(url);
    await first.stop();
    // The last part lands, the completion does not (as a kill between the two would leave it).
    const key = `${RECEIVED_PREFIX}${id}`;
    const { Uploads } = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket.s3.bucket, Prefix: key }));
    const uploadId = Uploads![0]!.UploadId!;
    await client.send(new UploadPartCommand({ Bucket: bucket.s3.bucket, Key: key, UploadId: uploadId, PartNumber: 2, Body: data.subarray(CHUNK) }));

    const again = await startChipmunk(env, { ffmpeg: null, dataDir: first.dataDir });
    try {
      expect(again.chipmunk.recovery?.uploadsReceived).toBe(1);
      const file = (await waitForFile(again, id)) as unknown as FileJson;
      expect(file.status).toBe('ready');
      const original = await fetch(file.variants.find((v) => v.n === 0)!.url.replace(/^https?:\/\/[^/]+/, again.url));
      expect(Buffer.from(await original.arrayBuffer()).equals(data)).toBe(true);
      expect(await uploadState()).toEqual({ objects: [], multipart: [] });
    } finally {
      await again.close();
    }
  });
});

describe('a server killed mid-upload', () => {
  it('is restarted and the upload resumes from what the bucket holds, byte-identical', async () => {
    const { dataDir, env: serverEnv } = await serverEnvironment('tus-s3-kill', env);
    const api =
      (url: string) =>
      (p: string, init: RequestInit = {}) =>
        fetch(`${url}${p}`, { ...init, headers: { authorization: `Bearer ${serverEnv.CHIPMUNK_API_KEY}`, 'content-type': 'application/json' } });
    let server = await spawnServer(serverEnv);
    try {
      const minted = await api(server.url)('/v1/upload-tokens', { method: 'POST', body: JSON.stringify({ userId: 'eve', purpose: 'audio' }) });
      const { token } = (await minted.json()) as { token: string };
      const data = wav(12 * MB + 7);
      // The kill lands while the second chunk's PATCH is streaming.
      const url = await new Promise<string>((resolve, reject) => {
        let killed = false;
        const upload: Upload = new Upload(data, {
          endpoint: `${server.url}/uploads`,
          chunkSize: CHUNK,
          retryDelays: [],
          headers: { Authorization: `Bearer ${token}` },
          metadata: { filename: 'noise.wav' },
          onProgress: (sent) => {
            if (killed || sent < 7 * MB) return;
            killed = true;
            server.proc.kill('SIGKILL');
          },
          onSuccess: () => reject(new Error('the upload finished before the kill')),
          onError: () => resolve(upload.url!),
        });
        upload.start();
      });
      await server.exited;
      expect((await uploadState()).multipart).toEqual([`${RECEIVED_PREFIX}${idOf(url)}`]);

      server = await spawnServer(serverEnv);
      const resumed = await tusUpload(`${server.url}/uploads`, data, { token, uploadUrl: url, chunkSize: CHUNK });
      expect(resumed.ok).toBe(true);
      // The original is stored at the commit; the track's renditions follow (not this test's subject).
      let file: FileJson;
      for (let i = 0; ; i++) {
        file = (await (await api(server.url)(`/v1/files/${idOf(url)}`)).json()) as FileJson;
        if (file.variants?.some((v) => v.n === 0)) break;
        if (i > 600) throw new Error(`file ${idOf(url)} not stored: ${JSON.stringify(file)}`);
        await sleep(100);
      }
      expect(['processing', 'ready']).toContain(file.status);
      const original = await fetch(file.variants.find((v) => v.n === 0)!.url.replace(/^https?:\/\/[^/]+/, server.url));
      expect(Buffer.from(await original.arrayBuffer()).equals(data)).toBe(true);
      expect(await uploadState()).toEqual({ objects: [], multipart: [] });
    } finally {
      // Killed, not stopped: a graceful stop would wait for the renditions the test does not need.
      server.proc.kill('SIGKILL');
      await server.exited;
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 180_000);
});
