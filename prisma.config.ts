import { defineConfig } from 'prisma/config';

// No datasource URL here: generation needs none, and migrations run through
// `memory-sync migrate` (src/db/migrate.ts), which reads DATABASE_URL itself.
export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
});
