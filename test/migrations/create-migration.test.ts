import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkMigrations } from '../../src/migrations/check-migrations.js';
import { createMigration, migrationSlug } from '../../src/migrations/create-migration.js';
import { migrate } from '../../src/migrations/migrate.js';
import { ValidationError } from '../../src/contract/errors.js';
import { ADMIN_URL, ROOT, connect, createDatabase, createMigratedDatabase, type TestDb } from '../helpers/db.js';

const ADD_COLUMN = ['  isActive     Boolean              @default(true)', '  isActive     Boolean              @default(true)\n  nickname     String?'] as const;

const temps: string[] = [];

/** A copy of the package's prisma/ folder, as a project that owns its schema would have. */
function project(edit?: readonly [string, string]): { schemaPath: string; migrationsDir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'ms-create-'));
  temps.push(dir);
  cpSync(join(ROOT, 'prisma'), join(dir, 'prisma'), { recursive: true });
  const schemaPath = join(dir, 'prisma', 'schema.prisma');
  if (edit) {
    const before = readFileSync(schemaPath, 'utf8');
    const after = before.replace(edit[0], edit[1]);
    expect(after).not.toBe(before); // the edit took
    writeFileSync(schemaPath, after);
  }
  return { schemaPath, migrationsDir: join(dir, 'prisma', 'migrations') };
}

const folders = (dir: string) => readdirSync(dir).sort();

async function databasesNamed(names: string[]): Promise<string[]> {
  const c = await connect(ADMIN_URL);
  try {
    const r = await c.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datname = ANY($1)', [names]);
    return r.rows.map((row) => row.datname);
  } finally {
    await c.end();
  }
}

async function userObjects(url: string): Promise<number> {
  const c = await connect(url);
  try {
    const r = await c.query<{ n: number }>(`SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace)
      + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace)
      + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql') AS n`);
    return Number(r.rows[0]!.n);
  } finally {
    await c.end();
  }
}

let main: TestDb;
beforeAll(async () => {
  main = await createDatabase('ms_create');
});
afterAll(async () => {
  await main?.drop();
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

describe('createMigration (WASM engine, shadow database)', () => {
  it('writes the ALTER for a schema change, without the drop of the vector index', async () => {
    const p = project(ADD_COLUMN);
    const before = folders(p.migrationsDir);
    const lines: string[] = [];
    const result = await createMigration({ ...p, name: 'addNickname', databaseUrl: main.url, log: (l) => lines.push(l) });

    expect(result.name).toMatch(/^\d{14}_add_nickname$/);
    expect(folders(p.migrationsDir)).toEqual([...before, result.name].sort());
    const written = readFileSync(result.path!, 'utf8');
    expect(written).toBe(result.script);
    expect(written).toMatch(/ALTER TABLE "personalities" ADD COLUMN\s+"nickname" TEXT;/);
    expect(written).not.toMatch(/DROP\s+INDEX[^;]*idx_memories_embedding/i);
    expect(result.stripped.map((f) => f.statement)).toEqual(['DROP INDEX "idx_memories_embedding"']);
    expect(await checkMigrations([p.migrationsDir])).toEqual([]);

    // The temporary shadow database is gone.
    const shadows = lines.flatMap((l) => /^created shadow database (\S+)$/.exec(l)?.[1] ?? []);
    expect(shadows).toHaveLength(1);
    expect(await databasesNamed(shadows)).toEqual([]);

    // It applies on top of the others, and the index survives.
    const db = await createDatabase('ms_create_apply');
    try {
      const { applied } = await migrate({ databaseUrl: db.url, migrationsDir: p.migrationsDir, schemaPath: p.schemaPath });
      expect(applied.at(-1)).toBe(result.name);
      const c = await connect(db.url);
      try {
        const r = await c.query(`SELECT to_regclass('idx_memories_embedding') IS NOT NULL AS index,
          EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'personalities' AND column_name = 'nickname') AS col`);
        expect(r.rows[0]).toEqual({ index: true, col: true });
      } finally {
        await c.end();
      }
    } finally {
      await db.drop();
    }
  });

  it('writes nothing when the schema needs no change (the proposed index drop alone is not a change)', async () => {
    const p = project();
    const before = folders(p.migrationsDir);
    const result = await createMigration({ ...p, name: 'nothing', databaseUrl: main.url });
    expect(result).toMatchObject({ name: null, path: null, script: null });
    expect(result.stripped.map((f) => f.index)).toEqual(['idx_memories_embedding']);
    expect(folders(p.migrationsDir)).toEqual(before);
  });

  it('uses a given empty shadow database, and leaves it empty', async () => {
    const shadow = await createDatabase('ms_create_shadow');
    try {
      const p = project(ADD_COLUMN);
      const result = await createMigration({ ...p, name: 'with shadow', shadowDatabaseUrl: shadow.url });
      expect(result.name).toMatch(/_with_shadow$/);
      expect(result.script).toMatch(/"nickname" TEXT/);
      expect(await userObjects(shadow.url)).toBe(0);
    } finally {
      await shadow.drop();
    }
  });

  it('refuses a shadow database that is not empty, and leaves it alone', async () => {
    const full = await createMigratedDatabase('ms_create_full');
    try {
      const objects = await userObjects(full.url);
      const p = project(ADD_COLUMN);
      const err = await createMigration({ ...p, name: 'x', shadowDatabaseUrl: full.url }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as ValidationError).field).toBe('shadowDatabaseUrl');
      expect((err as Error).message).toMatch(/not empty \(extension vector/);
      expect(await userObjects(full.url)).toBe(objects);
    } finally {
      await full.drop();
    }
  });

  it('refuses a migrations folder inside node_modules and a name with no letter or digit', async () => {
    const p = project(ADD_COLUMN);
    await expect(
      createMigration({ ...p, migrationsDir: join(ROOT, 'node_modules', 'memory-sync', 'prisma', 'migrations'), name: 'x', databaseUrl: main.url }),
    ).rejects.toThrow(/migrationsDir: is inside node_modules/);
    await expect(createMigration({ ...p, name: ' -- ', databaseUrl: main.url })).rejects.toThrow(/name: must contain a letter or a digit/);
  });
});

describe('migrationSlug (as `prisma migrate dev --name` names folders)', () => {
  it.each([
    ['addNickname', 'add_nickname'],
    ['Add user e-mail!', 'add_user_e_mail'],
    ['HTTPServer v2', 'http_server_v2'],
    ['café  crème', 'cafe_creme'],
    ['__x__', 'x'],
  ])('%s -> %s', (input, slug) => {
    expect(migrationSlug(input)).toBe(slug);
  });
});
