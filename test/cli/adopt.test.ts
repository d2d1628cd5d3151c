import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIGRATIONS_DIR, ROOT, connect, createDatabase, type TestDb } from '../helpers/db.js';

const BIN = join(ROOT, 'bin', 'memory-sync.js');
const INIT = readFileSync(join(MIGRATIONS_DIR, '20261124000000_init', 'migration.sql'), 'utf8');
// memory-sync's tables as a bot's own Prisma project made them, without triggers or vector index.
const TABLES = INIT.slice(0, INIT.indexOf('-- sql/010_notify.sql'));

function cli(databaseUrl: string, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: databaseUrl };
    delete env.SHADOW_DATABASE_URL;
    const child = spawn(process.execPath, [BIN, ...args], { env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function withTables(db: TestDb, sql: string): Promise<void> {
  const c = await connect(db.url);
  try {
    await c.query(sql);
    await c.query(`INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ('ada', 'Ada', 'You are Ada', now())`);
  } finally {
    await c.end();
  }
}

async function triggerCount(url: string): Promise<number> {
  const c = await connect(url);
  try {
    const r = await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname LIKE 'memory_sync_%'`);
    return r.rows[0]!.n;
  } finally {
    await c.end();
  }
}

let good: TestDb;
let bad: TestDb;
beforeAll(async () => {
  [good, bad] = await Promise.all([createDatabase('ms_cli_adopt'), createDatabase('ms_cli_adopt_bad')]);
  await Promise.all([
    withTables(good, TABLES + 'ALTER TABLE "personalities" ADD COLUMN "ownerId" TEXT;'),
    withTables(bad, TABLES.replace(`"embedding" vector(1536) NOT NULL`, `"embedding" vector(768) NOT NULL`)),
  ]);
});
afterAll(async () => {
  await Promise.all([good?.drop(), bad?.drop()]);
});

describe('memory-sync adopt (CLI)', () => {
  it('adopts a compatible database, then migrate has nothing to do', async () => {
    const r = await cli(good.url, 'adopt');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('idx_memories_embedding: created (CREATE INDEX CONCURRENTLY)');
    expect(r.stdout).toMatch(/recorded as applied: 20261124000000_init, /);
    expect(await triggerCount(good.url)).toBe(12);

    const m = await cli(good.url, 'migrate');
    expect(m.code).toBe(0);
    expect(m.stdout.trim()).toBe('no pending migrations');
  });

  it('names each problem of an incompatible database, exit 1, nothing installed', async () => {
    const r = await cli(bad.url, 'adopt');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('cannot be adopted as it is (nothing was changed)');
    expect(r.stderr).toContain('- column "memories"."embedding" is vector(768), memory-sync needs vector(1536)');
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(await triggerCount(bad.url)).toBe(0);
  });
});
