import { describe, expect, it } from 'vitest';
import type { TestClientOptions as MemorySyncOptions } from '../helpers/client.js';
import type { MemorySync, SimilarMemory } from '../../src/client/memory-sync.js';
import { createMemorySync } from '../../src/client/memory-sync.js';
import { ValidationError, NotFoundError } from '../../src/contract/errors.js';
import { connect, createMigratedDatabase, insertPersonality, seededVectors, vectorLiteral } from '../helpers/db.js';
import { gate, nextInvalidation, startClient, useDatabase } from '../helpers/client.js';
import { FreezableProxy } from '../helpers/proxy.js';
import { streamPersonalityMemories } from '../../src/store/builtin.js';
import pg from 'pg';

const t = useDatabase();
const client = (options?: MemorySyncOptions) => t.client(options);
const CHANNELS = ['general', 'random', 'dm'];

async function seed(pid: string, vectors: Float32Array[], from = 0): Promise<void> {
  const rows = vectors.map((v, i) => ({ c: CHANNELS[(from + i) % 3], t: `memory ${from + i}`, e: vectorLiteral(v) }));
  await t.writer.query(
    `INSERT INTO memories ("personalityId", "channelId", content, embedding, metadata, "createdAt")
     SELECT $1, r->>'c', r->>'t', (r->>'e')::vector, jsonb_build_object('n', ord), now() - (ord || ' seconds')::interval
     FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS t(r, ord)`,
    [pid, JSON.stringify(rows)],
  );
}

/** pgvector's exact answer: a sequential scan, no index. */
async function exact(pid: string, q: Float32Array, limit: number, channelId?: string, minSimilarity?: number) {
  await t.writer.query('BEGIN');
  try {
    await t.writer.query('SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off');
    const r = await t.writer.query<{ id: string; similarity: number }>(
      `SELECT id, 1 - (embedding <=> $1::vector) AS similarity FROM memories
       WHERE "personalityId" = $2 AND ($3::text IS NULL OR "channelId" = $3)
         AND ($5::float8 IS NULL OR 1 - (embedding <=> $1::vector) >= $5)
       ORDER BY embedding <=> $1::vector, id LIMIT $4`,
      [vectorLiteral(q), pid, channelId ?? null, limit, minSimilarity ?? null],
    );
    return r.rows;
  } finally {
    await t.writer.query('COMMIT');
  }
}

function expectSame(hot: SimilarMemory[], ref: Array<{ id: string; similarity: number }>) {
  expect(hot.map((h) => h.id)).toEqual(ref.map((r) => r.id));
  hot.forEach((h, i) => expect(Math.abs(h.similarity - ref[i]!.similarity)).toBeLessThan(1e-6));
}

async function warm(c: MemorySync, pid: string, q: Float32Array) {
  await c.findSimilarMemories({ personalityId: pid, embedding: q });
  await c.core.settled('memories', [pid]);
  expect(c.core.isServable('memories', [pid])).toBe(true);
}

describe('findSimilarMemories', () => {
  it('hot-path results equal pgvector exact results: same ids, same order, similarity within 1e-6', async () => {
    const pid = await insertPersonality(t.writer, 'exact');
    await seed(pid, seededVectors(11, 1000));
    const c = await client();
    const queries = seededVectors(99, 6);
    // The first search is answered by pgvector, without waiting for the load.
    const first = await c.findSimilarMemories({ personalityId: pid, embedding: queries[0]!, limit: 10 });
    expect(first).toHaveLength(10);
    expect(c.stats()).toMatchObject({ pgvectorSearches: 1, hotSearches: 0 });
    await c.core.settled('memories', [pid]);

    for (const [i, q] of queries.entries()) {
      const channelId = i % 2 ? CHANNELS[i % 3] : undefined;
      const hot = await c.findSimilarMemories({ personalityId: pid, embedding: q, limit: 10, channelId });
      expectSame(hot, await exact(pid, q, 10, channelId));
      expect(hot[0]).toMatchObject({ content: expect.stringMatching(/^memory \d+$/), metadata: { n: expect.any(Number) } });
      expect(hot[0]!.createdAt).toBeInstanceOf(Date);
      if (channelId) expect(hot.every((h) => h.channelId === channelId)).toBe(true);
    }
    // minSimilarity: a threshold between the 3rd and 4th result keeps exactly 3.
    const q = queries[1]!;
    const all = await exact(pid, q, 10);
    const min = (all[2]!.similarity + all[3]!.similarity) / 2;
    const hot = await c.findSimilarMemories({ personalityId: pid, embedding: q, limit: 10, minSimilarity: min });
    expectSame(hot, all.slice(0, 3));
    expect(c.stats().hotSearches).toBe(queries.length + 1);
    expect(c.stats().hotSetBytes).toBeGreaterThan(1000 * 1536 * 4);
  });

  it('a miss returns k rows under a filter where plain ivfflat (probes = 1) returns fewer', async () => {
    // Its own database, steered onto the ivfflat index: no btree on the
    // filter columns, sequential scans discouraged for every session.
    const ivf = await createMigratedDatabase('ms_ivf');
    const w = await connect(ivf.url);
    try {
      await w.query('DROP INDEX "memories_personalityId_channelId_idx"');
      await w.query(`ALTER DATABASE "${ivf.name}" SET enable_seqscan = off`);
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
      await w.query('REINDEX INDEX idx_memories_embedding'); // real centroids
      await w.query('ANALYZE memories');
      const target = pids[7]!;
      const q = seededVectors(77, 1)[0]!;
      const sql = `SELECT id FROM memories WHERE "personalityId" = $2 AND "channelId" = 'general' ORDER BY embedding <=> $1::vector LIMIT 25`;

      const plain = await connect(ivf.url);
      try {
        await plain.query('SET ivfflat.iterative_scan = off');
        const plan = await plain.query(`EXPLAIN ${sql}`, [vectorLiteral(q), target]);
        expect(plan.rows.map((r) => r['QUERY PLAN']).join('\n')).toContain('idx_memories_embedding');
        const r = await plain.query(sql, [vectorLiteral(q), target]);
        expect(r.rows.length).toBeLessThan(25); // the failure iterative scans prevent
      } finally {
        await plain.end();
      }
      const c = await startClient(ivf.url, { hotSets: { maxVectorsPerSet: 10 } }); // too large to be hot
      t.track(c);
      const got = await c.findSimilarMemories({ personalityId: target, embedding: q, limit: 25, channelId: 'general' });
      expect(got).toHaveLength(25);
      expect(c.stats()).toMatchObject({ hotSearches: 0, pgvectorSearches: 1 });
      await c.close();
    } finally {
      await w.end();
      await ivf.drop();
    }
  });

  it('read-your-writes: a search after storeMemory resolves includes it; after deleteMemory it is gone', async () => {
    const pid = await insertPersonality(t.writer, 'ryw');
    await seed(pid, seededVectors(21, 200));
    const c = await client();
    const q = seededVectors(22, 1)[0]!;
    await warm(c, pid, q);
    const id = await c.storeMemory({ personalityId: pid, channelId: 'general', content: 'just now', embedding: Array.from(q), metadata: { k: 1 } });
    const [top] = await c.findSimilarMemories({ personalityId: pid, embedding: q, limit: 1 });
    expect(top).toMatchObject({ id, content: 'just now', channelId: 'general', metadata: { k: 1 } });
    expect(top!.similarity).toBeCloseTo(1, 6);

    expect(await c.deleteMemory(id)).toBe(true);
    const after = await c.findSimilarMemories({ personalityId: pid, embedding: q, limit: 5 });
    expect(after.map((m) => m.id)).not.toContain(id);
    expect(await c.deleteMemory(id)).toBe(false);
    // Once settled, the hot set itself has the write applied and serves again.
    await c.core.settled('memories', [pid]);
    const hot = await c.findSimilarMemories({ personalityId: pid, embedding: q, limit: 5 });
    expectSame(hot, await exact(pid, q, 5));
  });

  it('syncs, not just evicts: writes from another connection patch the hot set', async () => {
    const pid = await insertPersonality(t.writer, 'patch');
    await seed(pid, seededVectors(31, 300));
    const c = await client();
    const q = seededVectors(32, 1)[0]!;
    await warm(c, pid, q);
    const loadsBefore = c.core.stats().collections.memories!.loadedVectors;

    let patched = nextInvalidation(c, (i) => i.event.model === 'Memory');
    const ins = await t.writer.query<{ id: string }>(
      `INSERT INTO memories ("personalityId", "channelId", content, embedding) VALUES ($1, 'dm', 'from elsewhere', $2::vector) RETURNING id`,
      [pid, vectorLiteral(q)],
    );
    expect((await patched).action).toBe('patched');
    await c.core.settled('memories', [pid]);
    let hot = await c.findSimilarMemories({ personalityId: pid, embedding: q, limit: 3 });
    expect(hot[0]!.id).toBe(ins.rows[0]!.id);
    expectSame(hot, await exact(pid, q, 3));

    patched = nextInvalidation(c, (i) => i.event.op === 'UPDATE');
    await t.writer.query(`UPDATE memories SET content = 'edited' WHERE id = $1`, [ins.rows[0]!.id]);
    await patched;
    await c.core.settled('memories', [pid]);
    hot = await c.findSimilarMemories({ personalityId: pid, embedding: q, limit: 1 });
    expect(hot[0]!.content).toBe('edited');

    patched = nextInvalidation(c, (i) => i.event.op === 'DELETE');
    await t.writer.query(`DELETE FROM memories WHERE id = $1`, [ins.rows[0]!.id]);
    await patched;
    hot = await c.findSimilarMemories({ personalityId: pid, embedding: q, limit: 3 });
    expect(hot.map((h) => h.id)).not.toContain(ins.rows[0]!.id);
    await c.core.settled('memories', [pid]);
    expectSame(await c.findSimilarMemories({ personalityId: pid, embedding: q, limit: 3 }), await exact(pid, q, 3));
    expect(c.core.stats().collections.memories!.loadedVectors).toBe(loadsBefore); // patched in place, never reloaded
  });

  it('a bulk statement drops the affected sets; the next search reloads them', async () => {
    const pid = await insertPersonality(t.writer, 'bulk');
    await seed(pid, seededVectors(41, 3000));
    const c = await client();
    const q = seededVectors(42, 1)[0]!;
    await warm(c, pid, q);
    const ev = nextInvalidation(c, (i) => i.event.model === 'Memory');
    // 2,000 rows: more than one statement's notifications name (12 × ~160 keys).
    await t.writer.query(`DELETE FROM memories WHERE "personalityId" = $1 AND "channelId" <> 'dm'`, [pid]);
    const info = await ev;
    expect(info.event.scope).toBe('partitions');
    expect(info.action).toBe('evicted');
    expect(c.core.stats().collections.memories!.sets).toBe(0);
    await warm(c, pid, q);
    expectSame(await c.findSimilarMemories({ personalityId: pid, embedding: q, limit: 5 }), await exact(pid, q, 5));
  });

  it('a load racing a write: the set is published with the write applied, never the old snapshot', async () => {
    const pid = await insertPersonality(t.writer, 'load-race');
    await seed(pid, seededVectors(51, 100));
    const hold = gate();
    const read = gate();
    const c = await client({
      hooks: {
        beforeHotSetPublish: async () => {
          read.open();
          await hold.promise;
        },
      },
    });
    const q = seededVectors(52, 1)[0]!;
    await c.findSimilarMemories({ personalityId: pid, embedding: q }); // starts the load
    await read.promise; // the load has its (now old) snapshot
    const ev = nextInvalidation(c, (i) => i.event.model === 'Memory');
    const ins = await t.writer.query<{ id: string }>(
      `INSERT INTO memories ("personalityId", "channelId", content, embedding) VALUES ($1, 'dm', 'raced', $2::vector) RETURNING id`,
      [pid, vectorLiteral(q)],
    );
    await ev;
    hold.open();
    // Until the raced row is applied the set is not served; after, it includes it.
    const top = await c.findSimilarMemories({ personalityId: pid, embedding: q, limit: 1 });
    expect(top[0]!.id).toBe(ins.rows[0]!.id);
    await c.core.settled('memories', [pid]);
    expect(c.core.holds('memories', [pid], ins.rows[0]!.id)).toBe(true);
    const hot = await c.findSimilarMemories({ personalityId: pid, embedding: q, limit: 1 });
    expect(hot[0]!.id).toBe(ins.rows[0]!.id);
  });

  it('a personality under constant writes still gets cached', async () => {
    const pid = await insertPersonality(t.writer, 'busy');
    await seed(pid, seededVectors(61, 500));
    const c = await client();
    const q = seededVectors(62, 1)[0]!;
    let writing = true;
    let writes = 0;
    const writerLoop = (async () => {
      const vs = seededVectors(63, 400);
      while (writing && writes < vs.length) {
        await seed(pid, [vs[writes]!], 1000 + writes);
        writes++;
      }
    })();
    const loadedEvent = new Promise<number>((resolve) => c.core.once('loaded', (_c, _p, n) => resolve(n)));
    await c.findSimilarMemories({ personalityId: pid, embedding: q });
    const loaded = await loadedEvent;
    expect(loaded).toBeGreaterThanOrEqual(500);
    while (c.stats().hotSearches === 0 && writing) {
      await c.findSimilarMemories({ personalityId: pid, embedding: q });
      if (writes >= 399) break;
    }
    writing = false;
    await writerLoop;
    await c.sync(); // every write's notification has arrived...
    await c.core.settled('memories', [pid]); // ...and been applied
    expect(writes).toBeGreaterThan(0);
    expectSame(await c.findSimilarMemories({ personalityId: pid, embedding: q, limit: 5 }), await exact(pid, q, 5));
    expect(c.stats().hotSearches).toBeGreaterThan(0);
  });

  it('does not serve hot sets while the listener is down', async () => {
    const pid = await insertPersonality(t.writer, 'down');
    await seed(pid, seededVectors(71, 50));
    const c = await client({ listener: { retryMinMs: 5_000, retryMaxMs: 5_000 } });
    const q = seededVectors(72, 1)[0]!;
    await warm(c, pid, q);
    const down = new Promise((r) => c.once('down', r));
    await t.writer.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'memory-sync-listener' AND datname = current_database()`);
    await down;
    const before = c.stats().hotSearches;
    await c.findSimilarMemories({ personalityId: pid, embedding: q });
    expect(c.stats().hotSearches).toBe(before);
    expect(c.stats().hotSets).toBe(0);
  });
});

describe('hot-set robustness', () => {
  it('a connection reset in the middle of a COPY load is an error, not a crash', async () => {
    const pid = await insertPersonality(t.writer, 'copy-reset');
    await seed(pid, seededVectors(81, 300));
    const proxy = await new FreezableProxy('127.0.0.1', Number(new URL(t.db.url).port || 5432)).start();
    const pool = new pg.Pool({ connectionString: proxy.urlFor(t.db.url), max: 1 });
    pool.on('error', () => {});
    try {
      let rows = 0;
      const err = await streamPersonalityMemories(pool, pid, 1000, () => {
        if (++rows === 1) proxy.resetAll(); // mid-stream: later chunks never arrive
        return true;
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Error);
      expect(rows).toBeLessThan(300);
      // The broken connection was discarded: the pool works again.
      expect((await pool.query('SELECT 1 AS ok')).rows[0].ok).toBe(1);
    } finally {
      await pool.end();
      await proxy.close();
    }
  });

  it('a set larger than the whole byte budget is loaded once, not on every search', async () => {
    const pid = await insertPersonality(t.writer, 'over-budget');
    await seed(pid, seededVectors(82, 200)); // ~1.3 MB as a hot set
    let publishes = 0;
    const c = await client({ hotSets: { maxBytes: 512 * 1024 }, hooks: { beforeHotSetPublish: () => void publishes++ } });
    const q = seededVectors(83, 1)[0]!;
    for (let i = 0; i < 4; i++) {
      expect(await c.findSimilarMemories({ personalityId: pid, embedding: q })).toHaveLength(5);
      await c.core.settled('memories', [pid]);
    }
    expect(publishes).toBe(1);
    expect(c.stats()).toMatchObject({ hotSets: 0, hotSearches: 0, pgvectorSearches: 4 });
  });

  it('a hot set is not current while a refresh is outstanding', async () => {
    const pid = await insertPersonality(t.writer, 'current');
    await seed(pid, seededVectors(84, 20));
    const c = await client();
    const q = seededVectors(85, 1)[0]!;
    await warm(c, pid, q);
    const { rows } = await t.writer.query<{ id: string }>('SELECT id FROM memories WHERE "personalityId" = $1 LIMIT 1', [pid]);
    expect(c.core.isServable('memories', [pid])).toBe(true);
    c.core.markWritten('Memory', [{ id: rows[0]!.id, personalityId: pid }]);
    expect(c.core.isServable('memories', [pid])).toBe(false);
    await c.core.settled('memories', [pid]);
    expect(c.core.isServable('memories', [pid])).toBe(true);
  });
});

/** { a: { a: … } }, `depth` levels. */
function deep(depth: number): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  let node = root;
  for (let i = 1; i < depth; i++) node = (node.a = {}) as Record<string, unknown>;
  return root;
}

describe('input validation', () => {
  it('rejects bad input with a typed error before any database round trip', async () => {
    // Never started, and pointed at a port nothing listens on: any round trip would fail differently.
    const c = createMemorySync({ databaseUrl: 'postgresql://nobody@127.0.0.1:1/none', summaryIntervalMs: 0 });
    t.track(c);
    const pid = '6f9619ff-8b86-4011-b42d-00c04fc964ff';
    const ok = Array.from({ length: 1536 }, (_, i) => Math.cos(i));
    const cases: Array<[() => Promise<unknown>, RegExp]> = [
      [() => c.findSimilarMemories({ personalityId: pid, embedding: ok.slice(0, 3) }), /embedding: must have 1536 dimensions, got 3/],
      [() => c.findSimilarMemories({ personalityId: pid, embedding: ok.map((x, i) => (i === 9 ? NaN : x)) }), /embedding\[9\]/],
      [() => c.findSimilarMemories({ personalityId: 'nope', embedding: ok }), /personalityId: must be a UUID/],
      [() => c.findSimilarMemories({ personalityId: pid, embedding: ok, limit: 0 }), /limit/],
      [() => c.findSimilarMemories({ personalityId: pid, embedding: ok, minSimilarity: 2 }), /minSimilarity/],
      [() => c.storeMemory({ personalityId: pid, channelId: '', content: 'x', embedding: ok }), /channelId/],
      [() => c.storeMemory({ personalityId: pid, channelId: 'c', content: '', embedding: ok }), /content/],
      [() => c.storeMemory({ personalityId: pid, channelId: 'c', content: 'x', embedding: ok, metadata: [1] as never }), /metadata/],
      [() => c.deleteMemory('1'), /id: must be a UUID/],
      [() => c.storeMemory({ personalityId: pid, channelId: 'c', content: 'a\u0000b', embedding: ok }), /content: must not contain NUL/],
      [() => c.storeMemory({ personalityId: pid, channelId: 'c', content: 'x\ud800', embedding: ok }), /content: .*surrogate/],
      [() => c.findSimilarMemories({ personalityId: pid, channelId: 'c\u0000', embedding: ok }), /channelId: must not contain NUL/],
      [() => c.storeMemory({ personalityId: pid, channelId: 'c', content: 'x', embedding: ok, metadata: { k: 'v\u0000' } }), /metadata/],
      [() => c.storeMemory({ personalityId: pid, channelId: 'c', content: 'x', embedding: ok, metadata: deep(5000) }), /metadata: must nest at most 32/],
      [() => c.storeMemory({ personalityId: pid, channelId: 'c', content: 'x', embedding: ok, metadata: { n: 1n } as never }), /metadata: must be plain JSON/],
    ];
    for (const [call, message] of cases) {
      const err = await call().then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as Error).message).toMatch(message);
    }
  });

  it('storing for an unknown personality is a NotFoundError, and nothing is written', async () => {
    const c = await client();
    const ok = Array.from({ length: 1536 }, (_, i) => Math.cos(i));
    await expect(
      c.storeMemory({ personalityId: '6f9619ff-8b86-4011-b42d-00c04fc964ff', channelId: 'c', content: 'x', embedding: ok }),
    ).rejects.toBeInstanceOf(NotFoundError);
  });
});
