import { defineConfig } from 'drizzle-kit';

// PostgreSQL (distributed mode): `npm run db:generate:pg`. SQLite stays in drizzle.config.ts.
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/db/pg/schema.ts',
  out: './drizzle/pg',
});
