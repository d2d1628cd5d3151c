import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { pgCoverage, runRelay, type Relay } from '../../src/relay/relay.js';
import { barrierMessage } from '../../src/contract/bus-message.js';
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

  async function startRelay(stream: string, id: string, options: { port?: number; maxQueue?: number; covered?: boolean } = {}): Promise<Relay & { source: PgListenSource }> {
    const source = new PgListenSource({ databaseUrl: db.url, logger: silent, paranoidIntervalMs: 1_000, queryTimeoutMs: 2_000, backoff: FAST_BACKOFF });
    // Short timeouts: a publish into a cut connection fails fast and is retried.
    const publisher = makeBus(kind, stream, {
      port: options.port,
      nats: { publishTimeoutMs: 300, connectTimeoutMs: 300 },
      redis: { commandTimeoutMs: 300, connectTimeoutMs: 300 },
    });
    const coverage = options.covered ? pgCoverage(db.url, 'memory_sync_barrier') : undefined;
    if (coverage) cleanups.push(() => coverage.close());
    const relay = await runRelay({ source, publisher, logger: silent, id, backoff: FAST_BACKOFF, maxQueue: options.maxQueue, coverage, coverWaitMs: 300 });
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

  describe('start-up gaps with coverage (LISTEN)', () => {
    it('a relay that starts while another has listened all along publishes no gap; changes meanwhile all arrive', async () => {
      const stream = uniqueStream('msrelay');
      cleanups.push(() => Admin.for(kind, stream).deleteStream());
      const b = await startRelay(stream, 'relay-b', { covered: true });
      await b.drained();
      const sub = await subscriber(stream);
      const lost: string[] = [];
      sub.source.on('lost', (r) => lost.push(r));
      const t1 = await write(`${kind}-cov-1`);
      // The restart: A was away (B relayed t1), now it comes back.
      const a = await startRelay(stream, 'relay-a', { covered: true });
      await a.drained(); // its probe's verdict is in
      const t2 = await write(`${kind}-cov-2`);
      await sub.source.sync(10_000);
      expect(a.stats).toMatchObject({ coveredStarts: 1, gaps: 0 });
      expect(b.stats.gaps).toBe(1); // its own start, before anyone listened
      expect(lost).toEqual([]);
      expect(sub.source.stats.gapFlushes).toBe(0);
      expect(sub.txids).toEqual([t1, t2]);
    });

    it('with no other relay listening, the start still publishes its gap (subscribers flush once)', async () => {
      const stream = uniqueStream('msrelay');
      cleanups.push(() => Admin.for(kind, stream).deleteStream());
      const sub = await subscriber(stream);
      const flushed = next<BusSource, [string]>(sub.source, 'lost');
      const a = await startRelay(stream, 'relay-alone', { covered: true });
      const [reason] = await flushed;
      expect(reason).toMatch(/^relay relay-alone: relay started; no relay listening since before it/);
      await a.drained();
      expect(a.stats).toMatchObject({ coveredStarts: 0, gaps: 1 });
    });

    it('a relay that began listening after the newcomer read its clock does not vouch for it', async () => {
      const stream = uniqueStream('msrelay');
      cleanups.push(() => Admin.for(kind, stream).deleteStream());
      const sub = await subscriber(stream);
      const lost: string[] = [];
      sub.source.on('lost', (r) => lost.push(r));
      // Both start together after a time when no relay ran: neither listened since before the other.
      const [a, c] = await Promise.all([startRelay(stream, 'relay-x', { covered: true }), startRelay(stream, 'relay-y', { covered: true })]);
      await Promise.all([a.drained(), c.drained()]);
      await sub.source.sync(10_000);
      expect(a.stats.gaps + c.stats.gaps).toBeGreaterThanOrEqual(1);
      expect(lost.length).toBeGreaterThanOrEqual(1);
      expect(a.stats.coveredStarts + c.stats.coveredStarts).toBeLessThanOrEqual(1);
    });

    it('a running relay forwards a probe only when its LISTEN session is older than the probe (a broken session starts over)', async () => {
      const stream = uniqueStream('msrelay');
      cleanups.push(() => Admin.for(kind, stream).deleteStream());
      const b = await startRelay(stream, 'relay-rule', { covered: true });
      await b.drained();
      const sub = await subscriber(stream);
      const clock = pgCoverage(db.url, 'memory_sync_barrier');
      cleanups.push(() => clock.close());
      const bus = makeBus(kind, stream);
      cleanups.push(() => bus.close());
      await bus.connect();
      /** Sends a probe as a newcomer would, waits until the relay has handled it, then publishes it: duplicate = the relay forwarded it. */
      const forwarded = async (token: string) => {
        await clock.notify(token);
        await sub.source.sync(10_000); // a barrier after it: the relay has handled the probe
        return (await bus.publish(barrierMessage(token))).duplicate;
      };
      const beforeCut = await clock.now();
      // Cut B's LISTEN connection: its new session starts after `beforeCut`.
      const back = next<PgListenSource, [UpInfo]>(b.source, 'up');
      const killer = new pg.Client({ connectionString: db.url });
      await killer.connect();
      await killer.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'memory-sync-listener'`, [db.name]);
      await killer.end();
      await back;
      await sub.source.sync(10_000);
      // A newcomer that read the clock now: B has listened since before it, and vouches.
      expect(await forwarded(`cover.newcomer-1.${await clock.now()}`)).toBe(true);
      // One that read it before B's session broke: B missed commits of that time, and stays silent.
      expect(await forwarded(`cover.newcomer-2.${beforeCut}`)).toBe(false);
      // Its own probes it never forwards.
      expect(await forwarded(`cover.relay-rule.${await clock.now()}`)).toBe(false);
    });
  });
});
