import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { compareCodePoints } from '../../../src/cache/hot/filters.js';
import {
  compareNumericIds,
  PartitionSet,
  type ColumnSpec,
  type FilterCondition,
  type FilterValue,
  type HotHit,
  type HotQuery,
  type PartitionSetSpec,
} from '../../../src/cache/hot/partition-set.js';
import {
  KNOWN_ARITHMETIC,
  PGVECTOR_AVX2_FMA,
  PGVECTOR_AVX512_FMA,
  PGVECTOR_NEON_FMA,
  PGVECTOR_SEQUENTIAL,
  pgvectorDistanceFromSums,
  pgvectorDot,
  pgvectorError,
  type PgvectorArithmetic,
} from '../../../src/cache/hot/int8/pgvector-distance.js';
import { NORM_SQRT_MAX, NORM_SQRT_MIN, searchable } from '../../../src/embedding.js';
import { connect, createDatabase, type TestDb } from '../../helpers/db.js';
import { serverArithmetic } from '../../helpers/arithmetic.js';

/**
 * Seeded, adversarial differential fuzzing of PartitionSet against a brute
 * force in pgvector's arithmetic (pgvector-distance.ts, itself checked
 * against the server in int8/pgvector-distance.test.ts), through writes,
 * removals, moves between filter values and builds; a sample of the cases is
 * also replayed on the real server (ids, order and similarity bits).
 *
 * FUZZ_SEED picks the run (default fixed); FUZZ_CASES how many cases;
 * FUZZ_CASE=n runs case n alone and prints its steps.
 */

const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed2024) >>> 0;
const CASES = Number(process.env.FUZZ_CASES ?? 150);
const ONLY = process.env.FUZZ_CASE === undefined ? undefined : Number(process.env.FUZZ_CASE);
/** Cases replayed on the server: every SERVER_EVERY-th with a small dimension. */
const SERVER_EVERY = 6;

/** mulberry32: a 32-bit seed, a well-mixed stream. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Rng {
  constructor(readonly next: () => number) {}
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  /** Picks by weight: [[weight, value], …]. */
  weighted<T>(xs: readonly (readonly [number, T])[]): T {
    let total = 0;
    for (const [w] of xs) total += w;
    let r = this.next() * total;
    for (const [w, v] of xs) if ((r -= w) < 0) return v;
    return xs[xs.length - 1]![1];
  }
  gaussian(): number {
    let u = 0;
    while (u === 0) u = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
  subset<T>(xs: readonly T[], max: number): T[] {
    const n = this.range(0, Math.min(max, xs.length));
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(this.pick(xs));
    return out;
  }
}

function norm(v: ArrayLike<number>): number {
  let s = 0;
  for (let j = 0; j < v.length; j++) s += v[j]! * v[j]!;
  return Math.sqrt(s);
}

/** The float32 values of v / ‖v‖ (what the caller gives a search). */
function unit(v: ArrayLike<number>): Float32Array {
  const n = norm(v);
  return Float32Array.from(v as ArrayLike<number>, (x) => x / n);
}

// ---------------------------------------------------------------- the reference

/** SQL semantics, written out plainly (as the miss path's SQL means them: `NOT (x = ANY(list))` for notIn). */
function compareValues(a: string | number, b: string | number): number {
  if (typeof a === 'string') return compareCodePoints(a, b as string);
  const bn = b as number;
  if (Number.isNaN(a)) return Number.isNaN(bn) ? 0 : 1;
  if (Number.isNaN(bn)) return -1;
  return a < bn ? -1 : a > bn ? 1 : 0;
}

function passes(values: readonly FilterValue[], where: HotQuery['where']): boolean {
  return where.every(({ column, condition }) => {
    const v = values[column]!;
    if ('eq' in condition) return condition.eq === null ? v === null : v !== null && compareValues(v, condition.eq) === 0;
    if ('in' in condition) return v !== null && condition.in.some((x) => compareValues(v, x) === 0);
    if ('notIn' in condition) return condition.notIn.length === 0 || (v !== null && !condition.notIn.some((x) => compareValues(v, x) === 0));
    if (v === null) return false;
    const c = condition as { lt?: string | number; lte?: string | number; gt?: string | number; gte?: string | number };
    return (
      (c.lt === undefined || compareValues(v, c.lt) < 0) &&
      (c.lte === undefined || compareValues(v, c.lte) <= 0) &&
      (c.gt === undefined || compareValues(v, c.gt) > 0) &&
      (c.gte === undefined || compareValues(v, c.gte) >= 0)
    );
  });
}

interface ModelRow {
  id: string;
  embedding: Float32Array;
  filters: FilterValue[];
  live: boolean;
  /** pgvector's Σx² per arithmetic name. */
  aa: Map<string, number>;
}

interface RefHit {
  id: string;
  distance: number;
  similarity: number;
}

/** Every row's distance to one query, in one arithmetic: then any where / k / min is a filter and a sort. */
class ReferenceQuery {
  readonly scored: { row: ModelRow; distance: number }[] = [];
  constructor(rows: Iterable<ModelRow>, readonly query: Float32Array, readonly arithmetic: PgvectorArithmetic, readonly compareIds: (a: string, b: string) => number) {
    const bb = pgvectorDot(query, query, arithmetic);
    for (const row of rows) {
      if (!row.live) continue;
      let aa = row.aa.get(arithmetic.name);
      if (aa === undefined) row.aa.set(arithmetic.name, (aa = pgvectorDot(row.embedding, row.embedding, arithmetic)));
      this.scored.push({ row, distance: pgvectorDistanceFromSums(pgvectorDot(row.embedding, query, arithmetic), aa, bb) });
    }
    this.scored.sort((a, b) => a.distance - b.distance || compareIds(a.row.id, b.row.id));
  }

  answer(where: HotQuery['where'], k: number, min?: number): RefHit[] {
    const out: RefHit[] = [];
    for (const s of this.scored) {
      if (out.length === k) break;
      if (!passes(s.row.filters, where)) continue;
      const similarity = 1 - s.distance;
      if (min !== undefined && !(similarity >= min)) continue;
      out.push({ id: s.row.id, distance: s.distance, similarity });
    }
    return out;
  }
}

// ---------------------------------------------------------------- generators

const TEXT_POOL = ['a', 'b', 'B', 'ab', 'a\u0001', '', 'é', 'Ärger', '😀', '\uffee', '\ud7ff', 'general', 'random', 'zeta', 'z'];
const NUMBER_POOL = [0, -0, 1, 2, 3, -1, 0.5, 1e-300, -7.25, 1e15, 2 ** 53, Infinity, -Infinity, NaN, 1000, 42];

interface Shape {
  name: string;
  make: (i: number) => Float32Array;
}

interface World {
  dim: number;
  rng: Rng;
  centers: Float32Array[];
  /** The direction near-ties are built around (also a query). */
  q0: Float32Array;
  /** Earlier embeddings, for duplicates and scaled copies. */
  made: Float32Array[];
  /** Per-case cluster spread. */
  sigma: number;
}

function randomDirection(rng: Rng, dim: number): Float64Array {
  const v = new Float64Array(dim);
  for (let j = 0; j < dim; j++) v[j] = rng.gaussian();
  const n = norm(v);
  for (let j = 0; j < dim; j++) v[j]! /= n;
  return v;
}

/** A row whose float64 squared norm is in the norm rule's range only just: tiny, components' float32 squares subnormal. */
function barelyTiny(rng: Rng, dim: number, dir: ArrayLike<number>): Float32Array {
  for (let factor = 1 + rng.next() * 2 ** -10; ; factor *= 1 + 2 ** -12) {
    const n = norm(dir);
    const v = Float32Array.from(dir as ArrayLike<number>, (x) => (x / n) * 2 ** -63 * factor);
    if (searchable(v)) return v;
  }
}

function shapes(w: World): Shape[] {
  const { dim, rng } = w;
  const scaleOf = () => rng.weighted([
    [6, 1],
    [2, 0.5 + 3 * rng.next()],
    [1, 2 ** rng.range(-60, 60)],
  ] as const);
  const uniform: Shape = { name: 'uniform', make: () => Float32Array.from({ length: dim }, () => rng.gaussian() * scaleOf()) };
  const cluster: Shape = {
    name: 'cluster',
    make: () => {
      const c = rng.pick(w.centers);
      const s = scaleOf();
      return Float32Array.from(c, (x) => (x + w.sigma * rng.gaussian()) * s);
    },
  };
  const dup: Shape = {
    name: 'dup',
    make: () => (w.made.length ? Float32Array.from(rng.pick(w.made)) : Float32Array.from(rng.pick(w.centers))),
  };
  const scaled: Shape = {
    name: 'scaled',
    make: () => {
      const src = w.made.length ? rng.pick(w.made) : rng.pick(w.centers);
      const s = rng.weighted([
        [3, 2 ** rng.range(-40, 40)],
        [2, rng.pick([3, 0.1, 7, 1 / 3, -1])],
        [1, 2 ** rng.range(-62, 62)],
      ] as const);
      return Float32Array.from(src, (x) => x * s);
    },
  };
  const nearTie: Shape = {
    name: 'near-tie',
    make: (i) => {
      const perp = randomDirection(rng, dim);
      let d = 0;
      for (let j = 0; j < dim; j++) d += perp[j]! * w.q0[j]!;
      for (let j = 0; j < dim; j++) perp[j]! -= d * w.q0[j]!;
      const pn = norm(perp) || 1;
      const a = Math.min(1, 0.6 + (i % 11) * 2 ** -24 * (dim > 3 ? 1 : 64));
      const s = rng.pick([1, 1, 3, 1e-3, 2 ** 20]);
      return Float32Array.from({ length: dim }, (_, j) => (a * w.q0[j]! + Math.sqrt(1 - a * a) * (perp[j]! / pn)) * s);
    },
  };
  const special: Shape = {
    name: 'special',
    make: () => {
      const dir = randomDirection(rng, dim);
      switch (rng.int(10)) {
        case 0:
          return new Float32Array(dim); // zero: not searchable
        case 1:
          return Float32Array.from(dir, (x) => x * 1e-30); // underflows pgvector's float32 sums: not searchable
        case 2:
          return Float32Array.from(dir, (x) => x * 2 ** 70); // overflows: not searchable
        case 3:
          return barelyTiny(rng, dim, dir); // searchable, float32 squares subnormal
        case 4:
          return barelyTiny(rng, dim, Float64Array.from({ length: dim }, () => (rng.chance(0.5) ? 1 : -1))); // equal magnitudes: the squares round alike
        case 5:
          return barelyTiny(rng, dim, rng.pick(w.centers)); // a tiny row inside a cluster
        case 6:
          return Float32Array.from(dir, (x) => x * 2 ** 62.9); // huge, still searchable
        case 7: {
          const v = new Float32Array(dim);
          v[rng.int(dim)] = Math.fround(2 ** -63 * (1 - 2 ** -20)); // just below the rule
          return v;
        }
        case 8: {
          const v = new Float32Array(dim); // one-hot: exact ties everywhere
          v[rng.int(Math.min(dim, 4))] = rng.pick([1, 2, 0.25, -1]);
          return v;
        }
        default:
          return Float32Array.from({ length: dim }, () => rng.range(-2, 2)); // small integers: exact ties
      }
    },
  };
  return [uniform, cluster, dup, scaled, nearTie, special];
}

function makeId(rng: Rng, numeric: boolean, used: Set<string>): string {
  for (;;) {
    let id: string;
    if (numeric) {
      id = rng.weighted([
        [4, String(rng.range(-50, 5000))],
        [1, (rng.chance(0.5) ? '-' : '') + String(BigInt(rng.int(2 ** 30)) * 8589934591n + BigInt(rng.int(1000)))],
        [1, rng.pick(['9223372036854775807', '-9223372036854775808', '9007199254740993', '-9007199254740993', '0'])],
      ] as const);
    } else {
      const parts = ['r', 'R', 'a', 'é', '😀', '\uffee', '0', '9', '-', '_'];
      id = rng.weighted([
        [4, `r${String(rng.int(100_000)).padStart(5, '0')}`],
        [2, Array.from({ length: rng.range(1, 4) }, () => rng.pick(parts)).join('')],
        [1, String(rng.int(1000))],
      ] as const);
    }
    if (!used.has(id)) {
      used.add(id);
      return id;
    }
  }
}

function filterValue(rng: Rng, spec: ColumnSpec, domain: readonly (string | number)[], nullShare: number): FilterValue {
  if (rng.chance(nullShare)) return null;
  return rng.pick(domain);
}

function condition(rng: Rng, kind: 'text' | 'number', domain: readonly (string | number)[]): FilterCondition {
  const value = () => (rng.chance(0.8) ? rng.pick(domain) : kind === 'text' ? rng.pick(TEXT_POOL) : rng.pick(NUMBER_POOL));
  return rng.weighted<FilterCondition>([
    [4, { eq: value() }],
    [1, { eq: null }],
    [3, { in: rng.chance(0.05) ? [] : [value(), ...rng.subset(domain, 3)] }],
    [2, { notIn: rng.chance(0.05) ? [] : [value(), ...rng.subset(domain, 2)] }],
    [1, { lt: value() }],
    [1, { lte: value() }],
    [1, { gt: value() }],
    [1, { gte: value() }],
    [2, { gt: value(), lte: value() }],
    [1, { gte: value(), lt: value() }],
    [1, { gt: value(), gte: value(), lt: value(), lte: value() }],
  ]);
}

// ---------------------------------------------------------------- a case

interface CaseConfig {
  dim: number;
  rows: number;
  numeric: boolean;
  filters: ColumnSpec[];
  arithmetic: PgvectorArithmetic | null;
  chunkBytes: number | undefined;
  loading: boolean;
}

function configure(rng: Rng): CaseConfig {
  const dim = rng.weighted([
    [3, 2],
    [3, 3],
    [1, 5],
    [3, 7],
    [1, 8],
    [1, 9],
    [1, 17],
    [5, 64],
    [1, 100],
    [3, 384],
    [1, 767],
    [2, 1536],
  ] as const);
  const maxRows = dim <= 100 ? 4000 : dim <= 767 ? 1500 : 500;
  const rows = Math.min(
    maxRows,
    rng.weighted([
      [1, 0],
      [1, 1],
      [1, 2],
      [1, 3],
      [2, rng.range(4, 40)],
      [5, rng.range(100, 700)],
      [2, rng.range(1000, 2000)],
      [1, rng.range(2500, 4000)],
    ] as const),
  );
  const filters: ColumnSpec[] = Array.from({ length: rng.weighted([[1, 0], [3, 1], [3, 2], [1, 3]] as const) }, (_, i) => ({
    name: `f${i}`,
    kind: rng.chance(0.5) ? 'text' : 'number',
  }));
  const arithmetic = rng.weighted<PgvectorArithmetic | null>([
    [5, PGVECTOR_AVX2_FMA],
    [2, PGVECTOR_AVX512_FMA],
    [1, PGVECTOR_NEON_FMA],
    [1, PGVECTOR_SEQUENTIAL],
    [2, null],
  ]);
  const chunkRows = rng.weighted([
    [2, undefined],
    [1, rng.range(1, 8)],
    [3, rng.range(16, 300)],
  ] as const);
  return { dim, rows, numeric: rng.chance(0.3), filters, arithmetic, chunkBytes: chunkRows === undefined ? undefined : chunkRows * dim, loading: rng.chance(0.15) };
}

interface Tally {
  searches: number;
  compared: number;
  ambiguous: number;
  paths: Record<string, number>;
}

interface Server {
  sql: pg.Client;
  tables: number;
  /** The arithmetic of this server's pgvector: a set told another is not compared with it. */
  arithmetic: PgvectorArithmetic;
}

class Case {
  readonly rng: Rng;
  readonly config: CaseConfig;
  readonly set: PartitionSet;
  readonly spec: PartitionSetSpec;
  readonly model = new Map<string, ModelRow>();
  readonly removed: string[] = [];
  readonly used = new Set<string>();
  readonly world: World;
  readonly shapes: Shape[];
  readonly shapeWeights: number[];
  readonly domains: (string | number)[][];
  readonly nullShares: number[];
  readonly compareIds: (a: string, b: string) => number;
  built = false;
  log: string[] = [];

  constructor(readonly index: number, readonly tally: Tally) {
    this.rng = new Rng(random((SEED ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0));
    const rng = this.rng;
    this.config = configure(rng);
    const { dim } = this.config;
    this.spec = { dimension: dim, filters: this.config.filters, idOrder: this.config.numeric ? 'numeric' : 'text' };
    this.compareIds = this.config.numeric ? compareNumericIds : compareCodePoints;
    this.set = new PartitionSet(this.spec, rng.pick([1, 4, 16, 5000]), {
      arithmetic: this.config.arithmetic,
      chunkBytes: this.config.chunkBytes,
      loading: this.config.loading,
    });
    const centers = Array.from({ length: rng.range(1, 8) }, () => Float32Array.from(randomDirection(rng, dim)));
    // A shared mean direction and uneven spreads, as embeddings have.
    if (rng.chance(0.5)) {
      const mean = randomDirection(rng, dim);
      for (const c of centers) for (let j = 0; j < dim; j++) c[j] = c[j]! * 0.4 + mean[j]! * (0.9 + 0.1 * rng.next());
    }
    this.world = {
      dim,
      rng,
      centers,
      q0: unit(randomDirection(rng, dim)),
      made: [],
      sigma: rng.pick([0.3, 0.05, 1e-2, 1e-3, 1e-5, 1e-7, 0]),
    };
    this.shapes = shapes(this.world);
    // Each case leans on a few shapes.
    this.shapeWeights = this.shapes.map(() => (rng.chance(0.5) ? rng.range(1, 10) : 0));
    if (this.shapeWeights.every((x) => x <= 0)) this.shapeWeights[rng.int(this.shapes.length)] = 1;
    this.shapeWeights[5] = Math.max(this.shapeWeights[5]!, rng.chance(0.5) ? 1 : 0);
    this.domains = this.config.filters.map((f) => {
      const pool: readonly (string | number)[] = f.kind === 'text' ? TEXT_POOL : NUMBER_POOL;
      const n = rng.weighted([[2, 1], [3, 2], [3, 4], [2, 8]] as const);
      return Array.from(new Set(Array.from({ length: n }, () => rng.pick(pool))));
    });
    this.nullShares = this.config.filters.map(() => rng.pick([0, 0.05, 0.3]));
  }

  note(s: string): void {
    this.log.push(s);
    if (ONLY !== undefined) console.log(s);
  }

  describe(): string {
    const c = this.config;
    return `case ${this.index} (FUZZ_SEED=${SEED} FUZZ_CASE=${this.index}): dim ${c.dim}, ${c.rows} rows, ${c.numeric ? 'numeric' : 'text'} ids, filters [${c.filters.map((f) => f.kind).join(',')}], arithmetic ${c.arithmetic?.name ?? 'unknown'}, chunkBytes ${c.chunkBytes}, sigma ${this.world.sigma}, shapes ${this.shapes.map((s, i) => `${s.name}:${this.shapeWeights[i]}`).join(' ')}`;
  }

  embedding(i: number): Float32Array {
    const shape = this.shapes[this.rng.weighted(this.shapeWeights.map((w, k) => [w, k] as const))]!;
    const v = shape.make(i);
    if (this.world.made.length < 64 || this.rng.chance(0.05)) this.world.made.push(v);
    return v;
  }

  filters(): FilterValue[] {
    return this.config.filters.map((f, i) => filterValue(this.rng, f, this.domains[i]!, this.nullShares[i]!));
  }

  upsert(id: string, embedding: Float32Array, filters: FilterValue[]): void {
    this.set.upsert({ id, embedding, filters, values: [id] });
    this.model.set(id, { id, embedding: Float32Array.from(embedding), filters, live: searchable(embedding), aa: new Map() });
  }

  insertNew(): void {
    const id = makeId(this.rng, this.config.numeric, this.used);
    this.upsert(id, this.embedding(this.model.size), this.filters());
  }

  mutate(steps: number): void {
    const rng = this.rng;
    let counts = { insert: 0, update: 0, move: 0, remove: 0, back: 0 };
    for (let s = 0; s < steps; s++) {
      const ids = this.model.size ? [...this.model.keys()] : [];
      const op = rng.weighted([
        [3, 'insert'],
        [ids.length ? 2 : 0, 'update'],
        [ids.length ? 2 : 0, 'move'],
        [ids.length ? 3 : 0, 'remove'],
        [this.removed.length ? 2 : 0, 'back'],
      ] as const);
      counts[op]++;
      if (op === 'insert') this.insertNew();
      else if (op === 'update') {
        const id = rng.pick(ids);
        this.upsert(id, this.embedding(s), rng.chance(0.5) ? this.model.get(id)!.filters : this.filters());
      } else if (op === 'move') {
        const id = rng.pick(ids);
        this.upsert(id, this.model.get(id)!.embedding, this.filters()); // other filter values, same vector
      } else if (op === 'remove') {
        const id = rng.pick(ids);
        expect(this.set.remove(id)).toBe(true);
        this.model.delete(id);
        this.removed.push(id);
      } else {
        const at = rng.int(this.removed.length);
        const id = this.removed[at]!;
        this.removed.splice(at, 1);
        this.upsert(id, this.embedding(s), this.filters());
      }
    }
    expect(this.set.count).toBe(this.model.size);
    this.note(`mutate ${JSON.stringify(counts)} -> ${this.model.size} rows, needsBuild ${this.set.needsBuild}`);
  }

  async build(): Promise<void> {
    if (this.rng.chance(0.2) && this.model.size > 0) {
      // A write lands while the build runs: either the build finished first or it gives up; the set stays exact.
      const p = this.set.build();
      this.mutate(1);
      const ok = await p;
      this.note(`build raced with a write: ${ok}`);
      if (ok) this.built = true;
    } else {
      const ok = await this.set.build();
      expect(ok).toBe(true);
      this.built = true;
      this.note(`build`);
    }
  }

  query(): Float32Array {
    const { rng, world } = this;
    const { dim } = world;
    const rows = [...this.model.values()];
    const kind = rng.weighted([
      [3, 'center'],
      [3, 'near-center'],
      [2, 'row'],
      [2, 'q0'],
      [2, 'random'],
      [1, 'opposite'],
      [1, 'axis'],
      [1, 'diagonal'],
    ] as const);
    let v: ArrayLike<number>;
    switch (kind) {
      case 'center':
        v = rng.pick(world.centers);
        break;
      case 'near-center': {
        const c = rng.pick(world.centers);
        const eps = rng.pick([1e-1, 1e-3, 1e-6]);
        v = Float64Array.from(c, (x) => x + eps * rng.gaussian());
        break;
      }
      case 'row':
        v = rows.length ? rng.pick(rows).embedding : world.q0;
        if (!(norm(v) > 0 && norm(v) < Infinity)) v = world.q0;
        break;
      case 'q0':
        v = world.q0;
        break;
      case 'opposite':
        v = Float64Array.from(rng.pick(world.centers), (x) => -x);
        break;
      case 'axis': {
        const a = new Float64Array(dim);
        a[rng.int(Math.min(dim, 4))] = 1;
        v = a;
        break;
      }
      case 'diagonal':
        v = Float64Array.from({ length: dim }, (_, j) => (j % 3 === 0 ? -1 : 1));
        break;
      default:
        v = randomDirection(rng, dim);
    }
    const q = unit(v);
    if (!(norm(q) > 0 && norm(q) < Infinity)) return unit(world.q0);
    return q;
  }

  where(): HotQuery['where'] {
    const rng = this.rng;
    const n = this.config.filters.length;
    if (n === 0) return [];
    const count = rng.weighted([[2, 0], [4, 1], [2, 2], [1, 3]] as const);
    return Array.from({ length: count }, () => {
      const column = rng.int(n);
      return { column, condition: condition(rng, this.config.filters[column]!.kind, this.domains[column]!) };
    });
  }

  /** Several searches on one query: each compared with the brute force. */
  async searches(searchesPerQuery: number): Promise<void> {
    const rng = this.rng;
    const q = this.query();
    const arithmetic = this.config.arithmetic;
    const refs = (arithmetic ? [arithmetic] : KNOWN_ARITHMETIC).map((a) => new ReferenceQuery(this.model.values(), q, a, this.compareIds));
    for (let s = 0; s < searchesPerQuery; s++) {
      const where = this.where();
      const k = rng.weighted([
        [3, rng.range(1, 5)],
        [3, rng.range(6, 30)],
        [2, rng.range(31, 99)],
        [2, 100],
      ] as const);
      let min: number | undefined;
      if (rng.chance(0.3)) {
        const all = refs[0]!.answer(where, 100);
        min = rng.weighted<number>([
          [4, all.length ? rng.pick(all).similarity : 0.5],
          [1, all.length ? rng.pick(all).similarity + (rng.chance(0.5) ? 2 ** -52 : -(2 ** -52)) : 0.1],
          [1, all.length ? Math.fround(rng.pick(all).similarity) : -0.1],
          [1, rng.next() * 2 - 1],
          [1, rng.pick([1, 1.01, -1, -1.5])],
        ]);
      }
      const hq: HotQuery = { query: q, where, limit: k, ...(min === undefined ? {} : { minSimilarity: min }) };
      this.tally.searches++;
      const desc = () => `${this.describe()}\n  search ${JSON.stringify({ where, k, min, built: this.built, rows: this.model.size })}\n  log: ${this.log.join(' | ')}`;
      let hits: HotHit[] | null;
      let path = 'async';
      if (rng.chance(0.25)) {
        hits = await this.set.search(hq);
      } else {
        const now = this.set.searchNow(hq);
        hits = now ? now.hits : null;
        if (now) path = now.stats.path;
      }
      this.tally.paths[path] = (this.tally.paths[path] ?? 0) + 1;
      if (this.config.loading && !this.built) {
        expect(hits, desc()).toBeNull();
        continue;
      }
      if (arithmetic) {
        expect(hits, `known arithmetic never gives up\n${desc()}`).not.toBeNull();
      }
      if (hits === null) {
        this.tally.ambiguous++;
        continue;
      }
      this.tally.compared++;
      for (const h of hits) expect(h.values[0], desc()).toBe(h.id);
      for (const ref of refs) {
        const want = ref.answer(where, k, min);
        const got: string[] = hits.map((h) => h.id);
        if (JSON.stringify(got) !== JSON.stringify(want.map((w) => w.id))) {
          const detail = (ids: string[]) =>
            ids.map((id) => {
              const e = ref.scored.find((x) => x.row.id === id);
              return `${id}:${e ? 1 - e.distance : 'absent'}`;
            });
          expect.fail(`ids differ (${ref.arithmetic.name})\n${desc()}\n  got  ${detail(got).join(' ')}\n  want ${want.map((w) => `${w.id}:${w.similarity}`).join(' ')}`);
        }
        if (arithmetic) {
          const bits = hits.every((h, i) => Object.is(h.similarity, want[i]!.similarity));
          if (!bits) expect.fail(`similarity bits differ\n${desc()}\n  got  ${hits.map((h) => h.similarity).join(' ')}\n  want ${want.map((w) => w.similarity).join(' ')}`);
        } else {
          const tolerance = 2 * pgvectorError(this.config.dim, 1) + 1e-12;
          hits.forEach((h, i) => expect(Math.abs(h.similarity - want[i]!.similarity), desc()).toBeLessThanOrEqual(tolerance));
        }
      }
    }
    // A search with a write landing meanwhile: null, or the answer before the write.
    if (rng.chance(0.1) && !(this.config.loading && !this.built)) {
      const hq: HotQuery = { query: q, where: [], limit: 10 };
      const before = refs[0]!.answer([], 10);
      const p = this.set.search(hq);
      this.mutate(1);
      const hits = await p;
      if (hits) expect(hits.map((h) => h.id)).toEqual(before.map((w) => w.id));
    }
  }

  async run(server: Server | undefined): Promise<void> {
    const rng = this.rng;
    this.note(this.describe());
    for (let i = 0; i < this.config.rows; i++) this.insertNew();
    const phases = rng.range(1, 4);
    for (let phase = 0; phase < phases; phase++) {
      if (phase > 0) this.mutate(rng.weighted([[1, 1], [2, rng.range(2, 20)], [1, Math.ceil(this.model.size * rng.next() * 0.5)]] as const));
      if (rng.chance(phase === 0 && !this.config.loading ? 0.5 : 0.7)) await this.build();
      else this.note('no build');
      const queries = rng.range(1, 3);
      for (let i = 0; i < queries; i++) await this.searches(rng.range(2, 6));
    }
    if (server) await this.onServer(server);
  }

  /** The final state, replayed on pgvector itself: the same answers, to the bit. */
  async onServer(server: Server): Promise<void> {
    if (this.config.loading && !this.built) return;
    const { sql } = server;
    const name = `fz${++server.tables}`;
    const { filters, numeric, dim } = this.config;
    const cols = filters.map((f, i) => `f${i} ${f.kind === 'text' ? 'text' : 'float8'}`);
    await sql.query(`CREATE TABLE ${name} (id ${numeric ? 'bigint' : 'text'} PRIMARY KEY, ${cols.map((c) => `${c}, `).join('')}embedding vector(${dim}))`);
    const rows = [...this.model.values()].filter((r) => r.embedding.every(Number.isFinite)); // pgvector refuses non-finite values: such rows exist only here (and are never returned)
    const literal = (v: Float32Array) => `[${Array.from(v).join(',')}]`;
    const names = ['id', ...filters.map((_, i) => `f${i}`), 'embedding'];
    const types = [numeric ? 'bigint[]' : 'text[]', ...filters.map((f) => (f.kind === 'text' ? 'text[]' : 'float8[]')), 'text[]'];
    for (let from = 0; from < rows.length; from += 500) {
      const part = rows.slice(from, from + 500);
      // float8 arrays: NaN and ±Infinity as their SQL spellings.
      const num = (v: FilterValue) => (v === null ? null : typeof v === 'number' ? (Number.isNaN(v) ? 'NaN' : v === Infinity ? 'Infinity' : v === -Infinity ? '-Infinity' : Object.is(v, -0) ? '-0' : String(v)) : v);
      const params: unknown[] = [part.map((r) => r.id), ...filters.map((_, i) => part.map((r) => num(r.filters[i]!))), part.map((r) => literal(r.embedding))];
      await sql.query(
        `INSERT INTO ${name} (${names.join(', ')}) SELECT ${names.map((c) => (c === 'embedding' ? 'embedding::vector' : c)).join(', ')} FROM unnest(${types.map((t, i) => `$${i + 1}::${t}`).join(', ')}) AS u(${names.join(', ')})`,
        params,
      );
    }
    const sqlValue = (v: string | number) => (typeof v === 'number' ? (Number.isNaN(v) ? 'NaN' : v === Infinity ? 'Infinity' : v === -Infinity ? '-Infinity' : String(v)) : v);
    for (let i = 0; i < 4; i++) {
      const q = this.query();
      const where = this.where();
      const k = this.rng.range(1, 100);
      const params: unknown[] = [literal(q), k];
      const p = (v: unknown) => `$${params.push(v)}`;
      const parts = where.map(({ column, condition: c }) => {
        const kind = filters[column]!.kind;
        const col = kind === 'text' ? `f${column} COLLATE "C"` : `f${column}`;
        const cast = kind === 'text' ? 'text' : 'float8';
        if ('eq' in c) return c.eq === null ? `f${column} IS NULL` : `${col} = ${p(sqlValue(c.eq))}::${cast}`;
        if ('in' in c) return `${col} = ANY(${p(c.in.map(sqlValue))}::${cast}[])`;
        if ('notIn' in c) return `NOT (${col} = ANY(${p(c.notIn.map(sqlValue))}::${cast}[]))`;
        const ops = { lt: '<', lte: '<=', gt: '>', gte: '>=' } as const;
        return (['lt', 'lte', 'gt', 'gte'] as const)
          .filter((key) => c[key] !== undefined)
          .map((key) => `${col} ${ops[key]} ${p(sqlValue(c[key]!))}::${cast}`)
          .join(' AND ');
      });
      const r = await sql.query<{ id: string; similarity: number }>(
        `SELECT id::text AS id, 1 - (embedding <=> $1::vector) AS similarity FROM ${name}
         WHERE ${parts.length ? parts.join(' AND ') : 'true'} AND vector_norm(embedding) BETWEEN ${NORM_SQRT_MIN} AND ${NORM_SQRT_MAX}
         ORDER BY embedding <=> $1::vector, ${name}.id${numeric ? '' : ' COLLATE "C"'} LIMIT $2`,
        params,
      );
      const hits = this.set.searchNow({ query: q, where, limit: k })!.hits;
      const desc = `${this.describe()}\n  server search ${JSON.stringify({ where, k })}`;
      if (this.config.arithmetic && this.config.arithmetic !== server.arithmetic) continue; // not this server's arithmetic
      if (this.config.arithmetic) expect(hits, desc).not.toBeNull();
      if (!hits) continue;
      if (process.env.FUZZ_DEBUG && JSON.stringify(hits.map((h) => h.id)) !== JSON.stringify(r.rows.map((x) => x.id))) {
        for (const x of r.rows) {
          const m = this.model.get(x.id)!;
          const h = hits.find((y) => y.id === x.id);
          console.log(x.id, x.similarity, h?.similarity, JSON.stringify(Array.from(m.embedding)), JSON.stringify(m.filters));
        }
        const d = await sql.query(`SELECT id::text, embedding::text, (embedding <=> $1::vector) AS d FROM ${name}`, [literal(q)]);
        console.log(JSON.stringify(d.rows), literal(q));
      }
      expect(hits.map((h) => h.id), desc).toEqual(r.rows.map((x) => x.id));
      if (this.config.arithmetic) expect(hits.map((h) => h.similarity), desc).toEqual(r.rows.map((x) => x.similarity));
    }
    await sql.query(`DROP TABLE ${name}`);
  }
}

// ---------------------------------------------------------------- the run

let db: TestDb | undefined;
let server: Server | undefined;

beforeAll(async () => {
  db = await createDatabase('ms_hot_fuzz');
  const sql = await connect(db.url);
  await sql.query('CREATE EXTENSION IF NOT EXISTS vector');
  await sql.query('SET enable_indexscan = off; SET enable_bitmapscan = off');
  server = { sql, tables: 0, arithmetic: await serverArithmetic(sql) };
});

afterAll(async () => {
  await server?.sql.end();
  await db?.drop();
});

describe(`PartitionSet fuzz (FUZZ_SEED=${SEED})`, () => {
  it(`equals the brute force in pgvector arithmetic on ${ONLY === undefined ? CASES : 1} seeded cases`, { timeout: 300_000 }, async () => {
    const tally: Tally = { searches: 0, compared: 0, ambiguous: 0, paths: {} };
    const shapes = new Map<string, number>();
    for (let index = ONLY ?? 0; index < (ONLY === undefined ? CASES : ONLY + 1); index++) {
      const c = new Case(index, tally);
      const onServer = (index % SERVER_EVERY === 0 && c.config.dim <= 384) || ONLY !== undefined;
      await c.run(onServer ? server : undefined);
      const key = `dim ${c.config.dim}`;
      shapes.set(key, (shapes.get(key) ?? 0) + 1);
    }
    console.log(`fuzz seed ${SEED}: ${tally.searches} searches, ${tally.compared} compared, ${tally.ambiguous} ambiguous (unknown arithmetic), paths ${JSON.stringify(tally.paths)}; ${[...shapes].map(([k, v]) => `${k}×${v}`).join(', ')}`);
    expect(tally.compared).toBeGreaterThan(0);
  });
});
