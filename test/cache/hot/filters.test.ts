import { describe, expect, it } from 'vitest';
import { compareCodePoints, FilterColumns, type FilterValue, type WhereClause } from '../../../src/cache/hot/filters.js';
import { random } from '../../helpers/random.js';

/** SQL semantics, written out plainly: the reference for every predicate. */
function passes(values: FilterValue[], where: readonly WhereClause[]): boolean {
  return where.every(({ column, condition }) => {
    const v = values[column]!;
    const cmp = (a: string | number, b: string | number) =>
      typeof a === 'string' ? compareCodePoints(a, b as string) : Number.isNaN(a) ? (Number.isNaN(b as number) ? 0 : 1) : Number.isNaN(b as number) ? -1 : a - (b as number);
    if ('eq' in condition) return condition.eq === null ? v === null : v !== null && cmp(v, condition.eq) === 0;
    if (v === null) return false;
    if ('in' in condition) return condition.in.some((x) => cmp(v, x) === 0);
    if ('notIn' in condition) return !condition.notIn.some((x) => cmp(v, x) === 0);
    const c = condition as { lt?: string | number; lte?: string | number; gt?: string | number; gte?: string | number };
    return (c.lt === undefined || cmp(v, c.lt) < 0) && (c.lte === undefined || cmp(v, c.lte) <= 0) && (c.gt === undefined || cmp(v, c.gt) > 0) && (c.gte === undefined || cmp(v, c.gte) >= 0);
  });
}

const TEXT = ['a', 'b', 'B', 'é', '😀', '\uffee', 'ab', ''];

describe('compareCodePoints', () => {
  it('orders by code point, as COLLATE "C" orders UTF-8 bytes', () => {
    const words = ['z', 'a', '\uffee', '😀', 'é', 'ab', 'a\u0000', '', 'Z', '\ud7ff'];
    const byBytes = [...words].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect([...words].sort(compareCodePoints)).toEqual(byBytes);
    expect('\uffee' < '😀').toBe(false); // UTF-16 order differs: why the function exists
  });
});

describe('FilterColumns', () => {
  it('selects exactly the rows each condition and combination passes, through writes, moves and removals, with zones that never hide a row', () => {
    const next = random(1);
    const cols = new FilterColumns([
      { name: 't', kind: 'text' },
      { name: 'n', kind: 'number' },
    ]);
    const blockOf = (row: number) => Math.floor(row / 50);
    let rows: FilterValue[][] = [];
    const value = (): FilterValue[] => [next() < 0.1 ? null : TEXT[Math.floor(next() * TEXT.length)]!, next() < 0.1 ? null : next() < 0.05 ? NaN : Math.floor(next() * 100) - 50];
    for (let i = 0; i < 600; i++) {
      const v = value();
      cols.set(i, v, blockOf(i));
      rows.push(v);
    }
    const wheres: WhereClause[][] = [
      [{ column: 0, condition: { eq: 'a' } }],
      [{ column: 0, condition: { eq: null } }],
      [{ column: 0, condition: { in: ['a', '😀', 'none'] } }],
      [{ column: 0, condition: { notIn: ['a', 'b'] } }],
      [{ column: 0, condition: { gt: 'B', lte: 'é' } }],
      [{ column: 0, condition: { gte: '\uffee' } }],
      [{ column: 1, condition: { eq: 3 } }],
      [{ column: 1, condition: { eq: null } }],
      [{ column: 1, condition: { in: [1, 2, NaN] } }],
      [{ column: 1, condition: { notIn: [1, 2] } }],
      [{ column: 1, condition: { lt: -40 } }],
      [{ column: 1, condition: { gt: 10, lt: 12 } }],
      [{ column: 1, condition: { gte: 1000 } }], // NaN only
      [
        { column: 0, condition: { in: ['a', 'b'] } },
        { column: 1, condition: { gte: 0 } },
      ],
      [
        { column: 1, condition: { lte: 0 } },
        { column: 0, condition: { notIn: [''] } },
      ],
    ];
    const check = () => {
      for (const where of wheres) {
        const sel = cols.select(where, rows.length, Math.ceil(rows.length / 50));
        const want = rows.map((v, r) => (passes(v, where) ? r : -1)).filter((r) => r >= 0);
        const got = rows.map((_, r) => r).filter((r) => sel.test!(r));
        expect(got).toEqual(want);
        if (sel.rows) expect([...sel.rows].sort((a, b) => a - b)).toEqual(want);
        for (const r of want) expect(sel.blocks).toContain(blockOf(r)); // zones are supersets
      }
    };
    check();
    // Overwrites (values move), swap-removals (rows move between blocks).
    for (let step = 0; step < 300; step++) {
      const r = Math.floor(next() * rows.length);
      if (next() < 0.5) {
        const v = value();
        cols.zoneRemove(blockOf(r), r);
        cols.set(r, v, blockOf(r));
        rows[r] = v;
      } else {
        const last = rows.length - 1;
        cols.zoneRemove(blockOf(r), r);
        if (r !== last) {
          cols.move(last, r, blockOf(last), blockOf(r));
          rows[r] = rows[last]!;
        } else cols.pop(r);
        rows.pop();
      }
    }
    check();
    // The build's layout: sorted by the first column, runs of equal values.
    const { order, runs } = (() => {
      const steps = cols.layoutSteps(rows.length);
      for (;;) {
        const s = steps.next();
        if (s.done) return s.value;
      }
    })();
    expect([...order].sort((a, b) => a - b)).toEqual(rows.map((_, i) => i));
    const firsts = Array.from(order, (r) => rows[r]![0]!);
    for (let i = 1; i < firsts.length; i++) {
      const a = firsts[i - 1]!;
      const b = firsts[i]!;
      if (a !== null && b !== null) expect(compareCodePoints(a as string, b as string)).toBeLessThanOrEqual(0);
      if (a === null) expect(b).toBeNull();
      expect(runs.includes(i)).toBe(a !== b);
    }
    cols.permute(order, blockOf);
    rows = Array.from(order, (r) => rows[r]!);
    check();
  });

  it('rejects columns and values the declaration does not have', () => {
    const cols = new FilterColumns([{ name: 't', kind: 'text' }]);
    expect(() => cols.check([1])).toThrow(/filter t must be a string/);
    expect(() => cols.check([])).toThrow(RangeError);
    expect(() => cols.select([{ column: 1, condition: { eq: 'a' } }], 0, 0)).toThrow(/column 1/);
    expect(() => cols.select([{ column: 0, condition: { gt: 3 } }], 0, 0)).toThrow(/gt must be a string/);
    expect(() => cols.select([{ column: 0, condition: {} }], 0, 0)).toThrow(RangeError);
  });
});
