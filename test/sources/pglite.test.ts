import { once } from 'node:events';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openEmbedded, type EmbeddedDatabase } from '../../src/backend/embedded.js';
import { insertMemory, upsertPersonality } from '../../src/store/builtin.js';
import { DatabaseUnavailableError, PermanentError } from '../../src/contract/errors.js';
import type { ChangeEvent } from '../../src/contract/change-event.js';
import { PgliteSource } from '../../src/sources/pglite.js';
import type { UpInfo } from '../../src/sources/source.js';
import { validatePersonalityInput } from '../../src/validation/personality.js';
import { seededVectors } from '../helpers/db.js';

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

let embedded: EmbeddedDatabase;
const sources: PgliteSource[] = [];

beforeAll(async () => {
  embedded = await openEmbedded({ logger });
});
afterEach(async () => {
  await Promise.all(sources.splice(0).map((s) => s.close()));
});
afterAll(async () => {
  await embedded?.close();
});

/** A started source and everything it emitted, in order. */
async function started(channel?: string) {
  const source = new PgliteSource({ db: embedded.db, logger, ...(channel ? { channel } : {}) });
  sources.push(source);
  const log: Array<
    | { type: 'change'; event: ChangeEvent; receivedAt: number }
    | { type: 'invalid'; reason: string; sample: string; bytes: number; ours: boolean }
    | { type: 'barrier'; token: string }
    | { type: 'up'; info: UpInfo }
    | { type: 'down' }
  > = [];
  source.on('change', (event, receivedAt) => log.push({ type: 'change', event, receivedAt }));
  source.on('invalid', (reason, sample, bytes, ours) => log.push({ type: 'invalid', reason, sample, bytes, ours }));
  source.on('barrier', (token) => log.push({ type: 'barrier', token }));
  source.on('up', (info) => log.push({ type: 'up', info }));
  source.on('down', () => log.push({ type: 'down' }));
  await source.start();
  const changes = () => log.flatMap((e) => (e.type === 'change' ? [e.event] : []));
  const invalid = () => log.flatMap((e) => (e.type === 'invalid' ? [e] : []));
  return { source, log, changes, invalid };
}

let n = 0;
const newId = (prefix = '5') => `${prefix}0000000-0000-4000-8000-${String(++n).padStart(12, '0')}`;
const personality = (name: string) => validatePersonalityInput({ name, displayName: name, systemPrompt: 'p' });

describe('PgliteSource', () => {
  it('is up once listening: state, isUp and one up event with nothing lost', async () => {
    const { source, log } = await started();
    expect(source).toMatchObject({ name: 'pglite', state: 'up', isUp: true, resumable: false });
    expect(log).toEqual([{ type: 'up', info: { first: true, lost: null } }]);
    await expect(source.start()).rejects.toThrow(/already up/);
  });

  it('a write through the database is a change naming its rows, emitted before sync() resolves', async () => {
    const { source, changes } = await started();
    const pid = newId();
    await upsertPersonality(embedded.queryable, pid, personality(`source-${pid}`));
    const memories = [newId('6'), newId('6'), newId('6')];
    await embedded.queryable.transaction(async (tx) => {
      for (const [i, id] of memories.entries()) {
        await insertMemory(tx, { id, personalityId: pid, channelId: 'c', content: `m${i}`, embedding: seededVectors(i + 1, 1)[0]! });
      }
    });
    await source.sync();
    expect(changes()).toEqual([
      expect.objectContaining({ model: 'Personality', op: 'INSERT', scope: 'rows', fields: ['id'], rows: [[pid]] }),
      expect.objectContaining({ model: 'Memory', op: 'INSERT', fields: ['id', 'personalityId'], rows: [[memories[0], pid]] }),
      expect.objectContaining({ model: 'Memory', op: 'INSERT', rows: [[memories[1], pid]] }),
      expect.objectContaining({ model: 'Memory', op: 'INSERT', rows: [[memories[2], pid]] }),
    ]);
    // One statement, many rows: one event (statement-level trigger).
    await embedded.queryable.query(`DELETE FROM memories WHERE "personalityId" = $1`, [pid]);
    await source.sync();
    const last = changes().at(-1)!;
    expect(last).toMatchObject({ model: 'Memory', op: 'DELETE', scope: 'rows', fields: ['id', 'personalityId'], rows: [], chunk: 1, chunks: 1 });
    // Rows that left are named by their id alone.
    expect([...last.gone].sort()).toEqual([...memories].sort().map((id) => [id]));
  });

  it('a rolled-back write sends nothing', async () => {
    const { source, changes } = await started();
    const err = await embedded.queryable
      .transaction(async (tx) => {
        await tx.query(`INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ('rolled', 'r', 'p', now())`);
        throw new Error('abandon');
      })
      .catch((e: unknown) => e);
    expect((err as Error).message).toBe('abandon');
    await source.sync();
    expect(changes()).toEqual([]);
  });

  it('bad payloads are invalid events, ours only for JSON objects with an "ms" key, never throws', async () => {
    const { source, invalid, changes } = await started();
    const v1 = JSON.stringify({ v: 1, table: 'memories', op: 'INSERT', scope: 'rows', ids: [newId()], personalityIds: [newId()], txid: '1', ts: 1, chunk: 1, chunks: 1 });
    const badTuple = JSON.stringify({ ms: 2, model: 'Memory', op: 'INSERT', scope: 'rows', fields: ['id', 'personalityId'], rows: [[newId()]], gone: [], txid: '1', ts: 1, chunk: 1, chunks: 1 });
    const payloads: Array<[string, boolean, RegExp]> = [
      ['not json', false, /^not JSON/],
      ['[1,2]', false, /no "ms" key/],
      ['{"type":"all"}', false, /no "ms" key/],
      [v1, false, /no "ms" key/],
      ['', false, /^empty payload/],
      ['{"ms":2}', true, /^model:|^op:|^scope:/],
      ['{"ms":3,"model":"Memory"}', true, /^ms:/],
      [badTuple, true, /one value per field/],
    ];
    for (const [payload] of payloads) await embedded.queryable.query(`SELECT pg_notify('memory_sync', $1)`, [payload]);
    await source.sync();
    expect(changes()).toEqual([]);
    expect(invalid().map((e) => [e.sample, e.ours, e.bytes])).toEqual(payloads.map(([p, ours]) => [p, ours, Buffer.byteLength(p)]));
    for (const [i, [, , reason]] of payloads.entries()) expect(invalid()[i]!.reason).toMatch(reason);
    expect(source.state).toBe('up');
  });

  it('listens on its channel (memory_sync unless told), with sync() markers on <channel>_barrier', async () => {
    const byDefault = await started();
    const bot = await started('bot_sync');
    const event = (txid: string) =>
      JSON.stringify({ ms: 2, model: 'Personality', op: 'UPDATE', scope: 'rows', fields: ['id'], rows: [[newId()]], gone: [], txid, ts: 1, chunk: 1, chunks: 1 });
    await embedded.queryable.query(`SELECT pg_notify('cache_invalidation', $1)`, [event('1')]); // 0.1's channel: nobody
    await embedded.queryable.query(`SELECT pg_notify('memory_sync', $1)`, [event('2')]);
    await embedded.queryable.query(`SELECT pg_notify('bot_sync', $1)`, [event('3')]);
    await embedded.queryable.query(`SELECT pg_notify('bot_sync_barrier', 'bot-token')`);
    await byDefault.source.sync();
    await bot.source.sync();
    expect(byDefault.changes().map((e) => e.txid)).toEqual(['2']);
    expect(bot.changes().map((e) => e.txid)).toEqual(['3']);
    const tokens = (l: typeof bot.log) => l.flatMap((e) => (e.type === 'barrier' ? [e.token] : []));
    // Each saw its own sync() marker; only bot_sync's saw bot-token.
    expect(tokens(bot.log)[0]).toBe('bot-token');
    expect(tokens(byDefault.log)).not.toContain('bot-token');
    expect(tokens(bot.log)).toHaveLength(2);
    expect(tokens(byDefault.log)).toHaveLength(1);
  });

  it('every barrier token is emitted, its own and foreign ones; sync leaves no timer behind', async () => {
    const { source, log } = await started();
    await embedded.queryable.query(`SELECT pg_notify('memory_sync_barrier', 'foreign-token')`);
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    await source.sync();
    expect(timers()).toBe(before);
    const tokens = log.flatMap((e) => (e.type === 'barrier' ? [e.token] : []));
    expect(tokens).toHaveLength(2);
    expect(tokens[0]).toBe('foreign-token');
    expect(tokens[1]).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('close: state closed, sync rejects with DatabaseUnavailableError, no events for later writes', async () => {
    const { source, log } = await started();
    const other = await started(); // still open: shows the write did notify
    await source.close();
    expect(source).toMatchObject({ state: 'closed', isUp: false });
    await expect(source.sync()).rejects.toBeInstanceOf(DatabaseUnavailableError);
    const pid = newId();
    const seen = once(other.source, 'change');
    await upsertPersonality(embedded.queryable, pid, personality(`after-close-${pid}`));
    await seen;
    expect(log.map((e) => e.type)).toEqual(['up']);
    await source.close(); // idempotent
  });

  it('sync() before start rejects', async () => {
    const idle = new PgliteSource({ db: embedded.db, logger });
    await expect(idle.sync()).rejects.toBeInstanceOf(DatabaseUnavailableError);
    expect(idle.state).toBe('idle');
  });

  // Last: it closes the file's database.
  it('once the database is closed, sync() rejects (no unhandled rejection) and start() is a PermanentError', async () => {
    const { source } = await started();
    await embedded.close();
    const err = await source.sync(1_000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatabaseUnavailableError);
    expect((err as Error).message).toMatch(/not sent/);
    const late = new PgliteSource({ db: embedded.db, logger });
    await expect(late.start()).rejects.toBeInstanceOf(PermanentError);
    expect(late.state).toBe('closed');
  });
});
