import { f32Delta, scan } from './kernel-fit.js';
import { pgvectorDot, pgvectorError, type PgvectorArithmetic } from './pgvector-distance.js';
import { prepareQuery } from './quantize.js';
import type { Int8Rows, RowState } from './rows.js';

/**
 * Top-k with its exactness proof: the k rows pgvector's exact scan would
 * return, in its order, found by reading as few bytes as the bounds allow.
 *
 * What is compared. pgvector orders by its distance D_r = 1 − clamp(P_r),
 * P_r = Σ_f32(x·q) / sqrt(Σ_f32(x·x)·Σ_f32(q·q)), then by id; a row passes
 * `minSimilarity` when 1 − D_r ≥ it. P_r is within E of the true cosine
 * (E = `pgvectorError` plus 2⁻⁴⁸ for the rounding of 1 − P and of 1 − D,
 * which can only merge values closer than that), so every score interval
 * below is widened by E and brackets P_r itself.
 *
 * The intervals. Each row's unit direction u_r is stored as int8 codes
 * (quantize.ts): the native int8 scan gives base + t·(c_r·d), within
 * `rowBound` of u_r·q. A row scored natively in float32 (gathered) is within
 * `f32Delta` of its dot. An "exact" score is P_r itself, recomputed bit for
 * bit in pgvector's arithmetic (pgvector-distance.ts), within 2⁻⁴⁸ (the
 * rounding of 1 − P); with the server's arithmetic unknown it is the float64
 * cosine, within (4d + 16)·2⁻⁵³ + E. Bounds are compared after clamping to
 * [−1, 1], as pgvector clamps before ordering (rows tied at ±1 go by id).
 *
 * The proof. A row is left out only when its interval's top is strictly
 * below the k-th best interval bottom seen (k distinct rows then certainly
 * rank before it: ties within the intervals are never left out) or below
 * `minSimilarity`. The int8 scan returns its best `wanted` rows of each
 * block; every row it did not return has an approximate score no higher than
 * the last returned, so once that plus the largest row bound is below the
 * bar, no unreturned row of that block can matter; otherwise that block's
 * list widens (×8) and it alone is scanned again, at worst to every row. Candidates are scored natively in float32 in batches (the
 * first of k + 4 rows, so a good bar comes early); those whose interval still reaches
 * the bar are scored exactly, and the rows whose exact score reaches the
 * final bar are ranked on pgvector's distance 1 − clamp(P_r), ties by id:
 * the answer is pgvector's. With the arithmetic unknown the ranking uses
 * the float64 scores and the answer is given up (null) when any decision in
 * it rests on a difference within 2E.
 *
 * Rows whose bound is looser than the build's (written later, clamped) are
 * exceptions, scored every time; rows that fail the norm rule are never
 * scored at all.
 */

/** Fewest candidates taken in the first round, before dividing by the filter's pass share. */
const FIRST_CANDIDATES = 32;
/** The first round asks for this many times the depth recent proofs needed. */
const DEPTH_MARGIN = 2;
/** Each block's list is its share of the round's, times this (room for blocks holding more than their share of the best rows). */
const BLOCK_MARGIN = 1.5;
/** Each further round takes this many times more candidates. */
const WIDEN_FACTOR = 8;
/** At or below this pass share, the passing rows alone are scored (gathering and scoring one f32 row costs about 16 int8 rows' scan). */
export const FILTERED_SCAN_SHARE = 1 / 16;
/** Rows per native f32 call (gathered into one scratch block), and per yield point of a full scan. */
const BATCH_ROWS = 256;
/** The first batch of the int8 walk is k + 4 rows, at least this many (then doubling): scored exactly, so a good bar comes early. */
const FIRST_BATCH_ROWS = 8;
/** Batches up to this size are scored in JS: a native call has a fixed cost of a few µs. */
const SMALL_BATCH_ROWS = 4;
/** Vector components scored exactly (emulated or f64) between yield points: ~0.2 ms. */
const EXACT_ELEMENTS_PER_STEP = 50_000;
/** Int8 scan speed assumed when planning slices (a slow machine's: ~8 GB/s). */
const SCAN_BYTES_PER_MS = 8e6;
/** Margin for the rounding of 1 − P (the distance) and of 1 − D (the similarity returned). */
const DISTANCE_ROUNDING = 2 ** -48;

export interface TopKRequest {
  /** The query exactly as pgvector is given it (any length > 0; the caller normalizes). */
  query: Float32Array;
  /** How many results; fewer come back when fewer rows qualify. */
  k: number;
  /**
   * Rows whose similarity (1 − pgvector's distance) is below this are left out.
   * @defaultValue undefined — no lower bound.
   */
  minSimilarity?: number | undefined;
  /**
   * Blocks the native scan covers (indices into the state's chunks). Every
   * passing row must lie in one of them.
   * @defaultValue every block.
   */
  chunks?: readonly number[] | undefined;
  /**
   * Only rows passing this are ranked (liveness is checked as well).
   * @defaultValue undefined — every live row.
   */
  accept?: ((row: number) => boolean) | undefined;
  /** Every passing row, when the caller has them listed: a narrow filter scores exactly these. */
  passingRows?: ArrayLike<number> | undefined;
  /** How many rows pass (exact, or an estimate: it only steers speed). @defaultValue every row in the scanned blocks */
  passing?: number | undefined;
  /** Row ids, for ties. */
  ids: ArrayLike<string>;
  /** Id order for ties (pgvector's ORDER BY …, id). */
  compareIds: (a: string, b: string) => number;
  /** The server's float32 arithmetic, or null when unknown (see the module comment). */
  arithmetic: PgvectorArithmetic | null;
}

export interface TopKHit {
  row: number;
  /** 1 − pgvector's distance: clamped to [-1, 1] as pgvector does. */
  similarity: number;
}

export interface TopKResult {
  /** Distance ascending, then id; null when the answer is ambiguous (unknown arithmetic). */
  hits: TopKHit[] | null;
  /** Rows scored natively in f32 (gathered). */
  scored: number;
  /** Rows scored in f64 (JS). */
  rescored: number;
  /** Rows whose pgvector distance was recomputed bit for bit. */
  emulated: number;
  /** Native int8 block scans. */
  scans: number;
  /** Bytes of vectors read: int8 codes scanned plus f32 rows scored. */
  bytes: number;
  /** `bound`: proven from the int8 scan; `filtered`: the passing rows alone scored; `exhaustive`: every candidate scored. */
  path: 'bound' | 'filtered' | 'exhaustive';
}

/** Per-set state carried between searches: the candidate depth proofs needed, to size the next first request. */
export interface TopKMemory {
  depth: number;
}

export function newTopKMemory(): TopKMemory {
  return { depth: FIRST_CANDIDATES };
}

/** pgvector clamps its similarity to [-1, 1] before ordering: bounds are compared clamped, so rows tied at ±1 are never told apart by their unclamped scores. */
function clamp(x: number): number {
  return x > 1 ? 1 : x < -1 ? -1 : x;
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

/** Scratch blocks for gathered f32 rows, one per dimension count. */
const scratchBlocks = new Map<number, Float32Array>();

/**
 * The kernel's entry point, as resumable work (see slicing.ts): the exact
 * top-k of `req` over the rows' current state.
 */
export function* topKSteps(rows: Int8Rows, memory: TopKMemory, req: TopKRequest): Generator<number | void, TopKResult, void> {
  const s = rows.state;
  const { dim } = rows;
  const n = s.count;
  if (req.query.length !== dim) throw new RangeError(`query has ${req.query.length} dimensions, expected ${dim}`);
  const result: TopKResult = { hits: [], scored: 0, rescored: 0, emulated: 0, scans: 0, bytes: 0, path: 'bound' };
  const k = Math.floor(req.k);
  if (!(k > 0) || n === 0) return result;
  const min = req.minSimilarity ?? -Infinity;
  const live = s.live;
  const filter = req.accept;
  const accept = filter ? (row: number) => live[row] === 1 && filter(row) : (row: number) => live[row] === 1;
  const chunkList = req.chunks ?? s.chunks.map((_, i) => i);
  const rowsIn = (c: number) => Math.max(0, Math.min(n, s.chunkStarts[c]! + s.chunks[c]!.length / dim) - s.chunkStarts[c]!);
  let scanned = 0;
  for (const c of chunkList) scanned += rowsIn(c);
  const passing = Math.min(req.passing ?? scanned, scanned);
  const share = scanned > 0 ? Math.max(passing / scanned, 1 / scanned) : 1;

  const q32 = new Float32Array(req.query); // its own buffer: usearch ignores a view's byteOffset
  const q64 = new Float64Array(req.query);
  let qq = 0;
  for (let j = 0; j < dim; j++) qq += q64[j]! * q64[j]!;
  const qNorm = Math.sqrt(qq);
  if (!(qNorm > 0 && qNorm < Infinity)) throw new RangeError('query must be a finite, non-zero vector');
  const unit = new Float64Array(dim); // (TypedArray.from with a map function is ~100× slower)
  for (let j = 0; j < dim; j++) unit[j] = q64[j]! / qNorm;
  const lanes = req.arithmetic?.lanes ?? 1;
  const slack = (pgvectorError(dim, lanes) + DISTANCE_ROUNDING) * rows.testScales.pgvector;
  const scoring = new Scoring(rows, s, q32, q64, qNorm, k, min, slack, result, req.arithmetic);

  const int8 = s.built && rows.kernels.i8 && n - s.exceptions.size > 0;
  const narrow = req.passingRows !== undefined && req.passingRows.length <= FILTERED_SCAN_SHARE * n;
  const prepared = int8 && !narrow ? prepareQuery(s.scales, unit, rows.kernelSlack) : undefined;
  if (!prepared) {
    result.path = narrow ? 'filtered' : 'exhaustive';
    const each = function* (visit: (row: number) => boolean): Generator<void, void, void> {
      if (narrow) {
        const list = req.passingRows!;
        for (let i = 0; i < list.length; i++) if (accept(list[i]!) && visit(list[i]!)) yield;
        return;
      }
      for (const c of chunkList) {
        const start = s.chunkStarts[c]!;
        for (let r = start, end = start + rowsIn(c); r < end; r++) if (accept(r) && visit(r)) yield;
      }
    };
    yield* each((row) => {
      if (scoring.add(row) < BATCH_ROWS) return false;
      scoring.flush();
      return true;
    });
    scoring.flush();
    return yield* finish(scoring, req, result);
  }

  const { codes, base, t } = prepared;
  const boundScale = rows.testScales.bound;
  const rowBound = boundScale === 1 ? prepared.rowBound : (c: number, e: number) => prepared.rowBound(c, e) * boundScale;
  const { codeNorms, errorNorms, exceptional } = s;
  const globalBound = rowBound(s.codeNormMax, s.errorNormMax) + slack;

  // Exceptions carry no int8 bound: always scored.
  for (const row of s.exceptions) {
    if (!accept(row)) continue;
    if (scoring.add(row) >= BATCH_ROWS) {
      scoring.flush();
      yield;
    }
  }
  scoring.flush();

  // A longer first list costs usearch ~0.1–0.3 µs a candidate (its heap), a short one a rescan of the blocks that ran short: twice the usual depth.
  let wanted = Math.ceil(Math.max(memory.depth * DEPTH_MARGIN, 2 * k, FIRST_CANDIDATES) / Math.max(share, FILTERED_SCAN_SHARE));
  let examined = 0;
  let pruned = false;
  let closedByBound = false;
  let seen: Uint8Array | undefined;
  const firstRound: number[] = [];
  let batch = Math.min(Math.max(FIRST_BATCH_ROWS, k + 4), BATCH_ROWS);
  // Blocks whose unreturned rows may still reach the bar: every block with rows at first, then only those that ran short.
  let open = chunkList.filter((c) => rowsIn(c) > 0);
  for (;;) {
    const lists: { keys: Uint32Array | number[]; distances: Float32Array; start: number; take: number; block: number; rest: number }[] = [];
    for (const c of open) {
      const rowsHere = rowsIn(c);
      // Each block's share of the list (usearch's cost grows with it), with room for uneven blocks: a block that runs short is scanned again, alone.
      const take = Math.min(rowsHere, Math.max(k + 8, Math.ceil((BLOCK_MARGIN * wanted * rowsHere) / scanned)));
      const start = s.chunkStarts[c]!;
      yield (rowsHere * dim) / SCAN_BYTES_PER_MS; // the scan is one step: start it in a fresh slice if it would not fit
      const m = scan(s.chunks[c]!, rowsHere, codes, dim, take);
      result.scans++;
      result.bytes += rowsHere * dim;
      let keys = m.keys;
      let dists = m.distances;
      for (let x = 1; x < take; x++) {
        if (dists[x]! < dists[x - 1]!) {
          // usearch partially sorts its list; should one ever come back out of order, order it here (the early stop below relies on it).
          const order = Array.from({ length: take }, (_, i) => i).sort((a, b) => dists[a]! - dists[b]!);
          const k2: number[] = [];
          for (const i of order) k2.push(keys[2 * i]!, 0);
          dists = Float32Array.from(order, (i) => dists[i]!);
          keys = k2;
          break;
        }
      }
      // The best approximate score a row this scan did not return can have (none when it returned them all).
      let rest = -Infinity;
      if (take < rowsHere) {
        let last = -Infinity; // (usearch sorts its list; the largest is taken anyway)
        for (let x = 0; x < take; x++) if (m.distances[x]! > last) last = m.distances[x]!;
        rest = base + t * (1 - last);
      }
      lists.push({ keys, distances: dists, start, take, block: c, rest });
      yield;
    }
    // The blocks' lists walked merged best first (merged as walked), so the walk can stop at the first row that cannot matter.
    const heads = new Int32Array(lists.length);
    for (;;) {
      let best = -1;
      let bestD = Infinity;
      for (let l = 0; l < lists.length; l++) {
        const h = heads[l]!;
        if (h < lists[l]!.take && (best < 0 || lists[l]!.distances[h]! < bestD)) {
          best = l;
          bestD = lists[l]!.distances[h]!;
        }
      }
      if (best < 0) break;
      const list = lists[best]!;
      const row = list.keys[2 * heads[best]!++]! + list.start;
      examined++;
      if (exceptional[row] === 1 || (seen && seen[row] === 1)) continue;
      const approx = base + t * (1 - bestD);
      const bar = scoring.bar();
      if (clamp(approx + globalBound) < bar) {
        pruned = true;
        break; // and so is every later candidate
      }
      if (!accept(row)) continue;
      if (clamp(approx + rowBound(codeNorms[row]!, errorNorms[row]!) + slack) < bar) {
        pruned = true;
        continue;
      }
      if (seen) seen[row] = 1;
      else firstRound.push(row);
      if (scoring.add(row) >= batch) {
        // The first batch holds most of the answer: scored first (natively, ±f32Delta), it sets the bar for the rest.
        scoring.flush();
        batch = Math.min(BATCH_ROWS, batch * 2);
        yield;
      }
    }
    scoring.flush();
    // A block is done when it returned every row, or when no row it did not return can reach the bar (which only rises from here).
    const bar = scoring.bar();
    const next: number[] = [];
    for (const l of lists) {
      if (l.rest === -Infinity) continue;
      if (clamp(l.rest + globalBound) < bar) closedByBound = true;
      else next.push(l.block);
    }
    if (next.length === 0) {
      memory.depth = 0.8 * memory.depth + 0.2 * Math.min(examined * share, rows.chunkRows);
      if (!closedByBound && !pruned) result.path = 'exhaustive';
      return yield* finish(scoring, req, result);
    }
    if (!seen) {
      seen = new Uint8Array(n);
      for (const row of firstRound) seen[row] = 1;
    }
    open = next;
    wanted *= WIDEN_FACTOR;
  }
}

/** Rescores in f64 every row that can still be in the top-k, then ranks those that can on pgvector's own distance. */
function* finish(scoring: Scoring, req: TopKRequest, result: TopKResult): Generator<number | void, TopKResult, void> {
  const finalists = yield* scoring.exact();
  const { ids, compareIds, k } = req;
  const min = req.minSimilarity ?? -Infinity;
  if (req.arithmetic) {
    // The finalists' scores are pgvector's P_r: its distance is 1 − clamp(P_r), bit for bit.
    // The k best by (distance, id), kept sorted: most finalists lose to the k-th at once (all of them may be finalists when every row ties).
    const best: { row: number; distance: number }[] = [];
    const before = (a: { row: number; distance: number }, b: { row: number; distance: number }) =>
      a.distance < b.distance || (a.distance === b.distance && compareIds(ids[a.row]!, ids[b.row]!) < 0);
    for (let i = 0; i < finalists.rows.length; i++) {
      const p = finalists.scores[i]!;
      const distance = 1 - (p > 1 ? 1 : p < -1 ? -1 : p);
      if (!(1 - distance >= min)) continue; // NaN fails: never ranked
      const hit = { row: finalists.rows[i]!, distance };
      if (best.length === k && !before(hit, best[k - 1]!)) continue;
      if (best.length === k) best.pop();
      let at = best.length;
      while (at > 0 && before(hit, best[at - 1]!)) at--;
      best.splice(at, 0, hit);
      if (i % 2048 === 2047) yield;
    }
    result.hits = best.map((h) => ({ row: h.row, similarity: 1 - h.distance }));
    return result;
  }
  // Unknown arithmetic: rank on f64 scores; give up where pgvector could decide otherwise.
  const margin = finalists.delta;
  // Every finalist reaches within 2·margin of the k-th: more than k of them already makes the answer ambiguous.
  if (finalists.rows.length > 2 * k + 16) return { ...result, hits: null };
  const order = finalists.rows.map((row, i) => ({ row, score: finalists.scores[i]! })).sort((a, b) => b.score - a.score || compareIds(ids[a.row]!, ids[b.row]!));
  const chosen: { row: number; score: number }[] = [];
  for (const c of order) {
    if (c.score + margin < min) continue;
    if (c.score - margin < min) return { ...result, hits: null }; // could fall on either side of minSimilarity
    chosen.push(c);
  }
  const decided = Math.min(chosen.length, k + 1);
  for (let i = 1; i < decided; i++) {
    if (chosen[i - 1]!.score - chosen[i]!.score <= 2 * margin) return { ...result, hits: null };
  }
  result.hits = chosen.slice(0, k).map((c) => ({ row: c.row, similarity: Math.min(1, Math.max(-1, c.score)) }));
  return result;
}

/**
 * Score intervals of candidate rows, each bracketing pgvector's P_r: f64
 * (JS) or native f32 ± delta, both widened by `slack` (E); and the k-th best
 * lower bound so far, below which no row can be in the answer.
 */
class Scoring {
  private pending: number[] = [];
  private readonly keptRows: number[] = [];
  private readonly keptScores: number[] = [];
  private readonly keptExact: boolean[] = [];
  private readonly keptDeltas: number[] = [];
  /** The k best lower bounds (score − delta) so far, descending. */
  private readonly lowers: number[] = [];
  private readonly scratch: Float32Array;
  /** Half-width of an f64 interval: float64 rounding plus E. */
  readonly exactDelta: number;

  constructor(
    private readonly rows: Int8Rows,
    private readonly s: RowState,
    readonly q32: Float32Array,
    private readonly q64: Float64Array,
    private readonly qNorm: number,
    readonly k: number,
    readonly min: number,
    private readonly slack: number,
    readonly result: TopKResult,
    /** Known: "exact" scores are pgvector's own P_r, recomputed bit for bit; null: float64 cosines. */
    private readonly arithmetic: PgvectorArithmetic | null,
  ) {
    const dim = rows.dim;
    let scratch = scratchBlocks.get(dim);
    if (!scratch) {
      scratch = new Float32Array(BATCH_ROWS * dim);
      scratchBlocks.set(dim, scratch);
    }
    this.scratch = scratch;
    this.exactDelta = arithmetic ? DISTANCE_ROUNDING : (4 * dim + 16) * 2 ** -53 + slack;
    this.qq = arithmetic ? pgvectorDot(q32, q32, arithmetic) : NaN;
  }

  /** pgvector's float32 Σq² (with a known arithmetic). */
  private readonly qq: number;

  /** Rows below this cannot be in the answer: the k-th best lower bound, or minSimilarity. */
  bar(): number {
    const { lowers, k, min } = this;
    return lowers.length === k && lowers[k - 1]! > min ? lowers[k - 1]! : min;
  }

  add(row: number): number {
    return this.pending.push(row);
  }

  /** A row's exact score: pgvector's P_r itself (known arithmetic), else its float64 cosine. */
  private exactScore(row: number): number {
    const dim = this.rows.dim;
    if (this.arithmetic) {
      this.result.emulated++;
      const x = this.s.vectors.subarray(row * dim, (row + 1) * dim);
      return pgvectorDot(x, this.q32, this.arithmetic) / Math.sqrt(this.rows.pgNorm(row) * this.qq); // as pgvectorDistanceFromSums, before the clamp
    }
    this.result.rescored++;
    return dotRow(this.s.vectors, row, this.q64, dim) / (this.s.norms[row]! * this.qNorm);
  }

  /** Scores the queued rows: in JS (f64) when `exact`, when the batch is small, or without a trusted f32 kernel; else natively in f32. */
  flush(exact = false): void {
    const { pending, scratch, s } = this;
    const dim = this.rows.dim;
    const m = pending.length;
    if (m === 0) return;
    this.pending = [];
    this.result.bytes += m * dim * 4;
    if (exact || !this.rows.kernels.f32 || m <= SMALL_BATCH_ROWS) {
      for (const row of pending) this.keep(row, this.exactScore(row), this.exactDelta, true);
      return;
    }
    const rows = s.vectors;
    // Candidates come in score order: only rows first, first + 1, … in that order are one run (the first and last alone prove nothing).
    let run = true;
    for (let i = 1; i < m && run; i++) run = pending[i] === pending[0]! + i;
    if (run) {
      scratch.set(rows.subarray(pending[0]! * dim, (pending[0]! + m) * dim)); // a run of rows: one copy
    } else {
      for (let i = 0; i < m; i++) {
        const off = pending[i]! * dim;
        scratch.set(rows.subarray(off, off + dim), i * dim);
      }
    }
    const found = scan(scratch, m, this.q32, dim, m);
    this.result.scored += m;
    for (let x = 0; x < m; x++) {
      const row = pending[found.keys[2 * x]!]!;
      const dot = 1 - found.distances[x]!;
      const scale = s.norms[row]! * this.qNorm;
      this.keep(row, dot / scale, f32Delta(dim, s.norms[row]!, this.qNorm, dot) / scale + this.slack, false);
    }
  }

  /** Records a row's interval, unless it already cannot reach the bar. */
  private keep(row: number, score: number, delta: number, exact: boolean): void {
    // A NaN score (no live row has one: the norm rule keeps them out) is never ranked.
    if (Number.isNaN(score) || clamp(score + delta) < this.bar()) return;
    this.keptRows.push(row);
    this.keptScores.push(score);
    this.keptDeltas.push(delta);
    this.keptExact.push(exact);
    this.offerLower(score - delta);
  }

  private offerLower(unclamped: number): void {
    const { lowers, k } = this;
    const lower = clamp(unclamped);
    if (lowers.length === k) {
      if (lower <= lowers[k - 1]!) return;
      lowers.pop();
    }
    let i = lowers.length;
    while (i > 0 && lowers[i - 1]! < lower) i--;
    lowers.splice(i, 0, lower);
  }

  /**
   * The rows that can still be in the answer, each with its f64 score:
   * native-scored rows reaching the bar are rescored in f64 (raising the
   * bar), then every row whose f64 interval reaches the final bar.
   */
  *exact(): Generator<void, { rows: number[]; scores: number[]; delta: number }, void> {
    const bar = this.bar();
    const { keptRows, keptScores, keptDeltas, keptExact } = this;
    const candidates: number[] = [];
    const scores: number[] = [];
    const perStep = Math.max(1, Math.floor(EXACT_ELEMENTS_PER_STEP / this.rows.dim));
    let rescored = 0;
    for (let i = 0; i < keptRows.length; i++) {
      if (clamp(keptScores[i]! + keptDeltas[i]!) < bar) continue;
      let score = keptScores[i]!;
      if (!keptExact[i]) {
        score = this.exactScore(keptRows[i]!);
        if (++rescored % perStep === 0) yield;
      }
      candidates.push(keptRows[i]!);
      scores.push(score);
    }
    this.result.bytes += rescored * this.rows.dim * 4;
    // The bar again, from the f64 intervals alone (each row counted once): never below the first.
    this.lowers.length = 0;
    for (const score of scores) this.offerLower(score - this.exactDelta);
    const finalBar = this.bar();
    const rows: number[] = [];
    const kept: number[] = [];
    for (let i = 0; i < candidates.length; i++) {
      if (clamp(scores[i]! + this.exactDelta) >= finalBar) {
        rows.push(candidates[i]!);
        kept.push(scores[i]!);
      }
    }
    return { rows, scores: kept, delta: this.exactDelta };
  }
}
