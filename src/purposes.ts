import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { errors, formatBytes } from './errors.js';

// A purpose says what an upload is for: which kinds of file it takes, how big, whether its
// variants are square, and who may see it by default. Operators add or change purposes
// with a JSON file (CHIPMUNK_PURPOSES_FILE) merged over the built-ins.

export type MediaKind = 'image' | 'audio';

const purposeSchema = z.object({
  kinds: z.array(z.enum(['image', 'audio'])).min(1),
  maxBytes: z.number().int().positive(),
  square: z.boolean().default(false),
  visibility: z.enum(['public', 'private']).default('private'),
  /** Image ladder formats: WebP always; "avif" adds AVIF twins of the rungs where it pays (delivered by Accept). */
  formats: z
    .array(z.enum(['webp', 'avif']))
    .min(1)
    .refine((f) => f.includes('webp'), 'formats must include "webp" (every browser gets it; AVIF is an addition)')
    .default(['webp']),
});

export type Purpose = z.infer<typeof purposeSchema> & { name: string };

const MB = 1_000_000;

export const builtInPurposes: Record<string, z.input<typeof purposeSchema>> = {
  avatar: { kinds: ['image'], maxBytes: 20 * MB, square: true, visibility: 'public' },
  image: { kinds: ['image'], maxBytes: 50 * MB, square: false, visibility: 'private' },
  audio: { kinds: ['audio'], maxBytes: 500 * MB, square: false, visibility: 'private' },
};

const purposeNamePattern = /^[a-z][a-z0-9_-]{0,31}$/;

export type Purposes = {
  get(name: string): Purpose;
  all(): Purpose[];
};

export function loadPurposes(file?: string): Purposes {
  let overrides: Record<string, unknown> = {};
  if (file) {
    try {
      overrides = z.record(z.string(), z.unknown()).parse(JSON.parse(readFileSync(file, 'utf8')));
    } catch (err) {
      throw new Error(`CHIPMUNK_PURPOSES_FILE ${file} is not a JSON object of purposes: ${(err as Error).message}`);
    }
  }
  const table = new Map<string, Purpose>();
  for (const [name, raw] of Object.entries({ ...builtInPurposes, ...overrides })) {
    if (!purposeNamePattern.test(name)) throw new Error(`Purpose name "${name}" must match ${purposeNamePattern}`);
    const parsed = purposeSchema.safeParse(raw);
    if (!parsed.success) throw new Error(`Purpose "${name}" is invalid: ${parsed.error.issues[0]?.message}`);
    table.set(name, Object.freeze({ name, ...parsed.data }));
  }
  return {
    get(name) {
      const purpose = table.get(name);
      if (!purpose) throw errors.unknownPurpose(name);
      return purpose;
    },
    all: () => [...table.values()],
  };
}

/**
 * The single admission decision for an upload: the purpose must take this kind of file at this
 * size. Its answer also carries the square flag, so quota and shape come out of the same check.
 */
export function admitToPurpose(purpose: Purpose, declared: { length: number; mimeType?: string | null }): { kind: MediaKind | undefined } {
  if (declared.length > purpose.maxBytes) {
    throw errors.tooLarge(`Files for "${purpose.name}" may be at most ${formatBytes(purpose.maxBytes)}; this one is ${formatBytes(declared.length)}.`);
  }
  const kind = kindOfMimeType(declared.mimeType);
  if (declared.mimeType && (!kind || !purpose.kinds.includes(kind))) {
    throw errors.unsupportedType(`"${purpose.name}" uploads take ${purpose.kinds.join(' or ')} files; "${declared.mimeType}" is not one.`);
  }
  return { kind };
}

export function kindOfMimeType(mimeType: string | null | undefined): MediaKind | undefined {
  if (!mimeType) return undefined;
  if (mimeType.startsWith('image/')) return 'image';
  if (mimeType.startsWith('audio/') || mimeType === 'application/ogg' || mimeType === 'video/mp4') return 'audio';
  return undefined;
}
