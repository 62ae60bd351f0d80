import type { Repository } from '../db/repository.js';
import type { FileRow, VariantRow } from '../db/schema.js';
import { AppError, errors } from '../errors.js';
import type { BlobStorage } from '../storage/storage.js';
import { isValidDeliverySignature } from './signing.js';

// The one access decision for /f/<token>/<n>, shared by Chipmunk's own delivery and the nginx
// auth endpoint: the raw request target (path + query, exactly as the client sent it) goes in,
// the variant to serve and the headers to serve it with come out, or an AppError.

export type Delivery = {
  file: FileRow;
  variant: VariantRow;
  /** Path relative to the media root, as nginx serves it. */
  relativePath: string;
  contentType: string;
  cacheControl: string;
  /** Set for originals that must not render inline (audio, anything not a plain image). */
  contentDisposition: string | undefined;
  /** Unix seconds after which this answer stops being true (signed links); undefined for public files. */
  expiresAt: number | undefined;
};

export const deliveryErrors = {
  signatureRequired: () =>
    new AppError('SIGNATURE_REQUIRED', 401, 'This file is private: its link needs exp and sig parameters. Ask the app for a signed link.'),
  invalidSignature: () => new AppError('INVALID_SIGNATURE', 403, 'The link signature is not valid for this file and variant.'),
  expired: () => new AppError('LINK_EXPIRED', 403, 'This link has expired. Ask the app for a new one.'),
  notFound: () => errors.notFound('File'),
};

const YEAR = 31_536_000;
// Strict on the raw target: anything percent-encoded, any dot segment, NUL or extra slash fails here.
const targetPattern = /^\/f\/([0-9a-z]{32})\/([0-9a-z][0-9a-z-]{0,31})(?:\?([^#]*))?$/;

export type DeliveryResolver = (target: string) => Delivery;

export function createDeliveryResolver(deps: { repo: Repository; storage: BlobStorage; secret: string; now?: () => number }): DeliveryResolver {
  const { repo, storage, secret } = deps;
  const now = deps.now ?? Date.now;

  return (target) => {
    const match = targetPattern.exec(target);
    if (!match) throw deliveryErrors.notFound();
    const [, token, name, query] = match as unknown as [string, string, string, string | undefined];
    // Repository lookups exclude files being uploaded or deleted.
    const file = repo.getStoredFileByToken(token);
    if (!file) throw deliveryErrors.notFound();
    const variant = repo.getVariant(file.id, name);
    if (!variant) throw deliveryErrors.notFound();

    let expiresAt: number | undefined;
    let cacheControl = `public, max-age=${YEAR}, immutable`;
    if (file.visibility === 'private') {
      const params = new URLSearchParams(query ?? '');
      const exp = params.get('exp');
      const sig = params.get('sig');
      if (exp === null || sig === null) throw deliveryErrors.signatureRequired();
      if (!/^\d{1,12}$/.test(exp) || !isValidDeliverySignature(secret, `/f/${token}/${name}`, Number(exp), sig)) {
        throw deliveryErrors.invalidSignature();
      }
      expiresAt = Number(exp);
      const left = Math.floor((expiresAt * 1000 - now()) / 1000);
      if (left <= 0) throw deliveryErrors.expired();
      // Browsers may keep the bytes as long as the link is valid, never in a shared cache.
      cacheControl = `private, max-age=${Math.min(left, YEAR)}, immutable`;
    }

    return {
      file,
      variant,
      relativePath: storage.relativePath(file.id, variant.path),
      contentType: variant.mimeType,
      cacheControl,
      contentDisposition: variant.name === '0' && !isInlineSafe(variant.mimeType) ? attachment(file.filename) : undefined,
      expiresAt,
    };
  };
}

/** Raster images render inline; audio, SVG and anything else are downloads. */
function isInlineSafe(mimeType: string): boolean {
  return mimeType.startsWith('image/') && !mimeType.startsWith('image/svg');
}

/** RFC 6266: an ASCII fallback plus the UTF-8 name; header-safe whatever the upload was called. */
export function attachment(filename: string): string {
  const ascii = filename.replace(/[^\x20-\x7e]/g, '_').replace(/["\\]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(filename).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}`;
}
