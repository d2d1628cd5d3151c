import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemorySync } from '../../src/client/memory-sync.js';
import { connect, createMigratedDatabase, insertPersonality, seededVectors, vectorLiteral, type TestDb } from '../helpers/db.js';

// createMemorySync({ pool }) with the bot's own pg.Pool, which knows nothing of
// memory-sync's session settings: memory-sync's own pool sets
// ivfflat.iterative_scan and ivfflat.probes as startup options
// (src/backend/pool.ts), so that a filtered pgvector search returns k rows. The
// same search must return k rows through a borrowed pool (or through
// PgBouncer, which does not forward startup options).

let db: TestDb;
let target: string;
const query = seededVectors(77, 1)[0]!;
const SQL = `SELECT id FROM memories WHERE "personalityId" = $2 AND "channelId" = 'general' ORDER BY embedding <=> $1::vector LIMIT 25`;

beforeAll(async () => {
  // Steered onto the ivfflat index as in test/client/memories.test.ts: no btree
  // on the filter columns, sequential scans discouraged for every session.
  db = await createMigratedDatabase('ms_borrowed_ivf');
  const w = await connect(db.url);
  try {
    await w.query('DROP INDEX "memories_personalityId_channelId_idx"');
    await w.query(`ALTER DATABASE "${db.name}" SET enable_seqscan = off`);
    const pids: string[] = [];
    for (let i = 0; i < 20; i++) pids.push(await insertPersonality(w, `ivf-${i}`));
    const vs = seededVectors(5, 3000);
    for (let i = 0; i < 20; i++) {
      await w.query(
        `INSERT INTO memories ("personalityId", "channelId", content, embedding)
         SELECT $1, CASE WHEN ord % 3 = 0 THEN 'general' ELSE 'other' END, 'm', (r #>> '{}')::vector
         FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS t(r, ord)`,
        [pids[i], JSON.stringify(vs.slice(i * 150, (i + 1) * 150).map(vectorLiteral))],
      );
    }
    await w.query('REINDEX INDEX idx_memories_embedding');
    await w.query('ANALYZE memories');
    target = pids[7]!;
  } finally {
    await w.end();
  }
  // The baseline: a plain session (new, so it has the database's settings) on the index returns fewer than k rows.
  const plain = await connect(db.url);
  try {
    const plan = await plain.query(`EXPLAIN ${SQL}`, [vectorLiteral(query), target]);
    expect(plan.rows.some((r) => String(r['QUERY PLAN']).includes('idx_memories_embedding'))).toBe(true);
    expect((await plain.query(SQL, [vectorLiteral(query), target])).rows.length).toBeLessThan(25);
  } finally {
    await plain.end();
  }
}, 60_000);
afterAll(async () => {
  await db?.drop();
});

describe('createMemorySync({ pool }): pgvector search on a miss', () => {
  it('returns k rows under a filter, as with its own pool', async () => {
    const own = createMemorySync({ databaseUrl: db.url, hotSets: { maxVectorsPerSet: 10 }, logger: pino({ level: 'silent' }), summaryIntervalMs: 0 });
    const pool = new pg.Pool({ connectionString: db.url, max: 2 });
    const borrowed = createMemorySync({ pool, hotSets: { maxVectorsPerSet: 10 }, logger: pino({ level: 'silent' }), summaryIntervalMs: 0 });
    try {
      await Promise.all([own.start(), borrowed.start()]);
      const input = { personalityId: target, embedding: query, limit: 25, channelId: 'general' };
      const viaOwn = await own.findSimilarMemories(input);
      expect(viaOwn).toHaveLength(25);
      const viaBorrowed = await borrowed.findSimilarMemories(input);
      expect(borrowed.stats()).toMatchObject({ hotSearches: 0, pgvectorSearches: 1 });
      expect(viaBorrowed.length, 'rows through the borrowed pool').toBe(25);
      expect(viaBorrowed.map((m) => m.id)).toEqual(viaOwn.map((m) => m.id));
    } finally {
      await Promise.all([own.close(), borrowed.close()]);
      await pool.end();
    }
  });
});
