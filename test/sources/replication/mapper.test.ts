import { describe, expect, it } from 'vitest';
import { bindingMapper, EVENT_BYTES, MAX_EVENTS } from '../../../src/sources/replication/mapper.js';
import { changeEventSchema } from '../../../src/contract/change-event.js';
import type { DecodedChange, DecodedTransaction } from '../../../src/sources/replication/types.js';
import { loadBotDeclaration } from '../../helpers/bot.js';
import { bindDeclaration } from '../../../src/schema/load.js';

/* The binding's mapper, on the test bot's declaration: decoded WAL changes → v2 events (pure). */

const binding = bindDeclaration(await loadBotDeclaration());
const map = bindingMapper(binding, 'public');
const tx = (changes: DecodedChange[]): DecodedTransaction => ({ xid: 77, commitLsn: '0/10', commitTime: 1_700_000_000_000, changes });
const mem = (op: DecodedChange['op'], n?: Record<string, string | null>, old?: Record<string, string | null>): DecodedChange => ({ schema: 'public', table: 'memory_rows', op, ...(n ? { new: n } : {}), ...(old ? { old } : {}) });
const memoryPayload = binding.watched.get('Memory')!.payload;
const row = (id: string, persona = 'p1') => Object.fromEntries(memoryPayload.map((f) => [binding.models.get('Memory')!.fields.get(f)!.column, f === 'id' ? id : f === 'personaId' ? persona : 'x']));

describe('bindingMapper', () => {
  it('sends what the triggers send: new images in rows, ids that left in gone, model and fields by Prisma name', () => {
    const events = map(tx([mem('INSERT', row('a')), mem('UPDATE', row('b', 'p2')), mem('DELETE', undefined, { id: 'c' }), mem('UPDATE', row('d2'), { id: 'd1' })]));
    for (const e of events) expect(changeEventSchema.safeParse(e).success).toBe(true);
    expect(events.map((e) => `${e.model}.${e.op}.${e.scope}`)).toEqual(['Memory.INSERT.rows', 'Memory.UPDATE.rows', 'Memory.DELETE.rows']);
    expect(events[0]).toMatchObject({ ms: 2, txid: '77', ts: 1_700_000_000_000, fields: memoryPayload, gone: [] });
    expect(events[0]!.rows[0]![memoryPayload.indexOf('id')]).toBe('a');
    // The key changed (d1 → d2): the old id is gone, the new image is a row.
    expect(events[1]!.gone).toEqual([['d1']]);
    expect(events[1]!.rows.map((t) => t[memoryPayload.indexOf('id')]).sort()).toEqual(['b', 'd2']);
    expect(events[2]).toMatchObject({ rows: [], gone: [['c']] });
  });

  it('an old tuple equal to the new key (REPLICA IDENTITY FULL) is not a departure', () => {
    const [e] = map(tx([mem('UPDATE', row('a'), { ...row('a'), body: 'old' })]));
    expect(e!.gone).toEqual([]);
  });

  it('ignores tables no cache reads; a change it cannot name widens to the whole model, never drops', () => {
    expect(map(tx([{ schema: 'public', table: 'not_watched', op: 'INSERT', new: { id: '1' } }]))).toEqual([]);
    expect(map(tx([{ schema: 'other', table: 'memory_rows', op: 'INSERT', new: row('a') }]))).toEqual([]);
    const missing = { ...row('a') };
    delete missing.persona_id; // an unchanged TOASTed value, or a column outside the list
    expect(map(tx([mem('INSERT', missing)]))).toMatchObject([{ scope: 'model', rows: [], gone: [] }]);
    expect(map(tx([mem('DELETE', undefined, { body: 'no id' })]))).toMatchObject([{ scope: 'model' }]);
    expect(map(tx([mem('TRUNCATE')]))).toMatchObject([{ model: 'Memory', op: 'TRUNCATE', scope: 'model', chunk: 1, chunks: 1 }]);
  });

  it(`chunks at ${EVENT_BYTES} bytes; past ${MAX_EVENTS} events an INSERT names its partitions, a DELETE the whole model`, () => {
    const many = (n: number) => Array.from({ length: n }, (_, i) => `00000000-0000-0000-0000-${String(i).padStart(12, '0')}`);
    const some = map(tx(many(5_000).map((id) => mem('INSERT', row(id, `p${id.slice(-1)}`)))));
    expect(some.length).toBeGreaterThan(1);
    expect(some.every((e, i) => e.scope === 'rows' && e.chunk === i + 1 && e.chunks === some.length)).toBe(true);
    expect(some.every((e) => JSON.stringify(e.rows).length <= EVENT_BYTES + 100)).toBe(true);
    expect(some.reduce((n, e) => n + e.rows.length, 0)).toBe(5_000);

    const ids = many(120_000);
    const inserts = map(tx(ids.map((id) => mem('INSERT', row(id, `p${id.slice(-1)}`)))));
    expect(inserts).toMatchObject([{ scope: 'partitions', fields: ['personaId'] }]);
    expect(inserts[0]!.rows.map((t) => t[0]).sort()).toEqual(Array.from({ length: 10 }, (_, i) => `p${i}`));
    // An UPDATE's or DELETE's old partition is not in the WAL: only the whole model is safe.
    expect(map(tx(ids.map((id) => mem('DELETE', undefined, { id }))))).toMatchObject([{ scope: 'model', op: 'DELETE' }]);
    expect(map(tx(ids.map((id) => mem('UPDATE', row(id)))))).toMatchObject([{ scope: 'model', op: 'UPDATE' }]);
  });
});
