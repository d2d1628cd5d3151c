import { randomUUID } from 'node:crypto';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemorySync, type MemorySync } from '../../src/client/memory-sync.js';
import { memorySyncExtension } from '../../src/client/prisma-extension.js';
import { createSidecarClient, type SidecarClient } from '../../src/client/sidecar-client.js';
import type { Declaration } from '../../src/schema/declaration.js';
import { connect, type TestDb } from '../helpers/db.js';
import { adoptBot, BOT_CONFIG, botDatabase, botPrisma, rng, seedBot, type BotPrisma, type BotWorld } from '../helpers/bot.js';
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
const CHARACTER = { include: { owner: true, prompt: true, configLink: { include: { config: true } }, nicknames: true }, omit: { avatar: true } } as const;
const CHANNEL = { include: { activeCharacter: true } } as const;

/** One comparable text for a value, whatever path it came by: ordered lists, types spelled out. */
function canonical(v: unknown): string {
  const norm = (x: unknown): unknown => {
    if (x === null || x === undefined) return null;
    if (typeof x === 'bigint') return `${x}n`;
    if (x instanceof Date) return `date:${x.toISOString()}`;
    if (x instanceof Uint8Array) return `bytes:${Buffer.from(x).toString('hex')}`;
    if (typeof x === 'object' && (x as { constructor?: { name?: string } }).constructor?.name === 'Decimal') return `decimal:${String(x)}`;
    if (Array.isArray(x)) {
      const items = x.map(norm);
      // To-many relations: Prisma promises no order; memory-sync orders by id.
      if (items.every((i) => i && typeof i === 'object' && 'id' in (i as object))) items.sort((a, b) => String((a as { id: unknown }).id).localeCompare(String((b as { id: unknown }).id)));
      return items;
    }
    if (typeof x === 'object') return Object.fromEntries(Object.entries(x).sort(([a], [b]) => a.localeCompare(b)).map(([k, y]) => [k, norm(y)]));
    return x;
  };
  return JSON.stringify(norm(v));
}

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

type Write = { what: string; run: (c: pg.Client) => Promise<unknown> };

/** One random write by plain SQL, as any writer (a psql session, a migration, another service) makes it. */
function randomWrite(r: ReturnType<typeof rng>, w: BotWorld): Write {
  const ch = () => r.pick(w.characters);
  const cfg = () => r.pick(w.configs);
  const writes: Write[] = [
    // The bot's own trigger only sees these when updated_at moves; memory-sync sees every commit.
    { what: 'character display name, updated_at untouched', run: (c) => c.query(`UPDATE characters SET display_name = $2 WHERE id = $1`, [ch(), `n${r.int(1e6)}`]) },
    { what: 'character slug (a lookup key)', run: (c) => c.query(`UPDATE characters SET slug = $2 WHERE id = $1`, [ch(), `Slug-${r.int(1e9)}`]) },
    { what: 'character prompt (foreign key change)', run: (c) => c.query(`UPDATE characters SET prompt_id = $2 WHERE id = $1`, [ch(), r.chance(0.3) ? null : r.pick(w.prompts)]) },
    { what: 'character owner (foreign key change)', run: (c) => c.query(`UPDATE characters SET owner_id = $2 WHERE id = $1`, [ch(), r.pick(w.owners)]) },
    { what: 'character traits (JSON)', run: (c) => c.query(`UPDATE characters SET traits = $2, updated_at = now() WHERE id = $1`, [ch(), JSON.stringify({ n: r.int(100) })]) },
    { what: 'character avatar (omitted by one entity, returned by another)', run: (c) => c.query(`UPDATE characters SET avatar = $2 WHERE id = $1`, [ch(), Buffer.from([r.int(256)])]) },
    { what: 'shared prompt body', run: (c) => c.query(`UPDATE system_prompts SET body = $2 WHERE id = $1`, [r.pick(w.prompts), `body ${r.int(1e6)}`]) },
    { what: 'owner handle', run: (c) => c.query(`UPDATE owners SET handle = $2 WHERE id = $1`, [r.pick(w.owners), `h${r.int(1e9)}`]) },
    { what: 'shared config (evicts every character linked to it)', run: (c) => c.query(`UPDATE model_configs SET label = $2, params = $3 WHERE id = $1`, [cfg(), `L${r.int(1e6)}`, JSON.stringify({ t: r.int(10) })]) },
    { what: 'config budget (BigInt) and price (Decimal)', run: (c) => c.query(`UPDATE model_configs SET tokens_budget = $2, price = $3 WHERE id = $1`, [cfg(), String(9007199254740993n + BigInt(r.int(1000))), (r.next() * 100).toFixed(4)]) },
    {
      what: 'link moved to another config (foreign key change on the link table)',
      run: (c) => c.query(`UPDATE character_config_links SET config_id = $2 WHERE character_id = $1`, [ch(), cfg()]),
    },
    { what: 'link deleted', run: (c) => c.query(`DELETE FROM character_config_links WHERE character_id = $1`, [ch()]) },
    {
      what: 'link inserted',
      run: (c) => c.query(`INSERT INTO character_config_links (character_id, config_id, updated_at) VALUES ($1, $2, now()) ON CONFLICT (character_id) DO UPDATE SET config_id = EXCLUDED.config_id`, [ch(), cfg()]),
    },
    { what: 'nickname added', run: (c) => c.query(`INSERT INTO character_nicknames (id, name, character_id) VALUES ($1, $2, $3)`, [randomUUID(), `nick${r.int(1e6)}`, ch()]) },
    {
      what: 'nickname moved to another character',
      run: (c) => c.query(`UPDATE character_nicknames SET character_id = $1 WHERE id = (SELECT id FROM character_nicknames ORDER BY random() LIMIT 1)`, [ch()]),
    },
    { what: 'nicknames of one character renamed (multi-row)', run: (c) => c.query(`UPDATE character_nicknames SET name = name || '!' WHERE character_id = $1`, [ch()]) },
    { what: 'a nickname deleted', run: (c) => c.query(`DELETE FROM character_nicknames WHERE id = (SELECT id FROM character_nicknames ORDER BY random() LIMIT 1)`) },
    { what: 'channel activates another character', run: (c) => c.query(`UPDATE channel_settings SET active_character_id = $2, auto_reply = $3 WHERE channel_id = $1`, [r.pick(w.channels), ch(), r.chance(0.5)]) },
    {
      what: 'a character deleted (cascades to its link, nicknames, memories; channels set null)',
      run: async (c) => {
        if (w.characters.length < 6) return;
        const id = w.characters.splice(r.int(w.characters.length), 1)[0]!;
        w.gone.push(id);
        await c.query(`DELETE FROM characters WHERE id = $1`, [id]);
      },
    },
    {
      what: 'a character created',
      run: async (c) => {
        const id = randomUUID();
        await c.query(`INSERT INTO characters (id, slug, owner_id, created_at, updated_at) VALUES ($1, $2, $3, now(), now())`, [id, `New-${r.int(1e9)}`, r.pick(w.owners)]);
        w.characters.push(id);
      },
    },
    {
      what: 'a shared config deleted (cascades to links) and made again',
      run: async (c) => {
        const id = cfg();
        await c.query('BEGIN');
        await c.query(`DELETE FROM model_configs WHERE id = $1`, [id]);
        await c.query(`INSERT INTO model_configs (id, label, provider, max_tokens) VALUES ($1, 'again', 'x', 1)`, [id]);
        await c.query('COMMIT');
      },
    },
    {
      what: 'a transaction of several writes, committed',
      run: async (c) => {
        await c.query('BEGIN');
        await c.query(`UPDATE system_prompts SET title = $2 WHERE id = $1`, [r.pick(w.prompts), `T${r.int(1e6)}`]);
        await c.query(`UPDATE characters SET age_years = $2 WHERE id = $1`, [ch(), r.int(90)]);
        await c.query('COMMIT');
      },
    },
    {
      what: 'a transaction rolled back',
      run: async (c) => {
        await c.query('BEGIN');
        await c.query(`UPDATE owners SET handle = 'never' WHERE id = $1`, [r.pick(w.owners)]);
        await c.query('ROLLBACK');
      },
    },
    { what: 'every character touched at once (bulk statement)', run: (c) => c.query(`UPDATE characters SET is_public = NOT is_public`) },
  ];
  return r.pick(writes);
}

/** Every root the readers are asked for this round: by id (live and deleted), by slug, channel settings by channel. */
async function truth(w: BotWorld): Promise<{ key: string; read: (x: Reader) => Promise<unknown>; value: string }[]> {
  const out: { key: string; read: (x: Reader) => Promise<unknown>; value: string }[] = [];
  for (const id of [...w.characters, ...w.gone.slice(-3)]) {
    const v = await prisma.character.findUnique({ where: { id }, ...CHARACTER });
    out.push({ key: `character ${id}`, read: (x) => x.character({ id }), value: canonical(v) });
  }
  const slugs = (await writer.query<{ slug: string }>(`SELECT slug FROM characters ORDER BY id LIMIT 3`)).rows.map((x) => x.slug);
  for (const slug of [...slugs, 'no-such-slug']) {
    const v = await prisma.character.findUnique({ where: { slug }, ...CHARACTER });
    out.push({ key: `character slug ${slug}`, read: (x) => x.character({ slug: slug.toLowerCase() }), value: canonical(v) });
  }
  for (const channelId of w.channels) {
    const v = await prisma.channelSetting.findUnique({ where: { channelId }, ...CHANNEL });
    out.push({ key: `channel ${channelId}`, read: (x) => x.channel({ channelId }), value: canonical(v) });
  }
  return out;
}

interface Reader {
  name: string;
  character(where: Record<string, string>): Promise<unknown>;
  channel(where: Record<string, string>): Promise<unknown>;
}

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
    const r = rng(SEED);
    const w = world;
    const stale: string[] = [];
    const paths = readers();
    let reads = 0;
    const hitsBefore = lib.stats().hits;
    for (let round = 0; round < ROUNDS; round++) {
      // Warm every cache (the reads that must be evicted later), then write.
      for (const t of await truth(w)) for (const x of paths) await t.read(x);
      const done: string[] = [];
      for (let i = 0; i < 1 + r.int(4); i++) {
        const write = randomWrite(r, w);
        await write.run(writer);
        done.push(write.what);
      }
      await Promise.all([lib.sync(), viaPrisma.sync(), remoteCached.sync(), remote.sync()]);
      for (const t of await truth(w)) {
        for (const x of paths) {
          reads++;
          const got = canonical(await t.read(x));
          if (got !== t.value) stale.push(`round ${round} (${done.join('; ')}): ${x.name} ${t.key}\n  got  ${got}\n  want ${t.value}`);
        }
      }
    }
    expect(stale.slice(0, 3)).toEqual([]);
    expect(stale).toHaveLength(0);
    expect(reads).toBeGreaterThan(ROUNDS * 40);
    // Not a vacuous pass: the caches served between the writes.
    expect(lib.stats().hits - hitsBefore).toBeGreaterThan(ROUNDS * 10);
    expect(remoteCached.localCache!.stats().entities.character!.hits).toBeGreaterThan(ROUNDS * 5);
  });
});
