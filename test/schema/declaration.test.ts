import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/contract/errors.js';
import { bind } from '../../src/schema/binding.js';
import { defineConfig, parseDeclaration, type Declaration } from '../../src/schema/declaration.js';
import { bindDeclaration, findDeclaration, loadDeclaration, loadDeclarationFile } from '../../src/schema/load.js';
import { readPrismaSchema } from '../../src/schema/prisma-schema.js';
import { BOT_CONFIG, BOT_DIR, BOT_SCHEMA } from '../helpers/bot.js';

const datamodel = readPrismaSchema(BOT_SCHEMA).datamodel;
const base = (over: Partial<Declaration> = {}): Declaration => ({ schema: BOT_SCHEMA, ...over });
const bindIt = (d: Declaration) => bind(parseDeclaration(d, 'test'), datamodel, { source: 'test', schemaPath: BOT_SCHEMA });

/** The ConfigError a declaration raises: its key path and reason. */
function mistake(d: unknown): { variable: string; reason: string } {
  try {
    bindIt(parseDeclaration(d, 'test'));
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const e = err as ConfigError;
    return { variable: e.variable, reason: e.reason };
  }
  throw new Error('the declaration was accepted');
}

describe('declaration mistakes name the key path and what is wrong', () => {
  const cases: Array<[string, unknown, string, RegExp]> = [
    ['an unknown model', base({ entities: { x: { model: 'Personality' } } }), 'test: entities.x.model', /no model Personality/],
    ['a model in the wrong case', base({ entities: { x: { model: 'character' } } }), 'test: entities.x.model', /did you mean Character/],
    ['an unknown relation in include', base({ entities: { c: { model: 'Character', include: { alias: true } } } }), 'test: entities.c.include.alias', /no relation alias/],
    ['a scalar named in include', base({ entities: { c: { model: 'Character', include: { slug: true } } } }), 'test: entities.c.include.slug', /scalar field; include names relations/],
    ['a nested unknown relation', base({ entities: { c: { model: 'Character', include: { configLink: { include: { nope: true } } } } } }), 'test: entities.c.include.configLink.include.nope', /no relation nope/],
    ['a lookup that is not unique', base({ entities: { c: { model: 'Character', lookups: ['displayName'] } } }), 'test: entities.c.lookups.0', /not unique/],
    ['a lookup on an unknown field', base({ entities: { c: { model: 'Character', lookups: ['handle'] } } }), 'test: entities.c.lookups.0', /no field handle/],
    ['omitting a field changes are followed by', base({ entities: { c: { model: 'Character', include: { prompt: true }, omit: { promptId: true } } } }), 'test: entities.c.omit.promptId', /cannot be omitted/],
    ['omitting the id', base({ entities: { c: { model: 'Character', omit: { id: true } } } }), 'test: entities.c.omit.id', /cannot be omitted/],
    ['a collection embedding that is a String field', base({ collections: { m: { model: 'Memory', embedding: 'body', partitionBy: ['personaId'] } } }), 'test: collections.m.embedding', /is a String field, not a vector/],
    ['a partition on an unknown field', base({ collections: { m: { model: 'Memory', embedding: 'embedding', partitionBy: ['guildId'] } } }), 'test: collections.m.partitionBy.0', /no field guildId/],
    ['a fixed where of the wrong type', base({ collections: { m: { model: 'Memory', embedding: 'embedding', partitionBy: ['personaId'], where: { pinned: 'yes' } } } }), 'test: collections.m.where.pinned', /must be a boolean/],
    ['a NULL where on a required field', base({ collections: { m: { model: 'Memory', embedding: 'embedding', partitionBy: ['personaId'], where: { body: null } } } }), 'test: collections.m.where.body', /required, so it is never NULL/],
    ['a job on a non-DateTime field', base({ jobs: { historyTtl: { model: 'ChatLine', field: 'content', days: 3 } } }), 'test: jobs.historyTtl.field', /not DateTime/],
    ['a job protect that is not Boolean', base({ collections: { m: { model: 'Memory', embedding: 'embedding', partitionBy: ['personaId'] } }, jobs: { memoryCap: { collection: 'm', per: ['personaId'], keep: 10, orderBy: 'createdAt', protect: 'visibility' } } }), 'test: jobs.memoryCap.protect', /not Boolean/],
    ['an unknown key', { ...base(), entity: {} }, 'test: entity', /not a key of the declaration/],
    ['an unknown key in an entity', base({ entities: { c: { model: 'Character', lookup: ['slug'] } as never } }), 'test: entities.c.lookup', /not a key/],
    ['a dimension out of range', base({ collections: { m: { model: 'Memory', embedding: 'embedding', dimension: 20_000, partitionBy: ['personaId'] } } }), 'test: collections.m.dimension', /from 2 to 16000/],
    ['an index declared on more dimensions than pgvector indexes', base({ collections: { m: { model: 'Memory', embedding: 'embedding', dimension: 3072, partitionBy: ['personaId'], index: { method: 'hnsw' } } } }), 'test: collections.m.index', /at most 2000 dimensions.*leave index out/],
    ['an index option of another method', base({ collections: { m: { model: 'Memory', embedding: 'embedding', partitionBy: ['personaId'], index: { method: 'hnsw', lists: 10 } } } }), 'test: collections.m.index.lists', /ivfflat only/],
    ['an entity name that cannot be a URL segment', base({ entities: { 'Char/x': { model: 'Character' } } }), 'test: entities.Char/x', /lower-case letter/],
    ['a model name with a quote', base({ entities: { c: { model: 'Character"; DROP TABLE owners; --' } } }), 'test: entities.c.model', /Prisma name/],
    ['a field name with a comment marker', base({ entities: { c: { model: 'Character', lookups: ['slug--'] } } }), 'test: entities.c.lookups.0', /Prisma name/],
    ['a Unicode look-alike in a model name', base({ entities: { c: { model: 'Сharacter' } } }), 'test: entities.c.model', /Prisma name/],
    ['a channel that is not a plain identifier', base({ channel: 'memory_sync; LISTEN x' }), 'test: channel', /lower-case identifier/],
  ];
  for (const [name, d, variable, reason] of cases) {
    it(name, () => {
      const e = mistake(d);
      if (variable) expect(e.variable).toBe(variable);
      expect(e.reason).toMatch(reason);
    });
  }

  it('a filter on a JSON column names the field', () => {
    const d = base({ collections: { m: { model: 'Memory', embedding: 'embedding', partitionBy: ['personaId'], filters: ['characterId'] } } });
    expect(() => bindIt(d)).not.toThrow();
    const schemaWithJson = readPrismaSchema(BOT_SCHEMA).datamodel;
    const memory = schemaWithJson.models.find((m) => m.name === 'Character')!;
    expect(memory.fields.find((f) => f.name === 'traits')!.type).toBe('Json');
    const e = mistake(base({ collections: { m: { model: 'Character', embedding: 'avatarVector', partitionBy: ['ownerId'], filters: ['traits'] } } }));
    expect(e).toEqual({ variable: 'test: collections.m.filters.0', reason: expect.stringMatching(/Character.traits is a JSON column/) });
  });
});

describe('the binding, read from the schema with Prisma\'s own parser', () => {
  it('maps models and fields to tables and columns (@map, @@map, @id, @unique, relations)', async () => {
    const b = bindDeclaration(await loadDeclarationFile(BOT_CONFIG));
    const character = b.models.get('Character')!;
    expect(character.table).toBe('characters');
    expect(character.fields.get('displayName')!.column).toBe('display_name');
    expect(character.fields.get('slug')!).toMatchObject({ column: 'slug', native: 'Citext', type: 'String' });
    expect(character.id).toEqual(['id']);
    expect(character.uniques.map((u) => u.name)).toEqual(['id', 'slug']);
    const link = b.models.get('CharacterConfigLink')!;
    expect(link.id).toEqual(['characterId']);
    expect(character.relations.get('configLink')).toMatchObject({ child: 'CharacterConfigLink', list: false, parentFields: ['id'], childFields: ['characterId'], keyOn: 'child' });
    expect(link.relations.get('config')).toMatchObject({ child: 'ModelConfig', parentFields: ['configId'], childFields: ['id'], keyOn: 'parent' });
    expect(character.relations.get('nicknames')).toMatchObject({ list: true, childFields: ['characterId'] });
    const e = b.entities.get('character')!;
    expect([...e.models].sort()).toEqual(['Character', 'CharacterConfigLink', 'ModelConfig', 'Nickname', 'Owner', 'Prompt']);
    expect(e.lookups).toEqual([
      { name: 'id', fields: ['id'] },
      { name: 'slug', fields: ['slug'] },
    ]);
    expect(e.root.fields.map((f) => f.name)).not.toContain('avatar');
    const c = b.collections.get('memories')!;
    expect(c).toMatchObject({ model: 'Memory', embedding: { column: 'embedding', declaredDimension: 384 } });
    expect(c.partition.map((f) => f.column)).toEqual(['persona_id']);
    expect(c.filters.map((f) => f.column)).toEqual(['character_id', 'channel_id', 'created_at', 'id']);
  });

  it('watches every table of every include tree with the fields that name cached rows', async () => {
    const b = bindDeclaration(await loadDeclarationFile(BOT_CONFIG));
    const w = Object.fromEntries([...b.watched].map(([m, x]) => [m, { payload: x.payload, keySets: x.keySets, partitions: x.partitions }]));
    expect(Object.keys(w).sort()).toEqual(['ChannelSetting', 'Character', 'CharacterConfigLink', 'Memory', 'ModelConfig', 'Nickname', 'Owner', 'Prompt']);
    expect(w.Character).toEqual({ payload: ['id', 'slug'], keySets: [['id'], ['slug']], partitions: [] });
    expect(w.Nickname).toEqual({ payload: ['id', 'characterId'], keySets: [['id'], ['characterId']], partitions: [] });
    expect(w.CharacterConfigLink).toEqual({ payload: ['characterId'], keySets: [['characterId']], partitions: [] });
    expect(w.ModelConfig).toEqual({ payload: ['id'], keySets: [['id']], partitions: [] });
    expect(w.ChannelSetting).toEqual({ payload: ['id', 'channelId'], keySets: [['id'], ['channelId']], partitions: [] });
    expect(w.Memory).toEqual({ payload: ['id', 'personaId'], keySets: [['id']], partitions: [['personaId']] });
    // A column no cache reads changing sends nothing: a memory's is_pinned is not selected, filtered or fixed.
    expect(b.watched.get('Memory')!.relevantColumns.sort()).toEqual(['body', 'channel_id', 'character_id', 'created_at', 'embedding', 'id', 'persona_id', 'visibility']);
    // Character.avatar is omitted by `character` but returned by channelSetting's activeCharacter: relevant.
    expect(b.watched.get('Character')!.relevantColumns).toContain('avatar');
    // Tables the declaration does not name get no triggers.
    expect(b.watched.has('ChatLine')).toBe(false);
    expect(b.watched.has('Persona')).toBe(false);
  });
});

describe('finding and loading the declaration', () => {
  it('memory-sync.config.{ts,mjs,js,json} in the working directory, --config, or the built-in one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ms-decl-'));
    expect(findDeclaration(undefined, dir)).toBeNull();
    expect((await loadDeclaration(undefined, dir)).source).toBe('built-in');
    writeFileSync(join(dir, 'memory-sync.config.ts'), `import type { Declaration } from ${JSON.stringify(join(BOT_DIR, '../../../src/schema/declaration.ts'))};\nconst d: Declaration = { schema: ${JSON.stringify(BOT_SCHEMA)}, entities: { owner: { model: 'Owner', lookups: ['handle'] } } };\nexport default d;\n`);
    writeFileSync(join(dir, 'memory-sync.config.json'), JSON.stringify({ schema: BOT_SCHEMA }));
    expect(findDeclaration(undefined, dir)).toBe(join(dir, 'memory-sync.config.ts')); // .ts before .json
    const ts = await loadDeclaration(undefined, dir);
    expect(ts.declaration.entities?.owner?.lookups).toEqual(['handle']);
    expect(bindDeclaration(ts).entities.get('owner')!.lookups.map((l) => l.name)).toEqual(['id', 'handle']);
    writeFileSync(join(dir, 'other.mjs'), `export default { schema: 'nope.prisma' };\n`);
    const mjs = await loadDeclaration('other.mjs', dir);
    expect(mjs.baseDir).toBe(dir);
    expect(() => bindDeclaration(mjs)).toThrow(/schema: .*nope.prisma does not exist/);
    await expect(loadDeclaration('missing.json', dir)).rejects.toThrow(/MEMORY_SYNC_CONFIG: missing.json does not exist/);
    writeFileSync(join(dir, 'broken.json'), '{ "schema": ');
    await expect(loadDeclaration('broken.json', dir)).rejects.toThrow(/cannot be read/);
  });

  it('a schema Prisma rejects is an error with Prisma\'s message', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ms-decl-'));
    writeFileSync(join(dir, 'schema.prisma'), 'datasource db {\n  provider = "postgresql"\n}\nmodel A {\n  id String @id\n  b B\n}\n');
    expect(() => bindDeclaration({ declaration: { schema: 'schema.prisma' }, source: 'x', baseDir: dir })).toThrow(/Prisma rejects .*Type "B" is neither a built-in type/s);
  });

  it('defineConfig keeps the literal types and the values', () => {
    const d = defineConfig({ schema: 'prisma/schema.prisma', entities: { owner: { model: 'Owner' } } });
    const name: 'owner' = Object.keys(d.entities)[0] as keyof typeof d.entities;
    expect(name).toBe('owner');
  });
});
