import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, createMigratedDatabase, insertPersonality, ROOT, seededVectors, vectorLiteral, type TestDb } from '../helpers/db.js';

// Issue 12, defect 4: the COPY's query_timeout timer outlived the stream, so a
// process that had loaded a hot set lived on for query_timeout after close().

let db: TestDb;
let pid: string;

beforeAll(async () => {
  db = await createMigratedDatabase();
  const c = await connect(db.url);
  try {
    pid = await insertPersonality(c, 'exit');
    const rows = seededVectors(7, 50).map((v, i) => ({ t: `m${i}`, e: vectorLiteral(v) }));
    await c.query(
      `INSERT INTO memories ("personalityId", "channelId", content, embedding)
       SELECT $1, 'c', r->>'t', (r->>'e')::vector FROM jsonb_array_elements($2::jsonb) r`,
      [pid, JSON.stringify(rows)],
    );
  } finally {
    await c.end();
  }
});

afterAll(async () => {
  await db?.drop();
});

const onPool = (body: string) => `
  import pg from 'pg';
  import { streamPersonalityMemories } from ${JSON.stringify(`${ROOT}src/store/builtin.ts`)};
  const pool = new pg.Pool({ connectionString: ${JSON.stringify(db.url)}, max: 1, query_timeout: 30000 });
  ${body}
  await pool.end();
  console.log('closed');
`;

/** Runs `script` in a fresh Node process; resolves with its output and the ms between its "closed" line and its exit. */
async function runChild(script: string): Promise<{ code: number | null; lines: string[]; exitAfterCloseMs: number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines: string[] = [];
  let closedAt = 0;
  createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line);
    if (line === 'closed') closedAt = performance.now();
  });
  // A hung child must fail the test, not hold it for the 30 s query timeout. Start-up is slow on a
  // loaded 2-core machine (PGlite's initdb alone takes seconds), so the guard counts from "closed".
  let killed = false;
  let guard = setTimeout(() => {
    killed = true;
    child.kill('SIGKILL');
  }, 90_000);
  child.stdout.on('data', () => {
    if (closedAt === 0) return;
    clearTimeout(guard);
    guard = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, 10_000);
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(guard);
  if (killed) throw new Error(`child still running ${Math.round(performance.now() - closedAt)} ms after "closed" (killed)`);
  if (code !== 0) throw new Error(`child exited with ${code}: ${stderr}`);
  expect(closedAt).toBeGreaterThan(0);
  return { code, lines, exitAfterCloseMs: performance.now() - closedAt };
}

describe('streamPersonalityMemories on a pg.Pool', () => {
  it('a process that streamed a full set exits by itself within 2 s of pool.end()', async () => {
    const r = await runChild(onPool(`
      let n = 0;
      console.log('rows ' + await streamPersonalityMemories(pool, ${JSON.stringify(pid)}, 1000, () => (++n, true)));
    `));
    expect(r.lines[0]).toBe('rows 50');
    expect(r.exitAfterCloseMs).toBeLessThan(2_000);
  });

  it('a process that stopped a stream early exits by itself within 2 s of pool.end()', async () => {
    const r = await runChild(onPool(`
      let n = 0;
      console.log('rows ' + await streamPersonalityMemories(pool, ${JSON.stringify(pid)}, 1000, () => ++n < 3));
      console.log('after ' + (await pool.query('SELECT 1 AS ok')).rows[0].ok);
    `));
    expect(r.lines.slice(0, 2)).toEqual(['rows 3', 'after 1']);
    expect(r.exitAfterCloseMs).toBeLessThan(2_000);
  });
});

describe('the embedded backend', () => {
  it('a process that opened PGlite, listened, streamed and closed exits by itself within 2 s', { timeout: 120_000 }, async () => {
    const r = await runChild(`
      import pino from 'pino';
      import { openEmbedded } from ${JSON.stringify(`${ROOT}src/backend/embedded.ts`)};
      import { streamPersonalityMemories } from ${JSON.stringify(`${ROOT}src/store/builtin.ts`)};
      import { PgliteSource } from ${JSON.stringify(`${ROOT}src/sources/pglite.ts`)};
      const logger = pino({ level: 'silent' });
      const e = await openEmbedded({ logger });
      const source = new PgliteSource({ db: e.db, logger });
      await source.start();
      await e.queryable.query(
        'INSERT INTO personalities (id, name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, $2, $2, $2, now())',
        [${JSON.stringify(pid)}, 'exit'],
      );
      await e.queryable.query(
        'INSERT INTO memories ("personalityId", "channelId", content, embedding) VALUES ($1, $2, $2, array_fill(0.5::real, ARRAY[1536])::vector)',
        [${JSON.stringify(pid)}, 'c'],
      );
      await source.sync();
      console.log('rows ' + await streamPersonalityMemories(e.queryable, ${JSON.stringify(pid)}, 10, () => true));
      await source.close();
      await e.close();
      console.log('closed');
    `);
    expect(r.lines[0]).toBe('rows 1');
    expect(r.exitAfterCloseMs).toBeLessThan(2_000);
  });
});
