/**
 * The embedded backend (PGlite + pgvector, in process) beside PostgreSQL, in
 * the same run: `npx tsx bench/embedded.ts` (after `npm run build`: the
 * sidecar rows start bin/memory-sync.js), or `benchEmbedded()` from another
 * bench. Each row has the embedded figure and its baseline: PostgreSQL, the
 * path before issue 18 (`create: 'initdb'`) in the same run, or, for the
 * sidecar, the figures issue 18 recorded before the change.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import pgvector from 'pgvector';
import pino from 'pino';
import { openEmbedded } from '../src/backend/embedded.js';
import { insertMemory, searchMemories, streamPersonalityMemories } from '../src/store/builtin.js';
import { migrate } from '../src/migrations/migrate.js';
import { postgresDatabase, type Database } from '../src/backend/queryable.js';
import { DEFAULT_MIGRATIONS_DIR, DEFAULT_SCHEMA_PATH } from '../src/paths.js';
import { EMBEDDING_DIMENSION } from '../src/embedding.js';

export interface EmbeddedBenchRow {
  figure: string;
  unit: string;
  embedded: number;
  /** The same figure on PostgreSQL 15, or what stands for it (named in `baseline`). */
  postgres: number;
  baseline: string;
  /** The goal, when the figure has one (issue 18's start-up and memory goals). */
  goal?: string;
  met?: boolean;
}

export interface EmbeddedBenchOptions {
  /**
   * Server the PostgreSQL column runs on (a database is created and dropped).
   * @defaultValue BENCH_DATABASE_URL, TEST_DATABASE_URL, or the local trust-auth server.
   */
  adminUrl?: string;
  /**
   * Memories of the searched / loaded personality.
   * @defaultValue 1,000, as issue 8 asks.
   */
  vectors?: number;
  /**
   * pgvector searches per backend for the percentiles.
   * @defaultValue 200: enough for a stable p50 on a shared 2-core machine.
   */
  searches?: number;
  /**
   * How long after ready the "steady" RSS is read.
   * @defaultValue 20000: the initdb path's transient heap was still resident then (it fell 30–60 s later).
   */
  steadyMs?: number;
}

/** Issue 18's figures for the embedded default before this change (sidecar at /readyz, library start()). */
export const RECORDED_BEFORE = { newDirReadyMb: 800, newDirSteadyMb: 330, reopenMb: 291, inMemoryMb: 668, coldStartMs: [4_000, 9_000] } as const;

const logger = pino({ level: 'silent' });
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const mb = (bytes: number) => round(bytes / 2 ** 20);

/**
 * Opens a backend in a fresh Node process and reports that process's RSS:
 * what `memory-sync start` would hold, without this process's history.
 */
function inFreshProcess(imports: string, open: string, steadyMs = 0): { rss: number; ms: number; steadyRss: number } {
  const script = `
    ${imports}
    const t = performance.now();
    ${open}
    const ms = performance.now() - t;
    const rss = process.memoryUsage().rss;
    await new Promise((r) => setTimeout(r, ${steadyMs}));
    console.log(JSON.stringify({ rss, ms, steadyRss: process.memoryUsage().rss }));
    await close();
  `;
  // tsx only when running from bench/*.ts: its loader thread alone costs tens of MB of RSS.
  const loader = import.meta.url.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const out = execFileSync(process.execPath, [...loader, '--input-type=module', '-e', script], { encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').at(-1)!) as { rss: number; ms: number; steadyRss: number };
}

/** VmRSS of a process, from /proc (Linux). */
function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

/**
 * `memory-sync start` on the embedded database, as `npm start` runs it: the
 * time from spawning the process to the first /readyz 200, the RSS then, and
 * the RSS `steadyMs` later.
 */
async function sidecarStart(dataDir: string, steadyMs: number): Promise<{ ms: number; rss: number; steadyRss: number }> {
  const bin = new URL('../../bin/memory-sync.js', import.meta.url);
  const binPath = existsSync(bin) ? bin : new URL('../bin/memory-sync.js', import.meta.url); // dist/bench/ or bench/
  const env = { ...process.env, DATABASE_URL: '', MEMORY_SYNC_DATA_DIR: dataDir, MEMORY_SYNC_PORT: '0', MEMORY_SYNC_SUMMARY_INTERVAL_MS: '0', LOG_PRETTY: 'false' };
  const t = performance.now();
  const child = spawn(process.execPath, [binPath.pathname, 'start'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let buf = '';
      child.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          try {
            const msg = JSON.parse(line) as { msg?: string; url?: string };
            if (msg.msg === 'listening' && msg.url) resolve(msg.url);
          } catch {
            // not a log line
          }
        }
      });
      child.once('exit', (code) => reject(new Error(`memory-sync start exited ${code} before listening`)));
    });
    for (;;) {
      const ok = await fetch(`${url}/readyz`).then((r) => r.status === 200, () => false);
      if (ok) break;
      await sleep(10);
    }
    const ms = performance.now() - t;
    const rss = rssOf(child.pid!);
    await sleep(steadyMs);
    return { ms, rss, steadyRss: rssOf(child.pid!) };
  } finally {
    child.kill('SIGTERM');
    if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
  }
}

/** Deterministic vectors, the same on both backends. */
function vectors(seed: number, count: number): Float32Array[] {
  let s = seed >>> 0 || 1;
  return Array.from({ length: count }, () => {
    const v = new Float32Array(EMBEDDING_DIMENSION);
    for (let i = 0; i < v.length; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      v[i] = (s >>> 0) / 0xffffffff - 0.5;
    }
    return v;
  });
}

async function seed(db: Database, data: Float32Array[]): Promise<{ pid: string; insertMs: number[] }> {
  const pid = (
    await db.query<{ id: string }>(
      `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ('bench', 'Bench', 'p', now()) RETURNING id`,
    )
  ).rows[0]!.id;
  // The first rows one by one, as a bot stores them: the write latency.
  const insertMs: number[] = [];
  const single = Math.min(50, data.length);
  for (let i = 0; i < single; i++) {
    const t = performance.now();
    await insertMemory(db, { id: crypto.randomUUID(), personalityId: pid, channelId: `c${i % 4}`, content: `memory ${i}`, embedding: data[i]! });
    insertMs.push(performance.now() - t);
  }
  for (let i = single; i < data.length; i += 250) {
    await db.query(
      `INSERT INTO memories ("personalityId", "channelId", content, embedding)
       SELECT $1, 'c' || (o % 4), 'memory ' || o, e::vector FROM unnest($2::text[]) WITH ORDINALITY AS u(e, o)`,
      [pid, data.slice(i, i + 250).map((v) => pgvector.toSql(Array.from(v)))],
    );
  }
  // Centroids from the data, as on a database that had rows before the index.
  await db.query('REINDEX INDEX idx_memories_embedding');
  await db.query('ANALYZE memories');
  return { pid, insertMs };
}

async function searchP50(db: Database, pid: string, queries: Float32Array[]): Promise<{ p50: number; p95: number }> {
  for (const q of queries.slice(0, 10)) await searchMemories(db, { personalityId: pid, embedding: q, limit: 10 }); // warm
  const ms: number[] = [];
  for (const q of queries) {
    const t = performance.now();
    await searchMemories(db, { personalityId: pid, embedding: q, limit: 10 });
    ms.push(performance.now() - t);
  }
  return { p50: pct(ms, 50), p95: pct(ms, 95) };
}

/** Median of 5 full hot-set loads, vectors per second. */
async function loadRate(db: Database, pid: string, count: number): Promise<number> {
  const rates: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    const n = await streamPersonalityMemories(db, pid, count + 1, () => true);
    if (n !== count) throw new Error(`loaded ${n} of ${count}`);
    rates.push(n / ((performance.now() - t) / 1000));
  }
  return pct(rates, 50);
}

export async function benchEmbedded(options: EmbeddedBenchOptions = {}): Promise<EmbeddedBenchRow[]> {
  const adminUrl = options.adminUrl ?? process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
  const count = options.vectors ?? 1_000;
  const data = vectors(1, count);
  const queries = vectors(2, options.searches ?? 200);
  const rows: EmbeddedBenchRow[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'memory-sync-bench-'));
  const name = `ms_bench_embedded_${process.pid}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  let pool: pg.Pool | undefined;
  try {
    // PostgreSQL: a new database, migrated by the WASM schema engine.
    const u = new URL(adminUrl);
    u.pathname = `/${name}`;
    await admin.query(`DROP DATABASE IF EXISTS "${name}"`);
    let t = performance.now();
    await admin.query(`CREATE DATABASE "${name}"`);
    await migrate({ databaseUrl: u.toString(), migrationsDir: DEFAULT_MIGRATIONS_DIR, schemaPath: DEFAULT_SCHEMA_PATH });
    const pgCreateMs = performance.now() - t;
    pool = new pg.Pool({ connectionString: u.toString(), max: 2, options: '-c ivfflat.iterative_scan=relaxed_order -c ivfflat.probes=1' });

    // Start-up, each in a fresh process (timed from after the imports): a new
    // data directory (image + migrations), a reopen, and a pg.Pool's first
    // query as the baseline; then the path before issue 18 (initdb in
    // process) beside the new one, for a new directory and in memory.
    const steadyMs = options.steadyMs ?? 20_000;
    const embeddedModule = JSON.stringify(new URL('../src/backend/embedded.js', import.meta.url).href);
    const embeddedImports = `const { openEmbedded } = await import(${embeddedModule}); const pino = (await import('pino')).default;`;
    const open = (d: string | undefined, create: 'image' | 'initdb') =>
      `const e = await openEmbedded({ ${d ? `dataDir: ${JSON.stringify(d)}, ` : ''}create: '${create}', logger: pino({ level: 'silent' }) });
      const close = () => e.close();`;
    const cold = inFreshProcess(embeddedImports, open(dir, 'image'), steadyMs);
    const reopen = inFreshProcess(embeddedImports, open(dir, 'image'));
    const coldInitdb = inFreshProcess(embeddedImports, open(join(dir, 'initdb'), 'initdb'), steadyMs);
    const memory = inFreshProcess(embeddedImports, open(undefined, 'image'), steadyMs);
    const memoryInitdb = inFreshProcess(embeddedImports, open(undefined, 'initdb'), steadyMs);
    const server = inFreshProcess(
      `const pg = (await import('pg')).default;`,
      `const pool = new pg.Pool({ connectionString: ${JSON.stringify(u.toString())} });
      await pool.query('SELECT 1');
      const close = () => pool.end();`,
    );
    const before = 'before issue 18, same run: initdb in process';
    rows.push({ figure: 'cold start, new database', unit: 'ms', embedded: round(cold.ms), postgres: round(pgCreateMs), baseline: 'CREATE DATABASE + migrate on the server' });
    rows.push({ figure: 'cold start, new database (image vs initdb)', unit: 'ms', embedded: round(cold.ms), postgres: round(coldInitdb.ms), baseline: before, goal: 'faster than initdb', met: cold.ms < coldInitdb.ms });
    rows.push({ figure: 'reopen / connect', unit: 'ms', embedded: round(reopen.ms), postgres: round(server.ms), baseline: 'pg.Pool first query, fresh process' });
    rows.push({ figure: 'process RSS after open (new dir)', unit: 'MB', embedded: mb(cold.rss), postgres: mb(coldInitdb.rss), baseline: before });
    rows.push({ figure: `process RSS ${steadyMs / 1000} s after open (new dir)`, unit: 'MB', embedded: mb(cold.steadyRss), postgres: mb(coldInitdb.steadyRss), baseline: before });
    rows.push({ figure: 'process RSS after open (reopen)', unit: 'MB', embedded: mb(reopen.rss), postgres: mb(server.rss), baseline: 'pg.Pool, fresh process (server not counted)' });
    rows.push({ figure: 'process RSS after open (in memory)', unit: 'MB', embedded: mb(memory.rss), postgres: mb(memoryInitdb.rss), baseline: before });
    rows.push({ figure: `process RSS ${steadyMs / 1000} s after open (in memory)`, unit: 'MB', embedded: mb(memory.steadyRss), postgres: mb(memoryInitdb.steadyRss), baseline: before });

    // What a user sees: `memory-sync start` (npm start) on a new and on an
    // existing data directory, and createMemorySync({ embedded: { inMemory: true } }).
    // Baselines: issue 18's figures before the change (another machine, same
    // kind): 800 MB at ready falling to 330 MB, 291 MB after a reopen, 668 MB
    // in memory, 4–9 s of cold start.
    const sidecarDir = join(dir, 'sidecar');
    const fresh = await sidecarStart(sidecarDir, steadyMs);
    const again = await sidecarStart(sidecarDir, steadyMs);
    const recorded = 'recorded in issue 18 before the change';
    rows.push({ figure: 'sidecar, new data dir: spawn → /readyz 200', unit: 'ms', embedded: round(fresh.ms), postgres: RECORDED_BEFORE.coldStartMs[0], baseline: `${recorded} (4–9 s of cold start)`, goal: '≤ 2000 ms', met: fresh.ms <= 2_000 });
    rows.push({ figure: 'sidecar, new data dir: RSS at ready', unit: 'MB', embedded: mb(fresh.rss), postgres: RECORDED_BEFORE.newDirReadyMb, baseline: recorded, goal: '≤ 250 MB', met: mb(fresh.rss) <= 250 });
    rows.push({ figure: `sidecar, new data dir: RSS ${steadyMs / 1000} s after ready`, unit: 'MB', embedded: mb(fresh.steadyRss), postgres: RECORDED_BEFORE.newDirSteadyMb, baseline: `${recorded} (30–60 s after ready)`, goal: '≤ 200 MB', met: mb(fresh.steadyRss) <= 200 });
    rows.push({ figure: 'sidecar, reopen: spawn → /readyz 200', unit: 'ms', embedded: round(again.ms), postgres: round(fresh.ms), baseline: 'new data dir, same run', goal: '≤ 1000 ms', met: again.ms <= 1_000 });
    rows.push({ figure: `sidecar, reopen: RSS ${steadyMs / 1000} s after ready`, unit: 'MB', embedded: mb(again.steadyRss), postgres: RECORDED_BEFORE.reopenMb, baseline: recorded, goal: '≤ 200 MB', met: mb(again.steadyRss) <= 200 });
    const library = inFreshProcess(
      `const { createMemorySync } = await import(${JSON.stringify(new URL('../src/index.js', import.meta.url).href)});`,
      `const m = createMemorySync({ embedded: { inMemory: true }, summaryIntervalMs: 0 });
      await m.start();
      const close = () => m.close();`,
      steadyMs,
    );
    rows.push({ figure: 'library, inMemory: RSS after start()', unit: 'MB', embedded: mb(library.rss), postgres: RECORDED_BEFORE.inMemoryMb, baseline: recorded, goal: '≤ 250 MB', met: mb(library.rss) <= 250 });
    rows.push({ figure: `library, inMemory: RSS ${steadyMs / 1000} s after start()`, unit: 'MB', embedded: mb(library.steadyRss), postgres: mb(memoryInitdb.steadyRss), baseline: 'openEmbedded in memory, initdb path, same run', goal: '≤ 250 MB', met: mb(library.steadyRss) <= 250 });

    const embedded = await openEmbedded({ dataDir: dir, logger });
    try {
      const [e, p] = [embedded.queryable, postgresDatabase(pool)];
      const es = await seed(e, data);
      const ps = await seed(p, data);
      rows.push({ figure: 'insertMemory p50', unit: 'ms', embedded: round(pct(es.insertMs, 50), 2), postgres: round(pct(ps.insertMs, 50), 2), baseline: 'same call on PostgreSQL 15' });
      const esr = await searchP50(e, es.pid, queries);
      const psr = await searchP50(p, ps.pid, queries);
      rows.push({ figure: `pgvector search p50 (${count} vectors, limit 10)`, unit: 'ms', embedded: round(esr.p50, 2), postgres: round(psr.p50, 2), baseline: 'same query on PostgreSQL 15' });
      rows.push({ figure: `pgvector search p95 (${count} vectors, limit 10)`, unit: 'ms', embedded: round(esr.p95, 2), postgres: round(psr.p95, 2), baseline: 'same query on PostgreSQL 15' });
      rows.push({ figure: 'hot-set load rate', unit: 'vectors/s', embedded: Math.round(await loadRate(e, es.pid, count)), postgres: Math.round(await loadRate(p, ps.pid, count)), baseline: 'COPY TO STDOUT over pg' });
    } finally {
      await embedded.close();
    }
  } finally {
    await pool?.end();
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]).catch(() => {});
    await admin.query(`DROP DATABASE IF EXISTS "${name}"`).catch(() => {});
    await admin.end();
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const rows = await benchEmbedded({ ...(process.env.BENCH_QUICK === '1' ? { searches: 50, steadyMs: 5_000 } : {}) });
  const w = Math.max(...rows.map((r) => r.figure.length));
  console.log(`\nembedded (PGlite + pgvector) beside PostgreSQL, node ${process.version}\n`);
  console.log(`${'figure'.padEnd(w)}  ${'embedded'.padStart(10)}  ${'baseline'.padStart(10)}  unit        baseline is`);
  for (const r of rows) {
    const goal = r.goal ? `   goal ${r.goal} ${r.met ? 'ok' : 'MISS'}` : '';
    console.log(`${r.figure.padEnd(w)}  ${String(r.embedded).padStart(10)}  ${String(r.postgres).padStart(10)}  ${r.unit.padEnd(10)}  ${r.baseline}${goal}`);
  }
}
