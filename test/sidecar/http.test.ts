import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { connect, createMigratedDatabase, insertPersonality, seededVectors, vectorLiteral, type TestDb } from '../helpers/db.js';
import { killLeftovers, spawnSidecar, subscribe, type SidecarProcess } from './helpers.js';

let db: TestDb;
let writer: pg.Client;
let sc: SidecarProcess;

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const [V1, V2, V3] = seededVectors(7, 3).map((v) => Array.from(v)) as [number[], number[], number[]];

beforeAll(async () => {
  db = await createMigratedDatabase();
  writer = await connect(db.url);
  sc = await spawnSidecar({ DATABASE_URL: db.url });
});
afterAll(async () => {
  expect(await sc?.stop()).toBe(0);
  await killLeftovers();
  await writer?.end();
  await db?.drop();
});

async function memoryCount(): Promise<number> {
  return Number((await writer.query('SELECT count(*) FROM memories')).rows[0].count);
}

describe('sidecar HTTP API', () => {
  it('GET /v1/personalities/:id: 200 with llmConfig and ISO dates, 404 when absent, 400 naming id', async () => {
    const id = await insertPersonality(writer, 'http-get');
    await writer.query(`INSERT INTO llm_configs ("personalityId", model, "updatedAt") VALUES ($1, 'model-a', now())`, [id]);
    const ok = await sc.request('GET', `/v1/personalities/${id}`);
    expect(ok.status).toBe(200);
    expect(ok.json).toMatchObject({ id, name: 'http-get', llmConfig: { model: 'model-a', personalityId: id } });
    expect(ok.json.createdAt).toMatch(ISO);
    expect(ok.json.llmConfig.updatedAt).toMatch(ISO);

    const missing = await sc.request('GET', '/v1/personalities/00000000-0000-4000-8000-00000000abcd');
    expect(missing.status).toBe(404);
    expect(missing.json.code).toBe('not_found');

    const bad = await sc.request('GET', '/v1/personalities/not-a-uuid');
    expect(bad.status).toBe(400);
    expect(bad.json).toMatchObject({ code: 'validation', field: 'id' });
    expect((await sc.request('GET', '/v1/nothing')).json.code).toBe('no_route');
  });

  it('stores (201), searches (200) and deletes (204, then 404) memories', async () => {
    const pid = await insertPersonality(writer, 'http-rw');
    const stored = await sc.request('POST', '/v1/memories', {
      personalityId: pid,
      channelId: 'general',
      content: 'first',
      embedding: V1,
      metadata: { source: 'test' },
    });
    expect(stored.status).toBe(201);
    const id = stored.json.id as string;
    const row = await writer.query('SELECT content, metadata FROM memories WHERE id = $1', [id]);
    expect(row.rows[0]).toEqual({ content: 'first', metadata: { source: 'test' } });
    await sc.request('POST', '/v1/memories', { personalityId: pid, channelId: 'random', content: 'second', embedding: V2 });

    const found = await sc.request('POST', '/v1/memories/search', { personalityId: pid, embedding: V1, limit: 2 });
    expect(found.status).toBe(200);
    expect(found.json.results).toHaveLength(2);
    expect(found.json.results[0]).toMatchObject({ id, content: 'first', channelId: 'general', metadata: { source: 'test' } });
    expect(found.json.results[0].similarity).toBeCloseTo(1, 5);
    expect(found.json.results[0].createdAt).toMatch(ISO);
    const inChannel = await sc.request('POST', '/v1/memories/search', { personalityId: pid, channelId: 'random', embedding: V1 });
    expect(inChannel.json.results.map((r: { content: string }) => r.content)).toEqual(['second']);

    expect((await sc.request('DELETE', `/v1/memories/${id}`)).status).toBe(204);
    expect((await writer.query('SELECT 1 FROM memories WHERE id = $1', [id])).rowCount).toBe(0);
    const again = await sc.request('DELETE', `/v1/memories/${id}`);
    expect(again.status).toBe(404);
    expect(again.json.code).toBe('not_found');
  });

  it('answers bad input with 400 naming the field, and writes nothing', async () => {
    const pid = await insertPersonality(writer, 'http-bad');
    const good = { personalityId: pid, channelId: 'general', content: 'x', embedding: V3 };
    const before = await memoryCount();
    const cases: Array<[string, unknown, string]> = [
      ['/v1/memories', { ...good, embedding: V3.slice(0, 3) }, 'embedding'],
      ['/v1/memories', { ...good, embedding: [...V3, 0.5] }, 'embedding'],
      ['/v1/memories', { ...good, personalityId: 'not-a-uuid' }, 'personalityId'],
      ['/v1/memories', { ...good, channelId: undefined }, 'channelId'],
      ['/v1/memories', { ...good, content: '' }, 'content'],
      ['/v1/memories', { ...good, embedding: V3.map((x, i) => (i === 5 ? String(x) : x)) }, 'embedding[5]'],
      ['/v1/memories', { ...good, embedding: V3.map(() => 0) }, 'embedding'], // engine: zero vector
      ['/v1/memories', { ...good, embedding: V3.map((x, i) => (i === 9 ? 1e39 : x)) }, 'embedding[9]'], // engine: float32 overflow
      ['/v1/memories', { ...good, metadata: [1, 2] }, 'metadata'],
      ['/v1/memories', '{"personalityId": ', 'body'],
      ['/v1/memories', [good], 'body'],
      ['/v1/memories/search', { personalityId: pid, embedding: V3, limit: '5' }, 'limit'], // no coercion
      ['/v1/memories/search', { personalityId: pid, embedding: V3, limit: 101 }, 'limit'],
      ['/v1/memories/search', { personalityId: pid }, 'embedding'],
      ['/v1/memories/search', { personalityId: pid, embedding: V3, minSimilarity: 2 }, 'minSimilarity'],
    ];
    for (const [path, body, field] of cases) {
      const r = await sc.request('POST', path, body);
      expect({ path, field, status: r.status }).toEqual({ path, field, status: 400 });
      expect(r.json).toMatchObject({ code: 'validation', field });
      expect(r.json.error).toMatch(new RegExp(`^${field.replace(/[[\]]/g, '\\$&')}: `));
    }
    const unknown = await sc.request('POST', '/v1/memories', { ...good, personalityId: '00000000-0000-4000-8000-00000000beef' });
    expect(unknown.status).toBe(404);
    expect(await memoryCount()).toBe(before);
  });

  it('/healthz, /readyz and /metrics', async () => {
    expect(await sc.request('GET', '/healthz')).toMatchObject({ status: 200, json: { status: 'ok' } });
    expect(await sc.request('GET', '/readyz')).toMatchObject({
      status: 200,
      json: { ready: true, pool: 'up', listener: 'up', shuttingDown: false },
    });
    const id = await insertPersonality(writer, 'http-metrics');
    await sc.request('GET', `/v1/personalities/${id}`);
    await sc.request('GET', `/v1/personalities/${id}`);
    const from = sc.mark();
    await writer.query(`UPDATE personalities SET "displayName" = 'm' WHERE id = $1`, [id]);
    await sc.waitForLog((l) => l.msg === 'notification' && l.model === 'Personality' && l.action === 'evicted', from);

    const m = await sc.request('GET', '/metrics');
    expect(m.status).toBe(200);
    for (const name of [
      'memory_sync_cache_hits_total',
      'memory_sync_cache_misses_total',
      'memory_sync_cache_evictions_total',
      'memory_sync_cache_flushes_total',
      'memory_sync_invalid_notifications_total',
      'memory_sync_listener_reconnects_total',
      'memory_sync_invalidation_lag_seconds_bucket',
      'memory_sync_http_request_duration_seconds_bucket',
    ]) {
      expect(m.text).toContain(`\n${name}`);
    }
    const value = (series: string) => Number(new RegExp(`^${series.replace(/[{}"]/g, '\\$&')} (\\S+)$`, 'm').exec(m.text)?.[1]);
    expect(value('memory_sync_listener_up')).toBe(1);
    expect(value('memory_sync_cache_hits_total')).toBeGreaterThanOrEqual(1);
    expect(value('memory_sync_cache_misses_total')).toBeGreaterThanOrEqual(1);
    expect(value('memory_sync_invalidations_total{model="Personality",operation="UPDATE",action="evicted"}')).toBe(1);
    expect(value('memory_sync_invalidation_lag_seconds_count')).toBeGreaterThanOrEqual(1);
    expect(value('memory_sync_hot_set_bytes')).toBeGreaterThanOrEqual(0);
    // Server-wide: other tests' notifications may be queued too.
    expect(value('memory_sync_notification_queue_usage')).toBeGreaterThanOrEqual(0);
    expect(value('memory_sync_notification_queue_usage')).toBeLessThan(1);
  });

  it('streams invalidations on /v1/events and logs each notification with its fields', async () => {
    const events = await subscribe(sc.url);
    try {
      expect(await events.next()).toEqual({ event: 'state', data: { listener: 'up' } });
      const id = await insertPersonality(writer, 'http-events');
      const seen = await events.next((e) => e.event === 'invalidation' && e.data.model === 'Personality' && e.data.rows.some((r: string[]) => r[0] === id));
      expect(seen.data).toMatchObject({ ms: 2, model: 'Personality', op: 'INSERT', scope: 'rows', fields: ['id'], rows: [[id]], action: expect.any(String) });
      expect(seen.data.lagMs).toBeGreaterThanOrEqual(0);
      const line = await sc.waitForLog((l) => l.msg === 'notification' && (l.keys as string[][]).some((k) => k[0] === id));
      expect(line).toMatchObject({ level: 30, model: 'Personality', op: 'INSERT', rows: 1, gone: 0, action: seen.data.action });
      expect(typeof line.lagMs).toBe('number');
    } finally {
      events.close();
    }
  });
});
