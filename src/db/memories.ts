import pg from 'pg';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { to as copyTo } from 'pg-copy-streams';
import pgvector from 'pgvector';
import { EMBEDDING_DIMENSION } from '../embedding.js';

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

function decodeRow(r: RawRow): MemoryRow {
  const embedding = new Float32Array(EMBEDDING_DIMENSION);
  readVector(r[6], 0, embedding);
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

/** pgvector's text form; float32 values print exactly as pgvector parses them back. */
const toVector = (v: Float32Array): string => pgvector.toSql(Array.from(v)) as string;

const ROWS_PER_YIELD = 256;
const COPY_SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');
const PG_EPOCH_MS = Date.UTC(2000, 0, 1);

function uuidText(b: Buffer, at: number): string {
  const h = b.toString('hex', at, at + 16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Copies big-endian float4s into `dst` (aligned) and swaps them in place, natively. */
function readFloatsBE(src: Buffer, at: number, dst: Float32Array): void {
  const bytes = new Uint8Array(dst.buffer, dst.byteOffset, dst.length * 4);
  bytes.set(src.subarray(at, at + bytes.length));
  Buffer.from(dst.buffer, dst.byteOffset, bytes.length).swap32();
}

/** pgvector's binary form (int16 dim, int16 unused, float4 big-endian...) into `dst`. */
function readVector(b: Buffer, at: number, dst: Float32Array): void {
  const dim = b.readInt16BE(at);
  if (dim !== dst.length) throw new Error(`embedding has ${dim} dimensions, expected ${dst.length}`);
  readFloatsBE(b, at + 4, dst);
}

/** Parses COPY BINARY tuples of (id, channelId, content, createdAt, metadata, embedding). */
function parseTuple(b: Buffer, at: number, end: number, personalityId: string, scratch: Float32Array): [MemoryRow, number] | null {
  if (at + 2 > end) return null;
  const fields = b.readInt16BE(at);
  if (fields === -1) return null; // trailer
  let p = at + 2;
  const cols: Array<[number, number]> = [];
  for (let i = 0; i < fields; i++) {
    if (p + 4 > end) return null;
    const len = b.readInt32BE(p);
    p += 4;
    if (len > 0 && p + len > end) return null;
    cols.push([p, len]);
    if (len > 0) p += len;
  }
  const [id, channel, content, created, meta, vec] = cols as [[number, number], [number, number], [number, number], [number, number], [number, number], [number, number]];
  readVector(b, vec[0], scratch);
  const row: MemoryRow = {
    id: uuidText(b, id[0]),
    personalityId,
    channelId: b.toString('utf8', channel[0], channel[0] + channel[1]),
    content: b.toString('utf8', content[0], content[0] + content[1]),
    createdAt: new Date(PG_EPOCH_MS + Number(b.readBigInt64BE(created[0]) / 1000n)),
    // jsonb's binary form: a version byte, then the JSON text.
    metadata: meta[1] < 0 ? null : JSON.parse(b.toString('utf8', meta[0] + 1, meta[0] + meta[1])),
    embedding: scratch,
  };
  return [row, p];
}

/** Rows a load would transfer, capped at `limit` (index-only on the btree). */
export async function countPersonalityMemories(db: Queryable, personalityId: string, limit: number): Promise<number> {
  const r = await db.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM (SELECT 1 FROM memories WHERE "personalityId" = $1 LIMIT $2) s',
    [personalityId, limit],
  );
  return r.rows[0]!.n;
}

/**
 * Streams every memory of a personality, newest first, through COPY BINARY:
 * 6 KB per 1536-dim vector on the wire, no text encoding either side. `onRow`
 * gets a row whose embedding buffer is reused; return false to stop early.
 */
export async function streamPersonalityMemories(
  pool: pg.Pool,
  personalityId: string,
  limit: number,
  onRow: (row: MemoryRow) => boolean,
  signal?: AbortSignal,
): Promise<number> {
  const client = await pool.connect();
  // pg-pool stops listening for errors while a client is checked out; a
  // socket dropped mid-COPY would otherwise be an unhandled 'error' (a crash).
  let lost: Error | undefined;
  const onError = (err: Error) => (lost = err);
  client.on('error', onError);
  let broken = false;
  try {
    const stream = client.query(
      copyTo(
        `COPY (SELECT id, "channelId", content, "createdAt", metadata, embedding FROM memories
               WHERE "personalityId" = ${pg.escapeLiteral(personalityId)}
               ORDER BY "createdAt" DESC, id LIMIT ${Math.floor(limit)}) TO STDOUT (FORMAT binary)`,
      ),
    );
    const scratch = new Float32Array(EMBEDDING_DIMENSION);
    let pending: Buffer | undefined;
    let header = false;
    let rows = 0;
    let yieldedAt = 0;
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      if (signal?.aborted) {
        broken = true;
        stream.destroy();
        return rows;
      }
      const b: Buffer = pending ? Buffer.concat([pending, chunk]) : chunk;
      let at = 0;
      if (!header) {
        if (b.length < 19) {
          pending = b;
          continue;
        }
        if (!b.subarray(0, 11).equals(COPY_SIGNATURE)) throw new Error('not a COPY BINARY stream');
        at = 19 + b.readInt32BE(15); // signature, flags, header extension
        header = true;
      }
      for (let t = parseTuple(b, at, b.length, personalityId, scratch); t; t = parseTuple(b, at, b.length, personalityId, scratch)) {
        at = t[1];
        rows++;
        if (!onRow(t[0])) {
          broken = true;
          stream.destroy();
          return rows;
        }
      }
      pending = at < b.length ? b.subarray(at) : undefined;
      // Let other work run between chunks (~10 rows each): a 20,000-row load never holds the loop.
      if (rows - yieldedAt >= ROWS_PER_YIELD) {
        yieldedAt = rows;
        await yieldToLoop();
      }
    }
    if (lost) throw lost;
    return rows;
  } catch (err) {
    broken = true;
    throw lost ?? err;
  } finally {
    client.off('error', onError);
    // A COPY cut short (or failed) leaves the connection mid-protocol: discard it.
    client.release(broken);
  }
}

/** Current state of the given rows; absent ids were deleted. */
export async function fetchMemoriesByIds(db: Queryable, ids: string[]): Promise<MemoryRow[]> {
  if (ids.length === 0) return [];
  const res = await db.query<RawRow>({
    text: `SELECT ${COLUMNS} FROM memories WHERE id = ANY($1::uuid[])`,
    values: [`{${ids.join(',')}}`],
    rowMode: 'array',
  });
  return res.rows.map(decodeRow);
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
  const values: unknown[] = [toVector(q.embedding), q.personalityId, q.limit];
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
    [m.id, m.personalityId, m.channelId, m.content, toVector(m.embedding), m.metadata === undefined ? null : JSON.stringify(m.metadata)],
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
