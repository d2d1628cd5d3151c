import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { expect } from 'vitest';
import type { ChangeInfo } from '../../src/cache/core.js';
import type { MemorySync } from '../../src/client/memory-sync.js';
import type { Declaration } from '../../src/schema/declaration.js';
import { rng, sqlTopK, vector, type BotPrisma, type BotWorld } from './bot.js';

/*
 * The bot fuzz (test/bot/fuzz.test.ts, test/bot/replication.test.ts): random
 * plain-SQL writes to every table of every declared include tree, and what
 * Prisma reads fresh for every root, to compare each cached path with.
 */

export const CHARACTER = { include: { owner: true, prompt: true, configLink: { include: { config: true } }, nicknames: true }, omit: { avatar: true } } as const;
export const CHANNEL = { include: { activeCharacter: true } } as const;

/** One comparable text for a value, whatever path it came by: ordered lists, types spelled out. */
export function canonical(v: unknown): string {
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

export type Write = { what: string; run: (c: pg.Client) => Promise<unknown> };

/** One random write by plain SQL, as any writer (a psql session, a migration, another service) makes it. */
export function randomWrite(r: ReturnType<typeof rng>, w: BotWorld): Write {
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
export async function truth(w: BotWorld, prisma: BotPrisma, writer: pg.Client): Promise<{ key: string; read: (x: Reader) => Promise<unknown>; value: string }[]> {
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

export interface Reader {
  name: string;
  character(where: Record<string, string>): Promise<unknown>;
  channel(where: Record<string, string>): Promise<unknown>;
}


/** Rounds of warm → write → sync → compare; returns the stale reads (each described) and the read count. */
export async function fuzz(o: { seed: number; rounds: number; world: BotWorld; prisma: BotPrisma; writer: pg.Client; readers: Reader[]; sync: () => Promise<unknown> }): Promise<{ stale: string[]; reads: number }> {
  const r = rng(o.seed);
  const w = o.world;
  const stale: string[] = [];
  let reads = 0;
  for (let round = 0; round < o.rounds; round++) {
    // Warm every cache (the reads that must be evicted later), then write.
    for (const t of await truth(w, o.prisma, o.writer)) for (const x of o.readers) await t.read(x);
    const done: string[] = [];
    for (let i = 0; i < 1 + r.int(4); i++) {
      const write = randomWrite(r, w);
      await write.run(o.writer);
      done.push(write.what);
    }
    await o.sync();
    for (const t of await truth(w, o.prisma, o.writer)) {
      for (const x of o.readers) {
        reads++;
        const got = canonical(await t.read(x));
        if (got !== t.value) stale.push(`round ${round} (${done.join('; ')}): ${x.name} ${t.key}\n  got  ${got}\n  want ${t.value}`);
      }
    }
  }
  return { stale, reads };
}

/**
 * Collection steps on the bot's memories: every kind of change a writer makes
 * (insert, embedding change, a move to another partition, soft delete and
 * restore, NULL channel and embedding, delete, a bulk insert too large to
 * name, a bulk delete, a TRUNCATE), and after each, every search through the
 * user's call compared with exact SQL. Returns how many were answered from
 * memory and the flushes they cost.
 */
export async function collectionSteps(
  lib: MemorySync<Declaration>,
  writer: pg.Client,
  pool: pg.Pool,
  world: BotWorld,
  seed: number,
): Promise<{ served: number; searches: number; flushes: number; steps: Map<string, ChangeInfo[]> }> {
  const r = rng(seed);
  const persona = world.personas[0]!;
  const other = world.personas[1]!;
  // Each step's Memory events, for the caller to check their scope.
  const steps = new Map<string, ChangeInfo[]>();
  let events: ChangeInfo[] = [];
  const onEvent = (i: ChangeInfo) => {
    if (i.event.model === 'Memory') events.push(i);
  };
  lib.on('invalidation', onEvent);
  let searches = 0;
  const queries = Array.from({ length: 4 }, () => vector(r));
  const flushes = lib.stats().flushes;

  let served = 0;
  const check = async (step: string) => {
    await lib.sync();
    steps.set(step, events);
    events = [];
    for (const p of [persona, other]) {
      lib.core.warm('memories', [p]);
      await lib.core.settled('memories', [p]);
      for (const [i, q] of queries.entries()) {
        const where = i === 1 ? { channelId: world.channels[0] } : i === 2 ? { channelId: null } : i === 3 ? { characterId: world.characters[1] } : undefined;
        const before = lib.stats().hotSearches;
        const got = await lib.collection('memories').search({ partition: { personaId: p }, embedding: JSON.parse(q) as number[], limit: 10, ...(where ? { where } : {}) });
        const hot = lib.stats().hotSearches - before;
        served += hot;
      searches++;
        const want = await sqlTopK(pool, { personaId: p, q, limit: 10, ...(where ?? {}) } as Parameters<typeof sqlTopK>[1]);
        if (JSON.stringify(got.map((h) => h.id)) !== JSON.stringify(want.map((h) => h.id))) {
          const ids = [...new Set([...got.map((h) => h.id), ...want.map((h) => h.id)])];
          const info = await pool.query(`SELECT id, persona_id = $2 AS here, visibility, embedding IS NULL AS nul, 1 - (embedding <=> $3::vector) AS sim FROM memory_rows WHERE id = ANY($1::uuid[])`, [ids, p, q]);
          console.error('search mismatch (hot, sql, rows):', step, i, JSON.stringify(got.map((h) => [h.id.slice(0, 8), h.similarity])), JSON.stringify(want.map((h) => [h.id.slice(0, 8), h.similarity])), JSON.stringify(info.rows.map((x) => [x.id.slice(0, 8), x.here, x.visibility, x.nul, x.sim])));
        }
        expect(got.map((h) => h.id), `${step}: persona ${p}, query ${i}, ${hot ? 'hot' : 'pgvector'} ${JSON.stringify(lib.stats().collections)}`).toEqual(want.map((h) => h.id));
        for (const [k, h] of got.entries()) expect(h.similarity).toBeCloseTo(want[k]!.similarity, 5);
      }
    }
  };
  const insert = (p: string, channel: string | null, visibility = 'normal') =>
    writer.query(
      `INSERT INTO memory_rows (id, persona_id, character_id, channel_id, body, embedding, visibility, created_at) VALUES ($1, $2, $3, $4, 'new', $5::vector, $6, now()) RETURNING id`,
      [randomUUID(), p, world.characters[1], channel, vector(r), visibility],
    );

  await check('start');
  const id = (await insert(persona, world.channels[0]!)).rows[0]!.id as string;
  await check('insert');
  await writer.query(`UPDATE memory_rows SET embedding = $2::vector WHERE id = $1`, [id, queries[0]]); // now the best match
  await check('embedding changed');
  await writer.query(`UPDATE memory_rows SET persona_id = $2 WHERE id = $1`, [id, other]);
  await check('moved to another partition');
  await writer.query(`UPDATE memory_rows SET visibility = 'deleted' WHERE id = $1`, [id]);
  await check('soft delete (the declared where)');
  await writer.query(`UPDATE memory_rows SET visibility = 'normal', channel_id = NULL WHERE id = $1`, [id]);
  await check('restored, channel now NULL');
  await writer.query(`UPDATE memory_rows SET embedding = NULL WHERE id = $1`, [id]);
  await check('embedding NULL');
  await writer.query(`DELETE FROM memory_rows WHERE id = $1`, [id]);
  await check('deleted');

  // Too many rows to name (past the events' byte budget: 110,000 rows).
  await writer.query(
    `INSERT INTO memory_rows (id, persona_id, character_id, channel_id, body, embedding, visibility, created_at)
     SELECT gen_random_uuid(), $1, $2, 'bulk', 'bulk ' || g, NULL, 'normal', now() FROM generate_series(1, 110000) g`,
    [persona, world.characters[2]],
  );
  await writer.query(`INSERT INTO memory_rows (id, persona_id, character_id, channel_id, body, embedding, visibility, created_at) SELECT gen_random_uuid(), $1, $2, 'bulk', 'v', $3::vector, 'normal', now()`, [
    persona,
    world.characters[2],
    queries[1],
  ]);
  await check('bulk insert');
  await writer.query(`DELETE FROM memory_rows WHERE channel_id = 'bulk'`);
  await check('bulk delete');
  await writer.query('TRUNCATE memory_rows');
  await check('truncate');
  lib.off('invalidation', onEvent);
  return { served, searches, flushes: lib.stats().flushes - flushes, steps };
}
