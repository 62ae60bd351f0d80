import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import pg from 'pg';
import type { S3Settings } from '../../src/config.js';
import { createS3Client } from '../../src/storage/s3.js';

/**
 * The real PostgreSQL and S3 endpoint of `scripts/services.sh` (CI starts them before `npm test`).
 * Variables already in the environment win over the script's env file. When neither names them
 * the test fails with the command to run: distributed-mode tests never skip themselves.
 */
export type TestServices = { databaseUrl: string; s3: S3Settings };

const envFile = process.env.CHIPMUNK_SERVICES_DIR ? `${process.env.CHIPMUNK_SERVICES_DIR}/env` : fileURLToPath(new URL('../../.services/env', import.meta.url));

export function testServices(): TestServices {
  const fromFile: Record<string, string> = {};
  if (existsSync(envFile)) {
    for (const line of readFileSync(envFile, 'utf8').split('\n')) {
      const m = /^export ([A-Z0-9_]+)='(.*)'$/.exec(line);
      if (m) fromFile[m[1]!] = m[2]!;
    }
  }
  const get = (name: string) => {
    const value = process.env[name] ?? fromFile[name];
    if (!value) {
      throw new Error(`${name} is not set and ${envFile} does not name it: start the test services with \`scripts/services.sh start\` (CI's .ci/run does).`);
    }
    return value;
  };
  return {
    databaseUrl: get('CHIPMUNK_TEST_DATABASE_URL'),
    s3: {
      endpoint: get('CHIPMUNK_TEST_S3_ENDPOINT'),
      region: get('CHIPMUNK_TEST_S3_REGION'),
      bucket: get('CHIPMUNK_TEST_S3_BUCKET'),
      accessKeyId: get('CHIPMUNK_TEST_S3_ACCESS_KEY_ID'),
      secretAccessKey: get('CHIPMUNK_TEST_S3_SECRET_ACCESS_KEY'),
      forcePathStyle: get('CHIPMUNK_TEST_S3_FORCE_PATH_STYLE') === 'true',
      checksums: get('CHIPMUNK_TEST_S3_CHECKSUMS') === 'when_required' ? 'when_required' : 'when_supported',
    },
  };
}

/**
 * A fresh database of its own for one test file (or one test); `drop()` removes it. Empty, or a copy
 * of `template` (see createTemplateDatabase): a copy costs tens of milliseconds, a migration more.
 */
export async function createTestDatabase(
  services: TestServices,
  label: string,
  opts: { template?: string } = {},
): Promise<{ url: string; drop(): Promise<void> }> {
  const name = databaseName(label);
  await adminQuery(services, `CREATE DATABASE ${name} TEMPLATE ${opts.template ?? 'template0'}`);
  return { url: databaseUrl(services, name), drop: () => adminQuery(services, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

/**
 * A database made ready once by `prepare` (e.g. migrated) and then only copied from. Its name goes
 * to createTestDatabase's `template`; `drop()` removes it.
 */
export async function createTemplateDatabase(
  services: TestServices,
  label: string,
  prepare: (url: string) => Promise<void>,
): Promise<{ name: string; drop(): Promise<void> }> {
  const template = await createTestDatabase(services, `${label}_template`);
  const name = new URL(template.url).pathname.slice(1);
  await prepare(template.url);
  // A database is copied only when nobody is connected to it: make sure `prepare`'s sessions are gone.
  await adminQuery(services, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${name}' AND pid <> pg_backend_pid()`);
  return { name, drop: template.drop };
}

const databaseName = (label: string) => `t_${label.replace(/[^a-z0-9]/gi, '_').toLowerCase()}_${randomBytes(4).toString('hex')}`;

function databaseUrl(services: TestServices, name: string): string {
  const url = new URL(services.databaseUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

async function adminQuery(services: TestServices, text: string): Promise<void> {
  const admin = new pg.Client({ connectionString: services.databaseUrl });
  await admin.connect();
  try {
    // A session that just ended can linger for a moment; copying a database it used fails until it is gone.
    for (let attempt = 1; ; attempt++) {
      try {
        await admin.query(text);
        return;
      } catch (err) {
        if ((err as { code?: string }).code !== '55006' || attempt >= 50) throw err;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  } finally {
    await admin.end();
  }
}

/** A key prefix no other test file shares, inside the shared test bucket. */
export const testPrefix = (label: string) => `t-${label}-${randomBytes(4).toString('hex')}/`;

/**
 * A fresh, empty bucket of its own for one test file (the S3 user of services.sh may create
 * buckets); `drop()` empties and removes it. Its settings are the shared bucket's otherwise.
 */
/** The server's environment for a bucket (the CHIPMUNK_S3_* variables). */
export const s3Environment = (s3: S3Settings): Record<string, string> => ({
  CHIPMUNK_S3_BUCKET: s3.bucket,
  CHIPMUNK_S3_ENDPOINT: s3.endpoint!,
  CHIPMUNK_S3_REGION: s3.region,
  CHIPMUNK_S3_ACCESS_KEY_ID: s3.accessKeyId!,
  CHIPMUNK_S3_SECRET_ACCESS_KEY: s3.secretAccessKey!,
  CHIPMUNK_S3_FORCE_PATH_STYLE: String(s3.forcePathStyle),
  CHIPMUNK_S3_CHECKSUMS: s3.checksums,
});

export async function createTestBucket(services: TestServices, label: string): Promise<{ s3: S3Settings; drop(): Promise<void> }> {
  const bucket = `t-${label.replace(/[^a-z0-9]/gi, '-').toLowerCase()}-${randomBytes(4).toString('hex')}`.slice(0, 63);
  const s3 = { ...services.s3, bucket };
  const client = createS3Client(s3);
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  return {
    s3,
    async drop() {
      try {
        for (;;) {
          const page = await client.send(new ListObjectsV2Command({ Bucket: bucket }));
          const keys = (page.Contents ?? []).map((o) => ({ Key: o.Key! }));
          if (keys.length === 0) break;
          await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
        }
        await client.send(new DeleteBucketCommand({ Bucket: bucket }));
      } finally {
        client.destroy();
      }
    },
  };
}

/**
 * The distributed mode's environment for one test file: a database and a bucket of its own, and the
 * secrets every node must share. `drop()` removes both.
 */
export async function createDistributedEnvironment(label: string): Promise<{ env: Record<string, string>; drop(): Promise<void> }> {
  const services = testServices();
  const db = await createTestDatabase(services, label);
  const bucket = await createTestBucket(services, label);
  return {
    env: {
      CHIPMUNK_DATABASE_URL: db.url,
      ...s3Environment(bucket.s3),
      CHIPMUNK_SECRET: randomBytes(32).toString('hex'),
      CHIPMUNK_API_KEY: `ck_${randomBytes(24).toString('hex')}`,
    },
    async drop() {
      await db.drop();
      await bucket.drop();
    },
  };
}
