import type { HotSet } from '../cache/hot-set.js';
import type { SimilarMemory } from '../db/memories.js';
import { kernel } from './kernel.js';

export interface HotQuery {
  /** Unit-length query vector. */
  query: Float32Array;
  channelId?: string | undefined;
  limit: number;
  minSimilarity?: number | undefined;
}

/** Rows scored between event-loop yields: ~1 ms of work with simsimd at 1536 dims. */
export const ROWS_PER_SLICE = 4096;

/**
 * Exact top-k over a hot set, ordered as the SQL path orders
 * (similarity desc, then id). Large sets yield to the event loop between
 * slices; returns null if the set changed meanwhile, so the caller can use
 * pgvector instead of a torn result.
 */
export async function searchHotSet(
  set: HotSet,
  q: HotQuery,
  /** Re-checked after every yield: false once the set may lag a commit (dirty, dropped, listener down). */
  stillCurrent: () => boolean = () => true,
): Promise<SimilarMemory[] | null> {
  const { dot } = kernel();
  const k = q.limit;
  const min = q.minSimilarity ?? -Infinity;
  const scores: number[] = [];
  const rows: number[] = [];
  const version = set.version;
  const { views, channelIds, ids } = set;

  for (let start = 0; start < set.count; start += ROWS_PER_SLICE) {
    if (start > 0) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (set.version !== version || !stillCurrent()) return null;
    }
    const end = Math.min(set.count, start + ROWS_PER_SLICE);
    for (let r = start; r < end; r++) {
      if (q.channelId !== undefined && channelIds[r] !== q.channelId) continue;
      const s = dot(views[r]!, q.query);
      if (s < min) continue;
      if (scores.length === k) {
        const worst = scores[k - 1]!;
        if (s < worst || (s === worst && ids[r]! > ids[rows[k - 1]!]!)) continue;
        scores.pop();
        rows.pop();
      }
      let i = scores.length;
      while (i > 0 && (scores[i - 1]! < s || (scores[i - 1] === s && ids[rows[i - 1]!]! > ids[r]!))) i--;
      scores.splice(i, 0, s);
      rows.splice(i, 0, r);
    }
  }
  return rows.map((r, i) => ({
    id: ids[r]!,
    content: set.contents[r]!,
    channelId: channelIds[r]!,
    similarity: Math.min(1, Math.max(-1, scores[i]!)), // pgvector clamps the same way
    createdAt: new Date(set.createdAts[r]!), // a copy: the caller may mutate it
    metadata: set.metadatas[r], // deep-frozen by HotSet.upsert
  }));
}
