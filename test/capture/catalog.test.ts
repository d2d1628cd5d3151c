import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { MIGRATIONS_DIR, ROOT, connect, createMigratedDatabase, type TestDb } from '../helpers/db.js';
import { BUILTIN_CAPTURE_MIGRATION, builtinCaptureMigration } from '../../src/capture/builtin-migration.js';
import { assertCaptureInstalled, captureProblems, captureScript } from '../../src/capture/install.js';
import { FINGERPRINT_PREFIX, TRIGGER_NAMES, generateTriggers, triggerScript } from '../../src/capture/triggers.js';
import { NotMigratedError } from '../../src/contract/errors.js';
import type { Binding } from '../../src/schema/binding.js';
import { BUILTIN_DECLARATION } from '../../src/schema/builtin.js';
import { bindDeclaration } from '../../src/schema/load.js';

const binding = bindDeclaration({ declaration: BUILTIN_DECLARATION, source: 'built-in', baseDir: ROOT });
const migrationFile = `${MIGRATIONS_DIR}/${BUILTIN_CAPTURE_MIGRATION}/migration.sql`;
const TRIGGERS = Object.values(TRIGGER_NAMES).sort();

/** Definitions, not OIDs: what the migrations and the generator must agree on. */
async function catalog(c: pg.Client) {
  const q = async (text: string) => (await c.query(text)).rows;
  return {
    functions: await q(`SELECT p.proname, pg_get_functiondef(p.oid) AS def, obj_description(p.oid, 'pg_proc') AS comment FROM pg_proc p
      JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' AND p.prokind = 'f'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') ORDER BY 1, 2`),
    triggers: await q(`SELECT tgrelid::regclass::text AS tbl, tgname, tgenabled, pg_get_triggerdef(oid) AS def
      FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2`),
    indexes: await q(`SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2`),
    extensions: await q(`SELECT extname FROM pg_extension ORDER BY 1`),
  };
}

/** The rejection of assertCaptureInstalled, or null when it passes. */
async function captureError(c: pg.Client, b: Binding): Promise<unknown> {
  return assertCaptureInstalled(c, b).then(
    () => null,
    (e: unknown) => e,
  );
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

describe('the generated capture is the one source of truth', () => {
  it('the migration file is the generator output for the built-in declaration', () => {
    const file = readFileSync(migrationFile, 'utf8');
    expect(file).toBe(builtinCaptureMigration(binding));
    expect(file).toContain(triggerScript(binding));
    // One channel, memory-sync's; 0.1's function goes.
    const channels = [...file.matchAll(/pg_notify\('([^']*)'/g)].map((m) => m[1]);
    expect(channels.length).toBeGreaterThan(0);
    expect(new Set(channels)).toEqual(new Set(['memory_sync']));
    expect(file).toMatch(/^DROP FUNCTION IF EXISTS memory_sync_notify\(\);$/m);
  });

  it('watches the built-in models: Personality, LlmConfig, Memory', () => {
    expect(generateTriggers(binding).map((t) => [t.model, t.table]).sort()).toEqual([
      ['LlmConfig', '"llm_configs"'],
      ['Memory', '"memories"'],
      ['Personality', '"personalities"'],
    ]);
  });

  it('after migrating: each watched table has the 4 triggers, ENABLE ALWAYS, on its generated function with the fingerprint', async () => {
    const cat = await catalog(c);
    expect(cat.functions.map((f) => f.proname)).not.toContain('memory_sync_notify');
    expect(cat.triggers).toHaveLength(12);
    expect(cat.triggers.every((t) => t.tgenabled === 'A')).toBe(true); // fire under replication role too
    for (const t of generateTriggers(binding)) {
      const { rows } = await c.query<{ name: string; enabled: string; function: string; comment: string | null; def: string }>(
        `SELECT t.tgname AS name, t.tgenabled::text AS enabled, p.proname AS function, obj_description(p.oid, 'pg_proc') AS comment,
                pg_get_functiondef(p.oid) AS def
           FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
          WHERE t.tgrelid = $1::regclass AND NOT t.tgisinternal ORDER BY 1`,
        [t.table],
      );
      expect(rows.map((r) => r.name), t.table).toEqual(TRIGGERS);
      for (const r of rows) {
        expect(r, `${t.table} ${r.name}`).toMatchObject({ enabled: 'A', function: t.functionName, comment: `${FINGERPRINT_PREFIX}${t.fingerprint}` });
        expect(r.def).toContain(`"model":"${t.model}"`);
        expect(r.def).toContain(`pg_notify('memory_sync'`);
      }
      expect(t.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    }
    // Three functions, three fingerprints.
    expect(new Set(generateTriggers(binding).map((t) => t.fingerprint)).size).toBe(3);
    expect(await captureProblems(c, binding)).toEqual([]);
    await expect(assertCaptureInstalled(c, binding)).resolves.toBeUndefined();
    const idx = cat.indexes.find((i) => i.indexname === 'idx_memories_embedding');
    expect(idx?.indexdef).toMatch(/USING ivfflat \(embedding vector_cosine_ops\) WITH \(lists='?50'?\)/);
  });

  it('applying the generated script, twice, to a migrated database changes nothing', async () => {
    const before = await catalog(c);
    // Nothing stale to drop: the install script is the generated one.
    expect(await captureScript(c, binding)).toBe(triggerScript(binding));
    for (let round = 0; round < 2; round++) {
      await c.query(triggerScript(binding));
      expect(await catalog(c)).toEqual(before);
    }
    await expect(assertCaptureInstalled(c, binding)).resolves.toBeUndefined();
  });

  it('a changed generator output (another channel) would be caught, naming every table', async () => {
    const other: Binding = { ...binding, channel: 'memory_sync_other' };
    const changed = generateTriggers(other);
    expect(changed.map((t) => t.fingerprint)).not.toEqual(generateTriggers(binding).map((t) => t.fingerprint));

    // The installed triggers are not the changed declaration's.
    let err = await captureError(c, other);
    expect(err).toBeInstanceOf(NotMigratedError);
    expect((err as NotMigratedError).message).toMatch(/^change capture is not installed for this declaration \(built-in\)/);
    for (const t of ['"llm_configs"', '"memories"', '"personalities"']) {
      expect((err as Error).message).toContain(`${t}: the installed triggers are another declaration's`);
    }
    expect((err as Error).message).toMatch(/run `memory-sync adopt`/);

    // Installing the changed output: the catalog differs and the built-in check fails, until rolled back.
    const before = await catalog(c);
    await c.query('BEGIN');
    try {
      await c.query(triggerScript(other));
      expect(await catalog(c)).not.toEqual(before);
      await expect(assertCaptureInstalled(c, other)).resolves.toBeUndefined();
      err = await captureError(c, binding);
      expect(err).toBeInstanceOf(NotMigratedError);
      expect((err as Error).message).toContain(`"memories": the installed triggers are another declaration's`);
    } finally {
      await c.query('ROLLBACK');
    }
    expect(await catalog(c)).toEqual(before);
  });

  it('a trigger function edited by hand (its fingerprint comment kept) is caught', async () => {
    const memories = generateTriggers(binding).find((t) => t.model === 'Memory')!;
    const { rows } = await c.query<{ def: string; comment: string }>(
      `SELECT pg_get_functiondef(p.oid) AS def, obj_description(p.oid, 'pg_proc') AS comment FROM pg_proc p WHERE proname = $1`,
      [memories.functionName],
    );
    expect(rows[0]!.comment).toContain(memories.fingerprint);
    await c.query('BEGIN');
    try {
      // A "quick fix" that stops sending deletes, leaving the comment alone.
      await c.query(rows[0]!.def.replace("IF TG_OP = 'DELETE' THEN", "IF TG_OP = 'DELETE' AND false THEN"));
      expect(await captureProblems(c, binding)).toEqual([`"memories": the trigger function ${memories.functionName} was edited by hand (its body is not the generated one)`]);
    } finally {
      await c.query('ROLLBACK');
    }
    expect(await captureProblems(c, binding)).toEqual([]);
  });

  it('a missing, disabled or origin-only trigger is caught, naming the table and the trigger', async () => {
    await c.query('BEGIN');
    try {
      await c.query('DROP TRIGGER memory_sync_delete ON llm_configs');
      await c.query('ALTER TABLE memories DISABLE TRIGGER memory_sync_update');
      await c.query('ALTER TABLE personalities ENABLE TRIGGER memory_sync_insert'); // origin only: silent under replica
      const problems = await captureProblems(c, binding);
      expect(problems).toEqual(
        expect.arrayContaining([
          '"llm_configs": trigger memory_sync_delete missing',
          '"memories": memory_sync_update not enabled ALWAYS',
          '"personalities": memory_sync_insert not enabled ALWAYS',
        ]),
      );
      expect(problems).toHaveLength(3);
      const err = await captureError(c, binding);
      expect(err).toBeInstanceOf(NotMigratedError);
      expect((err as NotMigratedError).code).toBe('not_migrated');
      for (const p of problems) expect((err as Error).message).toContain(`  - ${p}`);
    } finally {
      await c.query('ROLLBACK');
    }
    expect(await captureProblems(c, binding)).toEqual([]);
  });

  it('a migrated database without capture (0.1 triggers, or none) is refused', async () => {
    await c.query('BEGIN');
    try {
      for (const t of generateTriggers(binding)) await c.query(`DROP FUNCTION ${t.functionName}() CASCADE`);
      const err = await captureError(c, binding);
      expect(err).toBeInstanceOf(NotMigratedError);
      expect((err as Error).message).toMatch(/"memories": triggers memory_sync_insert, memory_sync_update, memory_sync_delete, memory_sync_truncate missing/);
    } finally {
      await c.query('ROLLBACK');
    }
  });
});
