/**
 * Fleet mode lag: commit → subscriber through each bus (PostgreSQL → relay
 * → NATS JetStream or Redis Streams → BusSource), each beside a plain
 * `LISTEN` on the same commits in the same run, and fan-out to 20
 * subscribers beside 20 plain LISTEN connections (the fleet without a bus).
 * Goal: p50 ≤ 2× direct LISTEN.
 *
 *   npx tsx bench/bus-lag.ts            (BENCH_QUICK=1 for a short run)
 *
 * `busLag()` returns rows in bench/run.ts's figure shape, for `npm run bench`.
 * Everything runs in one process (writer, relay, subscribers share one event
 * loop), so the bus figures include that contention; separate hosts would
 * see less.
 */
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import pino from 'pino';
import { migrate } from '../src/migrations/migrate.js';
import { DEFAULT_MIGRATIONS_DIR, DEFAULT_SCHEMA_PATH } from '../src/paths.js';
import { runRelay } from '../src/relay/relay.js';
import { createBus } from '../src/sources/bus/create.js';
import { type Bus, type BusConfig, type BusKind } from '../src/sources/bus/bus.js';
import { BusSource } from '../src/sources/bus-source.js';
import { PgListenSource } from '../src/sources/pg-listen.js';
import type { Figure } from './figure.js';

export type LagRow = Figure;

export interface BusLagOptions {
  /** A migrated database the bench may write to. */
  databaseUrl: string;
  /** @defaultValue both engines on their default local ports */
  buses?: BusConfig[];
  /** Commits measured per bus. @defaultValue 300 */
  commits?: number;
  /** Subscribers in the fan-out measurement. @defaultValue 20 */
  fanout?: number;
  /** Commits measured for the fan-out. @defaultValue 200 */
  fanoutCommits?: number;
}

const LOCAL_BUSES: BusConfig[] = [
  { kind: 'nats', servers: '127.0.0.1:4222', stream: 'x', tls: false },
  { kind: 'redis', host: '127.0.0.1', port: 6379, db: 0, stream: 'x', tls: false },
];

const silent = pino({ level: 'silent' });
const now = () => performance.now();
const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

/** Removes what a bench stream left behind (NATS stream; Redis keys). */
async function dropStream(config: BusConfig): Promise<void> {
  if (config.kind === 'nats') {
    const { connect } = await import('@nats-io/transport-node');
    const { jetstreamManager } = await import('@nats-io/jetstream');
    const nc = await connect({ servers: config.servers });
    await (await jetstreamManager(nc)).streams.delete(config.stream).catch(() => false);
    await nc.close();
    return;
  }
  const { Redis } = await import('ioredis');
  const r = new Redis({ host: config.host, port: config.port, db: config.db, lazyConnect: true });
  await r.connect();
  const tag = `{${config.stream}}`;
  const keys = [`${tag}:stream`, `${tag}:seq`, `${tag}:epoch`];
  let cursor = '0';
  do {
    const [nextCursor, found] = await r.scan(cursor, 'MATCH', `${tag}:dedupe:*`, 'COUNT', 1000);
    cursor = nextCursor;
    keys.push(...found);
  } while (cursor !== '0');
  await r.del(...keys);
  r.disconnect();
}

interface Rig {
  kind: BusKind;
  subscribers: BusSource[];
  close(): Promise<void>;
}

/** A relay and `n` subscribers on a fresh stream of this bus. */
async function rig(databaseUrl: string, base: BusConfig, n: number): Promise<Rig> {
  const config = { ...base, stream: `ms_bench_${process.pid}_${randomBytes(3).toString('hex')}` } as BusConfig;
  const source = new PgListenSource({ databaseUrl, logger: silent, paranoidIntervalMs: 10_000, queryTimeoutMs: 5_000, backoff: { minMs: 100, maxMs: 5_000 } });
  const relay = await runRelay({ source, publisher: await createBus(config), logger: silent });
  await relay.drained(); // its start-up gap is on the bus before the subscribers start
  const subscribers: BusSource[] = [];
  for (let i = 0; i < n; i++) {
    const s = new BusSource({ bus: await createBus(config), logger: silent });
    await s.start();
    subscribers.push(s);
  }
  return {
    kind: config.kind,
    subscribers,
    close: async () => {
      await Promise.all(subscribers.map((s) => s.close()));
      await relay.stop();
      await dropStream(config);
    },
  };
}

/**
 * One commit at a time, from idle: time from before the UPDATE to the last
 * plain LISTEN's notification and to the last subscriber's change event.
 */
async function measure(writer: pg.Client, raws: pg.Client[], id: string, subscribers: BusSource[], commits: number): Promise<{ direct: number[]; bus: number[] }> {
  const direct: number[] = [];
  const bus: number[] = [];
  for (let i = 0; i < commits; i++) {
    await new Promise((r) => setTimeout(r, 1)); // start each commit from idle
    const gotRaw = Promise.all(raws.map((raw) => once(raw, 'notification').then(() => now()))).then((ts) => Math.max(...ts));
    const gotBus = Promise.all(subscribers.map((s) => once(s, 'change').then(() => now()))).then((ts) => Math.max(...ts));
    const t0 = now();
    await writer.query(`UPDATE personalities SET "displayName" = $2 WHERE id = $1`, [id, `lag-${i}`]);
    const [r, b] = await Promise.all([gotRaw, gotBus]);
    direct.push(r - t0);
    bus.push(b - t0);
  }
  return { direct, bus };
}

/** Commit → subscriber lag through each bus beside direct LISTEN, and fan-out; rows in bench/run.ts's shape. */
export async function busLag(options: BusLagOptions): Promise<LagRow[]> {
  const buses = options.buses ?? LOCAL_BUSES;
  const commits = options.commits ?? 300;
  const fanout = options.fanout ?? 20;
  const fanoutCommits = options.fanoutCommits ?? 200;
  const rows: LagRow[] = [];
  const writer = new pg.Client({ connectionString: options.databaseUrl, application_name: 'memory-sync-bench' });
  // As many plain LISTEN connections as subscribers: the fleet without a bus, one per host.
  const raws = Array.from({ length: fanout }, () => new pg.Client({ connectionString: options.databaseUrl }));
  await writer.connect();
  for (const raw of raws) await raw.connect();
  try {
    // Same as bench/run.ts: the WAL flush is the disk's time, the same for both paths.
    await writer.query('SET synchronous_commit = off');
    const id = (
      await writer.query<{ id: string }>(
        `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, $1, 'p', now()) RETURNING id`,
        [`bench-bus-${process.pid}-${randomBytes(3).toString('hex')}`],
      )
    ).rows[0]!.id;
    // The others LISTEN only during fan-out: every listener costs the server a wake-up per commit.
    await raws[0]!.query('LISTEN memory_sync');

    const row = (figure: string, value: number, baseline: number, goal: string, met: boolean, detail?: Record<string, number>): LagRow => ({
      figure,
      unit: 'ms',
      value: round(value),
      baseline: round(baseline),
      baselineName: detail?.subscribers ? `last of ${detail.subscribers} plain pg LISTENs, same commits` : 'plain pg LISTEN, same commits',
      goal,
      met,
      detail,
    });

    for (const config of buses) {
      const one = await rig(options.databaseUrl, config, 1);
      try {
        const { direct, bus } = await measure(writer, raws.slice(0, 1), id, one.subscribers, commits);
        const p50 = pct(bus, 50);
        const d50 = pct(direct, 50);
        rows.push(row(`commit → ${one.kind} subscriber lag p50`, p50, d50, 'p50 ≤ 2× direct LISTEN', p50 <= 2 * d50, { commits }));
        rows.push(row(`commit → ${one.kind} subscriber lag p99`, pct(bus, 99), pct(direct, 99), 'reported beside direct', true, { commits }));
      } finally {
        await one.close();
      }

      const many = await rig(options.databaseUrl, config, fanout);
      for (const raw of raws.slice(1)) await raw.query('LISTEN memory_sync');
      try {
        const { direct, bus } = await measure(writer, raws, id, many.subscribers, fanoutCommits);
        const p50 = pct(bus, 50);
        const d50 = pct(direct, 50);
        const detail = { subscribers: fanout, commits: fanoutCommits };
        rows.push(row(`commit → last of ${fanout} ${many.kind} subscribers p50`, p50, d50, 'p50 ≤ 2× direct LISTEN', p50 <= 2 * d50, detail));
        rows.push(row(`commit → last of ${fanout} ${many.kind} subscribers p99`, pct(bus, 99), pct(direct, 99), 'reported beside direct', true, detail));
      } finally {
        for (const raw of raws.slice(1)) await raw.query('UNLISTEN memory_sync');
        await many.close();
      }
    }
  } finally {
    await writer.end().catch(() => {});
    await Promise.all(raws.map((raw) => raw.end().catch(() => {})));
  }
  return rows;
}

async function main(): Promise<void> {
  const adminUrl = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
  const quick = process.env.BENCH_QUICK === '1';
  const name = `ms_bench_bus_${process.pid}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS "${name}"`);
  await admin.query(`CREATE DATABASE "${name}"`);
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  let rows: LagRow[];
  try {
    await migrate({ databaseUrl: u.toString(), migrationsDir: DEFAULT_MIGRATIONS_DIR, schemaPath: DEFAULT_SCHEMA_PATH });
    rows = await busLag({ databaseUrl: u.toString(), commits: quick ? 100 : 300, fanoutCommits: quick ? 50 : 200 });
  } finally {
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
    await admin.query(`DROP DATABASE IF EXISTS "${name}"`);
    await admin.end();
  }
  const width = Math.max(...rows.map((r) => r.figure.length));
  console.log(`\nmemory-sync bus lag (node ${process.version})\n`);
  for (const r of rows) {
    const base = r.baseline === undefined ? '' : `   direct: ${String(r.baseline).padStart(7)} ${r.unit} (${r.baselineName})`;
    console.log(`${r.met ? 'ok  ' : 'MISS'} ${r.figure.padEnd(width)}  ${String(r.value).padStart(8)} ${r.unit}${base}   goal: ${r.goal}`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().then(
    () => process.exit(0),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
