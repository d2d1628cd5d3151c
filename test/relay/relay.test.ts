import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { runRelay, type Relay } from '../../src/relay/relay.js';
import { parseBusUrl, type BusKind } from '../../src/sources/bus/bus.js';
import { BusSource } from '../../src/sources/bus-source.js';
import { PgListenSource } from '../../src/sources/pg-listen.js';
import type { UpInfo } from '../../src/sources/source.js';
import { createMigratedDatabase, type TestDb } from '../helpers/db.js';
import { FreezableProxy } from '../helpers/proxy.js';
import { Admin, FAST_BACKOFF, KINDS, makeBus, NATS_PORT, next, REDIS_PORT, silent, uniqueStream } from '../sources/bus/helpers.js';

/*
 * PostgreSQL → relay(s) → bus → BusSource, all real: the triggers send the
 * notifications, relays LISTEN and publish, subscribers read the bus.
 */

let db: TestDb;
let pool: pg.Pool;
beforeAll(async () => {
  db = await createMigratedDatabase('ms_relay');
  pool = new pg.Pool({ connectionString: db.url, max: 4 });
  // A client still closing when drop() terminates the backends must not throw into the runner.
  pool.on('connect', (client) => client.on('error', () => {}));
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

/** One committed INSERT (one change event); resolves with its transaction id. */
async function write(name: string): Promise<string> {
  const r = await pool.query<{ txid: string }>(
    `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, $1, 'p', now()) RETURNING pg_current_xact_id()::text AS txid`,
    [name],
  );
  return r.rows[0]!.txid;
}

const counted = new WeakMap<string[], () => void>();
/** Resolves once `list` (a subscriber's txids) holds `n` entries. */
function until(list: string[], n: number): Promise<void> {
  if (list.length >= n) return Promise.resolve();
  return new Promise((resolve) =>
    counted.set(list, () => {
      if (list.length < n) return;
      counted.delete(list);
      resolve();
    }),
  );
}

const RELAY_SCRIPT = fileURLToPath(new URL('./relay-process.ts', import.meta.url));

const notify = async (token: string) => {
  await pool.query(`SELECT pg_notify('memory_sync_barrier', $1)`, [token]);
};

describe.each(KINDS)('relay on %s', (kind: BusKind) => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  });

  async function startRelay(stream: string, id: string, options: { port?: number; maxQueue?: number } = {}): Promise<Relay & { source: PgListenSource }> {
    const source = new PgListenSource({ databaseUrl: db.url, logger: silent, paranoidIntervalMs: 1_000, queryTimeoutMs: 2_000, backoff: FAST_BACKOFF });
    // Short timeouts: a publish into a cut connection fails fast and is retried.
    const publisher = makeBus(kind, stream, {
      port: options.port,
      nats: { publishTimeoutMs: 300, connectTimeoutMs: 300 },
      redis: { commandTimeoutMs: 300, connectTimeoutMs: 300 },
    });
    const relay = await runRelay({ source, publisher, logger: silent, id, backoff: FAST_BACKOFF, maxQueue: options.maxQueue });
    cleanups.push(() => relay.stop({ drainMs: 0 }));
    return Object.assign(relay, { source });
  }

  async function subscriber(stream: string) {
    const source = new BusSource({ bus: makeBus(kind, stream), logger: silent, notify, backoff: FAST_BACKOFF });
    cleanups.push(() => source.close());
    const txids: string[] = [];
    const ups: UpInfo[] = [];
    source.on('change', (e) => {
      txids.push(e.txid);
      counted.get(txids)?.();
    });
    source.on('up', (info) => ups.push(info));
    await source.start();
    return { source, txids, ups };
  }

  /** A relay process of its own; resolves once it is ready. */
  async function relayProcess(stream: string, id: string): Promise<ChildProcess> {
    const config = kind === 'nats' ? parseBusUrl(`nats://127.0.0.1:${NATS_PORT}/${stream}`) : parseBusUrl(`redis://127.0.0.1:${REDIS_PORT}?stream=${stream}`);
    const child = spawn(process.execPath, ['--import', 'tsx', RELAY_SCRIPT, db.url, JSON.stringify(config), id], { stdio: ['ignore', 'pipe', 'inherit'] });
    cleanups.push(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGKILL');
        await exited;
      }
    });
    const lines = createInterface({ input: child.stdout! });
    await new Promise<void>((resolve, reject) => {
      lines.on('line', (l) => l === 'ready' && resolve());
      child.once('exit', (code) => reject(new Error(`relay ${id} exited (${code}) before it was ready`)));
    });
    return child;
  }

  it('two relay processes, one SIGKILLed while writes go on: every subscriber gets every change once, with no flush', async () => {
    const stream = uniqueStream('msrelay');
    cleanups.push(() => Admin.for(kind, stream).deleteStream());
    // Both ready: their start-up gaps are on the bus before anyone subscribes.
    const [a] = await Promise.all([relayProcess(stream, 'relay-a'), relayProcess(stream, 'relay-b')]);
    const subs = await Promise.all([subscriber(stream), subscriber(stream), subscriber(stream)]);

    const committed: string[] = [];
    let writing = true;
    const writes = (async () => {
      for (let i = 0; writing || i < 200; i++) committed.push(await write(`${kind}-${i}`));
    })();
    // Kill relay A mid-stream: whatever it had received and not published dies with it.
    await until(subs[0]!.txids, 50);
    const killed = once(a, 'exit');
    a.kill('SIGKILL');
    await killed;
    writing = false;
    await writes;

    for (const s of subs) await s.source.sync(10_000);
    expect(committed.length).toBeGreaterThanOrEqual(200);
    for (const s of subs) {
      expect(s.txids).toHaveLength(committed.length); // 0 duplicates
      expect(new Set(s.txids)).toEqual(new Set(committed)); // 0 lost
      expect(s.txids).toEqual(committed); // in commit order (one writer)
      expect(s.ups).toEqual([{ first: true, lost: null }]); // no flush on resume...
      expect(s.source.stats.gapFlushes).toBe(0); // ...nor while up
    }
  });

  it('a relay whose LISTEN connection is cut tells subscribers to flush; sync() works through PostgreSQL and the bus', async () => {
    const stream = uniqueStream('msrelay');
    cleanups.push(() => Admin.for(kind, stream).deleteStream());
    const relay = await startRelay(stream, 'relay-cut');
    await relay.drained();
    const sub = await subscriber(stream);
    const t1 = await write(`${kind}-cut-1`);
    await sub.source.sync(10_000);
    expect(sub.txids).toEqual([t1]);

    const flushed = next<BusSource, [string]>(sub.source, 'lost');
    const killer = new pg.Client({ connectionString: db.url });
    await killer.connect();
    await killer.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'memory-sync-listener'`, [db.name]);
    await killer.end();
    const [reason] = await flushed;
    expect(reason).toMatch(/^relay relay-cut: notifications lost: LISTEN reconnected/);
    const t2 = await write(`${kind}-cut-2`);
    await sub.source.sync(10_000);
    expect(sub.txids).toEqual([t1, t2]);
    expect(sub.source.stats.gapFlushes).toBe(1);
  });

  it('retries publishes while the bus is unreachable; past maxQueue it sends one gap instead', async () => {
    const stream = uniqueStream('msrelay');
    cleanups.push(() => Admin.for(kind, stream).deleteStream());
    const proxy = await new FreezableProxy('127.0.0.1', kind === 'nats' ? NATS_PORT : REDIS_PORT).start();
    cleanups.push(() => proxy.close());
    const relay = await startRelay(stream, 'relay-cut-bus', { port: proxy.port, maxQueue: 5 });
    await relay.drained();
    const sub = await subscriber(stream);

    // Cut the relay from the bus; three changes wait in its queue and are retried.
    proxy.refusing = true;
    proxy.resetAll();
    const received = (n: number) => new Promise<void>((resolve) => {
      let seen = 0;
      const on = () => {
        if (++seen < n) return;
        relay.source.off('change', on);
        resolve();
      };
      relay.source.on('change', on);
    });
    let got = received(3);
    const held = [await write(`${kind}-held-1`), await write(`${kind}-held-2`), await write(`${kind}-held-3`)];
    await got;
    expect(relay.stats.queued).toBeGreaterThan(0); // waiting, not lost
    proxy.refusing = false;
    await sub.source.sync(10_000);
    expect(sub.txids).toEqual(held);
    expect(sub.source.stats.gapFlushes).toBe(0);

    // Cut again and overflow the queue: the relay drops it and publishes a gap.
    proxy.refusing = true;
    proxy.resetAll();
    const flushed = next<BusSource, [string]>(sub.source, 'lost');
    got = received(8);
    for (let i = 0; i < 8; i++) await write(`${kind}-overflow-${i}`);
    await got;
    proxy.refusing = false;
    const [reason] = await flushed;
    expect(reason).toMatch(/relay queue overflowed/);
  });

  it('a relay started after subscribers announces a gap (changes before it were relayed by nobody)', async () => {
    const stream = uniqueStream('msrelay');
    cleanups.push(() => Admin.for(kind, stream).deleteStream());
    const sub = await subscriber(stream);
    const flushed = next<BusSource, [string]>(sub.source, 'lost');
    await startRelay(stream, 'relay-late');
    const [reason] = await flushed;
    expect(reason).toMatch(/^relay relay-late: relay started/);
  });
});
