import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkMigrations, findUnsafeDrops, formatFinding } from '../../src/migrations/check-migrations.js';
import { MIGRATIONS_DIR } from '../helpers/db.js';

describe('check-migrations', () => {
  it('passes the shipped migrations', async () => {
    expect(await checkMigrations([MIGRATIONS_DIR])).toEqual([]);
  });

  it('catches a planted DROP INDEX and names file and line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ms-check-'));
    mkdirSync(join(dir, '20270101000000_drift'));
    const file = join(dir, '20270101000000_drift', 'migration.sql');
    writeFileSync(file, '-- AlterTable\nALTER TABLE "memories" ADD COLUMN "x" TEXT;\n\n-- DropIndex\nDROP INDEX "idx_memories_embedding";\n');
    const findings = await checkMigrations([dir]);
    expect(findings).toHaveLength(1);
    expect(findings[0]).toMatchObject({ line: 5, index: 'idx_memories_embedding' });
    expect(formatFinding(findings[0]!)).toMatch(/20270101000000_drift\/migration\.sql:5: drops protected index "idx_memories_embedding"/);
  });

  it.each([
    ['schema-qualified, concurrently, if exists', 'DROP INDEX CONCURRENTLY IF EXISTS public.idx_memories_embedding;', 1],
    ['in a list', 'DROP INDEX "a_idx", "idx_memories_embedding" CASCADE;', 1],
    ['lower/upper case', 'drop index IDX_MEMORIES_EMBEDDING;', 1],
    ['commented out', '-- DROP INDEX "idx_memories_embedding";\n/* DROP INDEX idx_memories_embedding; */', 0],
    ['in a string', `SELECT 'DROP INDEX idx_memories_embedding;';`, 0],
    ['dropped then recreated', 'DROP INDEX idx_memories_embedding;\nCREATE INDEX idx_memories_embedding ON memories USING ivfflat (embedding vector_cosine_ops) WITH (lists = 50);', 0],
    ['recreated then dropped', 'CREATE INDEX IF NOT EXISTS idx_memories_embedding ON memories (id);\nDROP INDEX idx_memories_embedding;', 1],
    ['another index', 'DROP INDEX "memories_personalityId_channelId_idx";', 0],
  ])('%s', (_name, sql, expected) => {
    expect(findUnsafeDrops(sql, 'm.sql')).toHaveLength(expected);
  });

  it('honours an extended protected list', () => {
    expect(findUnsafeDrops('DROP INDEX my_hnsw;', 'm.sql', ['idx_memories_embedding', 'my_hnsw'])).toHaveLength(1);
  });
});
