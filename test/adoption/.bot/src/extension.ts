// The bot reads personalities through memory-sync's Prisma extension while
// writing with its own Prisma client; memory-sync borrows the bot's pg.Pool.
// Observations go to stdout as one JSON line; the test checks them.
import { randomUUID } from 'node:crypto';
import { createMemorySync, memorySyncExtension } from 'memory-sync';
import { Prisma } from '../generated/prisma/client.js';
import { connectionsByApp, openDatabase, report } from './db.js';

const POOL_MAX = 4;
const { pool, prisma } = openDatabase(POOL_MAX);

const connections: Record<string, Record<string, number>> = {};
await pool.query('SELECT 1');
connections.before = await connectionsByApp(pool);

const memory = createMemorySync({ pool });
await memory.start();
const db = prisma.$extends(memorySyncExtension(memory));

const withConfig = { llmConfig: true } as const;
/** Through the extension: the cache. */
const cached = (id: string) => db.personality.findUnique({ where: { id }, include: withConfig });
/** The bot's plain client: the database. */
const truth = (id: string) => prisma.personality.findUnique({ where: { id }, include: withConfig });

interface Step {
  step: string;
  /** The first read after the write, through the extension. */
  got: unknown;
  /** The same findUnique on the plain client. */
  want: unknown;
  /** Cache hits added by a second read of the same personality. */
  hitsOnRepeat: number;
  repeatEqual: boolean;
}
const steps: Step[] = [];
async function check(step: string, id: string): Promise<void> {
  const got = await cached(id);
  const want = await truth(id);
  const hits = memory.stats().hits;
  const again = await cached(id);
  steps.push({ step, got, want, hitsOnRepeat: memory.stats().hits - hits, repeatEqual: JSON.stringify(again) === JSON.stringify(got) });
}

const ada = await prisma.personality.findUniqueOrThrow({ where: { name: 'ada' } });
const bob = await prisma.personality.findUniqueOrThrow({ where: { name: 'bob' } });
const statsAtStart = memory.stats();

await check('first read', ada.id);
await db.personality.update({ where: { id: ada.id }, data: { displayName: 'Ada Lovelace', avatarUrl: 'https://example.com/ada.png' } });
await check('update personality', ada.id);
await db.llmConfig.update({ where: { personalityId: ada.id }, data: { model: 'gpt-next', temperature: 0.25 } });
await check('update llmConfig', ada.id);
await check('bob before his config', bob.id);
await db.llmConfig.create({ data: { personalityId: bob.id, model: 'claude-next', maxTokens: 2048 } });
await check('create llmConfig', bob.id);
await db.llmConfig.delete({ where: { personalityId: ada.id } });
await check('delete llmConfig', ada.id);
// A nested write: the personality and its config in one statement tree.
await db.personality.update({ where: { id: bob.id }, data: { systemPrompt: 'You are Bob, again', llmConfig: { update: { model: 'claude-nested' } } } });
await check('nested update', bob.id);
const carolId = randomUUID();
await check('carol before she exists', carolId);
await db.personality.create({ data: { id: carolId, name: 'carol', displayName: 'Carol', systemPrompt: 'You are Carol', ownerId: 'owner-7' } });
await check('create personality', carolId);
await db.personality.delete({ where: { id: bob.id } });
await check('delete personality', bob.id);

let orThrow: { code?: unknown; isPrismaError: boolean } | null = null;
try {
  await db.personality.findUniqueOrThrow({ where: { id: bob.id }, include: withConfig });
} catch (err) {
  orThrow = { code: (err as { code?: unknown }).code, isPrismaError: err instanceof Prisma.PrismaClientKnownRequestError };
}
const statsAfterWrites = memory.stats();

// Everything else passes through to Prisma untouched: same answers, no cache traffic.
const passThrough = [
  ['findUnique with select', () => db.personality.findUnique({ where: { id: ada.id }, select: { displayName: true, avatarUrl: true } }), () => prisma.personality.findUnique({ where: { id: ada.id }, select: { displayName: true, avatarUrl: true } })],
  ['findUnique by name', () => db.personality.findUnique({ where: { name: 'carol' } }), () => prisma.personality.findUnique({ where: { name: 'carol' } })],
  ['findMany', () => db.personality.findMany({ orderBy: { name: 'asc' }, include: { llmConfig: true } }), () => prisma.personality.findMany({ orderBy: { name: 'asc' }, include: { llmConfig: true } })],
  ['count', () => db.personality.count(), () => prisma.personality.count()],
  ['memories', () => db.memory.findMany({ orderBy: { content: 'asc' }, select: { content: true, importance: true } }), () => prisma.memory.findMany({ orderBy: { content: 'asc' }, select: { content: true, importance: true } })],
  ['own table', () => db.guildSetting.findMany({ orderBy: { guildId: 'asc' } }), () => prisma.guildSetting.findMany({ orderBy: { guildId: 'asc' } })],
] as const;
const passed: { query: string; got: unknown; want: unknown }[] = [];
for (const [query, through, direct] of passThrough) passed.push({ query, got: await through(), want: await direct() });
const statsAfterPassThrough = memory.stats();

connections.running = await connectionsByApp(pool);
await memory.close();
const poolStillOpen = (await pool.query<{ ok: number }>('SELECT 1 AS ok')).rows[0]?.ok === 1;
// The listener's backend leaves pg_stat_activity just after its socket closes: no event says when.
let afterClose = await connectionsByApp(pool);
for (let i = 0; i < 100 && afterClose['memory-sync-listener']; i++) {
  await new Promise((resolve) => setTimeout(resolve, 20));
  afterClose = await connectionsByApp(pool);
}
connections.afterClose = afterClose;

const pick = ({ hits, misses }: { hits: number; misses: number }) => ({ hits, misses });
report({
  poolMax: POOL_MAX,
  connections,
  poolStillOpen,
  steps,
  orThrow,
  stats: { atStart: pick(statsAtStart), afterWrites: pick(statsAfterWrites), afterPassThrough: pick(statsAfterPassThrough) },
  passed,
});
await prisma.$disconnect();
await pool.end();
