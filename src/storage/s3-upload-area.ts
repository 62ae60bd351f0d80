import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListPartsCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { errors } from '../errors.js';
import { fileIdPattern } from '../ids.js';
import type { UploadArea, UploadEntry } from '../uploads/area.js';
import { listAll, RECEIVED_PREFIX, UPLOADS_PREFIX, type ObjectStore } from './objects.js';
import { failure, isAbsent } from './s3.js';

/**
 * The tus upload area in the bucket, in @tus/s3-store's layout (uploads/s3-datastore.ts routes its
 * keys): `<prefix><id>.info` is tus's record of the upload and `<prefix><id>.part` the tail shorter
 * than a part; the S3 multipart upload holding its complete parts is on `<dataPrefix><id>`, the
 * received area's key, where it becomes the whole upload once the last byte arrived. That whole is
 * the received area's (it outlives the tus files, until processing ends): this area never removes
 * it. Every node sees the same area.
 */
export function createS3UploadArea(opts: {
  client: S3Client;
  bucket: string;
  store: ObjectStore;
  prefix?: string;
  dataPrefix?: string;
}): UploadArea & { complete(id: string): Promise<void> } {
  const { client, bucket, store } = opts;
  const prefix = opts.prefix ?? UPLOADS_PREFIX;
  const dataPrefix = opts.dataPrefix ?? RECEIVED_PREFIX;
  const checked = (id: string) => {
    if (!fileIdPattern.test(id)) throw errors.uploadGone();
    return id;
  };
  const keyOf = (id: string) => prefix + checked(id);
  const dataKeyOf = (id: string) => dataPrefix + checked(id);

  /** The unfinished multipart uploads on `key` (normally one; more only if a creation was retried). */
  async function multipartUploads(key: string): Promise<string[]> {
    const ids: string[] = [];
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      let page;
      try {
        page = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: key, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }));
      } catch (err) {
        throw failure(`list the multipart uploads of ${key}`, err);
      }
      for (const u of page.Uploads ?? []) if (u.Key === key && u.UploadId) ids.push(u.UploadId);
      if (!page.IsTruncated) return ids;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
  }

  /** The complete parts of a multipart upload, or undefined when it is gone (completed or aborted). */
  async function partsOf(key: string, uploadId: string): Promise<{ PartNumber: number; ETag: string; Size: number }[] | undefined> {
    const parts: { PartNumber: number; ETag: string; Size: number }[] = [];
    let marker: string | undefined;
    for (;;) {
      let page;
      try {
        page = await client.send(new ListPartsCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumberMarker: marker }));
      } catch (err) {
        if (isAbsent(err) || (err as { name?: string }).name === 'NoSuchUpload') return undefined;
        throw failure(`list the parts of ${key}`, err);
      }
      for (const p of page.Parts ?? []) parts.push({ PartNumber: p.PartNumber!, ETag: p.ETag!, Size: p.Size ?? 0 });
      if (!page.IsTruncated) return parts;
      marker = page.NextPartNumberMarker;
    }
  }

  async function partBytes(key: string, uploadId: string): Promise<number | undefined> {
    return (await partsOf(key, uploadId))?.reduce((sum, p) => sum + p.Size, 0);
  }

  async function tailBytes(key: string): Promise<number> {
    try {
      return (await client.send(new HeadObjectCommand({ Bucket: bucket, Key: `${key}.part` }))).ContentLength ?? 0;
    } catch (err) {
      if (!isAbsent(err)) throw failure(`read the metadata of ${key}.part`, err);
      return 0;
    }
  }

  async function readRecord(id: string): Promise<{ id?: unknown } | undefined> {
    try {
      const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `${keyOf(id)}.info` }));
      return JSON.parse(await r.Body!.transformToString()) as { id?: unknown } | undefined;
    } catch (err) {
      if (isAbsent(err)) return undefined;
      if (err instanceof SyntaxError) return undefined;
      throw failure(`read upload ${id}'s record`, err);
    }
  }

  return {
    dataPath: dataKeyOf,

    async discard(id, opts) {
      const key = keyOf(id);
      const dataKey = dataKeyOf(id);
      // Every multipart upload on the key, whether or not tus's record still names it: none is left behind.
      for (const uploadId of opts?.completed ? [] : await multipartUploads(dataKey)) {
        try {
          await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: dataKey, UploadId: uploadId }));
        } catch (err) {
          if (!isAbsent(err) && (err as { name?: string }).name !== 'NoSuchUpload') throw failure(`abort the multipart upload of ${dataKey}`, err);
        }
      }
      try {
        const r = await client.send(
          new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: [{ Key: `${key}.info` }, { Key: `${key}.part` }], Quiet: true } }),
        );
        const failed = (r.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
        if (failed.length) throw new Error(`${failed[0]!.Key}: ${failed[0]!.Code} ${failed[0]!.Message}`);
      } catch (err) {
        throw failure(`delete upload ${id}`, err);
      }
    },

    async list() {
      const entries = new Map<string, UploadEntry>();
      const entry = (id: string) => {
        const e = entries.get(id) ?? { id, hasSidecar: false };
        entries.set(id, e);
        return e;
      };
      for await (const object of listAll(store, prefix)) {
        const name = object.key.slice(prefix.length);
        const id = name.replace(/\.(info|part)$/, '');
        if (!fileIdPattern.test(id)) continue;
        const e = entry(id);
        if (name.endsWith('.info')) e.hasSidecar = true;
      }
      // A multipart upload whose record was lost is an upload present all the same (to be discarded).
      let keyMarker: string | undefined;
      let uploadIdMarker: string | undefined;
      for (;;) {
        let page;
        try {
          page = await client.send(
            new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: dataPrefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
          );
        } catch (err) {
          throw failure(`list the multipart uploads under ${dataPrefix}`, err);
        }
        for (const u of page.Uploads ?? []) {
          const id = u.Key?.slice(dataPrefix.length) ?? '';
          if (fileIdPattern.test(id)) entry(id);
        }
        if (!page.IsTruncated) break;
        keyMarker = page.NextKeyMarker;
        uploadIdMarker = page.NextUploadIdMarker;
      }
      return entries;
    },

    async receivedBytes(id) {
      const dataKey = dataKeyOf(id);
      // Completed: the whole object is there.
      const whole = await store.head(dataKey);
      if (whole) return whole.size;
      const [uploadId] = await multipartUploads(dataKey);
      if (!uploadId) return undefined;
      const parts = await partBytes(dataKey, uploadId);
      if (parts === undefined) {
        // Completed between the two questions: ask for the object again.
        return (await store.head(dataKey))?.size;
      }
      return parts + (await tailBytes(keyOf(id)));
    },

    /**
     * A stop between the last part and the completion of the multipart upload leaves every byte in
     * parts: the object is made from them now (start-up recovery calls this before the commitment).
     */
    async complete(id) {
      const dataKey = dataKeyOf(id);
      if (await store.head(dataKey)) return;
      const record = (await readRecord(id)) as { size?: unknown } | undefined;
      const [uploadId] = await multipartUploads(dataKey);
      if (!uploadId || typeof record?.size !== 'number' || (await tailBytes(keyOf(id))) > 0) return;
      const parts = await partsOf(dataKey, uploadId);
      if (!parts?.length || parts.reduce((sum, p) => sum + p.Size, 0) !== record.size) return;
      try {
        await client.send(
          new CompleteMultipartUploadCommand({
            Bucket: bucket,
            Key: dataKey,
            UploadId: uploadId,
            MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.PartNumber, ETag: p.ETag })) },
          }),
        );
      } catch (err) {
        throw failure(`complete the multipart upload of ${dataKey}`, err);
      }
    },

    async sidecarReadable(id) {
      return (await readRecord(id))?.id === id;
    },
  };
}
