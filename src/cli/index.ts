import { Command, CommanderError } from 'commander';
import { loadConfig } from '../config.js';
import { checkMigrations, formatFinding, PROTECTED_INDEXES } from '../db/check-migrations.js';
import { migrate } from '../db/migrate.js';
import { ConfigError } from '../errors.js';
import { DEFAULT_MIGRATIONS_DIR, DEFAULT_SCHEMA_PATH } from '../paths.js';

function databaseUrl(): string {
  const url = process.env.DATABASE_URL;
  if (!url) throw new ConfigError('DATABASE_URL', 'is required (postgresql://user:pass@host:5432/db)');
  if (!/^postgres(ql)?:\/\//.test(url)) throw new ConfigError('DATABASE_URL', 'must start with postgres:// or postgresql://');
  return url;
}

function program(out: { code: number }): Command {
  const cli = new Command('memory-sync')
    .description('Keeps bot caches in step with PostgreSQL via LISTEN/NOTIFY; serves memory search.')
    .exitOverride()
    .showHelpAfterError();

  cli
    .command('start')
    .description('run the sidecar: HTTP API, LISTEN, metrics, maintenance jobs (configured by environment variables; see README)')
    .action(async () => {
      const config = loadConfig(process.env);
      // Loaded on demand: migrate and check-migrations (the pre-commit hook) need no HTTP stack.
      const { runSidecar } = await import('../sidecar/lifecycle/start.js');
      await runSidecar(config); // resolves after a clean SIGTERM/SIGINT shutdown
    });

  cli
    .command('migrate')
    .description('apply prisma/migrations as `prisma migrate deploy` does, with no engine binary')
    .option('--migrations-dir <dir>', 'migrations folder', DEFAULT_MIGRATIONS_DIR)
    .option('--schema <file>', 'Prisma schema', DEFAULT_SCHEMA_PATH)
    .action(async (o: { migrationsDir: string; schema: string }) => {
      const { applied } = await migrate({ databaseUrl: databaseUrl(), migrationsDir: o.migrationsDir, schemaPath: o.schema });
      console.log(applied.length ? `applied: ${applied.join(', ')}` : 'no pending migrations');
    });

  cli
    .command('check-migrations')
    .description('fail when a migration drops a protected index (idx_memories_embedding) without recreating it')
    .argument('[paths...]', 'migration folders or .sql files', [DEFAULT_MIGRATIONS_DIR])
    .option('--protect <index...>', 'more index names to protect')
    .action(async (paths: string[], o: { protect?: string[] }) => {
      const findings = await checkMigrations(paths, [...PROTECTED_INDEXES, ...(o.protect ?? [])]);
      for (const f of findings) console.error(formatFinding(f));
      if (findings.length) {
        console.error(
          `\n${findings.length} unsafe drop(s). Prisma cannot declare pgvector indexes and proposes dropping them as drift: delete those lines (see README, "--create-only").`,
        );
        out.code = 1;
      } else {
        console.log('migrations ok: no protected index dropped');
      }
    });

  return cli;
}

/** Runs the CLI; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const out = { code: 0 };
  try {
    await program(out).parseAsync(argv);
    return out.code;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    if (err instanceof ConfigError) {
      console.error(`memory-sync: invalid configuration: ${err.message}`);
      return 2;
    }
    console.error(`memory-sync: ${(err as Error).message}`);
    return 1;
  }
}
