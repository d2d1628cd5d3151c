import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { connect, createMigratedDatabase, insertPersonality, seededVectors, vectorLiteral, type TestDb } from '../helpers/db.js';
import { NotificationRecorder } from '../helpers/notifications.js';
import { parsePayload } from '../../src/contract/change-event.js';

let db: TestDb;
let writer: pg.Client;
let listener: pg.Client;
let rec: NotificationRecorder;

beforeAll(async () => {
  db = await createMigratedDatabase();
  writer = await connect(db.url);
  listener = await connect(db.url); // separate from the writer
  rec = await NotificationRecorder.on(listener);
});

afterAll(async () => {
  await writer?.end();
  await listener?.end();
  await db?.drop();
});

beforeEach(async () => {
  await rec.settle(writer);
  rec.take();
});

async function events() {
  await rec.settle(writer);
  const got = rec.take();
  for (const e of got) {
    expect(Buffer.byteLength(e.raw)).toBeLessThan(8000);
    const parsed = parsePayload(e.raw);
    expect(parsed.ok, parsed.ok ? '' : parsed.reason).toBe(true);
  }
  return got;
}

const vec = (seed: number) => vectorLiteral(seededVectors(seed, 1)[0]!);

async function memory(pid: string, channel = 'c1', seed = 1): Promise<string> {
  const r = await writer.query<{ id: string }>(
    `INSERT INTO memories ("personalityId", "channelId", content, embedding) VALUES ($1, $2, 'm', $3::vector) RETURNING id`,
    [pid, channel, vec(seed)],
  );
  return r.rows[0]!.id;
}

describe('notify triggers', () => {
  it('personalities: INSERT, UPDATE, DELETE name the row as id and personality', async () => {
    const id = await insertPersonality(writer, 'p-insert');
    let [e, ...rest] = await events();
    expect(rest).toHaveLength(0);
    expect(e).toMatchObject({ v: 1, table: 'personalities', op: 'INSERT', scope: 'rows', ids: [id], personalityIds: [id], chunk: 1, chunks: 1 });
    expect(typeof e!.txid).toBe('string');
    expect(Math.abs(Date.now() - (e!.ts as number))).toBeLessThan(5_000);

    await writer.query(`UPDATE personalities SET "displayName" = 'changed' WHERE id = $1`, [id]);
    [e] = await events();
    expect(e).toMatchObject({ table: 'personalities', op: 'UPDATE', ids: [id], personalityIds: [id] });

    await writer.query('DELETE FROM personalities WHERE id = $1', [id]);
    [e] = await events();
    expect(e).toMatchObject({ table: 'personalities', op: 'DELETE', ids: [id], personalityIds: [id] });
  });

  it('llm_configs: every operation names the personality it belongs to', async () => {
    const pid = await insertPersonality(writer, 'p-llm');
    await events();
    const r = await writer.query<{ id: string }>(
      `INSERT INTO llm_configs ("personalityId", model, "updatedAt") VALUES ($1, 'gpt', now()) RETURNING id`,
      [pid],
    );
    const cid = r.rows[0]!.id;
    expect(await events()).toMatchObject([{ table: 'llm_configs', op: 'INSERT', ids: [cid], personalityIds: [pid] }]);
    await writer.query(`UPDATE llm_configs SET temperature = 0.1 WHERE id = $1`, [cid]);
    expect(await events()).toMatchObject([{ table: 'llm_configs', op: 'UPDATE', ids: [cid], personalityIds: [pid] }]);
    await writer.query(`DELETE FROM llm_configs WHERE id = $1`, [cid]);
    expect(await events()).toMatchObject([{ table: 'llm_configs', op: 'DELETE', ids: [cid], personalityIds: [pid] }]);
  });

  it('memories: a 1536-dim insert succeeds and sends keys, never the row', async () => {
    const pid = await insertPersonality(writer, 'p-mem');
    await events();
    const id = await memory(pid);
    const [e, ...rest] = await events();
    expect(rest).toHaveLength(0);
    expect(e).toMatchObject({ table: 'memories', op: 'INSERT', ids: [id], personalityIds: [pid] });
    expect(e!.raw).not.toContain('embedding');
    await writer.query(`UPDATE memories SET content = 'new' WHERE id = $1`, [id]);
    expect(await events()).toMatchObject([{ table: 'memories', op: 'UPDATE', ids: [id], personalityIds: [pid] }]);
    await writer.query(`DELETE FROM memories WHERE id = $1`, [id]);
    expect(await events()).toMatchObject([{ table: 'memories', op: 'DELETE', ids: [id], personalityIds: [pid] }]);
  });

  it('a memory moved to another personality names both', async () => {
    const a = await insertPersonality(writer, 'p-move-a');
    const b = await insertPersonality(writer, 'p-move-b');
    const id = await memory(a);
    await events();
    await writer.query(`UPDATE memories SET "personalityId" = $2 WHERE id = $1`, [id, b]);
    const [e] = await events();
    expect(e!.ids).toEqual([id]);
    expect([...(e!.personalityIds as string[])].sort()).toEqual([a, b].sort());
  });

  it('an UPDATE that changes no column sends nothing', async () => {
    const pid = await insertPersonality(writer, 'p-noop');
    await memory(pid);
    await events();
    await writer.query('UPDATE personalities SET name = name');
    await writer.query('UPDATE memories SET content = content, embedding = embedding');
    await writer.query(`UPDATE memories SET content = 'x' WHERE false`);
    expect(await events()).toEqual([]);
  });

  it('a rolled-back transaction sends nothing', async () => {
    const pid = await insertPersonality(writer, 'p-rollback');
    await events();
    await writer.query('BEGIN');
    await writer.query(`UPDATE personalities SET "displayName" = 'x' WHERE id = $1`, [pid]);
    await memory(pid);
    await writer.query('DELETE FROM memories');
    await writer.query('ROLLBACK');
    expect(await events()).toEqual([]);
  });

  it('still notifies under session_replication_role = replica (logical-replication apply)', async () => {
    const pid = await insertPersonality(writer, 'p-replica');
    await events();
    await writer.query('SET session_replication_role = replica');
    try {
      await writer.query(`UPDATE personalities SET "displayName" = 'replicated' WHERE id = $1`, [pid]);
    } finally {
      await writer.query('RESET session_replication_role');
    }
    expect(await events()).toMatchObject([{ table: 'personalities', op: 'UPDATE', ids: [pid] }]);
  });

  it('TRUNCATE sends a table-scope event per table', async () => {
    const pid = await insertPersonality(writer, 'p-trunc');
    await memory(pid);
    await events();
    await writer.query('TRUNCATE memories');
    expect(await events()).toMatchObject([{ table: 'memories', op: 'TRUNCATE', scope: 'table', ids: [], personalityIds: [] }]);
  });

  it('deleting a personality reports its cascaded rows through its own event only', async () => {
    const pid = await insertPersonality(writer, 'p-cascade');
    await writer.query(`INSERT INTO llm_configs ("personalityId", model, "updatedAt") VALUES ($1, 'm', now())`, [pid]);
    for (let i = 0; i < 3; i++) await memory(pid, 'c', i);
    await events();
    await writer.query('DELETE FROM personalities WHERE id = $1', [pid]);
    expect(await events()).toMatchObject([{ table: 'personalities', op: 'DELETE', ids: [pid], personalityIds: [pid] }]);
  });

  it('chunks a mid-size statement: every id and personality named, each payload < 8000 bytes', async () => {
    const pids: string[] = [];
    for (let i = 0; i < 5; i++) pids.push(await insertPersonality(writer, `p-chunk-${i}`));
    await events();
    await writer.query(
      `INSERT INTO memories ("personalityId", "channelId", content, embedding)
       SELECT ($1::uuid[])[1 + g % 5], 'c', 'm' || g, $2::vector FROM generate_series(1, 500) g`,
      [pids, vec(7)],
    );
    const got = await events();
    expect(got.length).toBe(Math.ceil(500 / 90));
    expect(got.every((e) => e.scope === 'rows' && e.chunks === got.length)).toBe(true);
    const ids = new Set(got.flatMap((e) => e.ids as string[]));
    expect(ids.size).toBe(500);
    expect(new Set(got.flatMap((e) => e.personalityIds as string[]))).toEqual(new Set(pids));
    expect(new Set(got.map((e) => e.txid)).size).toBe(1);
  });

  it('a DELETE of 10,000 memories sends a few notifications that name every personality', async () => {
    const pids: string[] = [];
    for (let i = 0; i < 40; i++) pids.push(await insertPersonality(writer, `p-bulk-${i}`));
    await writer.query(
      `INSERT INTO memories ("personalityId", "channelId", content, embedding)
       SELECT ($1::uuid[])[1 + g % 40], 'c' || (g % 7), 'm' || g, $2::vector FROM generate_series(1, 10000) g`,
      [pids, vec(9)],
    );
    await events();
    const deleted = await writer.query(`DELETE FROM memories WHERE "personalityId" = ANY($1::uuid[])`, [pids]);
    expect(deleted.rowCount).toBe(10_000);
    const got = await events();
    expect(got.length).toBeGreaterThan(0);
    expect(got.length).toBeLessThanOrEqual(24);
    expect(got.every((e) => e.op === 'DELETE' && e.table === 'memories')).toBe(true);
    expect(new Set(got.flatMap((e) => e.personalityIds as string[]))).toEqual(new Set(pids));
  });

  it('more personalities than fit degrade to one table-scope event', async () => {
    await writer.query(
      `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt")
       SELECT 'bulk-' || g, 'b', 's', now() FROM generate_series(1, 4000) g`,
    );
    const got = await events();
    expect(got).toHaveLength(1);
    expect(got[0]).toMatchObject({ table: 'personalities', op: 'INSERT', scope: 'table', chunks: 1 });
    await writer.query(`DELETE FROM personalities WHERE name LIKE 'bulk-%'`);
    expect(await events()).toMatchObject([{ op: 'DELETE', scope: 'table' }]);
  });
});
