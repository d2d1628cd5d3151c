/**
 * Predicates over a hot set's per-row filter columns, and the indexes that
 * let a selective one cut the vector work:
 *
 * - per-value row lists for text columns, so `eq` and `in` list their rows
 *   without looking at any other row;
 * - a zone map per native block (the distinct text values in it, with
 *   counts; the min/max of each number column), so a search scans only the
 *   blocks a predicate can match. The set sorts its rows by the first
 *   declared column at each build, so an `eq`/`in`/range on it reads only
 *   its own blocks.
 *
 * SQL semantics: `eq: null` matches NULL (IS NULL) and nothing else matches
 * NULL; `in`, `notIn` and ranges never match NULL, except an empty `notIn`,
 * which matches every row (`NOT (x = ANY('{}'))` is true for NULL too). Text compares in code-point
 * order (COLLATE "C"); numbers as PostgreSQL compares float8 (NaN equals NaN
 * and sorts above every number).
 */

export type FilterValue = string | number | null;

export interface ColumnSpec {
  name: string;
  kind: 'text' | 'number';
}

export type FilterCondition =
  | { eq: FilterValue }
  | { in: readonly (string | number)[] }
  | { notIn: readonly (string | number)[] }
  | { lt?: string | number; lte?: string | number; gt?: string | number; gte?: string | number };

export interface WhereClause {
  column: number;
  condition: FilterCondition;
}

/** Code-point order of two strings (JS compares UTF-16 units, which puts U+E000–U+FFFF after astral characters). */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800) x = x <= 0xdfff ? x + 0x2000 : x - 0x800;
    if (y >= 0xd800) y = y <= 0xdfff ? y + 0x2000 : y - 0x800;
    return x - y;
  }
  return a.length - b.length;
}

/** float8 order as PostgreSQL has it: NaN equal to itself and above every number. */
function compareNumbers(a: number, b: number): number {
  if (a !== a) return b !== b ? 0 : 1;
  if (b !== b) return -1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A growable list of rows with O(1) removal (each row knows its slot). */
class RowList {
  rows = new Int32Array(4);
  length = 0;

  push(row: number, slots: Int32Array): void {
    if (this.length === this.rows.length) {
      const next = new Int32Array(this.rows.length * 2);
      next.set(this.rows);
      this.rows = next;
    }
    slots[row] = this.length;
    this.rows[this.length++] = row;
  }

  /** Removes the row at `slot`, moving the last entry into it. */
  removeAt(slot: number, slots: Int32Array): void {
    const last = this.rows[--this.length]!;
    if (slot !== this.length) {
      this.rows[slot] = last;
      slots[last] = slot;
    }
  }
}

interface TextColumn {
  kind: 'text';
  values: (string | null)[];
  lists: Map<string | null, RowList>;
  /** Each row's slot in its value's list. */
  slots: Int32Array;
}

interface NumberColumn {
  kind: 'number';
  values: Float64Array;
  /** 1: NULL. */
  nulls: Uint8Array;
}

type Column = TextColumn | NumberColumn;

/** What one block holds, per column: text values with counts; numbers' range (conservative until rebuilt), NULL and NaN counts. */
interface Zone {
  text: (Map<string | null, number> | undefined)[];
  min: Float64Array;
  max: Float64Array;
  nulls: Int32Array;
  nans: Int32Array;
}

/** The rows a `where` passes, as the search uses them. */
export interface Selection {
  /** Whether a row passes; undefined when every row does. */
  test: ((row: number) => boolean) | undefined;
  /** Rows passing (exact when `rows` is set, else estimated from a sample). */
  count: number;
  /** Every passing row, when listing them was cheap or the filter is narrow. */
  rows: Int32Array | undefined;
  /** Blocks holding any row that can pass. */
  blocks: number[];
}

/** Rows sampled to estimate a predicate's pass share. */
const SHARE_SAMPLE_ROWS = 256;
/** A predicate whose sampled share is at most this is listed exactly (one pass over its columns), so only its rows are scored. */
const LIST_SHARE = 1 / 16;

export class FilterColumns {
  private readonly columns: Column[];
  private capacity = 0;
  private zones: Zone[] = [];

  constructor(readonly specs: readonly ColumnSpec[]) {
    this.columns = specs.map((spec): Column =>
      spec.kind === 'text'
        ? { kind: 'text', values: [], lists: new Map(), slots: new Int32Array(0) }
        : { kind: 'number', values: new Float64Array(0), nulls: new Uint8Array(0) },
    );
  }

  /** Bytes held, roughly, for the cache's byte bound. */
  get bytes(): number {
    let b = 0;
    for (const c of this.columns) {
      if (c.kind === 'text') {
        b += c.slots.byteLength + c.values.length * 8;
        for (const [v, list] of c.lists) b += list.rows.byteLength + 64 + (v === null ? 0 : 2 * v.length);
      } else {
        b += c.values.byteLength + c.nulls.byteLength;
      }
    }
    return b;
  }

  /** Checks a row's values against the declared kinds: a clear error, before anything changes. */
  check(values: readonly FilterValue[]): void {
    if (values.length !== this.specs.length) {
      throw new RangeError(`row has ${values.length} filter values, expected ${this.specs.length} (${this.specs.map((s) => s.name).join(', ')})`);
    }
    this.specs.forEach((spec, i) => {
      const v = values[i];
      if (v === null) return;
      if (spec.kind === 'text' ? typeof v !== 'string' : typeof v !== 'number') {
        throw new RangeError(`filter ${spec.name} must be ${spec.kind === 'text' ? 'a string' : 'a number'} or null, got ${typeof v}`);
      }
    });
  }

  private grow(capacity: number): void {
    if (capacity <= this.capacity) return;
    for (const c of this.columns) {
      if (c.kind === 'text') {
        const slots = new Int32Array(capacity);
        slots.set(c.slots);
        c.slots = slots;
      } else {
        const values = new Float64Array(capacity);
        values.set(c.values);
        c.values = values;
        const nulls = new Uint8Array(capacity);
        nulls.set(c.nulls);
        c.nulls = nulls;
      }
    }
    this.capacity = capacity;
  }

  /** Row `row`'s values (`row` may be one past the last: an append). */
  set(row: number, values: readonly FilterValue[], block: number): void {
    if (row >= this.capacity) this.grow(Math.max(row + 1, Math.ceil(this.capacity * 1.25), 16));
    this.columns.forEach((c, i) => {
      const v = values[i] ?? null;
      if (c.kind === 'text') {
        const t = v as string | null;
        if (row < c.values.length) this.unlist(c, row);
        c.values[row] = t;
        let list = c.lists.get(t);
        if (!list) c.lists.set(t, (list = new RowList()));
        list.push(row, c.slots);
      } else {
        c.nulls[row] = v === null ? 1 : 0;
        c.values[row] = v === null ? 0 : (v as number);
      }
    });
    this.zoneAdd(block, row);
  }

  /** The value of column `column` at `row`, as stored. */
  value(column: number, row: number): FilterValue {
    const c = this.columns[column]!;
    if (c.kind === 'text') return c.values[row] ?? null;
    return c.nulls[row] === 1 ? null : c.values[row]!;
  }

  private unlist(c: TextColumn, row: number): void {
    const list = c.lists.get(c.values[row]!)!;
    list.removeAt(c.slots[row]!, c.slots);
    if (list.length === 0) c.lists.delete(c.values[row]!);
  }

  /** Forgets row `row`'s values in its block's zone (before it is overwritten or moved away). */
  zoneRemove(block: number, row: number): void {
    const z = this.zones[block];
    if (!z) return;
    this.columns.forEach((c, i) => {
      if (c.kind === 'text') {
        const m = z.text[i]!;
        const v = c.values[row]!;
        const left = (m.get(v) ?? 1) - 1;
        if (left > 0) m.set(v, left);
        else m.delete(v);
      } else if (c.nulls[row] === 1) {
        z.nulls[i]!--;
      } else if (c.values[row] !== c.values[row]) {
        z.nans[i]!--;
      } // min/max stay as they are: still a superset
    });
  }

  private zoneAdd(block: number, row: number): void {
    let z = this.zones[block];
    if (!z) {
      const n = this.columns.length;
      z = { text: this.columns.map((c) => (c.kind === 'text' ? new Map() : undefined)), min: new Float64Array(n).fill(Infinity), max: new Float64Array(n).fill(-Infinity), nulls: new Int32Array(n), nans: new Int32Array(n) };
      this.zones[block] = z;
    }
    this.columns.forEach((c, i) => {
      if (c.kind === 'text') {
        const m = z.text[i]!;
        const v = c.values[row]!;
        m.set(v, (m.get(v) ?? 0) + 1);
      } else if (c.nulls[row] === 1) {
        z.nulls[i]!++;
      } else {
        const v = c.values[row]!;
        if (v !== v) z.nans[i]!++;
        else {
          if (v < z.min[i]!) z.min[i] = v;
          if (v > z.max[i]!) z.max[i] = v;
        }
      }
    });
  }

  /** Row `from`'s values move to row `to` (a swap-remove), from block `fromBlock` to block `toBlock`; `to`'s own values are gone. */
  move(from: number, to: number, fromBlock: number, toBlock: number): void {
    this.zoneRemove(fromBlock, from);
    this.columns.forEach((c) => {
      if (c.kind === 'text') {
        this.unlist(c, to);
        const v = c.values[from]!;
        const list = c.lists.get(v)!;
        const slot = c.slots[from]!;
        list.rows[slot] = to;
        c.slots[to] = slot;
        c.values[to] = v;
      } else {
        c.values[to] = c.values[from]!;
        c.nulls[to] = c.nulls[from]!;
      }
    });
    for (const c of this.columns) if (c.kind === 'text' && from === c.values.length - 1) c.values.length = from;
    this.zoneAdd(toBlock, to);
  }

  /** Drops the last row (`row`), whose zone entry is already gone (zoneRemove). */
  pop(row: number): void {
    for (const c of this.columns) {
      if (c.kind === 'text') {
        this.unlist(c, row);
        c.values.length = row;
      }
    }
  }

  /** Reorders every row (`order[i]`: the old row now at i) and rebuilds the zones for `blockOf`. */
  permute(order: Int32Array, blockOf: (row: number) => number): void {
    const n = order.length;
    for (const c of this.columns) {
      if (c.kind === 'text') {
        const values = Array.from(order, (r) => c.values[r]!);
        c.values = values;
        c.lists = new Map();
        for (let i = 0; i < n; i++) {
          let list = c.lists.get(values[i]!);
          if (!list) c.lists.set(values[i]!, (list = new RowList()));
          list.push(i, c.slots);
        }
      } else {
        const values = new Float64Array(c.values.length);
        const nulls = new Uint8Array(c.nulls.length);
        for (let i = 0; i < n; i++) {
          values[i] = c.values[order[i]!]!;
          nulls[i] = c.nulls[order[i]!]!;
        }
        c.values = values;
        c.nulls = nulls;
      }
    }
    this.zones = [];
    for (let i = 0; i < n; i++) this.zoneAdd(blockOf(i), i);
  }

  /**
   * The build's layout, as resumable work: every row 0..count−1 ordered by
   * the first column's value (code-point order for text, NULL last), and the
   * runs of equal values, so a predicate on that column reads only its own
   * blocks. Without columns the order is as is.
   */
  *layoutSteps(count: number): Generator<void, { order: Int32Array; runs: number[] }, void> {
    const c = this.columns[0];
    const order = new Int32Array(count);
    const runs: number[] = []; // start of each run
    if (!c) {
      for (let i = 0; i < count; i++) order[i] = i;
      return { order, runs: [0] };
    }
    if (c.kind === 'text') {
      const keys = [...c.lists.keys()].sort((x, y) => (x === y ? 0 : x === null ? 1 : y === null ? -1 : compareCodePoints(x, y)));
      let at = 0;
      for (const key of keys) {
        const list = c.lists.get(key)!;
        runs.push(at);
        order.set(list.rows.subarray(0, list.length), at);
        at += list.length;
      }
      return { order, runs };
    }
    // Numbers: a bottom-up merge sort of row numbers by value, yielding between passes' slices.
    const key = (r: number) => (c.nulls[r] === 1 ? 2 : 0);
    const cmp = (x: number, y: number) => key(x) - key(y) || compareNumbers(c.values[x]!, c.values[y]!) || x - y;
    let src = new Int32Array(count);
    for (let i = 0; i < count; i++) src[i] = i;
    let dst = new Int32Array(count);
    let work = 0;
    for (let width = 1; width < count; width *= 2) {
      for (let lo = 0; lo < count; lo += 2 * width) {
        const mid = Math.min(lo + width, count);
        const hi = Math.min(lo + 2 * width, count);
        let i = lo;
        let j = mid;
        let o = lo;
        while (i < mid && j < hi) dst[o++] = cmp(src[i]!, src[j]!) <= 0 ? src[i++]! : src[j++]!;
        while (i < mid) dst[o++] = src[i++]!;
        while (j < hi) dst[o++] = src[j++]!;
        work += hi - lo;
        if (work >= 16_384) {
          work = 0;
          yield;
        }
      }
      [src, dst] = [dst, src];
    }
    order.set(src);
    const same = (x: number, y: number) => key(x) === key(y) && (key(x) === 2 || compareNumbers(c.values[x]!, c.values[y]!) === 0);
    for (let i = 0; i < count; i++) if (i === 0 || !same(order[i - 1]!, order[i]!)) runs.push(i);
    return { order, runs };
  }

  /**
   * The rows `where` passes among rows 0..count−1, over `blocks` native
   * blocks. Throws RangeError for a column or value that does not fit the
   * declaration.
   */
  select(where: readonly WhereClause[], count: number, blocks: number): Selection {
    const all = Array.from({ length: blocks }, (_, i) => i);
    if (where.length === 0) return { test: undefined, count, rows: undefined, blocks: all };
    const tests = where.map((w) => this.compile(w));
    const test = tests.length === 1 ? tests[0]!.test : (row: number) => tests.every((t) => t.test(row));
    const zoneTests = tests.map((t) => t.zone);
    const chosenBlocks = all.filter((b) => {
      const z = this.zones[b];
      return z !== undefined && zoneTests.every((zt) => zt(z));
    });
    // The cheapest listing: a text eq/in names its rows outright.
    let driver: { size: number; lists: RowList[] } | undefined;
    for (const t of tests) if (t.lists && (!driver || t.lists.size < driver.size)) driver = { size: t.lists.size, lists: t.lists.lists };
    if (driver && (driver.size <= count / 4 || tests.length === 1)) {
      const rows = new Int32Array(driver.size);
      let m = 0;
      for (const list of driver.lists) {
        for (let i = 0; i < list.length; i++) {
          const r = list.rows[i]!;
          if (tests.length === 1 || test(r)) rows[m++] = r;
        }
      }
      return { test, count: m, rows: rows.subarray(0, m), blocks: chosenBlocks };
    }
    // Otherwise sample the share; list the rows exactly when few pass.
    const stride = Math.max(1, count / SHARE_SAMPLE_ROWS);
    let sampled = 0;
    let passed = 0;
    for (let at = 0; at < count; at += stride, sampled++) if (test(Math.floor(at))) passed++;
    const share = sampled > 0 ? passed / sampled : 0;
    if (share <= LIST_SHARE) {
      const rows: number[] = [];
      for (let r = 0; r < count; r++) if (test(r)) rows.push(r);
      return { test, count: rows.length, rows: Int32Array.from(rows), blocks: chosenBlocks };
    }
    return { test, count: Math.ceil(share * count), rows: undefined, blocks: chosenBlocks };
  }

  /** One condition as a row test, a block (zone) test, and, for text eq/in, the row lists it names. */
  private compile(w: WhereClause): { test: (row: number) => boolean; zone: (z: Zone) => boolean; lists?: { size: number; lists: RowList[] } } {
    const i = w.column;
    const c = this.columns[i];
    const spec = this.specs[i];
    if (!c || !spec || !Number.isInteger(i)) throw new RangeError(`filter column ${i} is not declared`);
    const cond = w.condition as Record<string, unknown>;
    const want = (v: unknown, what: string): string | number => {
      if (c.kind === 'text' ? typeof v !== 'string' : typeof v !== 'number') {
        throw new RangeError(`filter ${spec.name}: ${what} must be ${c.kind === 'text' ? 'a string' : 'a number'}`);
      }
      return v as string | number;
    };
    if ('eq' in cond) {
      const v = cond.eq === null ? null : want(cond.eq, 'eq');
      return this.members(i, c, v === null ? [null] : [v], false);
    }
    if ('in' in cond || 'notIn' in cond) {
      const negate = 'notIn' in cond;
      const list = (negate ? cond.notIn : cond.in) as unknown;
      if (!Array.isArray(list)) throw new RangeError(`filter ${spec.name}: ${negate ? 'notIn' : 'in'} must be an array`);
      return this.members(i, c, list.map((v: unknown) => want(v, negate ? 'notIn' : 'in')), negate);
    }
    const keys = ['lt', 'lte', 'gt', 'gte'].filter((key) => cond[key] !== undefined);
    if (keys.length === 0 || Object.keys(cond).some((key) => !['lt', 'lte', 'gt', 'gte'].includes(key))) {
      throw new RangeError(`filter ${spec.name}: a condition is one of eq, in, notIn, or lt/lte/gt/gte`);
    }
    /** Each bound as (its value, whether a comparison result −1/0/1 of a row value against it passes, whether it bounds from below). */
    const parts = keys.map((key) => ({
      b: want(cond[key], key),
      pass: key === 'lt' ? (x: number) => x < 0 : key === 'lte' ? (x: number) => x <= 0 : key === 'gt' ? (x: number) => x > 0 : (x: number) => x >= 0,
      lower: key === 'gt' || key === 'gte',
    }));
    if (c.kind === 'text') {
      const inRange = (v: string) => parts.every((p) => p.pass(compareCodePoints(v, p.b as string)));
      return {
        test: (row) => {
          const v = c.values[row]!;
          return v !== null && inRange(v);
        },
        zone: (z) => {
          for (const [v, n] of z.text[i]!) if (n > 0 && v !== null && inRange(v)) return true;
          return false;
        },
      };
    }
    const inRange = (v: number) => parts.every((p) => p.pass(compareNumbers(v, p.b as number)));
    return {
      test: (row) => c.nulls[row] === 0 && inRange(c.values[row]!),
      // The block's numbers lie in [min, max] (plus NaNs): some may pass iff its top clears every lower bound and its bottom every upper one.
      zone: (z) =>
        (z.nans[i]! > 0 && inRange(NaN)) ||
        (z.min[i]! <= z.max[i]! && parts.every((p) => p.pass(compareNumbers(p.lower ? z.max[i]! : z.min[i]!, p.b as number)))),
    };
  }

  /** eq / in (negate false) or notIn (negate true) over `values`; `null` only as eq's IS NULL. */
  private members(i: number, c: Column, values: (string | number | null)[], negate: boolean) {
    // x = ANY('{}') is false even for a NULL x, so NOT of it passes every row.
    if (negate && values.length === 0) return { test: () => true, zone: () => true };
    if (c.kind === 'text') {
      const set = new Set(values as (string | null)[]);
      const test = negate ? (row: number) => c.values[row] !== null && !set.has(c.values[row]!) : (row: number) => set.has(c.values[row]!);
      const zone = negate
        ? (z: Zone) => {
            for (const [v, n] of z.text[i]!) if (n > 0 && v !== null && !set.has(v)) return true;
            return false;
          }
        : (z: Zone) => {
            for (const v of set) if ((z.text[i]!.get(v) ?? 0) > 0) return true;
            return false;
          };
      if (negate) return { test, zone };
      const lists: RowList[] = [];
      let size = 0;
      for (const v of set) {
        const list = c.lists.get(v);
        if (list) {
          lists.push(list);
          size += list.length;
        }
      }
      return { test, zone, lists: { size, lists } };
    }
    if (values.length === 1 && values[0] === null) {
      return { test: (row: number) => c.nulls[row] === 1, zone: (z: Zone) => z.nulls[i]! > 0 };
    }
    const nums = values as number[];
    const hasNaN = nums.some((v) => v !== v);
    const set = new Set(nums.filter((v) => v === v));
    const member = (v: number) => (v !== v ? hasNaN : set.has(v));
    const test = negate ? (row: number) => c.nulls[row] === 0 && !member(c.values[row]!) : (row: number) => c.nulls[row] === 0 && member(c.values[row]!);
    const zone = negate
      ? (z: Zone) => (z.nans[i]! > 0 && !hasNaN) || (z.min[i]! <= z.max[i]! && !(z.min[i] === z.max[i] && member(z.min[i]!)))
      : (z: Zone) => (z.nans[i]! > 0 && hasNaN) || nums.some((v) => v === v && z.min[i]! <= v && v <= z.max[i]!);
    return { test, zone };
  }
}
