import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, createDatabase, type TestDb } from '../helpers/db.js';

const BIN = join(ROOT, 'bin', 'memory-sync.js');

const temps: string[] = [];

/** A project owning a copy of the schema and migrations, in its own prisma/ folder. */
function project(addColumn: boolean): string {
  const dir = mkdtempSync(join(tmpdir(), 'ms-cli-create-'));
  temps.push(dir);
  cpSync(join(ROOT, 'prisma'), join(dir, 'prisma'), { recursive: true });
  if (addColumn) {
    const file = join(dir, 'prisma', 'schema.prisma');
    const before = readFileSync(file, 'utf8');
    const after = before.replace('  channelId     String\n  content       String\n', '  channelId     String\n  content       String\n  pinned        Boolean                     @default(false)\n');
    expect(after).not.toBe(before);
    writeFileSync(file, after);
  }
  return dir;
}

function cli(cwd: string, env: Record<string, string | undefined>, ...args: string[]) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const childEnv = { ...process.env, ...env };
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete childEnv[k];
    const child = spawn(process.execPath, [BIN, ...args], { cwd, env: childEnv });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

let db: TestDb;
beforeAll(async () => {
  db = await createDatabase('ms_cli_create');
});
afterAll(async () => {
  await db?.drop();
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

describe('memory-sync migration create (CLI)', () => {
  it("writes the next migration into the project's prisma/migrations, printing its path and what it left out", async () => {
    const dir = project(true);
    const r = await cli(dir, { DATABASE_URL: db.url, SHADOW_DATABASE_URL: undefined }, 'migration', 'create', '--name', 'pin memories');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('left out: DROP INDEX "idx_memories_embedding"');
    const path = /^created (prisma\/migrations\/\d{14}_pin_memories\/migration\.sql)$/m.exec(r.stdout)?.[1];
    expect(path).toBeDefined();
    const sql = readFileSync(join(dir, path!), 'utf8');
    expect(sql).toMatch(/ALTER TABLE "memories" ADD COLUMN\s+"pinned" BOOLEAN NOT NULL DEFAULT false;/);
    expect(sql).not.toMatch(/DROP\s+INDEX[^;]*idx_memories_embedding/i);

    const check = await cli(dir, {}, 'check-migrations', 'prisma/migrations');
    expect(check.code).toBe(0);
  });

  it('writes nothing when the schema is unchanged', async () => {
    const dir = project(false);
    const before = readdirSync(join(dir, 'prisma', 'migrations'));
    const r = await cli(dir, { DATABASE_URL: db.url, SHADOW_DATABASE_URL: undefined }, 'migration', 'create', '--name', 'nothing');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('no schema change: nothing written');
    expect(readdirSync(join(dir, 'prisma', 'migrations'))).toEqual(before);
  });

  it('without DATABASE_URL or a shadow database: says so, exit 2', async () => {
    const dir = project(true);
    const r = await cli(dir, { DATABASE_URL: undefined, SHADOW_DATABASE_URL: undefined }, 'migration', 'create', '--name', 'x');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/DATABASE_URL: is required .* or pass --shadow-database-url/);
    expect(existsSync(join(dir, 'prisma', 'migrations', 'migration_lock.toml'))).toBe(true);
    expect(readdirSync(join(dir, 'prisma', 'migrations')).filter((n) => n.endsWith('_x'))).toEqual([]);
  });
});
