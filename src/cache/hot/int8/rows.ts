import { searchableSquaredNorm, squaredNorm } from '../../../embedding.js';
import { ABS_SLACK, i8KernelSlack, nativeKernelsFit } from './kernel-fit.js';
import { PGVECTOR_AVX2_FMA, pgvectorDot, type PgvectorArithmetic } from './pgvector-distance.js';
import { newScales, pickFloor, quantizeRow, setScales, type RowCode, type Scales } from './quantize.js';

/**
 * Row storage: the stored float32 values (the truth, as pgvector holds
 * them), each row's float64 norm, and a row-aligned int8 copy of its unit
 * direction in native blocks. Rows are addressed by position; a removal
 * moves the last row into the hole (`swapRemove`), and `build` may reorder
 * every row (`order`). The caller mirrors both moves in its own columns.
 *
 * A row that fails `searchable` is stored but marked not live, with
 * zeroed codes: it is never scored, so it can never be returned. A row
 * written after the last build and clamped hard by its scales, or written
 * before any build, is an "exception": always scored, so it never loosens
 * the bound for the others.
 */

/** Bytes per native block (one scan step: ~0.6–1 ms, started in a slice of its own, so a sliced search stays within ~2 ms slices); each block is its own ArrayBuffer because usearch ignores a view's byteOffset. */
export const CHUNK_BYTES = 16 * 1024 * 1024;
/** A row written after the build stays regular while its error norm is within this factor of the build's largest. */
const ERROR_HEADROOM = 1.25;
/** Rows per yield point of a build (~1 ms of quantizing at 1536 dims). */
const BUILD_ROWS_PER_STEP = 256;
/** Rows sampled at build to pick the scale floor. */
const FLOOR_SAMPLE_ROWS = 64;

/** Everything a build replaces at once. */
export interface RowState {
  count: number;
  capacity: number;
  /** Row-major stored values. */
  vectors: Float32Array;
  /** ‖x‖ in float64, 0 for a row that is not live. */
  norms: Float64Array;
  /** pgvector's float32 Σx² for the row, NaN until first needed. */
  pgNorms: Float32Array;
  /** 1: searchable (see searchable). */
  live: Uint8Array;
  built: boolean;
  scales: Scales;
  /** Native blocks, each its own ArrayBuffer; block i holds rows chunkStarts[i] onwards. */
  chunks: Int8Array[];
  chunkStarts: number[];
  /** Blocks laid out by a build: never reallocated (the tail grows in blocks of its own). */
  sealed: number;
  /** Per row, rounded up: ‖c_r‖ and ‖e_r‖. */
  codeNorms: Float32Array;
  errorNorms: Float32Array;
  /** 1 marks an exception row. */
  exceptional: Uint8Array;
  exceptions: Set<number>;
  /** Largest ‖c_r‖ and ‖e_r‖ over regular live rows: widened by writes, reset by a build. */
  codeNormMax: number;
  errorNormMax: number;
  /** A row with a larger ‖e_r‖ becomes an exception. */
  errorLimit: number;
}

function resized<T extends Float32Array | Float64Array | Uint8Array>(a: T, length: number, fill?: number): T {
  const next = new (a.constructor as new (n: number) => T)(length);
  next.set(a.subarray(0, Math.min(a.length, length)));
  if (fill !== undefined && length > a.length) next.fill(fill, a.length);
  return next;
}

function emptyState(dim: number): RowState {
  return {
    count: 0,
    capacity: 0,
    vectors: new Float32Array(0),
    norms: new Float64Array(0),
    pgNorms: new Float32Array(0),
    live: new Uint8Array(0),
    built: false,
    scales: newScales(dim),
    chunks: [],
    chunkStarts: [],
    sealed: 0,
    codeNorms: new Float32Array(0),
    errorNorms: new Float32Array(0),
    exceptional: new Uint8Array(0),
    exceptions: new Set(),
    codeNormMax: 0,
    errorNormMax: 0,
    errorLimit: 0,
  };
}

export class Int8Rows {
  readonly dim: number;
  /** Rows per native block. */
  readonly chunkRows: number;
  /** Largest |(1 − dot) − native distance| of the i8 kernel, in code units. */
  readonly kernelSlack: number;
  /** Which native kernels keep the bounds' promises here (see nativeKernelsFit). */
  kernels: { i8: boolean; f32: boolean };
  /** @internal Tests only: scales every int8 bound and pgvector's error margin, to show a wrong bound is caught. */
  testScales = { bound: 1, pgvector: 1 };
  private _version = 0;
  private s: RowState;
  private readonly rowCode: RowCode = { codeNorm: 0, errorNorm: 0 };

  constructor(
    dim: number,
    capacity = 16,
    chunkBytes = CHUNK_BYTES,
    readonly arithmetic: PgvectorArithmetic = PGVECTOR_AVX2_FMA,
  ) {
    if (!Number.isInteger(dim) || dim < 1) throw new RangeError(`dim must be a positive integer, got ${dim}`);
    this.dim = dim;
    this.chunkRows = Math.max(1, Math.floor(chunkBytes / dim));
    this.kernelSlack = i8KernelSlack(dim);
    this.kernels = nativeKernelsFit(dim);
    this.s = emptyState(dim);
    this.grow(Math.max(1, capacity));
  }

  /** The current state; a search reads one state throughout (a build swaps in a new one). */
  get state(): RowState {
    return this.s;
  }

  get count(): number {
    return this.s.count;
  }

  get version(): number {
    return this._version;
  }

  get exceptionCount(): number {
    return this.s.exceptions.size;
  }

  /** True when enough rows are exceptions that a build would speed searches up. */
  get needsBuild(): boolean {
    return !this.s.built || this.s.exceptions.size > Math.max(16, this.s.count >>> 6);
  }

  /** Bytes held for the vectors: float32 rows, int8 codes, per-row norms and flags. */
  get bytes(): number {
    const s = this.s;
    let b = s.vectors.byteLength + s.norms.byteLength + s.pgNorms.byteLength + s.live.byteLength;
    for (const c of s.chunks) b += c.byteLength;
    return b + s.codeNorms.byteLength + s.errorNorms.byteLength + s.exceptional.byteLength + s.exceptions.size * 16 + this.dim * 12;
  }

  /** pgvector's float32 Σx² of a row (computed once, on first need). */
  pgNorm(row: number): number {
    const s = this.s;
    let v = s.pgNorms[row]!;
    if (Number.isNaN(v)) {
      const x = s.vectors.subarray(row * this.dim, (row + 1) * this.dim);
      v = pgvectorDot(x, x, this.arithmetic);
      s.pgNorms[row] = v;
    }
    return v;
  }

  /** Makes room for `capacity` rows: the last unsealed block grows up to `chunkRows`, then blocks are added. */
  grow(capacity: number): void {
    const s = this.s;
    if (capacity <= s.capacity) return;
    const { chunkRows, dim } = this;
    let have = s.capacity;
    const lastIndex = s.chunks.length - 1;
    if (lastIndex >= s.sealed && lastIndex >= 0) {
      const last = s.chunks[lastIndex]!;
      const rows = last.length / dim;
      if (rows < chunkRows) {
        const bigger = Math.min(chunkRows, rows + capacity - have);
        const block = new Int8Array(bigger * dim); // a fresh ArrayBuffer per block
        block.set(last);
        s.chunks[lastIndex] = block;
        have += bigger - rows;
      }
    }
    while (have < capacity) {
      const rows = Math.min(chunkRows, capacity - have);
      s.chunks.push(new Int8Array(rows * dim));
      s.chunkStarts.push(have);
      have += rows;
    }
    s.vectors = resized(s.vectors, capacity * dim);
    s.norms = resized(s.norms, capacity);
    s.pgNorms = resized(s.pgNorms, capacity, NaN);
    s.live = resized(s.live, capacity);
    s.codeNorms = resized(s.codeNorms, capacity);
    s.errorNorms = resized(s.errorNorms, capacity);
    s.exceptional = resized(s.exceptional, capacity);
    s.capacity = capacity;
  }

  /** The block holding row `row`. */
  chunkOf(row: number): number {
    return chunkIndex(this.s.chunkStarts, row);
  }

  /** Writes `raw` (length dim) into row `row`; `row === count` appends. */
  write(row: number, raw: Float32Array): void {
    const s = this.s;
    if (!Number.isInteger(row) || row < 0 || row > s.count) throw new RangeError(`row ${row} is outside 0..${s.count}`);
    if (raw.length !== this.dim) throw new RangeError(`row has ${raw.length} dimensions, expected ${this.dim}`);
    if (row === s.count) {
      if (row === s.capacity) this.grow(Math.max(16, Math.ceil(s.capacity * 1.5)));
      s.count++;
    }
    s.vectors.set(raw, row * this.dim);
    s.pgNorms[row] = NaN;
    this.encode(s, row);
    this._version++;
  }

  /** Removes a row: the last row moves into the hole. Returns the row that moved (the old last), or -1. */
  swapRemove(row: number): number {
    const s = this.s;
    if (!Number.isInteger(row) || row < 0 || row >= s.count) throw new RangeError(`row ${row} is outside 0..${s.count - 1}`);
    const last = s.count - 1;
    setException(s, row, false);
    if (row !== last) {
      const { dim } = this;
      s.vectors.copyWithin(row * dim, last * dim, (last + 1) * dim);
      const fc = chunkIndex(s.chunkStarts, last);
      const tc = chunkIndex(s.chunkStarts, row);
      const fromOff = (last - s.chunkStarts[fc]!) * dim;
      s.chunks[tc]!.set(s.chunks[fc]!.subarray(fromOff, fromOff + dim), (row - s.chunkStarts[tc]!) * dim);
      s.norms[row] = s.norms[last]!;
      s.pgNorms[row] = s.pgNorms[last]!;
      s.live[row] = s.live[last]!;
      s.codeNorms[row] = s.codeNorms[last]!;
      s.errorNorms[row] = s.errorNorms[last]!;
      const wasException = s.exceptional[last] === 1;
      setException(s, last, false);
      setException(s, row, wasException);
    }
    s.live[last] = 0;
    s.pgNorms[last] = NaN;
    s.count = last;
    this._version++;
    return row !== last ? last : -1;
  }

  /** Norm, liveness and codes of row `row` from its stored values. */
  private encode(s: RowState, row: number): void {
    const { dim } = this;
    const off = row * dim;
    const sq = squaredNorm(s.vectors.subarray(off, off + dim));
    const live = searchableSquaredNorm(sq);
    s.live[row] = live ? 1 : 0;
    s.norms[row] = live ? Math.sqrt(sq) : 0;
    this.quantize(s, row);
  }

  /** Codes of row `row`, whose norm and liveness are set: zeros (and no exception) for a row that is not live. */
  private quantize(s: RowState, row: number): void {
    const { dim } = this;
    const c = chunkIndex(s.chunkStarts, row);
    const block = s.chunks[c]!;
    const codeOff = (row - s.chunkStarts[c]!) * dim;
    if (s.live[row] !== 1) {
      block.fill(0, codeOff, codeOff + dim);
      setException(s, row, false);
      return;
    }
    if (!s.built) {
      block.fill(0, codeOff, codeOff + dim);
      setException(s, row, true);
      return;
    }
    quantizeRow(s.scales, dim, s.vectors, row * dim, 1 / s.norms[row]!, block, codeOff, this.rowCode);
    const { codeNorm, errorNorm } = this.rowCode;
    s.codeNorms[row] = codeNorm;
    s.errorNorms[row] = errorNorm;
    if (errorNorm <= s.errorLimit) {
      setException(s, row, false);
      if (codeNorm > s.codeNormMax) s.codeNormMax = codeNorm;
      if (errorNorm > s.errorNormMax) s.errorNormMax = errorNorm;
    } else {
      // Zeroed, so an exception's codes cannot crowd real candidates out of the native top list.
      block.fill(0, codeOff, codeOff + dim);
      setException(s, row, true);
    }
  }

  /**
   * Recomputes offsets and scales from the live rows and requantizes every
   * row, as resumable work; `order` (old positions, each once) reorders the
   * rows (rows not listed are dropped), and a new block starts at each of
   * `breaks` (new positions, ascending) as well as every `chunkRows` rows.
   * Nothing changes until `install`.
   */
  *buildSteps(order?: Int32Array, breaks: readonly number[] = []): Generator<void, RowState, void> {
    const { dim, chunkRows } = this;
    const old = this.s;
    const count = order ? order.length : old.count;
    const at = (i: number) => (order ? order[i]! : i);
    const lo = new Float64Array(dim).fill(Infinity);
    const hi = new Float64Array(dim).fill(-Infinity);
    const sample: Float64Array[] = [];
    const stride = Math.max(1, count / FLOOR_SAMPLE_ROWS);
    let nextSample = 0;
    for (let i = 0; i < count; i++) {
      const r = at(i);
      if (old.live[r] === 1) {
        const off = r * dim;
        const inv = 1 / old.norms[r]!;
        for (let j = 0; j < dim; j++) {
          const u = old.vectors[off + j]! * inv;
          if (u < lo[j]!) lo[j] = u;
          if (u > hi[j]!) hi[j] = u;
        }
        if (i >= nextSample) {
          const u = new Float64Array(dim);
          for (let j = 0; j < dim; j++) u[j] = old.vectors[off + j]! * inv;
          sample.push(u);
          nextSample += stride;
        }
      }
      if (i % BUILD_ROWS_PER_STEP === BUILD_ROWS_PER_STEP - 1) yield;
    }
    const capacity = Math.max(count, 1);
    const s: RowState = {
      count,
      capacity,
      vectors: order || capacity !== old.capacity ? new Float32Array(capacity * dim) : old.vectors,
      norms: new Float64Array(capacity),
      pgNorms: new Float32Array(capacity).fill(NaN),
      live: new Uint8Array(capacity),
      built: true,
      scales: newScales(dim),
      chunks: [],
      chunkStarts: [],
      sealed: 0,
      codeNorms: new Float32Array(capacity),
      errorNorms: new Float32Array(capacity),
      exceptional: new Uint8Array(capacity),
      exceptions: new Set(),
      codeNormMax: 0,
      errorNormMax: 0,
      errorLimit: Infinity, // every row of the build is in range: all regular
    };
    let nextBreak = 0;
    for (let start = 0; start < capacity; ) {
      while (nextBreak < breaks.length && breaks[nextBreak]! <= start) nextBreak++;
      const end = Math.min(capacity, start + chunkRows, nextBreak < breaks.length ? breaks[nextBreak]! : Infinity);
      s.chunks.push(new Int8Array((end - start) * dim));
      s.chunkStarts.push(start);
      start = end;
    }
    s.sealed = s.chunks.length;
    setScales(s.scales, lo, hi, pickFloor(sample, dim, lo, hi));
    yield;
    for (let i = 0; i < count; i++) {
      const r = at(i);
      if (s.vectors !== old.vectors) s.vectors.set(old.vectors.subarray(r * dim, (r + 1) * dim), i * dim);
      s.pgNorms[i] = old.pgNorms[r]!;
      s.norms[i] = old.norms[r]!;
      s.live[i] = old.live[r]!;
      this.quantize(s, i);
      if (i % BUILD_ROWS_PER_STEP === BUILD_ROWS_PER_STEP - 1) yield;
    }
    s.errorLimit = s.errorNormMax * ERROR_HEADROOM + ABS_SLACK;
    return s;
  }

  /** Makes a built state current. */
  install(s: RowState): void {
    this.s = s;
    this._version++;
  }
}

/** The block holding `row`: the last start at or below it. */
export function chunkIndex(starts: readonly number[], row: number): number {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (starts[mid]! <= row) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

function setException(s: RowState, row: number, on: boolean): void {
  if (on) {
    s.exceptional[row] = 1;
    s.exceptions.add(row);
  } else if (s.exceptional[row] === 1) {
    s.exceptional[row] = 0;
    s.exceptions.delete(row);
  }
}
