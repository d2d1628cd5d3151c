import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/contract/errors.js';
import { initialDeclaration, writeInit } from '../../src/schema/init.js';
import { bindDeclaration, loadDeclarationFile } from '../../src/schema/load.js';
import { connect, type TestDb } from '../helpers/db.js';
import { BOT_SCHEMA, botDatabase, seedBot } from '../helpers/bot.js';

/* `memory-sync init` on the test bot's schema: a starting declaration that binds. */

let db: TestDb;
beforeAll(async () => {
  db = await botDatabase('ms_init');
  const c = await connect(db.url);
  await seedBot(c, 5);
  await c.end();
}, 60_000);
afterAll(async () => db?.drop());

describe('memory-sync init', () => {
  it('without a database: the Unsupported("vector") model becomes a collection, the others candidate entities with their unique lookups', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ms-init-'));
    const { declaration, notes } = initialDeclaration(BOT_SCHEMA, dir, []);
    expect(declaration.collections!.memory).toMatchObject({ model: 'Memory', embedding: 'embedding', partitionBy: ['personaId'] });
    expect(declaration.collections!.memory!.dimension).toBeUndefined();
    expect(notes).toEqual([expect.stringMatching(/collections\.memory\.dimension: memory_rows\.embedding is an untyped vector/)]);
    expect(declaration.entities!.character).toEqual({ model: 'Character', lookups: ['slug'], include: {} });
    expect(declaration.entities!.channelSetting).toEqual({ model: 'ChannelSetting', lookups: ['channelId'], include: {} });
    expect(Object.keys(declaration.entities!)).not.toContain('memory');
  });

  it('with DATABASE_URL: the dimension from the rows of the untyped column; the file it writes binds as it is', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ms-init-'));
    const out = join(dir, 'memory-sync.config.json');
    const text = await writeInit({ schemaPath: BOT_SCHEMA, out, force: false, databaseUrl: db.url });
    expect(JSON.parse(text).collections.memory.dimension).toBe(384);
    expect(readFileSync(out, 'utf8')).toBe(text);
    const binding = bindDeclaration(await loadDeclarationFile(out));
    expect(binding.collections.get('memory')!.model).toBe('Memory');
    expect(binding.entities.size).toBeGreaterThan(5);
    await expect(writeInit({ schemaPath: BOT_SCHEMA, out, force: false, databaseUrl: undefined })).rejects.toBeInstanceOf(ConfigError);
  });
});
