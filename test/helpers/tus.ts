import { Upload, type UploadOptions } from 'tus-js-client';

export type TusResult = { ok: true; url: string; body: unknown; status: number } | { ok: false; error: Error; status?: number; body?: string };

/** Uploads bytes with the real tus-js-client (retries off unless asked) and settles with the outcome. */
export function tusUpload(endpoint: string, data: Buffer, opts: Partial<UploadOptions> & { token?: string } = {}): Promise<TusResult> {
  const { token, ...rest } = opts;
  return new Promise((resolve) => {
    const upload = new Upload(data, {
      endpoint,
      retryDelays: [],
      headers: token ? { Authorization: `Bearer ${token}` } : {},
      metadata: { filename: 'file.bin' },
      ...rest,
      onSuccess: (payload) => {
        const res = payload.lastResponse;
        const text = res.getBody();
        resolve({ ok: true, url: upload.url!, status: res.getStatus(), body: text ? JSON.parse(text) : undefined });
      },
      onError: (error) => {
        const res = (error as { originalResponse?: { getStatus(): number; getBody(): string } }).originalResponse;
        resolve({ ok: false, error, status: res?.getStatus(), body: res?.getBody() });
      },
    });
    upload.start();
  });
}

/**
 * Starts an upload and stops it once its first chunk has landed, as a dropped connection would;
 * resolves with the upload's URL, to resume or terminate.
 */
export function uploadFirstChunk(
  endpoint: string,
  data: Buffer,
  opts: { token: string; chunkSize: number; metadata?: Record<string, string> },
): Promise<string> {
  return new Promise((resolve, reject) => {
    const upload: Upload = new Upload(data, {
      endpoint,
      chunkSize: opts.chunkSize,
      retryDelays: [],
      headers: { Authorization: `Bearer ${opts.token}` },
      ...(opts.metadata ? { metadata: opts.metadata } : {}),
      onChunkComplete: () => {
        void upload.abort(false).then(() => resolve(upload.url!));
      },
      onError: reject,
    });
    upload.start();
  });
}
