import { readFileSync, readdirSync } from 'node:fs';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMBEDDING_DIMENSION, assertUuid, normalizeInto, parseEmbedding } from '../src/embedding.js';
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

  it('checks UUIDs', () => {
    expect(assertUuid('6F9619FF-8B86-D011-B42D-00C04FC964FF', 'id')).toBe('6f9619ff-8b86-d011-b42d-00c04fc964ff');
    expect(() => assertUuid('42', 'personalityId')).toThrow(/personalityId: must be a UUID/);
    expect(() => assertUuid(undefined, 'id')).toThrow(ValidationError);
  });
});

/*
 * The float32 squared norm (as pgvector's <=> and the kernels sum it) must be
 * a normal positive float32: from 2^-126 up to 3.4e38.
 */
const D = EMBEDDING_DIMENSION;
const filled = (x: number) => new Array<number>(D).fill(x);
const oneHot = (x: number, at = 5) => filled(0).map((_, i) => (i === at ? x : 0));
/** The float32 just below `x` (x > 0, normal). */
const below = (x: number) => {
  const f = new Float32Array([x]);
  new Uint32Array(f.buffer)[0]! -= 1;
  return f[0]!;
};
const MIN_NORMAL_SQRT = 2 ** -63; // its square is 2^-126, the smallest normal float32

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
  ['one-hot 2^-63 (squared norm exactly 2^-126)', oneHot(MIN_NORMAL_SQRT)],
  ['3e-21 everywhere (subnormal squares, normal sum)', filled(3e-21)],
  ['one-hot 1.8e19 (squared norm 3.24e38)', oneHot(1.8e19)],
  ['4e17 everywhere (squared norm 2.5e38)', filled(4e17)],
  ['a normal vector with one subnormal value', filled(0.01).map((x, i) => (i === 9 ? 1e-40 : x))],
];

describe('embedding norm boundary (float32, as pgvector computes it)', () => {
  it.each([
    ['1e-30 everywhere (squared norm underflows to 0)', filled(1e-30), /embedding: is too small/],
    ['one-hot just below 2^-63 (subnormal squared norm)', oneHot(below(MIN_NORMAL_SQRT)), /embedding: is too small/],
    ['2e-21 everywhere (sum of subnormal squares stays subnormal)', filled(2e-21), /embedding: is too small/],
    ['subnormal float32 values only', filled(1e-40), /embedding: is too small/],
    ['values that round to 0 in float32', filled(1e-50), /embedding: is too small/],
    ['one subnormal value, the rest 0', oneHot(1e-39), /embedding: is too small/],
    ['one-hot 1.9e19 (squared norm overflows float32)', oneHot(1.9e19), /embedding: is too large/],
    ['5e17 everywhere (sum overflows float32)', filled(5e17), /embedding: is too large/],
    ['the largest float32 in one place', oneHot(3.4028234e38), /embedding: is too large/],
  ])('rejects %s', (_n, value, message) => {
    const err = (() => {
      try {
        parseEmbedding(value);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).field).toBe('embedding');
    expect((err as ValidationError).message).toMatch(message);
  });

  it.each(accepted)('accepts %s, with a finite, correct cosine on the hot path', (_n, value) => {
    const v = parseEmbedding(value);
    const [q] = seededVectors(11, 1);
    const truth = trueCosine(v, q!);
    const hot = hotCosine(v, q!);
    expect(Number.isFinite(hot)).toBe(true);
    expect(hot).toBeCloseTo(truth, 5);
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

describe('embedding norm boundary in pgvector', () => {
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
      const { rows } = await c.query<{ similarity: number }>('SELECT 1 - (e <=> $2::vector) AS similarity FROM v WHERE name = $1', [
        name,
        vectorLiteral(q!),
      ]);
      expect(Number.isFinite(rows[0]!.similarity), name).toBe(true);
      expect(rows[0]!.similarity, name).toBeCloseTo(trueCosine(v, q!), 3);
      expect(rows[0]!.similarity, name).toBeCloseTo(hotCosine(v, q!), 3);
    }
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
