import { sql } from 'drizzle-orm';
import type { Db } from './index.js';

// How many uploads each bounded upload token (minted with maxUploads) has started. One guarded
// upsert per claim, so concurrent creations with the same token never exceed its bound.

export type TokenUses = {
  /** Counts one use of `jti`; false when it already has `max` uses. */
  claim(jti: string, max: number, expiresAt: number): Promise<boolean>;
  /** Gives back a use whose upload was refused before it started. */
  refund(jti: string): Promise<void>;
};

export function createTokenUses(db: Db, now: () => number = Date.now): TokenUses {
  let claims = 0;
  return {
    async claim(jti, max, expiresAt) {
      // Rows of expired tokens are worthless; cleared now and then, in passing.
      if (++claims % 1000 === 0) db.run(sql`DELETE FROM upload_token_uses WHERE expires_at < ${Math.floor(now() / 1000)}`);
      const row = db.get<{ uses: number }>(sql`
        INSERT INTO upload_token_uses (jti, uses, expires_at) VALUES (${jti}, 1, ${expiresAt})
        ON CONFLICT (jti) DO UPDATE SET uses = uses + 1 WHERE uses < ${max}
        RETURNING uses`);
      return row !== undefined && row.uses <= max;
    },
    async refund(jti) {
      db.run(sql`UPDATE upload_token_uses SET uses = uses - 1 WHERE jti = ${jti} AND uses > 0`);
    },
  };
}
