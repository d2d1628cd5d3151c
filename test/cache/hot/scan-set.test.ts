import { describe, expect, it } from 'vitest';
import { compareText, matches, ScanSet, type HotRow } from '../../../src/cache/hot/scan-set.js';
import { seededVectors } from '../../helpers/db.js';

const DIM = 16;
const spec = { dimension: DIM, filters: [{ name: 'channel', kind: 'text' as const }, { name: 'at', kind: 'number' as const }], idOrder: 'text' as const };

function unit(v: Float32Array): Float32Array {
  let s = 0;
  for (const x of v) s += x * x;
  return v.map((x) => x / Math.sqrt(s));
}

function rows(n: number): HotRow[] {
  return seededVectors(7, n, DIM).map((embedding, i) => ({ id: `r${String(i).padStart(3, '0')}`, embedding, filters: [i % 2 ? 'odd' : 'even', i], values: [i] }));
}

/** Brute force in float64: the answer the set must give. */
function exact(all: HotRow[], q: Float32Array, k: number, keep: (r: HotRow) => boolean = () => true) {
  return all
    .filter(keep)
    .map((r) => {
      let dot = 0;
      let sq = 0;
      for (let i = 0; i < DIM; i++) {
        dot += r.embedding[i]! * q[i]!;
        sq += r.embedding[i]! * r.embedding[i]!;
      }
      return { id: r.id, similarity: dot / Math.sqrt(sq) };
    })
    .sort((a, b) => b.similarity - a.similarity || compareText(a.id, b.id))
    .slice(0, k);
}

describe('ScanSet (the reference full-scan set)', () => {
  it('returns the exact top-k ordered by similarity then id, under filters and a threshold', async () => {
    const all = rows(200);
    const set = new ScanSet(spec);
    for (const r of all) set.upsert(r);
    const q = unit(seededVectors(9, 1, DIM)[0]!);
    const got = await set.search({ query: q, where: [], limit: 10 });
    expect(got!.map((h) => h.id)).toEqual(exact(all, q, 10).map((h) => h.id));
    const odd = await set.search({ query: q, where: [{ column: 0, condition: { eq: 'odd' } }, { column: 1, condition: { lt: 100 } }], limit: 5 });
    expect(odd!.map((h) => h.id)).toEqual(exact(all, q, 5, (r) => r.filters[0] === 'odd' && (r.filters[1] as number) < 100).map((h) => h.id));
    const t = exact(all, q, 4)[3]!.similarity;
    expect((await set.search({ query: q, where: [], limit: 10, minSimilarity: t }))!.length).toBe(4);
  });

  it('keeps rows correct across removes and re-upserts', async () => {
    const all = rows(50);
    const set = new ScanSet(spec);
    for (const r of all) set.upsert(r);
    for (const r of all.slice(0, 20)) expect(set.remove(r.id)).toBe(true);
    expect(set.remove('nope')).toBe(false);
    set.upsert({ ...all[0]!, embedding: all[49]!.embedding });
    const q = unit(all[49]!.embedding.slice());
    const kept = [...all.slice(20), { ...all[0]!, embedding: all[49]!.embedding }];
    expect((await set.search({ query: q, where: [], limit: 3 }))!.map((h) => h.id)).toEqual(exact(kept, q, 3).map((h) => h.id));
    expect(set.count).toBe(31);
  });

  it('never returns a row whose similarity is undefined (zero, underflowing or overflowing norm)', async () => {
    const set = new ScanSet(spec);
    const q = unit(seededVectors(3, 1, DIM)[0]!);
    set.upsert({ id: 'zero', embedding: new Float32Array(DIM), filters: ['a', 0], values: [] });
    set.upsert({ id: 'tiny', embedding: new Float32Array(DIM).fill(1e-30), filters: ['a', 0], values: [] });
    set.upsert({ id: 'huge', embedding: new Float32Array(DIM).fill(1e37), filters: ['a', 0], values: [] });
    set.upsert({ id: 'fine', embedding: q.slice(), filters: ['a', 0], values: [] });
    expect((await set.search({ query: q, where: [], limit: 10 }))!.map((h) => h.id)).toEqual(['fine']);
  });

  it('gives up (null) when the set changes during a sliced search', async () => {
    const set = new ScanSet(spec);
    for (const r of rows(5000)) set.upsert(r);
    const q = unit(seededVectors(9, 1, DIM)[0]!);
    const pending = set.search({ query: q, where: [], limit: 3 });
    set.remove('r000');
    expect(await pending).toBeNull();
    expect(await set.search({ query: q, where: [], limit: 3 }, () => false)).toBeNull();
  });

  it('filters with SQL semantics: NULL matches only eq null, code-point order for text', () => {
    expect(matches(null, { eq: null })).toBe(true);
    expect(matches(null, { notIn: ['a'] })).toBe(false);
    expect(matches(null, { in: ['a'] })).toBe(false);
    expect(matches('b', { notIn: ['a'] })).toBe(true);
    expect(matches('B', { lt: 'a' })).toBe(true); // 'B' (66) < 'a' (97)
    expect(matches(5, { gte: 5, lt: 6 })).toBe(true);
    expect(compareText('\u{1F600}', '\uFFFF')).toBe(1);
  });
});
