import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  AbortMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { RECEIVED_PREFIX, UPLOADS_PREFIX } from '../../src/storage/objects.js';
import { createS3Client } from '../../src/storage/s3.js';
import type { TestChipmunk } from './chipmunk.js';

/**
 * Writes into a Chipmunk's tus upload area behind tus's back, leaving what a process killed at a
 * given moment leaves there: the data directory's `uploads/` folder (embedded) or the bucket in
 * @tus/s3-store's layout as Chipmunk routes it (distributed: tus's record and tail under `uploads/`,
 * the multipart upload on the received key `received/<id>`). For recovery and fsck tests on both
 * backends; everything else about a crash goes through the server's own ports.
 */
export type RawUploadArea = {
  /** Every byte of the upload landed, and the process died before tus completed it (S3: the last part uploaded, the multipart upload not completed). */
  landAllBytes(id: string, bytes: Buffer): Promise<void>;
  /** Every byte landed and tus made them one whole (S3: the multipart upload completed into `received/<id>`), then the process died before the commitment. */
  landCompleted(id: string, bytes: Buffer): Promise<void>;
  /** tus's record of the upload half written (a kill while it wrote it). */
  tearRecord(id: string): Promise<void>;
  /** The upload's bytes gone, its record left (a kill between the move out of the area and the commit). */
  removeBytes(id: string): Promise<void>;
  /** Bytes and a record that tus did not leave there: an upload no row accounts for, or the leftovers of a stored file. */
  plantLeftover(id: string): Promise<void>;
  close(): void;
};

export function rawUploadArea(t: TestChipmunk): RawUploadArea {
  const s3 = t.chipmunk.config.s3;
  return s3 ? s3Area(createS3Client(s3), s3.bucket) : localArea(t.chipmunk.config.uploadDir);
}

/**
 * A local file of `bytes` for the received area's `take` (bytes already received, no row for them),
 * removed by the returned function if `take` did not move it.
 */
export async function localFile(bytes: Buffer): Promise<{ path: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'chipmunk-raw-'));
  const file = path.join(dir, 'bytes');
  await writeFile(file, bytes);
  return { path: file, remove: () => rm(dir, { recursive: true, force: true }) };
}

function localArea(dir: string): RawUploadArea {
  return {
    landAllBytes: (id, bytes) => writeFile(path.join(dir, id), bytes),
    // The local store writes the one data file as bytes arrive: there is no separate completion.
    landCompleted: (id, bytes) => writeFile(path.join(dir, id), bytes),
    tearRecord: (id) => truncate(path.join(dir, `${id}.json`), 10),
    removeBytes: (id) => rm(path.join(dir, id)),
    async plantLeftover(id) {
      await writeFile(path.join(dir, id), 'abc');
      await writeFile(path.join(dir, `${id}.json`), '{}');
    },
    close: () => undefined,
  };
}

function s3Area(client: S3Client, bucket: string): RawUploadArea {
  const key = (id: string) => UPLOADS_PREFIX + id;
  const dataKey = (id: string) => RECEIVED_PREFIX + id;
  const multipartUploads = async (id: string) =>
    ((await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: dataKey(id) }))).Uploads ?? [])
      .filter((u) => u.Key === dataKey(id))
      .map((u) => u.UploadId!);
  const abortAll = async (id: string) => {
    for (const uploadId of await multipartUploads(id)) {
      await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: dataKey(id), UploadId: uploadId }));
    }
  };
  return {
    async landAllBytes(id, bytes) {
      const [uploadId] = await multipartUploads(id);
      if (!uploadId) throw new Error(`no multipart upload on ${dataKey(id)}`);
      await client.send(
        new UploadPartCommand({ Bucket: bucket, Key: dataKey(id), UploadId: uploadId, PartNumber: 1, Body: bytes, ContentLength: bytes.length }),
      );
    },
    async landCompleted(id, bytes) {
      await abortAll(id);
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: dataKey(id), Body: bytes, ContentLength: bytes.length }));
    },
    async tearRecord(id) {
      const record = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `${key(id)}.info` }));
      const text = await record.Body!.transformToString();
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: `${key(id)}.info`, Body: text.slice(0, 10) }));
    },
    async removeBytes(id) {
      await abortAll(id);
      await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: [{ Key: dataKey(id) }, { Key: `${key(id)}.part` }], Quiet: true } }));
    },
    async plantLeftover(id) {
      // What tus leaves of an upload: a multipart upload on its data key and its record.
      await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: dataKey(id) }));
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: `${key(id)}.info`, Body: '{}' }));
    },
    close: () => client.destroy(),
  };
}
