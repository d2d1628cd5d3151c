// The bot writes with its own Prisma client and reads through the sidecar
// (`memory-sync start`), with sync() as the barrier between the two.
// Observations go to stdout as one JSON line; the test checks them.
import { createSidecarClient, memorySyncExtension, type MemoryClient, type SidecarClient } from 'memory-sync';
import { openDatabase, report } from './db.js';

const WRITES = 20;
const url = process.env.SIDECAR_URL;
if (!url) throw new Error('SIDECAR_URL is required');
const { pool, prisma } = openDatabase(2);

interface Read {
  write: number;
  want: { displayName: string; model: string | null };
  got: { displayName: string; model: string | null } | null;
}
const shape = (p: { displayName: string; llmConfig: { model: string } | null } | null) =>
  p && { displayName: p.displayName, model: p.llmConfig?.model ?? null };

/** Writes with the bot's Prisma, then sync(), then reads through `read`; alternates personality and config writes. */
async function writeThenRead(label: string, memory: MemoryClient, read: (id: string) => Promise<Read['got']>): Promise<{ reads: Read[]; deleted: unknown }> {
  const { id } = await prisma.personality.create({
    data: { name: `sidecar-${label}`, displayName: `${label} 0`, systemPrompt: 'You are a test', llmConfig: { create: { model: `${label}-m0` } } },
  });
  let want: Read['want'] = { displayName: `${label} 0`, model: `${label}-m0` };
  const reads: Read[] = [{ write: 0, want, got: await read(id) }];
  for (let i = 1; i <= WRITES; i++) {
    if (i % 2) {
      await prisma.personality.update({ where: { id }, data: { displayName: `${label} ${i}` } });
      want = { ...want, displayName: `${label} ${i}` };
    } else {
      await prisma.llmConfig.update({ where: { personalityId: id }, data: { model: `${label}-m${i}` } });
      want = { ...want, model: `${label}-m${i}` };
    }
    await memory.sync();
    reads.push({ write: i, want, got: await read(id) });
  }
  await prisma.personality.delete({ where: { id } });
  await memory.sync();
  return { reads, deleted: await read(id) };
}

const plain = createSidecarClient({ url });
const local: SidecarClient = createSidecarClient({ url, localCache: {} });
const runs: Record<string, unknown> = {};
runs.sidecar = await writeThenRead('plain', plain, async (id) => shape(await plain.getPersonality(id)));
const localHits = (local.localCache!.stats().entities.personality?.hits ?? 0);
runs.localCache = await writeThenRead('local', local, async (id) => {
  const first = await local.getPersonality(id);
  await local.getPersonality(id); // a second read is served by the local cache
  return shape(first);
});
const localCacheHits = (local.localCache!.stats().entities.personality?.hits ?? 0) - localHits;
// The Prisma extension over the sidecar client: bot code keeps its findUnique.
const db = prisma.$extends(memorySyncExtension(plain));
runs.extension = await writeThenRead('ext', plain, async (id) => shape(await db.personality.findUnique({ where: { id }, include: { llmConfig: true } })));

report({ writes: WRITES, runs, localCacheHits });
await Promise.all([plain.close(), local.close()]);
await prisma.$disconnect();
await pool.end();
