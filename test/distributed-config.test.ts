import { describe, expect, it } from 'vitest';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig, parseDistributedSettings } from '../src/config.js';

describe('distributed-mode settings (CHIPMUNK_DATABASE_URL, CHIPMUNK_S3_*)', () => {
  it('are off by default: SQLite and the local folder', () => {
    expect(parseDistributedSettings({})).toEqual({ databaseUrl: undefined, s3: undefined });
  });

  it('describe an S3-compatible bucket, path-style by default when an endpoint is given', () => {
    const s = parseDistributedSettings({
      CHIPMUNK_DATABASE_URL: 'postgres://chipmunk@db:5432/chipmunk',
      CHIPMUNK_S3_BUCKET: 'media',
      CHIPMUNK_S3_ENDPOINT: 'http://rgw:7480',
      CHIPMUNK_S3_ACCESS_KEY_ID: 'AK',
      CHIPMUNK_S3_SECRET_ACCESS_KEY: 'SK',
      CHIPMUNK_S3_CHECKSUMS: 'when_required',
    });
    expect(s).toEqual({
      databaseUrl: 'postgres://chipmunk@db:5432/chipmunk',
      s3: {
        bucket: 'media',
        endpoint: 'http://rgw:7480',
        region: 'us-east-1',
        accessKeyId: 'AK',
        secretAccessKey: 'SK',
        forcePathStyle: true,
        checksums: 'when_required',
      },
    });
    expect(Object.isFrozen(s.s3)).toBe(true);
  });

  it('keep AWS defaults without an endpoint: virtual-host style, the SDK checksums, its credential chain', () => {
    expect(parseDistributedSettings({ CHIPMUNK_S3_BUCKET: 'media', CHIPMUNK_S3_REGION: 'eu-west-3' }).s3).toEqual({
      bucket: 'media',
      endpoint: undefined,
      region: 'eu-west-3',
      accessKeyId: undefined,
      secretAccessKey: undefined,
      forcePathStyle: false,
      checksums: 'when_supported',
    });
    expect(
      parseDistributedSettings({ CHIPMUNK_S3_BUCKET: 'media', CHIPMUNK_S3_ENDPOINT: 'http://x', CHIPMUNK_S3_FORCE_PATH_STYLE: 'false' }).s3?.forcePathStyle,
    ).toBe(false);
  });

  it.each([
    ['CHIPMUNK_DATABASE_URL', { CHIPMUNK_DATABASE_URL: 'mysql://x' }],
    ['CHIPMUNK_S3_ENDPOINT', { CHIPMUNK_S3_BUCKET: 'media', CHIPMUNK_S3_ENDPOINT: 'not a url' }],
    ['CHIPMUNK_S3_CHECKSUMS', { CHIPMUNK_S3_BUCKET: 'media', CHIPMUNK_S3_CHECKSUMS: 'never' }],
    ['CHIPMUNK_S3_FORCE_PATH_STYLE', { CHIPMUNK_S3_BUCKET: 'media', CHIPMUNK_S3_FORCE_PATH_STYLE: 'yes' }],
    ['CHIPMUNK_S3_SECRET_ACCESS_KEY', { CHIPMUNK_S3_BUCKET: 'media', CHIPMUNK_S3_ACCESS_KEY_ID: 'AK' }],
    ['CHIPMUNK_S3_BUCKET', { CHIPMUNK_S3_BUCKET: 'x' }],
  ])('stop start-up with a sentence naming %s', (name, env) => {
    expect(() => parseDistributedSettings(env)).toThrow(ConfigError);
    expect(() => parseDistributedSettings(env)).toThrow(new RegExp(`Invalid environment variable ${name}`));
  });

  it('with PostgreSQL, refuse to start on secrets of their own: every node must share them', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'chipmunk-distributed-config-'));
    try {
      const base = { CHIPMUNK_DATA_DIR: dataDir, CHIPMUNK_DATABASE_URL: 'postgres://db/chipmunk' };
      expect(() => loadConfig(base)).toThrow(/set CHIPMUNK_SECRET and CHIPMUNK_API_KEY explicitly/);
      expect(() => loadConfig({ ...base, CHIPMUNK_SECRET: 'x'.repeat(40) })).toThrow(ConfigError);
      // Nothing generated on the way: no secrets file for another node to miss.
      expect(await readdir(dataDir)).toEqual([]);
      const config = loadConfig({ ...base, CHIPMUNK_SECRET: 'x'.repeat(40), CHIPMUNK_API_KEY: 'k'.repeat(32) });
      expect(config.databaseUrl).toBe('postgres://db/chipmunk');
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
