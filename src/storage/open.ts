import type { Config } from '../config.js';
import { createLocalStorage } from './local.js';
import { createObjectBlobStorage } from './object-blobs.js';
import { createObjectLocator, type ObjectLocator } from './object-location.js';
import { createS3Client, createS3ObjectStore } from './s3.js';
import type { BlobStorage } from './storage.js';

/**
 * The media blobs where the configuration says: the S3-compatible bucket when CHIPMUNK_S3_BUCKET
 * is set, the local media folder otherwise. Scratch (`workDir`) is local either way. With a
 * bucket, `locate` tells nginx where a variant's bytes are (a presigned GET), `probe` checks the
 * bucket answers (for /ready); `close` releases the S3 client's sockets.
 */
export function openBlobStorage(
  config: Pick<Config, 'mediaDir' | 'mediaGroupId' | 's3' | 'authCacheSeconds'>,
  workDir: string,
): { storage: BlobStorage; locate: ObjectLocator | undefined; probe: (() => Promise<void>) | undefined; close(): void } {
  if (!config.s3) {
    return {
      storage: createLocalStorage({ mediaDir: config.mediaDir, workDir, mediaGid: config.mediaGroupId }),
      locate: undefined,
      probe: undefined,
      close: () => undefined,
    };
  }
  const client = createS3Client(config.s3);
  const store = createS3ObjectStore({ client, bucket: config.s3.bucket });
  // A presigned URL outlives the auth answer nginx caches it in (the signature is checked when a fetch starts).
  const locate = createObjectLocator({ client, store, s3: config.s3, expiresSeconds: config.authCacheSeconds + 60 });
  // Readiness: the bucket answers a listing (a wrong name, wrong keys or a store down fail it).
  const probe = async () => void (await store.listPage('', { pageSize: 1 }));
  return { storage: createObjectBlobStorage({ store, workDir }), locate, probe, close: () => client.destroy() };
}
