import type { Repository } from '../db/repository.js';
import type { FileRow, Visibility } from '../db/schema.js';
import { errors } from '../errors.js';
import { newDeliveryToken } from '../ids.js';
import type { VariantUrl } from '../services/files.js';
import { coarseExpiry, DEFAULT_LINK_SECONDS, deliveryPath, signDeliveryUrl } from './signing.js';

// What the app backend can do about a file's delivery: mint links, revoke them all by rotating the
// token, and switch visibility. Serving itself is in resolve.ts / serve.ts.

export function createDeliveryLinks(deps: { repo: Repository; secret: string; now?: () => number; privateOriginal?: (purpose: string) => boolean }) {
  const { repo, secret } = deps;
  const now = deps.now ?? Date.now;
  const privateOriginal = deps.privateOriginal ?? (() => false);

  /**
   * Public files get the bare token URL; private ones (and a private original) a link signed for
   * DEFAULT_LINK_SECONDS (coarse).
   */
  const variantUrl: VariantUrl = (file, name, baseUrl) =>
    file.visibility === 'public' && !(name === '0' && privateOriginal(file.purpose))
      ? `${baseUrl}${deliveryPath(file.deliveryToken, name)}`
      : `${baseUrl}${signDeliveryUrl(secret, file.deliveryToken, name, coarseExpiry(now(), DEFAULT_LINK_SECONDS))}`;

  return {
    variantUrl,

    /**
     * A signed link to one variant, whatever the file's visibility (so it keeps working if the file
     * turns private before it expires).
     */
    async signedUrl(fileId: string, variant: string, expiresIn: number, baseUrl: string): Promise<{ url: string; expiresAt: string }> {
      const file = await repo.getStoredFile(fileId);
      if (!file) throw errors.notFound('File');
      if (!(await repo.getVariant(file.id, variant))) throw errors.notFound(`Variant "${variant}" of this file`);
      const exp = coarseExpiry(now(), expiresIn);
      return { url: `${baseUrl}${signDeliveryUrl(secret, file.deliveryToken, variant, exp)}`, expiresAt: new Date(exp * 1000).toISOString() };
    },

    /** Every existing link to the file dies at once (through nginx: within its auth cache lifetime). */
    async rotateToken(fileId: string): Promise<FileRow> {
      for (let attempt = 0; ; attempt++) {
        try {
          const updated = await repo.updateFile(fileId, { deliveryToken: newDeliveryToken() });
          if (!updated) throw errors.notFound('File');
          return updated;
        } catch (err) {
          // A collision on the unique token index is astronomically unlikely; retried all the same.
          if (attempt < 3 && /UNIQUE/i.test(String((err as Error).message))) continue;
          throw err;
        }
      }
    },

    async setVisibility(fileId: string, visibility: Visibility): Promise<FileRow> {
      const updated = await repo.updateFile(fileId, { visibility });
      if (!updated) throw errors.notFound('File');
      return updated;
    },
  };
}

export type DeliveryLinks = ReturnType<typeof createDeliveryLinks>;
