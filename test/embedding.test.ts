import { readFileSync, readdirSync } from 'node:fs';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EMBEDDING_DIMENSION,
  NORM_SQRT_MAX,
  NORM_SQRT_MIN,
  NORM_SQUARED_MAX,
  NORM_SQUARED_MIN,
  assertUuid,
  normalizeInto,
  parseEmbedding,
  searchable,
  squaredNorm,
} from '../src/embedding.js';
import { ValidationError } from '../src/contract/errors.js';
import { MIGRATIONS_DIR, ROOT, connect, createDatabase, seededVectors, vectorLiteral, type TestDb } from './helpers/db.js';

describe('embedding dimension is one constant', () => {
  it('schema.prisma and every migration declare vector(EMBEDDING_DIMENSION)', () => {
    const schema = readFileSync(`${ROOT}prisma/schema.prisma`, 'utf8');
    expect([...schema.matchAll(/vector\((\d+)\)/g)].map((m) => Number(m[1]))).toEqual([EMBEDDING_DIMENSION]);
    for (const dir of readdirSync(MIGRATIONS_DIR, { withFileTypes: true }).filter((d) => d.isDirectory())) {
      const sql = readFileSync(`${MIGRATIONS_DIR}/${dir.name}/migration.sql`, 'utf8');
      for (const m of sql.matchAll(/vector\((\d+)\)/g)) expect(Number(m[1])).toBe(EMBEDDING_DIMENSION);
    }
  });
});

describe('input validation', () => {
  const good = Array.from({ length: EMBEDDING_DIMENSION }, (_, i) => Math.sin(i));

  it('accepts a finite vector of the right dimension, as float32', () => {
    const v = parseEmbedding(good);
    expect(v).toBeInstanceOf(Float32Array);
    expect(v[1]).toBeCloseTo(Math.sin(1), 6);
  });

  it.each([
    ['wrong dimension', good.slice(1), /embedding: must have 1536 dimensions, got 1535/],
    ['NaN', good.map((x, i) => (i === 7 ? Number.NaN : x)), /embedding\[7\]: must be a finite number/],
    ['Infinity', good.map((x, i) => (i === 3 ? Infinity : x)), /embedding\[3\]: must be a finite number/],
    ['float32 overflow', good.map((x, i) => (i === 2 ? 1e39 : x)), /embedding\[2\]: overflows float32/],
    ['string element', good.map((x, i) => (i === 0 ? '1' : x)), /embedding\[0\]/],
    ['zero vector', new Array(EMBEDDING_DIMENSION).fill(0), /zero vector/],
    ['not an array', 'nope', /embedding: must be an array/],
  ])('rejects %s', (_n, value, message) => {
    expect(() => parseEmbedding(value)).toThrow(ValidationError);
    expect(() => parseEmbedding(value)).toThrow(message);
  });

  it('checks the dimension it is given, and names the field it is given', () => {
    expect(Array.from(parseEmbedding([1, 2, 3], 3))).toEqual([1, 2, 3]);
    expect(parseEmbedding(new Float64Array([0.5, 0.25]), 2)).toEqual(new Float32Array([0.5, 0.25]));
    expect(() => parseEmbedding(good, 384)).toThrow(/embedding: must have 384 dimensions, got 1536/);
    expect(() => parseEmbedding([1, 2, 3], 4, 'query')).toThrow(/query: must have 4 dimensions, got 3/);
    expect(() => parseEmbedding('x', 4, 'query')).toThrow(/query: must be an array of 4 numbers/);
    expect(() => parseEmbedding([1, Number.NaN], 2, 'vector')).toThrow(/vector\[1\]: must be a finite number/);
    expect(() => parseEmbedding([0, 0], 2, 'vector')).toThrow(/vector: must not be the zero vector/);
    // The default is EMBEDDING_DIMENSION.
    expect(() => parseEmbedding([1, 2, 3])).toThrow(`must have ${EMBEDDING_DIMENSION} dimensions, got 3`);
  });

  it('checks UUIDs', () => {
    expect(assertUuid('6F9619FF-8B86-D011-B42D-00C04FC964FF', 'id')).toBe('6f9619ff-8b86-d011-b42d-00c04fc964ff');
    expect(() => assertUuid('42', 'personalityId')).toThrow(/personalityId: must be a UUID/);
    expect(() => assertUuid(undefined, 'id')).toThrow(ValidationError);
  });
});

/*
 * The rule: a vector is valid and searchable iff its squared norm, summed in
 * float64 from its float32 values, lies in [2^-126, 2^126]. pgvector's
 * vector_norm() is the square root of the same float64 sum, so SQL applies
 * it as `vector_norm(v) BETWEEN 2^-63 AND 2^63`.
 */
const D = EMBEDDING_DIMENSION;
const filled = (x: number, d = D) => new Array<number>(d).fill(x);
const oneHot = (x: number, at = 5, d = D) => filled(0, d).map((_, i) => (i === at ? x : 0));
/** The float32 next to `x` (x > 0, normal): one step down or up. */
const step = (x: number, by: number) => {
  const f = new Float32Array([x]);
  new Uint32Array(f.buffer)[0]! += by;
  return f[0]!;
};
const below = (x: number) => step(x, -1);
const above = (x: number) => step(x, 1);
const LOW = 2 ** -63; // one-hot: squared norm exactly 2^-126
const HIGH = 2 ** 63; // one-hot: squared norm exactly 2^126
/**
 * Filled with this float32, the float64 sum is at least 2^-126 while a float32
 * running sum (how 0.1's rule and pgvector's <=> add) ends just below it:
 * the rule is the float64 one.
 */
const FLOAT64_ONLY = 2.7663981221391972e-21;

/** Cosine in float64 from the float32 values: the true answer. */
function trueCosine(a: Float32Array, b: Float32Array): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  return ab / Math.sqrt(aa * bb);
}

/** The hot path: both sides normalized, then a dot product in float32. */
function hotCosine(a: Float32Array, b: Float32Array): number {
  const ua = new Float32Array(D);
  const ub = new Float32Array(D);
  normalizeInto(a, ua);
  normalizeInto(b, ub);
  let dot = 0;
  for (let i = 0; i < D; i++) dot = Math.fround(dot + Math.fround(ua[i]! * ub[i]!));
  return dot;
}

const accepted: Array<[string, number[]]> = [
  ['one-hot 2^-63 (squared norm exactly 2^-126)', oneHot(LOW)],
  ['3e-21 everywhere (subnormal float32 squares, float64 sum above 2^-126)', filled(3e-21)],
  ['2.7663981e-21 everywhere (float64 sum above 2^-126, float32 sum below)', filled(FLOAT64_ONLY)],
  ['one-hot 2^63 (squared norm exactly 2^126)', oneHot(HIGH)],
  ['2.3e17 everywhere (squared norm 8.1e37)', filled(2.3e17)],
  ['a normal vector with one subnormal value', filled(0.01).map((x, i) => (i === 9 ? 1e-40 : x))],
];

const rejected: Array<[string, number[], RegExp]> = [
  ['1e-30 everywhere (squared norm 1.5e-57)', filled(1e-30), /embedding: is too small/],
  ['one-hot just below 2^-63', oneHot(below(LOW)), /embedding: is too small/],
  ['the float32 below 2.7663981e-21 everywhere', filled(below(FLOAT64_ONLY)), /embedding: is too small/],
  ['2e-21 everywhere (squared norm 6.1e-39)', filled(2e-21), /embedding: is too small/],
  ['subnormal float32 values only', filled(1e-40), /embedding: is too small/],
  ['one subnormal value, the rest 0', oneHot(1e-39), /embedding: is too small/],
  ['values that round to 0 in float32', filled(1e-50), /embedding: must not be the zero vector/],
  ['one-hot just above 2^63', oneHot(above(HIGH)), /embedding: is too large/],
  ['2.4e17 everywhere (squared norm 8.8e37)', filled(2.4e17), /embedding: is too large/],
  // Below float32's overflow, so 0.1's rule took them; above 2^126, so this one does not.
  ['one-hot 1.8e19 (squared norm 3.24e38)', oneHot(1.8e19), /embedding: is too large/],
  ['4e17 everywhere (squared norm 2.5e38)', filled(4e17), /embedding: is too large/],
  ['5e17 everywhere', filled(5e17), /embedding: is too large/],
  ['the largest float32 in one place', oneHot(3.4028234e38), /embedding: is too large/],
];

function rejection(value: unknown, dimension?: number): unknown {
  try {
    parseEmbedding(value, dimension);
  } catch (e) {
    return e;
  }
  return undefined;
}

describe('embedding norm rule: squared norm in [2^-126, 2^126], summed in float64', () => {
  it('has its bounds where the rule says', () => {
    expect(NORM_SQUARED_MIN).toBe(2 ** -126);
    expect(NORM_SQUARED_MAX).toBe(2 ** 126);
    expect(NORM_SQRT_MIN ** 2).toBe(NORM_SQUARED_MIN);
    expect(NORM_SQRT_MAX ** 2).toBe(NORM_SQUARED_MAX);
    expect(squaredNorm(new Float32Array(oneHot(LOW)))).toBe(NORM_SQUARED_MIN);
    expect(squaredNorm(new Float32Array(oneHot(HIGH)))).toBe(NORM_SQUARED_MAX);
  });

  it('sums in float64: the vector a float32 running sum would put below 2^-126 is above it', () => {
    const v = new Float32Array(filled(FLOAT64_ONLY));
    expect(v[0]).toBe(FLOAT64_ONLY); // a float32 value
    let float32Sum = 0;
    for (const x of v) float32Sum = Math.fround(float32Sum + Math.fround(x * x));
    expect(float32Sum).toBeLessThan(2 ** -126);
    expect(squaredNorm(v)).toBeGreaterThanOrEqual(2 ** -126);
    expect(searchable(v)).toBe(true);
  });

  it.each(rejected)('rejects %s', (_n, value, message) => {
    const err = rejection(value);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).field).toBe('embedding');
    expect((err as ValidationError).message).toMatch(message);
    expect(searchable(new Float32Array(value))).toBe(false);
  });

  it.each(accepted)('accepts %s, searchable, with a finite, correct cosine on the hot path', (_n, value) => {
    const v = parseEmbedding(value);
    expect(searchable(v)).toBe(true);
    const [q] = seededVectors(11, 1);
    const truth = trueCosine(v, q!);
    const hot = hotCosine(v, q!);
    expect(Number.isFinite(hot)).toBe(true);
    expect(hot).toBeCloseTo(truth, 5);
  });

  it('the bounds are on the norm, not per value: the dimension moves them for filled vectors', () => {
    // 4 × (2^-64)² = 2^-126 exactly; 3 × (2^-64)² is below.
    expect(Array.from(parseEmbedding(filled(2 ** -64, 4), 4))).toEqual(filled(2 ** -64, 4));
    expect(() => parseEmbedding(filled(2 ** -64, 3), 3)).toThrow(/embedding: is too small/);
    // 4 × (2^62)² = 2^126 exactly; 5 × (2^62)² is above.
    expect(parseEmbedding(filled(2 ** 62, 4), 4)).toHaveLength(4);
    expect(() => parseEmbedding(filled(2 ** 62, 5), 5)).toThrow(/embedding: is too large/);
    expect(searchable(new Float32Array(filled(2 ** 62, 4)))).toBe(true);
    expect(searchable(new Float32Array(filled(2 ** 62, 5)))).toBe(false);
  });

  it('searchable() is false for vectors written around parseEmbedding: zero, NaN, Infinity', () => {
    expect(searchable(new Float32Array(D))).toBe(false);
    expect(searchable(new Float32Array(oneHot(Number.NaN)))).toBe(false);
    expect(searchable(new Float32Array(oneHot(Infinity)))).toBe(false);
  });

  it('normalizeInto scales to unit length and writes zeros (not NaN) for a vector with no direction', () => {
    const dst = new Float32Array(2 * D).fill(7);
    expect(normalizeInto(new Float32Array(D), dst, D)).toBe(false);
    expect(dst.subarray(D).every((x) => x === 0)).toBe(true);
    expect(dst[0]).toBe(7); // outside the slot: untouched
    expect(normalizeInto(new Float32Array(oneHot(1e-45)), dst)).toBe(true); // smallest subnormal: float64 norm is fine
    expect(dst[5]).toBe(1);
    expect(normalizeInto(new Float32Array(filled(3e38)), dst)).toBe(true); // float32 squares would overflow
    expect(dst[0]).toBeCloseTo(1 / Math.sqrt(D), 6);
  });
});

describe('embedding norm rule in pgvector', () => {
  let db: TestDb;
  let c: pg.Client;
  beforeAll(async () => {
    db = await createDatabase();
    c = await connect(db.url);
    await c.query(`CREATE EXTENSION vector; CREATE TABLE v (name text, e vector(${D}))`);
  });
  afterAll(async () => {
    await c?.end();
    await db?.drop();
  });

  it('stores every accepted boundary vector and <=> gives its true cosine', async () => {
    const [q] = seededVectors(12, 1);
    for (const [name, value] of accepted) {
      const v = parseEmbedding(value);
      await c.query('INSERT INTO v VALUES ($1, $2::vector)', [name, vectorLiteral(v)]);
      const { rows } = await c.query<{ similarity: number; stored: string }>(
        'SELECT 1 - (e <=> $2::vector) AS similarity, e::text AS stored FROM v WHERE name = $1',
        [name, vectorLiteral(q!)],
      );
      expect(rows, name).toHaveLength(1);
      expect(Number.isFinite(rows[0]!.similarity), name).toBe(true);
      expect(rows[0]!.similarity, name).toBeCloseTo(trueCosine(v, q!), 3);
      expect(rows[0]!.similarity, name).toBeCloseTo(hotCosine(v, q!), 3);
    }
  });

  // Vectors that need not have passed parseEmbedding (rows written by other programs).
  const boundary: Array<[string, number[]]> = [
    ['one-hot 2^-63 exactly', oneHot(LOW)],
    ['one-hot just below 2^-63', oneHot(below(LOW))],
    ['one-hot just above 2^-63', oneHot(above(LOW))],
    ['one-hot 2^63 exactly', oneHot(HIGH)],
    ['one-hot just below 2^63', oneHot(below(HIGH))],
    ['one-hot just above 2^63', oneHot(above(HIGH))],
    ['2.7663981e-21 everywhere', filled(FLOAT64_ONLY)],
    ['the float32 below 2.7663981e-21 everywhere', filled(below(FLOAT64_ONLY))],
    ['2.3e17 everywhere', filled(2.3e17)],
    ['2.4e17 everywhere', filled(2.4e17)],
    ['1e-30 everywhere', filled(1e-30)],
    ['the zero vector', filled(0)],
  ];

  it.each(boundary)('vector_norm(v) BETWEEN 2^-63 AND 2^63 agrees with searchable(): %s', async (_n, value) => {
    const v = new Float32Array(value);
    const { rows } = await c.query<{ literal: boolean; bounds: boolean; norm: number }>(
      `SELECT vector_norm($1::vector) BETWEEN 2::float8 ^ (-63) AND 2::float8 ^ 63 AS literal,
              vector_norm($1::vector) BETWEEN ${NORM_SQRT_MIN} AND ${NORM_SQRT_MAX} AS bounds,
              vector_norm($1::vector) AS norm`,
      [vectorLiteral(v)],
    );
    // The SQL text the store builds from the constants, and the rule as written, say the same.
    expect(rows[0]!.bounds).toBe(rows[0]!.literal);
    expect(rows[0]!.literal).toBe(searchable(v));
    // The same float64 sum: exact for one nonzero value; pgvector adds many in its own
    // (vectorized) order, so there the last bits may differ.
    const norm = Math.sqrt(squaredNorm(v));
    if (v.filter((x) => x !== 0).length <= 1) expect(rows[0]!.norm).toBe(norm);
    else expect(Math.abs(rows[0]!.norm - norm)).toBeLessThanOrEqual(norm * 1e-12);
  });

  it('the boundary cases fall on both sides of the rule', () => {
    const verdicts = boundary.map(([, value]) => searchable(new Float32Array(value)));
    expect(verdicts.filter(Boolean).length).toBe(6);
    expect(verdicts.filter((x) => !x).length).toBe(6);
  });

  it('why: pgvector ranks a 1e-30 vector first at similarity 1, whatever the query', async () => {
    const tiny = new Float32Array(filled(1e-30));
    const [q] = seededVectors(13, 1);
    const { rows } = await c.query<{ similarity: number }>('SELECT 1 - ($1::vector <=> $2::vector) AS similarity', [
      vectorLiteral(tiny),
      vectorLiteral(q!),
    ]);
    expect(Math.abs(trueCosine(tiny, q!))).toBeLessThan(0.1);
    expect(rows[0]!.similarity).toBe(1);
  });
});
