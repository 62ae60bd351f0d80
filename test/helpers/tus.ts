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
