import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemorySync } from '../../src/client/memory-sync.js';
import { slotStatus } from '../../src/capture/replication.js';
import { runRelay } from '../../src/relay/relay.js';
import { ReplicationSource } from '../../src/sources/replication/source.js';
import { FreezableProxy } from '../helpers/proxy.js';
import { builtinCapture } from '../sources/replication/helpers.js';
import { parseBusUrl, type BusKind } from '../../src/sources/bus/bus.js';
import { BusSource } from '../../src/sources/bus-source.js';
import type { UpInfo } from '../../src/sources/source.js';
import type { TestDb } from '../helpers/db.js';
import { Admin, FAST_BACKOFF, KINDS, makeBus, NATS_PORT, REDIS_PORT, uniqueStream } from '../sources/bus/helpers.js';
import { createReplicationDatabase, insertPersonality, next, silent, uniqueName } from '../sources/replication/helpers.js';

/*
 * PostgreSQL (no triggers) → replication slot → relay processes → bus → hosts.
 * The relay holding the slot is SIGKILLed under writes; the standby takes
 * over from the slot's confirmed position; later the last relay is killed and
 * a new one started. The bus drops the republished copies (the commit
 * position is in the message id), so hosts get every change once, flush
 * nothing and read nothing stale.
 */

const SCRIPT = fileURLToPath(new URL('./replication-relay-process.ts', import.meta.url));

let db: TestDb;
let pool: pg.Pool;
beforeAll(async () => {
  db = await createReplicationDatabase('ms_repl_relay');
  pool = new pg.Pool({ connectionString: db.url, max: 3 });
  pool.on('connect', (c) => c.on('error', () => {}));
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

describe.each(KINDS)('replication relays on %s', (kind: BusKind) => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterAll(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  });

  it('SIGKILL of the relay holding the slot, standby takeover, then a restart: 0 lost, 0 duplicates, 0 host flushes, 0 stale reads', { timeout: 180_000 }, async () => {
    const stream = uniqueStream('msrepl');
    const slot = uniqueName('relay');
    cleanups.push(() => Admin.for(kind, stream).deleteStream());
    const busUrl = kind === 'nats' ? `nats://127.0.0.1:${NATS_PORT}/${stream}` : `redis://127.0.0.1:${REDIS_PORT}?stream=${stream}`;
    const config = JSON.stringify(parseBusUrl(busUrl));

    const relay = (id: string, publishDelayMs = 0) => {
      const child = spawn(process.execPath, ['--import', 'tsx', SCRIPT, db.url, config, id, slot, String(publishDelayMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
      const lines: string[] = [];
      const waiters: Array<{ line: string; resolve: () => void }> = [];
      createInterface({ input: child.stdout! }).on('line', (l) => {
        lines.push(l);
        for (const w of waiters.filter((x) => x.line === l)) w.resolve();
      });
      cleanups.push(() => kill(child));
      const saw = (line: string) =>
        lines.includes(line)
          ? Promise.resolve()
          : new Promise<void>((resolve, reject) => {
              waiters.push({ line, resolve });
              child.once('exit', (code, signal) => reject(new Error(`relay ${id} exited (${code ?? signal}) before "${line}"`)));
            });
      return { child, saw };
    };
    const kill = async (child: ChildProcess) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    };

    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push(await insertPersonality(pool, uniqueName('r'), 'v0'));
    const a = relay('relay-a', 5); // slow to publish: when it dies, it holds received changes not yet on the bus
    await a.saw('ready'); // it created the slot; its gap is on the bus before any host subscribes
    const b = relay('relay-b');
    await b.saw('standby'); // PostgreSQL answers 55006 "slot is active": it waits

    const hosts: MemorySync[] = [];
    for (let i = 0; i < 2; i++) {
      const h = new MemorySync({ databaseUrl: db.url, bus: { url: busUrl }, source: 'replication', listener: { retryMinMs: 20, retryMaxMs: 200 }, logger: silent, summaryIntervalMs: 0, poolSize: 2 });
      cleanups.push(() => h.close());
      await h.start();
      hosts.push(h);
    }
    // A raw subscriber counts every change exactly as delivered.
    const raw = new BusSource({ bus: makeBus(kind, stream), logger: silent, backoff: FAST_BACKOFF });
    cleanups.push(() => raw.close());
    const delivered: string[] = [];
    const rawUps: UpInfo[] = [];
    raw.on('change', (e) => delivered.push(e.txid));
    raw.on('up', (i) => rawUps.push(i));
    await raw.start();
    for (const h of hosts) for (const id of ids) await h.getPersonality(id);

    const committed: string[] = [];
    let n = 0;
    const write = async () => {
      const c = await pool.connect();
      try {
        await c.query('BEGIN');
        await c.query(`UPDATE personalities SET "displayName" = $2 WHERE id = $1`, [ids[n % ids.length], `v${++n}`]);
        const { rows } = await c.query<{ xid: string }>('SELECT pg_current_xact_id()::xid::text AS xid');
        await c.query('COMMIT');
        committed.push(rows[0]!.xid);
      } finally {
        c.release();
      }
    };
    const until = async (cond: () => boolean) => {
      while (!cond()) await write();
    };
    const staleReads = async () => {
      const truth = new Map((await pool.query<{ id: string; displayName: string }>('SELECT id, "displayName" FROM personalities WHERE id = ANY($1)', [ids])).rows.map((r) => [r.id, r.displayName]));
      let stale = 0;
      for (const h of hosts) {
        await h.sync(10_000);
        for (const id of ids) if ((await h.getPersonality(id))?.displayName !== truth.get(id)) stale++;
      }
      return stale;
    };

    // 1. Kill the relay holding the slot while writes go on; the standby takes over.
    await until(() => delivered.length >= 50 && committed.length - delivered.length >= 20);
    const holder = (await slotStatus(pool, slot))!.activePid;
    expect(holder).not.toBeNull();
    await kill(a.child);
    const takeover = b.saw('ready');
    let tookOver = false;
    void takeover.then(() => (tookOver = true));
    await until(() => tookOver);
    await until(() => delivered.length >= committed.length - 5 && committed.length >= 150);
    expect((await slotStatus(pool, slot))!.activePid).not.toBe(holder);
    expect(await staleReads()).toBe(0);

    // 2. Kill the last relay; commits land while none runs; a new relay resumes from the slot.
    await kill(b.child);
    for (let i = 0; i < 30; i++) await write();
    const c = relay('relay-c');
    await c.saw('ready');
    for (let i = 0; i < 30; i++) await write();
    expect(await staleReads()).toBe(0);
    await raw.sync(10_000).catch(() => {}); // raw has no notify: it reads what the hosts' barriers pushed through
    while (delivered.length < committed.length) await new Promise((r) => setTimeout(r, 20));

    expect(delivered).toEqual(committed); // every change once, in commit order: 0 lost, 0 duplicates
    expect(rawUps).toEqual([{ first: true, lost: null }]);
    expect(raw.stats.gapFlushes).toBe(0);
    for (const h of hosts) {
      expect(h.stats().flushes).toBe(0);
      expect(h.busStats!.gapFlushes).toBe(0);
    }
  });

  it('the bus away past maxQueue: the relay stops reading the slot instead of dropping, and resumes with no gap', { timeout: 60_000 }, async () => {
    const stream = uniqueStream('msrepl');
    cleanups.push(() => Admin.for(kind, stream).deleteStream());
    const proxy = await new FreezableProxy('127.0.0.1', kind === 'nats' ? NATS_PORT : REDIS_PORT).start();
    cleanups.push(() => proxy.close());
    const source = new ReplicationSource({ databaseUrl: db.url, logger: silent, slot: uniqueName('bp'), ...builtinCapture(), confirm: 'manual', statusIntervalMs: 50, backoff: FAST_BACKOFF });
    const publisher = makeBus(kind, stream, { port: proxy.port, nats: { publishTimeoutMs: 300, connectTimeoutMs: 300 }, redis: { commandTimeoutMs: 300, connectTimeoutMs: 300 } });
    const relay = await runRelay({ source, publisher, logger: silent, id: 'relay-bp', backoff: FAST_BACKOFF, maxQueue: 5 });
    cleanups.push(() => relay.stop({ drainMs: 0 }));
    await relay.drained();
    const sub = new BusSource({ bus: makeBus(kind, stream), logger: silent, backoff: FAST_BACKOFF });
    cleanups.push(() => sub.close());
    const got: string[] = [];
    const lost: string[] = [];
    sub.on('change', (e) => got.push(e.txid));
    sub.on('lost', (r) => lost.push(r));
    await sub.start();

    proxy.refusing = true;
    proxy.resetAll();
    const paused = next(source, 'down');
    const committed: string[] = [];
    for (let i = 0; i < 20; i++) {
      const c = await pool.connect();
      await c.query('BEGIN');
      await c.query(`INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, 'd', 'p', now())`, [uniqueName('bp')]);
      committed.push((await c.query<{ xid: string }>('SELECT pg_current_xact_id()::xid::text AS xid')).rows[0]!.xid);
      await c.query('COMMIT');
      c.release();
    }
    await paused; // queue full: reading stopped
    expect(relay.stats.pauses).toBeGreaterThanOrEqual(1);
    expect(source.isPaused).toBe(true);
    expect(relay.stats.gaps).toBe(1); // only the slot's creation, before the subscriber
    proxy.refusing = false;
    while (got.length < committed.length) await next(sub, 'change');
    expect(got).toEqual(committed);
    expect(lost).toEqual([]);
    expect(relay.stats.gaps).toBe(1);
  });
});
