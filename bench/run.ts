/**
 * `npm run bench`: every figure beside its raw baseline from the same run.
 * Writes bench/results/<timestamp>.json and bench/results/latest.json.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import pg from 'pg';
import pgListen from 'pg-listen';
import pgvector from 'pgvector';
import { createMemorySync, type MemorySync } from '../src/client/memory-sync.js';
import { createSidecarClient } from '../src/client/sidecar-client.js';
import { searchMemories } from '../src/store/builtin.js';
import { migrate } from '../src/migrations/migrate.js';
import { DEFAULT_MIGRATIONS_DIR, DEFAULT_SCHEMA_PATH, PACKAGE_ROOT } from '../src/paths.js';
import { nativeKernelsFit } from '../src/cache/hot/int8/kernel-fit.js';
import { busLag } from './bus-lag.js';
import { benchReplication } from './replication.js';
import { longestGap, runHotSearchBench } from './hot-search.js';
import { benchEmbedded } from './embedded.js';
import { benchCollections } from './collections.js';
import { EMBEDDING_DIMENSION, parseEmbedding } from '../src/embedding.js';
import type { Figure } from './figure.js';

const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
const QUICK = process.env.BENCH_QUICK === '1';


const figures: Figure[] = [];

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
const now = () => performance.now();

async function withDb<T>(fn: (url: string) => Promise<T>): Promise<T> {
  const name = `ms_bench_${process.pid}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS "${name}"`);
  await admin.query(`CREATE DATABASE "${name}"`);
  const u = new URL(ADMIN_URL);
  u.pathname = `/${name}`;
  try {
    await migrate({ databaseUrl: u.toString(), migrationsDir: DEFAULT_MIGRATIONS_DIR, schemaPath: DEFAULT_SCHEMA_PATH });
    return await fn(u.toString());
  } finally {
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
    await admin.query(`DROP DATABASE IF EXISTS "${name}"`);
    await admin.end();
  }
}

async function seedPersonality(db: pg.Client, name: string, memories: number): Promise<string> {
  const { rows } = await db.query<{ id: string }>(
    `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, $1, 'prompt', now()) RETURNING id`,
    [name],
  );
  const id = rows[0]!.id;
  for (let done = 0; done < memories; done += 1000) {
    await db.query(
      `INSERT INTO memories ("personalityId", "channelId", content, embedding)
       SELECT $1, 'c' || (g % 4), 'memory ' || g,
              (SELECT array_agg(random() - 0.5)::vector FROM generate_series(1, ${EMBEDDING_DIMENSION}) WHERE g >= 0)
       FROM generate_series($2::int, $3::int) g`,
      [id, done, Math.min(memories, done + 1000) - 1],
    );
  }
  return id;
}

function randomQuery(): number[] {
  return Array.from({ length: EMBEDDING_DIMENSION }, () => Math.random() - 0.5);
}

/**
 * commit → eviction lag, from sending the committing UPDATE to the eviction
 * being done, measured on the same commits as a plain pg LISTEN client. The
 * writer runs with synchronous_commit = off: the WAL flush is the same for
 * both and is the disk's time, not ours.
 */
async function lag(url: string, writer: pg.Client): Promise<void> {
  const n = QUICK ? 100 : 500;
  const id = (await writer.query<{ id: string }>(`SELECT id FROM personalities LIMIT 1`)).rows[0]!.id;
  await writer.query('SET synchronous_commit = off');
  const raw = new pg.Client({ connectionString: url });
  await raw.connect();
  await raw.query('LISTEN memory_sync'); // the generated triggers' channel
  const client = createMemorySync({ databaseUrl: url, summaryIntervalMs: 0 });
  await client.start();
  const ours: number[] = [];
  const base: number[] = [];
  const extra: number[] = [];
  for (let i = 0; i < n; i++) {
    await client.getPersonality(id); // cached, so the event really evicts
    await new Promise((r) => setTimeout(r, 1)); // start each commit from idle
    const gotRaw = new Promise<number>((r) => raw.once('notification', () => r(now())));
    const evicted = new Promise<number>((r) =>
      client.once('invalidation', (info) => {
        if (info.action !== 'evicted') throw new Error(`expected an eviction, got ${info.action}`);
        r(now());
      }),
    );
    const t0 = now();
    await writer.query(`UPDATE personalities SET "displayName" = $2 WHERE id = $1`, [id, `v${i}`]);
    const [r, o] = await Promise.all([gotRaw, evicted]);
    base.push(r - t0);
    ours.push(o - t0);
    extra.push(o - r);
  }
  await client.close();
  await raw.end();
  await writer.query('RESET synchronous_commit');
  const p50 = pct(ours, 50);
  const p99 = pct(ours, 99);
  const raw50 = pct(base, 50);
  const detail = { oursMinusRawP50: round(pct(extra, 50)), oursMinusRawP99: round(pct(extra, 99)) };
  figures.push({
    figure: 'commit → eviction lag p50',
    unit: 'ms',
    value: round(p50),
    baseline: round(raw50),
    baselineName: 'plain pg LISTEN, same commits',
    goal: 'p50 ≤ 1.5× raw',
    met: p50 <= 1.5 * raw50,
    detail,
  });
  figures.push({
    figure: 'commit → eviction lag p99',
    unit: 'ms',
    value: round(p99),
    baseline: round(pct(base, 99)),
    baselineName: 'plain pg LISTEN, same commits',
    goal: 'p99 ≤ 2 ms',
    met: p99 <= 2,
    detail,
  });
}

/** Notifications per second through the whole client path vs raw pg-listen. */
async function throughput(url: string, writer: pg.Client): Promise<void> {
  const n = QUICK ? 5_000 : 20_000;
  // Unique payloads (pg_notify drops duplicates within a transaction), valid v2 events as the triggers send them.
  const blast = () =>
    writer.query(
      `SELECT count(pg_notify('memory_sync', format(
         '{"ms":2,"model":"Personality","op":"UPDATE","txid":"%s","ts":%s,"scope":"rows","fields":["id"],"rows":[["%s"]],"gone":[],"chunk":1,"chunks":1}',
         g, extract(epoch FROM clock_timestamp()) * 1000, u)))
       FROM (SELECT g, gen_random_uuid() AS u FROM generate_series(1, $1::int) g) s`,
      [n],
    );

  const sub = pgListen.default({ connectionString: url });
  await sub.connect();
  await sub.listenTo('memory_sync');
  let rawCount = 0;
  const rawDone = new Promise<number>((r) =>
    sub.notifications.on('memory_sync', () => {
      if (++rawCount === n) r(now());
    }),
  );
  let t0 = now();
  await blast();
  const rawRate = n / (((await rawDone) - t0) / 1000);
  await sub.close();

  const client = createMemorySync({ databaseUrl: url, summaryIntervalMs: 0 });
  await client.start();
  let count = 0;
  const done = new Promise<number>((r) =>
    client.on('invalidation', () => {
      if (++count === n) r(now());
    }),
  );
  t0 = now();
  await blast();
  const rate = n / (((await done) - t0) / 1000);
  await client.close();
  figures.push({
    figure: 'notification throughput',
    unit: 'notifications/s',
    value: Math.round(rate),
    baseline: Math.round(rawRate),
    baselineName: 'raw pg-listen (JSON.parse only)',
    goal: '≥ 50% of raw',
    met: rate >= 0.5 * rawRate,
  });
}

/** Personality cache hits per second vs raw lru-cache.get. */
async function hits(client: MemorySync, ids: string[]): Promise<void> {
  for (const id of ids) await client.getPersonality(id);
  const rounds = QUICK ? 200 : 1_000;
  const lru = new LRUCache<string, object>({ max: 1000, ttl: 300_000 });
  for (const id of ids) lru.set(id, { id });
  const time = async (fn: () => Promise<void>) => {
    await fn(); // warm up
    const t = now();
    await fn();
    return (rounds * ids.length) / ((now() - t) / 1000);
  };
  let sink = 0;
  const raw = await time(async () => {
    for (let r = 0; r < rounds; r++) for (const id of ids) if (lru.get(id)) sink++;
  });
  const peek = await time(async () => {
    for (let r = 0; r < rounds; r++) for (const id of ids) if (client.peekPersonality(id)) sink++;
  });
  const awaited = await time(async () => {
    for (let r = 0; r < rounds; r++) for (const id of ids) if (await client.getPersonality(id)) sink++;
  });
  const rawAwaited = await time(async () => {
    for (let r = 0; r < rounds; r++) for (const id of ids) if (await lru.get(id)) sink++;
  });
  if (sink === 0) throw new Error('no hits');
  figures.push({
    figure: 'personality hit (peekPersonality, sync)',
    unit: 'ops/s',
    value: Math.round(peek),
    baseline: Math.round(raw),
    baselineName: 'raw lru-cache.get',
    goal: '≥ 50% of raw',
    met: peek >= 0.5 * raw,
  });
  figures.push({
    figure: 'personality hit (await getPersonality)',
    unit: 'ops/s',
    value: Math.round(awaited),
    baseline: Math.round(rawAwaited),
    baselineName: 'await raw lru-cache.get',
    goal: '≥ 50% of raw',
    met: awaited >= 0.5 * rawAwaited,
  });
}

async function search(client: MemorySync, pid: string, size: number, goal: string, goalMs: number): Promise<void> {
  const iters = QUICK ? 50 : 300;
  const queries = Array.from({ length: 20 }, randomQuery);
  await client.findSimilarMemories({ personalityId: pid, embedding: queries[0]!, limit: 10 });
  await client.core.settled('memories', [pid]);
  if (!client.core.isServable('memories', [pid])) throw new Error(`set of ${size} did not become hot`);
  const hot: number[] = [];
  const sql: number[] = [];
  const before = client.stats().hotSearches;
  // Longest stretch the event loop could not run other work during hot searches
  // (a setImmediate ticker: a histogram disabled between searches counts the SQL's time too).
  let maxBlock = 0;
  for (let i = 0; i < iters; i++) {
    const q = queries[i % queries.length]!;
    let t = now();
    const gap = await longestGap(async () => {
      await client.findSimilarMemories({ personalityId: pid, embedding: q, limit: 10 });
    });
    hot.push(now() - t);
    if (gap > maxBlock) maxBlock = gap;
    t = now();
    // The miss path's SQL, same pool, same session settings.
    await searchMemories(client.pool, { personalityId: pid, embedding: parseEmbedding(q), limit: 10 });
    sql.push(now() - t);
  }
  if (client.stats().hotSearches - before !== iters) throw new Error('a search left the hot path');
  const p50 = pct(hot, 50);
  const base = pct(sql, 50);
  figures.push({
    figure: `top-10 search, ${size.toLocaleString('en')} × ${EMBEDDING_DIMENSION}, hot p50`,
    unit: 'ms',
    value: round(p50),
    baseline: round(base),
    baselineName: 'same SQL on pgvector (p50)',
    goal,
    met: p50 <= goalMs && (size > 1000 || base / p50 >= 10),
    detail: { hotP99: round(pct(hot, 99)), sqlP99: round(pct(sql, 99)), speedup: round(base / p50, 1) },
  });
  if (size > 1000) {
    figures.push({
      figure: `event-loop block during a ${size.toLocaleString('en')}-vector search (max)`,
      unit: 'ms',
      value: round(maxBlock, 2),
      goal: '≤ 2 ms',
      met: maxBlock <= 2,
    });
  }
}

async function load(client: MemorySync, url: string, pid: string, size: number): Promise<void> {
  client.core.dropPartition('memories', [pid]); // drops the set
  const loaded = new Promise<[number, number]>((r) => client.core.once('loaded', (_c, _p, n, ms) => r([n, ms])));
  client.core.warm('memories', [pid]);
  const [n, ms] = await loaded;
  // Baseline: the same rows as pgvector text, parsed float by float.
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  const t = now();
  const { rows } = await c.query<{ e: string }>(`SELECT embedding::text AS e FROM memories WHERE "personalityId" = $1`, [pid]);
  let sum = 0;
  for (const r of rows) sum += (pgvector.fromSql(r.e) as number[])[0]!;
  const textMs = now() - t;
  await c.end();
  if (Number.isNaN(sum)) throw new Error('parse');
  const rate = n / (ms / 1000);
  figures.push({
    figure: `hot-set load (${size.toLocaleString('en')} vectors)`,
    unit: 'vectors/s',
    value: Math.round(rate),
    baseline: Math.round(rows.length / (textMs / 1000)),
    baselineName: 'same rows as vector text, parsed',
    goal: '≥ 50,000 vectors/s',
    met: rate >= 50_000,
    detail: { loadMs: round(ms, 1), textParseMsPerVector: round(textMs / rows.length, 4) },
  });
}

/** Sidecar HTTP personality hit (keep-alive, loopback) beside the in-process hit. */
async function sidecarHit(url: string, id: string, client: MemorySync): Promise<void> {
  const proc = spawn(process.execPath, [join(PACKAGE_ROOT, 'bin', 'memory-sync.js'), 'start'], {
    env: { ...process.env, DATABASE_URL: url, MEMORY_SYNC_PORT: '0', LOG_LEVEL: 'info', MEMORY_SYNC_JOB_INTERVAL_MS: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const lines = createInterface({ input: proc.stdout! });
    let base = '';
    for await (const line of lines) {
      const l = JSON.parse(line) as { msg: string; url?: string };
      if (l.msg === 'listening') base = l.url!;
      if (l.msg === 'ready') break;
    }
    const remote = createSidecarClient({ url: base });
    const n = QUICK ? 1_000 : 5_000;
    const http: number[] = [];
    const local: number[] = [];
    for (let i = 0; i < 200; i++) await remote.getPersonality(id);
    for (let i = 0; i < n; i++) {
      let t = now();
      await remote.getPersonality(id);
      http.push(now() - t);
      t = now();
      await client.getPersonality(id);
      local.push(now() - t);
    }
    await remote.close();
    const p50 = pct(http, 50) * 1000;
    figures.push({
      figure: 'sidecar HTTP personality hit p50',
      unit: 'µs',
      value: round(p50, 1),
      baseline: round(pct(local, 50) * 1000, 2),
      baselineName: 'in-process await getPersonality (p50)',
      goal: 'p50 ≤ 150 µs on loopback',
      met: p50 <= 150,
      detail: { httpP99us: round(pct(http, 99) * 1000, 1) },
    });
  } finally {
    proc.kill('SIGTERM');
    await once(proc, 'exit');
  }
}

/**
 * bench/entities.ts runs under tsx (the bot's Prisma client is generated at
 * run time, as the tests do), in a process of its own; it prints its figures as JSON.
 */
async function entityFigures(): Promise<Figure[]> {
  const proc = spawn(process.execPath, ['--import', 'tsx', join(PACKAGE_ROOT, 'bench', 'entities.ts'), '--json'], { cwd: PACKAGE_ROOT, stdio: ['ignore', 'pipe', 'inherit'], env: process.env });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const [code] = (await once(proc, 'exit')) as [number];
  if (code !== 0) return [{ figure: 'declared entities bench', unit: '', value: 0, goal: 'runs', met: false, detail: { exit: code } }];
  return JSON.parse(out.trim().split('\n').at(-1)!) as Figure[];
}

async function main(): Promise<void> {
  const started = new Date();
  await withDb(async (url) => {
    const writer = new pg.Client({ connectionString: url, application_name: 'memory-sync-bench' });
    writer.on('error', (err) => console.error('writer:', err.message));
    await writer.connect();
    console.error('seeding…');
    const small = await seedPersonality(writer, 'bench-1k', 1_000);
    const large = await seedPersonality(writer, 'bench-10k', QUICK ? 2_000 : 10_000);
    const ids = [small, large];
    for (let i = 0; i < 998; i++) ids.push(await seedPersonality(writer, `bench-p${i}`, 0));
    await writer.query('REINDEX INDEX idx_memories_embedding');
    await writer.query('ANALYZE');

    console.error('lag…');
    await lag(url, writer);
    console.error('throughput…');
    await throughput(url, writer);
    const client = createMemorySync({ databaseUrl: url, summaryIntervalMs: 0 });
    await client.start();
    try {
      console.error('hits…');
      await hits(client, ids);
      console.error('search…');
      await search(client, small, 1_000, 'hot p50 ≤ 0.35 ms and ≥ 10× faster', 0.35);
      await search(client, large, QUICK ? 2_000 : 10_000, 'hot p50 ≤ 1 ms (end to end, through findSimilarMemories)', 1);
      console.error('load…');
      await load(client, url, large, QUICK ? 2_000 : 10_000);
      console.error('sidecar…');
      await sidecarHit(url, small, client);
    } finally {
      await client.close();
      await writer.end();
    }
    console.error('bus lag…');
    figures.push(...(await busLag({ databaseUrl: url, commits: QUICK ? 100 : 300, fanoutCommits: QUICK ? 50 : 200 })));
  });
  console.error('replication capture…');
  figures.push(...(await benchReplication({ seconds: QUICK ? 4 : 10, commits: QUICK ? 100 : 300, rounds: QUICK ? 1 : 2 })));
  console.error('declared collections…');
  figures.push(...(await benchCollections({ quick: QUICK })));
  console.error('declared entities (the test bot, through tsx)…');
  figures.push(...(await entityFigures()));
  console.error('hot search kernel…');
  for (const f of await runHotSearchBench({ quick: QUICK })) {
    figures.push({ ...f, goal: f.goal ?? 'reported', met: f.met ?? true, detail: f.detail as Record<string, number> | undefined });
  }
  console.error('embedded…');
  for (const row of await benchEmbedded({ searches: QUICK ? 50 : 200, steadyMs: QUICK ? 5_000 : 20_000 })) {
    figures.push({
      figure: `embedded: ${row.figure}`,
      unit: row.unit,
      value: row.embedded,
      baseline: row.postgres,
      baselineName: row.baseline,
      goal: row.goal ?? 'reported beside its baseline',
      met: row.met ?? true,
    });
  }

  const width = Math.max(...figures.map((f) => f.figure.length));
  const kernel = nativeKernelsFit(EMBEDDING_DIMENSION).i8 ? 'usearch-int8' : 'js';
  console.log(`\nmemory-sync bench (${kernel} hot-search kernel, node ${process.version})\n`);
  for (const f of figures) {
    const base = f.baseline === undefined ? '' : `   raw: ${f.baseline} ${f.unit} (${f.baselineName})`;
    console.log(`${f.met ? 'ok  ' : 'MISS'} ${f.figure.padEnd(width)}  ${String(f.value).padStart(9)} ${f.unit}${base}   goal: ${f.goal}`);
  }
  const dir = join(PACKAGE_ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const out = { started: started.toISOString(), node: process.version, kernel, quick: QUICK, figures };
  writeFileSync(join(dir, `${started.toISOString().replace(/[:.]/g, '-')}.json`), JSON.stringify(out, null, 2));
  writeFileSync(join(dir, 'latest.json'), JSON.stringify(out, null, 2));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
