import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemorySync } from '../../src/client/memory-sync.js';
import type { CoreHooks } from '../../src/cache/core.js';
import type { Queryable } from '../../src/backend/queryable.js';
import { connect, createMigratedDatabase, seededVectors, vectorLiteral, type TestDb } from '../helpers/db.js';
import { gate, nextInvalidation } from '../helpers/client.js';

// The engine's contract, run against both backends: a PostgreSQL server
// (LISTEN source) and the embedded PGlite (in-process listen source).

interface Backend {
  name: string;
  /** A started client; `hooks` are the core's test seams. */
  client(hooks?: CoreHooks): Promise<MemorySync>;
  /** Writes as another writer would (psql, a script, the bot's own Prisma). */
  writer(c: MemorySync): Queryable;
  teardown(): Promise<void>;
}

const silent = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

function postgres(): Backend {
  let db: TestDb;
  let pgWriter: Awaited<ReturnType<typeof connect>>;
  const clients: MemorySync[] = [];
  return {
    name: 'postgres',
    async client(hooks) {
      db ??= await createMigratedDatabase();
      pgWriter ??= await connect(db.url);
      const c = new MemorySync({ databaseUrl: db.url, logger: silent, summaryIntervalMs: 0 }, hooks);
      clients.push(c);
      await c.start();
      return c;
    },
    writer: () => pgWriter,
    async teardown() {
      await Promise.all(clients.map((c) => c.close()));
      await pgWriter?.end();
      await db?.drop();
    },
  };
}

function embedded(): Backend {
  const clients: MemorySync[] = [];
  return {
    name: 'embedded',
    async client(hooks) {
      const c = new MemorySync({ embedded: { inMemory: true }, logger: silent, summaryIntervalMs: 0 }, hooks);
      clients.push(c);
      await c.start();
      return c;
    },
    // Same process, same database: writes that bypass the client still fire the triggers.
    writer: (c) => c.database,
    async teardown() {
      await Promise.all(clients.map((c) => c.close()));
    },
  };
}

async function personality(w: Queryable, name: string): Promise<string> {
  const r = await w.query<{ id: string }>(
    `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, $1, 'p', now()) RETURNING id`,
    [name],
  );
  return r.rows[0]!.id;
}

async function seed(w: Queryable, pid: string, vectors: Float32Array[]): Promise<void> {
  for (const [i, v] of vectors.entries()) {
    await w.query(`INSERT INTO memories ("personalityId", "channelId", content, embedding) VALUES ($1, $2, $3, $4::vector)`, [
      pid,
      i % 2 ? 'a' : 'b',
      `m${i}`,
      vectorLiteral(v),
    ]);
  }
}

describe.each([postgres, embedded])('engine contract (%o)', (make) => {
  const b = make();
  afterAll(() => b.teardown());
  let c: MemorySync;
  let w: Queryable;
  beforeAll(async () => {
    c = await b.client();
    w = b.writer(c);
  }, 60_000);

  it(`${b.name}: a lookup after another writer's commit is fresh`, async () => {
    const id = await personality(w, `fresh-${b.name}`);
    await c.sync();
    expect((await c.getPersonality(id))?.displayName).toBe(`fresh-${b.name}`);
    expect(c.peekPersonality(id)).toBeDefined();
    const evicted = nextInvalidation(c, (i) => i.event.model === 'Personality' && i.event.op === 'UPDATE');
    await w.query(`UPDATE personalities SET "displayName" = 'changed' WHERE id = $1`, [id]);
    await evicted;
    expect((await c.getPersonality(id))?.displayName).toBe('changed');
  });

  it(`${b.name}: a fill racing an invalidation never stores the old value`, async () => {
    const readOld = gate();
    const hold = gate();
    let calls = 0;
    const racer = await b.client({
      afterEntityRead: async () => {
        if (++calls === 1) {
          readOld.open();
          await hold.promise;
        }
      },
    });
    const rw = b.writer(racer);
    const id = await personality(rw, `race-${b.name}`);
    await racer.sync();
    const pending = racer.getPersonality(id);
    await readOld.promise;
    const evicted = nextInvalidation(racer, (i) => i.event.model === 'Personality' && i.event.op === 'UPDATE');
    await rw.query(`UPDATE personalities SET "displayName" = 'new' WHERE id = $1`, [id]);
    await evicted;
    hold.open();
    await pending;
    expect((await racer.getPersonality(id))?.displayName).toBe('new');
    expect(racer.stats().abortedFills).toBeGreaterThan(0);
  });

  it(`${b.name}: the writer reads its own writes (personality and memory)`, async () => {
    const pid = '6f9619ff-8b86-4011-b42d-00c04fc96400';
    const first = await c.upsertPersonality(pid, { name: `ryw-${b.name}`, displayName: 'one', systemPrompt: 's', llmConfig: { model: 'm' } });
    expect(first).toMatchObject({ created: true, personality: { displayName: 'one', llmConfig: { model: 'm', temperature: 0.7, maxTokens: 1024 } } });
    await c.getPersonality(pid); // cached
    const second = await c.upsertPersonality(pid, { name: `ryw-${b.name}`, displayName: 'two', systemPrompt: 's' });
    expect(second.created).toBe(false);
    expect((await c.getPersonality(pid))?.displayName).toBe('two'); // no sync(): the write itself evicted

    const v = seededVectors(5, 3);
    await seed(w, pid, v.slice(0, 2));
    await c.sync();
    await c.findSimilarMemories({ personalityId: pid, embedding: v[2]! });
    await c.core.settled('memories', [pid]);
    const id = await c.storeMemory({ personalityId: pid, channelId: 'a', content: 'mine', embedding: v[2]! });
    const [top] = await c.findSimilarMemories({ personalityId: pid, embedding: v[2]!, limit: 1 });
    expect(top?.id).toBe(id);
    expect(await c.deleteMemory(id)).toBe(true);
    expect((await c.findSimilarMemories({ personalityId: pid, embedding: v[2]!, limit: 3 })).map((m) => m.id)).not.toContain(id);
    expect(await c.deletePersonality(pid)).toBe(true);
    expect(await c.getPersonality(pid)).toBeNull();
  });

  it(`${b.name}: a name another personality has is a ConflictError on name`, async () => {
    await personality(w, `taken-${b.name}`);
    await expect(
      c.upsertPersonality('6f9619ff-8b86-4011-b42d-00c04fc96401', { name: `taken-${b.name}`, displayName: 'x', systemPrompt: 's' }),
    ).rejects.toMatchObject({ code: 'conflict', field: 'name' });
  });

  it(`${b.name}: hot results equal the database's exact results`, async () => {
    const pid = await personality(w, `exact-${b.name}`);
    await seed(w, pid, seededVectors(21, 300));
    await c.sync();
    const queries = seededVectors(22, 4);
    await c.findSimilarMemories({ personalityId: pid, embedding: queries[0]! });
    await c.core.settled('memories', [pid]);
    expect(c.core.isServable('memories', [pid])).toBe(true);
    for (const [i, q] of queries.entries()) {
      const channelId = i % 2 ? 'a' : undefined;
      const before = c.stats().hotSearches;
      const hot = await c.findSimilarMemories({ personalityId: pid, embedding: q, limit: 10, channelId });
      expect(c.stats().hotSearches).toBe(before + 1);
      // Exact reference: a sequential scan, no index.
      const ref = await w.query<{ id: string; d: number }>(
        `SELECT id, embedding <=> $1::vector AS d FROM (SELECT * FROM memories WHERE "personalityId" = $2 ${channelId ? `AND "channelId" = '${channelId}'` : ''} OFFSET 0) m ORDER BY d, id LIMIT 10`,
        [vectorLiteral(q), pid],
      );
      expect(hot.map((h) => h.id)).toEqual(ref.rows.map((r) => r.id));
      hot.forEach((h, j) => expect(Math.abs(h.similarity - (1 - ref.rows[j]!.d))).toBeLessThan(1e-6));
    }
  });

  it(`${b.name}: another program's payloads are counted and ignored, memory-sync's unreadable ones flush, good ones still apply`, async () => {
    const before = c.stats();
    for (const p of ['not json', '{"type":"all"}', '[1]', '{"ms":2}']) await w.query(`SELECT pg_notify('memory_sync', $1)`, [p]);
    await c.sync();
    const after = c.stats();
    expect(after.foreignNotifications - before.foreignNotifications).toBe(3);
    expect(after.invalidNotifications - before.invalidNotifications).toBe(1);
    expect(after.flushes - before.flushes).toBe(1); // only memory-sync's own unreadable payload
    const id = await personality(w, `after-bad-${b.name}`);
    await c.sync(); // the INSERT's own event must not evict the fill below
    await c.getPersonality(id);
    const ev = nextInvalidation(c, (i) => i.event.model === 'Personality' && i.event.op === 'UPDATE');
    await w.query(`UPDATE personalities SET "displayName" = 'ok' WHERE id = $1`, [id]);
    expect((await ev).action).toBe('evicted');
    expect((await c.getPersonality(id))?.displayName).toBe('ok');
  });
});
