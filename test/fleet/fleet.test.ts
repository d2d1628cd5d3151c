import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemorySync } from '../../src/client/memory-sync.js';
import { runRelay, type Relay } from '../../src/relay/relay.js';
import { createBus } from '../../src/sources/bus/create.js';
import { parseBusUrl, type BusKind } from '../../src/sources/bus/bus.js';
import { PgListenSource } from '../../src/sources/pg-listen.js';
import { once } from '../helpers/client.js';
import { createMigratedDatabase, type TestDb } from '../helpers/db.js';
import { FreezableProxy } from '../helpers/proxy.js';
import { Admin, FAST_BACKOFF, NATS_PORT, REDIS_PORT, uniqueStream } from '../sources/bus/helpers.js';

/*
 * Fleet mode at the level users see: PostgreSQL → two relays → bus → several
 * subscribers' caches. Faults are injected while writes go on; after each,
 * every subscriber's cached personalities are compared with the database.
 */

const silent = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const PERSONALITIES = 12;

describe.each<BusKind>(['nats', 'redis'])('fleet mode over %s', (kind) => {
  let db: TestDb;
  let writer: pg.Pool;
  let stream: string;
  let admin: Admin;
  let proxy: FreezableProxy;
  const relays: Relay[] = [];
  const hosts: MemorySync[] = [];
  let ids: string[] = [];
  let far: MemorySync; // the subscriber behind the proxy
  let counter = 0;

  const busUrl = (port: number) => (kind === 'nats' ? `nats://127.0.0.1:${port}/${stream}` : `redis://127.0.0.1:${port}/0?stream=${stream}`);

  async function relay(id: string): Promise<Relay> {
    const backoff = FAST_BACKOFF;
    const source = new PgListenSource({ databaseUrl: db.url, logger: silent, paranoidIntervalMs: 1_000, queryTimeoutMs: 2_000, backoff });
    const r = await runRelay({ source, publisher: await createBus(parseBusUrl(busUrl(kind === 'nats' ? NATS_PORT : REDIS_PORT)), { backoff }), logger: silent, id, backoff });
    await r.drained();
    relays.push(r);
    return r;
  }

  async function host(port: number): Promise<MemorySync> {
    const c = new MemorySync({
      databaseUrl: db.url,
      bus: { url: busUrl(port) },
      listener: { retryMinMs: 20, retryMaxMs: 200 },
      logger: silent,
      summaryIntervalMs: 0,
    });
    hosts.push(c);
    await c.start();
    return c;
  }

  /** Updates one personality's displayName; `n` writes in a row. */
  async function writes(n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      const id = ids[counter % ids.length]!;
      await writer.query(`UPDATE personalities SET "displayName" = $2 WHERE id = $1`, [id, `v${++counter}`]);
    }
  }

  /** Every host answers every personality as the database has it now (writes paused). */
  async function staleReads(): Promise<number> {
    const { rows } = await writer.query<{ id: string; displayName: string }>('SELECT id, "displayName" FROM personalities');
    const truth = new Map(rows.map((r) => [r.id, r.displayName]));
    let stale = 0;
    for (const h of hosts) {
      await h.sync();
      for (const id of ids) if ((await h.getPersonality(id))?.displayName !== truth.get(id)) stale++;
    }
    return stale;
  }

  const warm = async () => {
    for (const h of hosts) for (const id of ids) await h.getPersonality(id);
  };

  beforeAll(async () => {
    db = await createMigratedDatabase('ms_fleet');
    writer = new pg.Pool({ connectionString: db.url, max: 2 });
    stream = uniqueStream('msfleet');
    admin = Admin.for(kind, stream);
    proxy = await new FreezableProxy('127.0.0.1', kind === 'nats' ? NATS_PORT : REDIS_PORT).start();
    for (let i = 0; i < PERSONALITIES; i++) {
      const r = await writer.query<{ id: string }>(
        `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, 'v0', 'p', now()) RETURNING id`,
        [`fleet-${kind}-${i}`],
      );
      ids.push(r.rows[0]!.id);
    }
    await relay('relay-a');
    await relay('relay-b');
    await host(kind === 'nats' ? NATS_PORT : REDIS_PORT);
    await host(kind === 'nats' ? NATS_PORT : REDIS_PORT);
    far = await host(proxy.port);
    await warm();
  }, 60_000);

  afterAll(async () => {
    await Promise.all(hosts.map((h) => h.close()));
    await Promise.all(relays.map((r) => r.stop({ drainMs: 0 })));
    await proxy?.close();
    await admin?.deleteStream().catch(() => {});
    await writer?.end();
    await db?.drop();
  });

  it('holds no LISTEN connection on the hosts: only the relays listen', async () => {
    const { rows } = await writer.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'memory-sync-listener'`,
    );
    expect(rows[0]!.n).toBe(2);
    expect(hosts.map((h) => h.stats().source)).toEqual([kind, kind, kind]);
  });

  it('a subscriber cut off for a while resumes with exactly what it missed: 0 stale reads, 0 flushes', async () => {
    const flushes = hosts.map((h) => h.stats().flushes);
    const down = once(far, 'down');
    proxy.refusing = true;
    proxy.resetAll();
    await down;
    await writes(60); // the fleet goes on writing while `far` is away
    // Meanwhile `far` serves nothing cached: its lookups read the database.
    const [probe] = await writer.query<{ displayName: string }>('SELECT "displayName" FROM personalities WHERE id = $1', [ids[0]]).then((r) => r.rows);
    expect((await far.getPersonality(ids[0]!))?.displayName).toBe(probe!.displayName);
    const back = once(far, 'reconnect');
    proxy.refusing = false;
    const [lost] = (await back) as [string | null];
    expect(lost).toBeNull();
    expect(await staleReads()).toBe(0);
    expect(hosts.map((h) => h.stats().flushes)).toEqual(flushes);
    expect(far.busStats).toMatchObject({ resumes: 1, gapFlushes: 0 });
  });

  it('a relay killed while writes go on: 0 lost changes, 0 stale reads on any subscriber', async () => {
    await warm();
    const flushes = hosts.map((h) => h.stats().flushes);
    const writing = writes(80);
    await relays[0]!.stop({ drainMs: 0 }); // as a crash: what it had queued is dropped
    await writing;
    expect(await staleReads()).toBe(0);
    expect(hosts.map((h) => h.stats().flushes)).toEqual(flushes);
  });

  it('a stream lost while a subscriber was away: it flushes, says why, and serves no stale read', async () => {
    await warm();
    const flushes = far.stats().flushes;
    const down = once(far, 'down');
    proxy.refusing = true;
    proxy.resetAll();
    await down;
    await admin.deleteStream(); // the bus lost its state (a restart without persistence)
    await writes(20);
    const flushed = once(far, 'flush');
    proxy.refusing = false;
    const [reason] = (await flushed) as [string];
    expect(reason).toMatch(/stream|epoch|sequence/);
    expect(far.stats().flushes).toBe(flushes + 1);
    expect(await staleReads()).toBe(0);
  });
});
