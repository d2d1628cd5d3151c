import { cpSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adoptDeclaration, migrationSql, uninstall } from '../../src/capture/adopt.js';
import { createMemorySync } from '../../src/client/memory-sync.js';
import { loadConfig } from '../../src/config.js';
import { NotMigratedError } from '../../src/contract/errors.js';
import { readCatalog, resolveAgainst } from '../../src/schema/catalog.js';
import type { Declaration } from '../../src/schema/declaration.js';
import { bindDeclaration, type LoadedDeclaration } from '../../src/schema/load.js';
import { maintenanceJobs } from '../../src/sidecar/maintenance.js';
import { SidecarMetrics } from '../../src/sidecar/metrics.js';
import { deleteExpired, enforceCap } from '../../src/store/retention.js';
import { connect, type TestDb } from '../helpers/db.js';
import { BOT_CONFIG, BOT_DIR, BOT_MIGRATIONS, BOT_SCHEMA, botDatabase, loadBotDeclaration, seedBot, type BotWorld } from '../helpers/bot.js';

/*
 * `memory-sync adopt` on the test bot: what it checks, proves, installs and
 * writes, what it leaves alone (the bot's own triggers, its rows), that a
 * second run changes nothing and uninstall undoes it; and the retention jobs,
 * which run only where declared and never touch protected rows.
 */

const silent = pino({ level: 'silent' });
let db: TestDb;
let c: pg.Client;
let listener: pg.Client;
let dir: string;
let world: BotWorld;
const heard: { channel: string; payload: string }[] = [];

const ownTriggers = async () =>
  (await c.query<{ t: string }>(`SELECT tgrelid::regclass::text || '.' || tgname AS t FROM pg_trigger WHERE NOT tgisinternal AND tgname NOT LIKE 'memory\\_sync\\_%' ORDER BY 1`)).rows.map((r) => r.t);
const ourTriggers = async () =>
  (await c.query<{ t: string }>(`SELECT tgrelid::regclass::text || '.' || tgname AS t FROM pg_trigger WHERE tgname LIKE 'memory\\_sync\\_%' ORDER BY 1`)).rows.map((r) => r.t);
const counts = async () => {
  const tables = ['owners', 'system_prompts', 'characters', 'model_configs', 'character_config_links', 'character_nicknames', 'personas', 'memory_rows', 'chat_lines', 'channel_settings'];
  const out: Record<string, number> = {};
  for (const t of tables) out[t] = (await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${t}`)).rows[0]!.n;
  return out;
};
/** Waits for a marker NOTIFY: notifications arrive in commit order, so all before it are in `heard`. */
async function settle(): Promise<void> {
  const token = `m${Date.now()}${Math.random()}`;
  const seen = new Promise<void>((resolve) => {
    const on = (n: pg.Notification) => {
      if (n.channel === 'test_marker' && n.payload === token) {
        listener.off('notification', on);
        resolve();
      }
    };
    listener.on('notification', on);
  });
  await c.query(`SELECT pg_notify('test_marker', $1)`, [token]);
  await seen;
}

beforeAll(async () => {
  db = await botDatabase('ms_bot_adopt');
  c = await connect(db.url);
  listener = await connect(db.url);
  listener.on('notification', (n) => {
    if (n.channel !== 'test_marker') heard.push({ channel: n.channel, payload: n.payload ?? '' });
  });
  for (const ch of ['cache_invalidation', 'memory_sync', 'test_marker']) await listener.query(`LISTEN ${ch}`);
  dir = mkdtempSync(join(tmpdir(), 'ms-bot-adopt-'));
  cpSync(BOT_MIGRATIONS, dir, { recursive: true });
}, 60_000);

afterAll(async () => {
  await listener?.end();
  await c?.end();
  await db?.drop();
});

describe('memory-sync adopt on the test bot', () => {
  let own: string[];
  it('proves the triggers on every watched table, installs them and the index, and writes one migration the bot records', { timeout: 60_000 }, async () => {
    own = await ownTriggers();
    expect(own.length).toBeGreaterThan(0); // the bot's own cache_invalidation triggers
    const lines: string[] = [];
    const declaration = await loadBotDeclaration();
    const r = await adoptDeclaration({ databaseUrl: db.url, declaration, migrationDir: dir, now: new Date('2026-12-01T09:00:00Z'), log: (l) => lines.push(l) });

    const binding = bindDeclaration(declaration);
    const watched = [...binding.watched.values()].map((w) => binding.models.get(w.model)!.table);
    expect(r.tables.map((t) => t.replace(/"/g, '')).sort()).toEqual([...watched].sort());
    // Proven on each, in a transaction rolled back: INSERT, UPDATE and DELETE at least.
    expect(r.proved.map((p) => p.table).sort()).toEqual([...r.tables].sort());
    for (const p of r.proved) expect(p.statements.filter((s) => /^(INSERT|UPDATE|DELETE)/.test(s)).length).toBeGreaterThanOrEqual(3);
    expect(r.vectorIndexes).toEqual({ memories: 'created' });
    expect((await ourTriggers()).length).toBe(watched.length * 4);
    expect(await ownTriggers()).toEqual(own);

    // One migration in the bot's folder, the SQL adopt ran, recorded in the bot's own history.
    const written = readdirSync(dir).filter((d) => d.endsWith('_memory_sync_capture'));
    expect(written).toEqual([r.migration]);
    const resolved = resolveAgainst(binding, await readCatalog(c, binding));
    expect(readFileSync(join(dir, r.migration!, 'migration.sql'), 'utf8')).toBe(migrationSql(binding, resolved.collections));
    expect(r.recorded).toBe(true);
    const recorded = await c.query(`SELECT 1 FROM _prisma_migrations WHERE migration_name = $1 AND finished_at IS NOT NULL`, [r.migration]);
    expect(recorded.rows).toHaveLength(1);
    expect(lines.join('\n')).toMatch(/change capture installed on/);
  });

  it('the bot writes to every declared table as before; its own triggers still fire with its own payloads; ours send v2 on memory_sync', { timeout: 60_000 }, async () => {
    world = await seedBot(c, 31); // INSERTs into every table
    const ch = world.characters[0]!;
    await c.query(`UPDATE characters SET updated_at = now() + interval '1 second', display_name = 'x' WHERE id = $1`, [ch]);
    await c.query(`UPDATE model_configs SET label = 'y' WHERE id = $1`, [world.configs[0]]);
    await c.query(`UPDATE character_nicknames SET name = name || '!'`);
    await c.query(`UPDATE channel_settings SET auto_reply = NOT auto_reply`);
    await c.query(`UPDATE character_config_links SET updated_at = now()`);
    await c.query(`UPDATE memory_rows SET is_pinned = true WHERE character_id = $1`, [ch]);
    await c.query(`DELETE FROM character_nicknames WHERE character_id = $1`, [ch]);
    await c.query(`DELETE FROM characters WHERE id = $1`, [world.characters.pop()]);
    await settle();
    const bot = heard.filter((h) => h.channel === 'cache_invalidation').map((h) => JSON.parse(h.payload) as { type: string; characterId?: string });
    expect(bot).toEqual(expect.arrayContaining([{ type: 'character', characterId: ch }, { type: 'all' }]));
    const ours = heard.filter((h) => h.channel === 'memory_sync').map((h) => JSON.parse(h.payload) as { ms: number; model: string });
    expect(ours.every((e) => e.ms === 2)).toBe(true);
    expect(new Set(ours.map((e) => e.model))).toEqual(new Set(['Owner', 'Prompt', 'Character', 'ModelConfig', 'CharacterConfigLink', 'Nickname', 'Memory', 'ChannelSetting']));
    // Every payload fits NOTIFY's 8,000 bytes.
    expect(Math.max(...heard.filter((h) => h.channel === 'memory_sync').map((h) => Buffer.byteLength(h.payload)))).toBeLessThanOrEqual(7_900);
  });

  it('a second adopt changes nothing and writes no migration', { timeout: 60_000 }, async () => {
    const triggersBefore = await ourTriggers();
    const fns = (await c.query<{ d: string }>(`SELECT string_agg(md5(pg_get_functiondef(oid)), ',' ORDER BY proname) AS d FROM pg_proc WHERE proname LIKE 'memory\\_sync\\_%'`)).rows[0]!.d;
    const r = await adoptDeclaration({ databaseUrl: db.url, declaration: await loadBotDeclaration(), migrationDir: dir });
    expect(r.migration).toBeNull();
    expect(r.vectorIndexes).toEqual({ memories: 'present' });
    expect(await ourTriggers()).toEqual(triggersBefore);
    expect((await c.query<{ d: string }>(`SELECT string_agg(md5(pg_get_functiondef(oid)), ',' ORDER BY proname) AS d FROM pg_proc WHERE proname LIKE 'memory\\_sync\\_%'`)).rows[0]!.d).toBe(fns);
    expect(readdirSync(dir).filter((d) => d.endsWith('_memory_sync_capture'))).toHaveLength(1);
  });

  it('no job runs on the bot unless declared, so a running memory-sync deletes none of its rows', async () => {
    const declaration = await loadBotDeclaration();
    const binding = bindDeclaration(declaration);
    const resolved = resolveAgainst(binding, await readCatalog(c, binding));
    const jobs = maintenanceJobs({ connect: () => connect(db.url), logger: silent, metrics: new SidecarMetrics(undefined as never), config: loadConfig({}).jobs, binding, resolved });
    expect(jobs.map((j) => j.name)).toEqual(['index-guard']);
    const before = await counts();
    for (const j of jobs) await j.run(new AbortController().signal);
    expect(await counts()).toEqual(before);
  });

  it('declared jobs delete only what they name, never a protected row', async () => {
    const botJson = JSON.parse(readFileSync(BOT_CONFIG, 'utf8')) as Record<string, unknown>;
    const declared: LoadedDeclaration = {
      declaration: {
        ...botJson,
        schema: BOT_SCHEMA,
        jobs: {
          historyTtl: { model: 'ChatLine', field: 'createdAt', days: 30 },
          memoryCap: { collection: 'memories', per: ['personaId', 'channelId'], keep: 2, orderBy: 'createdAt', protect: 'pinned' },
        },
      } as Declaration,
      source: 'bot declaration with jobs',
      baseDir: BOT_DIR,
    };
    const binding = bindDeclaration(declared);
    const persona = world.personas[0]!;
    await c.query(`DELETE FROM memory_rows WHERE persona_id = $1 AND channel_id = 'cap'`, [persona]);
    for (let i = 0; i < 6; i++) {
      await c.query(
        `INSERT INTO memory_rows (id, persona_id, character_id, channel_id, body, visibility, is_pinned, created_at) VALUES (gen_random_uuid(), $1, $2, 'cap', $3, 'normal', $4, now() - make_interval(mins => $5))`,
        [persona, world.characters[0], `cap ${i}`, i === 5, i],
      );
    }
    await c.query(`INSERT INTO chat_lines (id, channel_id, character_id, content, created_at) VALUES (gen_random_uuid(), 'c', $1, 'old', now() - interval '40 days'), (gen_random_uuid(), 'c', $1, 'new', now())`, [world.characters[0]]);
    const before = await counts();

    const cap = await enforceCap(c, binding, binding.jobs.memoryCap!, { keep: 2, batchSize: 100 });
    const left = await c.query<{ body: string }>(`SELECT body FROM memory_rows WHERE persona_id = $1 AND channel_id = 'cap' ORDER BY body`, [persona]);
    // The two newest unprotected ones, and the protected oldest one, which does not count.
    expect(left.rows.map((r) => r.body)).toEqual(['cap 0', 'cap 1', 'cap 5']);
    const ttl = await deleteExpired(c, binding, binding.jobs.historyTtl!, { days: 30, batchSize: 100 });
    expect(ttl.deleted).toBe(1);
    const after = await counts();
    expect(after.chat_lines).toBe(before.chat_lines! - 1);
    expect(after.memory_rows).toBe(before.memory_rows! - cap.deleted);
    // Nothing else moved.
    for (const t of Object.keys(before).filter((t) => t !== 'chat_lines' && t !== 'memory_rows')) expect(after[t], t).toBe(before[t]);
  });

  it('uninstall removes our triggers and functions only; start then refuses, naming adopt', { timeout: 60_000 }, async () => {
    const rows = await counts();
    const r = await uninstall({ databaseUrl: db.url, declaration: await loadBotDeclaration() });
    expect(r.dropped.some((l) => l.startsWith('DROP TRIGGER'))).toBe(true);
    expect(await ourTriggers()).toEqual([]);
    expect((await c.query(`SELECT 1 FROM pg_proc WHERE proname LIKE 'memory\\_sync\\_%'`)).rows).toEqual([]);
    expect(await ownTriggers()).toEqual(own);
    expect(await counts()).toEqual(rows);
    const lib = createMemorySync({ databaseUrl: db.url, config: BOT_CONFIG, summaryIntervalMs: 0 });
    try {
      const err = await lib.start().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NotMigratedError);
      expect((err as Error).message).toMatch(/change capture is not installed.*\n(.|\n)*memory-sync adopt/);
    } finally {
      await lib.close();
    }
  });
});
