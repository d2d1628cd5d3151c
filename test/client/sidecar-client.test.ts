import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { createSidecarClient, DatabaseUnavailableError, NotFoundError, ValidationError, type MemoryClient } from '../../src/index.js';
import type { SidecarClient } from '../../src/client/sidecar-client.js';
import type { MemorySync } from '../../src/client/memory-sync.js';
import { connect, createMigratedDatabase, insertPersonality, seededVectors, type TestDb } from '../helpers/db.js';
import { startClient } from '../helpers/client.js';
import { killLeftovers, spawnSidecar, type SidecarProcess } from '../sidecar/helpers.js';

let db: TestDb;
let writer: pg.Client;
let sc: SidecarProcess;
let remote: SidecarClient;
let local: MemorySync;

beforeAll(async () => {
  db = await createMigratedDatabase();
  writer = await connect(db.url);
  [sc, local] = await Promise.all([spawnSidecar({ DATABASE_URL: db.url }), startClient(db.url)]);
  remote = createSidecarClient({ url: sc.url });
});
afterAll(async () => {
  await remote?.close();
  await local?.close();
  await sc?.stop();
  await killLeftovers();
  await writer?.end();
  await db?.drop();
});

async function rejection(p: Promise<unknown>): Promise<Error> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: Error) => err,
  );
}

describe('createSidecarClient', () => {
  it('getPersonality returns what the in-process client returns, Dates included; null when absent', async () => {
    const id = await insertPersonality(writer, 'remote');
    await writer.query(`INSERT INTO llm_configs ("personalityId", model, "updatedAt") VALUES ($1, 'model-r', now())`, [id]);
    const viaSidecar = await remote.getPersonality(id);
    expect(viaSidecar).toEqual(await local.getPersonality(id));
    expect(viaSidecar?.createdAt).toBeInstanceOf(Date);
    expect(viaSidecar?.llmConfig?.updatedAt).toBeInstanceOf(Date);
    expect(await remote.getPersonality('00000000-0000-4000-8000-0000000000aa')).toBeNull();
  });

  it('stores, searches (same results as in-process) and deletes; Float32Array embeddings work', async () => {
    const pid = await insertPersonality(writer, 'remote-rw');
    const [a, b, c] = seededVectors(21, 3) as [Float32Array, Float32Array, Float32Array];
    const id = await remote.storeMemory({ personalityId: pid, channelId: 'general', content: 'alpha', embedding: a, metadata: { k: 1 } });
    await remote.storeMemory({ personalityId: pid, channelId: 'general', content: 'beta', embedding: Array.from(b) });
    expect(id).toMatch(/^[0-9a-f-]{36}$/);

    const q = { personalityId: pid, embedding: c, limit: 2 };
    const viaSidecar = await remote.findSimilarMemories(q);
    const inProcess = await local.findSimilarMemories(q);
    expect(viaSidecar.map((m) => m.id)).toEqual(inProcess.map((m) => m.id));
    expect(viaSidecar.map(({ similarity, ...rest }) => rest)).toEqual(inProcess.map(({ similarity, ...rest }) => rest));
    viaSidecar.forEach((m, i) => expect(m.similarity).toBeCloseTo(inProcess[i]!.similarity, 5));
    expect(viaSidecar[0]!.createdAt).toBeInstanceOf(Date);

    expect(await remote.deleteMemory(id)).toBe(true);
    expect(await remote.deleteMemory(id)).toBe(false);
    expect((await writer.query('SELECT 1 FROM memories WHERE id = $1', [id])).rowCount).toBe(0);
  });

  it('throws the package error types: ValidationError with the field, NotFoundError', async () => {
    const pid = await insertPersonality(writer, 'remote-errors');
    const e1 = await rejection(remote.findSimilarMemories({ personalityId: pid, embedding: [1, 2, 3] }));
    expect(e1).toBeInstanceOf(ValidationError);
    expect(e1).toMatchObject({ field: 'embedding', message: expect.stringMatching(/^embedding: /) });

    const e2 = await rejection(remote.storeMemory({ personalityId: 'nope', channelId: 'c', content: 'x', embedding: seededVectors(1, 1)[0]! }));
    expect(e2).toMatchObject({ name: 'ValidationError', field: 'personalityId' });

    const e3 = await rejection(remote.getPersonality('../metrics'));
    expect(e3).toMatchObject({ name: 'ValidationError', field: 'id' });

    const e4 = await rejection(
      remote.storeMemory({ personalityId: '00000000-0000-4000-8000-0000000000bb', channelId: 'c', content: 'x', embedding: seededVectors(2, 1)[0]! }),
    );
    expect(e4).toBeInstanceOf(NotFoundError);
    expect((await writer.query('SELECT count(*)::int AS n FROM memories WHERE "personalityId" = $1', [pid])).rows[0].n).toBe(0);
  });

  it('an unreachable or silent sidecar is a DatabaseUnavailableError', async () => {
    // A port nothing listens on: connection refused.
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const refused: MemoryClient = createSidecarClient({ url: `http://127.0.0.1:${port}` });
    const e1 = await rejection(refused.getPersonality('00000000-0000-4000-8000-0000000000cc'));
    expect(e1).toBeInstanceOf(DatabaseUnavailableError);
    expect(e1.message).toMatch(/unreachable/);
    await refused.close();

    // Accepts connections, never answers: the timeout fires.
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => void sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const slow = createSidecarClient({ url: `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`, timeoutMs: 200 });
    const started = performance.now();
    const e2 = await rejection(slow.getPersonality('00000000-0000-4000-8000-0000000000cc'));
    expect(e2).toBeInstanceOf(DatabaseUnavailableError);
    expect(performance.now() - started).toBeLessThan(2_000);
    for (const s of sockets) s.destroy();
    await slow.close();
    await new Promise<void>((r) => silent.close(() => r()));
  });
});

describe('createSidecarClient({ localCache })', () => {
  it('serves hits from the bot process, evicts on the sidecar\'s events, and stops serving when the sidecar\'s listener is down', async () => {
    const cached = createSidecarClient({ url: sc.url, localCache: { max: 100 } });
    try {
      const lc = cached.localCache!;
      if (!lc.serving) await new Promise((r) => lc.once('up', () => r(true)));
      const id = await insertPersonality(writer, 'local-cache');
      await cached.sync(); // the INSERT's own event, which evicts the id, is in before the fill
      expect((await cached.getPersonality(id))?.displayName).toBe('local-cache');
      expect((await cached.getPersonality(id))?.displayName).toBe('local-cache');
      expect(lc.stats().entities.personality).toMatchObject({ hits: 1, misses: 1 });

      const evicted = new Promise((r) => lc.once('invalidation', r));
      await writer.query(`UPDATE personalities SET "displayName" = 'changed' WHERE id = $1`, [id]);
      await evicted;
      expect((await cached.getPersonality(id))?.displayName).toBe('changed');

      // The sidecar loses its LISTEN connection: the local cache must stop serving.
      const down = new Promise((r) => lc.once('down', () => r(lc.serving)));
      await writer.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'memory-sync-listener' AND datname = current_database() AND pid <> pg_backend_pid()`,
      );
      expect(await down).toBe(false);
      const back = new Promise((r) => lc.once('up', () => r(lc.serving)));
      expect(await back).toBe(true); // the sidecar reconnected and flushed; so did we
      expect(lc.stats().entities.personality!.size).toBe(0);
      expect((await cached.getPersonality(id))?.displayName).toBe('changed');
    } finally {
      await cached.close();
    }
  });
});

