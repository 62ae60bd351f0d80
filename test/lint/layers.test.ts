import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// The layer rules of `npm run lint` (.dependency-cruiser.cjs, run on the tree by `npm test`) must fail
// on a deliberate violation: each one is written into a scratch copy of the layout, never into src/.
const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '../..');
const depcruise = path.join(root, 'node_modules/.bin/depcruise');
const config = path.join(root, '.dependency-cruiser.cjs');

async function cruise(cwd: string): Promise<{ code: number; output: string }> {
  try {
    const { stdout } = await run(depcruise, ['src', '--config', config], { cwd });
    return { code: 0, output: stdout };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, output: `${e.stdout}${e.stderr}` };
  }
}

describe('layer rules', () => {
  let scratch: string;
  beforeAll(async () => {
    scratch = await mkdtemp(path.join(tmpdir(), 'chipmunk-layers-'));
  });
  afterAll(async () => {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  const violations: Array<[rule: string, files: Record<string, string>]> = [
    ['sql-only-in-db', { 'src/services/leak.ts': "import { sql } from 'drizzle-orm';\nexport const q = sql`select 1`;\n" }],
    ['media-tools-only-in-media', { 'src/routes/leak.ts': "import sharp from 'sharp';\nexport const s = sharp;\n" }],
    [
      'routes-call-services',
      { 'src/db/repo.ts': 'export const repo = {};\n', 'src/routes/leak.ts': "import { repo } from '../db/repo.js';\nexport const r = repo;\n" },
    ],
    [
      'media-is-self-contained',
      { 'src/config.ts': 'export const limit = 1;\n', 'src/media/leak.ts': "import { limit } from '../config.js';\nexport const l = limit;\n" },
    ],
    [
      'no-cycles',
      { 'src/a.ts': "import { b } from './b.js';\nexport const a = () => b;\n", 'src/b.ts': "import { a } from './a.js';\nexport const b = () => a;\n" },
    ],
  ];

  it.each(violations)(
    'fail on a deliberate %s violation',
    async (rule, files) => {
      const dir = path.join(scratch, rule);
      await mkdir(dir, { recursive: true });
      await symlink(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
      await writeFile(path.join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext' } }));
      for (const [name, text] of Object.entries(files)) {
        await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
        await writeFile(path.join(dir, name), text);
      }
      const result = await cruise(dir);
      expect(result.code).not.toBe(0);
      expect(result.output).toContain(`error ${rule}:`);
    },
    60_000,
  );
});
