/**
 * Hot search with the quantized kernel (src/cache/hot/quantized.ts) beside
 * its baselines, measured in one run on the same data:
 *
 *   npx tsx bench/hot-search.ts          (BENCH_QUICK=1 for a short run)
 *
 * `runHotSearchBench()` returns the figures for `npm run bench` to print.
 * Data: clustered, embedding-like 1536-d vectors beside uniform random ones,
 * at 1,000 and 10,000 rows per set. Baselines: the per-row simsimd scan the
 * hot path used before, pgvector ivfflat (probes = 1, iterative scan: the miss
 * path) and pgvector HNSW (ef_search = 100), with recall@10 beside each
 * approximate figure. Each method is timed in runs of its own, rotated, on
 * the same queries. Uses its own database, dropped at the end.
 */
import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import pgvector from 'pgvector';
import { exactSearch, MetricKind } from 'usearch';
import { QuantizedRows, type QuantizedSearchOptions } from '../src/cache/hot/quantized.js';
import { migrate } from '../src/migrations/migrate.js';
import { DEFAULT_MIGRATIONS_DIR, DEFAULT_SCHEMA_PATH } from '../src/paths.js';

export interface HotSearchFigure {
  figure: string;
  unit: string;
  value: number;
  baseline?: number;
  baselineName?: string;
  goal?: string;
  met?: boolean;
  detail?: Record<string, number | string>;
}

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

export type VectorKind = 'embedding-like' | 'uniform';

const DIM = 1536;
const K = 10;

// ---------------------------------------------------------------- data

/** xorshift32: deterministic data, so a figure can be reproduced. */
function random(seed: number): () => number {
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
 * `embedding-like`: uneven per-dimension spread (log-normal, plus a few
 * outlier dimensions), a shared mean direction, and topics of skewed sizes
 * with per-row topic weight and noise, so scores fall off gradually from the
 * best few (as real memories do) rather than in one plateau per cluster.
 * `uniform`: components uniform in [-1, 1] (what bench/run.ts seeds).
 */
export function makeVectors(kind: VectorKind, seed: number, rows: number, queries: number, dim = DIM): { rows: Float32Array; queries: Float32Array[] } {
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

/** Exact top-k in f64 by brute force, SQL order (score desc, id asc). */
export function referenceTopK(
  rows: Float32Array,
  count: number,
  ids: ArrayLike<string>,
  query: Float32Array,
  options: QuantizedSearchOptions,
): { row: number; similarity: number }[] {
  const dim = query.length;
  const min = options.minSimilarity ?? -Infinity;
  const filter = options.filter;
  const all: { row: number; score: number }[] = [];
  for (let r = 0; r < count; r++) {
    if (filter && (typeof filter === 'function' ? !filter(r) : filter.column[r] !== filter.wanted)) continue;
    let s = 0;
    for (let j = 0; j < dim; j++) s += rows[r * dim + j]! * query[j]!;
    if (s >= min) all.push({ row: r, score: s });
  }
  all.sort((a, b) => b.score - a.score || (ids[a.row]! < ids[b.row]! ? -1 : ids[a.row]! > ids[b.row]! ? 1 : 0));
  return all.slice(0, options.k).map((x) => ({ row: x.row, similarity: Math.min(1, Math.max(-1, x.score)) }));
}

// ---------------------------------------------------------------- helpers

const now = () => performance.now();
function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;

interface SimsimdModule {
  inner: (a: Float32Array, b: Float32Array) => number;
}
function loadSimsimd(): SimsimdModule | undefined {
  try {
    return createRequire(import.meta.url)('simsimd') as SimsimdModule;
  } catch {
    return undefined;
  }
}

/** The hot path before this kernel: one simsimd call per row, insertion into a short sorted list. */
function perRowScan(simsimd: SimsimdModule, views: Float32Array[], ids: string[], query: Float32Array, k: number): number[] {
  const scores: number[] = [];
  const rows: number[] = [];
  for (let r = 0; r < views.length; r++) {
    const s = simsimd.inner(views[r]!, query);
    if (scores.length === k) {
      const worst = scores[k - 1]!;
      if (s < worst || (s === worst && ids[r]! > ids[rows[k - 1]!]!)) continue;
      scores.pop();
      rows.pop();
    }
    let i = scores.length;
    while (i > 0 && (scores[i - 1]! < s || (scores[i - 1] === s && ids[rows[i - 1]!]! > ids[r]!))) i--;
    scores.splice(i, 0, s);
    rows.splice(i, 0, r);
  }
  return rows;
}

/** Single-core read bandwidth: memchr (Buffer.indexOf for an absent byte) over a filled buffer. */
function readBandwidth(bytes: number, iterations: number): number {
  // Written, so every page is real memory (an untouched allocation maps one shared zero page).
  const buf = Buffer.allocUnsafe(bytes).fill(7);
  const times: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t = now();
    if (buf.indexOf(1) !== -1) throw new Error('unexpected byte');
    times.push(now() - t);
  }
  return bytes / (pct(times, 50) / 1000); // bytes per second
}

// ---------------------------------------------------------------- pgvector

interface SetData {
  kind: VectorKind;
  size: number;
  rows: Float32Array;
  queries: Float32Array[];
  ids: string[];
  channels: string[];
  personalityId?: string;
}

/** pgvector's binary COPY form: int16 dim, int16 unused, float4 big-endian. */
function copyRows(set: SetData): Buffer[] {
  const out: Buffer[] = [];
  const header = Buffer.alloc(19);
  header.write('PGCOPY\n\xff\r\n\0', 0, 'latin1');
  out.push(header); // flags and extension length stay 0
  const pid = Buffer.from(set.personalityId!.replace(/-/g, ''), 'hex');
  for (let r = 0; r < set.size; r++) {
    const channel = Buffer.from(set.channels[r]!);
    const content = Buffer.from(`${set.kind} ${set.ids[r]}`);
    const vecLen = 4 + 4 * DIM;
    const id = Buffer.from(set.ids[r]!.replace(/-/g, ''), 'hex');
    const b = Buffer.alloc(2 + 4 + 16 + 4 + 16 + 4 + channel.length + 4 + content.length + 4 + vecLen);
    let o = b.writeInt16BE(5, 0);
    o = b.writeInt32BE(16, o);
    o += id.copy(b, o);
    o = b.writeInt32BE(16, o);
    o += pid.copy(b, o);
    o = b.writeInt32BE(channel.length, o);
    o += channel.copy(b, o);
    o = b.writeInt32BE(content.length, o);
    o += content.copy(b, o);
    o = b.writeInt32BE(vecLen, o);
    o = b.writeInt16BE(DIM, o);
    o = b.writeInt16BE(0, o);
    for (let j = 0; j < DIM; j++) o = b.writeFloatBE(set.rows[r * DIM + j]!, o);
    out.push(b);
  }
  const trailer = Buffer.alloc(2);
  trailer.writeInt16BE(-1, 0);
  out.push(trailer);
  return out;
}

async function loadSet(db: pg.Client, set: SetData): Promise<void> {
  const { rows } = await db.query<{ id: string }>(
    `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, $1, 'prompt', now()) RETURNING id`,
    [`hot-${set.kind}-${set.size}`],
  );
  set.personalityId = rows[0]!.id;
  const stream = db.query(copyFrom(`COPY memories (id, "personalityId", "channelId", content, embedding) FROM STDIN (FORMAT binary)`));
  const chunks = copyRows(set);
  await pipeline(async function* () {
    yield* chunks;
  }, stream as unknown as Writable);
}

/** The miss path's SQL shape (src/store/memories.ts searchMemories), on `table`. */
function searchSql(table: string): string {
  return `WITH hits AS MATERIALIZED (
       SELECT id, content, "channelId", "createdAt", metadata, embedding <=> $1::vector AS distance
       FROM ${table} WHERE "personalityId" = $2
       ORDER BY embedding <=> $1::vector LIMIT $3)
     SELECT * FROM hits ORDER BY distance, id`;
}

async function withDatabase<T>(adminUrl: string, fn: (url: string) => Promise<T>): Promise<T> {
  const name = `ms_hot_bench_${process.pid}_${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE "${name}"`);
  const u = new URL(adminUrl);
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

// ---------------------------------------------------------------- the bench

export async function runHotSearchBench(options: HotSearchBenchOptions = {}): Promise<HotSearchFigure[]> {
  const quick = options.quick ?? process.env.BENCH_QUICK === '1';
  const adminUrl =
    options.adminUrl ?? process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
  const log = options.log ?? ((line: string) => console.error(line));
  const figures: HotSearchFigure[] = [];
  const large = quick ? 2_000 : 10_000;
  const sizes = [1_000, large];
  const kinds: VectorKind[] = ['embedding-like', 'uniform'];
  const iterations = quick ? 60 : 300;
  const queryCount = quick ? 20 : 50;
  const simsimd = loadSimsimd();

  log('generating…');
  const sets: SetData[] = [];
  for (const kind of kinds) {
    for (const size of sizes) {
      const { rows, queries } = makeVectors(kind, size + (kind === 'uniform' ? 1 : 0), size, queryCount);
      const ids = Array.from({ length: size }, () => crypto.randomUUID());
      sets.push({ kind, size, rows, queries, ids, channels: ids.map((_, i) => `c${i % 4}`) });
    }
  }

  return withDatabase(adminUrl, async (url) => {
    const db = new pg.Client({ connectionString: url, application_name: 'hot-search-bench' });
    await db.connect();
    try {
      log('loading pgvector…');
      await db.query('SET synchronous_commit = off');
      for (const set of sets) await loadSet(db, set);
      await db.query(`SET maintenance_work_mem = '1GB'`);
      await db.query('REINDEX INDEX idx_memories_embedding');
      log('building HNSW (ef_construction 64, m 16)…');
      await db.query(`CREATE TABLE memories_hnsw AS SELECT id, "personalityId", "channelId", content, "createdAt", metadata, embedding FROM memories`);
      const t0 = now();
      await db.query('CREATE INDEX ON memories_hnsw USING hnsw (embedding vector_cosine_ops)');
      const hnswBuildMs = now() - t0;
      await db.query('CREATE INDEX ON memories_hnsw ("personalityId")');
      await db.query('ANALYZE');
      // The pool's session settings (src/backend/pool.ts), plus HNSW's.
      await db.query(`SET ivfflat.iterative_scan = relaxed_order; SET ivfflat.probes = 1`);
      await db.query(`SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = 100`);

      for (const set of sets) {
        log(`searching ${set.kind} × ${set.size}…`);
        figures.push(...(await searchFigures(db, set, iterations, simsimd, set.size === large ? hnswBuildMs : undefined)));
      }
      log('filter, floor, event loop…');
      for (const set of sets.filter((s) => s.size === large)) figures.push(filterFigure(set, iterations));
      for (const set of sets.filter((s) => s.size === 1_000)) figures.push(floorFigure(set, iterations));
      figures.push(...(await eventLoopFigures(sets.filter((s) => s.size === large), large)));
      figures.push(bytesFigure(sets.find((s) => s.size === large)!));
      if (simsimd) figures.push(rescoreKernelFigure(sets.find((s) => s.size === large)!, simsimd));
      return figures;
    } finally {
      await db.end();
    }
  });
}

function build(set: SetData): { qr: QuantizedRows; buildMs: number } {
  const qr = new QuantizedRows(DIM, set.size);
  const t = now();
  qr.rebuild(set.rows, set.size);
  return { qr, buildMs: now() - t };
}

async function searchFigures(
  db: pg.Client,
  set: SetData,
  iterations: number,
  simsimd: SimsimdModule | undefined,
  hnswBuildMs: number | undefined,
): Promise<HotSearchFigure[]> {
  const { qr, buildMs } = build(set);
  const views = Array.from({ length: set.size }, (_, r) => set.rows.subarray(r * DIM, (r + 1) * DIM));
  const exact = set.queries.map((q) => referenceTopK(set.rows, set.size, set.ids, q, { k: K }));
  const hot: number[] = [];
  const old: number[] = [];
  const ivf: number[] = [];
  const hnsw: number[] = [];
  let rescored = 0;
  let scored = 0;
  let scans = 0;
  let hotExact = 0;
  const recall = { ivf: 0, hnsw: 0, hot: 0 };
  const recallOf = (got: string[], want: { row: number }[]) => {
    const w = new Set(want.map((x) => set.ids[x.row]!));
    return got.filter((id) => w.has(id)).length / want.length;
  };
  const literals = set.queries.map((q) => pgvector.toSql(Array.from(q)) as string);
  // Correctness first: every query once through each method.
  for (let qi = 0; qi < set.queries.length; qi++) {
    const q = set.queries[qi]!;
    const res = qr.search(q, set.rows, set.ids, { k: K });
    const a = await db.query<{ id: string }>(searchSql('memories'), [literals[qi], set.personalityId, K]);
    const b = await db.query<{ id: string }>(searchSql('memories_hnsw'), [literals[qi], set.personalityId, K]);
    const want = exact[qi]!;
    rescored += res.rescored;
    scored += res.scored;
    scans += res.scans;
    recall.hot += recallOf(res.hits.map((h) => set.ids[h.row]!), want);
    recall.ivf += recallOf(a.rows.map((r) => r.id), want);
    recall.hnsw += recallOf(b.rows.map((r) => r.id), want);
    const same = res.hits.length === want.length && res.hits.every((h, x) => h.row === want[x]!.row && Math.abs(h.similarity - want[x]!.similarity) <= 1e-6);
    if (same) hotExact++;
  }
  // Timing: each method in runs of its own (so one method's memory traffic does not
  // evict another's working set mid-measurement), runs rotated so drift hits all alike.
  const methods: { times: number[]; run: (qi: number) => Promise<unknown> | unknown }[] = [
    { times: hot, run: (qi) => qr.search(set.queries[qi]!, set.rows, set.ids, { k: K }) },
    { times: ivf, run: (qi) => db.query(searchSql('memories'), [literals[qi], set.personalityId, K]) },
    { times: hnsw, run: (qi) => db.query(searchSql('memories_hnsw'), [literals[qi], set.personalityId, K]) },
  ];
  if (simsimd) methods.push({ times: old, run: (qi) => perRowScan(simsimd, views, set.ids, set.queries[qi]!, K) });
  const runs = 4;
  const perRun = Math.ceil(iterations / runs);
  for (let run = 0; run < runs; run++) {
    for (let m = 0; m < methods.length; m++) {
      const { times, run: once } = methods[(m + run) % methods.length]!;
      for (let i = 0; i < perRun; i++) {
        const qi = (run * perRun + i) % set.queries.length;
        const t = now();
        await once(qi);
        times.push(now() - t);
      }
    }
  }
  const nq = set.queries.length;
  const p50 = pct(hot, 50);
  const ivf50 = pct(ivf, 50);
  const hnsw50 = pct(hnsw, 50);
  const hotRecall = round(recall.hot / nq);
  const label = `top-10, ${set.size.toLocaleString('en')} × ${DIM} ${set.kind}, hot p50`;
  const detail = {
    hotRecall,
    exactQueries: `${hotExact}/${nq}`,
    f32ScoredPerQuery: round(scored / nq, 1),
    f64RescoredPerQuery: round(rescored / nq, 1),
    scansPerQuery: round(scans / nq, 2),
    hotP99: round(pct(hot, 99)),
    buildMs: round(buildMs, 1),
  };
  const big = set.size > 1_000;
  const figures: HotSearchFigure[] = [
    {
      figure: `${label} vs ivfflat`,
      unit: 'ms',
      value: round(p50),
      baseline: round(ivf50),
      baselineName: `pgvector ivfflat probes=1 p50, recall@10 ${round(recall.ivf / nq)}`,
      goal: big ? '≥ 5× faster, recall 1.000' : 'faster, recall 1.000',
      met: (big ? ivf50 / p50 >= 5 : ivf50 > p50) && hotExact === nq,
      detail: { ...detail, speedup: round(ivf50 / p50, 1) },
    },
    {
      figure: `${label} vs HNSW`,
      unit: 'ms',
      value: round(p50),
      baseline: round(hnsw50),
      baselineName: `pgvector HNSW ef_search=100 p50, recall@10 ${round(recall.hnsw / nq)}`,
      goal: big ? '≥ 2× faster, recall 1.000' : 'faster, recall 1.000',
      met: (big ? hnsw50 / p50 >= 2 : hnsw50 > p50) && hotExact === nq,
      detail: { speedup: round(hnsw50 / p50, 1), ...(hnswBuildMs === undefined ? {} : { hnswBuildMsAllSets: round(hnswBuildMs) }) },
    },
  ];
  if (old.length > 0) {
    const old50 = pct(old, 50);
    figures.push({
      figure: `${label} vs per-row simsimd scan`,
      unit: 'ms',
      value: round(p50),
      baseline: round(old50),
      baselineName: 'previous hot kernel (exact f32, one simsimd call per row) p50',
      goal: 'faster',
      met: p50 < old50,
      detail: { speedup: round(old50 / p50, 1) },
    });
  }
  return figures;
}

function filterFigure(set: SetData, iterations: number): HotSearchFigure {
  const { qr } = build(set);
  const times: number[] = [];
  let scored = 0;
  let exactCount = 0;
  const options = (): QuantizedSearchOptions => ({ k: K, filter: { column: set.channels, wanted: 'c1' } });
  for (let i = 0; i < iterations; i++) {
    const q = set.queries[i % set.queries.length]!;
    const t = now();
    const res = qr.search(q, set.rows, set.ids, options());
    times.push(now() - t);
    if (i < set.queries.length) {
      scored += res.scored;
      const want = referenceTopK(set.rows, set.size, set.ids, q, options());
      if (res.hits.length === want.length && res.hits.every((h, x) => h.row === want[x]!.row)) exactCount++;
    }
  }
  const nq = Math.min(iterations, set.queries.length);
  const p50 = pct(times, 50);
  return {
    figure: `channel filter passing 25%, ${set.size.toLocaleString('en')} ${set.kind}, hot p50`,
    unit: 'ms',
    value: round(p50),
    goal: 'p50 ≤ 1 ms, exact',
    met: p50 <= 1 && exactCount === nq,
    detail: { exactQueries: `${exactCount}/${nq}`, f32ScoredPerQuery: round(scored / nq, 1), p99: round(pct(times, 99)) },
  };
}

function floorFigure(set: SetData, iterations: number): HotSearchFigure {
  const { qr } = build(set);
  const times: number[] = [];
  let scored = 0;
  for (let i = 0; i < iterations; i++) {
    const q = set.queries[i % set.queries.length]!;
    const t = now();
    const res = qr.search(q, set.rows, set.ids, { k: K });
    times.push(now() - t);
    scored += res.scored + res.rescored;
  }
  const p50 = pct(times, 50);
  // Bytes one query reads: the int8 block plus the f32 rows it scored, natively or in JS.
  const bytes = set.size * DIM + (scored / iterations) * DIM * 4;
  const dram = readBandwidth(256 * 1024 * 1024, 8);
  const cached = readBandwidth(set.size * DIM, 200);
  const floor = (bytes / dram) * 1000;
  return {
    figure: `top-10, ${set.size.toLocaleString('en')} ${set.kind}, hot p50 vs memory floor`,
    unit: 'ms',
    value: round(p50),
    baseline: round(floor),
    baselineName: `${round(bytes / 1e6, 2)} MB scanned ÷ ${round(dram / 1e9, 1)} GB/s single-core read`,
    goal: 'p50 ≤ 1.5× floor',
    met: p50 <= 1.5 * floor,
    detail: {
      ratio: round(p50 / floor, 2),
      cacheResidentGBs: round(cached / 1e9, 1),
      floorAtCacheSpeedMs: round((bytes / cached) * 1000, 4),
    },
  };
}

/** Longest wall-clock gap between two turns of the event loop while `work` runs (a setImmediate ticker). */
async function longestGap(work: () => Promise<void>): Promise<number> {
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

/**
 * The event-loop block of every kind of hot search on the large sets,
 * including an adversarial one (all rows tied within the bound: every row
 * scored), sliced (`searchSliced`, budget 1 ms) beside unsliced (`search`).
 * Each search runs 5 times and keeps its smallest longest-gap: other tenants
 * of this shared machine preempting the process would otherwise be counted
 * as our block.
 */
async function eventLoopFigures(sets: SetData[], size: number): Promise<HotSearchFigure[]> {
  const cases: { name: string; set: SetData; qr: QuantizedRows; options: QuantizedSearchOptions }[] = [];
  for (const set of sets) {
    const { qr } = build(set);
    cases.push({ name: `${set.kind} top-10`, set, qr, options: { k: K } });
    cases.push({ name: `${set.kind} 25% filter`, set, qr, options: { k: K, filter: { column: set.channels, wanted: 'c1' } } });
    // ~5% pass: served by scoring the passing rows alone
    cases.push({ name: `${set.kind} 5% filter`, set, qr, options: { k: K, filter: (r) => set.channels[r] === 'c2' && r % 5 === 0 } });
  }
  // Adversarial: one direction repeated with noise far below the bound's resolution.
  const flat = makeVectors('uniform', 99, 1, 3);
  const rows = new Float32Array(size * DIM);
  const noise = random(5);
  for (let r = 0; r < size; r++) for (let j = 0; j < DIM; j++) rows[r * DIM + j] = flat.rows[j]! * (1 + 1e-6 * (noise() - 0.5));
  const ids = Array.from({ length: size }, (_, i) => String(i).padStart(6, '0'));
  const flatSet: SetData = { kind: 'uniform', size, rows, queries: flat.queries, ids, channels: ids };
  const flatQr = new QuantizedRows(DIM, size);
  flatQr.rebuild(rows, size);
  cases.push({ name: 'adversarial near-ties', set: flatSet, qr: flatQr, options: { k: K } });

  const repeats = 5;
  const yieldTurn = () => new Promise<void>((resolve) => setImmediate(resolve));
  let sliced = { ms: 0, name: '' };
  let unsliced = { ms: 0, name: '' };
  let adversarialPath = '';
  for (const c of cases) {
    for (const q of c.set.queries.slice(0, 5)) {
      let best = Infinity;
      let bestUnsliced = Infinity;
      for (let i = 0; i < repeats; i++) {
        best = Math.min(
          best,
          await longestGap(async () => {
            const res = await c.qr.searchSliced(q, c.set.rows, c.set.ids, c.options, { budgetMs: 1 });
            if (c.set === flatSet) adversarialPath = `${res?.path}, ${res?.scored} scored, ${res?.rescored} rescored`;
          }),
        );
        await yieldTurn();
        bestUnsliced = Math.min(
          bestUnsliced,
          await longestGap(async () => {
            c.qr.search(q, c.set.rows, c.set.ids, c.options);
          }),
        );
        await yieldTurn();
      }
      if (best > sliced.ms) sliced = { ms: best, name: c.name };
      if (bestUnsliced > unsliced.ms) unsliced = { ms: bestUnsliced, name: c.name };
    }
  }
  return [
    {
      figure: `event-loop block, any hot search on ${size.toLocaleString('en')} (max, sliced)`,
      unit: 'ms',
      value: round(sliced.ms, 2),
      baseline: round(unsliced.ms, 2),
      baselineName: `unsliced search, worst case: ${unsliced.name}`,
      goal: '≤ 2 ms',
      met: sliced.ms <= 2,
      detail: { worstSlicedCase: sliced.name, adversarial: adversarialPath },
    },
  ];
}

function bytesFigure(set: SetData): HotSearchFigure {
  const { qr } = build(set);
  const f32 = set.size * DIM * 4;
  return {
    figure: `vector bytes per row, ${set.size.toLocaleString('en')} × ${DIM}`,
    unit: 'B',
    value: round((f32 + qr.bytes) / set.size, 1),
    baseline: f32 / set.size,
    baselineName: 'f32 rows only (before)',
    detail: { int8CopyPerRow: round(qr.bytes / set.size, 1) },
  };
}

/** f64 dot of a row with q, as the kernel's final rescore computes it. */
function dotF64(rows: Float32Array, off: number, q: Float64Array): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  for (let j = 0; j < DIM; j += 4) {
    s0 += rows[off + j]! * q[j]!;
    s1 += rows[off + j + 1]! * q[j + 1]!;
    s2 += rows[off + j + 2]! * q[j + 2]!;
    s3 += rows[off + j + 3]! * q[j + 3]!;
  }
  return s0 + s1 + s2 + s3;
}

/**
 * Whether simsimd still earns its place: scoring the ~30 candidate rows of a
 * query with plain JS (f64), with usearch (gathered, one f32 call: what the
 * kernel does before its f64 rescore of the final ~k), and with simsimd.
 */
function rescoreKernelFigure(set: SetData, simsimd: SimsimdModule): HotSearchFigure {
  const rowsToScore = 30;
  const q = set.queries[0]!;
  const q64 = new Float64Array(q);
  const views = Array.from({ length: set.size }, (_, r) => set.rows.subarray(r * DIM, (r + 1) * DIM));
  const scratch = new Float32Array(rowsToScore * DIM);
  const next = random(17);
  let sink = 0;
  const js: number[] = [];
  const simd: number[] = [];
  const native: number[] = [];
  for (let rep = 0; rep < 600; rep++) {
    const picks = Array.from({ length: rowsToScore }, () => Math.floor(next() * set.size)); // cold rows, as in a search
    const order = rep % 3;
    for (let m = 0; m < 3; m++) {
      const which = (m + order) % 3;
      const t = now();
      if (which === 0) {
        for (const r of picks) sink += dotF64(set.rows, r * DIM, q64);
        js.push(now() - t);
      } else if (which === 1) {
        for (const r of picks) sink += simsimd.inner(views[r]!, q);
        simd.push(now() - t);
      } else {
        picks.forEach((r, i) => scratch.set(views[r]!, i * DIM));
        const found = exactSearch(scratch, q, DIM, rowsToScore, MetricKind.IP, 1);
        sink += found.distances[0]!;
        native.push(now() - t);
      }
    }
  }
  if (Number.isNaN(sink)) throw new Error('sink');
  return {
    figure: `score ${rowsToScore} candidate rows (${DIM}-d), usearch gathered f32`,
    unit: 'µs',
    value: round(pct(native, 50) * 1000, 1),
    baseline: round(pct(simd, 50) * 1000, 1),
    baselineName: 'simsimd.inner per row',
    detail: { plainJsF64Us: round(pct(js, 50) * 1000, 1) },
  };
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
      console.log(`\nhot search bench (quantized int8 + exact rescore, node ${process.version})\n`);
      console.log(formatFigures(figures));
    })
    .catch((err: unknown) => {
      console.error(err);
      process.exit(1);
    });
}
