import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemorySync, type MemorySync } from '../../src/client/memory-sync.js';
import { memorySyncExtension } from '../../src/client/prisma-extension.js';
import { createSidecarClient, type SidecarClient } from '../../src/client/sidecar-client.js';
import type { Declaration } from '../../src/schema/declaration.js';
import { connect, type TestDb } from '../helpers/db.js';
import { adoptBot, BOT_CONFIG, botDatabase, botPrisma, seedBot, type BotPrisma, type BotWorld } from '../helpers/bot.js';
import { CHANNEL, CHARACTER, fuzz, type Reader } from '../helpers/bot-fuzz.js';
import { killLeftovers, spawnSidecar, type SidecarProcess } from '../sidecar/helpers.js';

/*
 * Issue 15's proof: a seeded fuzz of plain-SQL writes to every table of every
 * declared include tree (updates that leave updated_at alone, foreign-key
 * changes, shared rows, link rows, deletes, multi-row statements, rolled-back
 * transactions), and after each round, every root read through every path —
 * the library (its own SQL), the library behind the Prisma extension (the
 * bot's Prisma loads), the sidecar over HTTP, and the remote client with its
 * local cache — compared with what Prisma reads fresh from the database.
 * The count of stale reads must be 0.
 */

const SEED = Number(process.env.FUZZ_SEED ?? 1512);
const ROUNDS = Number(process.env.FUZZ_ROUNDS ?? 30);
let db: TestDb;
let pool: pg.Pool;
let writer: pg.Client;
let prisma: BotPrisma;
let world: BotWorld;
let lib: MemorySync<Declaration>;
let viaPrisma: MemorySync<Declaration>;
let xprisma: BotPrisma;
let sc: SidecarProcess;
let remote: SidecarClient;
let remoteCached: SidecarClient;

beforeAll(async () => {
  db = await botDatabase('ms_fuzz');
  await adoptBot(db);
  pool = new pg.Pool({ connectionString: db.url, max: 4 });
  writer = await connect(db.url);
  world = await seedBot(writer, SEED);
  prisma = await botPrisma(pool);
  const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  lib = createMemorySync<Declaration>({ databaseUrl: db.url, config: BOT_CONFIG, summaryIntervalMs: 0, logger });
  viaPrisma = createMemorySync<Declaration>({ databaseUrl: db.url, config: BOT_CONFIG, summaryIntervalMs: 0, logger });
  await Promise.all([lib.start(), viaPrisma.start()]);
  xprisma = (await botPrisma(pool)).$extends(memorySyncExtension(viaPrisma));
  sc = await spawnSidecar({ DATABASE_URL: db.url, MEMORY_SYNC_CONFIG: BOT_CONFIG });
  remote = createSidecarClient({ url: sc.url });
  remoteCached = createSidecarClient({ url: sc.url, localCache: { max: 1000 } });
  await remoteCached.ready();
}, 120_000);

afterAll(async () => {
  await Promise.all([remote?.close(), remoteCached?.close(), lib?.close(), viaPrisma?.close()]);
  expect(await sc?.stop()).toBe(0);
  await killLeftovers();
  await prisma?.$disconnect();
  await writer?.end();
  await pool?.end();
  await db?.drop();
});

const readers = (): Reader[] => [
  { name: 'library', character: (w) => lib.entity('character').get(w), channel: (w) => lib.entity('channelSetting').get(w) },
  {
    name: 'Prisma extension',
    // citext: Prisma's own findUnique is case-insensitive on slug too.
    character: (w) => xprisma.character.findUnique({ where: w, ...CHARACTER }),
    channel: (w) => xprisma.channelSetting.findUnique({ where: w, ...CHANNEL }),
  },
  { name: 'sidecar', character: (w) => remote.entity('character').get(w), channel: (w) => remote.entity('channelSetting').get(w) },
  { name: 'remote local cache', character: (w) => remoteCached.entity('character').get(w), channel: (w) => remoteCached.entity('channelSetting').get(w) },
];

describe('the test bot under a seeded fuzz of plain-SQL writes', () => {
  it(`0 stale entity reads after sync() through every path (seed ${SEED}, ${ROUNDS} rounds)`, { timeout: 300_000 }, async () => {
    const hitsBefore = lib.stats().hits;
    const { stale, reads } = await fuzz({
      seed: SEED,
      rounds: ROUNDS,
      world,
      prisma,
      writer,
      readers: readers(),
      sync: () => Promise.all([lib.sync(), viaPrisma.sync(), remoteCached.sync(), remote.sync()]),
    });
    expect(stale.slice(0, 3)).toEqual([]);
    expect(stale).toHaveLength(0);
    expect(reads).toBeGreaterThan(ROUNDS * 40);
    // Not a vacuous pass: the caches served between the writes.
    expect(lib.stats().hits - hitsBefore).toBeGreaterThan(ROUNDS * 10);
    expect(remoteCached.localCache!.stats().entities.character!.hits).toBeGreaterThan(ROUNDS * 5);
  });
});
