import pg from 'pg';
import pgvector from 'pgvector';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openEmbedded, type EmbeddedDatabase } from '../../src/backend/embedded.js';
import {
  PGLITE_COPY_PAGE_ROWS,
  countPersonalityMemories,
  deleteMemoryById,
  fetchMemoriesByIds,
  insertMemory,
  searchMemories,
  streamPersonalityMemories,
  type MemoryRow,
} from '../../src/store/builtin.js';
import { postgresDatabase, type Database } from '../../src/backend/queryable.js';
import { createMigratedDatabase, seededVectors, type TestDb } from '../helpers/db.js';

// Every function in src/store/memories.ts, on PostgreSQL 15 (COPY TO STDOUT over
// a pg.Pool) and on PGlite (COPY to /dev/blob, in keyset pages), with the
// same rows: the results must be the same.

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const BACKENDS = ['postgres', 'pglite'] as const;
type BackendName = (typeof BACKENDS)[number];

let server: TestDb;
let pool: pg.Pool;
let embedded: EmbeddedDatabase;
const dbs = {} as Record<BackendName, Database>;

const PID = '10000000-0000-4000-8000-000000000001';
const BIG_PID = '10000000-0000-4000-8000-000000000002';
const memoryId = (i: number) => `20000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
const VECTORS = seededVectors(5, 40);
/** More rows than one PGlite page, on few distinct timestamps: ties straddle the page boundary. */
const BIG = PGLITE_COPY_PAGE_ROWS + 37;

async function seed(db: Database): Promise<void> {
  await db.query(
    `INSERT INTO personalities (id, name, "displayName", "systemPrompt", "updatedAt")
     VALUES ($1, 'small', 'S', 'p', now()), ($2, 'big', 'B', 'p', now())`,
    [PID, BIG_PID],
  );
  for (const [i, v] of VECTORS.entries()) {
    await insertMemory(db, {
      id: memoryId(i),
      personalityId: PID,
      channelId: ['general', 'random'][i % 2]!,
      content: `memory ${i} – ünïcödé`,
      embedding: v,
      metadata: i % 3 === 0 ? undefined : { n: i, tags: ['a', 'b'], nested: { ok: true } },
    });
  }
  // Distinct, known timestamps with millisecond precision (timestamptz(3)).
  await db.query(
    `UPDATE memories SET "createdAt" = timestamptz '2026-01-01 00:00:00.123+00' + (substr(id::text, 25)::int * interval '1 second')
     WHERE "personalityId" = $1`,
    [PID],
  );
  // Vectors computed in SQL: parsing 1,000 vector literals costs PGlite seconds.
  await db.query(
    `INSERT INTO memories ("personalityId", "channelId", content, embedding, "createdAt")
     SELECT $1, 'bulk', 'bulk ' || g,
            (SELECT array_agg(((g * 7 + i) % 97 + 1)::real) FROM generate_series(1, 1536) i)::vector,
            timestamptz '2026-02-01 00:00:00.5+00' - ((g % 7) * interval '1 millisecond')
     FROM generate_series(1, $2::int) g`,
    [BIG_PID, BIG],
  );
}

beforeAll(async () => {
  const [s, e] = await Promise.all([createMigratedDatabase(), openEmbedded({ logger })]);
  server = s;
  embedded = e;
  pool = new pg.Pool({ connectionString: server.url, max: 4 });
  dbs.postgres = postgresDatabase(pool);
  dbs.pglite = embedded.queryable;
  await Promise.all(BACKENDS.map((b) => seed(dbs[b])));
});

afterAll(async () => {
  await pool?.end();
  await server?.drop();
  await embedded?.close();
});

/** Streams into an array, copying each row (the embedding buffer is reused). */
async function streamAll(db: Database, pid: string, limit: number, stopAfter = Infinity, signal?: AbortSignal) {
  const rows: MemoryRow[] = [];
  const n = await streamPersonalityMemories(
    db,
    pid,
    limit,
    (r) => {
      rows.push({ ...r, embedding: r.embedding.slice() });
      return rows.length < stopAfter;
    },
    signal,
  );
  return { n, rows };
}

describe('the Queryable seam', () => {
  it('returns the same JavaScript values on both backends (Buffer bytea, string int8/numeric, Date, parsed jsonb)', async () => {
    const sql = `SELECT '\\x0102ff'::bytea AS b, 9007199254740993::int8 AS i8, 1.5::numeric AS num, 7::int4 AS i4,
                        0.25::float8 AS f8, true AS t, timestamptz '2026-01-01 00:00:00.123+00' AS ts,
                        '{"a":[1,"x",null]}'::jsonb AS j, '10000000-0000-4000-8000-000000000001'::uuid AS u,
                        ARRAY['x','y'] AS arr, NULL::text AS nothing`;
    const [a, b] = await Promise.all(BACKENDS.map(async (name) => (await dbs[name].query(sql)).rows[0]));
    expect(a.b).toBeInstanceOf(Buffer);
    expect(b.b).toBeInstanceOf(Buffer);
    expect(b.i8).toBe('9007199254740993');
    expect(b.ts).toEqual(new Date('2026-01-01T00:00:00.123Z'));
    expect(b).toStrictEqual(a);
  });

  it('transactions commit together and roll back together, on both backends', async () => {
    for (const name of BACKENDS) {
      const db = dbs[name];
      const err = await db
        .transaction(async (tx) => {
          await tx.query(`UPDATE personalities SET "displayName" = 'changed' WHERE id = $1`, [PID]);
          await tx.query('SELECT 1/0');
        })
        .catch((e: unknown) => e);
      expect((err as { code?: string }).code, name).toBe('22012');
      expect((await db.query('SELECT "displayName" FROM personalities WHERE id = $1', [PID])).rows[0].displayName).toBe('S');
      const n = await db.transaction(async (tx) => (await tx.query('SELECT count(*)::int AS n FROM memories')).rows[0].n);
      expect(n, name).toBe(VECTORS.length + BIG);
    }
  });
});

describe.each(BACKENDS)('memories on %s', (name) => {
  const db = () => dbs[name];

  it('fetchMemoriesByIds returns rows exactly as stored; absent ids are left out', async () => {
    const ids = [memoryId(0), memoryId(1), memoryId(2), '20000000-0000-4000-8000-999999999999'];
    const rows = (await fetchMemoriesByIds(db(), ids)).sort((a, b) => a.id.localeCompare(b.id));
    expect(rows.map((r) => r.id)).toEqual(ids.slice(0, 3));
    expect(rows[1]).toEqual({
      id: memoryId(1),
      personalityId: PID,
      channelId: 'random',
      content: 'memory 1 – ünïcödé',
      createdAt: new Date('2026-01-01T00:00:01.123Z'),
      metadata: { n: 1, tags: ['a', 'b'], nested: { ok: true } },
      embedding: VECTORS[1],
    });
    expect(rows[0]!.metadata).toBeNull();
    expect(await fetchMemoriesByIds(db(), [])).toEqual([]);
  });

  it('streamPersonalityMemories yields every row in id order (keyset pages on PGlite), across pages and tied timestamps', async () => {
    const truth = (
      await db().query<{ id: string }>(`SELECT id FROM memories WHERE "personalityId" = $1 ORDER BY id`, [BIG_PID])
    ).rows.map((r) => r.id);
    expect(truth).toHaveLength(BIG);
    const { n, rows } = await streamAll(db(), BIG_PID, BIG + 100);
    expect(n).toBe(BIG);
    expect(rows.map((r) => r.id)).toEqual(truth);
    // Values around the page boundary, against pgvector's own text form.
    const sample = [0, PGLITE_COPY_PAGE_ROWS - 1, PGLITE_COPY_PAGE_ROWS, BIG - 1].map((i) => rows[i]!);
    const text = await db().query<{ id: string; e: string; content: string; createdAt: Date }>(
      `SELECT id, embedding::text AS e, content, "createdAt" FROM memories WHERE id = ANY($1::uuid[])`,
      [sample.map((r) => r.id)],
    );
    for (const r of sample) {
      const t = text.rows.find((x) => x.id === r.id)!;
      expect(r.embedding).toEqual(new Float32Array(pgvector.fromSql(t.e) as number[]));
      expect(r).toMatchObject({ personalityId: BIG_PID, channelId: 'bulk', content: t.content, createdAt: t.createdAt, metadata: null });
    }
  });

  it('streamPersonalityMemories stops at the limit, when onRow returns false, and when aborted', async () => {
    const all = (await streamAll(db(), PID, 1000)).rows;
    expect(all.map((r) => r.id)).toEqual(VECTORS.map((_, i) => memoryId(i)).sort());
    expect(all[0]!.embedding).toEqual(VECTORS[VECTORS.map((_, i) => memoryId(i)).indexOf(all[0]!.id)]);

    const limited = await streamAll(db(), BIG_PID, 10);
    expect(limited.n).toBe(10);
    const early = await streamAll(db(), BIG_PID, BIG, 3);
    expect(early.n).toBe(3);
    expect(early.rows.map((r) => r.id)).toEqual(limited.rows.slice(0, 3).map((r) => r.id));

    const abort = new AbortController();
    let seen = 0;
    const n = await streamPersonalityMemories(db(), BIG_PID, BIG, () => {
      if (++seen === 5) abort.abort();
      return true;
    }, abort.signal);
    expect(n).toBeLessThan(BIG);
    // The connection (or session) is usable afterwards.
    expect((await db().query('SELECT 1 AS ok')).rows[0].ok).toBe(1);
  });

  it('countPersonalityMemories counts up to the cap', async () => {
    expect(await countPersonalityMemories(db(), BIG_PID, BIG + 1)).toBe(BIG);
    expect(await countPersonalityMemories(db(), BIG_PID, 100)).toBe(100);
    expect(await countPersonalityMemories(db(), '10000000-0000-4000-8000-00000000ffff', 10)).toBe(0);
  });

  it('searchMemories ranks by cosine similarity, with channel and minimum-similarity filters', async () => {
    const q = seededVectors(6, 1)[0]!;
    const cos = (a: Float32Array, b: Float32Array) => {
      let d = 0;
      let na = 0;
      let nb = 0;
      for (let i = 0; i < a.length; i++) {
        d += a[i]! * b[i]!;
        na += a[i]! * a[i]!;
        nb += b[i]! * b[i]!;
      }
      return d / Math.sqrt(na * nb);
    };
    const ranked = VECTORS.map((v, i) => ({ id: memoryId(i), s: cos(q, v), channel: i % 2 ? 'random' : 'general' })).sort((a, b) => b.s - a.s);
    const hits = await searchMemories(db(), { personalityId: PID, embedding: q, limit: 5 });
    expect(hits.map((h) => h.id)).toEqual(ranked.slice(0, 5).map((r) => r.id));
    hits.forEach((h, i) => expect(Math.abs(h.similarity - ranked[i]!.s)).toBeLessThan(1e-5));
    expect(hits[0]).toMatchObject({ channelId: expect.any(String), content: expect.stringMatching(/^memory /) });
    expect(hits[0]!.createdAt).toBeInstanceOf(Date);

    const random = await searchMemories(db(), { personalityId: PID, channelId: 'random', embedding: q, limit: 3 });
    expect(random.map((h) => h.id)).toEqual(ranked.filter((r) => r.channel === 'random').slice(0, 3).map((r) => r.id));
    const threshold = ranked[2]!.s - 1e-4;
    const above = await searchMemories(db(), { personalityId: PID, embedding: q, limit: 10, minSimilarity: threshold });
    expect(above.map((h) => h.id)).toEqual(ranked.filter((r) => r.s >= threshold).slice(0, 10).map((r) => r.id));
  });

  it('insertMemory is idempotent by id; deleteMemoryById returns the personality once; a missing personality is a 23503', async () => {
    const id = '30000000-0000-4000-8000-000000000001';
    const m = { id, personalityId: PID, channelId: 'c', content: 'once', embedding: VECTORS[0]!, metadata: { a: 1 } };
    await insertMemory(db(), m);
    await insertMemory(db(), { ...m, content: 'twice' });
    expect((await fetchMemoriesByIds(db(), [id])).map((r) => r.content)).toEqual(['once']);
    expect(await deleteMemoryById(db(), id)).toBe(PID);
    expect(await deleteMemoryById(db(), id)).toBeNull();
    const err = await insertMemory(db(), { ...m, personalityId: '10000000-0000-4000-8000-00000000ffff' }).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('23503');
  });
});

describe('both backends', () => {
  it('stream, fetch and search give the same rows on PostgreSQL and on PGlite', async () => {
    const [a, b] = await Promise.all(BACKENDS.map((n) => streamAll(dbs[n], PID, 1000)));
    expect(b!.rows).toEqual(a!.rows);
    const ids = VECTORS.map((_, i) => memoryId(i));
    const [fa, fb] = await Promise.all(BACKENDS.map(async (n) => (await fetchMemoriesByIds(dbs[n], ids)).sort((x, y) => x.id.localeCompare(y.id))));
    expect(fb).toEqual(fa);
    const q = seededVectors(8, 1)[0]!;
    const [sa, sb] = await Promise.all(BACKENDS.map((n) => searchMemories(dbs[n], { personalityId: PID, embedding: q, limit: 8 })));
    expect(sb!.map((h) => h.id)).toEqual(sa!.map((h) => h.id));
    sb!.forEach((h, i) => expect(Math.abs(h.similarity - sa![i]!.similarity)).toBeLessThan(1e-6));
  });
});
