// The 0.1 hot-search kernel (src/cache/hot/quantized.ts until 0.2), kept only as the bench's baseline for "no slower than the previous full scan".
import { createRequire } from 'node:module';

// Loaded as CommonJS: usearch's ES build finds its native binary from a global `__dirname`,
// which Prisma's generated client sets (to its own folder) when it is imported first.
const { exactSearch, MetricKind } = createRequire(import.meta.url)('usearch') as typeof import('usearch');

/**
 * A row-aligned int8 copy of one hot set's unit-normalized f32 rows, scanned
 * in one native call per query (usearch `exactSearch`, metric `ip`). The few
 * rows that can still matter are then scored: the likeliest k + 4 exactly in
 * f64 (JS), the rest natively in f32 (gathered into one more call), and any
 * of those that may still be in the answer rescored in f64.
 *
 * Measured (bench/hot-search.ts, 1536-d, top-10, this 2-core VM): 0.70 ms at
 * 10,000 rows (int8 scan 0.6 ms of it), 0.15 ms at 1,000, ~30 rows scored.
 *
 * Why the answer is exact. Each dimension j has an offset o_j and a scale s_j,
 * fixed at (re)build; row r is stored as codes c_r in [-127, 127] with
 *   x_r = o + s∘c_r + e_r             (e_r: rounding and clamping error).
 * The query q becomes w = s∘q, quantized with one scale t: w = t·d + f. Then
 *   x_r·q = o·q + t·(c_r·d) + c_r·f + e_r·q,
 * and by Cauchy–Schwarz |c_r·f + e_r·q| ≤ ‖c_r‖‖f‖ + ‖e_r‖‖q‖. The native
 * scan yields the integer c_r·d (as 1 − dot in f32, at most `kernelSlack`
 * off), so every row's true score lies in a known interval. The native f32
 * score s of a gathered row is within γ_d‖x_r‖‖q‖ + 2⁻²⁴(1 + 2|s|) of the
 * truth (γ_d = d·2⁻²⁴/(1 − d·2⁻²⁴)) whatever order usearch sums in, though
 * its kernel sums in f64. A row is left out only when its upper bound is
 * strictly below the k-th best lower bound (so a tie that could win on id is
 * never left out) or below `minSimilarity`; the rows left in are ranked on
 * f64 scores. When the int8 list runs out before that holds, it widens; at
 * worst every row is scored. `nativeKernelsFit` checks once per dimension
 * count that usearch's distances mean what these bounds assume.
 *
 * Rows whose error exceeds the set's limit (written after the build and
 * clamped hard, or written before any build) are "exceptions": always
 * scored, so they never loosen the bound for the others.
 */

/** Bytes per native block; each block is its own ArrayBuffer because usearch ignores a view's byteOffset. */
export const QUANTIZED_CHUNK_BYTES = 16 * 1024 * 1024;

const CODE_MAX = 127;
/** Unit roundoff of float32 (round to nearest). */
const F32_UNIT_ROUNDOFF = 2 ** -24;
/** A row written after the build stays regular while its error norm is within this factor of the build's largest. */
const ERROR_HEADROOM = 1.25;
/** Floor for a dimension's scale, so a dimension constant at build time still takes later rows (by clamping). */
const SCALE_FLOOR = 2 ** -20;
/** Relative and absolute slack on every bound: covers f64 rounding in the bound and in the rescore itself. */
const REL_SLACK = 1e-6;
const ABS_SLACK = 1e-9;
/** Fewest candidates taken in the first round, before dividing by the filter's pass share. */
const FIRST_CANDIDATES = 32;
/** Each further round takes this many times more candidates. */
const WIDEN_FACTOR = 8;
/**
 * At or below this pass share a filter is served by a scan of the passing
 * rows alone: gathering and scoring one f32 row costs about as much as
 * scanning 16 int8 rows.
 */
const FILTERED_SCAN_SHARE = 1 / 16;
/** Rows per native f32 call (gathered into one shared scratch block), and per yield point of a full scan. */
const BATCH_ROWS = 256;
/** The first batch of the int8 walk is k + 4 rows, at least this many (then doubling): scored exactly, so a good bar comes early. */
const FIRST_BATCH_ROWS = 8;
/** Batches up to this size are scored in JS: a native call has a fixed cost of a few µs. */
const SMALL_BATCH_ROWS = 4;
/** Rows sampled to estimate a filter's pass share. */
const SHARE_SAMPLE_ROWS = 256;
/** f64 rescores between yield points. */
const RESCORES_PER_STEP = 64;
/** Rows per yield point of a build (~1 ms of quantizing at 1536 dims). */
const BUILD_ROWS_PER_STEP = 256;
/** Rows sampled at build to pick the scale floor. */
const FLOOR_SAMPLE_ROWS = 64;
const FLOOR_SAMPLE_QUERIES = 16;
/** Candidate scale floors, as fractions of the widest dimension's range. */
const FLOOR_FRACTIONS = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1];

/** Keep only rows passing this: a predicate, or a per-row column compared with one wanted value (faster). */
export type RowFilter = ((row: number) => boolean) | { readonly column: ArrayLike<unknown>; readonly wanted: unknown };

export interface QuantizedSearchOptions {
  /** How many results (the k of top-k); fewer come back when fewer rows qualify. */
  k: number;
  /**
   * Rows scoring below this are left out (`score >= minSimilarity` passes, on
   * the unclamped score, as the per-row scan did).
   * @defaultValue undefined — no lower bound.
   */
  minSimilarity?: number | undefined;
  /**
   * Only rows passing it are ranked (the channel filter).
   * @defaultValue undefined — every row.
   */
  filter?: RowFilter | undefined;
}

export interface QuantizedSliceOptions {
  /**
   * Longest stretch of work between event-loop yields. Work is checked at
   * yield points (after each native int8 block scan, each native f32 batch of
   * up to 256 rows, every 64 f64 rescores), so one stretch can overrun it by
   * one step.
   * @defaultValue 1 — half the 2 ms block budget, leaving room for one native block scan.
   */
  budgetMs?: number | undefined;
  /**
   * Re-checked after every yield; false abandons the work (a search returns
   * null, a rebuild returns false).
   * @defaultValue () => true
   */
  stillCurrent?: (() => boolean) | undefined;
}

export interface QuantizedHit {
  row: number;
  /** Exact score, clamped to [-1, 1] as pgvector reports it. */
  similarity: number;
}

export interface QuantizedSearchResult {
  /** Similarity descending, then id ascending. */
  hits: QuantizedHit[];
  /** Rows scored natively in f32 (gathered), to bound them tightly. */
  scored: number;
  /** Rows scored exactly in f64 (JS): the first, likeliest candidates, and native-scored rows that may be in the answer. */
  rescored: number;
  /** Native int8 block scans (one per block per round). */
  scans: number;
  /**
   * `bound`: proven from the int8 scan; `filtered`: the rows a narrow filter
   * passes, all scored; `exhaustive`: every row scored (no build yet, or the
   * int8 bound could exclude nothing).
   */
  path: 'bound' | 'filtered' | 'exhaustive';
}

/** f64 dot of row `row` of a row-major f32 block with q. Four sums let V8 overlap the multiply-adds. */
function dotRow(rows: Float32Array, row: number, q: Float64Array, dim: number): number {
  const off = row * dim;
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let j = 0;
  for (const end = dim - 3; j < end; j += 4) {
    s0 += rows[off + j]! * q[j]!;
    s1 += rows[off + j + 1]! * q[j + 1]!;
    s2 += rows[off + j + 2]! * q[j + 2]!;
    s3 += rows[off + j + 3]! * q[j + 3]!;
  }
  for (; j < dim; j++) s0 += rows[off + j]! * q[j]!;
  return s0 + s1 + s2 + s3;
}

/** ‖v‖ in f64. */
function norm(v: Float32Array | Float64Array): number {
  let s = 0;
  for (let j = 0; j < v.length; j++) s += v[j]! * v[j]!;
  return Math.sqrt(s);
}

/** The nearest code to v, clamped to ±127. Any rounding is sound (the error is measured after); Math.round is ~10× slower here. */
function code(v: number): number {
  if (v > CODE_MAX) return CODE_MAX;
  if (v < -CODE_MAX) return -CODE_MAX;
  return ((v + 128.5) | 0) - 128;
}

/** The spacing of float32 values in x's binade: the worst rounding step of a float32 near x. */
function f32Ulp(x: number): number {
  return 2 ** (Math.floor(Math.log2(Math.max(1, Math.abs(x)))) - 23);
}

/** A float32 not below x (x ≥ 0): per-row norms are stored rounded up so bounds stay bounds. */
function f32Up(x: number): number {
  const f = Math.fround(x);
  return f >= x ? f : Math.fround(x + f32Ulp(x));
}

/** Largest |(1 − dot) − native distance| of usearch's i8 `ip`, in code units: numkong's i8 dot is exact in i32, returned as f32(1 − f32(dot)), two roundings of at most one f32 step each. */
function i8KernelSlack(dim: number): number {
  return 2 * f32Ulp(CODE_MAX * CODE_MAX * dim + 1);
}

/** Bound on |native f32 score − exact dot| for a row of norm ‖x‖: see the module comment. */
function f32Delta(dim: number, rowNorm: number, qNorm: number, score: number): number {
  const du = dim * F32_UNIT_ROUNDOFF;
  const gamma = du < 0.5 ? du / (1 - du) : Infinity;
  return (gamma * rowNorm * qNorm + F32_UNIT_ROUNDOFF * (1 + 2 * Math.abs(score) + 1e-6)) * (1 + REL_SLACK) + ABS_SLACK;
}

const kernelChecks = new Map<number, { i8: boolean; f32: boolean }>();

/**
 * Whether usearch's `ip` distances mean what the bounds assume (1 − dot,
 * within the slack above), checked once per dimension count on extreme and
 * mixed rows. A build whose kernels differ (another version, a source build
 * without numkong) then loses only speed: without i8 every row is scored,
 * without f32 every row is rescored in JS.
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
  const fits = (
    rows: Int8Array | Float32Array,
    q: Int8Array | Float32Array,
    tolerance: (exact: number, row: number) => number,
  ): boolean => {
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

/** The k best rows in the SQL order: score descending, then id ascending. */
class TopK {
  readonly scores: number[] = [];
  readonly rows: number[] = [];

  constructor(
    readonly k: number,
    private readonly ids: ArrayLike<string>,
  ) {}

  /** The k-th score, or -Infinity while fewer are held. */
  get worst(): number {
    return this.scores.length === this.k ? this.scores[this.k - 1]! : -Infinity;
  }

  offer(score: number, row: number): void {
    const { scores, rows, k, ids } = this;
    if (scores.length === k) {
      const worst = scores[k - 1]!;
      if (score < worst || (score === worst && ids[row]! > ids[rows[k - 1]!]!)) return;
      scores.pop();
      rows.pop();
    }
    let i = scores.length;
    while (i > 0 && (scores[i - 1]! < score || (scores[i - 1] === score && ids[rows[i - 1]!]! > ids[row]!))) i--;
    scores.splice(i, 0, score);
    rows.splice(i, 0, row);
  }
}

function acceptor(filter: RowFilter | undefined): ((row: number) => boolean) | undefined {
  if (filter === undefined || typeof filter === 'function') return filter;
  const { column, wanted } = filter;
  return (row) => column[row] === wanted;
}

/** Everything a build replaces at once. */
interface Quantization {
  built: boolean;
  /** Per dimension. */
  /** float32 is enough: codes and errors are computed from the stored values, whatever their rounding. */
  offsets: Float32Array;
  scales: Float32Array;
  inverseScales: Float32Array;
  /** Native blocks of `chunkRows` rows each (the last may be shorter). */
  chunks: Int8Array[];
  capacity: number;
  /** Per row, rounded up: ‖c_r‖, ‖e_r‖ and ‖x_r‖. */
  codeNorms: Float32Array;
  errorNorms: Float32Array;
  rowNorms: Float32Array;
  /** 1 marks an exception row. */
  exceptional: Uint8Array;
  exceptions: Set<number>;
  /** Largest ‖c_r‖ and ‖e_r‖ over regular rows: widened by writes, reset by a build. */
  codeNormMax: number;
  errorNormMax: number;
  /** A row with a larger ‖e_r‖ becomes an exception. */
  errorLimit: number;
}

/**
 * The int8 copy of one set's rows. The caller owns the f32 rows (the truth)
 * and mirrors every change here: `writeRow` for an insert or update,
 * `removeRow` for a delete (last row into the hole), `grow` with its block,
 * `rebuild` on load and when `needsRebuild`.
 */
export class QuantizedRows {
  readonly dim: number;
  /** Rows per native block. */
  readonly chunkRows: number;
  private _count = 0;
  private _version = 0;
  private q: Quantization;
  /** Largest |(1 − dot) − native distance|, in code units: see i8KernelSlack. */
  private readonly kernelSlack: number;
  /** Which native kernels keep the bounds' promises here (see nativeKernelsFit). */
  private readonly kernels: { i8: boolean; f32: boolean };
  /** Smoothed candidate depth the proofs needed: sizes the first native request. */
  private depth = 2 * FIRST_CANDIDATES;

  /**
   * @param dim - dimensions per row.
   * @param capacity - rows to make room for up front. @defaultValue 16
   * @param chunkBytes - bytes per native block: bounds one native call's time
   *   (~0.6 ms per 16 MiB at ~27 GB/s) so a sliced search can yield between blocks.
   *   @defaultValue QUANTIZED_CHUNK_BYTES (16 MiB: a 10,000 × 1536 set is one block)
   */
  constructor(dim: number, capacity = 16, chunkBytes = QUANTIZED_CHUNK_BYTES) {
    if (!Number.isInteger(dim) || dim < 1) throw new RangeError(`dim must be a positive integer, got ${dim}`);
    this.dim = dim;
    this.chunkRows = Math.max(1, Math.floor(chunkBytes / dim));
    this.q = {
      built: false, // no scales until a build: every row written meanwhile is an exception
      offsets: new Float32Array(0),
      scales: new Float32Array(0),
      inverseScales: new Float32Array(0),
      chunks: [],
      capacity: 0,
      codeNorms: new Float32Array(0),
      errorNorms: new Float32Array(0),
      rowNorms: new Float32Array(0),
      exceptional: new Uint8Array(0),
      exceptions: new Set(),
      codeNormMax: 0,
      errorNormMax: 0,
      errorLimit: 0,
    };
    this.kernelSlack = i8KernelSlack(dim);
    this.kernels = nativeKernelsFit(dim);
    this.grow(capacity);
  }

  get count(): number {
    return this._count;
  }

  get capacity(): number {
    return this.q.capacity;
  }

  /** Bumped on every change; sliced work checks it after each yield. */
  get version(): number {
    return this._version;
  }

  /** Rows that are always rescored (written before the first build, or clamped past the error limit). */
  get exceptionCount(): number {
    return this.q.exceptions.size;
  }

  /** True when enough rows are exceptions that a rebuild would speed searches up. */
  get needsRebuild(): boolean {
    return this.q.exceptions.size > Math.max(16, this._count >>> 6);
  }

  /** Bytes held (codes, per-row norms and flags), for the cache's byte bound. */
  get bytes(): number {
    const q = this.q;
    let b = 0;
    for (const c of q.chunks) b += c.byteLength;
    return b + q.capacity * 13 + q.offsets.length * 12 + q.exceptions.size * 16;
  }

  /** Makes room for `capacity` rows; the caller grows its f32 block alongside. */
  grow(capacity: number): void {
    const q = this.q;
    if (capacity <= q.capacity) return;
    const { chunkRows, dim } = this;
    const chunks: Int8Array[] = [];
    for (let i = 0, left = capacity; left > 0; i++, left -= chunkRows) {
      const rows = Math.min(chunkRows, left);
      const old = q.chunks[i];
      if (old && old.length === rows * dim) {
        chunks.push(old);
      } else {
        // A fresh ArrayBuffer per block: usearch reads from the buffer's start.
        const block = new Int8Array(rows * dim);
        if (old) block.set(old);
        chunks.push(block);
      }
    }
    q.chunks = chunks;
    q.codeNorms = resized(q.codeNorms, capacity);
    q.errorNorms = resized(q.errorNorms, capacity);
    q.rowNorms = resized(q.rowNorms, capacity);
    q.exceptional = resized(q.exceptional, capacity);
    q.capacity = capacity;
  }

  /**
   * Quantizes one unit-length row into row `row` with the set's fixed scales
   * (clamping out-of-range values). `row === count` appends.
   */
  writeRow(row: number, unit: Float32Array): void {
    if (!Number.isInteger(row) || row < 0 || row > this._count) {
      throw new RangeError(`row ${row} is outside 0..${this._count}`);
    }
    if (unit.length !== this.dim) throw new RangeError(`row has ${unit.length} dimensions, expected ${this.dim}`);
    if (row === this._count) {
      if (row === this.q.capacity) this.grow(Math.max(16, this.q.capacity * 2));
      this._count++;
    }
    quantizeRow(this.q, this.dim, this.chunkRows, row, unit, 0);
    this._version++;
  }

  /** Removes a row as the f32 block does: the last row moves into the hole. */
  removeRow(row: number): void {
    if (!Number.isInteger(row) || row < 0 || row >= this._count) {
      throw new RangeError(`row ${row} is outside 0..${this._count - 1}`);
    }
    const q = this.q;
    const last = this._count - 1;
    setException(q, row, false);
    if (row !== last) {
      const { dim, chunkRows } = this;
      const from = q.chunks[Math.floor(last / chunkRows)]!;
      const fromOff = (last % chunkRows) * dim;
      q.chunks[Math.floor(row / chunkRows)]!.set(from.subarray(fromOff, fromOff + dim), (row % chunkRows) * dim);
      q.codeNorms[row] = q.codeNorms[last]!;
      q.errorNorms[row] = q.errorNorms[last]!;
      q.rowNorms[row] = q.rowNorms[last]!;
      const wasException = q.exceptional[last] === 1;
      setException(q, last, false);
      setException(q, row, wasException);
    }
    this._count = last;
    this._version++;
  }

  /**
   * Recomputes the per-dimension offsets and scales from the caller's rows
   * (row-major, unit length, `count` of them) and requantizes every row, in
   * one go: about 21 ms per 1,000 × 1536 rows here (210 ms for 10,000), so a
   * set being served should use `rebuildSliced`.
   */
  rebuild(rows: Float32Array, count: number): void {
    const steps = this.buildSteps(rows, count);
    for (;;) {
      const s = steps.next();
      if (s.done) {
        this.install(s.value, count);
        return;
      }
    }
  }

  /**
   * As `rebuild`, yielding to the event loop whenever `budgetMs` of work has
   * run. The current quantization keeps serving searches meanwhile. Resolves
   * false (changing nothing) when a write, a removal or `stillCurrent()`
   * turning false came in during a yield: the caller retries later.
   */
  async rebuildSliced(rows: Float32Array, count: number, slicing: QuantizedSliceOptions = {}): Promise<boolean> {
    const version = this._version;
    const built = await runSliced(this.buildSteps(rows, count), slicing, () => this._version === version);
    if (built === null) return false;
    this.install(built, count);
    return true;
  }

  private install(q: Quantization, count: number): void {
    this.q = q;
    this._count = count;
    this._version++;
  }

  private *buildSteps(rows: Float32Array, count: number): Generator<void, Quantization, void> {
    const { dim, chunkRows } = this;
    if (!Number.isInteger(count) || count < 0) throw new RangeError(`count must be a non-negative integer, got ${count}`);
    if (rows.length < count * dim) throw new RangeError(`rows hold ${Math.floor(rows.length / dim)} rows, need ${count}`);
    const lo = new Float64Array(dim).fill(Infinity);
    const hi = new Float64Array(dim).fill(-Infinity);
    for (let r = 0; r < count; r += BUILD_ROWS_PER_STEP) {
      widenRanges(rows, dim, r, Math.min(count, r + BUILD_ROWS_PER_STEP), lo, hi);
      yield;
    }
    const capacity = Math.max(count, this.q.capacity, 1);
    const q: Quantization = {
      built: true,
      offsets: new Float32Array(dim),
      scales: new Float32Array(dim),
      inverseScales: new Float32Array(dim),
      chunks: [],
      capacity,
      codeNorms: new Float32Array(capacity),
      errorNorms: new Float32Array(capacity),
      rowNorms: new Float32Array(capacity),
      exceptional: new Uint8Array(capacity),
      exceptions: new Set(),
      codeNormMax: 0,
      errorNormMax: 0,
      errorLimit: Infinity, // every row of the build is in range: all regular
    };
    for (let left = capacity; left > 0; left -= chunkRows) q.chunks.push(new Int8Array(Math.min(chunkRows, left) * dim));
    setScales(q, lo, hi, pickFloor(rows, count, dim, lo, hi));
    yield;
    for (let r = 0; r < count; r++) {
      quantizeRow(q, dim, chunkRows, r, rows, r * dim);
      if (r % BUILD_ROWS_PER_STEP === BUILD_ROWS_PER_STEP - 1) yield;
    }
    q.errorLimit = q.errorNormMax * ERROR_HEADROOM + ABS_SLACK;
    return q;
  }

  /**
   * Exact top-k of `query` (unit length) over the caller's f32 rows, in one
   * go. `rows` is the f32 block this copy mirrors (row-major, at least `count`
   * rows); `ids` breaks ties (ascending).
   */
  search(query: Float32Array, rows: Float32Array, ids: ArrayLike<string>, options: QuantizedSearchOptions): QuantizedSearchResult {
    const steps = this.searchSteps(query, rows, ids, options);
    for (;;) {
      const s = steps.next();
      if (s.done) return s.value;
    }
  }

  /**
   * As `search`, yielding to the event loop whenever `budgetMs` of work has
   * run (a search that fits the budget never yields). Resolves null when this
   * copy changed or `stillCurrent()` turned false during a yield: the caller
   * then asks pgvector instead of trusting a torn result.
   */
  searchSliced(
    query: Float32Array,
    rows: Float32Array,
    ids: ArrayLike<string>,
    options: QuantizedSearchOptions,
    slicing: QuantizedSliceOptions = {},
  ): Promise<QuantizedSearchResult | null> {
    const version = this._version;
    return runSliced(this.searchSteps(query, rows, ids, options), slicing, () => this._version === version);
  }

  /**
   * The query in code space: w = s∘q = t·d + f, the part o·q every row
   * shares, and each row's bound |x_r·q − (o·q + t·c_r·d)| ≤ ‖c_r‖‖f‖ + ‖e_r‖‖q‖
   * plus the native distance's rounding. Undefined when the codes would say
   * nothing (a query orthogonal to every scale, or non-finite).
   */
  private prepareQuery(q: Float64Array, qNorm: number):
    | { codes: Int8Array; base: number; t: number; rowBound: (codeNorm: number, errorNorm: number) => number }
    | undefined {
    const { dim } = this;
    const { offsets, scales } = this.q;
    let base = 0;
    let wMax = 0;
    for (let j = 0; j < dim; j++) {
      const qj = q[j]!;
      base += offsets[j]! * qj;
      const wj = Math.abs(scales[j]! * qj);
      wMax = wj > wMax ? wj : wMax;
    }
    if (!(wMax > 0) || !Number.isFinite(wMax) || !Number.isFinite(base) || !Number.isFinite(qNorm)) return undefined;
    const t = wMax / CODE_MAX;
    const inverseT = 1 / t;
    const codes = new Int8Array(dim); // its own buffer: usearch ignores a view's byteOffset
    let fNormSq = 0;
    for (let j = 0; j < dim; j++) {
      const wj = scales[j]! * q[j]!; // the same product as above, bit for bit
      const d = ((wj * inverseT + 128.5) | 0) - 128; // nearest; |wj·inverseT| ≤ 127 by the choice of t
      codes[j] = d;
      const f = wj - t * d;
      fNormSq += f * f;
    }
    const fNorm = Math.sqrt(fNormSq);
    const kernelError = t * this.kernelSlack;
    const rowBound = (codeNorm: number, errorNorm: number) =>
      (codeNorm * fNorm + errorNorm * qNorm + kernelError) * (1 + REL_SLACK) + ABS_SLACK;
    return { codes, base, t, rowBound };
  }

  /**
   * @internal For tests and diagnostics: every row's approximate score from
   * one full native scan, and the bound the search trusts (|exact − approx| ≤
   * bound; Infinity for exceptions). Undefined when the search would not use
   * the int8 scan at all.
   */
  scoreBounds(query: Float32Array): { approx: Float64Array; bound: Float64Array } | undefined {
    const { dim, chunkRows } = this;
    const quant = this.q;
    const n = this._count;
    if (query.length !== dim) throw new RangeError(`query has ${query.length} dimensions, expected ${dim}`);
    const prepared = quant.built && n > 0 && this.kernels.i8 ? this.prepareQuery(new Float64Array(query), norm(query)) : undefined;
    if (!prepared) return undefined;
    const approx = new Float64Array(n);
    const bound = new Float64Array(n);
    for (let c = 0; c * chunkRows < n; c++) {
      const rowsHere = Math.min(chunkRows, n - c * chunkRows);
      const block = quant.chunks[c]!;
      const m = exactSearch(rowsHere * dim === block.length ? block : block.subarray(0, rowsHere * dim), prepared.codes, dim, rowsHere, MetricKind.IP, 1);
      for (let x = 0; x < rowsHere; x++) {
        const row = Number(m.keys[x]!) + c * chunkRows;
        approx[row] = prepared.base + prepared.t * (1 - m.distances[x]!);
        bound[row] = quant.exceptional[row] === 1 ? Infinity : prepared.rowBound(quant.codeNorms[row]!, quant.errorNorms[row]!);
      }
    }
    return { approx, bound };
  }

  /** The search as resumable work, yielding where a sliced caller may give the event loop a turn. */
  private *searchSteps(
    query: Float32Array,
    rows: Float32Array,
    ids: ArrayLike<string>,
    options: QuantizedSearchOptions,
  ): Generator<void, QuantizedSearchResult, void> {
    const { dim, chunkRows } = this;
    const quant = this.q;
    const n = this._count;
    if (query.length !== dim) throw new RangeError(`query has ${query.length} dimensions, expected ${dim}`);
    if (rows.length < n * dim) throw new RangeError(`rows hold ${Math.floor(rows.length / dim)} rows, need ${n}`);
    const k = Math.min(Math.floor(options.k), n);
    const result: QuantizedSearchResult = { hits: [], scored: 0, rescored: 0, scans: 0, path: 'bound' };
    if (!(k > 0)) return result;
    const min = options.minSimilarity ?? -Infinity;
    const accept = acceptor(options.filter);

    // The filter's pass share (estimated on a sample: it only steers speed) decides between
    // the int8 scan and scoring the passing rows alone.
    let share = 1;
    if (accept) {
      const stride = Math.max(1, n / SHARE_SAMPLE_ROWS);
      let sampled = 0;
      let passed = 0;
      for (let at = 0; at < n; at += stride, sampled++) if (accept(Math.floor(at))) passed++;
      share = passed / sampled;
    }

    const q = new Float64Array(query);
    const q32 = new Float32Array(query); // its own buffer: usearch ignores a view's byteOffset
    const scoring = new Scoring(rows, q32, q, dim, k, min, quant.rowNorms, result, this.kernels.f32);
    const int8 = quant.built && this.kernels.i8 && n - quant.exceptions.size > 0;
    const prepared = int8 && share > FILTERED_SCAN_SHARE ? this.prepareQuery(q, scoring.qNorm) : undefined;
    if (!prepared) {
      result.path = int8 && accept && share <= FILTERED_SCAN_SHARE ? 'filtered' : 'exhaustive';
      for (let r = 0; r < n; r++) {
        if (accept && !accept(r)) continue;
        if (scoring.add(r) >= BATCH_ROWS) {
          scoring.flush();
          yield;
        }
      }
      scoring.flush();
      return yield* this.finish(scoring, ids);
    }

    const { codes, base, t, rowBound } = prepared;
    const { codeNorms, errorNorms, exceptional } = quant;
    const globalBound = rowBound(quant.codeNormMax, quant.errorNormMax);

    // Exceptions carry no int8 bound: always scored.
    for (const row of quant.exceptions) {
      if (accept && !accept(row)) continue;
      if (scoring.add(row) >= BATCH_ROWS) {
        scoring.flush();
        yield;
      }
    }
    scoring.flush();

    // A second native round costs a whole scan, a longer first list only a bigger heap (about
    // +20 µs for 256 rows at 10,000 × 1536, +250 µs for 1,024): twice the usual depth.
    let wanted = Math.ceil(Math.max(this.depth * 2, 2 * k, FIRST_CANDIDATES) / Math.max(share, FILTERED_SCAN_SHARE));
    let examined = 0; // candidate depth this proof needed, to size the next first request
    let pruned = false; // whether the bound left any row unscored
    let seen: Uint8Array | undefined;
    const firstRound: number[] = [];
    let batch = Math.min(Math.max(FIRST_BATCH_ROWS, k + 4), BATCH_ROWS);
    let firstFlushed = false;
    for (let round = 0; ; round++) {
      // One native scan per block, each returning its best `wanted` rows by integer dot.
      let candidates: number[] = [];
      let distances: number[] = [];
      let unscannedTop = -Infinity; // best approximate score a row no block returned can have
      let sorted = true;
      let allScanned = true;
      for (let c = 0; c * chunkRows < n; c++) {
        const rowsHere = Math.min(chunkRows, n - c * chunkRows);
        const take = Math.min(wanted, rowsHere);
        const block = quant.chunks[c]!;
        const m = exactSearch(rowsHere * dim === block.length ? block : block.subarray(0, rowsHere * dim), codes, dim, take, MetricKind.IP, 1);
        result.scans++;
        const keys = lowWords(m.keys);
        const dist = m.distances;
        let last = -Infinity;
        for (let x = 0; x < take; x++) {
          const dx = dist[x]!;
          if (dx < last) sorted = false;
          if (dx > last) last = dx;
          candidates.push(keys[2 * x]! + c * chunkRows);
          distances.push(dx);
        }
        if (take < rowsHere) {
          allScanned = false;
          unscannedTop = Math.max(unscannedTop, base + t * (1 - last));
        }
        yield;
      }
      if (!sorted || quant.chunks.length > 1) {
        // Merge the blocks' lists best first, so the walk below can stop at the first row that cannot matter.
        const order = candidates.map((_, x) => x).sort((a, b) => distances[a]! - distances[b]!);
        const merged = order.map((x) => candidates[x]!);
        distances = order.map((x) => distances[x]!);
        candidates = merged;
      }
      let x = 0;
      for (; x < candidates.length; x++) {
        const row = candidates[x]!;
        if (exceptional[row] === 1 || (seen && seen[row] === 1)) continue;
        const approx = base + t * (1 - distances[x]!);
        const bar = scoring.bar();
        if (approx + globalBound < bar) {
          pruned = true;
          break; // and so is every later candidate
        }
        if (accept && !accept(row)) continue;
        if (approx + rowBound(codeNorms[row]!, errorNorms[row]!) < bar) {
          pruned = true;
          continue;
        }
        if (seen) seen[row] = 1;
        else firstRound.push(row);
        if (scoring.add(row) >= batch) {
          // The first batch holds most of the answer: scored exactly, it sets the bar for the rest.
          scoring.flush(!firstFlushed);
          firstFlushed = true;
          batch = Math.min(BATCH_ROWS, batch * 2); // the bar rises between batches: keep them short at first
          yield;
        }
      }
      scoring.flush(!firstFlushed);
      firstFlushed = true;
      examined += x;
      if (allScanned || unscannedTop + globalBound < scoring.bar()) {
        this.depth = 0.8 * this.depth + 0.2 * Math.min(examined * share, chunkRows);
        if (allScanned && !pruned) result.path = 'exhaustive';
        return yield* this.finish(scoring, ids);
      }
      if (!seen) {
        seen = new Uint8Array(n);
        for (const row of firstRound) seen[row] = 1;
      }
      wanted *= WIDEN_FACTOR;
    }
  }

  /** Rescores in f64 every row that can still be in the top-k, and ranks them. */
  private *finish(scoring: Scoring, ids: ArrayLike<string>): Generator<void, QuantizedSearchResult, void> {
    const top = new TopK(scoring.k, ids);
    yield* scoring.rank(top);
    const { result } = scoring;
    result.hits = top.rows.map((row, i) => ({ row, similarity: Math.min(1, Math.max(-1, top.scores[i]!)) }));
    return result;
  }
}

/** Exact f64 scores of list[from..to) offered to `top` (kept out of the generator: V8 optimizes plain loops better). */
function rescoreInto(top: TopK, rows: Float32Array, list: number[], from: number, to: number, q: Float64Array, dim: number, min: number): void {
  for (let i = from; i < to; i++) {
    const row = list[i]!;
    const s = dotRow(rows, row, q, dim);
    if (s >= min) top.offer(s, row);
  }
}

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * usearch's keys (row offsets, far below 2³²) as 32-bit words: key x is word
 * 2x. Reading words skips a BigInt conversion per candidate.
 */
function lowWords(keys: BigUint64Array): Uint32Array | number[] {
  if (!littleEndian) return Array.from(keys, (key) => Number(key)).flatMap((v) => [v, 0]);
  return new Uint32Array(keys.buffer, keys.byteOffset, keys.length * 2);
}

/** Scratch blocks for gathered f32 rows, one per dimension count: a batch is gathered and scored without yielding in between. */
const scratchBlocks = new Map<number, Float32Array>();

/**
 * Scores of candidate rows, each an interval: exact (f64, in JS) or native
 * f32 ± delta; and the k-th best lower bound so far, below which no row can
 * be in the answer.
 */
class Scoring {
  private pending: number[] = [];
  private readonly keptRows: number[] = [];
  private readonly keptScores: number[] = [];
  /** 0 for an exact score. */
  private readonly keptDeltas: number[] = [];
  /** The k best lower bounds (score − delta) so far, descending. */
  private readonly lowers: number[] = [];
  private readonly scratch: Float32Array;
  readonly qNorm: number;

  constructor(
    readonly rows: Float32Array,
    private readonly q32: Float32Array,
    private readonly q64: Float64Array,
    private readonly dim: number,
    readonly k: number,
    readonly min: number,
    private readonly rowNorms: Float32Array,
    readonly result: QuantizedSearchResult,
    /** False: every score in JS, exactly (see nativeKernelsFit). */
    private readonly native: boolean,
  ) {
    let scratch = scratchBlocks.get(dim);
    if (!scratch) {
      scratch = new Float32Array(BATCH_ROWS * dim);
      scratchBlocks.set(dim, scratch);
    }
    this.scratch = scratch;
    this.qNorm = norm(q64);
  }

  /** Rows below this cannot be in the answer: the k-th best lower bound, or minSimilarity. */
  bar(): number {
    const { lowers, k, min } = this;
    return lowers.length === k && lowers[k - 1]! > min ? lowers[k - 1]! : min;
  }

  /** Queues a row; returns how many are queued. */
  add(row: number): number {
    return this.pending.push(row);
  }

  /**
   * Scores the queued rows: in JS and exactly when `exact` (rows likely to
   * be in the answer, which needs their f64 score anyway) or the batch is
   * too small to repay a native call, else natively in f32.
   */
  flush(exact = false): void {
    const { pending, dim, scratch, rows } = this;
    const m = pending.length;
    if (m === 0) return;
    this.pending = [];
    if (exact || !this.native || m <= SMALL_BATCH_ROWS) {
      for (const row of pending) this.keep(row, dotRow(rows, row, this.q64, dim), 0);
      this.result.rescored += m;
      return;
    }
    if (pending[m - 1]! - pending[0]! === m - 1) {
      scratch.set(rows.subarray(pending[0]! * dim, (pending[0]! + m) * dim)); // a run of rows: one copy
    } else {
      for (let i = 0; i < m; i++) {
        const off = pending[i]! * dim;
        scratch.set(rows.subarray(off, off + dim), i * dim);
      }
    }
    const found = exactSearch(m * dim === scratch.length ? scratch : scratch.subarray(0, m * dim), this.q32, dim, m, MetricKind.IP, 1);
    this.result.scored += m;
    const keys = lowWords(found.keys);
    for (let x = 0; x < m; x++) {
      const row = pending[keys[2 * x]!]!;
      const score = 1 - found.distances[x]!;
      this.keep(row, score, f32Delta(dim, this.rowNorms[row]!, this.qNorm, score));
    }
  }

  /** Records a row's score ± delta, unless it already cannot reach the bar. */
  private keep(row: number, score: number, delta: number): void {
    // NaN scores (a non-finite row) fail every comparison below: kept; the f64 step leaves them out.
    if (score + delta < this.bar()) return;
    this.keptRows.push(row);
    this.keptScores.push(score);
    this.keptDeltas.push(delta);
    this.offerLower(score - delta); // bar() only trusts the k-th when it clears minSimilarity: then all k do
  }

  private offerLower(lower: number): void {
    const { lowers, k } = this;
    if (lowers.length === k) {
      if (lower <= lowers[k - 1]!) return;
      lowers.pop();
    }
    let i = lowers.length;
    while (i > 0 && lowers[i - 1]! < lower) i--;
    lowers.splice(i, 0, lower);
  }

  /** Ranks the kept rows that can still reach the final bar: exact ones as scored, the rest rescored in f64. */
  *rank(top: TopK): Generator<void, void, void> {
    const bar = this.bar();
    const { keptRows, keptScores, keptDeltas, min } = this;
    const approximate: number[] = [];
    for (let i = 0; i < keptRows.length; i++) {
      if (keptScores[i]! + keptDeltas[i]! < bar) continue;
      if (keptDeltas[i] === 0) {
        if (keptScores[i]! >= min) top.offer(keptScores[i]!, keptRows[i]!);
      } else {
        approximate.push(keptRows[i]!);
      }
    }
    for (let i = 0; i < approximate.length; i += RESCORES_PER_STEP) {
      if (i > 0) yield;
      rescoreInto(top, this.rows, approximate, i, Math.min(approximate.length, i + RESCORES_PER_STEP), this.q64, this.dim, min);
    }
    this.result.rescored += approximate.length;
  }
}

/** Runs resumable work, yielding to the event loop when a slice has used its budget; null once abandoned. */
async function runSliced<T>(steps: Generator<void, T, void>, slicing: QuantizedSliceOptions, unchanged: () => boolean): Promise<T | null> {
  const budget = slicing.budgetMs ?? 1;
  const stillCurrent = slicing.stillCurrent ?? (() => true);
  let sliceStart = performance.now();
  for (;;) {
    const s = steps.next();
    if (s.done) return s.value;
    if (performance.now() - sliceStart >= budget) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (!unchanged() || !stillCurrent()) {
        steps.return(undefined as T);
        return null;
      }
      sliceStart = performance.now();
    }
  }
}

function resized<T extends Float32Array | Uint8Array>(a: T, length: number): T {
  const next = new (a.constructor as new (n: number) => T)(length);
  next.set(a.subarray(0, Math.min(a.length, length)));
  return next;
}

function setException(q: Quantization, row: number, on: boolean): void {
  if (on) {
    q.exceptional[row] = 1;
    q.exceptions.add(row);
  } else if (q.exceptional[row] === 1) {
    q.exceptional[row] = 0;
    q.exceptions.delete(row);
  }
}

function quantizeRow(q: Quantization, dim: number, chunkRows: number, row: number, src: Float32Array, srcOff: number): void {
  const block = q.chunks[Math.floor(row / chunkRows)]!;
  const off = (row % chunkRows) * dim;
  if (!q.built) {
    let normSq = 0;
    for (let j = 0; j < dim; j++) normSq += src[srcOff + j]! * src[srcOff + j]!;
    q.rowNorms[row] = f32Up(Math.sqrt(normSq) * (1 + REL_SLACK));
    block.fill(0, off, off + dim);
    setException(q, row, true);
    return;
  }
  const { offsets, scales, inverseScales } = q;
  let normSq = 0;
  let codeSq = 0;
  let errorSq = 0;
  for (let j = 0; j < dim; j++) {
    const x = src[srcOff + j]!;
    const o = offsets[j]!;
    let v = (x - o) * inverseScales[j]!;
    v = v > CODE_MAX ? CODE_MAX : v < -CODE_MAX ? -CODE_MAX : v;
    const c = ((v + 128.5) | 0) - 128; // nearest; see code()
    block[off + j] = c;
    const e = x - o - scales[j]! * c;
    normSq += x * x;
    codeSq += c * c;
    errorSq += e * e;
  }
  q.rowNorms[row] = f32Up(Math.sqrt(normSq) * (1 + REL_SLACK));
  const codeNorm = f32Up(Math.sqrt(codeSq) * (1 + REL_SLACK));
  const errorNorm = f32Up(Math.sqrt(errorSq) * (1 + REL_SLACK));
  q.codeNorms[row] = codeNorm;
  q.errorNorms[row] = errorNorm;
  // NaN fails the comparison: such a row is an exception, never trusted to a bound.
  if (errorNorm <= q.errorLimit) {
    setException(q, row, false);
    if (codeNorm > q.codeNormMax) q.codeNormMax = codeNorm;
    if (errorNorm > q.errorNormMax) q.errorNormMax = errorNorm;
  } else {
    // Zeroed, so an exception's codes cannot crowd real candidates out of the native top list.
    block.fill(0, off, off + dim);
    setException(q, row, true);
  }
}

/** Widens each dimension's [lo, hi] to cover rows [from, to). */
function widenRanges(rows: Float32Array, dim: number, from: number, to: number, lo: Float64Array, hi: Float64Array): void {
  for (let r = from; r < to; r++) {
    const off = r * dim;
    for (let j = 0; j < dim; j++) {
      const x = rows[off + j]!;
      if (x < lo[j]!) lo[j] = x;
      if (x > hi[j]!) hi[j] = x;
    }
  }
}

/** Offsets at mid-range; scales span each dimension's range, floored at `floor`. */
function setScales(q: Quantization, lo: Float64Array, hi: Float64Array, floor: number): void {
  for (let j = 0; j < lo.length; j++) {
    const finite = Number.isFinite(lo[j]!) && Number.isFinite(hi[j]!);
    const s = finite ? Math.max((hi[j]! - lo[j]!) / (2 * CODE_MAX), floor, SCALE_FLOOR) : SCALE_FLOOR;
    q.offsets[j] = finite ? (lo[j]! + hi[j]!) / 2 : 0;
    q.scales[j] = s;
    q.inverseScales[j] = 1 / s;
  }
}

/**
 * The scale floor that minimizes the typical bound ‖c‖‖f‖ + ‖e‖‖q‖ on a
 * sample of the rows (also used as queries). With uneven dimension variances
 * the query's widest dimension sets its step t, so coarser steps in the
 * narrow dimensions shrink ‖c‖ more than they grow ‖e‖.
 */
function pickFloor(rows: Float32Array, count: number, dim: number, lo: Float64Array, hi: Float64Array): number {
  let widest = 0;
  for (let j = 0; j < dim; j++) if (hi[j]! - lo[j]! > widest) widest = hi[j]! - lo[j]!;
  if (count < 2 || !(widest > 0) || !Number.isFinite(widest)) return 0;
  const sample = Math.min(count, FLOOR_SAMPLE_ROWS);
  const stride = count / sample;
  const probe: Quantization = {
    built: true,
    offsets: new Float32Array(dim),
    scales: new Float32Array(dim),
    inverseScales: new Float32Array(dim),
    chunks: [new Int8Array(dim)],
    capacity: 1,
    codeNorms: new Float32Array(1),
    errorNorms: new Float32Array(1),
    rowNorms: new Float32Array(1),
    exceptional: new Uint8Array(1),
    exceptions: new Set(),
    codeNormMax: 0,
    errorNormMax: 0,
    errorLimit: Infinity,
  };
  let best = 0;
  let bestBound = Infinity;
  for (const fraction of FLOOR_FRACTIONS) {
    const floor = (fraction * widest) / (2 * CODE_MAX);
    setScales(probe, lo, hi, floor);
    let codeSum = 0;
    let errorSum = 0;
    let fSum = 0;
    for (let i = 0; i < sample; i++) {
      const off = Math.floor(i * stride) * dim;
      quantizeRow(probe, dim, 1, 0, rows, off);
      codeSum += probe.codeNorms[0]!;
      errorSum += probe.errorNorms[0]!;
      if (i < FLOOR_SAMPLE_QUERIES) {
        let wMax = 0;
        for (let j = 0; j < dim; j++) wMax = Math.max(wMax, Math.abs(probe.scales[j]! * rows[off + j]!));
        const t = wMax / CODE_MAX || 1;
        let fSq = 0;
        for (let j = 0; j < dim; j++) {
          const wj = probe.scales[j]! * rows[off + j]!;
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
