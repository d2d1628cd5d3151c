import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { connect, createMigratedDatabase, insertPersonality, seededVectors, vectorLiteral, type TestDb } from '../helpers/db.js';
import { NotificationRecorder } from '../helpers/notifications.js';
import { nextInvalidation, once, startClient } from '../helpers/client.js';
import { parsePayload, type ChangeEvent } from '../../src/contract/change-event.js';
import { MAX_CHUNKS, MAX_PAYLOAD_BYTES } from '../../src/capture/triggers.js';

/*
 * The triggers generated from the built-in declaration
 * (prisma/migrations/20261201000000_declared_capture), on PostgreSQL: what
 * each write sends on memory_sync. Payload fields: Personality ["id"],
 * LlmConfig and Memory ["id", "personalityId"]; Memory's partitions
 * ["personalityId"].
 */

let db: TestDb;
let writer: pg.Client;
let listener: pg.Client;
let rec: NotificationRecorder;

beforeAll(async () => {
  db = await createMigratedDatabase();
  writer = await connect(db.url);
  listener = await connect(db.url); // separate from the writer
  rec = await NotificationRecorder.on(listener); // also LISTENs on 0.1's cache_invalidation: nothing may come there
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

type Received = ChangeEvent & { raw: string };

/** Everything committed so far, each payload checked against the v2 contract and NOTIFY's limit. */
async function events(): Promise<Received[]> {
  await rec.settle(writer);
  const channels = rec.received.map((r) => r.channel);
  expect(channels.every((c) => c === 'memory_sync'), channels.join(', ')).toBe(true);
  return rec.take().map((e) => {
    expect(Buffer.byteLength(e.raw)).toBeLessThanOrEqual(MAX_PAYLOAD_BYTES);
    const parsed = parsePayload(e.raw);
    expect(parsed.ok, parsed.ok ? '' : parsed.reason).toBe(true);
    return { ...(parsed as Extract<typeof parsed, { ok: true }>).event, raw: e.raw };
  });
}

const sorted = <T>(xs: T[]) => [...xs].sort();
const vec = (seed: number) => vectorLiteral(seededVectors(seed, 1)[0]!);

async function memory(pid: string, channel = 'chan', seed = 1, content = 'm'): Promise<string> {
  const r = await writer.query<{ id: string }>(
    `INSERT INTO memories ("personalityId", "channelId", content, embedding) VALUES ($1, $2, $3, $4::vector) RETURNING id`,
    [pid, channel, content, vec(seed)],
  );
  return r.rows[0]!.id;
}

async function llmConfig(pid: string, model = 'gpt'): Promise<string> {
  const r = await writer.query<{ id: string }>(`INSERT INTO llm_configs ("personalityId", model, "updatedAt") VALUES ($1, $2, now()) RETURNING id`, [pid, model]);
  return r.rows[0]!.id;
}

describe('generated triggers', () => {
  it('Personality: INSERT, UPDATE, DELETE name the row by its id, never its contents', async () => {
    const id = await insertPersonality(writer, 'p-insert-secret');
    let [e, ...rest] = await events();
    expect(rest).toHaveLength(0);
    expect(e).toMatchObject({ ms: 2, model: 'Personality', op: 'INSERT', scope: 'rows', fields: ['id'], rows: [[id]], gone: [], chunk: 1, chunks: 1 });
    expect(e!.txid).toMatch(/^\d+$/);
    expect(Math.abs(Date.now() - e!.ts)).toBeLessThan(5_000);
    expect(e!.raw).not.toContain('p-insert-secret');
    expect(Object.keys(JSON.parse(e!.raw)).sort()).toEqual(['chunk', 'chunks', 'fields', 'gone', 'model', 'ms', 'op', 'rows', 'scope', 'ts', 'txid']);

    await writer.query(`UPDATE personalities SET "displayName" = 'changed-secret' WHERE id = $1`, [id]);
    [e, ...rest] = await events();
    expect(rest).toHaveLength(0);
    expect(e).toMatchObject({ model: 'Personality', op: 'UPDATE', scope: 'rows', fields: ['id'], rows: [[id]], gone: [] });
    expect(e!.raw).not.toContain('changed-secret');

    await writer.query('DELETE FROM personalities WHERE id = $1', [id]);
    [e, ...rest] = await events();
    expect(rest).toHaveLength(0);
    expect(e).toMatchObject({ model: 'Personality', op: 'DELETE', scope: 'rows', fields: ['id'], rows: [], gone: [[id]] });
  });

  it('LlmConfig: every new image names its personality; a row that left is named by its id', async () => {
    const pid = await insertPersonality(writer, 'p-llm');
    await events();
    const cid = await llmConfig(pid, 'model-secret');
    const [ins] = await events();
    expect(ins).toMatchObject({ model: 'LlmConfig', op: 'INSERT', scope: 'rows', fields: ['id', 'personalityId'], rows: [[cid, pid]], gone: [] });
    expect(ins!.raw).not.toContain('model-secret');
    await writer.query(`UPDATE llm_configs SET temperature = 0.1 WHERE id = $1`, [cid]);
    expect(await events()).toMatchObject([{ model: 'LlmConfig', op: 'UPDATE', fields: ['id', 'personalityId'], rows: [[cid, pid]], gone: [] }]);
    await writer.query(`DELETE FROM llm_configs WHERE id = $1`, [cid]);
    expect(await events()).toMatchObject([{ model: 'LlmConfig', op: 'DELETE', fields: ['id', 'personalityId'], rows: [], gone: [[cid]] }]);
  });

  it('Memory: a 1536-dim insert succeeds and sends keys, never the row', async () => {
    const pid = await insertPersonality(writer, 'p-mem');
    await events();
    const id = await memory(pid, 'channel-secret', 1, 'content-secret');
    const [e, ...rest] = await events();
    expect(rest).toHaveLength(0);
    expect(e).toMatchObject({ model: 'Memory', op: 'INSERT', scope: 'rows', fields: ['id', 'personalityId'], rows: [[id, pid]], gone: [] });
    for (const secret of ['embedding', 'content-secret', 'channel-secret', 'metadata']) expect(e!.raw).not.toContain(secret);
    expect(Buffer.byteLength(e!.raw)).toBeLessThan(400); // not 1536 floats
    const { rows } = await writer.query<{ d: number }>('SELECT vector_dims(embedding) AS d FROM memories WHERE id = $1', [id]);
    expect(rows[0]!.d).toBe(1536);

    await writer.query(`UPDATE memories SET content = 'new' WHERE id = $1`, [id]);
    expect(await events()).toMatchObject([{ model: 'Memory', op: 'UPDATE', rows: [[id, pid]], gone: [] }]);
    await writer.query(`UPDATE memories SET embedding = $2::vector WHERE id = $1`, [id, vec(2)]);
    expect(await events()).toMatchObject([{ model: 'Memory', op: 'UPDATE', rows: [[id, pid]], gone: [] }]);
    await writer.query(`DELETE FROM memories WHERE id = $1`, [id]);
    expect(await events()).toMatchObject([{ model: 'Memory', op: 'DELETE', fields: ['id', 'personalityId'], rows: [], gone: [[id]] }]);
  });

  it('a memory moved to another personality: the new image names the new one; the id leads the cache to the old', async () => {
    const a = await insertPersonality(writer, 'p-move-a');
    const b = await insertPersonality(writer, 'p-move-b');
    const id = await memory(a, 'chan', 3);
    const stays = await memory(a, 'chan', 4);
    await events();
    await writer.query(`UPDATE memories SET "personalityId" = $2 WHERE id = $1`, [id, b]);
    const [e, ...rest] = await events();
    expect(rest).toHaveLength(0);
    // The id did not change: no "gone" key. The old partition is not in the payload.
    expect(e).toMatchObject({ model: 'Memory', op: 'UPDATE', scope: 'rows', fields: ['id', 'personalityId'], rows: [[id, b]], gone: [] });
    expect(e!.raw).not.toContain(a);

    // And the cache finds it: a's hot set held the memory and drops it on that event.
    const client = await startClient(db.url);
    try {
      const query = seededVectors(3, 1)[0]!;
      const loaded = once(client, 'loaded');
      await client.findSimilarMemories({ personalityId: a, embedding: Array.from(query), limit: 5 });
      await loaded;
      const before = client.stats().hotSearches;
      const hot = await client.findSimilarMemories({ personalityId: a, embedding: Array.from(query), limit: 5 });
      expect(client.stats().hotSearches).toBe(before + 1);
      expect(sorted(hot.map((h) => h.id))).toEqual(sorted([stays]));
      const applied = nextInvalidation(client, (i) => i.event.model === 'Memory');
      await writer.query(`UPDATE memories SET "personalityId" = $2 WHERE id = $1`, [stays, b]);
      await client.sync();
      expect((await applied).action).toBe('patched'); // a's set found the row by its id
      expect(await client.findSimilarMemories({ personalityId: a, embedding: Array.from(query), limit: 5 })).toEqual([]);
      const inB = await client.findSimilarMemories({ personalityId: b, embedding: Array.from(query), limit: 5 });
      expect(sorted(inB.map((h) => h.id))).toEqual(sorted([id, stays]));
    } finally {
      await client.close();
    }
    await events();
  });

  it('an UPDATE that changes a row id names the new key and, as gone, the old id', async () => {
    const pid = await insertPersonality(writer, 'p-rekey');
    const id = await memory(pid);
    const other = await memory(pid, 'chan', 2);
    await events();
    const r = await writer.query<{ id: string }>(`UPDATE memories SET id = gen_random_uuid() WHERE id = $1 RETURNING id`, [id]);
    const fresh = r.rows[0]!.id;
    expect(await events()).toMatchObject([{ model: 'Memory', op: 'UPDATE', rows: [[fresh, pid]], gone: [[id]] }]);
    // A statement that re-keys one row and edits another: old keys only for the re-keyed one.
    await writer.query(`UPDATE memories SET id = CASE WHEN id = $1 THEN gen_random_uuid() ELSE id END, content = 'x' WHERE id = ANY($2::uuid[])`, [fresh, [fresh, other]]);
    const [e] = await events();
    expect(e!.gone).toEqual([[fresh]]);
    expect(e!.rows).toHaveLength(2);
    expect(e!.rows.map((t) => t[1])).toEqual([pid, pid]);
    expect(e!.rows.map((t) => t[0])).toContain(other);
    expect(e!.rows.map((t) => t[0])).not.toContain(fresh);
  });

  it('an UPDATE that changes nothing a cache reads sends nothing', async () => {
    const pid = await insertPersonality(writer, 'p-noop');
    const cid = await llmConfig(pid);
    const id = await memory(pid);
    await events();
    // Same values.
    await writer.query('UPDATE personalities SET name = name');
    await writer.query('UPDATE memories SET content = content, embedding = embedding');
    await writer.query('UPDATE llm_configs SET model = model');
    await writer.query(`UPDATE memories SET content = 'x' WHERE false`);
    // memories."updatedAt" is in no select, filter, key or partition of the declaration.
    await writer.query(`UPDATE memories SET "updatedAt" = now() - interval '1 day' WHERE id = $1`, [id]);
    expect(await events()).toEqual([]);
    const { rows } = await writer.query<{ old: boolean }>(`SELECT "updatedAt" < now() - interval '1 hour' AS old FROM memories WHERE id = $1`, [id]);
    expect(rows[0]!.old).toBe(true); // the write did happen

    // The personality entity returns llmConfig's every field, updatedAt included: that one is sent.
    await writer.query(`UPDATE llm_configs SET "updatedAt" = now() - interval '1 day' WHERE id = $1`, [cid]);
    expect(await events()).toMatchObject([{ model: 'LlmConfig', op: 'UPDATE', rows: [[cid, pid]] }]);
    // One statement, one row really changed: only that one is named.
    const other = await memory(pid, 'chan', 5);
    await events();
    await writer.query(`UPDATE memories SET content = CASE WHEN id = $1 THEN 'changed' ELSE content END WHERE id = ANY($2::uuid[])`, [other, [id, other]]);
    expect(await events()).toMatchObject([{ model: 'Memory', op: 'UPDATE', rows: [[other, pid]], gone: [] }]);
  });

  it('a rolled-back transaction sends nothing', async () => {
    const pid = await insertPersonality(writer, 'p-rollback');
    await memory(pid);
    await events();
    await writer.query('BEGIN');
    await writer.query(`UPDATE personalities SET "displayName" = 'x' WHERE id = $1`, [pid]);
    await memory(pid);
    await llmConfig(pid);
    await writer.query('DELETE FROM memories');
    await writer.query('TRUNCATE memories');
    await writer.query('ROLLBACK');
    expect(await events()).toEqual([]);
  });

  it('still notifies under session_replication_role = replica (logical-replication apply)', async () => {
    const pid = await insertPersonality(writer, 'p-replica');
    await events();
    await writer.query('SET session_replication_role = replica');
    try {
      await writer.query(`UPDATE personalities SET "displayName" = 'replicated' WHERE id = $1`, [pid]);
      const id = await memory(pid);
      await writer.query('DELETE FROM memories WHERE id = $1', [id]);
      const got = await events();
      expect(got).toMatchObject([
        { model: 'Personality', op: 'UPDATE', rows: [[pid]] },
        { model: 'Memory', op: 'INSERT', rows: [[id, pid]] },
        { model: 'Memory', op: 'DELETE', gone: [[id]] },
      ]);
    } finally {
      await writer.query('RESET session_replication_role');
    }
  });

  it('deleting a personality: its own event, and the cascade’s LlmConfig and Memory DELETEs naming every gone id', async () => {
    const pid = await insertPersonality(writer, 'p-cascade');
    const cid = await llmConfig(pid);
    const mids: string[] = [];
    for (let i = 0; i < 3; i++) mids.push(await memory(pid, 'c', i));
    await events();
    await writer.query('DELETE FROM personalities WHERE id = $1', [pid]);
    const got = await events();
    const byModel = Object.fromEntries(got.map((e) => [e.model, e]));
    expect(sorted(got.map((e) => e.model))).toEqual(['LlmConfig', 'Memory', 'Personality']);
    expect(byModel.Personality).toMatchObject({ op: 'DELETE', scope: 'rows', rows: [], gone: [[pid]] });
    expect(byModel.LlmConfig).toMatchObject({ op: 'DELETE', scope: 'rows', rows: [], gone: [[cid]] });
    expect(byModel.Memory).toMatchObject({ op: 'DELETE', scope: 'rows', rows: [] });
    expect(sorted(byModel.Memory!.gone)).toEqual(sorted(mids.map((m) => [m])));
    expect(new Set(got.map((e) => e.txid)).size).toBe(1);
  });

  it('chunks a mid-size statement: every key named once, each payload within the limit', async () => {
    const pids: string[] = [];
    for (let i = 0; i < 5; i++) pids.push(await insertPersonality(writer, `p-chunk-${i}`));
    await events();
    const inserted = await writer.query<{ id: string; personalityId: string }>(
      `INSERT INTO memories ("personalityId", "channelId", content, embedding)
       SELECT ($1::uuid[])[1 + g % 5], 'c', 'm' || g, $2::vector FROM generate_series(1, 500) g RETURNING id, "personalityId"`,
      [pids, vec(7)],
    );
    const got = await events();
    const bytes = got.reduce((n, e) => n + Buffer.byteLength(e.raw), 0);
    expect(got.length).toBeGreaterThan(1);
    expect(got.length).toBeLessThanOrEqual(MAX_CHUNKS);
    expect(got.length).toBeLessThanOrEqual(Math.ceil(bytes / (MAX_PAYLOAD_BYTES / 2))); // chunks are filled, not one row each
    expect(got.every((e) => e.model === 'Memory' && e.op === 'INSERT' && e.scope === 'rows' && e.chunks === got.length && e.gone.length === 0)).toBe(true);
    expect(sorted(got.map((e) => e.chunk))).toEqual(Array.from({ length: got.length }, (_, i) => i + 1));
    const named = got.flatMap((e) => e.rows.map((t) => t.join(' ')));
    expect(named).toHaveLength(500); // none twice
    expect(sorted(named)).toEqual(sorted(inserted.rows.map((r) => `${r.id} ${r.personalityId}`)));
    expect(new Set(got.map((e) => e.txid)).size).toBe(1);
  });

  it('a DELETE of 10,000 memories sends a few partitions events that name every personality', async () => {
    const pids: string[] = [];
    for (let i = 0; i < 40; i++) pids.push(await insertPersonality(writer, `p-bulk-${i}`));
    await events();
    await writer.query(
      `INSERT INTO memories ("personalityId", "channelId", content, embedding)
       SELECT ($1::uuid[])[1 + g % 40], 'c' || (g % 7), 'm' || g, $2::vector FROM generate_series(1, 10000) g`,
      [pids, vec(9)],
    );
    const inserts = await events();
    expect(inserts.length).toBeGreaterThan(0);
    expect(inserts.length).toBeLessThanOrEqual(MAX_CHUNKS);
    // The INSERT too was too big to name row by row: it named its partitions.
    expect(inserts.every((e) => e.model === 'Memory' && e.op === 'INSERT' && e.scope === 'partitions')).toBe(true);
    expect(sorted(inserts.flatMap((e) => e.rows.map((t) => t[0])))).toEqual(sorted(pids));

    const deleted = await writer.query(`DELETE FROM memories WHERE "personalityId" = ANY($1::uuid[])`, [pids]);
    expect(deleted.rowCount).toBe(10_000);
    const got = await events();
    expect(got.length).toBeGreaterThan(0);
    expect(got.length).toBeLessThanOrEqual(MAX_CHUNKS);
    for (const e of got) {
      expect(e).toMatchObject({ model: 'Memory', op: 'DELETE', scope: 'partitions', fields: ['personalityId'], gone: [], chunks: got.length });
    }
    const named = got.flatMap((e) => e.rows.map((t) => t[0]));
    expect(sorted(named)).toEqual(sorted(pids)); // each personality once
  });

  it('more partitions than fit degrade to one model-scope event; an entity model has no partitions to fall back on', async () => {
    const created = await writer.query<{ id: string }>(
      `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt")
       SELECT 'bulk-' || g, 'b', 's', now() FROM generate_series(1, 2500) g RETURNING id`,
    );
    expect(await events()).toMatchObject([{ model: 'Personality', op: 'INSERT', scope: 'model', fields: [], rows: [], gone: [], chunk: 1, chunks: 1 }]);
    const pids = created.rows.map((r) => r.id);
    // One memory in each of 2,500 partitions: neither the rows nor the partitions fit in 12 payloads.
    await writer.query(
      `INSERT INTO memories ("personalityId", "channelId", content, embedding) SELECT p, 'c', 'm', $2::vector FROM unnest($1::uuid[]) p`,
      [pids, vec(10)],
    );
    expect(await events()).toMatchObject([{ model: 'Memory', op: 'INSERT', scope: 'model', fields: [], rows: [], gone: [], chunk: 1, chunks: 1 }]);
    await writer.query(`DELETE FROM memories WHERE "personalityId" = ANY($1::uuid[])`, [pids]);
    expect(await events()).toMatchObject([{ model: 'Memory', op: 'DELETE', scope: 'model' }]);
    await writer.query(`DELETE FROM personalities WHERE name LIKE 'bulk-%'`);
    expect(await events()).toMatchObject([{ model: 'Personality', op: 'DELETE', scope: 'model', rows: [], gone: [] }]);
  });

  // Last: it empties every table.
  it('TRUNCATE sends one model-scope event per watched table', async () => {
    const pid = await insertPersonality(writer, 'p-trunc');
    await llmConfig(pid);
    await memory(pid);
    await events();
    await writer.query('TRUNCATE memories');
    expect(await events()).toMatchObject([{ model: 'Memory', op: 'TRUNCATE', scope: 'model', fields: [], rows: [], gone: [], chunk: 1, chunks: 1 }]);
    await memory(pid);
    await events();
    await writer.query('TRUNCATE personalities CASCADE');
    const got = await events();
    expect(sorted(got.map((e) => e.model))).toEqual(['LlmConfig', 'Memory', 'Personality']);
    expect(got.every((e) => e.op === 'TRUNCATE' && e.scope === 'model' && e.rows.length === 0 && e.gone.length === 0)).toBe(true);
  });
});
