import { once } from 'node:events';
import { Client } from 'undici';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createSidecarClient, ForbiddenError, UnauthorizedError } from '../../src/index.js';
import type { SidecarClient } from '../../src/client/sidecar-client.js';
import { ConfigError } from '../../src/contract/errors.js';
import { EventStream } from '../../src/sources/event-stream.js';
import { connect, createMigratedDatabase, insertPersonality, seededVectors, type TestDb } from '../helpers/db.js';
import { killLeftovers, spawnSidecar, type SidecarProcess } from '../sidecar/helpers.js';

const FULL = 'client-full-token-0123456789';
const READ = 'client-read-token-0123456789';
const WRONG = 'client-wrong-token-012345678';

let db: TestDb;
let writer: pg.Client;
let sc: SidecarProcess;
const clients: SidecarClient[] = [];

function client(options: { token?: string; localCache?: object } = {}): SidecarClient {
  const c = createSidecarClient({ url: sc.url, ...options });
  clients.push(c);
  return c;
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: Error) => err,
  );
}

/** How many times the sidecar answered `status` on GET /v1/events, from its own metrics. */
async function eventStreamAnswers(s: SidecarProcess, status: number): Promise<number> {
  const text = await (await fetch(`${s.url}/metrics`, { headers: { authorization: `Bearer ${FULL}` } })).text();
  const line = text.split('\n').find((l) => l.startsWith(`memory_sync_http_request_duration_seconds_count{method="GET",route="/v1/events",status="${status}"}`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

beforeAll(async () => {
  db = await createMigratedDatabase();
  writer = await connect(db.url);
  sc = await spawnSidecar({ DATABASE_URL: db.url, MEMORY_SYNC_TOKEN: FULL, MEMORY_SYNC_READ_TOKEN: READ });
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await sc?.stop();
  await killLeftovers();
  await writer?.end();
  await db?.drop();
});

describe('createSidecarClient({ token })', () => {
  it('with the full token: every call works', async () => {
    const c = client({ token: FULL });
    const id = '7d3f9a10-0000-4000-8000-000000000001';
    const { created } = await c.upsertPersonality(id, { name: 'tok-full', displayName: 'Full', systemPrompt: 'p' });
    expect(created).toBe(true);
    expect((await c.getPersonality(id))?.name).toBe('tok-full');
    const embedding = seededVectors(3, 1)[0]!;
    const mid = await c.storeMemory({ personalityId: id, channelId: 'c', content: 'x', embedding });
    expect((await c.findSimilarMemories({ personalityId: id, embedding, limit: 1 }))[0]?.id).toBe(mid);
    await c.sync();
    expect(await c.deleteMemory(mid)).toBe(true);
    expect(await c.deletePersonality(id)).toBe(true);
  });

  it('with the read token: lookups, search and sync work; every write is a ForbiddenError and changes nothing', async () => {
    const pid = await insertPersonality(writer, 'tok-read');
    const c = client({ token: READ });
    expect((await c.getPersonality(pid))?.name).toBe('tok-read');
    const embedding = seededVectors(4, 1)[0]!;
    expect(await c.findSimilarMemories({ personalityId: pid, embedding })).toEqual([]);
    await c.sync();
    const writes: Array<Promise<Error>> = [
      c.upsertPersonality(pid, { name: 'renamed', displayName: 'R', systemPrompt: 'p' }),
      c.deletePersonality(pid),
      c.storeMemory({ personalityId: pid, channelId: 'c', content: 'x', embedding }),
      c.deleteMemory('7d3f9a10-0000-4000-8000-0000000000ff'),
    ].map(rejection);
    for (const w of writes) {
      const err = await w;
      expect(err).toBeInstanceOf(ForbiddenError);
      expect(err).toMatchObject({ code: 'forbidden', message: expect.stringMatching(/needs the full token/) });
    }
    expect((await writer.query('SELECT name FROM personalities WHERE id = $1', [pid])).rows).toEqual([{ name: 'tok-read' }]);
    expect((await writer.query('SELECT count(*)::int AS n FROM memories WHERE "personalityId" = $1', [pid])).rows[0].n).toBe(0);
  });

  it('without a token or with a wrong one: UnauthorizedError on every call, at once', async () => {
    const pid = await insertPersonality(writer, 'tok-none');
    for (const c of [client(), client({ token: WRONG })]) {
      for (const call of [c.getPersonality(pid), c.sync(), c.findSimilarMemories({ personalityId: pid, embedding: seededVectors(5, 1)[0]! })].map(rejection)) {
        const err = await call;
        expect(err).toBeInstanceOf(UnauthorizedError);
        expect((err as UnauthorizedError).code).toBe('unauthorized');
      }
    }
  });

  it('refuses a token that cannot be sent in a header', () => {
    expect(() => createSidecarClient({ url: sc.url, token: 'has spaces in it, sixteen+' })).toThrow(ConfigError);
  });

  it('the local cache follows the event stream with the read token: it serves, and a write elsewhere invalidates it', async () => {
    const pid = await insertPersonality(writer, 'tok-cache');
    const c = client({ token: READ, localCache: {} });
    const core = c.localCache!;
    if (!core.serving) await once(core, 'up');
    await c.sync(); // the INSERT's own event, which evicts the id, is in before the fill
    expect((await c.getPersonality(pid))?.displayName).toBe('tok-cache');
    expect((core.peekEntity('personality', 0, [pid]) as { displayName?: string; name?: string } | null | undefined)?.displayName).toBe('tok-cache'); // cached in this process
    const invalidated = once(core, 'invalidation');
    await writer.query(`UPDATE personalities SET "displayName" = 'changed' WHERE id = $1`, [pid]);
    await invalidated;
    expect((await c.getPersonality(pid))?.displayName).toBe('changed');
    await c.sync(); // the barrier comes back on the authenticated stream
    expect(c.localCacheFailure).toBeUndefined();
  });

  it('an event stream refused with 401 stops: one attempt, no reconnect loop', async () => {
    const stream = new EventStream(new Client(new URL(sc.url).origin), '/v1/events', undefined, { authorization: `Bearer ${WRONG}` });
    const before = await eventStreamAnswers(sc, 401);
    const refused = once(stream, 'refused');
    stream.start();
    const [err] = (await refused) as [Error];
    expect(err).toBeInstanceOf(UnauthorizedError);
    expect(err.message).toMatch(/refused the event stream \(HTTP 401\): invalid token/);
    await stream.finished; // the loop has returned: nothing left to retry
    expect(await eventStreamAnswers(sc, 401)).toBe(before + 1);
    await stream.close();
  });

  it('a local cache whose token is refused never serves, says why, and its calls reject with the typed error', async () => {
    const pid = await insertPersonality(writer, 'tok-refused');
    const c = client({ token: WRONG, localCache: {} });
    // The refusal is reported as state, not an event, when the stream was never up: poll it.
    await vi.waitFor(() => expect(c.localCacheFailure).toBeInstanceOf(UnauthorizedError));
    expect(c.localCache!.serving).toBe(false);
    expect(await rejection(c.getPersonality(pid))).toBeInstanceOf(UnauthorizedError);
    expect(await rejection(c.sync())).toBeInstanceOf(UnauthorizedError);
    expect(c.localCache!.peekEntity('personality', 0, [pid])).toBeUndefined();
  });
});

describe('a token rotated under a running local cache', () => {
  it('the stream is refused on reconnect: the cache, down since the restart, stays down, names the refusal, and calls reject', async () => {
    const rotated = await createMigratedDatabase();
    const w = await connect(rotated.url);
    let first: SidecarProcess | undefined = await spawnSidecar({ DATABASE_URL: rotated.url, MEMORY_SYNC_TOKEN: FULL });
    let second: SidecarProcess | undefined;
    const c = createSidecarClient({ url: first.url, token: FULL, localCache: {} });
    try {
      const pid = await insertPersonality(w, 'rotated');
      const core = c.localCache!;
      if (!core.serving) await once(core, 'up');
      await c.sync(); // the INSERT's own event, which evicts the id, is in before the fill
      await c.getPersonality(pid);
      expect((core.peekEntity('personality', 0, [pid]) as { displayName?: string; name?: string } | null | undefined)?.name).toBe('rotated');

      const down = once(core, 'down');
      const port = new URL(first.url).port;
      expect(await first.stop()).toBe(0);
      first = undefined;
      await down;
      second = await spawnSidecar({ DATABASE_URL: rotated.url, MEMORY_SYNC_TOKEN: 'rotated-token-0123456789ab', MEMORY_SYNC_PORT: port });
      await vi.waitFor(() => expect(c.localCacheFailure).toBeInstanceOf(UnauthorizedError), { timeout: 10_000 });
      expect(c.localCacheFailure?.message).toMatch(/HTTP 401/);
      expect(core.serving).toBe(false);
      expect((core.peekEntity('personality', 0, [pid]) as { displayName?: string; name?: string } | null | undefined)).toBeUndefined();
      expect(await rejection(c.getPersonality(pid))).toBeInstanceOf(UnauthorizedError);
    } finally {
      await c.close();
      await first?.stop();
      await second?.stop();
      await w.end();
      await rotated.drop();
    }
  });
});
