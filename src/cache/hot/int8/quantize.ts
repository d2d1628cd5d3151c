import { ABS_SLACK, CODE_MAX, f32Up, REL_SLACK } from './kernel-fit.js';

/**
 * Quantization: per-dimension offsets o_j and scales s_j, fixed at a build;
 * a row's unit direction u (its stored float32 values over their float64
 * norm) is kept as codes c in [−127, 127] with
 *   u = o + s∘c + e        (e: rounding and clamping error, measured),
 * and a query q (unit) becomes w = s∘q = t·d + f with one scale t and codes
 * d. Then u·q = o·q + t·(c·d) + c·f + e·q, and by Cauchy–Schwarz
 * |c·f + e·q| ≤ ‖c‖‖f‖ + ‖e‖‖q‖ (`QueryCodes.rowBound`).
 */

/** Floor for a dimension's scale, so a dimension constant at build time still takes later rows (by clamping). */
const SCALE_FLOOR = 2 ** -20;
/** Rows sampled at build to pick the scale floor. */
const FLOOR_SAMPLE_ROWS = 64;
const FLOOR_SAMPLE_QUERIES = 16;
/** Candidate scale floors, as fractions of the widest dimension's range. */
const FLOOR_FRACTIONS = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1];

/** Everything a build fixes for the codes (float32 is enough: errors are measured from the stored values). */
export interface Scales {
  readonly offsets: Float32Array;
  readonly scales: Float32Array;
  readonly inverseScales: Float32Array;
}

export function newScales(dim: number): Scales {
  return { offsets: new Float32Array(dim), scales: new Float32Array(dim), inverseScales: new Float32Array(dim) };
}

/** The nearest code to v, clamped to ±127. Any rounding is sound (the error is measured after); Math.round is ~10× slower here. */
export function code(v: number): number {
  if (v > CODE_MAX) return CODE_MAX;
  if (v < -CODE_MAX) return -CODE_MAX;
  return ((v + 128.5) | 0) - 128;
}

/** Per-row results of quantizing one row, rounded up. */
export interface RowCode {
  codeNorm: number;
  errorNorm: number;
}

/**
 * Quantizes the unit direction of `src[srcOff..+dim)` (scaled by
 * `inverseNorm`) into `codes[codeOff..+dim)`; returns ‖c‖ and ‖e‖ rounded up
 * in `out` (NaN for a row with no direction).
 */
export function quantizeRow(
  s: Scales,
  dim: number,
  src: Float32Array,
  srcOff: number,
  inverseNorm: number,
  codes: Int8Array,
  codeOff: number,
  out: RowCode,
): void {
  const { offsets, scales, inverseScales } = s;
  let codeSq = 0;
  let errorSq = 0;
  for (let j = 0; j < dim; j++) {
    const x = src[srcOff + j]! * inverseNorm;
    const o = offsets[j]!;
    let v = (x - o) * inverseScales[j]!;
    v = v > CODE_MAX ? CODE_MAX : v < -CODE_MAX ? -CODE_MAX : v;
    const c = ((v + 128.5) | 0) - 128; // nearest; see code()
    codes[codeOff + j] = c;
    const e = x - o - scales[j]! * c;
    codeSq += c * c;
    errorSq += e * e;
  }
  out.codeNorm = f32Up(Math.sqrt(codeSq) * (1 + REL_SLACK));
  out.errorNorm = f32Up(Math.sqrt(errorSq) * (1 + REL_SLACK));
}

/** Offsets at mid-range; scales span each dimension's range, floored at `floor`. */
export function setScales(s: Scales, lo: Float64Array, hi: Float64Array, floor: number): void {
  for (let j = 0; j < lo.length; j++) {
    const finite = Number.isFinite(lo[j]!) && Number.isFinite(hi[j]!);
    const sc = finite ? Math.max((hi[j]! - lo[j]!) / (2 * CODE_MAX), floor, SCALE_FLOOR) : SCALE_FLOOR;
    s.offsets[j] = finite ? (lo[j]! + hi[j]!) / 2 : 0;
    s.scales[j] = sc;
    s.inverseScales[j] = 1 / sc;
  }
}

/**
 * The scale floor that minimizes the typical bound ‖c‖‖f‖ + ‖e‖‖q‖ on a
 * sample of the rows (also used as queries). With uneven dimension variances
 * the query's widest dimension sets its step t, so coarser steps in the
 * narrow dimensions shrink ‖c‖ more than they grow ‖e‖.
 * `unit(r, out)` writes row r's unit direction.
 */
export function pickFloor(sampleRows: readonly Float64Array[], dim: number, lo: Float64Array, hi: Float64Array): number {
  let widest = 0;
  for (let j = 0; j < dim; j++) if (hi[j]! - lo[j]! > widest) widest = hi[j]! - lo[j]!;
  if (sampleRows.length < 2 || !(widest > 0) || !Number.isFinite(widest)) return 0;
  const probe = newScales(dim);
  const codes = new Int8Array(dim);
  const rowCode: RowCode = { codeNorm: 0, errorNorm: 0 };
  const f32 = new Float32Array(dim);
  let best = 0;
  let bestBound = Infinity;
  const sample = Math.min(sampleRows.length, FLOOR_SAMPLE_ROWS);
  for (const fraction of FLOOR_FRACTIONS) {
    const floor = (fraction * widest) / (2 * CODE_MAX);
    setScales(probe, lo, hi, floor);
    let codeSum = 0;
    let errorSum = 0;
    let fSum = 0;
    for (let i = 0; i < sample; i++) {
      const row = sampleRows[i]!;
      f32.set(row);
      quantizeRow(probe, dim, f32, 0, 1, codes, 0, rowCode);
      codeSum += rowCode.codeNorm;
      errorSum += rowCode.errorNorm;
      if (i < FLOOR_SAMPLE_QUERIES) {
        let wMax = 0;
        for (let j = 0; j < dim; j++) wMax = Math.max(wMax, Math.abs(probe.scales[j]! * row[j]!));
        const t = wMax / CODE_MAX || 1;
        let fSq = 0;
        for (let j = 0; j < dim; j++) {
          const wj = probe.scales[j]! * row[j]!;
          const f = wj - t * code(wj / t);
          fSq += f * f;
        }
        fSum += Math.sqrt(fSq);
      }
    }
    const queries = Math.min(sample, FLOOR_SAMPLE_QUERIES);
    const bound = (codeSum / sample) * (fSum / queries) + errorSum / sample;
    if (bound < bestBound) {
      bestBound = bound;
      best = floor;
    }
  }
  return best;
}

/** A query in code space (see the module comment). */
export interface QueryCodes {
  /** d, in its own buffer (usearch ignores a view's byteOffset). */
  codes: Int8Array;
  /** o·q, shared by every row. */
  base: number;
  /** The query's code step: u·q ≈ base + t·(c·d). */
  t: number;
  /** |u·q − (base + t·(c·d))| for a row with these norms, including the native distance's rounding. */
  rowBound: (codeNorm: number, errorNorm: number) => number;
}

/**
 * Codes for the unit query `q` (float64), or undefined when the codes would
 * say nothing (a query orthogonal to every scale, or not finite).
 * `kernelSlack`: the native distance's rounding in code units.
 */
export function prepareQuery(s: Scales, q: Float64Array, kernelSlack: number): QueryCodes | undefined {
  const dim = q.length;
  const { offsets, scales } = s;
  let base = 0;
  let wMax = 0;
  let qNormSq = 0;
  for (let j = 0; j < dim; j++) {
    const qj = q[j]!;
    base += offsets[j]! * qj;
    qNormSq += qj * qj;
    const wj = Math.abs(scales[j]! * qj);
    wMax = wj > wMax ? wj : wMax;
  }
  const qNorm = Math.sqrt(qNormSq);
  if (!(wMax > 0) || !Number.isFinite(wMax) || !Number.isFinite(base) || !Number.isFinite(qNorm)) return undefined;
  const t = wMax / CODE_MAX;
  const inverseT = 1 / t;
  const codes = new Int8Array(dim);
  let fNormSq = 0;
  for (let j = 0; j < dim; j++) {
    const wj = scales[j]! * q[j]!; // the same product as above, bit for bit
    const d = ((wj * inverseT + 128.5) | 0) - 128; // nearest; |wj·inverseT| ≤ 127 by the choice of t
    codes[j] = d;
    const f = wj - t * d;
    fNormSq += f * f;
  }
  const fNorm = Math.sqrt(fNormSq);
  const kernelError = t * kernelSlack;
  const rowBound = (codeNorm: number, errorNorm: number) => (codeNorm * fNorm + errorNorm * qNorm + kernelError) * (1 + REL_SLACK) + ABS_SLACK;
  return { codes, base, t, rowBound };
}
