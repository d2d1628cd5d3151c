import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { ROOT, connect, createMigratedDatabase, type TestDb } from '../helpers/db.js';

const SQL_DIR = `${ROOT}sql`;
const sqlFiles = readdirSync(SQL_DIR).filter((f) => f.endsWith('.sql')).sort();

/** Definitions, not OIDs: what sql/ and the migrations must agree on. */
async function catalog(c: pg.Client) {
  const q = async (text: string) => (await c.query(text)).rows;
  return {
    functions: await q(`SELECT p.proname, pg_get_functiondef(p.oid) AS def FROM pg_proc p
      JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' AND p.prokind = 'f'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') ORDER BY 1, 2`),
    triggers: await q(`SELECT tgrelid::regclass::text AS tbl, tgname, tgenabled, pg_get_triggerdef(oid) AS def
      FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2`),
    indexes: await q(`SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2`),
    extensions: await q(`SELECT extname FROM pg_extension ORDER BY 1`),
  };
}

let db: TestDb;
let c: pg.Client;

beforeAll(async () => {
  db = await createMigratedDatabase();
  c = await connect(db.url);
});
afterAll(async () => {
  await c?.end();
  await db?.drop();
});

describe('sql/ is the one source of truth', () => {
  it('has the trigger function, 12 triggers and the vector index after migrating', async () => {
    const cat = await catalog(c);
    expect(cat.functions.map((f) => f.proname)).toContain('memory_sync_notify');
    expect(cat.triggers).toHaveLength(12);
    expect(cat.triggers.every((t) => t.tgenabled === 'A')).toBe(true); // fire under replication role too
    for (const t of ['personalities', 'llm_configs', 'memories']) {
      expect(cat.triggers.filter((r) => r.tbl === t).map((r) => r.tgname).sort()).toEqual([
        'memory_sync_delete',
        'memory_sync_insert',
        'memory_sync_truncate',
        'memory_sync_update',
      ]);
    }
    const idx = cat.indexes.find((i) => i.indexname === 'idx_memories_embedding');
    expect(idx?.indexdef).toMatch(/USING ivfflat \(embedding vector_cosine_ops\) WITH \(lists='?50'?\)/);
  });

  it('applying every sql/ file, twice, to a migrated database changes nothing', async () => {
    expect(sqlFiles.length).toBeGreaterThanOrEqual(3);
    const before = await catalog(c);
    for (let round = 0; round < 2; round++) {
      for (const f of sqlFiles) await c.query(readFileSync(`${SQL_DIR}/${f}`, 'utf8'));
      expect(await catalog(c)).toEqual(before);
    }
  });

  it('a changed sql/ file would be caught', async () => {
    const before = await catalog(c);
    const notify = readFileSync(`${SQL_DIR}/010_notify.sql`, 'utf8').replace('rows_per_chunk CONSTANT int := 90', 'rows_per_chunk CONSTANT int := 89');
    await c.query('BEGIN');
    try {
      await c.query(notify);
      expect(await catalog(c)).not.toEqual(before);
    } finally {
      await c.query('ROLLBACK');
    }
  });
});
