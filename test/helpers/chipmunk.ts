import { mkdtemp, readFile, rm } from 'node:fs/promises';
import sharp from 'sharp';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createChipmunk, type Chipmunk, type ChipmunkOptions } from '../../src/chipmunk.js';
import { loadConfig } from '../../src/config.js';
import { silentLogger } from '../../src/log.js';
import { stripLosslessly } from '../../src/media/metadata.js';

export type TestChipmunk = {
  chipmunk: Chipmunk;
  url: string;
  /** The internal port serving /internal/auth (nginx's auth_request). */
  internalPort: number;
  apiKey: string;
  secret: string;
  dataDir: string;
  /**
   * The settings naming the shared services a distributed Chipmunk runs on (database, bucket,
   * secrets), which nginx's rendered config and other nodes need too; undefined when embedded.
   */
  serviceEnv?: Record<string, string>;
  /** Calls the /v1 API with the API key. */
  api(pathname: string, init?: RequestInit & { json?: unknown }): Promise<Response>;
  uploadToken(userId: string, purpose: string, expiresIn?: number): Promise<string>;
  /** Stops the server and removes its data directory. */
  close(): Promise<void>;
  /** Stops the server and keeps its data directory (to restart on it). */
  stop(): Promise<void>;
};

export const corpus = (...parts: string[]) => path.resolve(import.meta.dirname, '../../../shared/corpus', ...parts);

/**
 * A photo as Chipmunk stores and serves it as variant 0: metadata stripped (src/media/metadata.ts).
 * Tests that compare served bytes with sent ones send this form, which stripping leaves as it is.
 */
export async function storedForm(photo: string | Buffer): Promise<Buffer> {
  const bytes = typeof photo === 'string' ? await readFile(photo) : photo;
  const meta = await sharp(bytes).metadata();
  return stripLosslessly(meta.format, bytes, meta.orientation) ?? bytes;
}

/**
 * A real Chipmunk listening on a free loopback port, in its own temporary data directory
 * (or `opts.dataDir`, to restart on the data a previous one left).
 */
export async function startChipmunk(env: Record<string, string> = {}, opts: ChipmunkOptions & { dataDir?: string } = {}): Promise<TestChipmunk> {
  const { dataDir: given, ...chipmunkOpts } = opts;
  const dataDir = given ?? (await mkdtemp(path.join(tmpdir(), 'chipmunk-test-')));
  // As root, nginx's workers run as nobody:nogroup (test/helpers/nginx.ts): the media are shared with that group.
  const mediaGroup = process.getuid?.() === 0 ? { CHIPMUNK_MEDIA_GROUP: 'nogroup' } : {};
  const config = loadConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    CHIPMUNK_DATA_DIR: dataDir,
    CHIPMUNK_LOG_LEVEL: 'silent',
    CHIPMUNK_DISK_MARGIN: '0',
    CHIPMUNK_INTERNAL_PORT: '0',
    ...mediaGroup,
    ...env,
  });
  const chipmunk = createChipmunk(config, { defaultMetrics: false, ...(chipmunkOpts.logWrite ? {} : { logger: silentLogger }), ...chipmunkOpts });
  const { port, internalPort } = await chipmunk.listen();
  const url = `http://127.0.0.1:${port}`;
  const api = (pathname: string, init: RequestInit & { json?: unknown } = {}) => {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${config.apiKey}`);
    let body = init.body;
    if (init.json !== undefined) {
      headers.set('content-type', 'application/json');
      body = JSON.stringify(init.json);
    }
    return fetch(`${url}${pathname}`, { ...init, headers, body });
  };
  return {
    chipmunk,
    url,
    internalPort,
    apiKey: config.apiKey,
    secret: config.secret,
    dataDir,
    api,
    async uploadToken(userId, purpose, expiresIn) {
      const res = await api('/v1/upload-tokens', { method: 'POST', json: { userId, purpose, expiresIn } });
      if (res.status !== 201) throw new Error(`upload token: ${res.status} ${await res.text()}`);
      return ((await res.json()) as { token: string }).token;
    },
    async close() {
      await chipmunk.close();
      await rm(dataDir, { recursive: true, force: true });
    },
    stop: () => chipmunk.close(),
  };
}
