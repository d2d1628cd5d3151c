import { cpSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adoptDeclaration } from '../../src/capture/adopt.js';
import { createMemorySync, type MemorySync } from '../../src/client/memory-sync.js';
import { memorySyncExtension } from '../../src/client/prisma-extension.js';
import type { ChangeInfo } from '../../src/cache/core.js';
import { ConfigError } from '../../src/contract/errors.js';
import type { Declaration } from '../../src/schema/declaration.js';
import type { LoadedDeclaration } from '../../src/schema/load.js';
import { connect, type TestDb } from '../helpers/db.js';
import { BOT_CONFIG, BOT_DIR, BOT_MIGRATIONS, BOT_SCHEMA, botPrisma, rng, seedBot, sqlTopK, vector, type BotPrisma, type BotWorld } from '../helpers/bot.js';
import { CHANNEL, CHARACTER, collectionSteps, fuzz, type Reader } from '../helpers/bot-fuzz.js';
import { createReplicationDatabase, uniqueName } from '../sources/replication/helpers.js';

/*
 * The test bot with `source: "replication"`, on the private wal_level=logical
 * cluster: adopt swaps the triggers for a publication of key columns, and
 * the library reads a slot. The same fuzz as the trigger mode (0 stale reads),
 * then collections: hot answers equal exact SQL through every kind of change,
 * including a bulk insert too large to name row by row (partitions) and a
 * bulk delete (the whole model: the WAL does not say which partitions lost rows).
 */

const SEED = Number(process.env.FUZZ_SEED ?? 2718);
const ROUNDS = Number(process.env.FUZZ_ROUNDS_REPLICATION ?? 15);
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

const botJson = JSON.parse(readFileSync(BOT_CONFIG, 'utf8')) as Record<string, unknown>;
const declaration = { ...botJson, schema: BOT_SCHEMA, source: 'replication' } as Declaration;
const loaded: LoadedDeclaration = { declaration, source: 'bot declaration (replication)', baseDir: BOT_DIR };
const triggersLoaded: LoadedDeclaration = { declaration: { ...botJson, schema: BOT_SCHEMA } as Declaration, source: 'bot declaration', baseDir: BOT_DIR };

let db: TestDb;
let pool: pg.Pool;
let writer: pg.Client;
let prisma: BotPrisma;
let world: BotWorld;
const closers: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  db = await createReplicationDatabase('ms_bot_repl', { triggers: true, migrationsDir: BOT_MIGRATIONS, schemaPath: BOT_SCHEMA });
  pool = new pg.Pool({ connectionString: db.url, max: 4 });
  pool.on('connect', (c) => c.on('error', () => {}));
  writer = await connect(db.url);
  world = await seedBot(writer, SEED);
  prisma = await botPrisma(pool);
}, 120_000);

afterAll(async () => {
  for (const c of closers.splice(0).reverse()) await c().catch(() => {});
  await prisma?.$disconnect();
  await writer?.end();
  await pool?.end();
  await db?.drop();
});

const triggers = async () =>
  (await pool.query<{ t: string }>(`SELECT tgrelid::regclass::text || '.' || tgname AS t FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1`)).rows.map((r) => r.t);

function host(extra: Record<string, unknown> = {}): MemorySync<Declaration> {
  const h = createMemorySync<Declaration>({
    databaseUrl: db.url,
    config: declaration,
    replication: { slot: uniqueName('bot'), statusIntervalMs: 50 },
    listener: { retryMinMs: 20, retryMaxMs: 200 },
    summaryIntervalMs: 0,
    logger,
    ...extra,
  });
  closers.push(() => h.close());
  return h;
}

describe('adopt with source "replication"', () => {
  it('replaces the triggers with a publication of key columns, keeps the bot\'s own triggers, writes one migration; a second adopt changes nothing', { timeout: 60_000 }, async () => {
    const own = await triggers();
    expect(own.some((t) => t.includes('memory_sync'))).toBe(false);
    const dir = mkdtempSync(join(tmpdir(), 'ms-bot-repl-'));
    cpSync(BOT_MIGRATIONS, dir, { recursive: true });

    // First as the trigger mode would (an existing install), then switched to replication.
    const first = await adoptDeclaration({ databaseUrl: db.url, declaration: triggersLoaded, migrationDir: dir, now: new Date('2026-12-01T10:00:00Z') });
    expect(first.tables.length).toBeGreaterThan(3);
    expect((await triggers()).filter((t) => t.includes('memory_sync_')).length).toBe(first.tables.length * 4);

    const lines: string[] = [];
    const r = await adoptDeclaration({ databaseUrl: db.url, declaration: loaded, migrationDir: dir, now: new Date('2026-12-01T11:00:00Z'), log: (l) => lines.push(l) });
    expect(r.tables).toEqual([]);
    expect(await triggers()).toEqual(own); // ours gone, the bot's own (cache_invalidation) all there
    expect(r.published?.created).toBe(true);
    // Keys only: the embedding and the text never leave the server.
    const { rows } = await pool.query<{ t: string; cols: string[] }>(`SELECT tablename AS t, attnames::text[] AS cols FROM pg_publication_tables WHERE pubname = 'memory_sync' ORDER BY 1`);
    const published = Object.fromEntries(rows.map((x) => [x.t, x.cols]));
    expect(Object.keys(published)).toEqual(expect.arrayContaining(['characters', 'memory_rows', 'character_config_links', 'channel_settings']));
    expect(published.memory_rows).not.toContain('embedding');
    expect(published.memory_rows).not.toContain('body');
    expect(published.memory_rows).toEqual(expect.arrayContaining(['id', 'persona_id']));
    expect(published.characters).toEqual(expect.arrayContaining(['id', 'slug']));
    expect(lines.some((l) => /proved on .*characters/.test(l))).toBe(true);

    // The migration: triggers dropped, none created; recorded as applied.
    const written = readdirSync(dir).filter((d) => d.endsWith('_memory_sync_capture')).sort();
    expect(written).toHaveLength(2);
    const sql = readFileSync(join(dir, written[1]!, 'migration.sql'), 'utf8');
    expect(sql).toContain('DROP TRIGGER IF EXISTS memory_sync_insert ON');
    expect(sql).not.toMatch(/CREATE OR REPLACE TRIGGER/);
    expect(r.recorded).toBe(true);

    const again = await adoptDeclaration({ databaseUrl: db.url, declaration: loaded, migrationDir: dir });
    expect(again.migration).toBeNull();
    expect(again.published).toMatchObject({ created: false, altered: false });

    // The bot's own writes on every published table still work (UPDATE and DELETE need the replica identity).
    const ch = world.characters[0]!;
    await writer.query(`UPDATE characters SET display_name = 'after adopt' WHERE id = $1`, [ch]);
    await writer.query(`UPDATE character_config_links SET updated_at = now() WHERE character_id = $1`, [ch]);
    await writer.query(`DELETE FROM character_nicknames WHERE character_id = $1`, [ch]);
    await writer.query(`UPDATE memory_rows SET body = body || '.' WHERE character_id = $1`, [ch]);
  });
});

describe('the library on a replication slot', () => {
  let lib: MemorySync<Declaration>;
  let viaPrisma: MemorySync<Declaration>;
  let xprisma: BotPrisma;
  beforeAll(async () => {
    lib = host();
    viaPrisma = host();
    await Promise.all([lib.start(), viaPrisma.start()]);
    xprisma = (await botPrisma(pool)).$extends(memorySyncExtension(viaPrisma));
  }, 60_000);

  it('takes its source from the declaration; a LISTEN source is refused, since no trigger would notify it', async () => {
    expect(lib.stats().source).toBe('replication');
    const listen = createMemorySync<Declaration>({ databaseUrl: db.url, config: declaration, source: 'listen', summaryIntervalMs: 0, logger });
    closers.push(() => listen.close());
    const err = await listen.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/hears nothing.*captures by replication/);
  });

  it(`0 stale entity reads after sync() under the fuzz, library and Prisma extension (seed ${SEED}, ${ROUNDS} rounds)`, { timeout: 300_000 }, async () => {
    const readers: Reader[] = [
      { name: 'library', character: (w) => lib.entity('character').get(w), channel: (w) => lib.entity('channelSetting').get(w) },
      { name: 'Prisma extension', character: (w) => xprisma.character.findUnique({ where: w, ...CHARACTER }), channel: (w) => xprisma.channelSetting.findUnique({ where: w, ...CHANNEL }) },
    ];
    const hits = lib.stats().hits;
    const flushes = lib.stats().flushes;
    const { stale, reads } = await fuzz({ seed: SEED, rounds: ROUNDS, world, prisma, writer, readers, sync: () => Promise.all([lib.sync(), viaPrisma.sync()]) });
    expect(stale.slice(0, 3)).toEqual([]);
    expect(reads).toBeGreaterThan(ROUNDS * 20);
    expect(lib.stats().hits - hits).toBeGreaterThan(ROUNDS * 10);
    expect(lib.stats().flushes).toBe(flushes); // the slot kept every change: nothing flushed
  });

  it('hot answers equal exact SQL through inserts, moves, soft deletes, deletes, a bulk insert (partitions), a bulk delete and a TRUNCATE (whole model)', { timeout: 120_000 }, async () => {
    const { served, searches, flushes, steps } = await collectionSteps(lib, writer, pool, world, SEED + 1);
    expect(served).toBeGreaterThan(searches * 0.8); // not a vacuous pass: most answers came from memory
    // The bulk insert named its partitions; the bulk delete's old partitions are not in the WAL: the whole model.
    expect(steps.get('bulk insert')!.map((e) => e.event.scope)).toContain('partitions');
    expect(steps.get('bulk delete')!.map((e) => `${e.event.op}.${e.event.scope}`)).toContain('DELETE.model');
    expect(steps.get('truncate')!.map((e) => `${e.event.op}.${e.event.scope}`)).toEqual(['TRUNCATE.model']);
    expect(flushes).toBe(2); // the bulk delete and the TRUNCATE, nothing else
  });
});
