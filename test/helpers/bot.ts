import { spawnSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { adoptDeclaration, type AdoptDeclarationResult } from '../../src/capture/adopt.js';
import { migrate } from '../../src/migrations/migrate.js';
import { loadDeclarationFile, type LoadedDeclaration } from '../../src/schema/load.js';
import { createDatabase, ROOT, type TestDb } from './db.js';
import { random } from './random.js';

/*
 * The test bot (test/fixtures/bot): a schema of its own, its own migrations
 * (with triggers of its own on cache_invalidation) and a declaration.
 */

export const BOT_DIR = join(ROOT, 'test', 'fixtures', 'bot');
export const BOT_SCHEMA = join(BOT_DIR, 'schema.prisma');
export const BOT_MIGRATIONS = join(BOT_DIR, 'migrations');
export const BOT_CONFIG = join(BOT_DIR, 'memory-sync.config.json');
export const DIM = 384;

export const loadBotDeclaration = (): Promise<LoadedDeclaration> => loadDeclarationFile(BOT_CONFIG);

/** A database made by the bot's own migrations (its `_prisma_migrations` holds its rows). */
export async function botDatabase(prefix = 'ms_bot'): Promise<TestDb> {
  const db = await createDatabase(prefix);
  await migrate({ databaseUrl: db.url, migrationsDir: BOT_MIGRATIONS, schemaPath: BOT_SCHEMA });
  return db;
}

/** Adopts a bot database with the declaration; the migration goes into a scratch copy of the bot's folder. */
export async function adoptBot(db: TestDb): Promise<AdoptDeclarationResult & { migrationDir: string }> {
  const migrationDir = mkdtempSync(join(tmpdir(), 'ms-bot-migrations-'));
  cpSync(BOT_MIGRATIONS, migrationDir, { recursive: true });
  const result = await adoptDeclaration({ databaseUrl: db.url, declaration: await loadBotDeclaration(), migrationDir });
  return { ...result, migrationDir };
}

/**
 * The bot's Prisma client, generated (once per schema version) into
 * test/fixtures/bot/generated with the same offline trick as scripts/generate.mjs.
 */
export async function botPrismaModule(): Promise<{ PrismaClient: new (options: { adapter: unknown }) => BotPrisma }> {
  const out = join(BOT_DIR, 'generated');
  const stamp = join(out, '.schema-sha');
  const sha = createHash('sha256').update(readFileSync(BOT_SCHEMA)).digest('hex');
  if (!existsSync(stamp) || readFileSync(stamp, 'utf8') !== sha) {
    rmSync(out, { recursive: true, force: true });
    const require = createRequire(import.meta.url);
    const cli = join(dirname(require.resolve('prisma/package.json')), 'build', 'index.js');
    const run = spawnSync(process.execPath, [cli, 'generate', '--schema', BOT_SCHEMA], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...process.env, PRISMA_SCHEMA_ENGINE_BINARY: process.execPath, CHECKPOINT_DISABLE: '1', PRISMA_HIDE_UPDATE_MESSAGE: '1' },
    });
    if (run.status !== 0) throw new Error(`prisma generate failed:\n${run.stdout}\n${run.stderr}`);
    writeFileSync(stamp, sha);
  }
  return (await import(pathToFileURL(join(out, 'client.ts')).href)) as { PrismaClient: new (options: { adapter: unknown }) => BotPrisma };
}

/** The parts of the bot's generated client the tests call, loosely typed (it is generated at test time). */
export type BotPrisma = Record<string, any> & { $disconnect(): Promise<void>; $extends(e: unknown): any };

export async function botPrisma(pool: pg.Pool): Promise<BotPrisma> {
  const { PrismaClient } = await botPrismaModule();
  const { PrismaPg } = await import('@prisma/adapter-pg');
  return new PrismaClient({ adapter: new PrismaPg(pool) });
}

/** Deterministic pseudo-random numbers, so a failing fuzz run reproduces from its seed. */
export function rng(seed: number): { next(): number; int(n: number): number; pick<T>(xs: readonly T[]): T; chance(p: number): boolean } {
  const next = random(seed);
  return { next, int: (n) => Math.floor(next() * n), pick: (xs) => xs[Math.floor(next() * xs.length)]!, chance: (p) => next() < p };
}

export function vector(r: { next(): number }, dim = DIM): string {
  return `[${Array.from({ length: dim }, () => (r.next() * 2 - 1).toFixed(6)).join(',')}]`;
}

export interface BotWorld {
  owners: string[];
  prompts: string[];
  characters: string[];
  configs: string[];
  personas: string[];
  channels: string[];
  /** Characters the fuzz deleted. */
  gone: string[];
}

/** Seeds a small bot world by plain SQL (ids set by the application, as the bot does). */
export async function seedBot(c: pg.ClientBase, seed = 1, sizes = { characters: 12, configs: 3, personas: 3, memories: 60 }): Promise<BotWorld> {
  const r = rng(seed);
  const w: BotWorld = { owners: [], prompts: [], characters: [], configs: [], personas: [], channels: ['c100', 'c200', 'c300'], gone: [] };
  for (let i = 0; i < 3; i++) {
    const id = randomUUID();
    w.owners.push(id);
    await c.query(`INSERT INTO owners (id, handle, created_at) VALUES ($1, $2, now())`, [id, `owner-${seed}-${i}`]);
  }
  for (let i = 0; i < 3; i++) {
    const id = randomUUID();
    w.prompts.push(id);
    await c.query(`INSERT INTO system_prompts (id, title, body) VALUES ($1, $2, $3)`, [id, `Prompt ${i}`, `You are prompt ${i}.`]);
  }
  for (let i = 0; i < sizes.configs; i++) {
    const id = randomUUID();
    w.configs.push(id);
    await c.query(`INSERT INTO model_configs (id, label, provider, params, max_tokens, tokens_budget, price) VALUES ($1, $2, 'openrouter', $3, $4, $5, $6)`, [
      id,
      `Config ${i}`,
      JSON.stringify({ temperature: 0.5 + i / 10 }),
      1024 * (i + 1),
      String(9007199254740993n + BigInt(i)),
      (1.25 + i).toFixed(4),
    ]);
  }
  for (let i = 0; i < sizes.characters; i++) {
    const id = randomUUID();
    w.characters.push(id);
    await c.query(
      `INSERT INTO characters (id, slug, display_name, owner_id, prompt_id, traits, age_years, avatar, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() - make_interval(days => $9), now())`,
      [id, `Char-${seed}-${i}`, i % 3 ? `Character ${i}` : null, r.pick(w.owners), i % 4 ? r.pick(w.prompts) : null, JSON.stringify({ i, tags: ['a', 'b'] }), i % 5 ? 20 + i : null, Buffer.from([i, 1, 2]), i],
    );
    // Most share a config (the link table); some have none.
    if (i % 5) await c.query(`INSERT INTO character_config_links (character_id, config_id, updated_at) VALUES ($1, $2, now())`, [id, w.configs[i % sizes.configs]]);
    for (let n = 0; n < i % 3; n++) await c.query(`INSERT INTO character_nicknames (id, name, character_id) VALUES ($1, $2, $3)`, [randomUUID(), `nick ${i}.${n}`, id]);
  }
  for (let i = 0; i < sizes.personas; i++) {
    const id = randomUUID();
    w.personas.push(id);
    await c.query(`INSERT INTO personas (id, name) VALUES ($1, $2)`, [id, `Persona ${i}`]);
  }
  for (let i = 0; i < sizes.memories; i++) {
    await c.query(
      `INSERT INTO memory_rows (id, persona_id, character_id, channel_id, body, embedding, visibility, is_pinned, created_at)
       VALUES ($1, $2, $3, $4, $5, $6::vector, $7, $8, now() - make_interval(mins => $9))`,
      [randomUUID(), r.pick(w.personas), r.pick(w.characters), r.chance(0.2) ? null : r.pick(w.channels), `memory ${seed}.${i}`, r.chance(0.05) ? null : vector(r), r.chance(0.1) ? 'deleted' : 'normal', r.chance(0.1), i],
    );
  }
  for (const [i, ch] of w.channels.entries()) {
    await c.query(`INSERT INTO channel_settings (id, channel_id, active_character_id) VALUES ($1, $2, $3)`, [randomUUID(), ch, w.characters[i]]);
  }
  return w;
}

export interface BotSearch {
  personaId: string;
  /** A vector literal. */
  q: string;
  limit: number;
  characterId?: string;
  /** null: IS NULL. */
  channelId?: string | null;
  minSimilarity?: number;
}

/**
 * The truth for the bot's memories collection, by hand: exact cosine over
 * every live row of the partition (`+ 0` keeps any index out), with the
 * declared `where` (visibility 'normal') and NULL embeddings left out.
 */
export async function sqlTopK(c: pg.ClientBase | pg.Pool, s: BotSearch): Promise<{ id: string; similarity: number }[]> {
  const where = ['persona_id = $1', `visibility = 'normal'`, 'embedding IS NOT NULL'];
  const values: unknown[] = [s.personaId, s.q, s.limit];
  if (s.characterId !== undefined) where.push(`character_id = $${values.push(s.characterId)}`);
  if (s.channelId === null) where.push('channel_id IS NULL');
  else if (s.channelId !== undefined) where.push(`channel_id = $${values.push(s.channelId)}`);
  if (s.minSimilarity !== undefined) where.push(`1 - (embedding <=> $2::vector) >= $${values.push(s.minSimilarity)}`);
  const { rows } = await c.query<{ id: string; similarity: number }>(
    `SELECT id, 1 - (embedding <=> $2::vector) AS similarity FROM memory_rows WHERE ${where.join(' AND ')} ORDER BY (embedding <=> $2::vector) + 0, id LIMIT $3`,
    values,
  );
  return rows.map((r) => ({ id: r.id, similarity: Number(r.similarity) }));
}
