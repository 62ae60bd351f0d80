import { createHmac } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { SignJWT } from 'jose';
import type { ChipmunkFile, ChipmunkFileList, ChipmunkUser, SignedLink, UploadToken } from './contract.js';

// The typed kit for an app backend: `import { createChipmunk } from 'chipmunk/client'`.
// It speaks only HTTP (and signs locally with the shared secret); nothing here imports the server.

// The JSON the server answers with: types generated from its zod schemas (scripts/contract-types.ts).
export type {
  ChipmunkAudioFile,
  ChipmunkCover,
  ChipmunkFile,
  ChipmunkFileList,
  ChipmunkImageFile,
  ChipmunkUser,
  ChipmunkVariant,
  SignedLink,
  UploadToken,
} from './contract.js';

export type Visibility = ChipmunkFile['visibility'];

export type ChipmunkOptions = {
  /** Where Chipmunk listens, e.g. http://localhost:8080. */
  baseUrl: string;
  /** CHIPMUNK_API_KEY. */
  apiKey: string;
  /** CHIPMUNK_SECRET: lets the kit sign upload tokens and delivery URLs without a round trip. */
  secret?: string;
  /** Defaults to the global fetch. */
  fetch?: typeof fetch;
};

type UploadTarget = { userId: string; purpose: string; filename?: string };

/** Every failure the kit reports: the server's stable code, HTTP status and sentence. */
export class ChipmunkError extends Error {
  readonly code: string;
  readonly status: number;

  constructor(code: string, status: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ChipmunkError';
    this.code = code;
    this.status = status;
  }
}

export function createChipmunk(options: ChipmunkOptions) {
  const baseUrl = options.baseUrl.replace(/\/+$/, '');
  const doFetch = options.fetch ?? fetch;

  function needSecret(what: string): string {
    if (!options.secret) throw new ChipmunkError('SECRET_REQUIRED', 0, `${what} needs the secret: pass { secret: CHIPMUNK_SECRET } to createChipmunk.`);
    return options.secret;
  }

  async function call<T>(
    method: string,
    pathname: string,
    init: { json?: unknown; body?: BodyInit | AsyncIterable<Uint8Array>; headers?: Record<string, string> } = {},
  ): Promise<T> {
    const headers: Record<string, string> = { authorization: `Bearer ${options.apiKey}`, ...init.headers };
    let body = init.body;
    if (init.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(init.json);
    }
    let res: Response;
    try {
      const streaming = body !== undefined && typeof body === 'object' && Symbol.asyncIterator in body;
      res = await doFetch(`${baseUrl}${pathname}`, { method, headers, body: body as BodyInit, ...(streaming ? { duplex: 'half' } : {}) } as RequestInit);
    } catch (err) {
      throw new ChipmunkError('NETWORK_ERROR', 0, `Could not reach Chipmunk at ${baseUrl}: ${(err as Error).message}`, { cause: err });
    }
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!res.ok) {
      const error = (parsed as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
      if (typeof error?.code === 'string' && typeof error.message === 'string') throw new ChipmunkError(error.code, res.status, error.message);
      throw new ChipmunkError('HTTP_ERROR', res.status, `Chipmunk answered ${res.status} ${res.statusText}${text ? `: ${text.slice(0, 200)}` : ''}`);
    }
    return parsed as T;
  }

  /** Streams a multipart/form-data body: fields first, then the file, never held whole. */
  async function uploadMultipart(
    target: UploadTarget,
    file: AsyncIterable<Uint8Array>,
    size: number | undefined,
    mimeType: string | undefined,
  ): Promise<ChipmunkFile> {
    const boundary = `----chipmunk${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
    const filename = (target.filename ?? 'upload').replace(/["\r\n\\]/g, '_');
    const fields: Record<string, string> = { userId: target.userId, purpose: target.purpose, filename };
    if (size !== undefined) fields.size = String(size);
    let head = '';
    for (const [name, value] of Object.entries(fields)) head += `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
    head += `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\nContent-Type: ${mimeType ?? 'application/octet-stream'}\r\n\r\n`;
    const preamble = Buffer.from(head, 'utf8');
    const epilogue = Buffer.from(`\r\n--${boundary}--\r\n`, 'utf8');
    const headers: Record<string, string> = { 'content-type': `multipart/form-data; boundary=${boundary}` };
    if (size !== undefined) headers['content-length'] = String(preamble.length + size + epilogue.length);
    async function* body() {
      yield preamble;
      for await (const chunk of file) yield chunk;
      yield epilogue;
    }
    return call<ChipmunkFile>('POST', '/v1/files', { body: body(), headers });
  }

  const toAsyncIterable = (stream: Readable | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> =>
    stream instanceof ReadableStream ? Readable.fromWeb(stream as import('node:stream/web').ReadableStream<Uint8Array>) : stream;

  const enc = encodeURIComponent;

  return {
    /** Asks the server for an upload token for one of your users (needs only the API key). */
    createUploadToken(grant: { userId: string; purpose: string; expiresIn?: number }): Promise<UploadToken> {
      return call<UploadToken>('POST', '/v1/upload-tokens', { json: grant });
    },

    /** Signs an upload token locally (HS256, claims sub, purpose, exp) with the secret: no round trip. */
    async signUploadToken(grant: { userId: string; purpose: string; expiresIn?: number }): Promise<UploadToken> {
      const secret = needSecret('Signing upload tokens');
      const exp = Math.floor(Date.now() / 1000) + Math.floor(grant.expiresIn ?? 3600);
      const token = await new SignJWT({ purpose: grant.purpose })
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .setSubject(grant.userId)
        .setIssuedAt()
        .setExpirationTime(exp)
        .sign(new TextEncoder().encode(secret));
      return { token, expiresAt: new Date(exp * 1000).toISOString() };
    },

    /** Uploads base64 text or a `data:<type>;base64,…` URI (e.g. a signup avatar). */
    uploadBase64(target: UploadTarget & { data: string }): Promise<ChipmunkFile> {
      return call<ChipmunkFile>('POST', '/v1/files', {
        json: { userId: target.userId, purpose: target.purpose, filename: target.filename, data: target.data },
      });
    },

    /** Uploads bytes held in memory, as multipart. */
    uploadBuffer(target: UploadTarget & { data: Uint8Array; mimeType?: string }): Promise<ChipmunkFile> {
      const { data } = target;
      return uploadMultipart(
        target,
        (async function* () {
          yield data;
        })(),
        data.byteLength,
        target.mimeType,
      );
    },

    /** Streams a Node or web stream as multipart; pass `size` when known for an exact quota reservation. */
    uploadStream(
      target: UploadTarget & { stream: Readable | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>; size?: number; mimeType?: string },
    ): Promise<ChipmunkFile> {
      return uploadMultipart(target, toAsyncIterable(target.stream), target.size, target.mimeType);
    },

    /** Streams a local file as multipart. */
    async uploadPath(target: Omit<UploadTarget, 'filename'> & { path: string; filename?: string; mimeType?: string }): Promise<ChipmunkFile> {
      const { size } = await stat(target.path);
      return uploadMultipart({ ...target, filename: target.filename ?? path.basename(target.path) }, createReadStream(target.path), size, target.mimeType);
    },

    getFile(fileId: string): Promise<ChipmunkFile> {
      return call<ChipmunkFile>('GET', `/v1/files/${enc(fileId)}`);
    },

    /** One page of a user's files, newest first. */
    listFiles(userId: string, page: { limit?: number; cursor?: string } = {}): Promise<ChipmunkFileList> {
      const query = new URLSearchParams();
      if (page.limit !== undefined) query.set('limit', String(page.limit));
      if (page.cursor) query.set('cursor', page.cursor);
      const qs = query.size ? `?${query}` : '';
      return call('GET', `/v1/users/${enc(userId)}/files${qs}`);
    },

    /** Every file of a user, page by page. */
    async *allFiles(userId: string, pageSize = 100): AsyncGenerator<ChipmunkFile> {
      let cursor: string | undefined;
      do {
        const page = await this.listFiles(userId, { limit: pageSize, cursor });
        yield* page.files;
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
    },

    deleteFile(fileId: string): Promise<void> {
      return call<void>('DELETE', `/v1/files/${enc(fileId)}`);
    },

    setVisibility(fileId: string, visibility: Visibility): Promise<ChipmunkFile> {
      return call<ChipmunkFile>('PATCH', `/v1/files/${enc(fileId)}`, { json: { visibility } });
    },

    /** Gives the file a new delivery token: every URL handed out before stops working. */
    rotateToken(fileId: string): Promise<ChipmunkFile> {
      return call<ChipmunkFile>('POST', `/v1/files/${enc(fileId)}/rotate-token`);
    },

    /** Asks the server for a signed link to one variant (`variant` defaults to the original, '0'). */
    signedUrl(fileId: string, opts: { variant?: string | number; expiresIn?: number } = {}): Promise<SignedLink> {
      const query = new URLSearchParams({ variant: String(opts.variant ?? '0'), expiresIn: String(opts.expiresIn ?? 3600) });
      return call('GET', `/v1/files/${enc(fileId)}/url?${query}`);
    },

    /**
     * Signs a delivery URL locally: `url` is a variant's `url` from the file JSON (or its
     * `/f/<token>/<n>` path). The answer ends in `?exp=<unix seconds>&sig=<base64url HMAC-SHA256>`.
     * With `expiresIn` (default 3600 s) the expiry is rounded up the way the server rounds its own
     * links, so every call within the same window gives the same URL (cacheable): the link lives at
     * least `expiresIn` and less than one step more — 1 min below 10 min, 5 min below 1 h, 1 h below
     * a day, 1 day beyond. `expiresAt` is taken as given.
     */
    signUrl(url: string, opts: { expiresIn?: number; expiresAt?: Date | number } = {}): string {
      const secret = needSecret('Signing delivery URLs');
      const parsed = new URL(url, baseUrl);
      const match = /^(.*?)(\/f\/[0-9a-z]+\/[0-9a-z-]+)$/.exec(parsed.pathname);
      if (!match) throw new ChipmunkError('INVALID_URL', 0, `Not a delivery URL (…/f/<token>/<n>): ${url}`);
      const exp =
        opts.expiresAt !== undefined
          ? Math.floor((opts.expiresAt instanceof Date ? opts.expiresAt.getTime() : opts.expiresAt) / 1000)
          : coarseExpiry(Date.now(), opts.expiresIn ?? 3600);
      const signed = `${match[2]}?exp=${exp}`;
      const sig = createHmac('sha256', secret).update(signed).digest('base64url');
      const origin = /^[a-z][a-z0-9+.-]*:/i.test(url) ? parsed.origin : '';
      return `${origin}${match[1]}${signed}&sig=${sig}`;
    },

    /** Quota and usage: `{ id, quotaBytes, usedBytes, reservedBytes, fileCount }`. */
    getUser(userId: string): Promise<ChipmunkUser> {
      return call<ChipmunkUser>('GET', `/v1/users/${enc(userId)}`);
    },

    getUsage(userId: string): Promise<ChipmunkUser> {
      return this.getUser(userId);
    },

    setQuota(userId: string, quotaBytes: number): Promise<ChipmunkUser> {
      return call<ChipmunkUser>('PUT', `/v1/users/${enc(userId)}`, { json: { quotaBytes } });
    },
  };
}

export type ChipmunkClient = ReturnType<typeof createChipmunk>;

/**
 * The server's coarse expiry (src/delivery/signing.ts), repeated here because the kit imports
 * nothing from the server; test/kit-package.test.ts checks that both agree.
 */
export function coarseExpiry(nowMs: number, expiresIn: number): number {
  const step = expiresIn < 600 ? 60 : expiresIn < 3600 ? 300 : expiresIn < 86_400 ? 3600 : 86_400;
  const target = Math.floor(nowMs / 1000) + Math.ceil(expiresIn);
  return Math.ceil(target / step) * step;
}
