import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATA_DIR_LOCK_FILE, ensureEmbeddedImage, openEmbedded, PGLITE_VERSION } from '../../src/backend/embedded.js';
import { PermanentError } from '../../src/contract/errors.js';

// Issue 18: a new embedded database is unpacked from a data directory image
// (PGlite's initdb output, made once in a child process) instead of running
// initdb in the process that serves.
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
let work: string;
let image: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'memory-sync-image-'));
  image = await ensureEmbeddedImage(join(work, 'images', `pgdata-pglite-${PGLITE_VERSION}.tar.gz`));
}, 120_000);
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** The definitions a database is made of, and the migration records (without ids and times). */
async function catalog(q: { query<R>(text: string): Promise<{ rows: R[] }> }) {
  const rows = async (text: string) => (await q.query<Record<string, unknown>>(text)).rows;
  return {
    settings: await rows(`SELECT name, setting FROM pg_settings WHERE name IN ('server_encoding', 'lc_collate', 'lc_ctype', 'data_checksums', 'wal_segment_size', 'block_size') ORDER BY 1`),
    databases: await rows(`SELECT datname, datistemplate, datallowconn, pg_encoding_to_char(encoding) AS encoding FROM pg_database ORDER BY 1`),
    roles: await rows(`SELECT rolname, rolsuper FROM pg_roles ORDER BY 1`),
    extensions: await rows(`SELECT extname, extversion FROM pg_extension ORDER BY 1`),
    columns: await rows(
      `SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2`,
    ),
    indexes: await rows(`SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1`),
    triggers: await rows(`SELECT tgname, pg_get_triggerdef(oid) AS def FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1`),
    migrations: await rows(
      `SELECT migration_name, checksum, finished_at IS NOT NULL AS finished, logs, rolled_back_at, applied_steps_count FROM _prisma_migrations ORDER BY 1`,
    ),
  };
}

describe('the data directory image', () => {
  it('is made once, in a child process, under the given path; a second call reuses it', async () => {
    expect(existsSync(image)).toBe(true);
    expect(readdirSync(join(work, 'images'))).toEqual([`pgdata-pglite-${PGLITE_VERSION}.tar.gz`]); // no temporary file left
    const made = statSync(image).mtimeMs;
    expect(await ensureEmbeddedImage(image)).toBe(image);
    expect(statSync(image).mtimeMs).toBe(made);
  });

  it('a new data directory made from it is the database PGlite\'s own initdb makes, migrated the same way', async () => {
    const [fromImage, fromInitdb] = [join(work, 'from-image'), join(work, 'from-initdb')];
    const a = await openEmbedded({ dataDir: fromImage, logger, imagePath: image });
    const b = await openEmbedded({ dataDir: fromInitdb, logger, create: 'initdb' });
    try {
      expect(a.info).toMatchObject({ created: 'image', reopened: false });
      expect(b.info).toMatchObject({ created: 'initdb', reopened: false });
      expect(a.info.applied).toEqual(b.info.applied);
      expect(a.info.applied.length).toBeGreaterThan(0);
      expect(await catalog(a.queryable)).toEqual(await catalog(b.queryable));
      expect(existsSync(join(fromImage, 'PG_VERSION'))).toBe(true);
      expect(existsSync(join(fromImage, 'PG_VERSION.partial'))).toBe(false);
      // It takes writes and keeps them.
      await a.queryable.query(`INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ('img', 'I', 'p', now())`);
    } finally {
      await a.close();
      await b.close();
    }
    const again = await openEmbedded({ dataDir: fromImage, logger, imagePath: join(work, 'no-such-image.tar.gz') });
    try {
      expect(again.info).toMatchObject({ reopened: true, created: null, applied: [] });
      expect((await again.queryable.query('SELECT name FROM personalities')).rows).toEqual([{ name: 'img' }]);
    } finally {
      await again.close();
    }
    expect(existsSync(join(work, 'no-such-image.tar.gz'))).toBe(false); // a reopen never needs the image
  }, 120_000);

  it('an unpack cut short (no PG_VERSION yet) is redone on the next open', async () => {
    const dir = join(work, 'cut-short');
    mkdirSync(join(dir, 'base'), { recursive: true });
    writeFileSync(join(dir, 'PG_VERSION.partial'), '18\n');
    writeFileSync(join(dir, 'base', 'junk'), 'half a file');
    const db = await openEmbedded({ dataDir: dir, logger, imagePath: image });
    try {
      expect(db.info).toMatchObject({ created: 'image', reopened: false });
      expect((await db.queryable.query<{ n: number }>('SELECT count(*)::int AS n FROM personalities')).rows).toEqual([{ n: 0 }]);
    } finally {
      await db.close();
    }
  }, 60_000);

  it('a file that is not a data directory image is a PermanentError naming it, and the directory stays new', async () => {
    const bad = join(work, 'bad.tar.gz');
    writeFileSync(bad, 'not gzip');
    const dir = join(work, 'bad-image');
    const err = await openEmbedded({ dataDir: dir, logger, imagePath: bad }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PermanentError);
    expect((err as Error).message).toContain(dir);
    expect(existsSync(join(dir, 'PG_VERSION'))).toBe(false);
    expect(existsSync(join(dir, DATA_DIR_LOCK_FILE))).toBe(false);
  });
});

describe('a throwaway database (no dataDir)', () => {
  const scratchDirs = () => readdirSync(tmpdir()).filter((n) => n.startsWith('memory-sync-scratch-'));

  it('lives in a scratch directory that close() removes', async () => {
    const before = new Set(scratchDirs());
    const db = await openEmbedded({ logger, imagePath: image });
    const mine = scratchDirs().filter((n) => !before.has(n));
    expect(mine).toHaveLength(1);
    expect(db.info).toMatchObject({ dataDir: null, created: 'image' });
    expect(existsSync(join(tmpdir(), mine[0]!, 'PG_VERSION'))).toBe(true);
    await db.close();
    expect(existsSync(join(tmpdir(), mine[0]!))).toBe(false);
  }, 60_000);

  it("one left by a process that died is removed by the next open; a live process's is not", async () => {
    const deadPid = spawnSync(process.execPath, ['-e', '']).pid!;
    const dead = mkdtempSync(join(tmpdir(), 'memory-sync-scratch-'));
    writeFileSync(join(dead, DATA_DIR_LOCK_FILE), `${deadPid}\n`);
    const alive = mkdtempSync(join(tmpdir(), 'memory-sync-scratch-'));
    writeFileSync(join(alive, DATA_DIR_LOCK_FILE), `${process.ppid}\n`);
    try {
      const db = await openEmbedded({ logger, imagePath: image });
      await db.close();
      expect(existsSync(dead)).toBe(false);
      expect(existsSync(alive)).toBe(true);
    } finally {
      rmSync(dead, { recursive: true, force: true });
      rmSync(alive, { recursive: true, force: true });
    }
  }, 60_000);
});
