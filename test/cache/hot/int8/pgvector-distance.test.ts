import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import {
  fmaF32,
  KNOWN_ARITHMETIC,
  matchesPgvector,
  PGVECTOR_AVX2_FMA,
  PGVECTOR_AVX512_FMA,
  PGVECTOR_NEON_FMA,
  PGVECTOR_SEQUENTIAL,
  pgvectorDistance,
  pgvectorDot,
  pgvectorError,
  probeVectors,
  type PgvectorArithmetic,
} from '../../../../src/cache/hot/int8/pgvector-distance.js';
import { connect, createDatabase, type TestDb } from '../../../helpers/db.js';
import { random } from '../../../helpers/random.js';
import { serverArithmetic } from '../../../helpers/arithmetic.js';

let db: TestDb;
let sql: pg.Client;
/** The arithmetic of this server's vector.so (the probe finds it; each shape is checked below). */
let arithmetic: PgvectorArithmetic;

beforeAll(async () => {
  db = await createDatabase('ms_hot_pgd');
  sql = await connect(db.url);
  await sql.query('CREATE EXTENSION IF NOT EXISTS vector');
  arithmetic = await serverArithmetic(sql);
});

afterAll(async () => {
  await sql?.end();
  await db?.drop();
});

const literal = (v: Float32Array) => `[${Array.from(v).join(',')}]`;

async function serverDistances(rows: Float32Array[], q: Float32Array): Promise<number[]> {
  const r = await sql.query<{ d: number }>(
    `SELECT (x::vector <=> $1::vector) AS d FROM unnest($2::text[]) WITH ORDINALITY AS t(x, o) ORDER BY o`,
    [literal(q), rows.map(literal)],
  );
  return r.rows.map((x) => x.d);
}

/** Exact rational value of a double, as BigInt numerator over 2^1100. */
function exact(x: number): bigint {
  if (x === 0) return 0n;
  const buf = new DataView(new ArrayBuffer(8));
  buf.setFloat64(0, x);
  const bits = buf.getBigUint64(0);
  const sign = bits >> 63n ? -1n : 1n;
  const e = Number((bits >> 52n) & 0x7ffn);
  const m = bits & ((1n << 52n) - 1n);
  const mant = e === 0 ? m : m | (1n << 52n);
  const shift = (e === 0 ? 1 : e) - 1075 + 1100;
  return sign * (mant << BigInt(shift));
}

/** Σ 1·b over n elements, b zero but at the given positions, in an arithmetic: where 2^24 + 1 rounds shows the summation order. */
const big = 2 ** 24;
function dot(n: number, at: Record<number, number>, arithmetic: PgvectorArithmetic): number {
  const b = new Float32Array(n);
  for (const [k, v] of Object.entries(at)) b[Number(k)] = v;
  return pgvectorDot(new Float32Array(n).fill(1), b, arithmetic);
}

describe('pgvector distance, reproduced', () => {
  it('matches the server bit for bit at every dimension shape, on mixed, tiny and huge magnitudes', async () => {
    const next = random(12345);
    for (const dim of [1, 2, 3, 4, 5, 7, 8, 9, 11, 12, 13, 15, 16, 17, 100, 384, 767, 1536, 3072, 16000]) {
      const rows = Array.from({ length: 12 }, (_, r) =>
        Float32Array.from({ length: dim }, () => (next() - 0.5) * [1e-20, 1, 1e15][r % 3]! * (next() < 0.1 ? 1000 : 1)),
      );
      const q = Float32Array.from({ length: dim }, () => next() - 0.5);
      const server = await serverDistances(rows, q);
      rows.forEach((row, i) => expect(Object.is(pgvectorDistance(row, q, arithmetic), server[i]), `${arithmetic.name}, dim ${dim}, row ${i}`).toBe(true));
    }
  });

  it('tells the server’s arithmetic from the others with the probe vectors, at every dimension', async () => {
    for (const dim of [16, 384, 1536]) {
      const { rows, query } = probeVectors(dim);
      const server = await serverDistances(rows, query);
      expect(KNOWN_ARITHMETIC.filter((a) => matchesPgvector(dim, server, a))).toEqual([arithmetic]);
    }
  });

  it('the probe vectors tell the known arithmetics apart wherever they sum differently', () => {
    const next = random(7);
    let told = 0;
    for (const dim of [2, 5, 9, 16, 17, 24, 32, 40, 100, 384, 1536, 3072]) {
      const { rows, query } = probeVectors(dim);
      const sample = Array.from({ length: 64 }, (_, r) => Float32Array.from({ length: dim }, () => (next() - 0.5) * 2 ** ((r % 9) - 4)));
      for (const a of KNOWN_ARITHMETIC) {
        const own = rows.map((row) => pgvectorDistance(row, query, a));
        for (const b of KNOWN_ARITHMETIC) {
          if (!matchesPgvector(dim, own, b)) {
            told++;
            continue;
          }
          // Taken for a: then b sums as a does at this dimension (below 16 or at 24, the lane shapes can coincide).
          for (const row of sample) expect(pgvectorDistance(row, query, b), `${a.name} taken for ${b.name} at ${dim}`).toBe(pgvectorDistance(row, query, a));
        }
      }
    }
    expect(told).toBeGreaterThan(50);
  });

  it('the 16-lane shape: lanes folded (l, l+8), then one 8-lane step for a remainder of 8–15, before the 8 are folded', () => {
    // Sums of 1 and ±2^24 (whose float32 neighbours are 2 apart): exact but where 2^24 + 1 rounds back to 2^24, so where that
    // happens tells the orders apart.
    // n = 32: lane 0 holds elements 0 and 16 (big − big), lane 8 elements 8 and 24; the 8-lane chain adds 0, 8, 16 in turn.
    expect(dot(32, { 0: big, 8: 1, 16: -big }, PGVECTOR_AVX512_FMA)).toBe(1);
    expect(dot(32, { 0: big, 8: 1, 16: -big }, PGVECTOR_AVX2_FMA)).toBe(0);
    expect(dot(32, { 0: big, 8: 1, 16: -big }, PGVECTOR_SEQUENTIAL)).toBe(0);
    // n = 40: elements 32–39 are one 8-lane step onto the folded lanes (32 onto 0), not added one by one after the last fold.
    expect(dot(40, { 0: big, 32: -big, 1: 1 }, PGVECTOR_AVX512_FMA)).toBe(1);
    expect(dot(40, { 0: big, 32: -big, 1: 1 }, PGVECTOR_SEQUENTIAL)).toBe(0);
  });

  it('the 4-lane shape (aarch64 NEON): lanes every 4th element from 4 elements on, folded pairwise, then the last 1–3 one by one', () => {
    // Checked bit for bit against pgvector's loop built by GCC 12 for aarch64, run under qemu-aarch64 (2,928 of 2,928 distances).
    // n = 4: (big + 1) folds first and rounds to big; the 8-lane shape's 4-lane step folds (0 + 2) first.
    expect(dot(4, { 0: big, 1: 1, 2: -big }, PGVECTOR_NEON_FMA)).toBe(0);
    expect(dot(4, { 0: big, 1: 1, 2: -big }, PGVECTOR_AVX2_FMA)).toBe(1);
    // n = 9: elements 0 and 4 share lane 0 (big − big), 1 has lane 1 to itself; in sequence big + 1 rounds first.
    expect(dot(9, { 0: big, 1: 1, 4: -big }, PGVECTOR_NEON_FMA)).toBe(1);
    expect(dot(9, { 0: big, 1: 1, 4: -big }, PGVECTOR_SEQUENTIAL)).toBe(0);
    // n = 3: no vector loop, one fused chain, as in sequence.
    expect(dot(3, { 0: big, 1: 1, 2: -big }, PGVECTOR_NEON_FMA)).toBe(0);
  });

  it('rounds a fused multiply-add once, also where the double sum lands on a float32 midpoint', () => {
    const next = random(99);
    const check = (a: number, b: number, c: number) => {
      const got = fmaF32(a, b, c);
      const want = exact(a) * exact(b) / (1n << 1100n) + exact(c);
      // got is the float32 nearest the exact value: no float32 neighbour is nearer.
      const err = (x: number) => { const d = exact(x) - want; return d < 0n ? -d : d; };
      const up = Math.fround(got + Math.abs(got) * 2 ** -23 + 2 ** -149);
      const down = Math.fround(got - Math.abs(got) * 2 ** -23 - 2 ** -149);
      expect(err(got) <= err(up) && err(got) <= err(down)).toBe(true);
    };
    for (let i = 0; i < 3000; i++) {
      const a = Math.fround((next() - 0.5) * 2 ** Math.floor(next() * 40 - 20));
      const b = Math.fround((next() - 0.5) * 2 ** Math.floor(next() * 40 - 20));
      const c = Math.fround((next() - 0.5) * 2 ** Math.floor(next() * 40 - 20));
      check(a, b, c);
    }
    // 641 · 6700417 = 2^32 + 1, so a·b = 2^-24 + 2^-56: 1 + a·b rounds in double to the float32 midpoint 1 + 2^-24, the exact sum is above it.
    const a = 641 * 2 ** -28;
    const b = 6700417 * 2 ** -28;
    expect(Math.fround(a)).toBe(a);
    expect(Math.fround(b)).toBe(b);
    expect(fmaF32(a, b, 1)).toBe(Math.fround(1 + 2 ** -23));
    expect(Math.fround(a * b + 1)).not.toBe(fmaF32(a, b, 1)); // what double-then-float rounding would give
    check(a, b, 1);
  });

  it('takes the midpoint branch inside pgvectorDot’s 8-lane loop and its 4-lane and 1-lane tails', () => {
    // The midpoint pair above, landing on a lane (or the tail sum) that already holds 1: each must round up once.
    const a = 641 * 2 ** -28;
    const b = 6700417 * 2 ** -28;
    for (const [n, first, second] of [[16, 0, 8], [16, 5, 13], [12, 2, 10], [11, 0, 10]] as const) {
      const x = new Float32Array(n);
      const y = new Float32Array(n);
      x[first] = 1;
      y[first] = 1;
      x[second] = a;
      y[second] = b;
      // 1 + 2^-23 when the pair fuses onto the 1 (as pgvector's FMA does); 1 when double-then-float rounding creeps in.
      expect(pgvectorDot(x, y, PGVECTOR_AVX2_FMA)).toBe(Math.fround(1 + 2 ** -23));
    }
  });

  it('bounds |pgvector − true cosine| by pgvectorError on the server’s own answers', async () => {
    const next = random(4);
    for (const dim of [16, 384, 1536, 16000]) {
      const rows = Array.from({ length: 20 }, () => Float32Array.from({ length: dim }, () => next() - 0.5 + (next() < 0.5 ? 0.3 : 0)));
      const q = Float32Array.from({ length: dim }, () => next() - 0.5 + 0.3);
      const server = await serverDistances(rows, q);
      let worst = 0;
      rows.forEach((row, i) => {
        let ab = 0;
        let aa = 0;
        let bb = 0;
        for (let j = 0; j < dim; j++) {
          ab += row[j]! * q[j]!;
          aa += row[j]! * row[j]!;
          bb += q[j]! * q[j]!;
        }
        worst = Math.max(worst, Math.abs(1 - server[i]! - ab / Math.sqrt(aa * bb)));
      });
      expect(worst).toBeLessThanOrEqual(pgvectorError(dim, arithmetic.lanes));
      expect(pgvectorError(dim, 8)).toBeLessThanOrEqual(pgvectorError(dim, 1));
    }
  });
});
