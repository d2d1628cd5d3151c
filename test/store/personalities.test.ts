import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openEmbedded, type EmbeddedDatabase } from '../../src/backend/embedded.js';
import { deletePersonality, loadPersonality, upsertPersonality } from '../../src/store/builtin.js';
import { createPrisma, type PrismaClient } from '../../src/backend/prisma.js';
import { postgresDatabase, type Database } from '../../src/backend/queryable.js';
import { ConflictError, ValidationError } from '../../src/contract/errors.js';
import { validatePersonalityInput } from '../../src/validation/personality.js';
import { connect, createMigratedDatabase, type TestDb } from '../helpers/db.js';

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const BACKENDS = ['postgres', 'pglite'] as const;
type BackendName = (typeof BACKENDS)[number];

interface Backend {
  db: Database;
  /** Calls `fn` with each payload on `channel`. */
  listen(channel: string, fn: (payload: string) => void): Promise<void>;
}

let server: TestDb;
let pool: pg.Pool;
let listener: pg.Client;
let prisma: PrismaClient;
let embedded: EmbeddedDatabase;
const backends = {} as Record<BackendName, Backend>;

beforeAll(async () => {
  const [s, e] = await Promise.all([createMigratedDatabase(), openEmbedded({ logger })]);
  server = s;
  embedded = e;
  pool = new pg.Pool({ connectionString: server.url, max: 4 });
  prisma = createPrisma(pool);
  listener = await connect(server.url);
  const handlers = new Map<string, (payload: string) => void>();
  listener.on('notification', (n) => handlers.get(n.channel)?.(n.payload ?? ''));
  backends.postgres = {
    db: postgresDatabase(pool),
    async listen(channel, fn) {
      handlers.set(channel, fn);
      await listener.query(`LISTEN ${channel}`);
    },
  };
  backends.pglite = {
    db: embedded.queryable,
    async listen(channel, fn) {
      await embedded.db.listen(channel, fn);
    },
  };
});

afterAll(async () => {
  await prisma?.$disconnect();
  await listener?.end();
  await pool?.end();
  await server?.drop();
  await embedded?.close();
});

let n = 0;
const newId = () => `40000000-0000-4000-8000-${String(++n).padStart(12, '0')}`;
const body = (name: string, extra: Record<string, unknown> = {}) =>
  validatePersonalityInput({ name, displayName: `${name}!`, systemPrompt: `You are ${name}.`, ...extra });

describe.each(BACKENDS)('personalities on %s', (name) => {
  const b = () => backends[name];
  const db = () => b().db;

  it('creates a personality with an LLM config (column defaults filled in) and loads it back', async () => {
    const id = newId();
    const { personality, created } = await upsertPersonality(db(), id, body(`create-${name}`, { llmConfig: { model: 'gpt-x' } }));
    expect(created).toBe(true);
    expect(personality).toMatchObject({
      id,
      name: `create-${name}`,
      displayName: `create-${name}!`,
      systemPrompt: `You are create-${name}.`,
      isActive: true,
      llmConfig: { personalityId: id, model: 'gpt-x', temperature: 0.7, maxTokens: 1024 },
    });
    expect(personality.createdAt).toBeInstanceOf(Date);
    expect(personality.llmConfig!.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(await loadPersonality(db(), id)).toStrictEqual(personality);
    expect(await loadPersonality(db(), newId())).toBeNull();
  });

  it('updates: named fields replaced, absent optional fields kept, llmConfig: null removes the config', async () => {
    const id = newId();
    const first = (await upsertPersonality(db(), id, body(`update-${name}`, { isActive: false, llmConfig: { model: 'm1', temperature: 0.2, maxTokens: 50 } })))
      .personality;
    const second = await upsertPersonality(db(), id, body(`update-${name}`, { displayName: 'Renamed', llmConfig: { model: 'm2' } }));
    expect(second.created).toBe(false);
    expect(second.personality).toMatchObject({ displayName: 'Renamed', isActive: false, llmConfig: { model: 'm2', temperature: 0.2, maxTokens: 50 } });
    expect(second.personality.createdAt).toEqual(first.createdAt);
    expect(second.personality.updatedAt.getTime()).toBeGreaterThanOrEqual(first.updatedAt.getTime());
    expect(second.personality.llmConfig!.id).toBe(first.llmConfig!.id);

    const kept = await upsertPersonality(db(), id, body(`update-${name}`, { displayName: 'Renamed' }));
    expect(kept.personality.llmConfig).toMatchObject({ model: 'm2' });
    const removed = await upsertPersonality(db(), id, body(`update-${name}`, { displayName: 'Renamed', llmConfig: null }));
    expect(removed.personality.llmConfig).toBeNull();
    expect((await db().query('SELECT count(*)::int AS n FROM llm_configs WHERE "personalityId" = $1', [id])).rows[0].n).toBe(0);
  });

  it('a repeated identical upsert changes nothing: same updatedAt, no notification', async () => {
    const id = newId();
    const input = body(`same-${name}`, { llmConfig: { model: 'm', temperature: 1 } });
    const events: string[] = [];
    let marked!: () => void;
    await b().listen('memory_sync', (p) => events.push(p));
    await b().listen('test_marker', () => marked());
    const barrier = async () => {
      const seen = new Promise<void>((resolve) => (marked = resolve));
      await db().query(`SELECT pg_notify('test_marker', '')`);
      await seen; // every notification committed before it has arrived
    };
    const first = await upsertPersonality(db(), id, input);
    await barrier();
    expect(events.map((e) => JSON.parse(e)).map((e) => `${e.model}.${e.op}`).sort()).toEqual(['LlmConfig.INSERT', 'Personality.INSERT']);
    events.length = 0;

    const again = await upsertPersonality(db(), id, input);
    await barrier();
    expect(again).toStrictEqual({ personality: first.personality, created: false });
    expect(events).toEqual([]);
  });

  it('a name another personality has is a ConflictError on "name", and nothing is written', async () => {
    const taken = newId();
    await upsertPersonality(db(), taken, body(`taken-${name}`));
    const id = newId();
    const err = await upsertPersonality(db(), id, body(`taken-${name}`, { llmConfig: { model: 'm' } })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConflictError);
    expect(err).toMatchObject({ code: 'conflict', field: 'name' });
    expect(await loadPersonality(db(), id)).toBeNull();

    // Renaming onto a taken name: the row keeps its old values.
    const other = newId();
    const before = (await upsertPersonality(db(), other, body(`free-${name}`))).personality;
    await expect(upsertPersonality(db(), other, body(`taken-${name}`))).rejects.toMatchObject({ code: 'conflict', field: 'name' });
    expect(await loadPersonality(db(), other)).toStrictEqual(before);
  });

  it('the personality and its config are one transaction: a failing config write leaves no personality', async () => {
    const id = newId();
    // Bypasses validation on purpose: NUL cannot be stored in text.
    const err = await upsertPersonality(db(), id, { ...body(`atomic-${name}`), llmConfig: { model: 'bad\u0000model' } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(ConflictError);
    expect(await loadPersonality(db(), id)).toBeNull();
  });

  it('deletePersonality removes it and its config; a second delete is false', async () => {
    const id = newId();
    await upsertPersonality(db(), id, body(`delete-${name}`, { llmConfig: { model: 'm' } }));
    expect(await deletePersonality(db(), id)).toBe(true);
    expect(await loadPersonality(db(), id)).toBeNull();
    expect((await db().query('SELECT count(*)::int AS n FROM llm_configs WHERE "personalityId" = $1', [id])).rows[0].n).toBe(0);
    expect(await deletePersonality(db(), id)).toBe(false);
  });
});

describe('loadPersonality and Prisma', () => {
  it('returns exactly what Prisma findUnique({ include: { llmConfig: true } }) returns, keys in the same order', async () => {
    const db = backends.postgres.db;
    const withConfig = newId();
    const without = newId();
    await upsertPersonality(db, withConfig, body('prisma-a', { llmConfig: { model: 'm', temperature: 1.25, maxTokens: 77 } }));
    await upsertPersonality(db, without, body('prisma-b', { isActive: false }));
    for (const id of [withConfig, without]) {
      const ours = await loadPersonality(db, id);
      const theirs = await prisma.personality.findUnique({ where: { id }, include: { llmConfig: true } });
      expect(ours).toStrictEqual(theirs);
      expect(Object.keys(ours!)).toEqual(Object.keys(theirs!));
      if (theirs!.llmConfig) expect(Object.keys(ours!.llmConfig!)).toEqual(Object.keys(theirs!.llmConfig));
    }
  });
});

describe('validatePersonalityInput (the PUT body)', () => {
  const ok = { name: 'n', displayName: 'd', systemPrompt: 's' };
  const field = (input: unknown) => {
    try {
      validatePersonalityInput(input);
      return null;
    } catch (err) {
      expect(err).toBeInstanceOf(ValidationError);
      return (err as ValidationError).field;
    }
  };

  it('accepts the documented shape', () => {
    expect(validatePersonalityInput({ ...ok, isActive: false, llmConfig: { model: 'm', temperature: 2, maxTokens: 1_000_000 } })).toEqual({
      ...ok,
      isActive: false,
      llmConfig: { model: 'm', temperature: 2, maxTokens: 1_000_000 },
    });
    expect(validatePersonalityInput({ ...ok, llmConfig: null })).toEqual({ ...ok, llmConfig: null });
  });

  it('names the offending field exactly as the body spells it', () => {
    expect(field(null)).toBe('body');
    expect(field([])).toBe('body');
    expect(field({ displayName: 'd', systemPrompt: 's' })).toBe('name');
    expect(field({ ...ok, name: '' })).toBe('name');
    expect(field({ ...ok, name: 'x'.repeat(201) })).toBe('name');
    expect(field({ ...ok, displayName: 'a\u0000b' })).toBe('displayName');
    expect(field({ ...ok, systemPrompt: '\ud800' })).toBe('systemPrompt');
    expect(field({ ...ok, systemPrompt: 'x'.repeat(100_001) })).toBe('systemPrompt');
    expect(field({ ...ok, isActive: 'yes' })).toBe('isActive');
    expect(field({ ...ok, isactive: true })).toBe('isactive');
    expect(field({ ...ok, llmConfig: 'gpt' })).toBe('llmConfig');
    expect(field({ ...ok, llmConfig: {} })).toBe('llmConfig.model');
    expect(field({ ...ok, llmConfig: { model: 'm', temperature: 2.01 } })).toBe('llmConfig.temperature');
    expect(field({ ...ok, llmConfig: { model: 'm', temperature: -0.1 } })).toBe('llmConfig.temperature');
    expect(field({ ...ok, llmConfig: { model: 'm', maxTokens: 0 } })).toBe('llmConfig.maxTokens');
    expect(field({ ...ok, llmConfig: { model: 'm', maxTokens: 1.5 } })).toBe('llmConfig.maxTokens');
    expect(field({ ...ok, llmConfig: { model: 'm', maxTokens: 1_000_001 } })).toBe('llmConfig.maxTokens');
    expect(field({ ...ok, llmConfig: { model: 'm', top_p: 1 } })).toBe('llmConfig.top_p');
    expect(field(JSON.parse('{"name":"n","displayName":"d","systemPrompt":"s","__proto__":{"isActive":false}}'))).toBe('__proto__');
  });
});
