import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemorySync, type MemorySync } from '../../src/client/memory-sync.js';
import { memorySyncExtension } from '../../src/client/prisma-extension.js';
import { createPrisma, type PrismaClient } from '../../src/backend/prisma.js';
import { Prisma } from '../../src/generated/prisma/client.js';
import { connect, createMigratedDatabase, insertPersonality, type TestDb } from '../helpers/db.js';

// memorySyncExtension on the repo's own generated client, over real
// PostgreSQL: the bot's pool is borrowed by createMemorySync({ pool }) and by
// Prisma's pg adapter alike.

let db: TestDb;
let pool: pg.Pool;
let prisma: PrismaClient;
let memory: MemorySync;
let writer: pg.Client;
const extend = (p: PrismaClient, m: MemorySync) => p.$extends(memorySyncExtension(m));
let xprisma: ReturnType<typeof extend>;

beforeAll(async () => {
  db = await createMigratedDatabase('ms_prisma_ext');
  pool = new pg.Pool({ connectionString: db.url, max: 4 });
  prisma = createPrisma(pool);
  memory = createMemorySync({ pool, logger: pino({ level: 'silent' }), summaryIntervalMs: 0 });
  await memory.start();
  xprisma = extend(prisma, memory);
  writer = await connect(db.url);
});
afterAll(async () => {
  await memory?.close();
  await prisma?.$disconnect();
  await pool?.end();
  await writer?.end();
  await db?.drop();
});

const withConfig = { llmConfig: true } as const;

async function personalityWithConfig(name: string): Promise<string> {
  const id = await insertPersonality(writer, name);
  await writer.query(`INSERT INTO llm_configs ("personalityId", model, temperature, "updatedAt") VALUES ($1, 'model-' || $2, 0.5, now())`, [id, name]);
  await memory.sync(); // the INSERTs' own events, which evict the id, are in before a test fills it
  return id;
}

const counters = () => {
  const { hits, misses } = memory.stats();
  return { hits, misses };
};

/** The error a call rejects with; fails when it resolves. */
async function rejection(p: Promise<unknown>): Promise<any> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: unknown) => err,
  );
}

describe('memorySyncExtension: reads', () => {
  it('findUnique with include: { llmConfig: true } is served from the cache, equal to what Prisma returns', async () => {
    const id = await personalityWithConfig('incl');
    const direct = await prisma.personality.findUnique({ where: { id }, include: withConfig });
    const first = await xprisma.personality.findUnique({ where: { id }, include: withConfig });
    const before = counters();
    const second = await xprisma.personality.findUnique({ where: { id }, include: withConfig });
    expect(counters()).toEqual({ hits: before.hits + 1, misses: before.misses });
    expect(first).toEqual(direct);
    expect(second).toEqual(direct);
    expect(second?.llmConfig?.createdAt).toBeInstanceOf(Date);
    expect(typeof second?.llmConfig?.temperature).toBe('number');
  });

  it('findUnique without include is served from the cache, without llmConfig, as Prisma returns it', async () => {
    const id = await personalityWithConfig('plain');
    const direct = await prisma.personality.findUnique({ where: { id } });
    await xprisma.personality.findUnique({ where: { id } });
    const before = counters();
    const cached = await xprisma.personality.findUnique({ where: { id } });
    expect(counters().hits).toBe(before.hits + 1);
    expect(cached).toEqual(direct);
    expect(Object.keys(cached!).sort()).toEqual(Object.keys(direct!).sort());
    expect(cached).not.toHaveProperty('llmConfig');
  });

  it('returns a mutable copy: changing it changes neither the cache nor the next answer', async () => {
    const id = await personalityWithConfig('mutable');
    const direct = await prisma.personality.findUnique({ where: { id }, include: withConfig });
    const a = await xprisma.personality.findUnique({ where: { id }, include: withConfig });
    expect(Object.isFrozen(a)).toBe(false);
    expect(Object.isFrozen(a?.llmConfig)).toBe(false);
    a!.displayName = 'changed by the caller';
    a!.llmConfig!.model = 'changed too';
    const plain = await xprisma.personality.findUnique({ where: { id } });
    plain!.systemPrompt = 'also changed';
    const before = counters();
    const b = await xprisma.personality.findUnique({ where: { id }, include: withConfig });
    expect(counters().hits).toBe(before.hits + 1);
    expect(b).toEqual(direct);
    expect(b).not.toBe(a);
  });

  it('a missing id: findUnique gives null, findUniqueOrThrow throws Prisma\'s own error', async () => {
    const missing = '00000000-0000-4000-8000-00000000e404';
    expect(await xprisma.personality.findUnique({ where: { id: missing }, include: withConfig })).toBeNull();
    expect(await xprisma.personality.findUnique({ where: { id: missing } })).toBeNull();
    const theirs = await rejection(prisma.personality.findUniqueOrThrow({ where: { id: missing }, include: withConfig }));
    const ours = await rejection(xprisma.personality.findUniqueOrThrow({ where: { id: missing }, include: withConfig }));
    expect(theirs).toBeInstanceOf(Prisma.PrismaClientKnownRequestError);
    expect(ours).toBeInstanceOf(Prisma.PrismaClientKnownRequestError);
    expect(ours.code).toBe('P2025');
    expect(ours.code).toBe(theirs.code);
    // The first lines name the call site, which differs; the reason is Prisma's.
    expect(ours.message.trim().split('\n').at(-1)).toBe(theirs.message.trim().split('\n').at(-1));
  });

  it('findUniqueOrThrow on an existing id is served from the cache', async () => {
    const id = await personalityWithConfig('orthrow');
    await xprisma.personality.findUnique({ where: { id }, include: withConfig });
    const before = counters();
    const p = await xprisma.personality.findUniqueOrThrow({ where: { id }, include: withConfig });
    expect(counters().hits).toBe(before.hits + 1);
    expect(p).toEqual(await prisma.personality.findUniqueOrThrow({ where: { id }, include: withConfig }));
  });

  it('select, other where keys, nested include options and other operations pass through untouched', async () => {
    const id = await personalityWithConfig('through');
    await xprisma.personality.findUnique({ where: { id }, include: withConfig }); // cached, so a wrongly served query would hit
    const before = counters();
    const queries: [string, () => Promise<unknown>, () => Promise<unknown>][] = [
      ['select', () => xprisma.personality.findUnique({ where: { id }, select: { name: true } }), () => prisma.personality.findUnique({ where: { id }, select: { name: true } })],
      ['omit', () => xprisma.personality.findUnique({ where: { id }, omit: { systemPrompt: true } }), () => prisma.personality.findUnique({ where: { id }, omit: { systemPrompt: true } })],
      ['where by name', () => xprisma.personality.findUnique({ where: { name: 'through' } }), () => prisma.personality.findUnique({ where: { name: 'through' } })],
      ['where id and more', () => xprisma.personality.findUnique({ where: { id, isActive: false } }), () => prisma.personality.findUnique({ where: { id, isActive: false } })],
      [
        'include with select',
        () => xprisma.personality.findUnique({ where: { id }, include: { llmConfig: { select: { model: true } } } }),
        () => prisma.personality.findUnique({ where: { id }, include: { llmConfig: { select: { model: true } } } }),
      ],
      ['include memories', () => xprisma.personality.findUnique({ where: { id }, include: { memories: true } }), () => prisma.personality.findUnique({ where: { id }, include: { memories: true } })],
      ['findFirst', () => xprisma.personality.findFirst({ where: { id } }), () => prisma.personality.findFirst({ where: { id } })],
      ['findMany', () => xprisma.personality.findMany({ where: { id }, include: withConfig }), () => prisma.personality.findMany({ where: { id }, include: withConfig })],
      ['count', () => xprisma.personality.count(), () => prisma.personality.count()],
      ['llmConfig.findUnique', () => xprisma.llmConfig.findUnique({ where: { personalityId: id } }), () => prisma.llmConfig.findUnique({ where: { personalityId: id } })],
    ];
    for (const [label, through, direct] of queries) expect(await through(), label).toEqual(await direct());
    expect(await xprisma.personality.findUnique({ where: { id }, select: { name: true } })).toEqual({ name: 'through' });
    expect(counters()).toEqual(before);
  });

  it('a malformed id fails as Prisma fails', async () => {
    const theirs = await rejection(prisma.personality.findUnique({ where: { id: 'not-a-uuid' } }));
    const ours = await rejection(xprisma.personality.findUnique({ where: { id: 'not-a-uuid' } }));
    expect(theirs).toBeInstanceOf(Prisma.PrismaClientKnownRequestError);
    // Bot code that handles Prisma's errors must not meet memory-sync's ValidationError here.
    expect({ name: ours?.name, code: ours?.code }).toEqual({ name: theirs.name, code: theirs.code });
  });
});

describe('memorySyncExtension: writes are read back fresh', () => {
  it('after each update, create and delete through the extended client', async () => {
    const id = await personalityWithConfig('rw');
    await xprisma.personality.findUnique({ where: { id }, include: withConfig });
    for (let i = 1; i <= 10; i++) {
      await xprisma.personality.update({ where: { id }, data: { displayName: `rw ${i}` } });
      expect((await xprisma.personality.findUnique({ where: { id }, include: withConfig }))?.displayName).toBe(`rw ${i}`);
      await xprisma.llmConfig.update({ where: { personalityId: id }, data: { maxTokens: 100 + i } });
      expect((await xprisma.personality.findUnique({ where: { id }, include: withConfig }))?.llmConfig?.maxTokens).toBe(100 + i);
    }
    await xprisma.llmConfig.delete({ where: { personalityId: id } });
    expect((await xprisma.personality.findUnique({ where: { id }, include: withConfig }))?.llmConfig).toBeNull();
    await xprisma.llmConfig.create({ data: { personalityId: id, model: 'again' } });
    expect((await xprisma.personality.findUnique({ where: { id }, include: withConfig }))?.llmConfig?.model).toBe('again');
    await xprisma.personality.updateMany({ where: { id }, data: { isActive: false } });
    expect((await xprisma.personality.findUnique({ where: { id } }))?.isActive).toBe(false);
    await xprisma.personality.upsert({ where: { id }, create: { name: 'never', displayName: 'x', systemPrompt: 'x' }, update: { systemPrompt: 'upserted' } });
    expect((await xprisma.personality.findUnique({ where: { id } }))?.systemPrompt).toBe('upserted');
    await xprisma.personality.delete({ where: { id } });
    expect(await xprisma.personality.findUnique({ where: { id }, include: withConfig })).toBeNull();
    // Whatever the cache did, each answer was the database's.
    expect(await prisma.personality.findUnique({ where: { id } })).toBeNull();
  });

  it('a personality created after a cached "does not exist" is found', async () => {
    const id = '00000000-0000-4000-8000-0000000c0ffe';
    expect(await xprisma.personality.findUnique({ where: { id } })).toBeNull();
    await xprisma.personality.create({ data: { id, name: 'late', displayName: 'Late', systemPrompt: 'You are late' } });
    expect((await xprisma.personality.findUnique({ where: { id } }))?.name).toBe('late');
  });

  it('with an external writer committing all along: own writes always read back, the external value never goes back in time', async () => {
    const id = await personalityWithConfig('contended');
    // The external writer owns systemPrompt (a counter); the extended client owns displayName.
    let committed = 0;
    let stop = false;
    const external = (async () => {
      for (let n = 1; !stop; n++) {
        await writer.query(`UPDATE personalities SET "systemPrompt" = $2 WHERE id = $1`, [id, String(n)]);
        committed = n;
      }
    })();
    try {
      let seen = 0;
      for (let i = 1; i <= 30; i++) {
        const before = committed;
        await xprisma.personality.update({ where: { id }, data: { displayName: `own ${i}` } });
        const p = await xprisma.personality.findUnique({ where: { id }, include: withConfig });
        expect(p?.displayName).toBe(`own ${i}`);
        const n = Number(p?.systemPrompt.replace(/\D/g, '') || 0);
        // The update's barrier covers every commit that came before it.
        expect(n).toBeGreaterThanOrEqual(before);
        expect(n).toBeGreaterThanOrEqual(seen);
        seen = n;
      }
      expect(committed).toBeGreaterThan(0);
    } finally {
      stop = true;
      await external;
    }
    await memory.sync();
    const last = await xprisma.personality.findUnique({ where: { id } });
    expect(last?.systemPrompt).toBe(String(committed));
  });

  it('a write in an interactive $transaction is read back once the transaction has resolved', async () => {
    const id = await personalityWithConfig('tx');
    await xprisma.personality.findUnique({ where: { id } });
    const stale: number[] = [];
    for (let i = 1; i <= 20; i++) {
      await xprisma.$transaction(async (tx) => {
        await tx.personality.update({ where: { id }, data: { displayName: `tx ${i}` } });
      });
      if ((await xprisma.personality.findUnique({ where: { id } }))?.displayName !== `tx ${i}`) stale.push(i);
    }
    expect(stale).toEqual([]);
  });

  it('a write in a batch $transaction is read back once it has resolved', async () => {
    const id = await personalityWithConfig('batch');
    await xprisma.personality.findUnique({ where: { id } });
    const stale: number[] = [];
    for (let i = 1; i <= 20; i++) {
      await xprisma.$transaction([xprisma.personality.update({ where: { id }, data: { displayName: `batch ${i}` } })]);
      if ((await xprisma.personality.findUnique({ where: { id } }))?.displayName !== `batch ${i}`) stale.push(i);
    }
    expect(stale).toEqual([]);
  });
});
