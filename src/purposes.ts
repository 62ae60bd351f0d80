import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { errors, formatBytes } from './errors.js';
import type { MediaLimits } from './media/processor.js';

// A purpose says what an upload is for: which kinds of file it takes, how big, whether its
// variants are square, and who may see it by default. Operators add or change purposes
// with a JSON file (CHIPMUNK_PURPOSES_FILE) merged over the built-ins.

export type MediaKind = 'image' | 'audio';

const purposeSchema = z.object({
  kinds: z.array(z.enum(['image', 'audio'])).min(1),
  maxBytes: z.number().int().positive(),
  square: z.boolean().default(false),
  visibility: z.enum(['public', 'private']).default('private'),
  // Limits on the work a file may cost; unset, the server's settings (CHIPMUNK_MAX_FRAMES, …) apply.
  maxFrames: z.number().int().positive().optional(),
  maxAnimationPixels: z.number().int().positive().optional(),
  maxDurationSeconds: z.number().positive().optional(),
});

export type Purpose = Omit<z.infer<typeof purposeSchema>, keyof MediaLimits> & MediaLimits & { name: string };

/** The server-wide limits, when no setting changes them (the README's configuration table). */
export const defaultMediaLimits: MediaLimits = Object.freeze({ maxFrames: 100, maxAnimationPixels: 25_000_000, maxDurationSeconds: 2 * 3600 });

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

/** `defaults` are the server's settings for the limits a purpose does not set itself. */
export function loadPurposes(file?: string, defaults: MediaLimits = defaultMediaLimits): Purposes {
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
    const { maxFrames, maxAnimationPixels, maxDurationSeconds, ...rest } = parsed.data;
    table.set(
      name,
      Object.freeze({
        name,
        ...rest,
        maxFrames: maxFrames ?? defaults.maxFrames,
        maxAnimationPixels: maxAnimationPixels ?? defaults.maxAnimationPixels,
        maxDurationSeconds: maxDurationSeconds ?? defaults.maxDurationSeconds,
      }),
    );
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

/** The limits a purpose puts on the work of one file, as the media processors take them. */
export function purposeLimits(purpose: Purpose): MediaLimits {
  return { maxFrames: purpose.maxFrames, maxAnimationPixels: purpose.maxAnimationPixels, maxDurationSeconds: purpose.maxDurationSeconds };
}

export function kindOfMimeType(mimeType: string | null | undefined): MediaKind | undefined {
  if (!mimeType) return undefined;
  if (mimeType.startsWith('image/')) return 'image';
  if (mimeType.startsWith('audio/') || mimeType === 'application/ogg' || mimeType === 'video/mp4') return 'audio';
  return undefined;
}
