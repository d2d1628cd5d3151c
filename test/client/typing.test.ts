import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BOT_DIR, botPrismaModule } from '../helpers/bot.js';
import { ROOT } from '../helpers/db.js';
import { compileSnippet } from '../helpers/tsc.js';

/*
 * The library typed from a TypeScript declaration: entity and collection
 * names checked, and with defineConfig.for<PrismaClient>() each entity's value
 * is Prisma's own payload type for the declared include and omit. Compiled
 * with tsc --strict against the test bot's generated client.
 */

const dir = join(ROOT, '.tmp', `typing-${process.pid}`);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const compile = (code: string) => compileSnippet(dir, code);

describe('a TypeScript declaration types the library', () => {
  it('entity values are Prisma payloads of the declared include and omit; undeclared names do not compile', { timeout: 120_000 }, async () => {
    await botPrismaModule(); // generates the bot's client
    const client = join(BOT_DIR, 'generated', 'client.js');
    const output = compile(`
import { createMemorySync, defineConfig } from 'memory-sync';
import type { PrismaClient } from ${JSON.stringify(client)};

const config = defineConfig.for<PrismaClient>()({
  schema: 'schema.prisma',
  entities: { character: { model: 'Character', lookups: ['slug'], include: { owner: true, nicknames: true }, omit: { avatar: true } } },
  collections: { memories: { model: 'Memory', embedding: 'embedding', dimension: 384, partitionBy: ['personaId'] } },
});
const memory = createMemorySync({ config });
const c = await memory.entity('character').get({ id: 'x' });
if (c) {
  const handle: string = c.owner.handle;
  const created: Date = c.createdAt;
  const nick: string | undefined = c.nicknames[0]?.name;
  // @ts-expect-error the declared omit leaves avatar out
  void c.avatar;
  // @ts-expect-error prompt is not in the declared include
  void c.prompt;
  void [handle, created, nick];
}
await memory.collection('memories').search({ partition: { personaId: 'p' }, embedding: [1, 2] });
// @ts-expect-error not a declared entity
memory.entity('channel');
// @ts-expect-error not a declared collection
memory.collection('notes');
`);
    expect(output).toBe('');
  });

  it('a mistake in the declaration is a compile error where it is written', () => {
    const output = compile(`
import { defineConfig } from 'memory-sync';
export default defineConfig({
  schema: 'schema.prisma',
  // @ts-expect-error partitionBy is required
  collections: { memories: { model: 'Memory', embedding: 'embedding' } },
});
`);
    expect(output).toBe('');
  });
});
