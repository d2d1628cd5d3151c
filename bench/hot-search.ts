/**
 * Hot search (src/cache/hot/partition-set.ts) beside pgvector on the same
 * data, measured in one run:
 *
 *   npx tsx bench/hot-search.ts          (BENCH_QUICK=1 for a short run)
 *
 * `runHotSearchBench()` returns the figures for `npm run bench` to print;
 * `compareSearch()` times any hot search callback beside any SQL callbacks
 * the same way (the client-level figures reuse it).
 *
 * Data: clustered, embedding-like vectors and uniform random ones, in
 * collection-shaped tables (id uuid, partition, channel text, created_at,
 * embedding vector(d)) with the miss path's ivfflat index (lists = 50,
 * probes = 1, iterative relaxed_order), and an HNSW copy (ef_search = 100)
 * of the 100k set. The miss path's SQL shape is src/store/memories.ts's:
 * a MATERIALIZED top-k by `<=>`, reordered by distance, id. Exactness is
 * checked against the exact scan (no index) on every query. Each method is
 * timed in runs of its own, rotated, on the same queries. Uses its own
 * database, dropped at the end.
 */
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { PartitionSet, type HotQuery } from '../src/cache/hot/partition-set.js';
import { QuantizedRows } from './baselines/quantized-0.1.js';
import { NORM_SQRT_MAX, NORM_SQRT_MIN } from '../src/embedding.js';
import type { Figure } from './figure.js';

export type HotSearchFigure = Omit<Figure, 'goal' | 'met'> & { goal?: string; met?: boolean };

export interface HotSearchBenchOptions {
  /**
   * Server to create the bench database on.
   * @defaultValue BENCH_DATABASE_URL, TEST_DATABASE_URL, or the local trust-auth server — as bench/run.ts.
   */
  adminUrl?: string;
  /**
   * Fewer rows and iterations.
   * @defaultValue BENCH_QUICK === '1'
   */
  quick?: boolean;
  /**
   * Progress lines.
   * @defaultValue console.error
   */
  log?: (line: string) => void;
}

export type VectorKind = 'clustered' | 'uniform';

const K = 10;

// ---------------------------------------------------------------- data

/** xorshift32: deterministic data, so a figure can be reproduced. */
export function random(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

function gaussian(next: () => number): number {
  let u = 0;
  while (u === 0) u = next();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next());
}

function normalizeInto(v: Float64Array, out: Float32Array, offset: number): void {
  let s = 0;
  for (let j = 0; j < v.length; j++) s += v[j]! * v[j]!;
  const inv = 1 / Math.sqrt(s);
  for (let j = 0; j < v.length; j++) out[offset + j] = v[j]! * inv;
}

/**
 * Unit rows (row-major) and queries from one distribution.
 * `clustered` (embedding-like): uneven per-dimension spread (log-normal,
 * plus a few outlier dimensions), a shared mean direction, and topics of
 * skewed sizes with per-row topic weight and noise, so scores fall off
 * gradually from the best few (as real memories do) rather than in one
 * plateau per cluster. `uniform`: components uniform in [-1, 1].
 */
export function makeVectors(kind: VectorKind | 'embedding-like', seed: number, rows: number, queries: number, dim = 1536): { rows: Float32Array; queries: Float32Array[] } {
  const next = random(seed);
  const v = new Float64Array(dim);
  let point: (out: Float32Array, offset: number) => void;
  if (kind === 'uniform') {
    point = (out, offset) => {
      for (let j = 0; j < dim; j++) v[j] = next() * 2 - 1;
      normalizeInto(v, out, offset);
    };
  } else {
    const spread = Float64Array.from({ length: dim }, () => Math.exp(0.35 * gaussian(next)));
    for (let i = 0; i < 8; i++) spread[Math.floor(next() * dim)]! *= 4;
    const mean = Float64Array.from({ length: dim }, (_, j) => 0.55 * gaussian(next) * spread[j]!);
    const topicCount = Math.max(8, Math.round(rows / 50));
    const topics = Array.from({ length: topicCount }, () => Float64Array.from({ length: dim }, (_, j) => gaussian(next) * spread[j]!));
    point = (out, offset) => {
      const topic = topics[Math.floor(topicCount * next() * next())]!; // skewed: a few big topics
      const weight = 0.4 + 0.6 * next();
      const noise = 0.4 + 0.5 * next();
      for (let j = 0; j < dim; j++) v[j] = mean[j]! + weight * topic[j]! + noise * gaussian(next) * spread[j]!;
      normalizeInto(v, out, offset);
    };
  }
  const block = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) point(block, r * dim);
  const qs = Array.from({ length: queries }, () => {
    const q = new Float32Array(dim);
    point(q, 0);
    return q;
  });
  return { rows: block, queries: qs };
}

// ---------------------------------------------------------------- helpers

const now = () => performance.now();
export function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
const literal = (v: Float32Array) => `[${Array.from(v).join(',')}]`;

/** Single-core read bandwidth: memchr (Buffer.indexOf for an absent byte) over a filled buffer, in bytes per second. */
export function readBandwidth(bytes: number, iterations: number): number {
  const buf = Buffer.allocUnsafe(bytes).fill(7); // written, so every page is real memory
  const times: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t = now();
    if (buf.indexOf(1) !== -1) throw new Error('unexpected byte');
    times.push(now() - t);
  }
  return bytes / (pct(times, 50) / 1000);
}

/** One way of answering query `qi`: returns ids in order (or null: the hot path gave up). */
export type SearchCallback = (qi: number) => Promise<readonly string[] | null>;

export interface CompareResult {
  /** p50 / p99 per method name, in ms. */
  p50: Record<string, number>;
  p99: Record<string, number>;
  /** Share of the exact top-k each method returned, averaged over the queries. */
  recall: Record<string, number>;
  /** Queries each method answered exactly like the exact scan (same ids, same order). */
  exact: Record<string, number>;
  queries: number;
}

/**
 * Times `methods` (the first is usually the hot path) on `queries` query
 * indexes, each method in runs of its own (so one method's memory traffic
 * does not evict another's working set mid-measurement), runs rotated so
 * drift hits all alike. Correctness first: every query once through each
 * method, compared with `exact`.
 */
export async function compareSearch(options: {
  methods: Record<string, SearchCallback>;
  exact: SearchCallback;
  queries: number;
  iterations: number;
}): Promise<CompareResult> {
  const { methods, queries, iterations } = options;
  const names = Object.keys(methods);
  const out: CompareResult = { p50: {}, p99: {}, recall: {}, exact: {}, queries };
  for (const name of names) {
    out.recall[name] = 0;
    out.exact[name] = 0;
  }
  for (let qi = 0; qi < queries; qi++) {
    const want = (await options.exact(qi))!;
    const wanted = new Set(want);
    for (const name of names) {
      const got = (await methods[name]!(qi)) ?? [];
      out.recall[name]! += want.length === 0 ? 1 : got.filter((id) => wanted.has(id)).length / want.length;
      if (got.length === want.length && got.every((id, i) => id === want[i])) out.exact[name]!++;
    }
  }
  const times: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const runs = 4;
  const perRun = Math.ceil(iterations / runs);
  for (let run = 0; run < runs; run++) {
    for (let m = 0; m < names.length; m++) {
      const name = names[(m + run) % names.length]!;
      for (let i = 0; i < perRun; i++) {
        const qi = (run * perRun + i) % queries;
        const t = now();
        await methods[name]!(qi);
        times[name]!.push(now() - t);
      }
    }
  }
  for (const name of names) {
    out.p50[name] = pct(times[name]!, 50);
    out.p99[name] = pct(times[name]!, 99);
    out.recall[name] = round(out.recall[name]! / queries);
  }
  return out;
}

// ---------------------------------------------------------------- pgvector

interface SetData {
  name: string;
  kind: VectorKind;
  dim: number;
  size: number;
  partition: number;
  rows: Float32Array;
  queries: Float32Array[];
  ids: string[];
  channels: string[];
  createdAt: number[];
  table: string;
}

/** Binary COPY rows: id uuid, partition int4, channel text, created_at float8, embedding vector. */
function copyRows(set: SetData): Buffer[] {
  const out: Buffer[] = [];
  const header = Buffer.alloc(19);
  header.write('PGCOPY\n\xff\r\n\0', 0, 'latin1');
  out.push(header);
  const { dim } = set;
  for (let r = 0; r < set.size; r++) {
    const channel = Buffer.from(set.channels[r]!);
    const vecLen = 4 + 4 * dim;
    const b = Buffer.alloc(2 + 4 + 16 + 4 + 4 + 4 + channel.length + 4 + 8 + 4 + vecLen);
    let o = b.writeInt16BE(5, 0);
    o = b.writeInt32BE(16, o);
    o += Buffer.from(set.ids[r]!.replace(/-/g, ''), 'hex').copy(b, o);
    o = b.writeInt32BE(4, o);
    o = b.writeInt32BE(set.partition, o);
    o = b.writeInt32BE(channel.length, o);
    o += channel.copy(b, o);
    o = b.writeInt32BE(8, o);
    o = b.writeDoubleBE(set.createdAt[r]!, o);
    o = b.writeInt32BE(vecLen, o);
    o = b.writeInt16BE(dim, o);
    o = b.writeInt16BE(0, o);
    for (let j = 0; j < dim; j++) o = b.writeFloatBE(set.rows[r * dim + j]!, o);
    out.push(b);
  }
  const trailer = Buffer.alloc(2);
  trailer.writeInt16BE(-1, 0);
  out.push(trailer);
  return out;
}

async function loadSet(db: pg.Client, set: SetData): Promise<void> {
  const stream = db.query(copyFrom(`COPY ${set.table} (id, partition, channel, created_at, embedding) FROM STDIN (FORMAT binary)`));
  const chunks = copyRows(set);
  await pipeline(async function* () {
    yield* chunks;
  }, stream as unknown as Writable);
}

/** SQL for a hot `where` on the bench's columns (channel text, created_at), parameters from `params`. */
function sqlWhere(where: HotQuery['where'], params: unknown[]): string {
  const parts: string[] = [];
  for (const { column, condition } of where) {
    const col = column === 0 ? 'channel COLLATE "C"' : 'created_at';
    const cast = column === 0 ? 'text' : 'float8';
    const p = (v: unknown) => `$${params.push(v)}::${cast}`;
    if ('eq' in condition) parts.push(`${col} = ${p(condition.eq)}`);
    else if ('in' in condition) parts.push(`${col} = ANY($${params.push(condition.in)}::${cast}[])`);
    else if ('notIn' in condition) parts.push(`NOT (${col} = ANY($${params.push(condition.notIn)}::${cast}[]))`);
    else for (const [key, op] of [['lt', '<'], ['lte', '<='], ['gt', '>'], ['gte', '>=']] as const) if (condition[key] !== undefined) parts.push(`${col} ${op} ${p(condition[key])}`);
  }
  return parts.map((x) => ` AND ${x}`).join('');
}

/** The miss path's SQL shape (src/store/memories.ts searchMemories), with the filters; index-served. */
async function missPath(db: pg.Client, table: string, set: SetData, q: Float32Array, where: HotQuery['where'], k = K): Promise<string[]> {
  const params: unknown[] = [literal(q), set.partition, k];
  const filters = sqlWhere(where, params);
  const r = await db.query<{ id: string }>(
    `WITH hits AS MATERIALIZED (
       SELECT id, channel, created_at, embedding <=> $1::vector AS distance
       FROM ${table} WHERE partition = $2${filters}
       ORDER BY embedding <=> $1::vector LIMIT $3)
     SELECT * FROM hits ORDER BY distance, id`,
    params,
  );
  return r.rows.map((x) => x.id);
}

/** pgvector's exact answer: a sequential scan, the norm rule, ties by id. */
async function exactSql(db: pg.Client, set: SetData, q: Float32Array, where: HotQuery['where'], k = K): Promise<string[]> {
  const params: unknown[] = [literal(q), set.partition, k];
  const filters = sqlWhere(where, params);
  await db.query('BEGIN');
  try {
    await db.query('SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off');
    const r = await db.query<{ id: string }>(
      `SELECT id FROM ${set.table} WHERE partition = $2${filters}
         AND vector_norm(embedding) BETWEEN ${NORM_SQRT_MIN} AND ${NORM_SQRT_MAX}
       ORDER BY embedding <=> $1::vector, id LIMIT $3`,
      params,
    );
    return r.rows.map((x) => x.id);
  } finally {
    await db.query('COMMIT');
  }
}

async function withDatabase<T>(adminUrl: string, fn: (url: string) => Promise<T>): Promise<T> {
  const name = `ms_hot_bench_${process.pid}_${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE "${name}"`);
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  try {
    return await fn(u.toString());
  } finally {
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
    await admin.query(`DROP DATABASE IF EXISTS "${name}"`);
    await admin.end();
  }
}

// ---------------------------------------------------------------- hot

const CHANNELS = ['c0', 'c1', 'c2', 'c3'];

async function hotSet(set: SetData): Promise<{ hot: PartitionSet; buildMs: number }> {
  const hot = new PartitionSet(
    { dimension: set.dim, filters: [{ name: 'channel', kind: 'text' }, { name: 'createdAt', kind: 'number' }], idOrder: 'text' },
    set.size,
    { loading: true },
  );
  for (let r = 0; r < set.size; r++) {
    hot.upsert({ id: set.ids[r]!, embedding: set.rows.subarray(r * set.dim, (r + 1) * set.dim), filters: [set.channels[r]!, set.createdAt[r]!], values: [set.channels[r]] });
  }
  const t = now();
  if (!(await hot.build())) throw new Error('build lost a race');
  return { hot, buildMs: now() - t };
}

const hotIds = (hot: PartitionSet, set: SetData, where: HotQuery['where'] = [], k = K): SearchCallback => async (qi) => {
  const hits = await hot.search({ query: set.queries[qi]!, where, limit: k });
  return hits && hits.map((h) => h.id);
};

/** Per-query counters of the kernel (bytes read, rows scored), averaged over the queries. */
function kernelStats(hot: PartitionSet, set: SetData, where: HotQuery['where']): { bytes: number; emulated: number; scored: number; paths: string } {
  let bytes = 0;
  let emulated = 0;
  let scored = 0;
  const paths = new Set<string>();
  for (const q of set.queries) {
    const res = hot.searchNow({ query: q, where, limit: K })!;
    bytes += res.stats.bytes;
    emulated += res.stats.emulated;
    scored += res.stats.scored + res.stats.rescored;
    paths.add(res.stats.path);
  }
  const n = set.queries.length;
  return { bytes: bytes / n, emulated: emulated / n, scored: scored / n, paths: [...paths].join('+') };
}

/** The previous hot kernel (src/cache/hot/quantized.ts: a full int8 scan per query) on the same rows. */
function previousKernel(set: SetData): SearchCallback {
  const qr = new QuantizedRows(set.dim, set.size);
  qr.rebuild(set.rows, set.size); // bench rows are unit length, as the old hot set stored them
  return async (qi) => qr.search(set.queries[qi]!, set.rows, set.ids, { k: K }).hits.map((h) => set.ids[h.row]!);
}

/** Longest wall-clock gap between two turns of the event loop while `work` runs (a setImmediate ticker). */
export async function longestGap(work: () => Promise<void>): Promise<number> {
  let last = now();
  let longest = 0;
  let running = true;
  const tick = () => {
    const t = now();
    if (t - last > longest) longest = t - last;
    last = t;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  await work();
  running = false;
  const t = now();
  return Math.max(longest, t - last);
}

// ---------------------------------------------------------------- the bench

export async function runHotSearchBench(options: HotSearchBenchOptions = {}): Promise<HotSearchFigure[]> {
  const quick = options.quick ?? process.env.BENCH_QUICK === '1';
  const adminUrl =
    options.adminUrl ?? process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
  const log = options.log ?? ((line: string) => console.error(line));
  const figures: HotSearchFigure[] = [];
  const size = quick ? 2_000 : 10_000;
  const bigSize = quick ? 20_000 : 100_000;
  const iterations = quick ? 60 : 300;
  const queryCount = quick ? 20 : 50;

  log('generating…');
  const make = (name: string, kind: VectorKind, dim: number, n: number, partition: number, seed: number): SetData => {
    const { rows, queries } = makeVectors(kind, seed, n, queryCount, dim);
    const ids = Array.from({ length: n }, () => crypto.randomUUID());
    const next = random(seed + 1);
    return {
      name,
      kind,
      dim,
      size: n,
      partition,
      rows,
      queries,
      ids,
      channels: ids.map(() => CHANNELS[Math.floor(next() * 4)]!),
      createdAt: ids.map((_, i) => 1.7e12 + i * 1000),
      table: `bench_${dim}`,
    };
  };
  const c1536 = make('clustered', 'clustered', 1536, size, 1, 10_001);
  const u1536 = make('uniform', 'uniform', 1536, size, 2, 10_002);
  const c384 = make('clustered', 'clustered', 384, size, 1, 10_003);
  const big384 = make('clustered', 'clustered', 384, bigSize, 2, 10_004);

  return withDatabase(adminUrl, async (url) => {
    const db = new pg.Client({ connectionString: url, application_name: 'hot-search-bench' });
    await db.connect();
    try {
      log('loading pgvector…');
      await db.query('CREATE EXTENSION IF NOT EXISTS vector');
      await db.query('SET synchronous_commit = off');
      for (const dim of [1536, 384]) {
        await db.query(`CREATE TABLE bench_${dim} (id uuid PRIMARY KEY, partition int NOT NULL, channel text NOT NULL, created_at float8 NOT NULL, embedding vector(${dim}))`);
      }
      for (const set of [c1536, u1536, c384, big384]) await loadSet(db, set);
      await db.query(`SET maintenance_work_mem = '1GB'`);
      for (const dim of [1536, 384]) {
        await db.query(`CREATE INDEX ON bench_${dim} USING ivfflat (embedding vector_cosine_ops) WITH (lists = 50)`);
        await db.query(`CREATE INDEX ON bench_${dim} (partition)`);
      }
      log(`building HNSW on ${bigSize.toLocaleString('en')} × 384 (ef_construction 64, m 16)…`);
      await db.query(`CREATE TABLE bench_384_hnsw AS SELECT * FROM bench_384 WHERE partition = 2`);
      await db.query('CREATE INDEX ON bench_384_hnsw USING hnsw (embedding vector_cosine_ops)');
      await db.query('ANALYZE');
      // The pool's session settings (src/backend/pool.ts), plus HNSW's.
      await db.query(`SET ivfflat.iterative_scan = relaxed_order; SET ivfflat.probes = 1`);
      await db.query(`SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = 100`);

      const dram = readBandwidth(256 * 1024 * 1024, 8);

      // 1. 10k × 1536 clustered and uniform: hot beside the miss path's SQL, the previous kernel and the DRAM floor.
      const unfiltered: Record<string, number> = {};
      for (const set of [c1536, u1536]) {
        log(`searching ${set.kind} ${set.size} × ${set.dim}…`);
        const { hot, buildMs } = await hotSet(set);
        const cmp = await compareSearch({
          queries: set.queries.length,
          iterations,
          exact: (qi) => exactSql(db, set, set.queries[qi]!, []),
          methods: {
            hot: hotIds(hot, set),
            sql: (qi) => missPath(db, set.table, set, set.queries[qi]!, []),
            previous: previousKernel(set),
          },
        });
        const stats = kernelStats(hot, set, []);
        const fullScan = set.size * set.dim;
        const hotP50 = cmp.p50.hot!;
        unfiltered[set.kind] = hotP50;
        const label = `top-10, ${set.size.toLocaleString('en')} × ${set.dim} ${set.kind}, hot p50`;
        const exact = cmp.exact.hot === cmp.queries;
        figures.push({
          figure: `${label} vs miss-path SQL`,
          unit: 'ms',
          value: round(hotP50),
          baseline: round(cmp.p50.sql!),
          baselineName: `pgvector ivfflat probes=1 iterative p50, recall@10 ${cmp.recall.sql}`,
          goal: set.kind === 'clustered' ? '≥ 5× faster, exact' : 'exact',
          met: exact && (set.kind !== 'clustered' || cmp.p50.sql! / hotP50 >= 5),
          detail: { speedup: round(cmp.p50.sql! / hotP50, 1), exactQueries: `${cmp.exact.hot}/${cmp.queries}`, hotP99: round(cmp.p99.hot!), buildMs: round(buildMs) },
        });
        figures.push({
          figure: `${label} vs previous full int8 scan`,
          unit: 'ms',
          value: round(hotP50),
          baseline: round(cmp.p50.previous!),
          baselineName: 'src/cache/hot/quantized.ts (full int8 scan, exact in f64) p50',
          goal: 'no slower (≤ 1.1×), exact',
          met: exact && hotP50 <= 1.1 * cmp.p50.previous!,
          detail: { ratio: round(hotP50 / cmp.p50.previous!, 2) },
        });
        figures.push({
          figure: `${label} vs DRAM floor of its bytes`,
          unit: 'ms',
          value: round(hotP50),
          baseline: round((stats.bytes / dram) * 1000),
          baselineName: `${round(stats.bytes / 1e6, 2)} MB read per query ÷ ${round(dram / 1e9, 1)} GB/s single-core read (full int8 scan: ${round(fullScan / 1e6, 2)} MB, floor ${round((fullScan / dram) * 1000)} ms)`,
          detail: { bytesPerQuery: Math.round(stats.bytes), fullInt8ScanBytes: fullScan, rowsScoredPerQuery: round(stats.scored, 1), emulatedPerQuery: round(stats.emulated, 1), paths: stats.paths },
        });
        if (set.kind === 'clustered') {
          // 25% filter: one channel of four (the first declared column: its own blocks).
          const where = [{ column: 0, condition: { eq: 'c1' } }] as const;
          const f = await compareSearch({
            queries: set.queries.length,
            iterations,
            exact: (qi) => exactSql(db, set, set.queries[qi]!, where),
            methods: { hot: hotIds(hot, set, where), sql: (qi) => missPath(db, set.table, set, set.queries[qi]!, where) },
          });
          const fs = kernelStats(hot, set, where);
          figures.push({
            figure: `filter passing 25% (channel = c1), ${set.size.toLocaleString('en')} × ${set.dim} ${set.kind}, hot p50`,
            unit: 'ms',
            value: round(f.p50.hot!),
            baseline: round(hotP50),
            baselineName: 'unfiltered hot p50, same run',
            goal: '≤ 0.35× unfiltered, exact',
            met: f.exact.hot === f.queries && f.p50.hot! <= 0.35 * hotP50,
            detail: { ratio: round(f.p50.hot! / hotP50, 2), exactQueries: `${f.exact.hot}/${f.queries}`, sqlP50: round(f.p50.sql!), bytesPerQuery: Math.round(fs.bytes) },
          });
          // A 25% time window on a column the rows are not laid out by: zone maps cannot help.
          const t0 = set.createdAt[0]!;
          const window = [{ column: 1, condition: { gte: t0 + 0.25 * set.size * 1000, lt: t0 + 0.5 * set.size * 1000 } }] as const;
          const w = await compareSearch({
            queries: set.queries.length,
            iterations: Math.ceil(iterations / 2),
            exact: (qi) => exactSql(db, set, set.queries[qi]!, window),
            methods: { hot: hotIds(hot, set, window) },
          });
          figures.push({
            figure: `filter passing 25% (created_at window, not the layout column), hot p50`,
            unit: 'ms',
            value: round(w.p50.hot!),
            baseline: round(hotP50),
            baselineName: 'unfiltered hot p50, same run',
            goal: 'reported (exact)',
            met: w.exact.hot === w.queries,
            detail: { ratio: round(w.p50.hot! / hotP50, 2), exactQueries: `${w.exact.hot}/${w.queries}` },
          });
          figures.push({
            figure: `vector bytes per hot row, ${set.size.toLocaleString('en')} × ${set.dim}`,
            unit: 'B',
            value: round(hot.bytes / set.size, 1),
            baseline: set.dim * 4,
            baselineName: 'f32 vector alone',
            detail: { overPerRow: round(hot.bytes / set.size - set.dim * 4, 1) },
          });
          figures.push(...(await eventLoopFigures(hot, set)));
        }
      }

      // 2. 10k × 384.
      {
        log(`searching ${c384.kind} ${c384.size} × 384…`);
        const { hot } = await hotSet(c384);
        const cmp = await compareSearch({
          queries: c384.queries.length,
          iterations,
          exact: (qi) => exactSql(db, c384, c384.queries[qi]!, []),
          methods: { hot: hotIds(hot, c384), sql: (qi) => missPath(db, c384.table, c384, c384.queries[qi]!, []) },
        });
        figures.push({
          figure: `top-10, ${c384.size.toLocaleString('en')} × 384 clustered, hot p50`,
          unit: 'ms',
          value: round(cmp.p50.hot!),
          baseline: round(cmp.p50.sql!),
          baselineName: `miss-path SQL p50, recall@10 ${cmp.recall.sql}`,
          goal: 'p50 ≤ 0.3 ms, exact',
          met: cmp.exact.hot === cmp.queries && cmp.p50.hot! <= 0.3,
          detail: { speedup: round(cmp.p50.sql! / cmp.p50.hot!, 1), exactQueries: `${cmp.exact.hot}/${cmp.queries}`, hotP99: round(cmp.p99.hot!) },
        });
      }

      // 3. 100k × 384 in one partition, beside HNSW.
      {
        log(`searching ${big384.size} × 384…`);
        const { hot, buildMs } = await hotSet(big384);
        const hnsw = async (qi: number) => {
          const r = await db.query<{ id: string }>(
            `WITH hits AS MATERIALIZED (SELECT id, embedding <=> $1::vector AS distance FROM bench_384_hnsw ORDER BY embedding <=> $1::vector LIMIT $2)
             SELECT id FROM hits ORDER BY distance, id`,
            [literal(big384.queries[qi]!), K],
          );
          return r.rows.map((x) => x.id);
        };
        const cmp = await compareSearch({
          queries: big384.queries.length,
          iterations: Math.ceil(iterations / 2),
          exact: (qi) => exactSql(db, big384, big384.queries[qi]!, []),
          methods: { hot: hotIds(hot, big384), hnsw },
        });
        figures.push({
          figure: `top-10, ${big384.size.toLocaleString('en')} × 384 clustered (one partition), exact hot p50`,
          unit: 'ms',
          value: round(cmp.p50.hot!),
          baseline: round(cmp.p50.hnsw!),
          baselineName: `pgvector HNSW ef_search=100 p50, recall@10 ${cmp.recall.hnsw}`,
          goal: '≤ HNSW p50, recall 1.000',
          met: cmp.exact.hot === cmp.queries && cmp.p50.hot! <= cmp.p50.hnsw!,
          detail: { hotRecall: cmp.recall.hot!, exactQueries: `${cmp.exact.hot}/${cmp.queries}`, hotP99: round(cmp.p99.hot!), buildMs: round(buildMs) },
        });
      }
      void unfiltered;
      return figures;
    } finally {
      await db.end();
    }
  });
}

/**
 * The event-loop block of hot searches on the 10k set (unfiltered, a 25%
 * and a 5% filter, and adversarial near-ties that defeat every bound),
 * sliced (`search`) beside the same work unsliced (`searchNow`). Each runs 5
 * times and keeps its smallest longest-gap: other tenants of this shared
 * machine preempting the process would otherwise count as our block.
 */
async function eventLoopFigures(hot: PartitionSet, set: SetData): Promise<HotSearchFigure[]> {
  const cases: { name: string; set: PartitionSet; q: Float32Array[]; where: HotQuery['where'] }[] = [
    { name: 'top-10', set: hot, q: set.queries, where: [] },
    { name: '25% filter', set: hot, q: set.queries, where: [{ column: 0, condition: { eq: 'c2' } }] },
    { name: '5% filter', set: hot, q: set.queries, where: [{ column: 1, condition: { lt: set.createdAt[0]! + 0.05 * set.size * 1000 } }] },
  ];
  // Adversarial: one direction repeated with noise far below the int8 bound's resolution.
  const flat = makeVectors('uniform', 99, 1, 3, set.dim);
  const next = random(5);
  const adversarial = new PartitionSet({ dimension: set.dim, filters: [], idOrder: 'text' }, set.size);
  const v = new Float32Array(set.dim);
  for (let r = 0; r < set.size; r++) {
    for (let j = 0; j < set.dim; j++) v[j] = flat.rows[j]! * (1 + 1e-6 * (next() - 0.5));
    adversarial.upsert({ id: String(r).padStart(6, '0'), embedding: v, filters: [], values: [] });
  }
  await adversarial.build();
  cases.push({ name: 'adversarial near-ties', set: adversarial, q: flat.queries, where: [] });
  let sliced = { ms: 0, name: '' };
  let unsliced = { ms: 0, name: '' };
  const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
  for (const c of cases) {
    for (const q of c.q.slice(0, 5)) {
      let best = Infinity;
      let bestUnsliced = Infinity;
      for (let i = 0; i < 5; i++) {
        best = Math.min(best, await longestGap(async () => void (await c.set.search({ query: q, where: c.where, limit: K }))));
        await turn();
        bestUnsliced = Math.min(bestUnsliced, await longestGap(async () => void c.set.searchNow({ query: q, where: c.where, limit: K })));
        await turn();
      }
      if (best > sliced.ms) sliced = { ms: best, name: c.name };
      if (bestUnsliced > unsliced.ms) unsliced = { ms: bestUnsliced, name: c.name };
    }
  }
  return [
    {
      figure: `event-loop block, any hot search on ${set.size.toLocaleString('en')} × ${set.dim} (max, sliced)`,
      unit: 'ms',
      value: round(sliced.ms, 2),
      baseline: round(unsliced.ms, 2),
      baselineName: `unsliced, worst case: ${unsliced.name}`,
      goal: '≤ 2 ms',
      met: sliced.ms <= 2,
      detail: { worstSlicedCase: sliced.name },
    },
  ];
}

export function formatFigures(figures: HotSearchFigure[]): string {
  const width = Math.max(...figures.map((f) => f.figure.length));
  return figures
    .map((f) => {
      const mark = f.met === undefined ? '    ' : f.met ? 'ok  ' : 'MISS';
      const base = f.baseline === undefined ? '' : `   raw: ${f.baseline} ${f.unit} (${f.baselineName})`;
      const goal = f.goal ? `   goal: ${f.goal}` : '';
      const detail = f.detail ? `\n${' '.repeat(width + 6)}${Object.entries(f.detail).map(([k, v]) => `${k}=${v}`).join(' ')}` : '';
      return `${mark} ${f.figure.padEnd(width)}  ${String(f.value).padStart(9)} ${f.unit}${base}${goal}${detail}`;
    })
    .join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  runHotSearchBench()
    .then((figures) => {
      console.log(`\nhot search bench (PartitionSet beside pgvector, node ${process.version})\n`);
      console.log(formatFigures(figures));
    })
    .catch((err: unknown) => {
      console.error(err);
      process.exit(1);
    });
}
