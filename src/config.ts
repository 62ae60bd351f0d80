import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { defaultMediaLimits } from './purposes.js';

// The environment is parsed once, at start-up, into a frozen Config.
// A bad variable stops start-up with a sentence that names it.

const bytes = z.coerce.number().int().positive();
const seconds = z.coerce.number().positive();

const envSchema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HOST: z.string().min(1).default('0.0.0.0'),
  CHIPMUNK_DATA_DIR: z.string().min(1).default('./data'),
  CHIPMUNK_PUBLIC_URL: z.url().optional(),
  CHIPMUNK_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  CHIPMUNK_API_KEY: z.string().min(16, 'must be at least 16 characters').optional(),
  CHIPMUNK_DEFAULT_QUOTA: bytes.default(1024 ** 3),
  CHIPMUNK_PURPOSES_FILE: z.string().min(1).optional(),
  CHIPMUNK_UPLOAD_EXPIRY: seconds.default(24 * 3600),
  CHIPMUNK_EXPIRY_INTERVAL: seconds.default(15 * 60),
  CHIPMUNK_MAX_PIXELS: bytes.default(50_000_000),
  CHIPMUNK_MAX_FRAMES: bytes.default(defaultMediaLimits.maxFrames),
  CHIPMUNK_MAX_ANIMATION_PIXELS: bytes.default(defaultMediaLimits.maxAnimationPixels),
  CHIPMUNK_MAX_DURATION: seconds.default(defaultMediaLimits.maxDurationSeconds),
  CHIPMUNK_MEDIA_MEMORY: bytes.default(1_000_000_000),
  CHIPMUNK_MEDIA_TIMEOUT: seconds.default(60),
  CHIPMUNK_CONCURRENCY: bytes.default(Math.max(1, cpus().length)),
  // Unset: 8081, or a free port when PORT=0 (tests and parallel instances never collide).
  CHIPMUNK_INTERNAL_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  CHIPMUNK_INTERNAL_HOST: z.string().min(1).default('127.0.0.1'),
  CHIPMUNK_AUTH_CACHE: z.coerce.number().int().min(0).max(3600).default(5),
  CHIPMUNK_LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
  CHIPMUNK_DISK_MARGIN: z.coerce.number().int().min(0).default(100_000_000),
  CHIPMUNK_SHUTDOWN_TIMEOUT: seconds.default(15),
  CHIPMUNK_WEBHOOK_URL: z.url().optional(),
  CHIPMUNK_WEBHOOK_SECRET: z.string().min(16, 'must be at least 16 characters').optional(),
  CHIPMUNK_WEBHOOK_BACKOFF: seconds.default(5),
  // The demo page at / and its /demo/api routes; unset means on, except when NODE_ENV=production.
  CHIPMUNK_DEMO: z.enum(['on', 'off'], { error: 'must be "on" or "off"' }).optional(),
  NODE_ENV: z.string().optional(),
  FFMPEG_PATH: z.string().min(1).optional(),
});

export type Secrets = { secret: string; apiKey: string };

export type Config = Readonly<{
  port: number;
  host: string;
  dataDir: string;
  databasePath: string;
  uploadDir: string;
  mediaDir: string;
  publicUrl: string | undefined;
  secret: string;
  apiKey: string;
  defaultQuotaBytes: number;
  purposesFile: string | undefined;
  uploadExpiryMs: number;
  expiryIntervalMs: number;
  maxPixels: number;
  /** Defaults of the purposes' limits on the work of one file (a purpose may set its own). */
  maxFrames: number;
  maxAnimationPixels: number;
  maxDurationSeconds: number;
  /** Memory (address space) each media child may use for its work, and its wall-clock limit. */
  mediaMemoryBytes: number;
  mediaTimeoutMs: number;
  concurrency: number;
  logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent';
  /** Free disk space kept back: a creation that would eat into it is refused with 507. */
  diskMarginBytes: number;
  /** How long a SIGTERM waits for requests and jobs in flight before cutting them. */
  shutdownTimeoutMs: number;
  webhook: { url: string; secret: string; backoffMs: number } | undefined;
  /** FFMPEG_PATH: an ffmpeg binary, or 'off'; unset means PATH, then the npm-packaged one. */
  ffmpegPath: string | undefined;
  /** The demo page and its token-minting routes (a developer's machine only). */
  demo: boolean;
  /** The internal port serving only /internal/auth to nginx; never expose it. */
  internalPort: number;
  internalHost: string;
  /** Seconds nginx may cache an auth answer (never past a signed link's expiry). */
  authCacheSeconds: number;
  /** True when this start generated secrets the operator has not seen yet. */
  generatedSecrets: boolean;
}>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export type Environment = z.infer<typeof envSchema>;

/** The environment parsed and checked, without touching the disk (operator commands such as nginx-config). */
export function parseEnvironment(env: NodeJS.ProcessEnv = process.env): Environment {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(`Invalid environment variable ${String(issue.path[0])}: ${issue.message}`);
  }
  return parsed.data;
}

/** The port of /internal/auth (nginx's access check). */
export function internalPort(e: Environment): number {
  return e.CHIPMUNK_INTERNAL_PORT ?? (e.PORT === 0 ? 0 : 8081);
}

/** Where everything lives inside the data directory. */
export function dataPaths(dataDirSetting: string) {
  const dataDir = path.resolve(dataDirSetting);
  return {
    dataDir,
    databasePath: path.join(dataDir, 'chipmunk.db'),
    uploadDir: path.join(dataDir, 'uploads'),
    mediaDir: path.join(dataDir, 'media'),
  };
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const e = parseEnvironment(env);
  const paths = dataPaths(e.CHIPMUNK_DATA_DIR);
  const dataDir = paths.dataDir;
  mkdirSync(dataDir, { recursive: true });
  const stored = loadOrCreateSecrets(dataDir);
  return Object.freeze({
    port: e.PORT,
    host: e.HOST,
    ...paths,
    publicUrl: e.CHIPMUNK_PUBLIC_URL?.replace(/\/+$/, ''),
    secret: e.CHIPMUNK_SECRET ?? stored.secrets.secret,
    apiKey: e.CHIPMUNK_API_KEY ?? stored.secrets.apiKey,
    defaultQuotaBytes: e.CHIPMUNK_DEFAULT_QUOTA,
    purposesFile: e.CHIPMUNK_PURPOSES_FILE ? path.resolve(e.CHIPMUNK_PURPOSES_FILE) : undefined,
    uploadExpiryMs: e.CHIPMUNK_UPLOAD_EXPIRY * 1000,
    expiryIntervalMs: e.CHIPMUNK_EXPIRY_INTERVAL * 1000,
    maxPixels: e.CHIPMUNK_MAX_PIXELS,
    maxFrames: e.CHIPMUNK_MAX_FRAMES,
    maxAnimationPixels: e.CHIPMUNK_MAX_ANIMATION_PIXELS,
    maxDurationSeconds: e.CHIPMUNK_MAX_DURATION,
    mediaMemoryBytes: e.CHIPMUNK_MEDIA_MEMORY,
    mediaTimeoutMs: e.CHIPMUNK_MEDIA_TIMEOUT * 1000,
    concurrency: e.CHIPMUNK_CONCURRENCY,
    logLevel: e.CHIPMUNK_LOG_LEVEL,
    diskMarginBytes: e.CHIPMUNK_DISK_MARGIN,
    shutdownTimeoutMs: e.CHIPMUNK_SHUTDOWN_TIMEOUT * 1000,
    webhook: e.CHIPMUNK_WEBHOOK_URL
      ? {
          url: e.CHIPMUNK_WEBHOOK_URL,
          secret: e.CHIPMUNK_WEBHOOK_SECRET ?? e.CHIPMUNK_SECRET ?? stored.secrets.secret,
          backoffMs: e.CHIPMUNK_WEBHOOK_BACKOFF * 1000,
        }
      : undefined,
    ffmpegPath: e.FFMPEG_PATH,
    internalPort: internalPort(e),
    internalHost: e.CHIPMUNK_INTERNAL_HOST,
    authCacheSeconds: e.CHIPMUNK_AUTH_CACHE,
    demo: (e.CHIPMUNK_DEMO ?? (e.NODE_ENV === 'production' ? 'off' : 'on')) === 'on',
    generatedSecrets: stored.generated && (!e.CHIPMUNK_SECRET || !e.CHIPMUNK_API_KEY),
  });
}

const secretsSchema = z.object({ secret: z.string().min(32), apiKey: z.string().min(16) });

// Secrets live in the data directory so the embedded default needs no other service.
function loadOrCreateSecrets(dataDir: string): { secrets: Secrets; generated: boolean } {
  const file = path.join(dataDir, 'secrets.json');
  if (existsSync(file)) {
    const parsed = secretsSchema.safeParse(JSON.parse(readFileSync(file, 'utf8')));
    if (!parsed.success) throw new ConfigError(`${file} is not a valid secrets file; fix or delete it.`);
    return { secrets: parsed.data, generated: false };
  }
  const secrets: Secrets = {
    secret: randomBytes(32).toString('base64url'),
    apiKey: `ck_${randomBytes(24).toString('base64url')}`,
  };
  // 'wx' so two processes starting at once cannot overwrite each other's secrets.
  try {
    writeFileSync(file, `${JSON.stringify(secrets, null, 2)}\n`, { flag: 'wx', mode: 0o600 });
    chmodSync(file, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return loadOrCreateSecrets(dataDir);
    throw err;
  }
  return { secrets, generated: true };
}
