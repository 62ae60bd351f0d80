import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';
import { loadPurposes } from '../src/purposes.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'chipmunk-config-'));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

describe('configuration', () => {
  it('generates secrets on first start, keeps them, and reports that only once', async () => {
    const first = loadConfig({ CHIPMUNK_DATA_DIR: dir });
    expect(first.generatedSecrets).toBe(true);
    expect(first.secret.length).toBeGreaterThanOrEqual(32);
    expect(first.apiKey).toMatch(/^ck_/);
    const second = loadConfig({ CHIPMUNK_DATA_DIR: dir });
    expect(second.generatedSecrets).toBe(false);
    expect(second.secret).toBe(first.secret);
    expect(second.apiKey).toBe(first.apiKey);
    const stored = JSON.parse(await readFile(path.join(dir, 'secrets.json'), 'utf8'));
    expect(stored).toEqual({ secret: first.secret, apiKey: first.apiKey });
  });

  it('uses the documented defaults', () => {
    const c = loadConfig({ CHIPMUNK_DATA_DIR: dir });
    expect(c).toMatchObject({ port: 8080, host: '0.0.0.0', defaultQuotaBytes: 1024 ** 3, uploadExpiryMs: 86_400_000 });
    expect(c.databasePath).toBe(path.join(dir, 'chipmunk.db'));
  });

  it.each([
    ['PORT', 'eighty'],
    ['CHIPMUNK_DEFAULT_QUOTA', '-5'],
    ['CHIPMUNK_PUBLIC_URL', 'not a url'],
    ['CHIPMUNK_SECRET', 'short'],
    ['CHIPMUNK_API_KEY', 'short'],
  ])('stops start-up with a sentence naming %s', (name, value) => {
    expect(() => loadConfig({ CHIPMUNK_DATA_DIR: dir, [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ CHIPMUNK_DATA_DIR: dir, [name]: value })).toThrow(new RegExp(`Invalid environment variable ${name}`));
  });

  it('prefers secrets from the environment', () => {
    const c = loadConfig({ CHIPMUNK_DATA_DIR: dir, CHIPMUNK_SECRET: 's'.repeat(40), CHIPMUNK_API_KEY: 'k'.repeat(20) });
    expect(c.secret).toBe('s'.repeat(40));
    expect(c.apiKey).toBe('k'.repeat(20));
  });
});

describe('purposes', () => {
  it('has the three built-ins', () => {
    const p = loadPurposes();
    expect(p.get('avatar')).toMatchObject({ kinds: ['image'], maxBytes: 20_000_000, square: true, visibility: 'public' });
    expect(p.get('image')).toMatchObject({ kinds: ['image'], maxBytes: 50_000_000, square: false });
    expect(p.get('audio')).toMatchObject({ kinds: ['audio'], maxBytes: 500_000_000 });
    expect(() => p.get('nope')).toThrow(/Unknown purpose/);
  });

  it('merges an operator file over the built-ins and refuses a bad one', async () => {
    const file = path.join(dir, 'purposes.json');
    await writeFile(
      file,
      JSON.stringify({ banner: { kinds: ['image'], maxBytes: 1000, square: false }, avatar: { kinds: ['image'], maxBytes: 5, square: true } }),
    );
    const p = loadPurposes(file);
    expect(p.get('banner')).toMatchObject({ maxBytes: 1000, visibility: 'private' });
    expect(p.get('avatar').maxBytes).toBe(5);
    await writeFile(file, JSON.stringify({ broken: { kinds: ['video'], maxBytes: 1 } }));
    expect(() => loadPurposes(file)).toThrow(/Purpose "broken" is invalid/);
  });

  it('makes WebP ladders unless a purpose opts in to AVIF beside them', async () => {
    expect(
      loadPurposes()
        .all()
        .map((x) => x.formats),
    ).toEqual([['webp'], ['webp'], ['webp']]);
    const file = path.join(dir, 'formats.json');
    await writeFile(file, JSON.stringify({ gallery: { kinds: ['image'], maxBytes: 1000, formats: ['webp', 'avif'] } }));
    expect(loadPurposes(file).get('gallery').formats).toEqual(['webp', 'avif']);
    for (const formats of [['avif'], [], ['jpeg']]) {
      await writeFile(file, JSON.stringify({ gallery: { kinds: ['image'], maxBytes: 1000, formats } }));
      expect(() => loadPurposes(file), JSON.stringify(formats)).toThrow(/Purpose "gallery" is invalid/);
    }
  });
});
