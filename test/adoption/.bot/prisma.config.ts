// The bot's Prisma 7 config, as docs/adopting.md section 2 gives it: the
// datasource from the environment, and nothing set (rather than undefined)
// without it, so `prisma generate` works in a build step with no database and
// the file type-checks under exactOptionalPropertyTypes.
import { defineConfig, env } from 'prisma/config';

export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: {
    ...(process.env.DATABASE_URL ? { url: env('DATABASE_URL') } : {}),
    ...(process.env.SHADOW_DATABASE_URL ? { shadowDatabaseUrl: env('SHADOW_DATABASE_URL') } : {}),
  },
});
