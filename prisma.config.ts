import { defineConfig, env } from 'prisma/config';

// `prisma migrate dev --create-only`, `migrate deploy` and `migrate status`
// read the database from DATABASE_URL, the Prisma 7 way. env() throws when the
// variable is unset, which would break `prisma generate` (scripts/generate.mjs,
// offline, needs no database), so it is only called when the variable is set;
// unset, `url` stays undefined and the migrate commands stop with Prisma's own
// "datasource.url property is required" error.
// memory-sync's own commands (migrate, adopt, migration create) read
// DATABASE_URL themselves and need no engine binary.
export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: {
    url: process.env.DATABASE_URL ? env('DATABASE_URL') : undefined,
    shadowDatabaseUrl: process.env.SHADOW_DATABASE_URL ? env('SHADOW_DATABASE_URL') : undefined,
  },
});
