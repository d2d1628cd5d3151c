import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { connect, createMigratedDatabase, insertPersonality, type TestDb } from '../helpers/db.js';
import { FreezableProxy } from '../helpers/proxy.js';
import { killLeftovers, spawnSidecar, subscribe, type SidecarProcess } from './helpers.js';

let db: TestDb;
let writer: pg.Client;
let proxy: FreezableProxy;
let sc: SidecarProcess;

beforeAll(async () => {
  db = await createMigratedDatabase();
  writer = await connect(db.url);
  proxy = await new FreezableProxy('127.0.0.1', Number(new URL(db.url).port || 5432)).start();
});
afterAll(async () => {
  await sc?.stop();
  await killLeftovers();
  await proxy?.close();
  await writer?.end();
  await db?.drop();
});

describe('/readyz follows the listener', () => {
  it('is 503 until LISTEN connects, 503 while the listener is down, 200 again after it reconnects', async () => {
    // LISTEN goes through the proxy; the pool connects directly, so only the listener is affected.
    proxy.refusing = true;
    sc = await spawnSidecar(
      {
        DATABASE_URL: db.url,
        MEMORY_SYNC_LISTEN_URL: proxy.urlFor(db.url),
        MEMORY_SYNC_LISTENER_RETRY_MIN_MS: '20',
        MEMORY_SYNC_LISTENER_RETRY_MAX_MS: '50',
      },
      { ready: false },
    );
    // The engine logs each failed connect attempt: the listener is really trying.
    await sc.waitForMsg('listener connect failed; retrying');
    const starting = await sc.request('GET', '/readyz');
    expect(starting).toMatchObject({ status: 503, json: { ready: false, listener: 'connecting' } });
    expect((await sc.request('GET', '/healthz')).status).toBe(200);
    proxy.refusing = false;
    await sc.waitForMsg('ready');
    expect((await sc.request('GET', '/readyz')).status).toBe(200);

    const events = await subscribe(sc.url);
    try {
      expect((await events.next()).data).toEqual({ listener: 'up' });
      proxy.refusing = true; // reconnects fail until the test allows them
      const from = sc.mark();
      const killed = await writer.query(
        `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = 'memory-sync-listener' AND datname = $1`,
        [db.name],
      );
      expect(killed.rows).toEqual([{ ok: true }]);
      await sc.waitForMsg('not ready', from);
      expect(await events.next((e) => e.event === 'down')).toMatchObject({ event: 'down' });
      const down = await sc.request('GET', '/readyz');
      expect(down).toMatchObject({ status: 503, json: { ready: false, pool: 'up', listener: 'down' } });
      expect((await sc.request('GET', '/metrics')).text).toMatch(/^memory_sync_listener_up 0$/m);

      // Lookups still work meanwhile, from the database.
      const id = await insertPersonality(writer, 'while-down');
      expect((await sc.request('GET', `/v1/personalities/${id}`)).json.name).toBe('while-down');

      proxy.refusing = false;
      await sc.waitForMsg('ready', from);
      expect(await events.next((e) => e.event === 'reconnect')).toEqual({ event: 'reconnect', data: {} });
      expect(await sc.request('GET', '/readyz')).toMatchObject({ status: 200, json: { ready: true, listener: 'up' } });
      const metrics = (await sc.request('GET', '/metrics')).text;
      expect(metrics).toMatch(/^memory_sync_listener_up 1$/m);
      expect(metrics).toMatch(/^memory_sync_listener_reconnects_total 1$/m);
      expect(metrics).toMatch(/^memory_sync_cache_flushes_total 1$/m);
    } finally {
      events.close();
    }
  });
});
