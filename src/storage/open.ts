import type { Config } from '../config.js';
import { createLocalStorage } from './local.js';
import { createObjectBlobStorage } from './object-blobs.js';
import { createS3Client, createS3ObjectStore } from './s3.js';
import type { BlobStorage } from './storage.js';

/**
 * The media blobs where the configuration says: the S3-compatible bucket when CHIPMUNK_S3_BUCKET
 * is set, the local media folder otherwise. Scratch (`workDir`) is local either way. `close`
 * releases the S3 client's sockets.
 */
export function openBlobStorage(config: Pick<Config, 'mediaDir' | 'mediaGroupId' | 's3'>, workDir: string): { storage: BlobStorage; close(): void; where: string } {
  if (!config.s3) {
    return { storage: createLocalStorage({ mediaDir: config.mediaDir, workDir, mediaGid: config.mediaGroupId }), close: () => undefined, where: config.mediaDir };
  }
  const client = createS3Client(config.s3);
  const store = createS3ObjectStore({ client, bucket: config.s3.bucket });
  return { storage: createObjectBlobStorage({ store, workDir }), close: () => client.destroy(), where: `s3://${config.s3.bucket}` };
}
