import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemorySync, type MemorySync } from '../../src/client/memory-sync.js';
import type { Declaration } from '../../src/schema/declaration.js';
import { connect, type TestDb } from '../helpers/db.js';
import { adoptBot, BOT_CONFIG, botDatabase, seedBot, type BotWorld } from '../helpers/bot.js';
import { collectionSteps } from '../helpers/bot-fuzz.js';

/*
 * The bot's memories collection with the generated triggers: after every
 * kind of write, every search through collection().search() equals exact
 * SQL, answered from memory where the partition is hot.
 */

const SEED = Number(process.env.FUZZ_SEED ?? 4242);
let db: TestDb;
let pool: pg.Pool;
let writer: pg.Client;
let world: BotWorld;
let lib: MemorySync<Declaration>;

beforeAll(async () => {
  db = await botDatabase('ms_bot_col');
  await adoptBot(db);
  pool = new pg.Pool({ connectionString: db.url, max: 4 });
  writer = await connect(db.url);
  world = await seedBot(writer, SEED);
  lib = createMemorySync<Declaration>({ databaseUrl: db.url, config: BOT_CONFIG, summaryIntervalMs: 0, logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }) });
  await lib.start();
}, 120_000);

afterAll(async () => {
  await lib?.close();
  await writer?.end();
  await pool?.end();
  await db?.drop();
});

describe('the bot memories collection (triggers)', () => {
  it('hot answers equal exact SQL through every kind of write; a bulk statement names partitions, a TRUNCATE the model', { timeout: 120_000 }, async () => {
    const { served, searches, flushes, steps } = await collectionSteps(lib, writer, pool, world, SEED);
    expect(served).toBeGreaterThan(searches * 0.8);
    // The triggers have the old rows: a bulk insert and a bulk delete both name the partitions.
    expect(steps.get('bulk insert')!.map((e) => e.event.scope)).toContain('partitions');
    expect(steps.get('bulk delete')!.map((e) => e.event.scope)).toContain('partitions');
    expect(steps.get('truncate')!.map((e) => `${e.event.op}.${e.event.scope}`)).toEqual(['TRUNCATE.model']);
    expect(flushes).toBe(1); // the TRUNCATE only
  });
});
