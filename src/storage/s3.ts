import { createHash } from 'node:crypto';
import { pipeline, type Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { S3Settings } from '../config.js';
import { checkBuffer, integrityCheck } from './integrity.js';
import { assertKey, assertPrefix, ObjectStoreError, type ObjectInfo, type ObjectStore } from './objects.js';

/** Streams larger than this go up as a multipart upload in parts of this size. */
const partSize = 8 * 1024 * 1024;
const maxDeleteBatch = 1000; // DeleteObjects' limit per request

export function createS3Client(s: S3Settings): S3Client {
  return new S3Client(s3ClientConfig(s));
}

/** The SDK's settings for the bucket's endpoint (shared with the tus S3 store, which makes its own client). */
export function s3ClientConfig(s: S3Settings): S3ClientConfig {
  const config: S3ClientConfig = {
    region: s.region,
    endpoint: s.endpoint,
    forcePathStyle: s.forcePathStyle,
    // `when_required` for servers that refuse the SDK's default trailing checksums (Ceph RGW 16, …).
    requestChecksumCalculation: s.checksums === 'when_required' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED',
    responseChecksumValidation: s.checksums === 'when_required' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED',
  };
  if (s.accessKeyId && s.secretAccessKey) config.credentials = { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey };
  return config;
}

/**
 * The object store on an S3-compatible bucket (AWS S3, Ceph RGW, MinIO, …); the bucket exists
 * beforehand. Integrity is checked on the way up: a buffer before it is sent (and by the server
 * through Content-MD5), a stream as it passes, failing the upload before it completes. The size
 * that landed is read back with a HEAD rather than trusted from the answer (RGW's
 * CompleteMultipartUpload answers an empty ETag).
 */
export function createS3ObjectStore(opts: { client: S3Client; bucket: string }): ObjectStore {
  const { client, bucket } = opts;

  async function head(key: string): Promise<ObjectInfo | undefined> {
    assertKey(key);
    try {
      const r = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
      return { key, size: r.ContentLength ?? 0, etag: r.ETag || undefined, lastModified: r.LastModified ?? new Date(0) };
    } catch (err) {
      if (isAbsent(err)) return undefined;
      throw failure(`read the metadata of ${key}`, err);
    }
  }

  return {
    async put(key, body, expected = {}) {
      assertKey(key);
      let result;
      if (body instanceof Uint8Array) {
        result = checkBuffer(key, body, expected);
        const md5 = createHash('md5').update(body).digest('base64');
        try {
          await client.send(
            new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentLength: body.byteLength, ContentMD5: md5, ContentType: expected.contentType }),
          );
        } catch (err) {
          throw failure(`write ${key}`, err);
        }
      } else {
        const check = integrityCheck(key, expected);
        const source = pipeline(body, check, () => undefined);
        const upload = new Upload({
          client,
          params: { Bucket: bucket, Key: key, Body: source, ContentType: expected.contentType },
          partSize,
          queueSize: 2,
        });
        try {
          await upload.done();
        } catch (err) {
          if (err instanceof ObjectStoreError) throw err;
          throw failure(`write ${key}`, err);
        }
        result = check.result();
      }
      const landed = await head(key);
      if (landed?.size !== result.size) {
        await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key })).catch(() => undefined);
        throw new ObjectStoreError('integrity', `Refused ${key}: the bucket holds ${landed?.size ?? 'no'} bytes after writing ${result.size}.`);
      }
      return result;
    },

    async get(key, opts = {}) {
      assertKey(key);
      const { range } = opts;
      if (range && !(range.start >= 0 && range.start <= range.end)) {
        throw new ObjectStoreError('range', `Range ${range.start}-${range.end} is not a byte range.`);
      }
      try {
        const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key, Range: range ? `bytes=${range.start}-${range.end}` : undefined }));
        return r.Body as Readable;
      } catch (err) {
        if (isAbsent(err)) return undefined;
        if (statusOf(err) === 416) {
          throw new ObjectStoreError('range', `Range ${range?.start}-${range?.end} is outside ${key}.`, { cause: err });
        }
        throw failure(`read ${key}`, err);
      }
    },

    head,

    async listPage(prefix, opts = {}) {
      assertPrefix(prefix);
      try {
        const r = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, MaxKeys: opts.pageSize, ContinuationToken: opts.cursor }));
        const objects = (r.Contents ?? []).map((o) => ({
          key: o.Key!,
          size: o.Size ?? 0,
          etag: o.ETag || undefined,
          lastModified: o.LastModified ?? new Date(0),
        }));
        return { objects, next: r.IsTruncated ? r.NextContinuationToken : undefined };
      } catch (err) {
        throw failure(`list ${prefix || 'the bucket'}`, err);
      }
    },

    async delete(key) {
      assertKey(key);
      try {
        await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
      } catch (err) {
        if (!isAbsent(err)) throw failure(`delete ${key}`, err);
      }
    },

    async deletePrefix(prefix) {
      if (!prefix.endsWith('/')) throw new Error(`deletePrefix takes a folder prefix ending with "/", not ${JSON.stringify(prefix)}`);
      assertPrefix(prefix);
      let count = 0;
      // Always list from the start: each batch removes what the previous listing showed.
      for (;;) {
        const { objects } = await this.listPage(prefix, { pageSize: maxDeleteBatch });
        if (objects.length === 0) return count;
        try {
          const r = await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: objects.map((o) => ({ Key: o.key })), Quiet: true } }));
          if (r.Errors?.length) {
            const first = r.Errors[0]!;
            throw new Error(`${r.Errors.length} objects were not deleted, first ${first.Key}: ${first.Code} ${first.Message}`);
          }
        } catch (err) {
          throw failure(`delete ${prefix}`, err);
        }
        count += objects.length;
      }
    },
  };
}

const statusOf = (err: unknown) => (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;

export const isAbsent = (err: unknown) => {
  const name = (err as { name?: string }).name;
  return name === 'NoSuchKey' || name === 'NotFound' || (statusOf(err) === 404 && name !== 'NoSuchBucket');
};

export const failure = (what: string, cause: unknown) =>
  new ObjectStoreError('failure', `Could not ${what} in the S3 bucket: ${(cause as Error).name}: ${(cause as Error).message}`, { cause });

/**
 * Rewrites every key a client sends (its `Key`, and the keys of a DeleteObjects) through `route`:
 * the tus S3 store names its objects after the bare upload id, and Chipmunk places them under
 * prefixes of the media bucket. Answers still carry the routed keys; nothing the store reads depends on them.
 */
export function routeKeys(client: Pick<S3Client, 'middlewareStack'>, route: (key: string) => string): void {
  client.middlewareStack.add(
    (next) => async (args) => {
      const input = args.input as { Key?: unknown; Delete?: { Objects?: { Key?: string }[] } };
      const routed: Record<string, unknown> = { ...input };
      if (typeof input.Key === 'string') routed.Key = route(input.Key);
      if (input.Delete?.Objects) routed.Delete = { ...input.Delete, Objects: input.Delete.Objects.map((o) => ({ ...o, Key: route(o.Key ?? '') })) };
      return next({ ...args, input: routed });
    },
    { step: 'initialize', name: 'chipmunkKeyRoute' },
  );
}
