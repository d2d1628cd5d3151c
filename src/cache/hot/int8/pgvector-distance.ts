/**
 * pgvector's `<=>` (cosine distance), reproduced bit for bit, and a bound on
 * how far it can be from the true cosine.
 *
 * pgvector 0.8 (src/vector.c, VectorCosineSimilarity) sums `a·b`, `a·a` and
 * `b·b` in float32, compiled with -ftree-vectorize -fassociative-math, so the
 * order of the additions is the compiler's, then returns
 * `1 − clamp(double(ab) / sqrt(double(aa) · double(bb)), −1, 1)` in double.
 * Rows a few float32 steps apart are ordered by those float32 sums, not by
 * the true cosine, so a search that must equal pgvector's answer on
 * near-ties must redo that arithmetic exactly for the rows that decide the
 * answer (and may use any tighter arithmetic elsewhere, widened by
 * `pgvectorError`).
 *
 * The order depends on how vector.so was compiled and on the CPU:
 * - `PGVECTOR_AVX2_FMA`: an x86-64 build whose loop runs the `fma` clone
 *   (the portable build, `OPTFLAGS=""`, as distribution packages and
 *   pgvector's Docker image make it, on any CPU with FMA; or `-march=native`,
 *   the Makefile's default, on a CPU with AVX2 and FMA but not AVX-512).
 *   Read from the disassembly: eight float32 lanes, each a chain of fused
 *   multiply-adds over every eighth element; lanes folded (l, l+4), then
 *   ((0+2) + (1+3)); a remainder of 4–7 elements adds one 4-lane fused step
 *   before the fold, and the last 1–3 elements are fused into the folded sum
 *   one by one.
 * - `PGVECTOR_AVX512_FMA`: `-march=native` with GCC on a CPU with AVX-512
 *   (e.g. Cooper Lake, Ice Lake and later Xeons): sixteen lanes folded
 *   (l, l+8) into eight; a remainder of 8–15 elements adds one 8-lane fused
 *   step, then the eight are folded as above, and the last 1–7 elements are
 *   fused one by one.
 * - `PGVECTOR_NEON_FMA`: GCC on aarch64 (armv8-a NEON, the portable build):
 *   four fused lanes (below 4 elements, none), folded pairwise
 *   ((0+1) + (2+3)); the last 1–3 elements are fused one by one. Read from
 *   GCC 12's aarch64 output and checked bit for bit against pgvector's loop
 *   built by it, run under qemu-aarch64 (no ARM server was at hand).
 * `bench/arithmetic.ts` re-checks each shape against pgvector's loop built
 * for every target the machine can compile and run.
 * `probeVectors` and `matchesPgvector` let a
 * caller check, once per server, that the server computes exactly this; a
 * set told the server's arithmetic is unknown (`arithmetic: null`) still
 * never answers wrongly: it gives up (null) whenever the answer hangs on a
 * difference smaller than `pgvectorError`.
 */

/**
 * A way pgvector's compiled loop sums: how many float32 lanes (1: a plain
 * sequential loop), and whether each multiply-add rounds once (FMA) or
 * twice. Every vectorized build known fuses.
 */
export type PgvectorArithmetic =
  | { readonly name: string; readonly lanes: 1; readonly fused: boolean }
  | { readonly name: string; readonly lanes: 4 | 8 | 16; readonly fused: true };

/** x86-64 running the `fma` clone: the portable build on any CPU with FMA (what `scripts/install-pgvector.sh` makes), or -march=native on AVX2 + FMA. */
export const PGVECTOR_AVX2_FMA: PgvectorArithmetic = Object.freeze({ name: 'avx2-fma', lanes: 8, fused: true });
/** x86-64, GCC -march=native on a CPU with AVX-512: sixteen fused lanes. */
export const PGVECTOR_AVX512_FMA: PgvectorArithmetic = Object.freeze({ name: 'avx512-fma', lanes: 16, fused: true });
/** aarch64, GCC, armv8-a NEON: four fused lanes folded pairwise. */
export const PGVECTOR_NEON_FMA: PgvectorArithmetic = Object.freeze({ name: 'neon-fma', lanes: 4, fused: true });
/** A build without vectorization or FMA (OPTFLAGS="" on some compilers): one float32 chain per sum. */
export const PGVECTOR_SEQUENTIAL: PgvectorArithmetic = Object.freeze({ name: 'sequential', lanes: 1, fused: false });

export const KNOWN_ARITHMETIC: readonly PgvectorArithmetic[] = [PGVECTOR_AVX2_FMA, PGVECTOR_AVX512_FMA, PGVECTOR_NEON_FMA, PGVECTOR_SEQUENTIAL];

const fround = Math.fround;

/**
 * float32 fma(a, b, c): a·b + c rounded once. a·b of two float32 values is
 * exact in double; the double sum s rounds, and rounding s again to float32
 * is only wrong when s lands exactly on a float32 midpoint while the exact
 * sum does not (then the exact sum's side of s decides). s is such a
 * midpoint iff s + (s − r) is a float32 (r = fround(s)): otherwise that
 * reflection lies strictly between two float32 neighbours.
 */
export function fmaF32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = fround(s);
  if (r === s) return r;
  const t = s + (s - r);
  if (fround(t) !== t) return r;
  return midpoint(p, c, s, r, t); // (a true tie, exact in double, stays as fround rounded it: to even)
}

/** The float32 sum pgvector's loop computes for Σ a_i·b_i (a === b for a squared norm). */
export function pgvectorDot(a: Float32Array, b: Float32Array, arithmetic: PgvectorArithmetic = PGVECTOR_AVX2_FMA): number {
  const n = a.length;
  if (arithmetic.lanes === 1) {
    let s = 0;
    if (arithmetic.fused) for (let i = 0; i < n; i++) s = fmaF32(a[i]!, b[i]!, s);
    else for (let i = 0; i < n; i++) s = fround(s + fround(a[i]! * b[i]!));
    return s;
  }
  if (arithmetic.lanes === 16) return dot16(a, b);
  if (arithmetic.lanes === 4) return dot4(a, b);
  // The fused 8-lane loop in eight locals (a lanes array costs a load and a store per element: ~15% slower).
  let l0 = 0;
  let l1 = 0;
  let l2 = 0;
  let l3 = 0;
  let l4 = 0;
  let l5 = 0;
  let l6 = 0;
  let l7 = 0;
  const n8 = n >= 8 ? n & ~7 : 0;
  for (let i = 0; i < n8; i += 8) {
    l0 = fusedAdd(a[i]! * b[i]!, l0);
    l1 = fusedAdd(a[i + 1]! * b[i + 1]!, l1);
    l2 = fusedAdd(a[i + 2]! * b[i + 2]!, l2);
    l3 = fusedAdd(a[i + 3]! * b[i + 3]!, l3);
    l4 = fusedAdd(a[i + 4]! * b[i + 4]!, l4);
    l5 = fusedAdd(a[i + 5]! * b[i + 5]!, l5);
    l6 = fusedAdd(a[i + 6]! * b[i + 6]!, l6);
    l7 = fusedAdd(a[i + 7]! * b[i + 7]!, l7);
  }
  let v0 = fround(l0 + l4);
  let v1 = fround(l1 + l5);
  let v2 = fround(l2 + l6);
  let v3 = fround(l3 + l7);
  let i = n8;
  if (n - n8 >= 4) {
    v0 = fusedAdd(a[i]! * b[i]!, v0);
    v1 = fusedAdd(a[i + 1]! * b[i + 1]!, v1);
    v2 = fusedAdd(a[i + 2]! * b[i + 2]!, v2);
    v3 = fusedAdd(a[i + 3]! * b[i + 3]!, v3);
    i += 4;
  }
  let s = fround(fround(v0 + v2) + fround(v1 + v3));
  for (; i < n; i++) s = fusedAdd(a[i]! * b[i]!, s);
  return s;
}

/** The fused 16-lane loop (PGVECTOR_AVX512_FMA), lanes in a scratch array: only AVX-512 servers use it. */
function dot16(a: Float32Array, b: Float32Array): number {
  const n = a.length;
  const l = LANES16.fill(0);
  const n16 = n >= 16 ? n & ~15 : 0;
  for (let i = 0; i < n16; i += 16) for (let j = 0; j < 16; j++) l[j] = fusedAdd(a[i + j]! * b[i + j]!, l[j]!);
  const y = LANES8;
  for (let j = 0; j < 8; j++) y[j] = fround(l[j]! + l[j + 8]!);
  let i = n16;
  if (n - n16 >= 8) {
    for (let j = 0; j < 8; j++) y[j] = fusedAdd(a[i + j]! * b[i + j]!, y[j]!);
    i += 8;
  }
  const x0 = fround(y[0]! + y[4]!);
  const x1 = fround(y[1]! + y[5]!);
  const x2 = fround(y[2]! + y[6]!);
  const x3 = fround(y[3]! + y[7]!);
  let s = fround(fround(x0 + x2) + fround(x1 + x3));
  for (; i < n; i++) s = fusedAdd(a[i]! * b[i]!, s);
  return s;
}
const LANES16 = new Float64Array(16);
const LANES8 = new Float64Array(8);

/** The fused 4-lane loop (PGVECTOR_NEON_FMA): GCC runs it only for 4 or more elements. */
function dot4(a: Float32Array, b: Float32Array): number {
  const n = a.length;
  let s = 0;
  let i = 0;
  if (n >= 4) {
    let l0 = 0;
    let l1 = 0;
    let l2 = 0;
    let l3 = 0;
    const n4 = n & ~3;
    for (; i < n4; i += 4) {
      l0 = fusedAdd(a[i]! * b[i]!, l0);
      l1 = fusedAdd(a[i + 1]! * b[i + 1]!, l1);
      l2 = fusedAdd(a[i + 2]! * b[i + 2]!, l2);
      l3 = fusedAdd(a[i + 3]! * b[i + 3]!, l3);
    }
    s = fround(fround(l0 + l1) + fround(l2 + l3));
  }
  for (; i < n; i++) s = fusedAdd(a[i]! * b[i]!, s);
  return s;
}

/** fmaF32 given the product p = a·b (exact in double): small enough for V8 to inline in the loop above. */
function fusedAdd(p: number, c: number): number {
  const s = p + c;
  const r = fround(s);
  if (r === s) return r;
  const t = s + (s - r);
  return fround(t) !== t ? r : midpoint(p, c, s, r, t);
}


/** fmaF32's rare branch: s = p + c (double) is a float32 midpoint between r and t; the exact sum's side of it decides. */
function midpoint(p: number, c: number, s: number, r: number, t: number): number {
  const cb = s - p;
  const e = p - (s - cb) + (c - cb); // TwoSum: the rounding error of p + c, exactly
  if (e === 0) return r;
  return e > 0 ? Math.max(r, t) : Math.min(r, t);
}

/**
 * pgvector's `a <=> b` from its three float32 sums: `dot` = Σ a·b, `aa`,
 * `bb` the squared norms, as `pgvectorDot` returns them. NaN where pgvector
 * returns NaN (a zero norm).
 */
export function pgvectorDistanceFromSums(dot: number, aa: number, bb: number): number {
  let similarity = dot / Math.sqrt(aa * bb); // aa·bb of two float32 is exact in double
  if (similarity > 1) similarity = 1;
  else if (similarity < -1) similarity = -1;
  return 1 - similarity;
}

/** `a <=> b` as pgvector computes it. */
export function pgvectorDistance(a: Float32Array, b: Float32Array, arithmetic: PgvectorArithmetic = PGVECTOR_AVX2_FMA): number {
  return pgvectorDistanceFromSums(pgvectorDot(a, b, arithmetic), pgvectorDot(a, a, arithmetic), pgvectorDot(b, b, arithmetic));
}

/**
 * A bound on |pgvector's similarity − the true cosine| for n dimensions, for
 * any summation order of the float32 loop and any lane count (each term
 * passes through at most n + 8 roundings; with k roundings of relative
 * error u = 2⁻²⁴ a sum of products is within γ_k·Σ|a_i b_i| ≤ γ_k‖a‖‖b‖,
 * and each squared norm within γ_k of itself, so the quotient is within
 * γ_k(1 + |cos|) + γ_k² of the cosine; double rounding adds a few 2⁻⁵³).
 * Gradual underflow adds an absolute error of at most 2⁻¹⁵⁰ per rounding,
 * which for a searchable row (‖a‖ ≥ 2⁻⁶³, see searchable) and a unit
 * query is below (n + 8)·2⁻⁸⁷ relative: covered by the final term.
 *
 * Tighter bounds for the lane shapes are used when the arithmetic is known.
 * A term passes through at most:
 * - 8 lanes: ⌈n/8⌉ + 8 roundings (its chain, the folds, the 4-lane step,
 *   3 trailing elements);
 * - 4 lanes: ⌈n/4⌉ + 8 (its chain, two folds, 3 trailing elements);
 * - 16 lanes: ⌈n/16⌉ + 12 (its chain, the folds, the 8-lane step, 7
 *   trailing elements).
 */
export function pgvectorError(n: number, lanes: 1 | 4 | 8 | 16 = 1): number {
  const k = lanes === 16 ? Math.ceil(n / 16) + 12 : lanes === 8 ? Math.ceil(n / 8) + 8 : lanes === 4 ? Math.ceil(n / 4) + 8 : n + 8;
  const u = 2 ** -24;
  const gamma = (k * u) / (1 - k * u);
  return 2 * gamma + 2 * gamma * gamma + 16 * 2 ** -53 + (n + 8) * 2 ** -80;
}

/**
 * Vectors whose pgvector distances tell the known arithmetics apart (and
 * any other from them): rows of mixed magnitudes, so every change of order
 * or fusing changes the float32 sums. `matchesPgvector` compares the
 * server's answers with an arithmetic.
 */
export function probeVectors(dimension: number): { rows: Float32Array[]; query: Float32Array } {
  let s = 0x9e3779b9;
  const next = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
  const rows = Array.from({ length: 16 }, (_, r) =>
    Float32Array.from({ length: dimension }, (_, j) => (next() - 0.5) * 2 ** (((j * 7 + r) % 23) - 11)),
  );
  const query = Float32Array.from({ length: dimension }, () => next() - 0.5);
  return { rows, query };
}

/** Whether distances pgvector returned for `probeVectors(dimension)` (row order, `row <=> query`) are exactly this arithmetic's. */
export function matchesPgvector(dimension: number, distances: readonly number[], arithmetic: PgvectorArithmetic): boolean {
  const { rows, query } = probeVectors(dimension);
  return rows.length === distances.length && rows.every((row, i) => Object.is(pgvectorDistance(row, query, arithmetic), distances[i]));
}
