import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { CopyObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { fileIdPattern } from '../ids.js';
import type { ReceivedArea } from '../uploads/received.js';
import { assertKey, listAll, RECEIVED_PREFIX, type ObjectStore } from './objects.js';
import { failure, isAbsent } from './s3.js';

/** What one CopyObject may copy (S3's limit), so the most an upload kept in the bucket may weigh. */
export const S3_SINGLE_COPY_BYTES = 5 * 1024 ** 3;

/**
 * The received area as a key prefix of the bucket: `received/<id>` holds an upload's bytes from its
 * last byte until its processing job ends, so whichever node claims the job can run it. A tus upload's
 * completed object is copied here inside the bucket (CopyObject: no byte crosses the network), which
 * leaves the upload area's own cleanup untouched, as the local hard link does. Processing fetches the
 * bytes into its local scratch.
 */
export function createS3ReceivedArea(opts: { client: S3Client; bucket: string; store: ObjectStore; prefix?: string }): ReceivedArea {
  const { client, bucket, store } = opts;
  const prefix = opts.prefix ?? RECEIVED_PREFIX;
  const keyOf = (id: string) => {
    if (!fileIdPattern.test(id)) throw new Error(`Refusing unsafe file id ${JSON.stringify(id)}`);
    return prefix + id;
  };
  const present = async (id: string) => (await store.head(keyOf(id))) !== undefined;

  return {
    async keep(id, from) {
      assertKey(from);
      try {
        // One request (objects up to 5 GiB, S3's limit for a single copy; purposes are capped to it).
        await client.send(new CopyObjectCommand({ Bucket: bucket, Key: keyOf(id), CopySource: `${bucket}/${from}` }));
        return true;
      } catch (err) {
        // The source went (a racing twin kept it and discarded the upload): kept only if it is here.
        if (isAbsent(err)) return present(id);
        throw failure(`keep ${from} as ${keyOf(id)}`, err);
      }
    },

    async take(id, from) {
      const { size } = await stat(from);
      await store.put(keyOf(id), createReadStream(from), { size });
      await unlink(from);
    },

    async locate(id) {
      return (await present(id)) ? keyOf(id) : undefined;
    },

    async toLocal(id, scratchDir) {
      const body = await store.get(keyOf(id));
      if (!body) return undefined;
      // A folder of its own in the workspace, so a processor's outputs never meet the copy.
      const dir = path.join(scratchDir, '.received');
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const target = path.join(dir, id);
      await pipeline(body, createWriteStream(target, { mode: 0o600 }));
      return target;
    },

    async remove(id) {
      await store.delete(keyOf(id));
    },

    async list() {
      const ids: string[] = [];
      for await (const object of listAll(store, prefix)) {
        const id = object.key.slice(prefix.length);
        if (fileIdPattern.test(id)) ids.push(id);
      }
      return ids;
    },
  };
}
