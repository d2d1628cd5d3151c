import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestDb } from '../../helpers/db.js';
import { createReplicationDatabase, insertPersonality, uniqueName } from './helpers.js';

/*
 * A host process on the replication source SIGKILLed while writes go on, then
 * started again on the same slot: it resumes from the slot, so nothing
 * committed is lost across the crash and its caches read no stale value.
 */

const SCRIPT = fileURLToPath(new URL('./host-process.ts', import.meta.url));

let db: TestDb;
let pool: pg.Pool;
beforeAll(async () => {
  db = await createReplicationDatabase('ms_repl_crash');
  pool = new pg.Pool({ connectionString: db.url, max: 3 });
  pool.on('connect', (c) => c.on('error', () => {}));
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

interface Host {
  child: ChildProcess;
  txs: string[];
  /** Resolves with the next line that has `key`. */
  next<T>(key: string): Promise<T>;
  send(cmd: object): void;
  kill(): Promise<void>;
}

async function host(slot: string): Promise<Host> {
  const child = spawn(process.execPath, ['--import', 'tsx', SCRIPT, db.url, slot], { stdio: ['pipe', 'pipe', 'inherit'] });
  const txs: string[] = [];
  const waiting: Array<{ key: string; resolve: (v: any) => void }> = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const o = JSON.parse(line) as Record<string, unknown>;
    if ('tx' in o) txs.push(o.tx as string);
    const i = waiting.findIndex((w) => w.key in o);
    if (i >= 0) waiting.splice(i, 1)[0]!.resolve(o);
  });
  const h: Host = {
    child,
    txs,
    next: (key) => new Promise((resolve, reject) => {
      waiting.push({ key, resolve });
      child.once('exit', (code) => reject(new Error(`host exited (${code}) while waiting for ${key}`)));
    }),
    send: (cmd) => child.stdin!.write(`${JSON.stringify(cmd)}\n`),
    kill: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    },
  };
  await h.next('ready');
  return h;
}

describe('replication source across a SIGKILL', () => {
  it('a host killed mid-write and restarted from its slot: nothing lost, 0 stale reads', { timeout: 120_000 }, async () => {
    const slot = uniqueName('crash');
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push(await insertPersonality(pool, uniqueName('c'), 'v0'));
    const a = await host(slot);
    try {
      a.send({ warm: ids });
      await a.next('warmed');

      const committed: string[] = [];
      let writing = true;
      let n = 0;
      const writer = (async () => {
        const c = await pool.connect();
        try {
          while (writing) {
            await c.query('BEGIN');
            await c.query(`UPDATE personalities SET "displayName" = $2 WHERE id = $1`, [ids[n % ids.length], `v${++n}`]);
            const { rows } = await c.query<{ xid: string }>('SELECT pg_current_xact_id()::xid::text AS xid');
            await c.query('COMMIT');
            committed.push(rows[0]!.xid);
          }
        } finally {
          c.release();
        }
      })();
      while (a.txs.length < 40) await new Promise((r) => setTimeout(r, 10));
      await a.kill(); // mid-write: whatever it had received and not confirmed is replayed to its successor
      const seenByA = a.txs.length;
      while (committed.length < seenByA + 60) await new Promise((r) => setTimeout(r, 10));

      const b = await host(slot);
      try {
        writing = false;
        await writer;
        b.send({ read: ids });
        const { read, flushes } = await b.next<{ read: Record<string, string>; flushes: number }>('read');
        const truth = Object.fromEntries((await pool.query<{ id: string; displayName: string }>('SELECT id, "displayName" FROM personalities WHERE id = ANY($1)', [ids])).rows.map((r) => [r.id, r.displayName]));
        expect(read).toEqual(truth); // 0 stale reads
        expect(flushes).toBe(0); // resumed from the slot: no loss to flush for

        // Nothing lost: every commit reached A before the kill or B after it.
        const applied = new Set([...a.txs, ...b.txs]);
        const missing = committed.filter((x) => !applied.has(x));
        expect(missing).toEqual([]);
        expect(committed.length).toBeGreaterThan(100);
        // B started where A's confirmed position was, not at the end: it replayed commits from before the kill.
        const firstOfB = committed.indexOf(b.txs[0]!);
        expect(firstOfB).toBeGreaterThanOrEqual(0);
        expect(firstOfB).toBeLessThan(seenByA + 60);
      } finally {
        await b.kill();
      }
    } finally {
      await a.kill();
    }
  });
});
