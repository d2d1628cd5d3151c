import { describe, expect, it } from 'vitest';
import type { TestClientOptions as MemorySyncOptions } from '../helpers/client.js';
import { insertPersonality } from '../helpers/db.js';
import { nextInvalidation, once, useDatabase } from '../helpers/client.js';
import { FreezableProxy } from '../helpers/proxy.js';

const t = useDatabase();
const client = (options?: MemorySyncOptions) => t.client(options);

describe('listener', () => {
  it('counts and logs bad payloads, never crashes, and keeps applying good ones', async () => {
    const c = await client();
    const reasons: string[] = [];
    c.on('invalid', (reason) => reasons.push(reason));
    const big = JSON.stringify({ v: 1, table: 'memories', pad: 'x'.repeat(7900) });
    expect(Buffer.byteLength(big)).toBeGreaterThan(7900);
    const bad = [
      'not json',
      '',
      '{"v":2}',
      '[1,2,3]',
      JSON.stringify({ v: 1, table: 'users', op: 'INSERT', scope: 'rows', ids: [], personalityIds: [], txid: '1', ts: 1, chunk: 1, chunks: 1 }),
      JSON.stringify({ v: 1, table: 'memories', op: 'DELETE', scope: 'rows', ids: ['nope'], personalityIds: ['nope'], txid: '1', ts: 1, chunk: 1, chunks: 1 }),
      big,
    ];
    for (const p of bad) await t.writer.query(`SELECT pg_notify('cache_invalidation', $1)`, [p]);
    await c.sync();
    expect(c.stats().invalidNotifications).toBe(bad.length);
    // JSON objects we cannot read may be real changes in another contract: caches are dropped for them.
    expect(c.stats().flushes).toBe(4);
    expect(reasons.some((r) => r.startsWith('not JSON'))).toBe(true);
    expect(reasons.some((r) => r.startsWith('table'))).toBe(true);
    expect(c.stats().listener).toBe('up');

    const id = await insertPersonality(t.writer, 'after-bad');
    await c.getPersonality(id);
    const ev = nextInvalidation(c);
    await t.writer.query(`UPDATE personalities SET "displayName" = 'ok' WHERE id = $1`, [id]);
    expect((await ev).action).toBe('evicted');
    expect((await c.getPersonality(id))?.displayName).toBe('ok');
  });

  it('sync() resolves after every earlier commit has been applied', async () => {
    const c = await client();
    const id = await insertPersonality(t.writer, 'sync');
    await c.getPersonality(id);
    await t.writer.query(`UPDATE personalities SET "displayName" = 'synced' WHERE id = $1`, [id]);
    await c.sync();
    expect(c.stats().invalidations['personalities.UPDATE']).toBe(1);
    expect((await c.getPersonality(id))?.displayName).toBe('synced');
  });

  it('detects a half-open connection with its probe, serves from the database meanwhile, then reconnects', async () => {
    const proxy = await new FreezableProxy('127.0.0.1', Number(new URL(t.db.url).port || 5432)).start();
    const c = await client({
      listener: { databaseUrl: proxy.urlFor(t.db.url), paranoidIntervalMs: 200, queryTimeoutMs: 300, retryMinMs: 50, retryMaxMs: 100 },
    });
    const id = await insertPersonality(t.writer, 'half-open');
    expect((await c.getPersonality(id))?.displayName).toBe('half-open');

    const down = once(c, 'down');
    const reconnected = once(c, 'reconnect');
    expect(proxy.freeze()).toBe(1); // the socket stays open; no bytes pass, no FIN, no RST
    await down;
    await t.writer.query(`UPDATE personalities SET "displayName" = 'changed' WHERE id = $1`, [id]);
    expect((await c.getPersonality(id))?.displayName).toBe('changed');

    await reconnected;
    expect(c.stats()).toMatchObject({ listener: 'up', reconnects: 1 });
    const ev = nextInvalidation(c);
    await t.writer.query(`UPDATE personalities SET "displayName" = 'again' WHERE id = $1`, [id]);
    await ev;
    expect((await c.getPersonality(id))?.displayName).toBe('again');
    await c.close();
    await proxy.close();
  });

  it('keeps retrying while the database refuses connections at start-up', async () => {
    const proxy = await new FreezableProxy('127.0.0.1', Number(new URL(t.db.url).port || 5432)).start();
    proxy.refusing = true;
    const c = (await import('../../src/client/memory-sync.js')).createMemorySync({
      databaseUrl: t.db.url,
      listener: { databaseUrl: proxy.urlFor(t.db.url), retryMinMs: 20, retryMaxMs: 50 },
      summaryIntervalMs: 0,
    });
    t.track(c);
    let started = false;
    const starting = c.start().then(() => (started = true));
    await new Promise<void>((resolve) => {
      c.source.on('retry', (attempt) => attempt === 5 && resolve());
    });
    expect(started).toBe(false);
    expect(c.source.state).toBe('connecting');
    proxy.refusing = false;
    await starting;
    expect(c.stats().listener).toBe('up');
    await c.close();
    await proxy.close();
  });

  it('sync() on a half-open connection rejects once, and leaves no rejection behind (issue 12, defect 1)', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const proxy = await new FreezableProxy('127.0.0.1', Number(new URL(t.db.url).port || 5432)).start();
    try {
      const c = await client({ listener: { databaseUrl: proxy.urlFor(t.db.url), paranoidIntervalMs: 60_000, queryTimeoutMs: 500 } });
      proxy.freeze();
      const err = await c.sync(300).then(() => null, (e: unknown) => e);
      expect(err).toMatchObject({ code: 'unavailable' });
      await once(c, 'down'); // the NOTIFY's query timeout (500 ms) revealed the dead socket
      // Past every timer the barrier set (300 ms) and the query timeout: nothing may reject unobserved.
      await new Promise((resolve) => setTimeout(resolve, 600));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await proxy.close();
    }
  });

  it('never runs two queries at once on the LISTEN connection (probe and barriers share one queue)', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      const c = await client({ listener: { paranoidIntervalMs: 1 } });
      await Promise.all(Array.from({ length: 50 }, () => c.sync()));
      expect(warnings.filter((m) => /already executing a query/.test(m))).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('start() rejects at once with a PermanentError for a database that does not exist (issue 12, defect 5)', async () => {
    const url = new URL(t.db.url);
    url.pathname = '/ms_no_such_database';
    const { createMemorySync } = await import('../../src/client/memory-sync.js');
    const c = t.track(createMemorySync({ databaseUrl: url.toString(), summaryIntervalMs: 0 }));
    const started = Date.now();
    const err = await c.start().then(() => null, (e: unknown) => e);
    expect(err).toMatchObject({ name: 'PermanentError', code: 'permanent', sqlState: '3D000' });
    expect((err as Error).message).toMatch(/does not exist: create it or fix DATABASE_URL/);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('start() rejects with NotMigratedError on an empty database, naming what to run', async () => {
    const { createDatabase } = await import('../helpers/db.js');
    const empty = await createDatabase();
    try {
      const { createMemorySync } = await import('../../src/client/memory-sync.js');
      const c = t.track(createMemorySync({ databaseUrl: empty.url, summaryIntervalMs: 0 }));
      const err = await c.start().then(() => null, (e: unknown) => e);
      expect(err).toMatchObject({ name: 'NotMigratedError', code: 'not_migrated' });
      expect((err as Error).message).toMatch(/missing table personalities.*run `memory-sync migrate`/);
      await c.close();
    } finally {
      await empty.drop();
    }
  });

  it('close() resolves at any point of a reconnect (a socket destroyed before it connected used to hang it)', async () => {
    const { PgListenSource } = await import('../../src/sources/pg-listen.js');
    const pino = (await import('pino')).default;
    const hung: number[] = [];
    // Close at staggered moments after the kill: during the backoff, the TCP connect, the start-up, LISTEN.
    for (let delay = 0; delay < 40; delay += 0.5) {
      const s = new PgListenSource({ databaseUrl: t.db.url, logger: pino({ level: 'silent' }), paranoidIntervalMs: 5_000, queryTimeoutMs: 3_000, backoff: { minMs: 20, maxMs: 20 } });
      await s.start();
      const down = once(s, 'down');
      await t.writer.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'memory-sync-listener' AND datname = current_database()`,
      );
      await down;
      await new Promise((resolve) => setTimeout(resolve, delay));
      const outcome = await Promise.race([s.close().then(() => 'closed'), new Promise((resolve) => setTimeout(() => resolve('hung'), 2_000))]);
      if (outcome === 'hung') hung.push(delay);
    }
    expect(hung).toEqual([]);
  }, 120_000);
});
