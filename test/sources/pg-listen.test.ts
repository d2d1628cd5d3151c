import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import type { TestClientOptions as MemorySyncOptions } from '../helpers/client.js';
import { insertPersonality } from '../helpers/db.js';
import { nextInvalidation, once, useDatabase } from '../helpers/client.js';
import { FreezableProxy } from '../helpers/proxy.js';
import type { ChangeEvent } from '../../src/contract/change-event.js';
import { PgListenSource } from '../../src/sources/pg-listen.js';

const t = useDatabase();
const client = (options?: MemorySyncOptions) => t.client(options);
const silent = pino({ level: 'silent' });

/** A valid v2 event, as a generated trigger sends it. */
const v2 = (over: Partial<ChangeEvent> = {}): ChangeEvent => ({
  ms: 2,
  model: 'Personality',
  op: 'UPDATE',
  scope: 'rows',
  fields: ['id'],
  rows: [[randomUUID()]],
  gone: [],
  txid: '1',
  ts: Date.now(),
  chunk: 1,
  chunks: 1,
  ...over,
});

/**
 * A port that closes every connection while `refusing` (the database looks
 * down) and counts the attempts; otherwise it forwards to PostgreSQL.
 */
async function refusingPort(target: number) {
  const attempts = new EventEmitter<{ attempt: [n: number] }>();
  const state = { refusing: true, count: 0 };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    if (state.refusing) {
      socket.destroy();
      attempts.emit('attempt', ++state.count);
      return;
    }
    const upstream = net.connect(target, '127.0.0.1');
    sockets.add(upstream);
    socket.pipe(upstream).pipe(socket);
    const close = () => (socket.destroy(), upstream.destroy());
    socket.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    state,
    attempts,
    port: (server.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('listener', () => {
  it('counts and logs bad payloads, never crashes, flushes only for its own, and keeps applying good ones', async () => {
    const c = await client();
    const invalid: Array<{ reason: string; ours: boolean }> = [];
    c.on('invalid', (reason, _sample, ours) => invalid.push({ reason, ours }));
    const big = JSON.stringify({ type: 'all', pad: 'x'.repeat(7900) });
    expect(Buffer.byteLength(big)).toBeGreaterThan(7900);
    // Other programs' payloads on memory_sync: counted and ignored, never flushed on.
    const foreign = [
      'not json',
      '',
      '[1,2,3]',
      '{"type":"all"}',
      // memory-sync 0.1's v1 payload: no "ms" key.
      JSON.stringify({ v: 1, table: 'memories', op: 'DELETE', scope: 'rows', ids: [randomUUID()], personalityIds: [], txid: '1', ts: 1, chunk: 1, chunks: 1 }),
      big,
    ];
    // memory-sync's own payloads that cannot be read (a newer or broken trigger): each flushes.
    const ours = [
      '{"ms":2}',
      JSON.stringify({ ms: 3, model: 'Personality', op: 'UPSERT' }),
      JSON.stringify({ ...v2(), rows: [['a', 'b']] }),
      JSON.stringify({ ...v2(), chunk: 2, chunks: 1 }),
      JSON.stringify({ ms: 2, model: 'Personality', pad: 'x'.repeat(7900) }),
    ];

    const id = await insertPersonality(t.writer, 'after-bad');
    await c.sync(); // the INSERT's own event, which evicts the id, is in before the fill
    await c.getPersonality(id);
    expect(c.peekPersonality(id)?.displayName).toBe('after-bad');
    for (const p of foreign) await t.writer.query(`SELECT pg_notify('memory_sync', $1)`, [p]);
    await c.sync();
    expect(c.stats()).toMatchObject({ invalidNotifications: 0, foreignNotifications: foreign.length, flushes: 0, listener: 'up' });
    expect(c.peekPersonality(id)?.displayName).toBe('after-bad'); // still cached
    expect(invalid.every((i) => !i.ours)).toBe(true);
    expect(invalid.map((i) => i.reason)).toEqual(expect.arrayContaining([expect.stringMatching(/^not JSON/), expect.stringMatching(/^empty payload/), expect.stringMatching(/no "ms" key/)]));

    invalid.length = 0;
    for (const p of ours) await t.writer.query(`SELECT pg_notify('memory_sync', $1)`, [p]);
    await c.sync();
    expect(c.stats()).toMatchObject({ invalidNotifications: ours.length, foreignNotifications: foreign.length, flushes: ours.length, listener: 'up' });
    expect(c.peekPersonality(id)).toBeUndefined(); // flushed
    expect(invalid).toHaveLength(ours.length);
    expect(invalid.every((i) => i.ours)).toBe(true);
    expect(invalid.map((i) => i.reason)).toEqual(
      expect.arrayContaining([expect.stringMatching(/^ms:/), expect.stringMatching(/one value per field/), expect.stringMatching(/chunk exceeds chunks/)]),
    );

    await c.getPersonality(id);
    const ev = nextInvalidation(c);
    await t.writer.query(`UPDATE personalities SET "displayName" = 'ok' WHERE id = $1`, [id]);
    expect((await ev).action).toBe('evicted');
    expect((await c.getPersonality(id))?.displayName).toBe('ok');
  });

  it('listens on memory_sync only: a payload on 0.1\'s cache_invalidation channel reaches nobody', async () => {
    const c = await client();
    const id = await insertPersonality(t.writer, 'old-channel');
    await c.sync(); // the INSERT's own event, which evicts the id, is in before the fill
    await c.getPersonality(id);
    const stale = JSON.stringify(v2({ rows: [[id]] }));
    await t.writer.query(`SELECT pg_notify('cache_invalidation', $1)`, [stale]);
    await c.sync();
    expect(c.stats().invalidations['Personality.UPDATE']).toBeUndefined();
    expect(c.peekPersonality(id)?.displayName).toBe('old-channel');
    // The same event on memory_sync evicts.
    await t.writer.query(`SELECT pg_notify('memory_sync', $1)`, [stale]);
    await c.sync();
    expect(c.stats().invalidations['Personality.UPDATE']).toBe(1);
    expect(c.peekPersonality(id)).toBeUndefined();
  });

  it('PgListenSource takes its channel from the option, sync() markers on <channel>_barrier', async () => {
    const s = new PgListenSource({ databaseUrl: t.db.url, channel: 'bot_sync', logger: silent, paranoidIntervalMs: 5_000, queryTimeoutMs: 3_000, backoff: { minMs: 20, maxMs: 50 } });
    try {
      await s.start();
      const changes: ChangeEvent[] = [];
      const barriers: string[] = [];
      s.on('change', (e) => changes.push(e));
      s.on('barrier', (token) => barriers.push(token));
      const mine = v2({ txid: '42' });
      await t.writer.query(`SELECT pg_notify('memory_sync', $1)`, [JSON.stringify(v2({ txid: '41' }))]);
      await t.writer.query(`SELECT pg_notify('bot_sync', $1)`, [JSON.stringify(mine)]);
      await t.writer.query(`SELECT pg_notify('memory_sync_barrier', 'default-channel-token')`);
      await t.writer.query(`SELECT pg_notify('bot_sync_barrier', 'bot-token')`);
      await s.sync();
      expect(changes).toEqual([mine]);
      // The marker sync() sent came back on bot_sync_barrier, after the other two notifications.
      expect(barriers).toHaveLength(2);
      expect(barriers[0]).toBe('bot-token');
      const { rows } = await t.writer.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'memory-sync-listener' AND datname = current_database()`,
      );
      expect(rows[0]!.n).toBeGreaterThanOrEqual(1);
    } finally {
      await s.close();
    }
  });

  it('sync() resolves after every earlier commit has been applied', async () => {
    const c = await client();
    const id = await insertPersonality(t.writer, 'sync');
    await c.getPersonality(id);
    await t.writer.query(`UPDATE personalities SET "displayName" = 'synced' WHERE id = $1`, [id]);
    await c.sync();
    expect(c.stats().invalidations['Personality.UPDATE']).toBe(1);
    expect(c.peekPersonality(id)).toBeUndefined(); // evicted by then, not later
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
    const refusing = await refusingPort(Number(new URL(t.db.url).port || 5432));
    const listenUrl = new URL(t.db.url);
    listenUrl.hostname = '127.0.0.1';
    listenUrl.port = String(refusing.port);
    try {
      const c = (await import('../../src/client/memory-sync.js')).createMemorySync({
        databaseUrl: t.db.url,
        listener: { databaseUrl: listenUrl.toString(), retryMinMs: 20, retryMaxMs: 50 },
        summaryIntervalMs: 0,
      });
      t.track(c);
      let started = false;
      const starting = c.start().then(() => (started = true));
      // The schema check (on the pool) passed and the source exists once LISTEN is first refused.
      await once(refusing.attempts, 'attempt');
      const retried = new Promise<void>((resolve) => {
        c.source.on('retry', (attempt) => attempt === 5 && resolve());
      });
      await retried;
      expect(started).toBe(false);
      expect(c.source.state).toBe('connecting');
      expect(c.sourceState).toBe('connecting');
      expect(refusing.state.count).toBeGreaterThanOrEqual(5);
      refusing.state.refusing = false;
      await starting;
      expect(started).toBe(true);
      expect(c.stats().listener).toBe('up');
      await c.close();
    } finally {
      await refusing.close();
    }
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
      const message = (err as Error).message;
      expect(message).toMatch(/^database not migrated \(none of the declared tables exist: [^)]*\bpersonalities\b[^)]*\): run `memory-sync migrate`/);
      for (const table of ['personalities', 'llm_configs', 'memories']) expect(message).toContain(`table ${table} (model `);
      expect(c.sourceState).toBe('idle'); // refused before any LISTEN
      await c.close();
    } finally {
      await empty.drop();
    }
  });

  it('close() resolves at any point of a reconnect (a socket destroyed before it connected used to hang it)', async () => {
    const hung: number[] = [];
    // Close at staggered moments after the kill: during the backoff, the TCP connect, the start-up, LISTEN.
    for (let delay = 0; delay < 40; delay += 0.5) {
      const s = new PgListenSource({ databaseUrl: t.db.url, logger: silent, paranoidIntervalMs: 5_000, queryTimeoutMs: 3_000, backoff: { minMs: 20, maxMs: 20 } });
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
