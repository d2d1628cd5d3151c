import { createRequire } from 'node:module';

// Loaded as CommonJS: usearch's ES build finds its native binary from a global `__dirname`,
// which Prisma's generated client sets (to its own folder) when it is imported first.
const { exactSearch, MetricKind } = createRequire(import.meta.url)('usearch') as typeof import('usearch');

/**
 * Kernel fitness and error bounds: what usearch's native `ip` distances
 * mean, and how far each can be from the truth. The native layer is called
 * `scan` here (one usearch `exactSearch` over a contiguous block).
 *
 * usearch's i8 `ip` (numkong) sums the integer products exactly in i32 and
 * returns f32(1 − f32(dot)): two roundings of at most one float32 step of
 * the distance's size each (`i8KernelSlack`). Its f32 `ip` returns
 * 1 − dot in float32; whatever order it sums in (its kernel sums in f64),
 * the dot is within γ_d‖x‖‖q‖ of the truth (γ_d = d·2⁻²⁴/(1 − d·2⁻²⁴)), and
 * 1 − dot is rounded once more (`f32Delta`). `nativeKernelsFit` checks, once
 * per dimension count, that the installed build keeps those promises; a build
 * that does not (another version, a source build without numkong) loses only
 * speed: the bounds are then not trusted and every row is scored in JS.
 */

export const CODE_MAX = 127;
/** Unit roundoff of float32 (round to nearest). */
export const F32_UNIT_ROUNDOFF = 2 ** -24;
/** Relative and absolute slack on every bound: covers f64 rounding in the bound itself. */
export const REL_SLACK = 1e-6;
export const ABS_SLACK = 1e-9;

/** The spacing of float32 values in x's binade (at least 1's): the worst rounding step of a float32 near x. */
export function f32Ulp(x: number): number {
  return 2 ** (Math.floor(Math.log2(Math.max(1, Math.abs(x)))) - 23);
}

/** A float32 not below x (x ≥ 0): per-row norms are stored rounded up so bounds stay bounds. */
export function f32Up(x: number): number {
  const f = Math.fround(x);
  return f >= x ? f : Math.fround(x + f32Ulp(x));
}

/** Largest |(1 − dot) − native distance| of usearch's i8 `ip`, in code units. */
export function i8KernelSlack(dim: number): number {
  return 2 * f32Ulp(CODE_MAX * CODE_MAX * dim + 1);
}

/**
 * Bound on |native f32 dot − exact dot| for a row of norm ‖x‖ against a
 * query of norm ‖q‖, `dot` being the native result; `dim`·2⁻¹⁴⁹ covers
 * products that fall into float32's gradual underflow.
 */
export function f32Delta(dim: number, rowNorm: number, qNorm: number, dot: number): number {
  const du = dim * F32_UNIT_ROUNDOFF;
  const gamma = du < 0.5 ? du / (1 - du) : Infinity;
  return (gamma * rowNorm * qNorm + F32_UNIT_ROUNDOFF * (1 + 2 * Math.abs(dot) + 1e-6) + dim * 2 ** -149) * (1 + REL_SLACK) + ABS_SLACK;
}

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** usearch's keys (row offsets, far below 2³²) as 32-bit words: key x is word 2x. Reading words skips a BigInt per candidate. */
export function lowWords(keys: BigUint64Array): Uint32Array | number[] {
  if (!littleEndian) return Array.from(keys, (key) => Number(key)).flatMap((v) => [v, 0]);
  return new Uint32Array(keys.buffer, keys.byteOffset, keys.length * 2);
}

/**
 * The native layer: the `take` rows of `block` (rows × dim, from the start of
 * its own ArrayBuffer: usearch ignores a view's byteOffset) with the smallest
 * `ip` distance to `query`, best first.
 */
export function scan(block: Int8Array | Float32Array, rows: number, query: Int8Array | Float32Array, dim: number, take: number): { keys: Uint32Array | number[]; distances: Float32Array } {
  const data = rows * dim === block.length ? block : block.subarray(0, rows * dim);
  const m = exactSearch(data, query, dim, take, MetricKind.IP, 1);
  return { keys: lowWords(m.keys), distances: m.distances };
}

const kernelChecks = new Map<number, { i8: boolean; f32: boolean }>();

/**
 * Whether usearch's `ip` distances mean what the bounds assume (1 − dot,
 * within the slack above), checked once per dimension count on extreme and
 * mixed rows.
 */
export function nativeKernelsFit(dim: number): { i8: boolean; f32: boolean } {
  let checked = kernelChecks.get(dim);
  if (checked) return checked;
  const rowsI8 = new Int8Array(4 * dim);
  const rowsF32 = new Float32Array(4 * dim);
  const pattern = (r: number, j: number) => [CODE_MAX, j % 2 ? CODE_MAX : -CODE_MAX, ((j * 37 + 11) % 255) - CODE_MAX, -CODE_MAX][r]!;
  for (let r = 0; r < 4; r++) {
    for (let j = 0; j < dim; j++) {
      rowsI8[r * dim + j] = pattern(r, j);
      rowsF32[r * dim + j] = pattern(r, j) / (CODE_MAX * Math.sqrt(dim)) + (r === 2 ? 1e-3 * Math.sin(j) : 0);
    }
  }
  const query = new Int8Array(dim).fill(CODE_MAX);
  const queryF32 = Float32Array.from(rowsF32.subarray(2 * dim, 3 * dim));
  const fits = (rows: Int8Array | Float32Array, q: Int8Array | Float32Array, tolerance: (exact: number, row: number) => number): boolean => {
    try {
      const m = exactSearch(rows, q, dim, 4, MetricKind.IP, 1);
      if (m.keys.length !== 4) return false;
      for (let x = 0; x < 4; x++) {
        const row = Number(m.keys[x]!);
        let exact = 0;
        for (let j = 0; j < dim; j++) exact += rows[row * dim + j]! * q[j]!;
        if (!(Math.abs(1 - m.distances[x]! - exact) <= tolerance(exact, row))) return false;
      }
      return true;
    } catch {
      return false;
    }
  };
  let qNorm = 0;
  for (let j = 0; j < dim; j++) qNorm += queryF32[j]! * queryF32[j]!;
  checked = {
    i8: fits(rowsI8, query, () => i8KernelSlack(dim)),
    f32: fits(rowsF32, queryF32, (exact, row) => {
      let norm = 0;
      for (let j = 0; j < dim; j++) norm += rowsF32[row * dim + j]! ** 2;
      return f32Delta(dim, Math.sqrt(norm), Math.sqrt(qNorm), exact);
    }),
  };
  kernelChecks.set(dim, checked);
  return checked;
}
