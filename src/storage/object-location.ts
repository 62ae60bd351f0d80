import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { S3Settings } from '../config.js';
import { mediaKey, type ObjectStore } from './objects.js';

/**
 * Where nginx fetches a variant held in the bucket: the path and query of a presigned GET on the
 * S3 endpoint (nginx proxies it to `objectOrigin`; the URL never reaches a client), and the
 * validators Chipmunk's own delivery gives the same object (serve.ts: nginx's "<mtime hex>-<size
 * hex>" ETag over the object's Last-Modified), so both paths agree.
 */
export type ObjectLocation = { fetch: string; size: number; etag: string; lastModified: string };
export type ObjectLocator = (fileId: string, name: string) => Promise<ObjectLocation | undefined>;

export function createObjectLocator(opts: { client: S3Client; store: ObjectStore; s3: S3Settings; expiresSeconds: number }): ObjectLocator {
  const origin = objectOrigin(opts.s3);
  return async (fileId, name) => {
    const key = mediaKey(fileId, name);
    const info = await opts.store.head(key);
    if (!info) return undefined;
    const signed = new URL(await getSignedUrl(opts.client, new GetObjectCommand({ Bucket: opts.s3.bucket, Key: key }), { expiresIn: opts.expiresSeconds }));
    // The rendered nginx config proxies to objectOrigin: a URL elsewhere would be signed for another host.
    if (signed.origin !== origin.origin)
      throw new Error(`The presigned URL points at ${signed.origin}, not at ${origin.origin} (the endpoint nginx proxies to).`);
    const mtime = Math.floor(info.lastModified.getTime() / 1000);
    return {
      fetch: `${signed.pathname}${signed.search}`,
      size: info.size,
      etag: `"${mtime.toString(16)}-${info.size.toString(16)}"`,
      lastModified: new Date(mtime * 1000).toUTCString(),
    };
  };
}

/** The origin presigned URLs point at: the endpoint (with the bucket as a host name unless path style), or AWS's regional one. */
export function objectOrigin(s3: Pick<S3Settings, 'bucket' | 'endpoint' | 'region' | 'forcePathStyle'>): URL {
  const base = new URL(s3.endpoint ?? `https://s3.${s3.region}.amazonaws.com`);
  if (!s3.forcePathStyle) base.hostname = `${s3.bucket}.${base.hostname}`;
  return new URL(base.origin);
}
