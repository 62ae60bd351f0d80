import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError, defaultMediaLimits } from './config.js';
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
  // "private": the original (variant 0, metadata-stripped like any original) is served only with a
  // signed link, even when the file is public; its variants follow the visibility.
  original: z.enum(['served', 'private']).default('served'),
  /** Image ladder formats: WebP always; "avif" adds AVIF twins of the rungs where it pays (delivered by Accept). */
  formats: z
    .array(z.enum(['webp', 'avif']))
    .min(1)
    .refine((f) => f.includes('webp'), 'formats must include "webp" (every browser gets it; AVIF is an addition)')
    .default(['webp']),
  // Limits on the work a file may cost; unset, the server's settings (CHIPMUNK_MAX_FRAMES, …) apply.
  maxFrames: z.number().int().positive().optional(),
  maxAnimationPixels: z.number().int().positive().optional(),
  maxDurationSeconds: z.number().positive().optional(),
});

export type Purpose = Omit<z.infer<typeof purposeSchema>, keyof MediaLimits> & MediaLimits & { name: string };

/** The server-wide limits, when no setting changes them (the README's configuration table). */

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

/** A cap on what any purpose may accept, from where uploads are kept, with the reason in a sentence. */
export type UploadCeiling = { bytes: number; why: string };

/** `defaults` are the server's settings for the limits a purpose does not set itself. */
export function loadPurposes(file?: string, defaults: MediaLimits = defaultMediaLimits, ceiling?: UploadCeiling): Purposes {
  let overrides: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new ConfigError(`CHIPMUNK_PURPOSES_FILE ${file} ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? (err as Error).message})`}.`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new ConfigError(`CHIPMUNK_PURPOSES_FILE ${file} is not valid JSON: ${(err as Error).message}.`);
    }
    const parsed = z.record(z.string(), z.unknown()).safeParse(json);
    if (!parsed.success)
      throw new ConfigError(`CHIPMUNK_PURPOSES_FILE ${file} is not a JSON object of purposes ({ "name": { "kinds": [...], "maxBytes": … } }).`);
    overrides = parsed.data;
  }
  const table = new Map<string, Purpose>();
  for (const [name, raw] of Object.entries({ ...builtInPurposes, ...overrides })) {
    if (!purposeNamePattern.test(name)) {
      throw new ConfigError(
        `Purpose name "${name}" in CHIPMUNK_PURPOSES_FILE ${file} must be 1 to 32 lowercase letters, digits, - or _, starting with a letter.`,
      );
    }
    const parsed = purposeSchema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ConfigError(`Purpose "${name}" is invalid in CHIPMUNK_PURPOSES_FILE ${file}: ${issue?.path.join('.') || 'it'} ${issue?.message}.`);
    }
    if (ceiling && parsed.data.maxBytes > ceiling.bytes) {
      throw new ConfigError(`Purpose "${name}" accepts up to ${parsed.data.maxBytes} bytes, over ${ceiling.bytes}: ${ceiling.why}.`);
    }
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
  // Only a declared type that is definitely wrong for the purpose is refused here; "unknown"
  // (application/octet-stream, none, an empty one) is judged by the bytes at completion.
  const declaredType = essentialMimeType(declared.mimeType);
  const kind = kindOfMimeType(declaredType);
  if (declaredType && (!kind || !purpose.kinds.includes(kind))) {
    throw errors.unsupportedType(`"${purpose.name}" uploads take ${purpose.kinds.join(' or ')} files; "${declaredType}" is not one.`);
  }
  return { kind };
}

/**
 * Types that say "I don't know" rather than what a file is: Uppy's fallback, mobile pickers' and
 * generic HTTP clients' default for any file.
 */
const UNKNOWN_TYPES = new Set([
  'application/octet-stream',
  'binary/octet-stream',
  'application/binary',
  'application/unknown',
  'application/x-unknown',
  'unknown/unknown',
]);

/** A declared type without its parameters (`; charset=…`), lower-cased; undefined when it tells nothing. */
export function essentialMimeType(mimeType: string | null | undefined): string | undefined {
  const essence = mimeType?.split(';')[0]!.trim().toLowerCase();
  return essence && !UNKNOWN_TYPES.has(essence) ? essence : undefined;
}

/** Whether a purpose keeps its files' originals to signed links; a purpose no longer configured does. */
export function keepsOriginalPrivate(purposes: Purposes, name: string): boolean {
  try {
    return purposes.get(name).original === 'private';
  } catch {
    return true;
  }
}

/** The limits a purpose puts on the work of one file, as the media processors take them. */
export function purposeLimits(purpose: Purpose): MediaLimits {
  return { maxFrames: purpose.maxFrames, maxAnimationPixels: purpose.maxAnimationPixels, maxDurationSeconds: purpose.maxDurationSeconds };
}

export function kindOfMimeType(mimeType: string | null | undefined): MediaKind | undefined {
  mimeType = essentialMimeType(mimeType);
  if (!mimeType) return undefined;
  if (mimeType.startsWith('image/')) return 'image';
  if (mimeType.startsWith('audio/') || mimeType === 'application/ogg' || mimeType === 'video/mp4') return 'audio';
  return undefined;
}
