import { EventEmitter } from 'node:events';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { CacheCore, type ChangeAction } from '../../src/cache/core.js';
import type { HotSetStore } from '../../src/cache/hot/hot-sets.js';
import type { MemoryRow } from '../../src/store/memories.js';
import type { ChangeEvent } from '../../src/contract/change-event.js';
import type { ChangeSource, ChangeSourceEvents, SourceState } from '../../src/sources/source.js';
import { seededVectors } from '../helpers/db.js';

// The core is a pure unit: given a loader and a store it touches no database.
// These tables pin what each change does; the end-to-end tests run it on PostgreSQL.

const P1 = '00000000-0000-4000-8000-000000000001';
const P2 = '00000000-0000-4000-8000-000000000002';
const M1 = '00000000-0000-4000-8000-0000000000a1';
const M2 = '00000000-0000-4000-8000-0000000000a2';

interface Personality {
  id: string;
  name: string;
}

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

function rows(pid: string, ids: string[]): MemoryRow[] {
  const vs = seededVectors(ids.length + 1, ids.length);
  return ids.map((id, i) => ({ id, personalityId: pid, channelId: 'c', content: id, createdAt: new Date(0), metadata: null, embedding: vs[i]! }));
}

function setup(resumable = false) {
  const db = new Map<string, Personality>([
    [P1, { id: P1, name: 'one' }],
    [P2, { id: P2, name: 'two' }],
  ]);
  const memories = new Map<string, MemoryRow[]>([
    [P1, rows(P1, [M1])],
    [P2, rows(P2, [M2])],
  ]);
  let loads = 0;
  const store: HotSetStore = {
    count: async (pid) => memories.get(pid)?.length ?? 0,
    stream: async (pid, _limit, onRow) => {
      for (const r of memories.get(pid) ?? []) if (!onRow(r)) break;
    },
    fetch: async (ids) => [...memories.values()].flat().filter((r) => ids.includes(r.id)),
  };
  const core = new CacheCore<Personality>({
    logger: pino({ level: 'silent' }),
    personalities: { max: 100, ttlMs: 60_000, negativeTtlMs: 60_000 },
    loadPersonality: async (id) => {
      loads++;
      const p = db.get(id);
      return p ? { ...p } : null;
    },
    hotSets: { store, maxBytes: 64 * 1024 * 1024, maxVectorsPerSet: 1000, tooLargeTtlMs: 60_000 },
  });
  const source = new TestSource(resumable);
  core.connect(source);
  source.up(true, null);
  return { core, source, db, memories, loads: () => loads };
}

async function warmAll(core: CacheCore<Personality>) {
  for (const pid of [P1, P2]) {
    await core.getPersonality(pid);
    core.warm(pid);
    await core.settled(pid);
    expect(core.isServable(pid)).toBe(true);
  }
}

const ev = (table: ChangeEvent['table'], op: ChangeEvent['op'], scope: ChangeEvent['scope'], ids: string[], pids: string[]): ChangeEvent => ({
  v: 1,
  table,
  op,
  scope,
  ids,
  personalityIds: pids,
  txid: '1',
  ts: 0,
  chunk: 1,
  chunks: 1,
});

interface Case {
  name: string;
  event: ChangeEvent;
  action: ChangeAction;
  /** Personalities still cached afterwards. */
  cached: string[];
  /** Personalities whose hot set still serves right after the event. */
  servable: string[];
  flushes: number;
}

const cases: Case[] = [
  { name: 'personality update evicts that personality', event: ev('personalities', 'UPDATE', 'rows', [P1], [P1]), action: 'evicted', cached: [P2], servable: [P1, P2], flushes: 0 },
  { name: 'llm config insert evicts its personality', event: ev('llm_configs', 'INSERT', 'rows', [M1], [P1]), action: 'evicted', cached: [P2], servable: [P1, P2], flushes: 0 },
  { name: 'personality delete evicts it and drops its hot set', event: ev('personalities', 'DELETE', 'rows', [P1], [P1]), action: 'evicted', cached: [P2], servable: [P2], flushes: 0 },
  { name: 'personalities TRUNCATE flushes both caches', event: ev('personalities', 'TRUNCATE', 'table', [], []), action: 'flushed', cached: [], servable: [], flushes: 1 },
  { name: 'llm_configs table-wide change flushes personalities, keeps hot sets', event: ev('llm_configs', 'UPDATE', 'table', [], []), action: 'flushed', cached: [], servable: [P1, P2], flushes: 1 },
  { name: 'memory insert patches the set (re-read before serving)', event: ev('memories', 'INSERT', 'rows', [M1], [P1]), action: 'patched', cached: [P1, P2], servable: [P2], flushes: 0 },
  { name: 'memory delete patches the set at once', event: ev('memories', 'DELETE', 'rows', [M1], [P1]), action: 'patched', cached: [P1, P2], servable: [P2], flushes: 0 },
  { name: 'personality-scope memory change drops that set', event: ev('memories', 'UPDATE', 'personalities', [], [P1]), action: 'evicted', cached: [P1, P2], servable: [P2], flushes: 0 },
  { name: 'memories TRUNCATE drops every set, keeps personalities', event: ev('memories', 'TRUNCATE', 'table', [], []), action: 'flushed', cached: [P1, P2], servable: [], flushes: 1 },
  { name: 'a change to an uncached personality is ignored', event: ev('personalities', 'UPDATE', 'rows', ['00000000-0000-4000-8000-0000000000ff'], ['00000000-0000-4000-8000-0000000000ff']), action: 'ignored', cached: [P1, P2], servable: [P1, P2], flushes: 0 },
];

describe('CacheCore.apply: one change, one rule', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const { core } = setup();
      await warmAll(core);
      expect(core.apply(c.event)).toBe(c.action);
      expect([P1, P2].filter((p) => core.peekPersonality(p) !== undefined)).toEqual(c.cached);
      expect([P1, P2].filter((p) => core.isServable(p))).toEqual(c.servable);
      expect(core.stats().flushes).toBe(c.flushes);
    });
  }

  it('a patched set serves the new rows once re-read, without a reload', async () => {
    const { core, memories } = setup();
    await warmAll(core);
    const loaded = core.stats().loadedVectors;
    const [added] = rows(P1, ['00000000-0000-4000-8000-0000000000b1']);
    memories.get(P1)!.push(added!);
    core.apply(ev('memories', 'INSERT', 'rows', [added!.id], [P1]));
    expect(core.isServable(P1)).toBe(false);
    await core.settled(P1);
    expect(core.isServable(P1)).toBe(true);
    expect(core.holds(P1, added!.id)).toBe(true);
    expect(core.stats().loadedVectors).toBe(loaded);
  });
});

describe('CacheCore and its source', () => {
  it('down: nothing is served and, for a source that cannot replay, nothing is kept', async () => {
    const { core, source, loads } = setup(false);
    await warmAll(core);
    source.down();
    expect(core.serving).toBe(false);
    expect(core.peekPersonality(P1)).toBeUndefined();
    expect(await core.search(P1, { query: new Float32Array(1536), limit: 1 })).toEqual({ status: 'miss', reason: 'not-serving' });
    const before = loads();
    await core.getPersonality(P1); // read through, not stored
    await core.getPersonality(P1);
    expect(loads()).toBe(before + 2);
    source.up(false, 'reconnected');
    expect(core.stats()).toMatchObject({ personalities: 0, hotSets: 0, reconnects: 1, flushes: 1 });
  });

  it('a resumable source that lost nothing keeps the caches across a blip', async () => {
    const { core, source } = setup(true);
    await warmAll(core);
    source.down();
    expect(core.peekPersonality(P1)).toBeUndefined();
    expect(core.isServable(P1)).toBe(false);
    // Replayed before `up`: the missed change still applies.
    core.apply(ev('personalities', 'UPDATE', 'rows', [P2], [P2]));
    source.up(false, null);
    expect(core.stats()).toMatchObject({ flushes: 0, reconnects: 1 });
    expect(core.peekPersonality(P1)).toEqual({ id: P1, name: 'one' });
    expect(core.peekPersonality(P2)).toBeUndefined();
    expect(core.isServable(P1)).toBe(true);
  });

  it('a resumable source that cannot prove continuity flushes, and says why', async () => {
    const { core, source } = setup(true);
    await warmAll(core);
    const reasons: string[] = [];
    core.on('flush', (r) => reasons.push(r));
    source.down();
    source.up(false, 'stream trimmed past sequence 41');
    expect(reasons).toEqual(['stream trimmed past sequence 41']);
    expect(core.stats()).toMatchObject({ personalities: 0, hotSets: 0, flushes: 1 });
  });

  it('a gap found while up, or an unreadable structured payload, flushes', async () => {
    const { core, source } = setup(true);
    await warmAll(core);
    source.emit('lost', 'gap at 7');
    expect(core.stats()).toMatchObject({ personalities: 0, flushes: 1 });
    await warmAll(core);
    source.emit('invalid', 'not JSON', 'x', 1, false);
    expect(core.stats()).toMatchObject({ personalities: 2, flushes: 1, invalidNotifications: 1 });
    source.emit('invalid', 'table: bad', '{}', 2, true);
    expect(core.stats()).toMatchObject({ personalities: 0, flushes: 2, invalidNotifications: 2 });
  });

  it('cached values are frozen: one caller cannot change another\'s copy', async () => {
    const { core } = setup();
    const p = (await core.getPersonality(P1))!;
    expect(Object.isFrozen(p)).toBe(true);
  });
});

describe('hot-set loads cancelled by an invalidation', () => {
  it('are not failures: no back-off, and the next search loads again at once', async () => {
    const { core, memories } = setup();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    // A store whose stream waits until released, so the drop lands mid-load.
    const store = (core as unknown as { hot: { options: { store: HotSetStore } } }).hot.options.store;
    const stream = store.stream;
    let calls = 0;
    store.stream = async (pid, limit, onRow, signal) => {
      if (++calls === 1) {
        await held;
        // As the real store does: an aborted COPY rejects.
        if (signal.aborted) throw new Error('stopped retrying: aborted');
      }
      return stream(pid, limit, onRow, signal);
    };
    core.warm(P1);
    core.apply(ev('memories', 'UPDATE', 'personalities', [], [P1])); // drops the set and cancels the load
    release();
    // Let the cancelled load run to its end (its rejection settles within this turn).
    await new Promise((resolve) => setImmediate(resolve));
    core.warm(P1); // no 5 s "not hot" verdict: this starts a new load
    await core.settled(P1);
    expect(core.isServable(P1)).toBe(true);
    expect(calls).toBe(2);
    expect(memories.get(P1)).toHaveLength(1);
  });
});
