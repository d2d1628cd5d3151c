import pg from 'pg';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { to as copyTo } from 'pg-copy-streams';
import pgvector from 'pgvector';
import { EMBEDDING_DIMENSION } from '../embedding.js';
import { toDatabase, type Database, type PgliteQueryable, type Queryable } from '../backend/queryable.js';

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
const COLUMNS = 'id, "personalityId", "channelId", content, "createdAt", metadata, vector_send(embedding) AS embedding';

interface RawRow {
  id: string;
  personalityId: string;
  channelId: string;
  content: string;
  createdAt: Date;
  metadata: unknown;
  embedding: Buffer;
}

function decodeRow(r: RawRow): MemoryRow {
  const embedding = new Float32Array(EMBEDDING_DIMENSION);
  readVector(r.embedding, 0, embedding);
  return { ...r, embedding };
}

/** pgvector's text form; float32 values print exactly as pgvector parses them back. */
const toVector = (v: Float32Array): string => pgvector.toSql(Array.from(v)) as string;

const ROWS_PER_YIELD = 256;
/**
 * Rows per COPY on PGlite. A PGlite query runs to completion on the event
 * loop and its result is materialized: 1,000 rows is ~6 MB and ~50 ms, where
 * a 20,000-row set in one COPY would hold the loop for a second.
 */
export const PGLITE_COPY_PAGE_ROWS = 1_000;
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

/** Offset of the first tuple, or null when the header is not complete yet. */
function copyHeaderEnd(b: Buffer): number | null {
  if (b.length < 19) return null;
  if (!b.subarray(0, 11).equals(COPY_SIGNATURE)) throw new Error('not a COPY BINARY stream');
  return 19 + b.readInt32BE(15); // signature, flags, header extension
}

const TRAILER = 'trailer' as const;

/**
 * One COPY BINARY tuple of (id, channelId, content, createdAt, metadata,
 * embedding) at `at`: the row and the next offset, TRAILER at the end of the
 * data, or null when the tuple is not complete in `b` yet.
 */
function parseTuple(
  b: Buffer,
  at: number,
  personalityId: string,
  scratch: Float32Array,
): [MemoryRow, number] | typeof TRAILER | null {
  const end = b.length;
  if (at + 2 > end) return null;
  const fields = b.readInt16BE(at);
  if (fields === -1) return TRAILER;
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

/** The SELECT both COPY paths run; `after` continues a keyset page. */
function copySelect(personalityId: string, limit: number, after?: { createdAt: Date; id: string }): string {
  const keyset = after
    ? ` AND ("createdAt" < ${pg.escapeLiteral(after.createdAt.toISOString())}::timestamptz
            OR ("createdAt" = ${pg.escapeLiteral(after.createdAt.toISOString())}::timestamptz AND id > ${pg.escapeLiteral(after.id)}::uuid))`
    : '';
  return `SELECT id, "channelId", content, "createdAt", metadata, embedding FROM memories
          WHERE "personalityId" = ${pg.escapeLiteral(personalityId)}${keyset}
          ORDER BY "createdAt" DESC, id LIMIT ${Math.floor(limit)}`;
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
 * Streams every memory of a personality (at most `limit`), newest first, in
 * COPY's binary form: 6 KB per 1536-dim vector, no text encoding either side.
 * On PostgreSQL one COPY ... TO STDOUT streams over a pooled connection; on
 * PGlite keyset pages are copied to /dev/blob (its COPY TO STDOUT returns
 * nothing). `onRow` gets a row whose embedding buffer is reused; return false
 * to stop early.
 */
export async function streamPersonalityMemories(
  db: pg.Pool | Database,
  personalityId: string,
  limit: number,
  onRow: (row: MemoryRow) => boolean,
  signal?: AbortSignal,
): Promise<number> {
  const d = toDatabase(db);
  return d.backend === 'postgres'
    ? streamOverCopy(d.pool, personalityId, limit, onRow, signal)
    : streamOverBlob(d.pglite, personalityId, limit, onRow, signal);
}

async function streamOverCopy(
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
  let stream: ReturnType<typeof copyTo> | undefined;
  try {
    stream = client.query(copyTo(`COPY (${copySelect(personalityId, limit)}) TO STDOUT (FORMAT binary)`));
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
        const start = copyHeaderEnd(b);
        if (start === null) {
          pending = b;
          continue;
        }
        at = start;
        header = true;
      }
      for (let t = parseTuple(b, at, personalityId, scratch); t && t !== TRAILER; t = parseTuple(b, at, personalityId, scratch)) {
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
    // pg arms the pool's query_timeout for the COPY and clears it only in the
    // query's callback, which pg-copy-streams never calls: call it, or the
    // timer keeps the process alive for query_timeout after close (issue 12).
    (stream as { callback?: () => void } | undefined)?.callback?.();
    client.off('error', onError);
    // A COPY cut short (or failed) leaves the connection mid-protocol: discard it.
    client.release(broken);
  }
}

async function streamOverBlob(
  pglite: PgliteQueryable,
  personalityId: string,
  limit: number,
  onRow: (row: MemoryRow) => boolean,
  signal?: AbortSignal,
): Promise<number> {
  const scratch = new Float32Array(EMBEDDING_DIMENSION);
  let rows = 0;
  let after: { createdAt: Date; id: string } | undefined;
  while (rows < limit) {
    if (signal?.aborted) return rows;
    const want = Math.min(PGLITE_COPY_PAGE_ROWS, Math.floor(limit) - rows);
    const res = await pglite.query(`COPY (${copySelect(personalityId, want, after)}) TO '/dev/blob' (FORMAT binary)`);
    if (!res.blob) throw new Error('COPY TO /dev/blob returned no data');
    const b = Buffer.from(await res.blob.arrayBuffer());
    let at = copyHeaderEnd(b);
    if (at === null) throw new Error('COPY TO /dev/blob returned a truncated header');
    let got = 0;
    for (;;) {
      const t = parseTuple(b, at, personalityId, scratch);
      if (t === TRAILER) break;
      if (t === null) throw new Error('COPY TO /dev/blob returned a truncated tuple');
      at = t[1];
      rows++;
      got++;
      after = { createdAt: t[0].createdAt, id: t[0].id };
      if (!onRow(t[0])) return rows;
      if (signal?.aborted) return rows;
    }
    if (got < want) break;
    await yieldToLoop();
  }
  return rows;
}

/** Current state of the given rows; absent ids were deleted. */
export async function fetchMemoriesByIds(db: Queryable, ids: string[]): Promise<MemoryRow[]> {
  if (ids.length === 0) return [];
  const res = await db.query<RawRow>(`SELECT ${COLUMNS} FROM memories WHERE id = ANY($1::uuid[])`, [ids]);
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
 * index serves. Iterative scans (session settings on both backends) keep
 * probing until LIMIT rows pass the filter; the outer ORDER BY restores exact
 * order, which relaxed_order does not promise.
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
