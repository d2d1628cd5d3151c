import type pg from 'pg';
import type { Database, Queryable } from '../backend/queryable.js';
import type { SimilarMemory } from '../contract/client.js';
import { bindDeclaration } from '../schema/load.js';
import { BUILTIN, BUILTIN_DECLARATION } from '../schema/builtin.js';
import type { PersonalityInput } from '../validation/personality.js';
import { CollectionStore, type CollectionRow } from './collections.js';
import { EntityLoader } from './entities.js';
import { PersonalityStore, type PersonalityRecord } from './personalities.js';

/*
 * memory-sync's own schema's stores, built from the built-in declaration,
 * and its memory and personality SQL as plain functions on them (what 0.1
 * exported): for the bench, the store tests, and callers who run the SQL
 * themselves. The clients build the same stores from the binding in effect.
 */

export const binding = bindDeclaration({ declaration: BUILTIN_DECLARATION, source: 'built-in', baseDir: process.cwd() });
export const loader = new EntityLoader(binding, binding.entities.get(BUILTIN.personality)!);
export const personalities = new PersonalityStore(binding, loader);
export const memories = new CollectionStore(binding, binding.collections.get(BUILTIN.memories)!, { dimension: 1536, untyped: false, indexed: true });

/** One memory row as the 0.1 tests read it. */
export interface MemoryRow {
  id: string;
  personalityId: string;
  channelId: string;
  content: string;
  createdAt: Date;
  metadata: unknown;
  embedding: Float32Array;
}

function memoryRow(r: CollectionRow): MemoryRow {
  const [content, channelId, createdAt, metadata] = r.values as [string, string, Date, unknown];
  return { id: r.id, personalityId: r.partition[0]!, channelId, content, createdAt, metadata, embedding: r.embedding };
}

export const loadPersonality = (db: Queryable, id: string) => loader.load(db, 0, [id]) as Promise<PersonalityRecord | null>;
export const upsertPersonality = (db: Database, id: string, input: PersonalityInput) => personalities.upsert(db, id, input);
export const deletePersonality = (db: Queryable, id: string) => personalities.delete(db, id);

export async function fetchMemoriesByIds(db: Queryable, ids: string[]): Promise<MemoryRow[]> {
  return (await memories.fetch(db, ids)).map(memoryRow);
}

export const countPersonalityMemories = (db: Queryable, pid: string, limit: number) => memories.count(db, [pid], limit);

export function streamPersonalityMemories(db: pg.Pool | Database, pid: string, limit: number, onRow: (row: MemoryRow) => boolean, signal?: AbortSignal): Promise<number> {
  return memories.stream(db, [pid], limit, (r) => onRow(memoryRow(r)), signal);
}

export async function searchMemories(
  db: Queryable,
  q: { personalityId: string; channelId?: string | undefined; embedding: Float32Array; limit: number; minSimilarity?: number | undefined },
): Promise<SimilarMemory[]> {
  const hits = await memories.search(db, {
    partition: [q.personalityId],
    where: q.channelId === undefined ? [] : [{ field: 'channelId', condition: { eq: q.channelId } }],
    embedding: q.embedding,
    limit: q.limit,
    minSimilarity: q.minSimilarity,
  });
  return hits.map((h) => {
    const [content, channelId, createdAt, metadata] = h.values as [string, string, Date, unknown];
    return { id: h.id, content, channelId, similarity: h.similarity, createdAt, metadata };
  });
}

export async function insertMemory(
  db: Queryable,
  m: { id: string; personalityId: string; channelId: string; content: string; embedding: Float32Array; metadata?: unknown },
): Promise<void> {
  const { text, values } = memories.insertStatement(binding, { id: m.id, personalityId: m.personalityId, channelId: m.channelId, content: m.content, metadata: m.metadata ?? null }, m.embedding);
  await db.query(text, values);
}

export async function deleteMemoryById(db: Queryable, id: string): Promise<string | null> {
  return (await memories.delete(db, id))?.[0] ?? null;
}
export { PGLITE_COPY_PAGE_ROWS } from './collections.js';
