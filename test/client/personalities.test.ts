import { describe, expect, it } from 'vitest';
import type { TestClientOptions as MemorySyncOptions } from '../helpers/client.js';
import { insertPersonality } from '../helpers/db.js';
import { gate, nextInvalidation, once, useDatabase } from '../helpers/client.js';
import { FreezableProxy } from '../helpers/proxy.js';

const t = useDatabase();
const client = (options?: MemorySyncOptions) => t.client(options);

describe('getPersonality', () => {
  it('returns the personality with its llmConfig, cached, and fresh after a commit elsewhere', async () => {
    const id = await insertPersonality(t.writer, 'fresh');
    await t.writer.query(`INSERT INTO llm_configs ("personalityId", model, "updatedAt") VALUES ($1, 'model-a', now())`, [id]);
    const c = await client();
    const first = await c.getPersonality(id);
    expect(first).toMatchObject({ id, name: 'fresh', llmConfig: { model: 'model-a', personalityId: id } });
    const again = await c.getPersonality(id);
    expect(c.stats()).toMatchObject({ hits: 1, misses: 1 });
    // Shared between callers, so frozen: one caller cannot change another's copy.
    expect(Object.isFrozen(again)).toBe(true);
    expect(Object.isFrozen(again?.llmConfig)).toBe(true);

    const evicted = nextInvalidation(c, (i) => i.event.model === 'Personality');
    await t.writer.query(`UPDATE personalities SET "displayName" = 'Fresh!' WHERE id = $1`, [id]);
    expect((await evicted).action).toBe('evicted');
    expect((await c.getPersonality(id))?.displayName).toBe('Fresh!');

    const cfg = nextInvalidation(c, (i) => i.event.model === 'LlmConfig');
    await t.writer.query(`UPDATE llm_configs SET model = 'model-b' WHERE "personalityId" = $1`, [id]);
    const info = await cfg;
    expect(info.action).toBe('evicted');
    expect(info.lagMs).toBeGreaterThanOrEqual(0);
    expect((await c.getPersonality(id))?.llmConfig?.model).toBe('model-b');
    expect(c.stats().invalidations).toMatchObject({ 'Personality.UPDATE': 1, 'LlmConfig.UPDATE': 1 });
  });

  it('caches a miss briefly, and an INSERT evicts the negative entry', async () => {
    const c = await client();
    const id = '00000000-0000-4000-8000-000000000001';
    expect(await c.getPersonality(id)).toBeNull();
    expect(await c.getPersonality(id)).toBeNull();
    expect(c.stats()).toMatchObject({ hits: 1, misses: 1 });
    const inserted = nextInvalidation(c, (i) => i.event.op === 'INSERT');
    await t.writer.query(
      `INSERT INTO personalities (id, name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, 'late', 'Late', 's', now())`,
      [id],
    );
    await inserted;
    expect((await c.getPersonality(id))?.name).toBe('late');
  });

  it('concurrent misses on one key cause one database load', async () => {
    const id = await insertPersonality(t.writer, 'concurrent');
    let loads = 0;
    const c = await client({ hooks: { afterEntityRead: () => void loads++ } });
    const results = await Promise.all(Array.from({ length: 50 }, () => c.getPersonality(id)));
    expect(results.every((r) => r?.id === id)).toBe(true);
    expect(loads).toBe(1);
  });

  it('a fill racing an invalidation never stores the old value', async () => {
    const id = await insertPersonality(t.writer, 'race');
    const hold = gate();
    const readOld = gate();
    let calls = 0;
    const c = await client({
      hooks: {
        afterEntityRead: async () => {
          if (++calls === 1) {
            readOld.open(); // the load has read the old row...
            await hold.promise; // ...and waits while the row changes
          }
        },
      },
    });
    const pending = c.getPersonality(id);
    await readOld.promise;
    const evicted = nextInvalidation(c, (i) => i.event.model === 'Personality');
    await t.writer.query(`UPDATE personalities SET "displayName" = 'new' WHERE id = $1`, [id]);
    await evicted;
    hold.open();
    expect((await pending)?.displayName).toBe('new');
    expect((await c.getPersonality(id))?.displayName).toBe('new');
    expect(c.stats().abortedFills).toBe(1);
    expect(calls).toBe(2);
  });

  it('TRUNCATE flushes the personality cache', async () => {
    const c = await client();
    const id = await insertPersonality(t.writer, 'trunc');
    await c.getPersonality(id);
    const flushed = once(c, 'flush');
    await t.writer.query('TRUNCATE personalities CASCADE');
    expect((await flushed)[0]).toMatch(/TRUNCATE/);
    expect(await c.getPersonality(id)).toBeNull();
  });

  it('rejects a non-UUID before any round trip', async () => {
    const c = await client();
    await expect(c.getPersonality('42')).rejects.toThrow(/id: must be a UUID/);
    expect(c.stats().misses).toBe(0);
  });
});

describe('listener outage', () => {
  it('pg_terminate_backend on the listener: no stale read during the outage, then reconnect and flush', async () => {
    const id = await insertPersonality(t.writer, 'outage');
    // The listener goes through a proxy that can keep it from reconnecting.
    const proxy = await new FreezableProxy('127.0.0.1', Number(new URL(t.db.url).port || 5432)).start();
    const c = await client({ listener: { databaseUrl: proxy.urlFor(t.db.url), retryMinMs: 50, retryMaxMs: 100 } });
    expect((await c.getPersonality(id))?.displayName).toBe('outage');

    const down = once(c, 'down');
    proxy.refusing = true;
    const killed = await t.writer.query(
      `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = 'memory-sync-listener' AND datname = current_database()`,
    );
    expect(killed.rows).toHaveLength(1);
    await down;
    // This notification is lost to the client: it must not matter.
    await t.writer.query(`UPDATE personalities SET "displayName" = 'during' WHERE id = $1`, [id]);
    expect((await c.getPersonality(id))?.displayName).toBe('during');
    expect((await c.getPersonality(id))?.displayName).toBe('during');
    expect(c.stats().listener).toBe('down');
    expect(c.stats().hits).toBe(0);

    const reconnected = once(c, 'reconnect');
    proxy.refusing = false;
    await reconnected;
    expect(c.stats()).toMatchObject({ listener: 'up', reconnects: 1 });
    expect(c.stats().flushes).toBeGreaterThanOrEqual(1);
    expect((await c.getPersonality(id))?.displayName).toBe('during');
    // And it is in step again.
    const ev = nextInvalidation(c);
    await t.writer.query(`UPDATE personalities SET "displayName" = 'after' WHERE id = $1`, [id]);
    await ev;
    expect((await c.getPersonality(id))?.displayName).toBe('after');
    await c.close();
    await proxy.close();
  });
});
