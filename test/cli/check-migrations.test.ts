import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/db.js';

const BIN = join(ROOT, 'bin', 'memory-sync.js');
const BAD = 'ALTER TABLE "memories" ADD COLUMN "x" TEXT;\nDROP INDEX "idx_memories_embedding";\n';

describe('memory-sync check-migrations (CLI)', () => {
  it('exits 0 on the shipped migrations', () => {
    const r = spawnSync(process.execPath, [BIN, 'check-migrations'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('migrations ok');
  });

  it('exits non-zero naming file and line for a planted DROP INDEX', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ms-cli-'));
    mkdirSync(join(dir, '20270101_drift'));
    writeFileSync(join(dir, '20270101_drift', 'migration.sql'), BAD);
    const r = spawnSync(process.execPath, [BIN, 'check-migrations', dir], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/20270101_drift\/migration\.sql:2: drops protected index "idx_memories_embedding"/);
  });

  it("protects the declaration's vector indexes too, with no --protect", () => {
    const dir = mkdtempSync(join(tmpdir(), 'ms-cli-'));
    mkdirSync(join(dir, '20270101_drift'));
    writeFileSync(join(dir, '20270101_drift', 'migration.sql'), 'DROP INDEX "memory_rows_embedding_cosine";\n');
    const config = join(ROOT, 'test', 'fixtures', 'bot', 'memory-sync.config.json');
    const r = spawnSync(process.execPath, [BIN, 'check-migrations', dir, '--config', config], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/migration\.sql:1: drops protected index "memory_rows_embedding_cosine"/);
    // Without the declaration, that name is nobody's.
    expect(spawnSync(process.execPath, [BIN, 'check-migrations', dir], { encoding: 'utf8' }).status).toBe(0);
  });

  it('the pre-commit hook blocks a commit that stages such a migration', () => {
    const repo = mkdtempSync(join(tmpdir(), 'ms-hook-'));
    const git = (...args: string[]) => execFileSync('git', args, { cwd: repo, encoding: 'utf8', stdio: 'pipe' });
    git('init', '-q');
    git('config', 'user.email', 't@example.com');
    git('config', 'user.name', 't');
    // The hook runs the package's CLI from the repository it is installed in.
    cpSync(join(ROOT, 'bin'), join(repo, 'bin'), { recursive: true });
    cpSync(join(ROOT, 'dist'), join(repo, 'dist'), { recursive: true });
    cpSync(join(ROOT, 'package.json'), join(repo, 'package.json'));
    symlinkSync(join(ROOT, 'node_modules'), join(repo, 'node_modules'));
    cpSync(join(ROOT, 'hooks', 'pre-commit'), join(repo, '.git', 'hooks', 'pre-commit'));
    mkdirSync(join(repo, 'prisma', 'migrations', '20270101_drift'), { recursive: true });
    writeFileSync(join(repo, 'prisma', 'migrations', '20270101_drift', 'migration.sql'), BAD);
    git('add', 'prisma');
    const blocked = spawnSync('git', ['commit', '-q', '-m', 'drift'], { cwd: repo, encoding: 'utf8' });
    expect(blocked.status).not.toBe(0);
    expect(blocked.stderr).toMatch(/prisma\/migrations\/20270101_drift\/migration\.sql:2/);

    writeFileSync(join(repo, 'prisma', 'migrations', '20270101_drift', 'migration.sql'), 'ALTER TABLE "memories" ADD COLUMN "x" TEXT;\n');
    git('add', 'prisma');
    const ok = spawnSync('git', ['commit', '-q', '-m', 'fine'], { cwd: repo, encoding: 'utf8' });
    expect(ok.status).toBe(0);
  });
});
