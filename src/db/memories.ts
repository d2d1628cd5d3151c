import type pg from 'pg';
import { EMBEDDING_DIMENSION, toVectorLiteral } from '../embedding.js';

/** One memory row as the hot set and search results need it. */
export interface MemoryRow {
  id: string;
  personalityId: string;
  channelId: string;
  content: string;
  createdAt: Date;
  metadata: unknown;
  /** Raw float32 values as stored by pgvector (not normalized). */
  embedding: Float32Array;
}

export interface SimilarMemory {
  id: string;
  content: string;
  channelId: string;
  similarity: number;
  createdAt: Date;
  metadata: unknown;
}

// vector_send(embedding) is pgvector's binary form (int16 dim, int16 unused,
// float4 big-endian...) as bytea: hex on the wire, decoded natively by
// Buffer.from(hex), with no float-by-float text parsing.
const COLUMNS = 'id, "personalityId", "channelId", content, "createdAt", metadata, vector_send(embedding)';

type RawRow = [string, string, string, string, Date, unknown, Buffer];

/** Decodes pgvector's binary form into `dst` at `offset`; returns the dimension. */
export function decodeVector(b: Buffer, dst: Float32Array, offset = 0): number {
  const dim = b.readInt16BE(0);
  for (let i = 0, p = 4; i < dim; i++, p += 4) dst[offset + i] = b.readFloatBE(p);
  return dim;
}

/** `scratch` lets a bulk load reuse one embedding buffer for every row. */
export function decodeRow(r: RawRow, scratch?: Float32Array): MemoryRow {
  const embedding = scratch ?? new Float32Array(EMBEDDING_DIMENSION);
  decodeVector(r[6], embedding);
  return {
    id: r[0],
    personalityId: r[1],
    channelId: r[2],
    content: r[3],
    createdAt: r[4],
    metadata: r[5],
    embedding,
  };
}

type Queryable = Pick<pg.Pool, 'query'>;

/** Every memory of a personality, newest first; `limit` caps the transfer. Decode with decodeRow. */
export async function loadPersonalityMemories(db: Queryable, personalityId: string, limit: number): Promise<RawRow[]> {
  const res = await db.query<RawRow>({
    text: `SELECT ${COLUMNS} FROM memories WHERE "personalityId" = $1 ORDER BY "createdAt" DESC, id LIMIT $2`,
    values: [personalityId, limit],
    rowMode: 'array',
  });
  return res.rows;
}

/** Current state of the given rows; absent ids were deleted. */
export async function fetchMemoriesByIds(db: Queryable, ids: string[]): Promise<MemoryRow[]> {
  if (ids.length === 0) return [];
  const res = await db.query<RawRow>({
    text: `SELECT ${COLUMNS} FROM memories WHERE id = ANY($1::uuid[])`,
    values: [`{${ids.join(',')}}`],
    rowMode: 'array',
  });
  return res.rows.map((r) => decodeRow(r));
}

export interface SearchQuery {
  personalityId: string;
  channelId?: string | undefined;
  embedding: Float32Array;
  limit: number;
  minSimilarity?: number | undefined;
}

/**
 * pgvector search: `<=>` is cosine distance, the operator a vector_cosine_ops
 * index serves. Iterative scans (pool session settings) keep probing until
 * LIMIT rows pass the filter; the outer ORDER BY restores exact order, which
 * relaxed_order does not promise.
 */
export async function searchMemories(db: Queryable, q: SearchQuery): Promise<SimilarMemory[]> {
  const values: unknown[] = [toVectorLiteral(q.embedding), q.personalityId, q.limit];
  let filter = '';
  if (q.channelId !== undefined) {
    values.push(q.channelId);
    filter += ` AND "channelId" = $${values.length}`;
  }
  if (q.minSimilarity !== undefined) {
    values.push(1 - q.minSimilarity);
    filter += ` AND (embedding <=> $1::vector) <= $${values.length}`;
  }
  const res = await db.query<{
    id: string;
    content: string;
    channelId: string;
    distance: number;
    createdAt: Date;
    metadata: unknown;
  }>(
    `WITH hits AS MATERIALIZED (
       SELECT id, content, "channelId", "createdAt", metadata, embedding <=> $1::vector AS distance
       FROM memories WHERE "personalityId" = $2${filter}
       ORDER BY embedding <=> $1::vector LIMIT $3)
     SELECT * FROM hits ORDER BY distance, id`,
    values,
  );
  return res.rows.map((r) => ({
    id: r.id,
    content: r.content,
    channelId: r.channelId,
    similarity: 1 - r.distance,
    createdAt: r.createdAt,
    metadata: r.metadata,
  }));
}

export interface NewMemory {
  id: string;
  personalityId: string;
  channelId: string;
  content: string;
  embedding: Float32Array;
  metadata?: unknown;
}

/** Idempotent by id, so a retry after a lost reply cannot insert twice. */
export async function insertMemory(db: Queryable, m: NewMemory): Promise<void> {
  await db.query(
    `INSERT INTO memories (id, "personalityId", "channelId", content, embedding, metadata)
     VALUES ($1, $2, $3, $4, $5::vector, $6::jsonb) ON CONFLICT (id) DO NOTHING`,
    [m.id, m.personalityId, m.channelId, m.content, toVectorLiteral(m.embedding), m.metadata === undefined ? null : JSON.stringify(m.metadata)],
  );
}

/** Returns the personality of the deleted row, or null when there was none. */
export async function deleteMemoryById(db: Queryable, id: string): Promise<string | null> {
  const res = await db.query<{ personalityId: string }>(
    'DELETE FROM memories WHERE id = $1 RETURNING "personalityId"',
    [id],
  );
  return res.rows[0]?.personalityId ?? null;
}
