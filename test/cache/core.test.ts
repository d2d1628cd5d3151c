import { EventEmitter } from 'node:events';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { CacheCore, type ChangeAction } from '../../src/cache/core.js';
import type { PartitionStore } from '../../src/cache/hot/hot-sets.js';
import type { ChangeEvent } from '../../src/contract/change-event.js';
import type { CollectionShape, EntityShape, WatchShape } from '../../src/contract/shape.js';
import type { ChangeSource, ChangeSourceEvents, SourceState } from '../../src/sources/source.js';
import type { CollectionRow } from '../../src/store/collections.js';
import { seededVectors } from '../helpers/db.js';

// The core is a pure unit: given loaders and a store it touches no database.
// These tables pin what each change does; the end-to-end tests run it on PostgreSQL.

const P1 = 'p1';
const P2 = 'p2';
const P3 = 'p3';
const SHARED = 'cfg-shared';
const M1 = 'm1';
const M2 = 'm2';
const DIM = 8;

/** A hand-driven change source. */
class TestSource extends EventEmitter<ChangeSourceEvents> implements ChangeSource {
  readonly name = 'test';
  state: SourceState = 'idle';
  constructor(readonly resumable: boolean) {
    super();
  }
  get isUp() {
    return this.state === 'up';
  }
  async start() {}
  async sync() {}
  async close() {}
  up(first: boolean, lost: string | null) {
    this.state = 'up';
    this.emit('up', { first, lost });
  }
  down() {
    this.state = 'down';
    this.emit('down', 'test');
  }
}

const str = (name: string) => ({ name, type: 'String' as const, list: false });

// personality → link (1:1, keyed by personalityId) → shared config; personality → aliases (to-many).
const personalityShape: EntityShape = {
  name: 'personality',
  root: {
    model: 'Personality',
    id: ['id'],
    fields: [str('id'), str('name')],
    children: [
      {
        field: 'link',
        list: false,
        parentFields: ['id'],
        childFields: ['personalityId'],
        node: {
          model: 'Link',
          id: ['personalityId'],
          fields: [str('personalityId'), str('configId')],
          children: [{ field: 'config', list: false, parentFields: ['configId'], childFields: ['id'], node: { model: 'Config', id: ['id'], fields: [str('id'), str('model')], children: [] } }],
        },
      },
      { field: 'aliases', list: true, parentFields: ['id'], childFields: ['personalityId'], node: { model: 'Alias', id: ['id'], fields: [str('id'), str('personalityId'), str('alias')], children: [] } },
    ],
  },
  lookups: [
    { name: 'id', fields: ['id'] },
    { name: 'name', fields: ['name'] },
  ],
};

const watched: WatchShape[] = [
  { model: 'Personality', id: ['id'], keySets: [['id'], ['name']], partitions: [], canon: {} },
  { model: 'Link', id: ['personalityId'], keySets: [['personalityId']], partitions: [], canon: {} },
  { model: 'Config', id: ['id'], keySets: [['id']], partitions: [], canon: {} },
  { model: 'Alias', id: ['id'], keySets: [['id'], ['personalityId']], partitions: [], canon: {} },
  { model: 'Memory', id: ['id'], keySets: [['id']], partitions: [['personalityId']], canon: {} },
];

const memoriesShape: CollectionShape = { name: 'memories', model: 'Memory', dimension: DIM, partitionBy: [str('personalityId')], filters: [str('channelId')], select: [str('content')] };

interface Db {
  personalities: Map<string, { id: string; name: string }>;
  links: Map<string, string>;
  configs: Map<string, string>;
  aliases: { id: string; personalityId: string; alias: string }[];
  memories: CollectionRow[];
}

function memory(id: string, pid: string, seed: number): CollectionRow {
  return { id, partition: [pid], filters: ['c'], values: [id], embedding: seededVectors(seed, 1, DIM)[0]! };
}

function setup(options: { resumable?: boolean; maxEvictions?: number; hold?: () => Promise<void> } = {}) {
  const db: Db = {
    personalities: new Map([P1, P2, P3].map((id) => [id, { id, name: `name-${id}` }])),
    links: new Map([
      [P1, SHARED],
      [P2, SHARED],
      [P3, 'cfg-own'],
    ]),
    configs: new Map([
      [SHARED, 'gpt'],
      ['cfg-own', 'claude'],
    ]),
    aliases: [{ id: 'a1', personalityId: P1, alias: 'one' }],
    memories: [memory(M1, P1, 1), memory(M2, P2, 2)],
  };
  let loads = 0;
  const read = (p: { id: string; name: string }) => {
    const configId = db.links.get(p.id);
    return {
      ...p,
      link: configId ? { personalityId: p.id, configId, config: db.configs.has(configId) ? { id: configId, model: db.configs.get(configId)! } : null } : null,
      aliases: db.aliases.filter((a) => a.personalityId === p.id).map((a) => ({ ...a })),
    };
  };
  const store: PartitionStore = {
    count: async ([pid]) => db.memories.filter((m) => m.partition[0] === pid).length,
    stream: async ([pid], _limit, onRow) => {
      for (const r of db.memories.filter((m) => m.partition[0] === pid)) if (!onRow(r)) break;
    },
    fetch: async (ids) => db.memories.filter((r) => ids.includes(r.id)),
  };
  const core = new CacheCore({
    logger: pino({ level: 'silent' }),
    watched,
    entities: [
      {
        shape: personalityShape,
        max: 100,
        ttlMs: 60_000,
        negativeTtlMs: 60_000,
        maxEvictions: options.maxEvictions ?? 10_000,
        load: async (index, values) => {
          loads++;
          await options.hold?.();
          const p = index === 0 ? db.personalities.get(String(values[0])) : [...db.personalities.values()].find((x) => x.name === values[0]);
          return p ? read(p) : null;
        },
      },
    ],
    collections: [{ shape: memoriesShape, store, maxBytes: 64 * 1024 * 1024, maxVectorsPerSet: 1000, tooLargeTtlMs: 60_000, idOrder: 'text', arithmetic: null }],
  });
  const source = new TestSource(options.resumable ?? false);
  core.connect(source);
  source.up(true, null);
  return { core, source, db, loads: () => loads };
}

async function warmAll(core: CacheCore) {
  for (const pid of [P1, P2, P3]) {
    await core.getEntity('personality', 0, [pid]);
    core.warm('memories', [pid]);
    await core.settled('memories', [pid]);
  }
  expect(core.isServable('memories', [P1])).toBe(true);
}

const ev = (model: string, op: ChangeEvent['op'], fields: string[], rows: (string | null)[][], gone: string[][] = [], scope: ChangeEvent['scope'] = 'rows'): ChangeEvent => ({
  ms: 2,
  model,
  op,
  scope,
  fields,
  rows,
  gone,
  txid: '1',
  ts: 0,
  chunk: 1,
  chunks: 1,
});

const cached = (core: CacheCore) => [P1, P2, P3].filter((p) => core.peekEntity('personality', 0, [p]) !== undefined);
const servable = (core: CacheCore) => [P1, P2, P3].filter((p) => core.isServable('memories', [p]));

interface Case {
  name: string;
  event: ChangeEvent;
  action: ChangeAction;
  cached: string[];
  servable: string[];
  flushes: number;
}

const cases: Case[] = [
  { name: 'a root update evicts that root', event: ev('Personality', 'UPDATE', ['id', 'name'], [[P1, 'x']]), action: 'evicted', cached: [P2, P3], servable: [P1, P2, P3], flushes: 0 },
  { name: 'a root delete evicts it', event: ev('Personality', 'DELETE', ['id', 'name'], [], [[P2]]), action: 'evicted', cached: [P1, P3], servable: [P1, P2, P3], flushes: 0 },
  { name: 'a shared config change evicts every root whose tree holds it', event: ev('Config', 'UPDATE', ['id'], [[SHARED]]), action: 'evicted', cached: [P3], servable: [P1, P2, P3], flushes: 0 },
  { name: 'a link row change (foreign key moved) evicts its root', event: ev('Link', 'UPDATE', ['personalityId'], [[P3]]), action: 'evicted', cached: [P1, P2], servable: [P1, P2, P3], flushes: 0 },
  { name: 'a new child row evicts the root that includes that relation', event: ev('Alias', 'INSERT', ['id', 'personalityId'], [['a9', P2]]), action: 'evicted', cached: [P1, P3], servable: [P1, P2, P3], flushes: 0 },
  { name: 'a deleted child row evicts by its id alone', event: ev('Alias', 'DELETE', ['id', 'personalityId'], [], [['a1']]), action: 'evicted', cached: [P2, P3], servable: [P1, P2, P3], flushes: 0 },
  { name: 'a change to a row no cached tree holds is ignored', event: ev('Config', 'UPDATE', ['id'], [['cfg-unused']]), action: 'ignored', cached: [P1, P2, P3], servable: [P1, P2, P3], flushes: 0 },
  { name: 'a TRUNCATE of an included table flushes the entity, keeps hot sets', event: ev('Config', 'TRUNCATE', [], [], [], 'model'), action: 'flushed', cached: [], servable: [P1, P2, P3], flushes: 1 },
  { name: 'a memory insert patches its partition (re-read before serving)', event: ev('Memory', 'INSERT', ['id', 'personalityId'], [['m9', P1]]), action: 'patched', cached: [P1, P2, P3], servable: [P2, P3], flushes: 0 },
  { name: 'a memory delete (id only) patches the set that holds it', event: ev('Memory', 'DELETE', ['id', 'personalityId'], [], [[M2]]), action: 'patched', cached: [P1, P2, P3], servable: [P1, P3], flushes: 0 },
  { name: 'a memory that moved partitions patches both sets', event: ev('Memory', 'UPDATE', ['id', 'personalityId'], [[M1, P2]]), action: 'patched', cached: [P1, P2, P3], servable: [P3], flushes: 0 },
  { name: 'a partitions-scope change drops those sets', event: ev('Memory', 'UPDATE', ['personalityId'], [[P1]], [], 'partitions'), action: 'evicted', cached: [P1, P2, P3], servable: [P2, P3], flushes: 0 },
  { name: 'a memories TRUNCATE drops every set, keeps entities', event: ev('Memory', 'TRUNCATE', [], [], [], 'model'), action: 'flushed', cached: [P1, P2, P3], servable: [], flushes: 1 },
  {
    name: 'a change for a model this declaration does not watch flushes (another declaration\'s triggers)',
    event: ev('Persona', 'UPDATE', ['id'], [['x']]),
    action: 'flushed',
    cached: [],
    servable: [],
    flushes: 1,
  },
  { name: 'a payload missing a field the declaration needs flushes', event: ev('Alias', 'INSERT', ['id'], [['a9']]), action: 'flushed', cached: [], servable: [], flushes: 1 },
];

describe('CacheCore.apply: one change, one rule', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const { core } = setup();
      await warmAll(core);
      expect(core.apply(c.event)).toBe(c.action);
      expect(cached(core)).toEqual(c.cached);
      expect(servable(core)).toEqual(c.servable);
      expect(core.stats().flushes).toBe(c.flushes);
    });
  }

  it('a lookup by a unique field is evicted by its root\'s changes, and a cached "none" by the INSERT that creates it', async () => {
    const { core, db } = setup();
    expect(await core.getEntity('personality', 1, ['name-p1'])).toMatchObject({ id: P1 });
    expect(await core.getEntity('personality', 1, ['newcomer'])).toBeNull();
    expect(core.peekEntity('personality', 1, ['newcomer'])).toBeNull();
    core.apply(ev('Config', 'UPDATE', ['id'], [[SHARED]]));
    expect(core.peekEntity('personality', 1, ['name-p1'])).toBeUndefined();
    db.personalities.set('p4', { id: 'p4', name: 'newcomer' });
    core.apply(ev('Personality', 'INSERT', ['id', 'name'], [['p4', 'newcomer']]));
    expect(core.peekEntity('personality', 1, ['newcomer'])).toBeUndefined();
    expect(await core.getEntity('personality', 1, ['newcomer'])).toMatchObject({ id: 'p4' });
    // By id too (the hit path keys ids by their bare text), and a name that looks like an internal key.
    expect(await core.getEntity('personality', 0, ['p5'])).toBeNull();
    expect(await core.getEntity('personality', 1, ['\u00010\u0001p5'])).toBeNull();
    db.personalities.set('p5', { id: 'p5', name: '\u00010\u0001p5' });
    core.apply(ev('Personality', 'INSERT', ['id', 'name'], [['p5', '\u00010\u0001p5']]));
    expect(core.peekEntity('personality', 0, ['p5'])).toBeUndefined();
    expect(core.peekEntity('personality', 1, ['\u00010\u0001p5'])).toBeUndefined();
    expect(await core.getEntity('personality', 0, ['p5'])).toMatchObject({ id: 'p5' });
    expect(await core.getEntity('personality', 1, ['\u00010\u0001p5'])).toMatchObject({ id: 'p5' });
  });

  it('past maxEvictions one change drops the whole entity kind, and says so', async () => {
    const { core } = setup({ maxEvictions: 1 });
    await warmAll(core);
    const reasons: string[] = [];
    core.on('flush', (r) => reasons.push(r));
    expect(core.apply(ev('Config', 'UPDATE', ['id'], [[SHARED]]))).toBe('flushed');
    expect(cached(core)).toEqual([]);
    expect(reasons).toEqual(['personality: one change evicted more than maxEvictions']);
  });

  it('a patched set serves the new rows once re-read, without a reload', async () => {
    const { core, db } = setup();
    await warmAll(core);
    const loaded = core.stats().collections.memories!.loadedVectors;
    db.memories.push(memory('m3', P1, 3));
    core.apply(ev('Memory', 'INSERT', ['id', 'personalityId'], [['m3', P1]]));
    expect(core.isServable('memories', [P1])).toBe(false);
    await core.settled('memories', [P1]);
    expect(core.isServable('memories', [P1])).toBe(true);
    expect(core.holds('memories', [P1], 'm3')).toBe(true);
    expect(core.stats().collections.memories!.loadedVectors).toBe(loaded);
  });
});

describe('a fill racing a change', () => {
  it('a load that a change to any row of its tree overlapped is not stored', async () => {
    let release!: () => void;
    let held = false;
    const { core, db } = setup({
      hold: async () => {
        if (held) return;
        held = true;
        await new Promise<void>((r) => (release = r));
      },
    });
    const first = core.getEntity('personality', 0, [P1]);
    await new Promise((r) => setImmediate(r));
    // While the load runs, the shared config changes: the load may have read the old one.
    db.configs.set(SHARED, 'gpt-5');
    core.apply(ev('Config', 'UPDATE', ['id'], [[SHARED]]));
    release();
    const value = (await first) as { link: { config: { model: string } } };
    // The spoiled read was thrown away and read again.
    expect(value.link.config.model).toBe('gpt-5');
    expect(core.stats().entities.personality!.abortedFills).toBe(1);
    expect((core.peekEntity('personality', 0, [P1]) as typeof value).link.config.model).toBe('gpt-5');
  });

  it('a change to rows outside the tree does not spoil the load', async () => {
    let release!: () => void;
    let held = false;
    const { core } = setup({
      hold: async () => {
        if (held) return;
        held = true;
        await new Promise<void>((r) => (release = r));
      },
    });
    const first = core.getEntity('personality', 0, [P1]);
    await new Promise((r) => setImmediate(r));
    core.apply(ev('Config', 'UPDATE', ['id'], [['cfg-own']]));
    release();
    await first;
    expect(core.stats().entities.personality!.abortedFills).toBe(0);
    expect(core.peekEntity('personality', 0, [P1])).toBeDefined();
  });
});

describe('CacheCore and its source', () => {
  it('down: nothing is served and, for a source that cannot replay, nothing is kept', async () => {
    const { core, source, loads } = setup({ resumable: false });
    await warmAll(core);
    source.down();
    expect(core.serving).toBe(false);
    expect(core.peekEntity('personality', 0, [P1])).toBeUndefined();
    expect(await core.search('memories', [P1], { query: new Float32Array(DIM), where: [], limit: 1 })).toEqual({ status: 'miss', reason: 'not-serving' });
    const before = loads();
    await core.getEntity('personality', 0, [P1]); // read through, not stored
    await core.getEntity('personality', 0, [P1]);
    expect(loads()).toBe(before + 2);
    source.up(false, 'reconnected');
    expect(core.stats()).toMatchObject({ reconnects: 1, flushes: 1 });
    expect(core.stats().entities.personality!.size).toBe(0);
    expect(core.stats().collections.memories!.sets).toBe(0);
  });

  it('a resumable source that lost nothing keeps the caches across a blip', async () => {
    const { core, source } = setup({ resumable: true });
    await warmAll(core);
    source.down();
    expect(core.peekEntity('personality', 0, [P1])).toBeUndefined();
    expect(core.isServable('memories', [P1])).toBe(false);
    // Replayed before `up`: the missed change still applies.
    core.apply(ev('Personality', 'UPDATE', ['id', 'name'], [[P2, 'x']]));
    source.up(false, null);
    expect(core.stats()).toMatchObject({ flushes: 0, reconnects: 1 });
    expect(core.peekEntity('personality', 0, [P1])).toMatchObject({ id: P1, name: 'name-p1' });
    expect(core.peekEntity('personality', 0, [P2])).toBeUndefined();
    expect(core.isServable('memories', [P1])).toBe(true);
  });

  it('a resumable source that cannot prove continuity flushes, and says why', async () => {
    const { core, source } = setup({ resumable: true });
    await warmAll(core);
    const reasons: string[] = [];
    core.on('flush', (r) => reasons.push(r));
    source.down();
    source.up(false, 'stream trimmed past sequence 41');
    expect(reasons).toEqual(['stream trimmed past sequence 41']);
    expect(core.stats().entities.personality!.size).toBe(0);
  });

  it("a gap found while up, or memory-sync's own unreadable payload, flushes; another program's payload does not", async () => {
    const { core, source } = setup({ resumable: true });
    await warmAll(core);
    source.emit('lost', 'gap at 7');
    expect(core.stats()).toMatchObject({ flushes: 1 });
    await warmAll(core);
    source.emit('invalid', 'not a memory-sync payload', '{"type":"all"}', 14, false);
    expect(core.stats()).toMatchObject({ flushes: 1, foreignNotifications: 1, invalidNotifications: 0 });
    expect(cached(core)).toEqual([P1, P2, P3]);
    source.emit('invalid', 'model: bad', '{"ms":2}', 8, true);
    expect(core.stats()).toMatchObject({ flushes: 2, invalidNotifications: 1 });
    expect(cached(core)).toEqual([]);
  });

  it("cached values are frozen, nested too: one caller cannot change another's copy", async () => {
    const { core } = setup();
    const p = (await core.getEntity('personality', 0, [P1])) as { aliases: object[]; link: { config: object } };
    expect(Object.isFrozen(p)).toBe(true);
    expect(Object.isFrozen(p.aliases)).toBe(true);
    expect(Object.isFrozen(p.link.config)).toBe(true);
  });
});

describe('hot-set loads cancelled by a change', () => {
  it('are not failures: no back-off, and the next search loads again at once', async () => {
    const { core, db } = setup();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const sets = (core as unknown as { collections: Map<string, { options: { store: PartitionStore } }> }).collections.get('memories')!;
    const store = sets.options.store;
    const stream = store.stream;
    let calls = 0;
    store.stream = async (p, limit, onRow, signal) => {
      if (++calls === 1) {
        await held;
        // As the real store does: an aborted COPY rejects.
        if (signal.aborted) throw new Error('stopped retrying: aborted');
      }
      return stream(p, limit, onRow, signal);
    };
    core.warm('memories', [P1]);
    core.apply(ev('Memory', 'UPDATE', ['personalityId'], [[P1]], [], 'partitions')); // drops the set and cancels the load
    release();
    await new Promise((resolve) => setImmediate(resolve));
    core.warm('memories', [P1]); // no 5 s "not hot" verdict: this starts a new load
    await core.settled('memories', [P1]);
    expect(core.isServable('memories', [P1])).toBe(true);
    expect(calls).toBe(2);
    expect(db.memories.filter((m) => m.partition[0] === P1)).toHaveLength(1);
  });
});
