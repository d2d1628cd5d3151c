import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import pino from 'pino';
import type { Logger } from 'pino';
import type { Resolved } from '../../src/schema/catalog.js';
import { guardVectorIndexes } from '../../src/sidecar/index-guard.js';
import { inspectIndex } from '../../src/store/vector-index.js';
import { binding } from '../../src/store/builtin.js';
import { connect, createDatabase, createMigratedDatabase, insertPersonality, seededVectors, vectorLiteral, type TestDb } from '../helpers/db.js';

let db: TestDb;
let c: pg.Client;

// The built-in declaration's one collection, as the sidecar resolves it.
const resolved = { collections: new Map([['memories', { dimension: 1536, untyped: false, indexed: true }]]) } as unknown as Resolved;
const guardVectorIndex = (db: pg.ClientBase, logger: Logger) => guardVectorIndexes(db, binding, resolved, logger);
const inspectVectorIndex = async (db: pg.ClientBase) => (await inspectIndex(db, binding, binding.collections.get('memories')!)).state;

beforeAll(async () => {
  db = await createMigratedDatabase();
  c = await connect(db.url);
  const pid = await insertPersonality(c, 'guard');
  for (const v of seededVectors(3, 60)) {
    await c.query(`INSERT INTO memories ("personalityId", "channelId", content, embedding) VALUES ($1, 'g', 'x', $2::vector)`, [pid, vectorLiteral(v)]);
  }
});
afterAll(async () => {
  await c?.end();
  await db?.drop();
});

function recordingLogger() {
  const warnings: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      warnings.push((JSON.parse(String(chunk)) as { msg: string }).msg);
      done();
    },
  });
  return { warnings, logger: pino({ level: 'warn' }, stream) };
}

async function definition(): Promise<string | undefined> {
  const r = await c.query<{ def: string }>(`SELECT pg_get_indexdef(to_regclass('idx_memories_embedding')) AS def`);
  return r.rows[0]?.def ?? undefined;
}

describe('vector index guard', () => {
  it('leaves a valid index alone', async () => {
    const { warnings, logger } = recordingLogger();
    const before = await definition();
    expect(await guardVectorIndex(c, logger)).toBe('ok');
    expect(await definition()).toBe(before);
    expect(warnings).toEqual([]);
  });

  it('recreates a dropped index, valid, with ivfflat cosine and lists = 50, and warns', async () => {
    const original = await definition();
    await c.query('DROP INDEX idx_memories_embedding');
    expect(await inspectVectorIndex(c)).toBe('missing');
    const { warnings, logger } = recordingLogger();
    expect(await guardVectorIndex(c, logger)).toBe('recreated');
    expect(await inspectVectorIndex(c)).toBe('valid');
    expect(await definition()).toBe(original);
    expect(await definition()).toMatch(/USING ivfflat \(embedding vector_cosine_ops\) WITH \(lists='?50'?\)/);
    expect(warnings).toEqual([expect.stringMatching(/missing/), 'vector index recreated']);
  });

  it('drops an invalid index (a failed CONCURRENTLY build) and builds it again', async () => {
    // What a cancelled CREATE INDEX CONCURRENTLY leaves behind.
    await c.query(`UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'idx_memories_embedding'::regclass`);
    const oid = (await c.query(`SELECT 'idx_memories_embedding'::regclass::oid AS oid`)).rows[0].oid;
    expect(await inspectVectorIndex(c)).toBe('invalid');
    const { warnings, logger } = recordingLogger();
    expect(await guardVectorIndex(c, logger)).toBe('recreated');
    expect(await inspectVectorIndex(c)).toBe('valid');
    expect((await c.query(`SELECT 'idx_memories_embedding'::regclass::oid AS oid`)).rows[0].oid).not.toBe(oid);
    expect(warnings).toEqual([expect.stringMatching(/invalid/), 'vector index recreated']);
  });

  it('does not drop an invalid index while an index build on memories is in progress', async () => {
    const writerTx = await connect(db.url);
    const builder = await connect(db.url);
    try {
      // An open writer makes a CONCURRENTLY build wait in its first phase: a build in progress.
      await writerTx.query('BEGIN; LOCK memories IN ROW EXCLUSIVE MODE');
      const building = builder.query('CREATE INDEX CONCURRENTLY idx_guard_test ON memories ("channelId")');
      // No event says the build has registered its progress: poll, bounded.
      for (let i = 0; i < 300 && !(await c.query('SELECT 1 FROM pg_stat_progress_create_index WHERE datname = current_database()')).rowCount; i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      await c.query(`UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'idx_memories_embedding'::regclass`);
      expect(await inspectVectorIndex(c)).toBe('building');
      const { warnings, logger } = recordingLogger();
      expect(await guardVectorIndex(c, logger)).toBe('skipped');
      expect(warnings).toEqual([expect.stringMatching(/in progress/)]);
      expect(await definition()).toMatch(/ivfflat/);
      await writerTx.query('ROLLBACK');
      await building;
    } finally {
      await writerTx.end();
      await builder.end();
    }
    await c.query('DROP INDEX idx_guard_test');
    expect(await inspectVectorIndex(c)).toBe('invalid');
    expect(await guardVectorIndex(c, recordingLogger().logger)).toBe('recreated');
    expect(await inspectVectorIndex(c)).toBe('valid');
  });

  it('skips a database that has no memories table', async () => {
    const empty = await createDatabase();
    const e = await connect(empty.url);
    try {
      expect(await inspectVectorIndex(e)).toBe('no-table');
      expect(await guardVectorIndex(e, recordingLogger().logger)).toBe('skipped');
    } finally {
      await e.end();
      await empty.drop();
    }
  });
});
