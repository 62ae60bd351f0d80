import path from 'node:path';
import type { Config } from '../config.js';
import { RECEIVED_PREFIX, UPLOADS_PREFIX } from '../storage/objects.js';
import { createS3Client, createS3ObjectStore } from '../storage/s3.js';
import { createS3ReceivedArea } from '../storage/s3-received.js';
import { createS3UploadArea } from '../storage/s3-upload-area.js';
import { createUploadArea, type UploadArea } from './area.js';
import { createReceivedArea, type ReceivedArea } from './received.js';
import { ChipmunkS3Store } from './s3-datastore.js';
import { localTusDatastore, type TusDatastoreFactory } from './tus.js';

export type UploadAreas = {
  /** Unfinished tus uploads (recovery, the expiry sweep and fsck look here). */
  area: UploadArea;
  /** Uploads whose last byte arrived, until their processing job ends. */
  received: ReceivedArea;
  /** The tus store over `area`. */
  datastore: TusDatastoreFactory;
  /** Releases the S3 clients' sockets. */
  close(): void;
};

/**
 * Where uploads live, chosen in this one place: with CHIPMUNK_S3_BUCKET, in the media bucket under
 * `uploads/` (tus's records, through @tus/s3-store) and `received/` (the multipart upload and, once
 * complete, the received bytes), so that any node can resume an upload and
 * run its processing job; otherwise in the data directory's `uploads/` and `received/` folders, as
 * the embedded default always did. Processing scratch is local either way.
 */
export function openUploadAreas(config: Pick<Config, 'dataDir' | 'uploadDir' | 's3'>): UploadAreas {
  if (!config.s3) {
    const area = createUploadArea(config.uploadDir);
    return { area, received: createReceivedArea(path.join(config.dataDir, 'received')), datastore: localTusDatastore(area.dir), close: () => undefined };
  }
  const s3 = config.s3;
  const client = createS3Client(s3);
  const store = createS3ObjectStore({ client, bucket: s3.bucket });
  const area = createS3UploadArea({ client, bucket: s3.bucket, store, prefix: UPLOADS_PREFIX, dataPrefix: RECEIVED_PREFIX });
  const received = createS3ReceivedArea({ store, prefix: RECEIVED_PREFIX });
  const stores: ChipmunkS3Store[] = [];
  return {
    area,
    received,
    datastore: ({ expiryMs, onBytes, offsets }) => {
      const made = new ChipmunkS3Store({ s3, prefix: UPLOADS_PREFIX, dataPrefix: RECEIVED_PREFIX, area, expiryMs, onBytes, offsets });
      stores.push(made);
      return made;
    },
    close() {
      for (const s of stores) s.close();
      client.destroy();
    },
  };
}
