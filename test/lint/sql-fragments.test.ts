import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

// drizzle's and() joins its parts with ' and ' without bracketing each one, so a raw sql`a OR b` passed to
// it becomes `x and a OR b`: a guard that matches rows it was never meant to (a track's renditions once
// charged every user with room in their quota). Every sql`` fragment in src/ with an OR at its top level
// must bracket it (or use or(), which does).

const root = path.resolve(import.meta.dirname, '../..');

/** The sql`` fragments of a source text whose top level (outside brackets and ${}) holds an OR. */
function bareOrFragments(source: string): string[] {
  const found: string[] = [];
  for (let at = source.indexOf('sql`'); at !== -1; at = source.indexOf('sql`', at + 4)) {
    let text = '';
    let i = at + 4;
    // The template up to its closing backtick, each ${…} (nested braces included) read as one placeholder.
    for (; i < source.length && source[i] !== '`'; i++) {
      if (source[i] === '$' && source[i + 1] === '{') {
        let depth = 0;
        for (i++; i < source.length; i++) {
          if (source[i] === '{') depth++;
          else if (source[i] === '}' && --depth === 0) break;
        }
        text += '?';
      } else text += source[i];
    }
    let depth = 0;
    let top = '';
    for (const ch of text) {
      if (ch === '(') depth++;
      else if (ch === ')') depth--;
      else if (depth === 0) top += ch;
    }
    if (/\bor\b/i.test(top)) found.push(text);
  }
  return found;
}

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sources(p)));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

describe('sql fragments', () => {
  it('the check finds a bare OR and lets bracketed ones, or(), and ORs inside ${} through', () => {
    expect(bareOrFragments('and(eq(a, b), sql`${d} <= 0 OR ${u.used} + ${d} <= ${u.quota}`)')).toEqual(['? <= 0 OR ? + ? <= ?']);
    expect(bareOrFragments('sql`x` , sql`a or b`')).toEqual(['a or b']);
    expect(bareOrFragments('sql`(${d} <= 0 OR ${u.used} <= ${u.quota})`')).toEqual([]);
    expect(bareOrFragments('or(sql`${d} <= 0`, sql`${u.used} + ${d} <= ${u.quota}`)')).toEqual([]);
    expect(bareOrFragments('sql`${x ? `a OR b` : { c: 1 }} <= ${orders.total}`')).toEqual([]);
    expect(bareOrFragments('sql`coalesce(sum(case when ${a} <> 0 then ${b} else 0 end), 0)`')).toEqual([]);
  });

  it('no sql`` fragment in src/ has a bare OR at its top level', async () => {
    const offenders: string[] = [];
    for (const file of await sources(path.join(root, 'src'))) {
      for (const fragment of bareOrFragments(await readFile(file, 'utf8'))) offenders.push(`${path.relative(root, file)}: sql\`${fragment}\``);
    }
    expect(offenders).toEqual([]);
  });
});
