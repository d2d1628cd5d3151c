import { describe, expect, it } from 'vitest';
import { Int8Rows } from '../../../../src/cache/hot/int8/rows.js';
import { runToEnd } from '../../../../src/cache/hot/int8/slicing.js';
import { newTopKMemory, topKSteps, type TopKRequest } from '../../../../src/cache/hot/int8/top-k.js';
import { PGVECTOR_AVX2_FMA, pgvectorDistance } from '../../../../src/cache/hot/int8/pgvector-distance.js';
import { compareCodePoints } from '../../../../src/cache/hot/filters.js';
import { random } from '../../../helpers/random.js';

/**
 * The kernel's proof, on its own: answers equal a brute-force scan in
 * pgvector's arithmetic (itself checked against the server in
 * pgvector-distance.test.ts), and the tests are sharp enough that a bound
 * made too tight is caught.
 */

function unit(v: ArrayLike<number>): Float32Array {
  let s = 0;
  for (let j = 0; j < v.length; j++) s += v[j]! * v[j]!;
  return Float32Array.from(v, (x) => x / Math.sqrt(s));
}

class Fixture {
  readonly rows: Int8Rows;
  readonly ids: string[] = [];
  readonly memory = newTopKMemory();
  constructor(readonly dim: number, vectors: Float32Array[], chunkBytes?: number) {
    this.rows = new Int8Rows(dim, 16, chunkBytes);
    vectors.forEach((v, i) => {
      this.rows.write(i, v);
      this.ids.push(`m${String((i * 7919) % 100_003).padStart(6, '0')}`);
    });
    this.rows.install(runToEnd(this.rows.buildSteps()));
  }

  search(query: Float32Array, k: number, extra: Partial<TopKRequest> = {}) {
    return runToEnd(topKSteps(this.rows, this.memory, { query, k, ids: this.ids, compareIds: compareCodePoints, arithmetic: PGVECTOR_AVX2_FMA, ...extra }));
  }

  /** Brute force in pgvector's arithmetic: distance ascending, then id. */
  reference(query: Float32Array, k: number, min = -Infinity, accept: (r: number) => boolean = () => true): string[] {
    const s = this.rows.state;
    const all: { id: string; d: number }[] = [];
    for (let r = 0; r < s.count; r++) {
      if (!accept(r)) continue;
      const d = pgvectorDistance(s.vectors.subarray(r * this.dim, (r + 1) * this.dim), query);
      if (1 - d >= min) all.push({ id: this.ids[r]!, d });
    }
    all.sort((a, b) => a.d - b.d || compareCodePoints(a.id, b.id));
    return all.slice(0, k).map((x) => x.id);
  }

  ids_(hits: { row: number }[] | null): string[] {
    return hits!.map((h) => this.ids[h.row]!);
  }
}

/** 400 rows the int8 bound cannot tell apart, far above the rest: the answer rests on rows the bound must keep. */
function crowded(dim: number, seed: number): { vectors: Float32Array[]; base: Float32Array } {
  const next = random(seed);
  const base = unit(Array.from({ length: dim }, () => next() * 2 - 1));
  const vectors = Array.from({ length: 4000 }, (_, i) =>
    i % 10 === 0 ? Float32Array.from(base, (x) => x * (1 + 2e-3 * (next() - 0.5))) : unit(Array.from({ length: dim }, () => next() * 2 - 1)),
  );
  return { vectors, base };
}

describe('topK', () => {
  it('equals brute force in pgvector arithmetic on uniform and crowded data, widening when the first list cannot settle it', () => {
    for (const dim of [64, 384]) {
      const { vectors, base } = crowded(dim, dim);
      const f = new Fixture(dim, vectors);
      const next = random(7);
      for (const q of [base, unit(Array.from({ length: dim }, () => next() - 0.5)), unit(Array.from(base, (x) => x + 0.01 * (next() - 0.5)))]) {
        for (const k of [1, 10, 100]) {
          const res = f.search(q, k);
          expect(f.ids_(res.hits)).toEqual(f.reference(q, k));
        }
      }
      expect(f.search(base, 10).path).toBe('bound');
    }
  });

  it('catches a bound made too tight: the same checks fail when the int8 bound is scaled down', () => {
    const dim = 64;
    const { vectors, base } = crowded(dim, 3);
    const f = new Fixture(dim, vectors);
    const next = random(11);
    const queries = [base, ...Array.from({ length: 6 }, () => unit(Array.from(base, (x) => x + 0.05 * (next() - 0.5))))];
    const wrong = (scale: number) => {
      f.rows.testScales.bound = scale;
      let misses = 0;
      for (const q of queries) for (const k of [10, 50]) if (JSON.stringify(f.ids_(f.search(q, k).hits)) !== JSON.stringify(f.reference(q, k))) misses++;
      f.rows.testScales.bound = 1;
      return misses;
    };
    expect(wrong(1)).toBe(0);
    expect(wrong(0.05)).toBeGreaterThan(0);
  });

  it('catches pgvector’s rounding left out: with the arithmetic unknown, near-ties a float32 step apart need its error margin', () => {
    const dim = 384;
    const next = random(5);
    const q = unit(Array.from({ length: dim }, () => next() * 2 - 1));
    const vectors: Float32Array[] = [];
    for (let i = 0; i < 1500; i++) {
      const u = Array.from({ length: dim }, () => next() * 2 - 1);
      let dot = 0;
      for (let j = 0; j < dim; j++) dot += u[j]! * q[j]!;
      const perp = unit(u.map((x, j) => x - dot * q[j]!));
      const a = i < 600 ? 0.7 + (i % 13) * 2 ** -24 : 0.5 * next();
      vectors.push(Float32Array.from(perp, (x, j) => (a * q[j]! + Math.sqrt(1 - a * a) * x) * (1 + (i % 5)))); // magnitudes vary: float32 sums round differently
    }
    const f = new Fixture(dim, vectors);
    // Wrong answers (not null, not pgvector's); null (ambiguous) is allowed.
    const wrong = (scale: number) => {
      f.rows.testScales.pgvector = scale;
      let m = 0;
      for (const k of [5, 17, 40, 90, 200]) {
        const hits = f.search(q, k, { arithmetic: null }).hits;
        if (hits && JSON.stringify(f.ids_(hits)) !== JSON.stringify(f.reference(q, k))) m++;
      }
      f.rows.testScales.pgvector = 1;
      return m;
    };
    expect(wrong(1)).toBe(0);
    expect(wrong(0)).toBeGreaterThan(0);
    // With the arithmetic known, the same near-ties are ranked exactly, never given up.
    for (const k of [5, 17, 40, 90, 200]) expect(f.ids_(f.search(q, k).hits)).toEqual(f.reference(q, k));
  });

  it('keeps minSimilarity and filters, across several native blocks, and scores a narrow filter’s rows alone', () => {
    const dim = 128;
    const next = random(9);
    const vectors = Array.from({ length: 2000 }, () => unit(Array.from({ length: dim }, () => next() * 2 - 1)));
    const f = new Fixture(dim, vectors, 300 * dim);
    expect(f.rows.state.chunks.length).toBeGreaterThan(5);
    const q = vectors[17]!;
    const top = f.reference(q, 30);
    const min = 1 - pgvectorDistance(vectors[f.ids.indexOf(top[12]!)]!, q);
    expect(f.ids_(f.search(q, 30, { minSimilarity: min }).hits)).toEqual(f.reference(q, 30, min));
    const even = (r: number) => r % 2 === 0;
    expect(f.ids_(f.search(q, 10, { accept: even, passing: 1000 }).hits)).toEqual(f.reference(q, 10, -Infinity, even));
    const few = Int32Array.from({ length: 50 }, (_, i) => i * 37);
    const inFew = (r: number) => r % 37 === 0 && r < 50 * 37;
    const narrow = f.search(q, 10, { accept: inFew, passingRows: few, passing: 50 });
    expect(narrow.path).toBe('filtered');
    expect(narrow.scans).toBe(0);
    expect(f.ids_(narrow.hits)).toEqual(f.reference(q, 10, -Infinity, inFew));
  });

  it('widens only the blocks that ran short: the others close on their own bound, and the answer still needs every crowded row', () => {
    // 8 blocks of 500 rows; block 3 holds 400 rows the int8 bound cannot tell apart, near the query: its first list (about 100 rows) cannot settle a top-100.
    const dim = 64;
    const next = random(21);
    const base = unit(Array.from({ length: dim }, () => next() * 2 - 1));
    const vectors = Array.from({ length: 4000 }, (_, i) =>
      i >= 1500 && i < 1900 ? Float32Array.from(base, (x) => x * (1 + 2e-3 * (next() - 0.5))) : unit(Array.from({ length: dim }, () => next() * 2 - 1)),
    );
    const f = new Fixture(dim, vectors, 500 * dim);
    const blocks = f.rows.state.chunks.length;
    expect(blocks).toBe(8);
    const res = f.search(base, 100);
    expect(f.ids_(res.hits)).toEqual(f.reference(base, 100));
    expect(res.path).toBe('bound');
    expect(res.scans).toBeGreaterThan(blocks); // a second round ran…
    expect(res.scans).toBeLessThan(2 * blocks); // …over the crowded block alone
  });

  it('stays exact with the native kernels distrusted', () => {
    const dim = 96;
    const { vectors, base } = crowded(dim, 13);
    const f = new Fixture(dim, vectors.slice(0, 1200));
    for (const kernels of [{ i8: false, f32: true }, { i8: true, f32: false }, { i8: false, f32: false }]) {
      f.rows.kernels = kernels;
      const res = f.search(base, 10);
      expect(res.path).toBe(kernels.i8 ? 'bound' : 'exhaustive');
      expect(f.ids_(res.hits)).toEqual(f.reference(base, 10));
    }
  });

  it('scores a batch whose candidates cover consecutive rows out of order with each row its own score (the run copy checks every row)', () => {
    // Rows 0..23 rank 0, 2, 1, 4, 3, …, 22, 21, 23: the first batch (k + 4 = 24 rows) spans 0..23 exactly but is no run.
    const dim = 64;
    const rank = [0];
    for (let i = 1; i < 23; i += 2) rank.push(i + 1, i);
    rank.push(23);
    for (let r = 24; r < 100; r++) rank.push(r);
    const position = new Map(rank.map((r, p) => [r, p]));
    const rnd = random(9);
    const vectors = Array.from({ length: 100 }, (_, r) => {
      const sim = 0.95 - 0.008 * position.get(r)!;
      const v = new Float32Array(dim);
      v[0] = sim;
      const rest = Math.sqrt(1 - sim * sim);
      const other = Array.from({ length: dim - 1 }, () => rnd() - 0.5);
      const n = Math.sqrt(other.reduce((a, x) => a + x * x, 0));
      other.forEach((x, j) => (v[j + 1] = (x / n) * rest));
      return v;
    });
    const f = new Fixture(dim, vectors);
    const query = new Float32Array(dim);
    query[0] = 1;
    for (const k of [20, 10, 5]) {
      const res = f.search(query, k);
      expect(res.path).toBe('bound');
      expect(f.ids_(res.hits)).toEqual(f.reference(query, k));
    }
  });
});
