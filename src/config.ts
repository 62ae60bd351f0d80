import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { parseCorsOrigins, type CorsOrigins } from './delivery/cors.js';

// The environment is parsed once, at start-up, into a frozen Config.
// A bad variable stops start-up with a sentence that names it.

const bytes = z.coerce.number().int().positive();
const seconds = z.coerce.number().positive();

/** The server-wide limits on the work one file may cost (purposes may set their own). Here, not in purposes.ts, which imports this module. */
export const defaultMediaLimits = Object.freeze({ maxFrames: 100, maxAnimationPixels: 25_000_000, maxDurationSeconds: 2 * 3600 });

const envSchema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  // Unset: 0.0.0.0, or 127.0.0.1 when the demo is on (the demo never listens beyond this machine).
  HOST: z.string().min(1).optional(),
  CHIPMUNK_DATA_DIR: z.string().min(1).default('./data'),
  CHIPMUNK_PUBLIC_URL: z.url().optional(),
  CHIPMUNK_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  CHIPMUNK_API_KEY: z.string().min(16, 'must be at least 16 characters').optional(),
  CHIPMUNK_DEFAULT_QUOTA: bytes.default(1024 ** 3),
  CHIPMUNK_PURPOSES_FILE: z.string().min(1).optional(),
  CHIPMUNK_UPLOAD_EXPIRY: seconds.default(24 * 3600),
  CHIPMUNK_EXPIRY_INTERVAL: seconds.default(15 * 60),
  // Several nodes: how often a node looks for running jobs whose node died (their leases are gone).
  CHIPMUNK_ORPHAN_SWEEP_INTERVAL: seconds.default(5),
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
  // The longest an upload token may live, however it was signed (minting longer is refused too).
  CHIPMUNK_UPLOAD_TOKEN_MAX_AGE: z.coerce
    .number()
    .int()
    .min(60)
    .max(30 * 24 * 3600)
    .default(7 * 24 * 3600),
  CHIPMUNK_AUTH_CACHE: z.coerce.number().int().min(0).max(3600).default(5),
  // Origins whose pages may read /f/ answers and talk tus to /uploads: `*` or a comma-separated list.
  CHIPMUNK_CORS_ORIGINS: z
    .string()
    .default('*')
    .transform((value, ctx) => {
      try {
        return parseCorsOrigins(value);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
        return z.NEVER;
      }
    }),
  CHIPMUNK_LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
  CHIPMUNK_DISK_MARGIN: z.coerce.number().int().min(0).default(100_000_000),
  CHIPMUNK_SHUTDOWN_TIMEOUT: seconds.default(15),
  CHIPMUNK_COMPLETION_WAIT: z.coerce.number().min(0).max(3600).default(30),
  CHIPMUNK_UPLOAD_IDLE_EXPIRY: seconds.default(3600),
  CHIPMUNK_MAX_UNFINISHED_UPLOADS: z.coerce.number().int().min(1).default(20),
  CHIPMUNK_MAX_UNFINISHED_BYTES: bytes.default(10 * 1024 ** 3),
  CHIPMUNK_JOBS_PER_USER: z.coerce.number().int().min(1).optional(),
  CHIPMUNK_WEBHOOK_URL: z.url().optional(),
  CHIPMUNK_WEBHOOK_SECRET: z.string().min(16, 'must be at least 16 characters').optional(),
  CHIPMUNK_WEBHOOK_BACKOFF: seconds.default(5),
  // The demo page at / and its /demo/api routes: off unless asked for (`npm run demo`), loopback only.
  CHIPMUNK_DEMO: z.enum(['on', 'off'], { error: 'must be "on" or "off"' }).optional(),
  NODE_ENV: z.string().optional(),
  // The group (name or gid) given read access to the media folder: nginx's worker group.
  CHIPMUNK_MEDIA_GROUP: z
    .string()
    .regex(/^[a-z_][a-z0-9_-]*\$?$|^\d+$/i, 'must be a group name or a numeric gid')
    .optional(),
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
  /** The process's temporary folder (TMPDIR of the server process), emptied by start-up recovery. */
  tmpDir: string;
  publicUrl: string | undefined;
  secret: string;
  apiKey: string;
  defaultQuotaBytes: number;
  purposesFile: string | undefined;
  uploadExpiryMs: number;
  expiryIntervalMs: number;
  orphanSweepMs: number;
  maxPixels: number;
  /** Defaults of the purposes' limits on the work of one file (a purpose may set its own). */
  maxFrames: number;
  maxAnimationPixels: number;
  maxDurationSeconds: number;
  /** Memory (address space) each media child may use for its work, and its wall-clock limit. */
  mediaMemoryBytes: number;
  mediaTimeoutMs: number;
  concurrency: number;
  /** How long the request that carried an upload's last byte waits for its processing job. */
  completionWaitMs: number;
  /** An upload that received no byte expires this long after its creation. */
  uploadIdleExpiryMs: number;
  /** What one user may hold in unfinished uploads at once. */
  maxUnfinishedUploads: number;
  maxUnfinishedBytes: number;
  /** Media jobs one user may have running at once (fairness between users). */
  jobsPerUser: number;
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
  /** The longest lifetime (seconds) an upload token may have to be accepted. */
  uploadTokenMaxSeconds: number;
  /** Seconds nginx may cache an auth answer (never past a signed link's expiry). */
  authCacheSeconds: number;
  /** Origins allowed to read delivery answers and to upload from a page (CORS). */
  corsOrigins: CorsOrigins;
  /** The gid the media folder is shared with (CHIPMUNK_MEDIA_GROUP); undefined: the process's own group. */
  mediaGroupId: number | undefined;
  /** True when this start generated secrets the operator has not seen yet. */
  generatedSecrets: boolean;
  /** CHIPMUNK_S3_*: the media blobs in this bucket; undefined keeps them in the local media folder. */
  s3: S3Settings | undefined;
  /** CHIPMUNK_DATABASE_URL: metadata on this PostgreSQL; undefined keeps it in the data directory's SQLite file. */
  databaseUrl: string | undefined;
}>;

import { ConfigError } from './errors.js';

export { ConfigError };

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
    // This process's temporary files (the server points TMPDIR here): emptied at each start, since a
    // killed process cannot remove its own.
    tmpDir: path.join(dataDir, 'tmp'),
  };
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const e = parseEnvironment(env);
  const paths = dataPaths(e.CHIPMUNK_DATA_DIR);
  const dataDir = paths.dataDir;
  mkdirSync(dataDir, { recursive: true });
  const demo = e.CHIPMUNK_DEMO === 'on';
  if (demo && e.HOST !== undefined && !isLoopbackHost(e.HOST)) {
    throw new ConfigError(
      `Invalid environment variable HOST: the demo (CHIPMUNK_DEMO=on) mints upload tokens without a key, so it only listens on this machine; ` +
        `unset HOST or set it to 127.0.0.1, or turn the demo off for "${e.HOST}".`,
    );
  }
  const distributed = parseDistributedSettings(env);
  // Every node signs and checks the same links and keys: secrets generated per data directory would differ.
  if (distributed.databaseUrl && (!e.CHIPMUNK_SECRET || !e.CHIPMUNK_API_KEY)) {
    throw new ConfigError(
      'With CHIPMUNK_DATABASE_URL (several nodes), set CHIPMUNK_SECRET and CHIPMUNK_API_KEY explicitly, the same on every node: secrets generated in one data directory would not be known to the others.',
    );
  }
  const stored = loadOrCreateSecrets(dataDir);
  return Object.freeze({
    port: e.PORT,
    host: e.HOST ?? (demo ? '127.0.0.1' : '0.0.0.0'),
    ...paths,
    publicUrl: e.CHIPMUNK_PUBLIC_URL?.replace(/\/+$/, ''),
    secret: e.CHIPMUNK_SECRET ?? stored.secrets.secret,
    apiKey: e.CHIPMUNK_API_KEY ?? stored.secrets.apiKey,
    defaultQuotaBytes: e.CHIPMUNK_DEFAULT_QUOTA,
    purposesFile: e.CHIPMUNK_PURPOSES_FILE ? path.resolve(e.CHIPMUNK_PURPOSES_FILE) : undefined,
    uploadExpiryMs: e.CHIPMUNK_UPLOAD_EXPIRY * 1000,
    expiryIntervalMs: e.CHIPMUNK_EXPIRY_INTERVAL * 1000,
    orphanSweepMs: e.CHIPMUNK_ORPHAN_SWEEP_INTERVAL * 1000,
    maxPixels: e.CHIPMUNK_MAX_PIXELS,
    maxFrames: e.CHIPMUNK_MAX_FRAMES,
    maxAnimationPixels: e.CHIPMUNK_MAX_ANIMATION_PIXELS,
    maxDurationSeconds: e.CHIPMUNK_MAX_DURATION,
    mediaMemoryBytes: e.CHIPMUNK_MEDIA_MEMORY,
    mediaTimeoutMs: e.CHIPMUNK_MEDIA_TIMEOUT * 1000,
    concurrency: e.CHIPMUNK_CONCURRENCY,
    completionWaitMs: e.CHIPMUNK_COMPLETION_WAIT * 1000,
    uploadIdleExpiryMs: e.CHIPMUNK_UPLOAD_IDLE_EXPIRY * 1000,
    maxUnfinishedUploads: e.CHIPMUNK_MAX_UNFINISHED_UPLOADS,
    maxUnfinishedBytes: e.CHIPMUNK_MAX_UNFINISHED_BYTES,
    jobsPerUser: e.CHIPMUNK_JOBS_PER_USER ?? Math.max(1, Math.floor(e.CHIPMUNK_CONCURRENCY / 2)),
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
    corsOrigins: e.CHIPMUNK_CORS_ORIGINS,
    uploadTokenMaxSeconds: e.CHIPMUNK_UPLOAD_TOKEN_MAX_AGE,
    demo,
    mediaGroupId: e.CHIPMUNK_MEDIA_GROUP === undefined ? undefined : groupId(e.CHIPMUNK_MEDIA_GROUP),
    generatedSecrets: stored.generated && (!e.CHIPMUNK_SECRET || !e.CHIPMUNK_API_KEY),
    s3: distributed.s3,
    databaseUrl: distributed.databaseUrl,
  });
}

/** Addresses and names that only this machine reaches. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** A group name (from /etc/group) or a numeric gid. */
export function groupId(group: string): number {
  if (/^\d+$/.test(group)) return Number(group);
  let table = '';
  try {
    table = readFileSync('/etc/group', 'utf8');
  } catch {
    // no /etc/group: only numeric gids work
  }
  const line = table.split('\n').find((l) => l.split(':')[0] === group);
  const gid = line ? Number(line.split(':')[2]) : NaN;
  if (!Number.isInteger(gid))
    throw new ConfigError(`Invalid environment variable CHIPMUNK_MEDIA_GROUP: no group named "${group}" on this machine (give its numeric gid instead).`);
  return gid;
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

// ---- Distributed mode (in progress): PostgreSQL and S3-compatible storage. ----
// Parsed and checked here so the settings have one spelling; the S3 settings are in Config (the
// media blobs), the database URL is not used by the server yet.

const booleanSetting = z.enum(['true', 'false', '1', '0'], { error: 'must be "true" or "false"' }).transform((v) => v === 'true' || v === '1');

const distributedSchema = z.object({
  CHIPMUNK_DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
    .optional(),
  CHIPMUNK_S3_BUCKET: z.string().min(3).max(63).optional(),
  CHIPMUNK_S3_ENDPOINT: z.url().optional(),
  CHIPMUNK_S3_REGION: z.string().min(1).default('us-east-1'),
  CHIPMUNK_S3_ACCESS_KEY_ID: z.string().min(1).optional(),
  CHIPMUNK_S3_SECRET_ACCESS_KEY: z.string().min(1).optional(),
  CHIPMUNK_S3_FORCE_PATH_STYLE: booleanSetting.optional(),
  // `when_supported` is the AWS SDK's default; `when_required` for servers that refuse its
  // streamed trailing checksums (Ceph RGW 16 and other S3-compatible servers).
  CHIPMUNK_S3_CHECKSUMS: z.enum(['when_supported', 'when_required'], { error: 'must be "when_supported" or "when_required"' }).default('when_supported'),
});

export type S3Settings = Readonly<{
  bucket: string;
  endpoint: string | undefined;
  region: string;
  /** Unset: the SDK's usual chain (environment, instance role, …). */
  accessKeyId: string | undefined;
  secretAccessKey: string | undefined;
  forcePathStyle: boolean;
  checksums: 'when_supported' | 'when_required';
}>;

export type DistributedSettings = Readonly<{ databaseUrl: string | undefined; s3: S3Settings | undefined }>;

/** CHIPMUNK_DATABASE_URL and CHIPMUNK_S3_*: undefined parts mean the embedded default (SQLite, local folder). */
export function parseDistributedSettings(env: NodeJS.ProcessEnv = process.env): DistributedSettings {
  const parsed = distributedSchema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(`Invalid environment variable ${String(issue.path[0])}: ${issue.message}`);
  }
  const e = parsed.data;
  if (!e.CHIPMUNK_S3_ACCESS_KEY_ID !== !e.CHIPMUNK_S3_SECRET_ACCESS_KEY) {
    const missing = e.CHIPMUNK_S3_ACCESS_KEY_ID ? 'CHIPMUNK_S3_SECRET_ACCESS_KEY' : 'CHIPMUNK_S3_ACCESS_KEY_ID';
    throw new ConfigError(`Invalid environment variable ${missing}: set both S3 keys or neither.`);
  }
  const s3 = e.CHIPMUNK_S3_BUCKET
    ? {
        bucket: e.CHIPMUNK_S3_BUCKET,
        endpoint: e.CHIPMUNK_S3_ENDPOINT,
        region: e.CHIPMUNK_S3_REGION,
        accessKeyId: e.CHIPMUNK_S3_ACCESS_KEY_ID,
        secretAccessKey: e.CHIPMUNK_S3_SECRET_ACCESS_KEY,
        // A custom endpoint (RGW, MinIO) usually has no per-bucket host names.
        forcePathStyle: e.CHIPMUNK_S3_FORCE_PATH_STYLE ?? e.CHIPMUNK_S3_ENDPOINT !== undefined,
        checksums: e.CHIPMUNK_S3_CHECKSUMS,
      }
    : undefined;
  return Object.freeze({ databaseUrl: e.CHIPMUNK_DATABASE_URL, s3: s3 && Object.freeze(s3) });
}
