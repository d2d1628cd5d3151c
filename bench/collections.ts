/**
 * Declared-collection search through the call a bot makes,
 * `memory.collection(name).search({ partition, where, embedding, limit })`,
 * beside the miss path through the same call (a second client whose hot sets
 * are off, so pgvector answers with memory-sync's own statement) and, for
 * 100k rows, pgvector's HNSW (ef_search 100) on the same rows. Every answer
 * is checked against the exact scan first. Issue 16's goals:
 *
 * - 10k × 1536 clustered: hot p50 ≥ 5× the miss path's;
 * - 10k × 384: hot p50 ≤ 0.3 ms;
 * - a filter passing 25%: ≤ 0.35× the unfiltered hot p50;
 * - 100k × 384 in one partition: exact hot p50 ≤ HNSW's, recall 1.000;
 * - memory per hot vector beside the float32 size.
 *
 *   npx tsx bench/collections.ts          (BENCH_QUICK=1 for a short run)
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import pino from 'pino';
import { adoptDeclaration } from '../src/capture/adopt.js';
import { createMemorySync, type MemorySync } from '../src/client/memory-sync.js';
import type { Declaration } from '../src/schema/declaration.js';
import type { Figure } from './figure.js';
import { compareSearch, makeVectors, pct, type VectorKind } from './hot-search.js';

const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
const literal = (v: Float32Array) => `[${Array.from(v).join(',')}]`;
const TAGS = ['a', 'b', 'c', 'd'];
const K = 10;

interface Part {
  dim: 384 | 1536;
  tenant: number;
  kind: VectorKind;
  size: number;
  rows: Float32Array;
  queries: Float32Array[];
  ids: string[];
}

const SCHEMA = (dims: number[]) => `datasource db {
  provider = "postgresql"
}
${dims
  .map(
    (d) => `
model BenchDoc${d} {
  id        String                  @id @db.Uuid
  tenant    Int
  tag       String
  score     Int
  embedding Unsupported("vector(${d})")?

  @@index([tenant])
  @@map("bench_docs_${d}")
}`,
  )
  .join('\n')}
`;

/** Binary COPY rows: id uuid, tenant int4, tag text, score int4, embedding vector. */
function* copyRows(p: Part): Generator<Buffer> {
  const header = Buffer.alloc(19);
  header.write('PGCOPY\n\xff\r\n\0', 0, 'latin1');
  yield header;
  const { dim } = p;
  for (let r = 0; r < p.size; r++) {
    const tag = Buffer.from(TAGS[r % 4]!);
    const vecLen = 4 + 4 * dim;
    const b = Buffer.alloc(2 + 4 + 16 + 4 + 4 + 4 + tag.length + 4 + 4 + 4 + vecLen);
    let o = b.writeInt16BE(5, 0);
    o = b.writeInt32BE(16, o);
    o += Buffer.from(p.ids[r]!.replace(/-/g, ''), 'hex').copy(b, o);
    o = b.writeInt32BE(4, o);
    o = b.writeInt32BE(p.tenant, o);
    o = b.writeInt32BE(tag.length, o);
    o += tag.copy(b, o);
    o = b.writeInt32BE(4, o);
    o = b.writeInt32BE((r * 7919) % 100, o); // score: 0..99, spread over the rows (not the layout column)
    o = b.writeInt32BE(vecLen, o);
    o = b.writeInt16BE(dim, o);
    o = b.writeInt16BE(0, o);
    for (let j = 0; j < dim; j++) o = b.writeFloatBE(p.rows[r * dim + j]!, o);
    yield b;
  }
  const trailer = Buffer.alloc(2);
  trailer.writeInt16BE(-1, 0);
  yield trailer;
}

type Where = { tag?: string; score?: { lt: number } };

function sqlFilter(where: Where | undefined, params: unknown[]): string {
  let s = '';
  if (where?.tag !== undefined) s += ` AND tag = $${params.push(where.tag)}`;
  if (where?.score !== undefined) s += ` AND score < $${params.push(where.score.lt)}`;
  return s;
}

/** The exact answer: no index, ties by id (uuid order = code-point order of the text). */
async function exact(db: pg.Client, p: Part, q: Float32Array, where?: Where): Promise<string[]> {
  const params: unknown[] = [literal(q), p.tenant, K];
  const r = await db.query<{ id: string }>(
    `SELECT id::text FROM bench_docs_${p.dim} WHERE tenant = $2 AND embedding IS NOT NULL${sqlFilter(where, params)}
      ORDER BY (embedding <=> $1::vector) + 0, id::text COLLATE "C" LIMIT $3`,
    params,
  );
  return r.rows.map((x) => x.id);
}

export async function benchCollections(options: { adminUrl?: string; quick?: boolean; log?: (l: string) => void } = {}): Promise<Figure[]> {
  const quick = options.quick ?? process.env.BENCH_QUICK === '1';
  const log = options.log ?? ((l: string) => console.error(l));
  const adminUrl = options.adminUrl ?? process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
  const size = quick ? 2_000 : 10_000;
  const big = quick ? 20_000 : 100_000;
  const queries = quick ? 20 : 40;
  const iterations = quick ? 80 : 300;
  const part = (dim: 384 | 1536, tenant: number, kind: VectorKind, n: number, seed: number): Part => {
    const { rows, queries: qs } = makeVectors(kind, seed, n, queries, dim);
    return { dim, tenant, kind, size: n, rows, queries: qs, ids: Array.from({ length: n }, () => crypto.randomUUID()) };
  };
  log('collections: generating…');
  const c1536 = part(1536, 1, 'clustered', size, 20_001);
  const u1536 = part(1536, 2, 'uniform', size, 20_002);
  const c384 = part(384, 1, 'clustered', size, 20_003);
  const big384 = part(384, 2, 'clustered', big, 20_004);

  const name = `ms_bench_col_${process.pid}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS "${name}"`);
  await admin.query(`CREATE DATABASE "${name}"`);
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  const url = u.toString();
  const db = new pg.Client({ connectionString: url });
  const clients: MemorySync<Declaration>[] = [];
  const figures: Figure[] = [];
  try {
    await db.connect();
    await db.query('CREATE EXTENSION IF NOT EXISTS vector');
    for (const d of [384, 1536]) {
      await db.query(`CREATE TABLE bench_docs_${d} (id uuid PRIMARY KEY, tenant int NOT NULL, tag text NOT NULL, score int NOT NULL, embedding vector(${d}))`);
      await db.query(`CREATE INDEX ON bench_docs_${d} (tenant)`);
    }
    log('collections: loading…');
    for (const p of [c1536, u1536, c384, big384]) {
      const stream = db.query(copyFrom(`COPY bench_docs_${p.dim} (id, tenant, tag, score, embedding) FROM STDIN (FORMAT binary)`));
      await pipeline(() => copyRows(p), stream as unknown as Writable);
    }
    // The 100k rows again, with pgvector's HNSW: the baseline for one large partition.
    log(`collections: HNSW on ${big.toLocaleString('en')} × 384…`);
    await db.query(`SET maintenance_work_mem = '1GB'`);
    await db.query(`CREATE TABLE bench_hnsw AS SELECT * FROM bench_docs_384 WHERE tenant = 2`);
    await db.query('CREATE INDEX ON bench_hnsw USING hnsw (embedding vector_cosine_ops)');

    const dir = mkdtempSync(join(tmpdir(), 'ms-bench-collections-'));
    writeFileSync(join(dir, 'schema.prisma'), SCHEMA([384, 1536]));
    const declaration = {
      schema: join(dir, 'schema.prisma'),
      collections: Object.fromEntries(
        [384, 1536].map((d) => [`docs${d}`, { model: `BenchDoc${d}`, embedding: 'embedding', partitionBy: ['tenant'], filters: ['tag', 'score'], index: { method: 'ivfflat', lists: 50 } }]),
      ),
    } as unknown as Declaration;
    writeFileSync(join(dir, 'memory-sync.config.json'), JSON.stringify(declaration));
    log('collections: adopt (triggers, ivfflat indexes)…');
    await adoptDeclaration({ databaseUrl: url, declaration: { declaration, source: 'bench', baseDir: dir }, migrationDir: null });
    await db.query('ANALYZE');

    const logger = pino({ level: 'silent' });
    const hot = createMemorySync<Declaration>({ databaseUrl: url, config: declaration, summaryIntervalMs: 0, logger, hotSets: { maxVectorsPerSet: big + 1, maxBytes: 2 ** 31 } });
    // Hot sets off (every partition "too large"): pgvector answers, through the same call.
    const miss = createMemorySync<Declaration>({ databaseUrl: url, config: declaration, summaryIntervalMs: 0, logger, hotSets: { maxVectorsPerSet: 1 } });
    clients.push(hot, miss);
    await Promise.all([hot.start(), miss.start()]);
    const search = (c: MemorySync<Declaration>, p: Part, where?: Where) => async (qi: number) =>
      (await c.collection(`docs${p.dim}`).search({ partition: { tenant: p.tenant }, embedding: p.queries[qi]!, limit: K, ...(where ? { where } : {}) })).map((h) => h.id);
    const warm = async (p: Part) => {
      hot.core.warm(`docs${p.dim}`, [String(p.tenant)]);
      await hot.core.settled(`docs${p.dim}`, [String(p.tenant)]);
      if (!hot.core.isServable(`docs${p.dim}`, [String(p.tenant)])) throw new Error(`tenant ${p.tenant} of docs${p.dim} did not become hot`);
    };
    const served = async (fn: () => Promise<unknown>) => {
      const before = hot.stats().hotSearches;
      await fn();
      return hot.stats().hotSearches - before;
    };

    // 1. 10k × 1536, clustered and uniform, and 10k × 384: hot beside the miss path.
    const unfiltered: Record<string, number> = {};
    for (const [p, goal] of [
      [c1536, '≥ 5× the miss path'],
      [u1536, 'exact; reported (no bound prunes uniform data)'],
      [c384, 'hot p50 ≤ 0.3 ms'],
    ] as const) {
      log(`collections: ${p.size} × ${p.dim} ${p.kind}…`);
      await warm(p);
      const hits = await served(() => search(hot, p)(0));
      if (hits !== 1) throw new Error('the hot client did not answer from memory');
      const cmp = await compareSearch({ queries: queries, iterations, exact: (qi) => exact(db, p, p.queries[qi]!), methods: { hot: search(hot, p), miss: search(miss, p) } });
      const h = cmp.p50.hot!;
      const m = cmp.p50.miss!;
      unfiltered[`${p.dim}-${p.kind}`] = h;
      const exactAll = cmp.exact.hot === cmp.queries;
      figures.push({
        figure: `collection().search top-10, ${p.size.toLocaleString('en')} × ${p.dim} ${p.kind}, hot p50`,
        unit: 'ms',
        value: round(h),
        baseline: round(m),
        baselineName: 'the same call, hot sets off (pgvector ivfflat, iterative scan)',
        goal,
        met: exactAll && (p === c1536 ? m / h >= 5 : p === c384 ? h <= 0.3 : true),
        detail: { speedup: round(m / h, 2), hotP99: round(cmp.p99.hot!), missP99: round(cmp.p99.miss!), exactHot: `${cmp.exact.hot}/${cmp.queries}`, missRecall: cmp.recall.miss! },
      });
    }

    // 2. Filters passing 25%: on the layout column (tag, the first filter) and on another (score < 25).
    for (const [where, what] of [
      [{ tag: 'a' }, 'tag = a (the layout column)'],
      [{ score: { lt: 25 } }, 'score < 25 (not the layout column)'],
    ] as const) {
      const p = c1536;
      const cmp = await compareSearch({ queries, iterations, exact: (qi) => exact(db, p, p.queries[qi]!, where), methods: { hot: search(hot, p, where), miss: search(miss, p, where) } });
      const h = cmp.p50.hot!;
      const base = unfiltered['1536-clustered']!;
      figures.push({
        figure: `filter passing 25%, ${what}, ${p.size.toLocaleString('en')} × 1536 clustered, hot p50`,
        unit: 'ms',
        value: round(h),
        baseline: round(base),
        baselineName: 'the unfiltered hot search, same run',
        goal: '≤ 0.35× unfiltered',
        met: cmp.exact.hot === cmp.queries && h <= 0.35 * base,
        detail: { ratio: round(h / base, 2), missP50: round(cmp.p50.miss!), exactHot: `${cmp.exact.hot}/${cmp.queries}` },
      });
    }

    // 3. 100k × 384 in one partition: exact hot beside HNSW (ef_search 100), recall beside recall.
    log(`collections: ${big.toLocaleString('en')} × 384…`);
    await warm(big384);
    const hnswClient = new pg.Client({ connectionString: url });
    await hnswClient.connect();
    await hnswClient.query('SET hnsw.ef_search = 100');
    const hnsw = async (qi: number) =>
      (
        await hnswClient.query<{ id: string }>(`SELECT id::text FROM bench_hnsw ORDER BY embedding <=> $1::vector LIMIT ${K}`, [literal(big384.queries[qi]!)])
      ).rows.map((x) => x.id);
    const cmp = await compareSearch({ queries, iterations: Math.round(iterations / 2), exact: (qi) => exact(db, big384, big384.queries[qi]!), methods: { hot: search(hot, big384), hnsw } });
    await hnswClient.end();
    figures.push({
      figure: `collection().search top-10, ${big.toLocaleString('en')} × 384 clustered (one partition), exact hot p50`,
      unit: 'ms',
      value: round(cmp.p50.hot!),
      baseline: round(cmp.p50.hnsw!),
      baselineName: 'pgvector HNSW, ef_search 100 (p50)',
      goal: '≤ HNSW p50, recall 1.000',
      met: cmp.p50.hot! <= cmp.p50.hnsw! && cmp.recall.hot === 1,
      detail: { hotRecall: cmp.recall.hot!, hnswRecall: cmp.recall.hnsw!, hotP99: round(cmp.p99.hot!), hnswP99: round(cmp.p99.hnsw!) },
    });

    // 4. Memory per hot vector, beside float32.
    for (const d of [1536, 384] as const) {
      const c = hot.stats().collections[`docs${d}`]!;
      figures.push({
        figure: `hot-set bytes per vector, ${d} dimensions (${c.vectors.toLocaleString('en')} vectors)`,
        unit: 'B',
        value: Math.round(c.bytes / c.vectors),
        baseline: 4 * d,
        baselineName: 'the float32 vector alone',
        goal: 'reported',
        met: true,
      });
    }
  } finally {
    for (const c of clients) await c.close().catch(() => {});
    await db.end().catch(() => {});
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
    await admin.query(`DROP DATABASE IF EXISTS "${name}"`);
    await admin.end();
  }
  return figures;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  benchCollections().then(
    (rows) => {
      for (const r of rows) console.log(`${r.met ? 'ok  ' : 'MISS'} ${r.figure}: ${r.value} ${r.unit}   baseline ${r.baseline} (${r.baselineName})   goal: ${r.goal}   ${JSON.stringify(r.detail ?? {})}`);
      process.exit(0);
    },
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
