import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { z } from 'zod';
import { loadConfig } from '../config.js';
import { adopt, adoptDeclaration, uninstall } from '../capture/adopt.js';
import { bindDeclaration, findDeclaration, loadDeclaration, loadDeclarationFile } from '../schema/load.js';
import { checkMigrations, formatFinding, PROTECTED_INDEXES } from '../migrations/check-migrations.js';
import { createMigration } from '../migrations/create-migration.js';
import { migrate } from '../migrations/migrate.js';
import { ConfigError } from '../contract/errors.js';
import { DEFAULT_MIGRATIONS_DIR, DEFAULT_SCHEMA_PATH, PACKAGE_ROOT } from '../paths.js';
import { postgresUrl } from '../contract/primitives.js';

function databaseUrl(): string {
  const url = process.env.DATABASE_URL;
  if (!url) throw new ConfigError('DATABASE_URL', 'is required (postgresql://user:pass@host:5432/db)');
  const checked = postgresUrl.safeParse(url);
  if (!checked.success) throw new ConfigError('DATABASE_URL', checked.error.issues[0]!.message);
  return url;
}

function packageVersion(): string {
  const pkg = z.object({ version: z.string() }).parse(JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')));
  return pkg.version;
}

const shown = (path: string) => relative(process.cwd(), path) || path;

// Same variable as prisma.config.ts's datasource.shadowDatabaseUrl.
const shadowOption = () =>
  new Option('--shadow-database-url <url>', 'an empty database to use as shadow instead of a temporary one (emptied after use)').env(
    'SHADOW_DATABASE_URL',
  );

const configOption = () =>
  new Option('--config <file>', 'the declaration (memory-sync.config.{ts,mjs,js,json}); default: one in the working directory, else memory-sync\'s own schema').env(
    'MEMORY_SYNC_CONFIG',
  );

/** The protected index names: memory-sync's own, each declared collection's vector index, and `--protect`. */
async function protectedIndexes(config: string | undefined, more: string[] = []): Promise<string[]> {
  const loaded = await loadDeclaration(config);
  if (loaded.source === 'built-in') return [...new Set([...PROTECTED_INDEXES, ...more])]; // its index is PROTECTED_INDEXES
  const binding = bindDeclaration(loaded);
  const declared = [...binding.collections.values()].filter((c) => c.indexed !== 'none').map((c) => c.index.name);
  return [...new Set([...PROTECTED_INDEXES, ...declared, ...more])];
}

function program(out: { code: number }): Command {
  const cli = new Command('memory-sync')
    .description('Keeps bot caches declared on your own Prisma schema in step with PostgreSQL (generated triggers or logical replication); serves entity lookups and exact vector search.')
    .version(packageVersion())
    .exitOverride()
    .showHelpAfterError();

  cli
    .command('start')
    .description('run the sidecar: HTTP API, change capture, metrics, maintenance jobs (configured by environment variables: docs/reference.md, "Configuration")')
    .addOption(configOption())
    .action(async (o: { config?: string }) => {
      if (o.config) process.env.MEMORY_SYNC_CONFIG = o.config;
      const config = loadConfig(process.env);
      // Loaded on demand: migrate and check-migrations (the pre-commit hook) need no HTTP stack.
      const { runSidecar } = await import('../sidecar/lifecycle/start.js');
      await runSidecar(config); // resolves after a clean SIGTERM/SIGINT shutdown
    });

  cli
    .command('relay')
    .description(
      'LISTEN on DATABASE_URL (or, with source "replication", read the replication slot) and publish every change to MEMORY_SYNC_BUS_URL (nats:// or redis://) for fleet mode; run two for availability',
    )
    .addOption(configOption())
    .action(async (o: { config?: string }) => {
      if (o.config) process.env.MEMORY_SYNC_CONFIG = o.config;
      const { runRelayCommand } = await import('../relay/run.js');
      await runRelayCommand(process.env); // resolves after SIGTERM/SIGINT
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
    .command('adopt')
    .description(
      "adopt a database whose tables already exist: check them against the declaration (or memory-sync's own migrations), prove and install the generated triggers, build the vector indexes CONCURRENTLY, and record the change as a migration",
    )
    .addOption(configOption())
    .option('--migration-dir <dir>', 'with a declaration: your migrations folder, where the capture SQL is written as a migration (default: prisma/migrations next to your schema)')
    .option('--no-migration', 'with a declaration: write no migration file')
    .option('--migrations-dir <dir>', "without a declaration: memory-sync's migrations", DEFAULT_MIGRATIONS_DIR)
    .option('--schema <file>', "without a declaration: memory-sync's Prisma schema", DEFAULT_SCHEMA_PATH)
    .option('--no-record', "without a declaration: do not record memory-sync's migrations (your own migrations folder carries its SQL; see docs/adopting.md)")
    .addOption(shadowOption())
    .action(async (o: { config?: string; migrationDir?: string; migration: boolean; migrationsDir: string; schema: string; record: boolean; shadowDatabaseUrl?: string }) => {
      const declared = findDeclaration(o.config);
      if (declared) {
        const result = await adoptDeclaration({
          databaseUrl: databaseUrl(),
          declaration: await loadDeclarationFile(declared),
          migrationDir: o.migration ? o.migrationDir : null,
          publication: loadConfig(process.env).engine.replication.publication,
          log: (line) => console.log(line),
        });
        const how = result.published ? `publication on ${Object.keys(result.published.tables).join(', ')} (source "replication")` : `triggers on ${result.tables.join(', ') || 'no table'}`;
        console.log(`adopted ${shown(declared)}: ${how}`);
        if (result.migration) console.log(`migration ${result.migration}${result.recorded ? ' (recorded as applied)' : ''}`);
        return;
      }
      const result = await adopt({
        record: o.record,
        databaseUrl: databaseUrl(),
        migrationsDir: o.migrationsDir,
        schemaPath: o.schema,
        ...(o.shadowDatabaseUrl ? { shadowDatabaseUrl: o.shadowDatabaseUrl } : {}),
      });
      console.log(`tables compatible; change capture installed on ${result.tables.join(', ')}`);
      console.log(`${PROTECTED_INDEXES[0]}: ${result.vectorIndex}${result.vectorIndex === 'present' ? '' : ' (CREATE INDEX CONCURRENTLY)'}`);
      if (result.indexesCreated.length) console.log(`indexes created (CONCURRENTLY): ${result.indexesCreated.join(', ')}`);
      if (result.recorded.length) console.log(`recorded as applied: ${result.recorded.join(', ')}`);
      if (result.alreadyRecorded.length) console.log(`already recorded: ${result.alreadyRecorded.join(', ')}`);
    });

  cli
    .command('uninstall')
    .description(
      'remove the change capture: the generated triggers and their functions, and the replication slot and publication (MEMORY_SYNC_REPLICATION_SLOT, _PUBLICATION) so the server keeps no WAL for memory-sync; stop every memory-sync and relay first. The vector indexes and migration files stay',
    )
    .addOption(configOption())
    .action(async (o: { config?: string }) => {
      const declaration = await loadDeclaration(o.config);
      const { replication } = loadConfig(process.env).engine;
      const r = await uninstall({ databaseUrl: databaseUrl(), declaration, replication });
      console.log(r.dropped.length ? r.dropped.join('\n') : 'no trigger to remove');
      console.log(`slot ${replication.slot}: ${r.slot ? 'dropped' : 'none'}; publication ${replication.publication}: ${r.publication ? 'dropped' : 'none'}`);
    });

  cli
    .command('init')
    .description("write a starting memory-sync.config.json from your Prisma schema: models with a vector column as collections, the others as candidate entities (reads DATABASE_URL's catalog when set, to find vector columns)")
    .option('--schema <file>', 'your Prisma schema (file or folder)', 'prisma/schema.prisma')
    .option('--out <file>', 'where to write it', 'memory-sync.config.json')
    .option('--force', 'overwrite an existing file')
    .action(async (o: { schema: string; out: string; force?: boolean }) => {
      const { writeInit } = await import('../schema/init.js');
      const text = await writeInit({ schemaPath: o.schema, out: o.out, force: o.force === true, databaseUrl: process.env.DATABASE_URL || undefined });
      console.log(text);
      console.log(`wrote ${shown(o.out)}: edit it (lookups, include, partitionBy, filters), then run memory-sync adopt`);
    });

  cli
    .command('migration')
    .description('author migrations')
    .command('create')
    .description(
      'create the next migration from the schema (as `prisma migrate dev --create-only`, through the WASM engine and a shadow database), leaving out drops of protected indexes',
    )
    .requiredOption('--name <name>', 'migration name (slugified as Prisma does)')
    .option('--schema <file>', 'Prisma schema', 'prisma/schema.prisma')
    .option('--migrations-dir <dir>', 'migrations folder', 'prisma/migrations')
    .option('--protect <index...>', 'more index names to protect (the declaration\'s vector indexes are protected already)')
    .addOption(configOption())
    .addOption(shadowOption())
    .action(async (o: { name: string; schema: string; migrationsDir: string; protect?: string[]; config?: string; shadowDatabaseUrl?: string }) => {
      const url = process.env.DATABASE_URL || undefined;
      if (!url && !o.shadowDatabaseUrl) {
        throw new ConfigError('DATABASE_URL', 'is required (the shadow database is created on its server), or pass --shadow-database-url');
      }
      const result = await createMigration({
        name: o.name,
        schemaPath: o.schema,
        migrationsDir: o.migrationsDir,
        protectedIndexes: await protectedIndexes(o.config, o.protect),
        ...(url ? { databaseUrl: url } : {}),
        ...(o.shadowDatabaseUrl ? { shadowDatabaseUrl: o.shadowDatabaseUrl } : {}),
      });
      for (const f of result.stripped) {
        console.log(`left out: ${f.statement} (Prisma cannot declare the pgvector index "${f.index}" and proposes dropping it as drift)`);
      }
      console.log(result.path ? `created ${shown(result.path)}` : 'no schema change: nothing written');
    });

  cli
    .command('check-migrations')
    .description('fail when a migration drops a protected index (idx_memories_embedding, and the declaration\'s vector indexes) without recreating it')
    .argument('[paths...]', 'migration folders or .sql files', [DEFAULT_MIGRATIONS_DIR])
    .option('--protect <index...>', 'more index names to protect')
    .addOption(configOption())
    .action(async (paths: string[], o: { protect?: string[]; config?: string }) => {
      const findings = await checkMigrations(paths, await protectedIndexes(o.config, o.protect));
      for (const f of findings) console.error(formatFinding(f));
      if (findings.length) {
        console.error(
          `\n${findings.length} unsafe drop(s). Prisma cannot declare pgvector indexes and proposes dropping them as drift: delete those lines (docs/adopting.md, "5. Creating migrations").`,
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
