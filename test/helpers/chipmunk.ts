import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createChipmunk, type Chipmunk } from '../../src/chipmunk.js';
import { loadConfig } from '../../src/config.js';
import { silentLogger } from '../../src/log.js';

export type TestChipmunk = {
  chipmunk: Chipmunk;
  url: string;
  /** The internal port serving /internal/auth (nginx's auth_request). */
  internalPort: number;
  apiKey: string;
  secret: string;
  dataDir: string;
  /** Calls the /v1 API with the API key. */
  api(pathname: string, init?: RequestInit & { json?: unknown }): Promise<Response>;
  uploadToken(userId: string, purpose: string, expiresIn?: number): Promise<string>;
  close(): Promise<void>;
};

export const corpus = (...parts: string[]) => path.resolve(import.meta.dirname, '../../../shared/corpus', ...parts);

/** A real Chipmunk listening on a free loopback port, in its own temporary data directory. */
export async function startChipmunk(env: Record<string, string> = {}): Promise<TestChipmunk> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'chipmunk-test-'));
  const config = loadConfig({ PORT: '0', HOST: '127.0.0.1', CHIPMUNK_DATA_DIR: dataDir, CHIPMUNK_LOG_LEVEL: 'silent', CHIPMUNK_INTERNAL_PORT: '0', ...env });
  const chipmunk = createChipmunk(config, { logger: silentLogger });
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
  };
}
