import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileIdPattern } from '../ids.js';
import type { ReceivedArea } from '../uploads/received.js';
import { listAll, RECEIVED_PREFIX, type ObjectStore } from './objects.js';

/** The largest object S3 stores, so the most an upload kept in the bucket may weigh. */
export const S3_MAX_OBJECT_BYTES = 5 * 1024 ** 4;

/**
 * The received area as a key prefix of the bucket: `received/<id>` holds an upload's bytes from its
 * last byte until its processing job ends, so whichever node claims the job can run it. A tus upload's
 * multipart upload is made on this very key (storage/s3-upload-area.ts), so its completion is the
 * keeping: no byte is copied, and the upload area's removal of tus's files leaves it alone.
 * Processing fetches the bytes into its local scratch.
 */
export function createS3ReceivedArea(opts: { store: ObjectStore; prefix?: string }): ReceivedArea {
  const { store } = opts;
  const prefix = opts.prefix ?? RECEIVED_PREFIX;
  const keyOf = (id: string) => {
    if (!fileIdPattern.test(id)) throw new Error(`Refusing unsafe file id ${JSON.stringify(id)}`);
    return prefix + id;
  };
  const present = async (id: string) => (await store.head(keyOf(id))) !== undefined;

  return {
    async keep(id, from) {
      // The upload area completes tus's multipart upload here: kept when the whole is present.
      if (from !== keyOf(id)) throw new Error(`The bucket's uploads complete at ${keyOf(id)}, not at ${JSON.stringify(from)}`);
      return present(id);
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
