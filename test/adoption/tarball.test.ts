import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, createDatabase, ROOT, seededVectors, vectorLiteral, type TestDb } from '../helpers/db.js';
import { killLeftovers, SidecarProcess } from '../sidecar/helpers.js';

// Issue 9, "Done when": a separate, strict-TypeScript bot project that depends
// on the packed tarball adopts its existing database and reads every write of
// its own Prisma client through the Prisma extension and the sidecar client.
//
// Offline: the bot lives in <repo>/.tmp/bot-<random> with the tarball unpacked
// where `npm install` puts it (node_modules/memory-sync) and nothing else in
// its node_modules, so the package's own imports (pg, fastify, @prisma/client,
// ...) and the bot's (pg, @prisma/adapter-pg, prisma, tsx, typescript) resolve
// upwards from the repo's node_modules: the same versions, no registry.
//
// The bot's sources are in test/adoption/.bot/ (a dot folder, which the repo's
// own `tsc -p tsconfig.test.json` skips: they type-check only inside the bot
// project, against the packed package's declarations).

const run = promisify(execFile);
const FIXTURE = join(ROOT, 'test', 'adoption', '.bot');
const NEEDED = ['dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli/index.js', 'dist/src/client/prisma-extension.js'];

let bot: string;
let bin: string;
let db: TestDb;

/** The bot project's environment: nothing of the host's but PATH. */
const botEnv = (env: Record<string, string> = {}): NodeJS.ProcessEnv => ({ PATH: process.env.PATH, CHECKPOINT_DISABLE: '1', PRISMA_HIDE_UPDATE_MESSAGE: '1', ...env });

/** Runs `memory-sync …` from the tarball's bin in the bot project; never rejects. */
async function memorySync(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [bin, ...args], { cwd: bot, env: botEnv({ DATABASE_URL: db.url }) });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
  }
}

/** Runs one of the bot's scripts with tsx; its last stdout line is its JSON report. */
async function botScript(file: string, env: Record<string, string>): Promise<any> {
  const r = await run(process.execPath, ['--import', 'tsx', file], { cwd: bot, env: botEnv({ DATABASE_URL: db.url, ...env }), maxBuffer: 16 << 20 }).catch(
    (err: { stdout?: string; stderr?: string; message: string }) => {
      throw new Error(`${file} failed: ${err.message}\n${err.stdout ?? ''}\n${err.stderr ?? ''}`);
    },
  );
  const last = r.stdout.trim().split('\n').at(-1) ?? '';
  return JSON.parse(last);
}

async function sql<T = any>(text: string, params: unknown[] = []): Promise<T[]> {
  const c = await connect(db.url);
  try {
    return (await c.query(text, params)).rows as T[];
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  const missing = NEEDED.filter((f) => !existsSync(join(ROOT, f)));
  if (missing.length) throw new Error(`dist/ is missing or incomplete (${missing.join(', ')}): run \`npm run build\` first (npm test does)`);

  mkdirSync(join(ROOT, '.tmp'), { recursive: true });
  bot = join(ROOT, '.tmp', `bot-${randomBytes(4).toString('hex')}`);
  cpSync(FIXTURE, bot, { recursive: true });
  // --ignore-scripts: prepack would rebuild dist/ from scratch under the other tests' feet.
  const packed = await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', bot], { cwd: ROOT });
  const [{ filename }] = JSON.parse(packed.stdout) as [{ filename: string }];
  writeFileSync(
    join(bot, 'package.json'),
    JSON.stringify({ name: 'bot', version: '1.0.0', private: true, type: 'module', dependencies: { 'memory-sync': `file:./${filename}` } }, null, 2),
  );
  const pkg = join(bot, 'node_modules', 'memory-sync');
  mkdirSync(pkg, { recursive: true });
  await run('tar', ['xzf', join(bot, filename), '-C', pkg, '--strip-components=1']);
  bin = join(pkg, 'bin', 'memory-sync.js');
  db = await createDatabase('ms_bot');
}, 60_000);

afterAll(async () => {
  await killLeftovers();
  await db?.drop();
  if (bot) rmSync(bot, { recursive: true, force: true });
});

describe('a bot project on the packed tarball', () => {
  it('generates its own Prisma client from the exported schema, offline', async () => {
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', `console.log(import.meta.resolve('memory-sync/prisma/schema.prisma'))`], { cwd: bot });
    const exported = fileURLToPath(stdout.trim());
    expect(exported).toBe(join(bot, 'node_modules', 'memory-sync', 'prisma', 'schema.prisma'));

    // The bot's schema: memory-sync's models with the bot's generator, its own columns and its own model.
    let schema = readFileSync(exported, 'utf8');
    const edits: [RegExp | string, string][] = [
      [/generator client \{[^}]*\}/, 'generator client {\n  provider            = "prisma-client"\n  output              = "../generated/prisma"\n  moduleFormat        = "esm"\n  importFileExtension = "js"\n}'],
      ['  @@map("personalities")', '  avatarUrl    String               @default("")\n  ownerId      String?\n\n  @@map("personalities")'],
      ['  @@index([personalityId, channelId])', '  importance    Int                         @default(0)\n\n  @@index([personalityId, channelId])'],
    ];
    for (const [from, to] of edits) {
      const next = schema.replace(from, to);
      expect(next, `schema edit ${String(from)}`).not.toBe(schema);
      schema = next;
    }
    schema += '\nmodel GuildSetting {\n  id      Int    @id @default(autoincrement())\n  guildId String @unique\n  prefix  String @default("!")\n\n  @@map("guild_settings")\n}\n';
    mkdirSync(join(bot, 'prisma'));
    writeFileSync(join(bot, 'prisma', 'schema.prisma'), schema);

    // As scripts/generate.mjs: Prisma 7's CLI wants a schema-engine binary even
    // for generate, which never runs it; any existing file stops the download.
    const cli = join(ROOT, 'node_modules', 'prisma', 'build', 'index.js');
    await run(process.execPath, [cli, 'generate', '--schema', 'prisma/schema.prisma'], { cwd: bot, env: botEnv({ PRISMA_SCHEMA_ENGINE_BINARY: process.execPath }) });
    expect(existsSync(join(bot, 'generated', 'prisma', 'client.ts'))).toBe(true);
    expect(existsSync(join(bot, 'node_modules', 'memory-sync', 'generated'))).toBe(false);
  });

  it('type-checks strictly against the packed declarations', async () => {
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = await run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: bot }).catch((err: { stdout?: string; message: string }) => ({ stdout: err.stdout ?? err.message, failed: true }));
    expect(r.stdout).toBe('');
  });

  it('has an existing database with its own tables, columns and rows; memory-sync migrate refuses it, adopt takes it', async () => {
    // The bot's own history: its init migration, created from its schema and
    // reviewed (pgvector's extension added by hand, as Prisma cannot declare it).
    // migration_lock.toml is there as in any project that has run `prisma migrate dev`.
    mkdirSync(join(bot, 'prisma', 'migrations'));
    writeFileSync(join(bot, 'prisma', 'migrations', 'migration_lock.toml'), 'provider = "postgresql"\n');
    const created = await memorySync('migration', 'create', '--name', 'init');
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    const [dir] = readdirSync(join(bot, 'prisma', 'migrations'), { withFileTypes: true }).filter((d) => d.isDirectory());
    const file = join(bot, 'prisma', 'migrations', dir!.name, 'migration.sql');
    const init = readFileSync(file, 'utf8');
    expect(init).toContain('CREATE TABLE "guild_settings"');
    expect(init).not.toMatch(/memory_sync|idx_memories_embedding/);
    writeFileSync(file, `CREATE EXTENSION IF NOT EXISTS vector;\n\n${init}`);
    // Applied as `prisma migrate deploy` does (the native engine cannot be fetched here).
    const deployed = await memorySync('migrate', '--migrations-dir', 'prisma/migrations', '--schema', 'prisma/schema.prisma');
    expect(deployed.stdout).toContain(`applied: ${dir!.name}`);

    const [ada, bob] = ['ada', 'bob'];
    const rows = await sql<{ id: string; name: string }>(
      `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt", "avatarUrl", "ownerId")
       VALUES ($1, 'Ada', 'You are Ada', now(), 'a.png', 'owner-1'), ($2, 'Bob', 'You are Bob', now(), 'b.png', NULL) RETURNING id, name`,
      [ada, bob],
    );
    const adaId = rows.find((r) => r.name === ada)!.id;
    await sql(`INSERT INTO llm_configs ("personalityId", model, "updatedAt") VALUES ($1, 'gpt-old', now())`, [adaId]);
    const vectors = seededVectors(9, 3);
    for (const [i, v] of vectors.entries()) {
      await sql(`INSERT INTO memories ("personalityId", "channelId", content, embedding, importance) VALUES ($1, 'general', $2, $3::vector, $4)`, [adaId, `memory ${i}`, vectorLiteral(v), i]);
    }
    await sql(`INSERT INTO guild_settings ("guildId", prefix) VALUES ('g1', '?'), ('g2', '!')`);
    const triggers = () => sql<{ n: number }>(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname LIKE 'memory_sync_%'`).then((r) => r[0]!.n);
    expect(await triggers()).toBe(0);

    const refused = await memorySync('migrate');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/another project's Prisma migration history .* Run `memory-sync adopt` instead/s);

    const adopted = await memorySync('adopt');
    expect(adopted.stderr).toBe('');
    expect(adopted.code).toBe(0);
    expect(adopted.stdout).toContain('idx_memories_embedding: created');
    expect(await triggers()).toBe(12);
    expect(await sql(`SELECT count(*)::int AS n FROM memories`)).toEqual([{ n: 3 }]);
    expect((await memorySync('migrate')).stdout.trim()).toBe('no pending migrations');
  });

  it("creates a project's first migration, in a folder with no migration_lock.toml yet (a db push project)", async () => {
    const created = await memorySync('migration', 'create', '--name', 'first', '--migrations-dir', 'prisma/first-migrations');
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    expect(readFileSync(join(bot, 'prisma', 'first-migrations', 'migration_lock.toml'), 'utf8')).toContain('provider = "postgresql"');
  });

  describe('reads through the Prisma extension (createMemorySync({ pool }))', () => {
    let r: any;
    beforeAll(async () => {
      r = await botScript('src/extension.ts', {});
    });

    // The fields memory-sync's schema gives a personality and its config; the
    // bot's own columns are checked apart, below.
    const ours = (p: any) =>
      p && {
        id: p.id,
        name: p.name,
        displayName: p.displayName,
        systemPrompt: p.systemPrompt,
        isActive: p.isActive,
        createdAt: p.createdAt,
        updatedAt: p.updatedAt,
        llmConfig: p.llmConfig ?? null,
      };

    it('borrows the bot pool: one LISTEN connection besides it, none of its own pool; close() leaves the pool open', () => {
      const { before, running, afterClose } = r.connections;
      expect(before).toEqual({ bot: 1 });
      expect(running['memory-sync-listener']).toBe(1);
      expect(running['memory-sync']).toBeUndefined();
      expect(running.bot).toBeGreaterThanOrEqual(1);
      expect(running.bot).toBeLessThanOrEqual(r.poolMax);
      expect(Object.keys(running).sort()).toEqual(['bot', 'memory-sync-listener']);
      expect(afterClose['memory-sync-listener']).toBeUndefined();
      expect(r.poolStillOpen).toBe(true);
    });

    it("sees every write of the bot's Prisma client on the next findUnique, served from the cache", () => {
      expect(r.steps.map((s: any) => s.step)).toEqual([
        'first read',
        'update personality',
        'update llmConfig',
        'bob before his config',
        'create llmConfig',
        'delete llmConfig',
        'nested update',
        'carol before she exists',
        'create personality',
        'delete personality',
      ]);
      for (const s of r.steps) {
        expect(ours(s.got), s.step).toEqual(ours(s.want));
        expect(s.repeatEqual, s.step).toBe(true);
        expect(s.hitsOnRepeat, `${s.step}: the repeated read is a cache hit`).toBe(1);
      }
      const byStep = Object.fromEntries(r.steps.map((s: any) => [s.step, s.got]));
      expect(byStep['update personality'].displayName).toBe('Ada Lovelace');
      expect(byStep['update llmConfig'].llmConfig).toMatchObject({ model: 'gpt-next', temperature: 0.25 });
      expect(byStep['bob before his config'].llmConfig).toBeNull();
      expect(byStep['create llmConfig'].llmConfig).toMatchObject({ model: 'claude-next', maxTokens: 2048 });
      expect(byStep['delete llmConfig'].llmConfig).toBeNull();
      expect(byStep['nested update']).toMatchObject({ systemPrompt: 'You are Bob, again', llmConfig: { model: 'claude-nested' } });
      expect(byStep['carol before she exists']).toBeNull();
      expect(byStep['create personality']).toMatchObject({ name: 'carol', llmConfig: null });
      expect(byStep['delete personality']).toBeNull();
      expect(r.orThrow).toEqual({ code: 'P2025', isPrismaError: true });
      expect(r.stats.afterWrites.hits - r.stats.atStart.hits).toBeGreaterThanOrEqual(r.steps.length);
    });

    it('passes every other query through to Prisma, with no cache traffic', () => {
      expect(r.passed.map((p: any) => p.query)).toEqual(['findUnique with select', 'findUnique by name', 'findMany', 'count', 'memories', 'own table']);
      for (const p of r.passed) expect(p.got, p.query).toEqual(p.want);
      expect(r.passed.find((p: any) => p.query === 'own table').got).toHaveLength(2);
      expect(r.passed.find((p: any) => p.query === 'memories').got).toEqual([0, 1, 2].map((i) => ({ content: `memory ${i}`, importance: i })));
      expect(r.stats.afterPassThrough).toEqual(r.stats.afterWrites);
    });

    it("returns the bot's own personality columns too, as Prisma does", () => {
      // The bot's schema adds avatarUrl and ownerId to Personality; its typed
      // findUnique promises them.
      for (const s of r.steps.filter((x: any) => x.want)) {
        expect(Object.keys(s.got).sort(), s.step).toEqual(Object.keys(s.want).sort());
        expect(s.got, s.step).toEqual(s.want);
      }
    });
  });

  describe('reads through the sidecar (memory-sync start from the tarball)', () => {
    let sc: SidecarProcess;
    let r: any;
    beforeAll(async () => {
      const proc = spawn(process.execPath, [bin, 'start'], {
        cwd: bot,
        env: botEnv({ DATABASE_URL: db.url, MEMORY_SYNC_PORT: '0', MEMORY_SYNC_SUMMARY_INTERVAL_MS: '0' }),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      sc = new SidecarProcess(proc);
      sc.url = (await sc.waitForMsg('listening')).url as string;
      await sc.waitForMsg('ready');
      r = await botScript('src/sidecar.ts', { SIDECAR_URL: sc.url });
    });
    afterAll(async () => {
      if (sc) expect(await sc.stop()).toBe(0);
    });

    it.each(['sidecar', 'localCache', 'extension'])('%s: after sync(), every read shows the write before it', (run) => {
      const { reads, deleted } = r.runs[run];
      expect(reads).toHaveLength(r.writes + 1);
      for (const read of reads) expect(read.got, `write ${read.write}`).toEqual(read.want);
      expect(deleted).toBeNull();
    });

    it('the local cache served repeated reads in process', () => {
      expect(r.localCacheHits).toBeGreaterThanOrEqual(r.writes);
    });
  });
});
