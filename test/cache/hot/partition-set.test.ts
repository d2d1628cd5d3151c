import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { PartitionSet, type HotHit, type HotQuery, type HotRow, type PartitionSetSpec } from '../../../src/cache/hot/partition-set.js';
import { PGVECTOR_SEQUENTIAL, type PgvectorArithmetic } from '../../../src/cache/hot/int8/pgvector-distance.js';
import { searchable, NORM_SQRT_MAX, NORM_SQRT_MIN } from '../../../src/embedding.js';
import { connect, createDatabase, type TestDb } from '../../helpers/db.js';
import { random } from '../../helpers/random.js';
import { serverArithmetic } from '../../helpers/arithmetic.js';

/**
 * The hot answer equals pgvector's exact answer (a sequential scan, no
 * index) for the same predicate: same ids, same order, the same similarity
 * bits. The SQL side of each comparison is written here from the same
 * `where`, with the norm rule as vector_norm BETWEEN 2^-63 AND 2^63 and ids
 * in COLLATE "C" order.
 */

let db: TestDb;
let sql: pg.Client;
/** The server's own arithmetic: the sets here are compared with it bit for bit. */
let arithmetic: PgvectorArithmetic;

beforeAll(async () => {
  db = await createDatabase('ms_hot_ps');
  sql = await connect(db.url);
  await sql.query('CREATE EXTENSION IF NOT EXISTS vector');
  arithmetic = await serverArithmetic(sql);
  // Exact answers: never an index, whatever the planner thinks.
  await sql.query('SET enable_indexscan = off; SET enable_bitmapscan = off');
});

afterAll(async () => {
  await sql?.end();
  await db?.drop();
});

function gaussian(next: () => number): number {
  let u = 0;
  while (u === 0) u = next();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next());
}

function unit(v: ArrayLike<number>): Float32Array {
  let s = 0;
  for (let j = 0; j < v.length; j++) s += v[j]! * v[j]!;
  const inv = 1 / Math.sqrt(s);
  return Float32Array.from(v, (x) => x * inv);
}

/** Embedding-like: uneven per-dimension spread, a shared mean direction, clusters; not normalized (scales vary). */
function clustered(seed: number, dim: number, clusters = 8): () => Float32Array {
  const next = random(seed);
  const spread = Array.from({ length: dim }, () => Math.exp(0.5 * gaussian(next)));
  const mean = spread.map((s) => 0.6 * gaussian(next) * s);
  const centers = Array.from({ length: clusters }, () => spread.map((s, j) => mean[j]! + 0.7 * gaussian(next) * s));
  return () => {
    const c = centers[Math.floor(next() * clusters)]!;
    const noise = 0.3 + 0.5 * next();
    const scale = 0.5 + 3 * next();
    return Float32Array.from(c, (x, j) => scale * (x + noise * gaussian(next) * spread[j]!));
  };
}

const literal = (v: Float32Array) => `[${Array.from(v).join(',')}]`;

interface Table {
  name: string;
  spec: PartitionSetSpec;
  set: PartitionSet;
}

let tables = 0;

/** A table and a set with the same columns: id, filter columns f0.., embedding vector(dim). */
async function table(spec: PartitionSetSpec, options?: ConstructorParameters<typeof PartitionSet>[2]): Promise<Table> {
  const name = `t${++tables}`;
  const cols = spec.filters.map((f, i) => `f${i} ${f.kind === 'text' ? 'text' : 'float8'}`).join(', ');
  await sql.query(`CREATE TABLE ${name} (id ${spec.idOrder === 'text' ? 'text' : 'bigint'} PRIMARY KEY, ${cols ? `${cols}, ` : ''}embedding vector(${spec.dimension}))`);
  return { name, spec, set: new PartitionSet(spec, 4, { arithmetic, ...options }) };
}

async function upsert(t: Table, rows: HotRow[]): Promise<void> {
  for (const row of rows) t.set.upsert(row);
  const n = t.spec.filters.length;
  const cols = ['id', ...t.spec.filters.map((_, i) => `f${i}`), 'embedding'];
  for (let from = 0; from < rows.length; from += 500) {
    const part = rows.slice(from, from + 500);
    const params: unknown[] = [part.map((r) => r.id), ...Array.from({ length: n }, (_, i) => part.map((r) => r.filters[i])), part.map((r) => literal(r.embedding))];
    const types = [t.spec.idOrder === 'text' ? 'text[]' : 'bigint[]', ...t.spec.filters.map((f) => (f.kind === 'text' ? 'text[]' : 'float8[]')), 'text[]'];
    await sql.query(
      `INSERT INTO ${t.name} (${cols.join(', ')})
       SELECT ${cols.map((c) => (c === 'embedding' ? 'embedding::vector' : c)).join(', ')}
       FROM unnest(${types.map((ty, i) => `$${i + 1}::${ty}`).join(', ')}) AS u(${cols.join(', ')})
       ON CONFLICT (id) DO UPDATE SET ${cols.slice(1).map((c) => `${c} = EXCLUDED.${c}`).join(', ')}`,
      params,
    );
  }
}

async function remove(t: Table, ids: string[]): Promise<void> {
  for (const id of ids) expect(t.set.remove(id)).toBe(true);
  await sql.query(`DELETE FROM ${t.name} WHERE id::text = ANY($1::text[])`, [ids]);
}

/** The SQL predicate for a `where`, with its parameters from `$first` on. */
function predicate(t: Table, where: HotQuery['where'], params: unknown[]): string {
  const parts: string[] = [];
  const p = (v: unknown) => {
    params.push(v);
    return `$${params.length}`;
  };
  for (const { column, condition } of where) {
    const kind = t.spec.filters[column]!.kind;
    const col = kind === 'text' ? `f${column} COLLATE "C"` : `f${column}`;
    const cast = kind === 'text' ? 'text' : 'float8';
    if ('eq' in condition) parts.push(condition.eq === null ? `f${column} IS NULL` : `${col} = ${p(condition.eq)}::${cast}`);
    else if ('in' in condition) parts.push(`${col} = ANY(${p(condition.in)}::${cast}[])`);
    else if ('notIn' in condition) parts.push(`NOT (${col} = ANY(${p(condition.notIn)}::${cast}[]))`); // NULL stays NULL: not passed
    else {
      const ops = { lt: '<', lte: '<=', gt: '>', gte: '>=' } as const;
      for (const key of ['lt', 'lte', 'gt', 'gte'] as const) {
        const v = condition[key];
        if (v !== undefined) parts.push(`${col} ${ops[key]} ${p(v)}::${cast}`);
      }
    }
  }
  return parts.length ? parts.join(' AND ') : 'true';
}

/** pgvector's exact answer for `q`. */
async function exact(t: Table, q: HotQuery): Promise<{ id: string; similarity: number }[]> {
  const params: unknown[] = [literal(q.query), q.limit];
  const where = predicate(t, q.where, params);
  const min = q.minSimilarity === undefined ? '' : `AND 1 - (embedding <=> $1::vector) >= $${params.push(q.minSimilarity)}::float8`;
  const r = await sql.query<{ id: string; similarity: number }>(
    `SELECT id::text AS id, 1 - (embedding <=> $1::vector) AS similarity FROM ${t.name}
     WHERE ${where} AND vector_norm(embedding) BETWEEN ${NORM_SQRT_MIN} AND ${NORM_SQRT_MAX} ${min}
     ORDER BY embedding <=> $1::vector, ${t.name}.id${t.spec.idOrder === 'text' ? ' COLLATE "C"' : ''} LIMIT $2`,
    params,
  );
  return r.rows;
}

async function expectExact(t: Table, q: HotQuery): Promise<HotHit[]> {
  const hot = await t.set.search(q);
  expect(hot).not.toBeNull();
  const want = await exact(t, q);
  expect(hot!.map((h) => h.id)).toEqual(want.map((w) => w.id));
  // The same bits: pgvector's own arithmetic, reproduced.
  expect(hot!.map((h) => h.similarity)).toEqual(want.map((w) => w.similarity));
  return hot!;
}

function rowsOf(source: () => Float32Array, n: number, filters: (i: number) => (string | number | null)[], idOf = (i: number) => `r${String((i * 7919) % 100_003).padStart(6, '0')}`): HotRow[] {
  return Array.from({ length: n }, (_, i) => ({ id: idOf(i), embedding: source(), filters: filters(i), values: [i] }));
}

const CHANNELS = ['general', 'random', 'dm', 'ops', 'zeta', 'Ärger', '😀', '\uffee'];

describe('PartitionSet against pgvector', () => {
  it('equals the exact scan for every filter form and combination, with NULLs, before and after a build', async () => {
    const spec: PartitionSetSpec = {
      dimension: 384,
      filters: [
        { name: 'channel', kind: 'text' },
        { name: 'createdAt', kind: 'number' },
        { name: 'personality', kind: 'text' },
      ],
      idOrder: 'text',
    };
    const t = await table(spec, { chunkBytes: 200 * 384 }); // small blocks: zone maps really skip
    const next = random(3);
    const source = clustered(1, 384);
    await upsert(
      t,
      rowsOf(source, 1500, (i) => [i % 17 === 0 ? null : CHANNELS[i % CHANNELS.length]!, i % 23 === 0 ? null : Math.floor(next() * 1000), i % 3 === 0 ? 'p1' : i % 3 === 1 ? 'p2' : null]),
    );
    const queries = Array.from({ length: 3 }, () => unit(source()));
    const wheres: HotQuery['where'][] = [
      [],
      [{ column: 0, condition: { eq: 'general' } }],
      [{ column: 0, condition: { eq: null } }],
      [{ column: 2, condition: { eq: null } }],
      [{ column: 0, condition: { in: ['dm', '😀', 'nope'] } }],
      [{ column: 0, condition: { notIn: ['general', 'random'] } }],
      [{ column: 0, condition: { gte: 'r', lt: 'zz' } }],
      [{ column: 0, condition: { gt: '\uffed' } }], // code-point order: U+FFEE sorts after 😀
      [{ column: 0, condition: { lte: 'dm' } }],
      [{ column: 1, condition: { lt: 100 } }],
      [{ column: 1, condition: { gte: 900 } }],
      [{ column: 1, condition: { gt: 200, lte: 700 } }],
      [{ column: 1, condition: { eq: 500 } }],
      [{ column: 1, condition: { eq: null } }],
      [{ column: 1, condition: { in: [1, 2, 3, 500, 999] } }],
      [{ column: 1, condition: { notIn: [1, 2, 3] } }],
      [
        { column: 0, condition: { in: ['general', 'ops', 'zeta'] } },
        { column: 1, condition: { lt: 800 } },
        { column: 2, condition: { eq: 'p1' } },
      ],
      [
        { column: 0, condition: { notIn: ['dm'] } },
        { column: 1, condition: { gte: 10, lt: 20 } },
      ],
      [
        { column: 2, condition: { eq: 'p2' } },
        { column: 0, condition: { eq: 'ops' } },
      ],
      [{ column: 0, condition: { eq: 'absent' } }],
    ];
    for (const phase of ['unbuilt', 'built'] as const) {
      if (phase === 'built') expect(await t.set.build()).toBe(true);
      for (const where of wheres) {
        for (const q of queries) {
          await expectExact(t, { query: q, where, limit: 10 });
          await expectExact(t, { query: q, where, limit: 100 });
        }
      }
      // minSimilarity: exactly on a row's similarity (>= keeps it), between two, above all.
      const all = await exact(t, { query: queries[0]!, where: [], limit: 30 });
      const hits = await expectExact(t, { query: queries[0]!, where: [], limit: 30, minSimilarity: all[12]!.similarity });
      expect(hits).toHaveLength(13);
      await expectExact(t, { query: queries[0]!, where: [{ column: 0, condition: { eq: 'general' } }], limit: 30, minSimilarity: all[5]!.similarity });
      expect(await expectExact(t, { query: queries[0]!, where: [], limit: 5, minSimilarity: 1.01 })).toEqual([]);
    }
  });

  it('is exact at 2, 384, 768, 1536, 3072 and 16000 dimensions, and on one-row sets', async () => {
    for (const [dim, n] of [
      [2, 400],
      [384, 300],
      [768, 300],
      [1536, 300],
      [3072, 200],
      [16000, 40],
    ] as const) {
      const t = await table({ dimension: dim, filters: [{ name: 'c', kind: 'text' }], idOrder: 'text' });
      const source = clustered(dim, dim, 4);
      await upsert(t, rowsOf(source, 1, () => ['a']));
      const q0 = unit(source());
      await expectExact(t, { query: q0, where: [], limit: 5 });
      await expectExact(t, { query: q0, where: [{ column: 0, condition: { eq: 'b' } }], limit: 5 });
      expect(await t.set.build()).toBe(true);
      await expectExact(t, { query: q0, where: [], limit: 1 });
      await upsert(t, rowsOf(source, n, (i) => [i % 2 ? 'a' : 'b'], (i) => `x${i}`));
      expect(await t.set.build()).toBe(true);
      for (let i = 0; i < 3; i++) {
        const q = unit(source());
        await expectExact(t, { query: q, where: [], limit: 10 });
        await expectExact(t, { query: q, where: [{ column: 0, condition: { eq: 'a' } }], limit: 20 });
      }
    }
  });

  it('is exact on adversarial data: near-ties a float32 step apart, duplicates, mixed magnitudes, rows on minSimilarity', async () => {
    const dim = 768;
    const t = await table({ dimension: dim, filters: [{ name: 'c', kind: 'text' }], idOrder: 'text' });
    const next = random(9);
    const q = unit(Array.from({ length: dim }, () => next() * 2 - 1));
    const rows: HotRow[] = [];
    const base = Array.from({ length: 40 }, () => Float32Array.from({ length: dim }, () => next() * 2 - 1));
    for (let i = 0; i < 1200; i++) {
      let v: Float32Array;
      if (i < 300) {
        // a·q + b·u: scores a few float32 steps apart at 0.5
        const u = base[i % 40]!;
        let dot = 0;
        for (let j = 0; j < dim; j++) dot += u[j]! * q[j]!;
        const perp = unit(Array.from(u, (x, j) => x - dot * q[j]!));
        const a = 0.5 + (i % 7) * 2 ** -23;
        v = unit(Array.from(perp, (x, j) => a * q[j]! + Math.sqrt(1 - a * a) * x));
      } else if (i < 500) {
        v = Float32Array.from(base[i % 40]!); // duplicates: ties broken by id
      } else if (i < 700) {
        // the same directions at other magnitudes: pgvector's float32 sums differ by rounding only
        const scale = 2 ** ((i % 9) * 14 - 56);
        v = Float32Array.from(base[i % 40]!, (x) => x * scale);
      } else {
        v = Float32Array.from({ length: dim }, () => next() * 2 - 1);
      }
      rows.push({ id: `a${String(i).padStart(5, '0')}`, embedding: v, filters: [i % 2 ? 'odd' : 'even'], values: [] });
    }
    await upsert(t, rows);
    expect(await t.set.build()).toBe(true);
    for (const query of [q, unit(base[3]!), unit(Array.from({ length: dim }, () => next() - 0.5))]) {
      for (const limit of [1, 10, 50, 100]) {
        await expectExact(t, { query, where: [], limit });
        await expectExact(t, { query, where: [{ column: 0, condition: { eq: 'odd' } }], limit });
      }
      const all = await exact(t, { query, where: [], limit: 100 });
      for (const at of [0, 9, 49, 99]) {
        const hits = await expectExact(t, { query, where: [], limit: 100, minSimilarity: all[at]!.similarity });
        expect(hits.length).toBeGreaterThanOrEqual(at + 1);
      }
    }
  });

  it('applies the norm rule as the SQL side does: tiny, huge, zero and overflowing rows are stored and never returned', async () => {
    const dim = 64;
    const t = await table({ dimension: dim, filters: [], idOrder: 'text' });
    const next = random(21);
    const dir = () => Float32Array.from({ length: dim }, () => next() * 2 - 1);
    const q = unit(dir());
    const scaled = (v: Float32Array, s: number) => Float32Array.from(v, (x) => x * s);
    const one = new Float32Array(dim);
    one[5] = 2 ** -63; // squared norm exactly 2^-126: searchable, on the bound
    const below = new Float32Array(dim);
    below[5] = Math.fround(2 ** -63 * (1 - 2 ** -23)); // just below
    const special: [string, Float32Array, boolean][] = [
      ['tiny-underflow', scaled(q, 1e-30), false], // the row pgvector once ranked first at similarity 1
      ['zero', new Float32Array(dim), false],
      ['huge', scaled(dir(), 2 ** 70), false],
      ['at-min', one, true],
      ['below-min', below, false],
      ['small-ok', scaled(q, 2 ** -50), true],
      ['large-ok', scaled(dir(), 2 ** 55), true],
    ];
    for (const [, v, ok] of special) expect(searchable(v)).toBe(ok);
    const rows: HotRow[] = special.map(([id, v]) => ({ id, embedding: v, filters: [], values: [] }));
    for (let i = 0; i < 200; i++) rows.push({ id: `n${i}`, embedding: dir(), filters: [], values: [] });
    await upsert(t, rows);
    for (const phase of [0, 1]) {
      if (phase) expect(await t.set.build()).toBe(true);
      const hits = await expectExact(t, { query: q, where: [], limit: 100 });
      const ids = new Set(hits.map((h) => h.id));
      for (const [id, , ok] of special) if (!ok) expect(ids.has(id)).toBe(false);
      expect(hits[0]!.id).toBe('small-ok');
      expect(t.set.count).toBe(207);
    }
    // They stay reachable: an update makes one searchable, a delete removes another.
    await upsert(t, [{ id: 'tiny-underflow', embedding: scaled(q, 3), filters: [], values: [] }]);
    await remove(t, ['zero']);
    expect((await expectExact(t, { query: q, where: [], limit: 3 })).map((h) => h.id)).toContain('tiny-underflow');
  });

  it('stays exact through removes, re-upserts and rows moving between filter values (and blocks), then rebuilds', async () => {
    const dim = 256;
    const t = await table({ dimension: dim, filters: [{ name: 'c', kind: 'text' }, { name: 'n', kind: 'number' }], idOrder: 'text' }, { chunkBytes: 64 * dim });
    const source = clustered(5, dim);
    const next = random(6);
    await upsert(t, rowsOf(source, 900, (i) => [CHANNELS[i % 4]!, i]));
    expect(await t.set.build()).toBe(true);
    const live = new Set(rowsOf(source, 900, () => []).map((r) => r.id));
    for (let step = 0; step < 6; step++) {
      const ids = [...live];
      const gone = ids.filter(() => next() < 0.08);
      await remove(t, gone);
      for (const id of gone) live.delete(id);
      // moves: other channel, other number, other vector; and re-inserts of removed ids
      const moved = [...live].filter(() => next() < 0.1).map((id) => ({ id, embedding: source(), filters: [CHANNELS[Math.floor(next() * 8)]!, Math.floor(next() * 1000)], values: [] }));
      const back = gone.slice(0, 20).map((id) => ({ id, embedding: source(), filters: [CHANNELS[Math.floor(next() * 8)]!, null], values: [] }));
      await upsert(t, [...moved, ...back]);
      for (const r of back) live.add(r.id);
      const q = unit(source());
      await expectExact(t, { query: q, where: [], limit: 10 });
      await expectExact(t, { query: q, where: [{ column: 0, condition: { eq: CHANNELS[step % 8]! } }], limit: 10 });
      await expectExact(t, { query: q, where: [{ column: 0, condition: { in: [CHANNELS[(step + 1) % 8]!, CHANNELS[(step + 5) % 8]!] } }, { column: 1, condition: { lt: 600 } }], limit: 25 });
      await expectExact(t, { query: q, where: [{ column: 1, condition: { eq: null } }], limit: 10 });
      if (step === 3) expect(await t.set.build()).toBe(true);
    }
    expect(t.set.count).toBe(live.size);
  });

  it('orders numeric ids by value', async () => {
    const dim = 8;
    const t = await table({ dimension: dim, filters: [], idOrder: 'numeric' });
    const v = unit([1, 2, 3, 4, 5, 6, 7, 8]);
    const ids = ['10', '9', '-3', '100', '2', '9007199254740993', '-9007199254740993', '0'];
    await upsert(t, ids.map((id) => ({ id, embedding: v, filters: [], values: [id] })));
    expect(await t.set.build()).toBe(true);
    const hits = await expectExact(t, { query: v, where: [], limit: 8 });
    expect(hits.map((h) => h.values[0])).toEqual(['-9007199254740993', '-3', '0', '2', '9', '10', '100', '9007199254740993']);
  });

  it('with the server arithmetic unknown, is never wrong: exact where the answer is clear, null where pgvector’s rounding decides', async () => {
    const dim = 384;
    const t = await table({ dimension: dim, filters: [], idOrder: 'text' }, { arithmetic: null });
    const source = clustered(11, dim);
    await upsert(t, rowsOf(source, 600, () => []));
    const dup = source();
    await upsert(t, [{ id: 'dupA', embedding: dup, filters: [], values: [] }, { id: 'dupB', embedding: Float32Array.from(dup, (x) => x * 3), filters: [], values: [] }]);
    expect(await t.set.build()).toBe(true);
    let answered = 0;
    for (let i = 0; i < 5; i++) {
      const q = unit(source());
      const hot = await t.set.search({ query: q, where: [], limit: 10 });
      if (hot) {
        answered++;
        const want = await exact(t, { query: q, where: [], limit: 10 });
        expect(hot.map((h) => h.id)).toEqual(want.map((w) => w.id));
        hot.forEach((h, x) => expect(Math.abs(h.similarity - want[x]!.similarity)).toBeLessThanOrEqual(1e-6));
      }
    }
    expect(answered).toBeGreaterThan(0);
    // The same direction at two magnitudes: pgvector's rounding picks the order.
    expect(await t.set.search({ query: unit(dup), where: [], limit: 1 })).toBeNull();
  });

  it('never serves a loading set before its build', async () => {
    const dim = 1536;
    const t = await table({ dimension: dim, filters: [], idOrder: 'text' }, { loading: true });
    const source = clustered(13, dim);
    await upsert(t, rowsOf(source, 500, () => []));
    const q = unit(source());
    expect(await t.set.search({ query: q, where: [], limit: 5 })).toBeNull();
    expect(t.set.needsBuild).toBe(true);
    expect(await t.set.build()).toBe(true);
    expect(t.set.needsBuild).toBe(false);
    await expectExact(t, { query: q, where: [], limit: 5 });
  });

  it('gives up (null) when written meanwhile or no longer current, during a search that yields', async () => {
    // Never built: every row is scored, 20,000 × 1536 takes many 1 ms slices.
    const dim = 1536;
    const set = new PartitionSet({ dimension: dim, filters: [], idOrder: 'text' }, 20_000);
    const source = clustered(14, dim, 4);
    for (let i = 0; i < 20_000; i++) set.upsert({ id: `s${i}`, embedding: source(), filters: [], values: [] });
    const q = unit(source());
    const torn = set.search({ query: q, where: [], limit: 5 });
    set.remove('s0');
    expect(await torn).toBeNull();
    let current = true;
    const dropped = set.search({ query: q, where: [], limit: 5 }, () => current);
    current = false;
    expect(await dropped).toBeNull();
    expect(await set.search({ query: q, where: [], limit: 5 })).toHaveLength(5);
  });

  it('uses the arithmetic it is given (a sequential build would order near-ties differently)', async () => {
    // Not this server's arithmetic: answers may differ from pgvector on near-ties, never crash.
    const set = new PartitionSet({ dimension: 16, filters: [], idOrder: 'text' }, 4, { arithmetic: PGVECTOR_SEQUENTIAL });
    set.upsert({ id: 'a', embedding: unit(Array.from({ length: 16 }, (_, j) => j + 1)), filters: [], values: [] });
    expect((await set.search({ query: unit(Array.from({ length: 16 }, (_, j) => j + 1)), where: [], limit: 1 }))![0]!.id).toBe('a');
  });

  it('rejects rows and queries that do not fit the spec, changing nothing', async () => {
    const set = new PartitionSet({ dimension: 4, filters: [{ name: 'c', kind: 'text' }, { name: 'n', kind: 'number' }], idOrder: 'text' });
    expect(() => new PartitionSet({ dimension: 1, filters: [], idOrder: 'text' })).toThrow(RangeError);
    expect(() => new PartitionSet({ dimension: 16_001, filters: [], idOrder: 'text' })).toThrow(RangeError);
    expect(() => set.upsert({ id: 'a', embedding: new Float32Array(3), filters: ['x', 1], values: [] })).toThrow(RangeError);
    expect(() => set.upsert({ id: 'a', embedding: new Float32Array(4).fill(1), filters: ['x'], values: [] })).toThrow(RangeError);
    expect(() => set.upsert({ id: 'a', embedding: new Float32Array(4).fill(1), filters: [1, 1], values: [] })).toThrow(RangeError);
    expect(() => set.upsert({ id: 'a', embedding: new Float32Array(4).fill(1), filters: ['x', 'y'], values: [] })).toThrow(RangeError);
    expect(set.count).toBe(0);
    set.upsert({ id: 'a', embedding: new Float32Array(4).fill(1), filters: ['x', null], values: [{ deep: 1 }] });
    const q = unit([1, 1, 1, 1]);
    await expect(set.search({ query: new Float32Array(3), where: [], limit: 1 })).rejects.toThrow(RangeError);
    await expect(set.search({ query: q, where: [], limit: 0 })).rejects.toThrow(RangeError);
    await expect(set.search({ query: q, where: [], limit: 101 })).rejects.toThrow(RangeError);
    await expect(set.search({ query: q, where: [{ column: 2, condition: { eq: 'x' } }], limit: 1 })).rejects.toThrow(RangeError);
    await expect(set.search({ query: q, where: [{ column: 0, condition: { lt: 3 } }], limit: 1 })).rejects.toThrow(RangeError);
    await expect(set.search({ query: q, where: [{ column: 1, condition: { in: ['x'] } }], limit: 1 })).rejects.toThrow(RangeError);
    const [hit] = (await set.search({ query: q, where: [], limit: 1 }))!;
    expect(hit!.values).toEqual([{ deep: 1 }]);
    expect(Object.isFrozen(hit!.values)).toBe(true);
  });
});
