import { describe, expect, it } from 'vitest';
import { exactSearch, MetricKind } from 'usearch';
import {
  nativeKernelsFit,
  QuantizedRows,
  type QuantizedSearchOptions,
  type QuantizedSearchResult,
} from '../../../src/cache/hot/quantized.js';

const DIM = 1536;

/** xorshift32, so a failure reproduces. */
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

/** Unit length in f64, stored as f32: what the hot set keeps. */
function unit(v: ArrayLike<number>): Float32Array {
  let s = 0;
  for (let j = 0; j < v.length; j++) s += v[j]! * v[j]!;
  const inv = 1 / Math.sqrt(s);
  return Float32Array.from(v, (x) => x * inv);
}

function uniformVector(next: () => number, dim = DIM): Float32Array {
  return unit(Array.from({ length: dim }, () => next() * 2 - 1));
}

/** Embedding-like: uneven per-dimension spread, a shared mean direction, clusters. */
function clusteredSource(seed: number, clusters: number, dim = DIM): () => Float32Array {
  const next = random(seed);
  const spread = Array.from({ length: dim }, () => Math.exp(0.5 * gaussian(next)));
  const mean = spread.map((s) => 0.6 * gaussian(next) * s);
  const centers = Array.from({ length: clusters }, () => spread.map((s, j) => mean[j]! + 0.7 * gaussian(next) * s));
  return () => {
    const c = centers[Math.floor(next() * clusters)]!;
    const noise = 0.3 + 0.5 * next();
    return unit(c.map((x, j) => x + noise * gaussian(next) * spread[j]!));
  };
}

/** What the hot set does around the quantized copy: f32 rows, ids, channels, and the mirror calls. */
class Mirror {
  rows: Float32Array;
  ids: string[] = [];
  channels: string[] = [];
  readonly quantized: QuantizedRows;

  constructor(
    readonly dim = DIM,
    chunkBytes?: number,
  ) {
    this.rows = new Float32Array(16 * dim);
    this.quantized = new QuantizedRows(dim, 16, chunkBytes);
  }

  get count(): number {
    return this.ids.length;
  }

  upsert(id: string, vector: Float32Array, channel = 'c0'): void {
    let r = this.ids.indexOf(id);
    if (r === -1) {
      r = this.ids.length;
      if ((r + 1) * this.dim > this.rows.length) {
        const next = new Float32Array(this.rows.length * 2);
        next.set(this.rows);
        this.rows = next;
        this.quantized.grow(next.length / this.dim);
      }
      this.ids.push(id);
      this.channels.push(channel);
    }
    this.channels[r] = channel;
    this.rows.set(vector, r * this.dim);
    this.quantized.writeRow(r, vector);
  }

  remove(id: string): void {
    const r = this.ids.indexOf(id);
    const last = this.ids.length - 1;
    this.rows.copyWithin(r * this.dim, last * this.dim, (last + 1) * this.dim);
    this.ids[r] = this.ids[last]!;
    this.channels[r] = this.channels[last]!;
    this.ids.pop();
    this.channels.pop();
    this.quantized.removeRow(r);
  }

  rebuild(): void {
    this.quantized.rebuild(this.rows, this.count);
  }

  search(query: Float32Array, options: QuantizedSearchOptions): QuantizedSearchResult {
    return this.quantized.search(query, this.rows, this.ids, options);
  }
}

/** Brute force in f64, in the SQL order: similarity desc, then id asc. */
function reference(m: Mirror, query: Float32Array, options: QuantizedSearchOptions): { id: string; similarity: number }[] {
  const min = options.minSimilarity ?? -Infinity;
  const f = options.filter;
  const all: { id: string; score: number }[] = [];
  for (let r = 0; r < m.count; r++) {
    if (f && (typeof f === 'function' ? !f(r) : f.column[r] !== f.wanted)) continue;
    let s = 0;
    for (let j = 0; j < m.dim; j++) s += m.rows[r * m.dim + j]! * query[j]!;
    if (s >= min) all.push({ id: m.ids[r]!, score: s });
  }
  all.sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return all.slice(0, options.k).map((x) => ({ id: x.id, similarity: Math.min(1, Math.max(-1, x.score)) }));
}

function expectExact(m: Mirror, query: Float32Array, options: QuantizedSearchOptions): QuantizedSearchResult {
  const got = m.search(query, options);
  const want = reference(m, query, options);
  expect(got.hits.map((h) => m.ids[h.row])).toEqual(want.map((w) => w.id));
  got.hits.forEach((h, i) => expect(Math.abs(h.similarity - want[i]!.similarity)).toBeLessThanOrEqual(1e-6));
  return got;
}

/** Every row's exact score lies within the bound the search trusts. */
function expectBoundsHold(m: Mirror, query: Float32Array): void {
  const b = m.quantized.scoreBounds(query);
  expect(b).toBeDefined();
  let worstSlack = Infinity;
  for (let r = 0; r < m.count; r++) {
    let s = 0;
    for (let j = 0; j < m.dim; j++) s += m.rows[r * m.dim + j]! * query[j]!;
    worstSlack = Math.min(worstSlack, b!.bound[r]! - Math.abs(s - b!.approx[r]!));
  }
  expect(worstSlack).toBeGreaterThanOrEqual(0);
}

function idOf(i: number): string {
  // Not in row order, so id ties are not row-order ties.
  return `m${String((i * 7919) % 100_003).padStart(6, '0')}`;
}

function fill(m: Mirror, vectors: Float32Array[], channels = 4): void {
  vectors.forEach((v, i) => m.upsert(idOf(i), v, `c${i % channels}`));
  m.rebuild();
}

describe('QuantizedRows', () => {
  it('matches brute force on uniform random vectors, proven from the int8 scan', () => {
    const next = random(1);
    const m = new Mirror();
    fill(m, Array.from({ length: 1200 }, () => uniformVector(next)));
    for (let i = 0; i < 12; i++) {
      const q = uniformVector(next);
      for (const k of [1, 10, 100]) {
        const res = expectExact(m, q, { k });
        expect(res.path).toBe('bound');
        expect(res.scans).toBe(1);
      }
      if (i < 3) expectBoundsHold(m, q);
    }
  });

  it('matches brute force on clustered embedding-like vectors and rescores only a few rows', () => {
    const source = clusteredSource(2, 12);
    const m = new Mirror();
    fill(m, Array.from({ length: 1500 }, source));
    let touched = 0;
    for (let i = 0; i < 15; i++) {
      const q = source();
      const res = expectExact(m, q, { k: 10 });
      touched += res.scored + res.rescored;
      if (i < 3) expectBoundsHold(m, q);
    }
    expect(touched / 15).toBeLessThan(1500 / 10);
  });

  it('breaks exact-duplicate ties by id, across the k-th boundary', () => {
    const next = random(3);
    const m = new Mirror();
    const distinct = Array.from({ length: 40 }, () => uniformVector(next));
    // 25 copies of each, inserted interleaved so copies are far apart in row order
    fill(m, Array.from({ length: 1000 }, (_, i) => distinct[i % 40]!));
    for (let i = 0; i < 5; i++) {
      const q = i === 0 ? distinct[7]! : uniformVector(next);
      for (const k of [10, 30, 60]) expectExact(m, q, { k });
    }
  });

  it('orders near-ties exactly: scores a few float32 steps apart, and rows one step apart', () => {
    const next = random(4);
    const q = uniformVector(next);
    const m = new Mirror();
    const vectors: Float32Array[] = [];
    for (let i = 0; i < 600; i++) {
      // a·q + b·u with u ⟂ q: the score is a, up to float32 rounding of the row
      const u = uniformVector(next);
      let dot = 0;
      for (let j = 0; j < DIM; j++) dot += u[j]! * q[j]!;
      const perp = unit(Array.from(u, (x, j) => x - dot * q[j]!));
      const a = i < 300 ? 0.5 + (i % 5) * 2 ** -23 : 0.3 * next();
      const b = Math.sqrt(1 - a * a);
      vectors.push(unit(Array.from(perp, (x, j) => a * q[j]! + b * x)));
    }
    for (let i = 0; i < 50; i++) {
      // the same row with one component moved by one float32 step
      const v = Float32Array.from(vectors[i]!);
      const j = Math.floor(next() * DIM);
      v[j] = Math.fround(v[j]! * (1 + 2 ** -23));
      vectors.push(v);
    }
    fill(m, vectors);
    for (const k of [1, 10, 50, 200]) expectExact(m, q, { k });
    expectExact(m, q, { k: 20, minSimilarity: 0.5 });
  });

  it('stays exact through many upserts (clamped past the scales) and deletes, and a rebuild restores the fast path', () => {
    const source = clusteredSource(5, 8);
    const next = random(6);
    const m = new Mirror();
    fill(m, Array.from({ length: 700 }, source));
    let sawException = false;
    let nextId = 700;
    let spike: Float32Array | undefined;
    for (let step = 0; step < 900; step++) {
      const roll = next();
      if (roll < 0.35) {
        // new row; every fourth one far outside the build's ranges (a spike the scales clamp hard)
        const v = source();
        if (step % 4 === 0) {
          v[Math.floor(next() * DIM)] = 0.8;
          spike = unit(v);
        }
        m.upsert(idOf(nextId++), unit(v), `c${step % 4}`);
      } else if (roll < 0.6) {
        // rewrite an existing row, mildly outside the ranges
        const v = Float32Array.from(source(), (x) => x * (1 + 0.5 * next()));
        m.upsert(m.ids[Math.floor(next() * m.count)]!, unit(v), `c${step % 3}`);
      } else if (m.count > 50) {
        m.remove(m.ids[Math.floor(next() * m.count)]!);
      }
      sawException ||= m.quantized.exceptionCount > 0;
      if (step % 100 === 99) {
        const q = source();
        expectExact(m, q, { k: 10 });
        expectExact(m, q, { k: 25, filter: { column: m.channels, wanted: 'c1' } });
        expectExact(m, q, { k: 10, minSimilarity: 0.2 });
        expectBoundsHold(m, q);
        // the newest clamped row is its own best match
        if (spike && m.rows.length) expectExact(m, spike, { k: 3 });
      }
    }
    expect(sawException).toBe(true);
    expect(m.quantized.count).toBe(m.count);
    m.rebuild();
    expect(m.quantized.exceptionCount).toBe(0);
    const res = expectExact(m, source(), { k: 10 });
    expect(res.path).toBe('bound');
  });

  it('keeps the channel filter (column or predicate) and minSimilarity semantics', () => {
    const source = clusteredSource(7, 10);
    const m = new Mirror();
    fill(m, Array.from({ length: 1600 }, source));
    const rare = (r: number) => m.channels[r] === 'c3' && r % 7 === 0; // ~3.6%: the filtered exact scan
    for (let i = 0; i < 6; i++) {
      const q = source();
      expect(expectExact(m, q, { k: 10, filter: { column: m.channels, wanted: 'c2' } }).path).toBe('bound');
      expectExact(m, q, { k: 10, filter: (r) => m.channels[r] !== 'c0' });
      expect(expectExact(m, q, { k: 10, filter: rare }).path).toBe('filtered');
      expect(expectExact(m, q, { k: 10, filter: { column: m.channels, wanted: 'nope' } }).hits).toEqual([]);
      // a bound that cuts inside the top-k, one above every row, one that admits all
      const top = reference(m, q, { k: 10 });
      expect(expectExact(m, q, { k: 10, minSimilarity: top[4]!.similarity }).hits).toHaveLength(5);
      expect(expectExact(m, q, { k: 10, minSimilarity: 1.5 }).hits).toEqual([]);
      expectExact(m, q, { k: 10, minSimilarity: -1 });
      expectExact(m, q, { k: 10, minSimilarity: top[9]!.similarity, filter: { column: m.channels, wanted: 'c1' } });
    }
  });

  it('leaves out rows just below minSimilarity that only a float32 score would let in', () => {
    const next = random(15);
    const v = uniformVector(next);
    const m = new Mirror();
    fill(m, Array.from({ length: 1000 }, (_, i) => (i % 5 === 0 ? v : uniformVector(next))));
    let best = 0; // unclamped, as minSimilarity compares
    for (let j = 0; j < DIM; j++) best += v[j]! * v[j]!;
    // 200 copies score `best`; a bound 1e-12 above it (far inside the f32 score's error) must still drop them all
    expect(expectExact(m, v, { k: 10, minSimilarity: best + 1e-12 }).hits).toEqual([]);
    expect(expectExact(m, v, { k: 10, minSimilarity: best - 1e-12 }).hits).toHaveLength(10);
  });

  it('widens the int8 candidate list when its first part cannot settle the top-k', () => {
    const next = random(8);
    const dim = 64;
    const base = uniformVector(next, dim);
    const m = new Mirror(dim);
    // 400 rows the bound cannot tell apart, far above 9,600 others
    fill(
      m,
      Array.from({ length: 10_000 }, (_, i) =>
        i % 25 === 0 ? Float32Array.from(base, (x) => x * (1 + 1e-6 * (next() - 0.5))) : uniformVector(next, dim),
      ),
    );
    const res = expectExact(m, base, { k: 10 });
    expect(res.scans).toBe(2);
    expect(res.path).toBe('bound');
    expect(res.rescored).toBeGreaterThanOrEqual(400);
  });

  it('scores every row when the bound cannot tell any rows apart', () => {
    const next = random(8);
    const base = uniformVector(next);
    const m = new Mirror();
    fill(
      m,
      Array.from({ length: 700 }, () => Float32Array.from(base, (x) => x * (1 + 1e-6 * (next() - 0.5)))),
    );
    const res = expectExact(m, uniformVector(next), { k: 10 });
    expect(res.path).toBe('exhaustive');
    expect(res.rescored).toBe(700); // all within the f32 bound of each other: every row needs its f64 score
    expectExact(m, base, { k: 10 });
  });

  it('merges several native blocks into one exact answer', () => {
    const source = clusteredSource(9, 6);
    const m = new Mirror(DIM, 100 * DIM); // 100 rows per block
    fill(m, Array.from({ length: 750 }, source));
    for (let i = 0; i < 6; i++) {
      const q = source();
      const res = expectExact(m, q, { k: 10 });
      expect(res.scans).toBeGreaterThanOrEqual(8);
      expectExact(m, q, { k: 40, filter: { column: m.channels, wanted: 'c0' } });
      if (i === 0) expectBoundsHold(m, q);
    }
    // the last row crosses blocks into each hole; then it must still be found as itself
    for (const row of [610, 420, 150, 3]) {
      const moved = m.rows.slice((m.count - 1) * DIM, m.count * DIM);
      m.remove(m.ids[row]!);
      expect(expectExact(m, moved, { k: 1 }).hits[0]!.row).toBe(row);
      expectExact(m, source(), { k: 10 });
    }
  });

  it('answers exactly before the first build (every row an exception) and asks for a build', () => {
    const next = random(10);
    const m = new Mirror();
    for (let i = 0; i < 300; i++) m.upsert(idOf(i), uniformVector(next));
    expect(m.quantized.needsRebuild).toBe(true);
    expect(expectExact(m, uniformVector(next), { k: 10 }).path).toBe('exhaustive');
    m.rebuild();
    expect(m.quantized.needsRebuild).toBe(false);
    expect(expectExact(m, uniformVector(next), { k: 10 }).path).toBe('bound');
  });

  it('bounds every score soundly, and not vacuously, where Cauchy–Schwarz is nearly tight (2 and 3 dimensions)', () => {
    for (const dim of [2, 3]) {
      const next = random(20 + dim);
      const m = new Mirror(dim);
      fill(m, Array.from({ length: 2000 }, () => uniformVector(next, dim)));
      // later rows outside the build's ranges, clamped but within the error limit or not; and holes refilled
      for (let i = 0; i < 200; i++) m.upsert(idOf(5000 + i), uniformVector(next, dim));
      for (let i = 0; i < 300; i++) m.remove(m.ids[Math.floor(next() * m.count)]!);
      let tightest = 0; // largest |exact − approx| / bound seen: must stay ≤ 1
      for (let i = 0; i < 200; i++) {
        const q = uniformVector(next, dim);
        const b = m.quantized.scoreBounds(q)!;
        for (let r = 0; r < m.count; r++) {
          if (b.bound[r] === Infinity) continue;
          let s = 0;
          for (let j = 0; j < dim; j++) s += m.rows[r * dim + j]! * q[j]!;
          tightest = Math.max(tightest, Math.abs(s - b.approx[r]!) / b.bound[r]!);
        }
        if (i % 20 === 0) expectExact(m, q, { k: 10 });
      }
      expect(tightest).toBeLessThanOrEqual(1);
      expect(tightest).toBeGreaterThan(0.5);
    }
  });

  it('works in few dimensions and with tiny sets', () => {
    const next = random(11);
    const m = new Mirror(3);
    expect(m.search(uniformVector(next, 3), { k: 5 }).hits).toEqual([]);
    m.upsert('a', uniformVector(next, 3));
    m.rebuild();
    expectExact(m, uniformVector(next, 3), { k: 5 });
    for (let i = 0; i < 400; i++) m.upsert(idOf(i), uniformVector(next, 3));
    m.rebuild();
    for (let i = 0; i < 20; i++) expectExact(m, uniformVector(next, 3), { k: 7 });
    expect(m.search(uniformVector(next, 3), { k: 0 }).hits).toEqual([]);
  });

  it('slices a search into event-loop turns, and gives up when the set changes meanwhile', async () => {
    const source = clusteredSource(12, 6);
    const m = new Mirror(DIM, 200 * DIM);
    fill(m, Array.from({ length: 900 }, source));
    const q = source();
    const sliced = await m.quantized.searchSliced(q, m.rows, m.ids, { k: 10 }, { budgetMs: 0 });
    expect(sliced).toEqual(m.search(q, { k: 10 }));

    const torn = m.quantized.searchSliced(q, m.rows, m.ids, { k: 10 }, { budgetMs: 0 });
    m.upsert(m.ids[0]!, source()); // lands between two slices
    expect(await torn).toBeNull();

    let current = true;
    const dropped = m.quantized.searchSliced(q, m.rows, m.ids, { k: 10 }, { budgetMs: 0, stillCurrent: () => current });
    current = false;
    expect(await dropped).toBeNull();
  });

  it('rebuilds in slices, keeping the old quantization until done and abandoning on a write', async () => {
    const source = clusteredSource(13, 6);
    const m = new Mirror();
    for (let i = 0; i < 700; i++) m.upsert(idOf(i), source());
    const racing = m.quantized.rebuildSliced(m.rows, m.count, { budgetMs: 0 });
    m.upsert(idOf(700), source());
    expect(await racing).toBe(false);
    expect(m.quantized.needsRebuild).toBe(true); // nothing installed
    expect(await m.quantized.rebuildSliced(m.rows, m.count, { budgetMs: 0 })).toBe(true);
    expect(m.quantized.exceptionCount).toBe(0);
    expect(expectExact(m, source(), { k: 10 }).path).toBe('bound');
  });

  it('rejects rows, queries and positions that do not fit', () => {
    const m = new Mirror(8);
    expect(() => new QuantizedRows(0)).toThrow(RangeError);
    expect(() => m.quantized.writeRow(1, new Float32Array(8))).toThrow(RangeError);
    expect(() => m.quantized.writeRow(0, new Float32Array(7))).toThrow(RangeError);
    expect(() => m.quantized.removeRow(0)).toThrow(RangeError);
    m.upsert('a', unit([1, 2, 3, 4, 5, 6, 7, 8]));
    expect(() => m.quantized.search(new Float32Array(7), m.rows, m.ids, { k: 1 })).toThrow(RangeError);
    expect(() => m.quantized.search(new Float32Array(8), new Float32Array(0), m.ids, { k: 1 })).toThrow(RangeError);
    expect(() => m.quantized.rebuild(new Float32Array(8), 2)).toThrow(RangeError);
  });

  it('stays exact with the native kernels distrusted (as on a usearch build whose distances differ)', () => {
    const source = clusteredSource(14, 6);
    const m = new Mirror();
    fill(m, Array.from({ length: 500 }, source));
    for (const kernels of [
      { i8: false, f32: true },
      { i8: true, f32: false },
      { i8: false, f32: false },
    ]) {
      (m.quantized as unknown as { kernels: typeof kernels }).kernels = kernels;
      const q = source();
      const res = expectExact(m, q, { k: 10 });
      expect(res.path).toBe(kernels.i8 ? 'bound' : 'exhaustive');
      expectExact(m, q, { k: 10, filter: { column: m.channels, wanted: 'c3' }, minSimilarity: 0.1 });
    }
  });

  it('finds usearch’s ip kernels as the bounds assume them (1 − dot), here', () => {
    for (const dim of [1, 3, 1536, 4096]) expect(nativeKernelsFit(dim)).toEqual({ i8: true, f32: true });
  });

  // Why each native block is its own ArrayBuffer. Fails (and the copy can be simplified) once usearch honours views.
  it('usearch still reads a view from its buffer start and refuses shared memory', () => {
    const dim = 4;
    const data = new Int8Array([0, 0, 0, 0, 9, 9, 9, 9]);
    const view = data.subarray(dim); // byteOffset 4: the row [9, 9, 9, 9]
    const q = new Int8Array([1, 1, 1, 1]);
    const m = exactSearch(view, q, dim, 1, MetricKind.IP, 1);
    expect(m.distances[0]).toBe(1); // 1 − 0: it read the row of zeros
    expect(() => exactSearch(new Int8Array(new SharedArrayBuffer(8)), q, dim, 1, MetricKind.IP, 1)).toThrow();
  });
});
