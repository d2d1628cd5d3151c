import { describe, expect, it } from 'vitest';
import { HotSet, type HotQuery } from '../../../src/cache/hot/hot-set.js';
import { nativeKernelsFit } from '../../../src/cache/hot/quantized.js';
import { normalizeInto } from '../../../src/embedding.js';
import { seededVectors } from '../../helpers/db.js';

interface Ref {
  id: string;
  channelId: string;
  unit: Float32Array;
}
/** What the test put in, kept beside the set: the reference reads no set internals. */
const inputs = new WeakMap<HotSet, Map<string, Ref>>();

const searchHotSet = (set: HotSet, q: HotQuery, stillCurrent?: () => boolean) => set.search(q, stillCurrent);

function remove(set: HotSet, id: string): boolean {
  inputs.get(set)!.delete(id);
  return set.remove(id);
}

function build(n: number, seed = 1): HotSet {
  const set = new HotSet('p', 4);
  const refs = new Map<string, Ref>();
  inputs.set(set, refs);
  seededVectors(seed, n).forEach((embedding, i) => {
    const id = `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
    refs.set(id, { id, channelId: i % 2 ? 'odd' : 'even', unit: unit(embedding) });
    set.upsert({
      id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
      personalityId: 'p',
      channelId: i % 2 ? 'odd' : 'even',
      content: `m${i}`,
      createdAt: new Date(0),
      metadata: null,
      embedding,
    });
  });
  return set;
}

function unit(v: Float32Array): Float32Array {
  const u = new Float32Array(v.length);
  normalizeInto(v, u);
  return u;
}

/** Reference: score everything in float64, sort. */
function brute(set: HotSet, q: Float32Array, k: number, channel?: string) {
  const all = [];
  for (const ref of inputs.get(set)!.values()) {
    if (channel && ref.channelId !== channel) continue;
    let s = 0;
    for (let i = 0; i < q.length; i++) s += ref.unit[i]! * q[i]!;
    all.push({ id: ref.id, s });
  }
  return all.sort((a, b) => b.s - a.s || (a.id < b.id ? -1 : 1)).slice(0, k);
}

describe('hot-set search', () => {
  it('uses usearch\'s native kernels here (their distances are what the exactness bounds assume)', () => {
    expect(nativeKernelsFit(1536)).toEqual({ i8: true, f32: true });
  });

  it('is exact before and after the int8 copy is built, and after writes with the built scales', async () => {
    const set = build(800, 4);
    const q = unit(seededVectors(41, 1)[0]!);
    const ids = (r: Array<{ id: string }> | null) => r!.map((x) => x.id);
    expect(ids(await searchHotSet(set, { query: q, limit: 10 }))).toEqual(brute(set, q, 10).map((r) => r.id));
    expect(await set.build()).toBe(true);
    expect(ids(await searchHotSet(set, { query: q, limit: 10 }))).toEqual(brute(set, q, 10).map((r) => r.id));
    // The query itself as a new row, quantized with the built scales: the best match; then a remove.
    const refs = inputs.get(set)!;
    const id = '00000000-0000-4000-8000-00000000beef';
    refs.set(id, { id, channelId: 'odd', unit: q });
    set.upsert({ id, personalityId: 'p', channelId: 'odd', content: 'q', createdAt: new Date(0), metadata: null, embedding: q });
    remove(set, '00000000-0000-4000-8000-000000000003');
    const got = await searchHotSet(set, { query: q, limit: 10, channelId: 'odd' });
    expect(ids(got)).toEqual(brute(set, q, 10, 'odd').map((r) => r.id));
    expect(got![0]!.id).toBe(id);
  });

  it('returns the exact top-k, ordered by similarity then id, with channel and threshold filters', async () => {
    const set = build(500);
    const q = unit(seededVectors(9, 1)[0]!);
    for (const channel of [undefined, 'odd']) {
      const got = await searchHotSet(set, { query: q, limit: 7, channelId: channel });
      const ref = brute(set, q, 7, channel);
      expect(got!.map((g) => g.id)).toEqual(ref.map((r) => r.id));
      got!.forEach((g, i) => expect(g.similarity).toBeCloseTo(ref[i]!.s, 5));
    }
    const ref = brute(set, q, 10);
    const min = (ref[4]!.s + ref[5]!.s) / 2;
    expect((await searchHotSet(set, { query: q, limit: 10, minSimilarity: min }))!.map((g) => g.id)).toEqual(ref.slice(0, 5).map((r) => r.id));
  });

  it('keeps rows dense and correct across removes and updates', async () => {
    const set = build(50);
    const q = unit(seededVectors(9, 1)[0]!);
    const victim = brute(set, q, 1)[0]!.id;
    expect(remove(set, victim)).toBe(true);
    expect(remove(set, victim)).toBe(false);
    expect(set.count).toBe(49);
    const got = await searchHotSet(set, { query: q, limit: 3 });
    expect(got!.map((g) => g.id)).toEqual(brute(set, q, 3).map((r) => r.id));
    expect(got!.map((g) => g.id)).not.toContain(victim);
  });

  // Unbuilt, every row is scored: a long search that must yield to the event loop.
  const LONG = 20_000;

  it('gives up (null) when the set stops being current during a yield (dirty, dropped, listener down)', async () => {
    const set = build(LONG);
    const q = unit(seededVectors(9, 1)[0]!);
    let current = true;
    const pending = searchHotSet(set, { query: q, limit: 3 }, () => current);
    current = false; // e.g. an UPDATE event queued a refresh: the set may lag that commit
    expect(await pending).toBeNull();
    expect(await searchHotSet(set, { query: q, limit: 3 }, () => true)).toHaveLength(3);
  });

  it('hands out copies of dates and frozen metadata, so callers cannot change the cache', async () => {
    const set = new HotSet('p');
    set.upsert({ id: 'a', personalityId: 'p', channelId: 'c', content: 'x', createdAt: new Date(5), metadata: { k: { n: 1 } }, embedding: seededVectors(1, 1)[0]! });
    const q = unit(seededVectors(1, 1)[0]!);
    const [first] = (await searchHotSet(set, { query: q, limit: 1 }))!;
    first!.createdAt.setTime(99);
    expect(() => {
      (first!.metadata as { k: { n: number } }).k.n = 2;
    }).toThrow(TypeError);
    const [again] = (await searchHotSet(set, { query: q, limit: 1 }))!;
    expect(again!.createdAt.getTime()).toBe(5);
    expect(again!.metadata).toEqual({ k: { n: 1 } });
  });

  it('yields between slices on a large set, and gives up (null) if the set changes meanwhile', async () => {
    const set = build(LONG);
    const q = unit(seededVectors(9, 1)[0]!);
    const pending = searchHotSet(set, { query: q, limit: 3 });
    remove(set, '00000000-0000-4000-8000-000000000000'); // runs while the search is parked between slices
    expect(await pending).toBeNull();
    const again = await searchHotSet(set, { query: q, limit: 3 });
    expect(again!.map((g) => g.id)).toEqual(brute(set, q, 3).map((r) => r.id));
  });
});
