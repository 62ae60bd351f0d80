import type pg from 'pg';
import type { TokenUses } from '../token-uses.js';

// The uses of bounded upload tokens on PostgreSQL: the same guarded upsert as on SQLite
// (token-uses.ts), so nodes admitting uploads with one token together never exceed its bound.

export function createPgTokenUses(pool: pg.Pool, now: () => number = Date.now): TokenUses {
  let claims = 0;
  return {
    async claim(jti, max, expiresAt) {
      if (++claims % 1000 === 0) await pool.query('DELETE FROM upload_token_uses WHERE expires_at < $1', [Math.floor(now() / 1000)]);
      const { rows } = await pool.query<{ uses: number }>(
        `INSERT INTO upload_token_uses (jti, uses, expires_at) VALUES ($1, 1, $2)
         ON CONFLICT (jti) DO UPDATE SET uses = upload_token_uses.uses + 1 WHERE upload_token_uses.uses < $3
         RETURNING uses`,
        [jti, expiresAt, max],
      );
      return rows[0] !== undefined && rows[0].uses <= max;
    },
    async refund(jti) {
      await pool.query('UPDATE upload_token_uses SET uses = uses - 1 WHERE jti = $1 AND uses > 0', [jti]);
    },
  };
}
