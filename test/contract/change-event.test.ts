import { describe, expect, it } from 'vitest';
import { parsePayload } from '../../src/contract/change-event.js';

const good = {
  v: 1,
  table: 'memories',
  op: 'INSERT',
  scope: 'rows',
  ids: ['3dbdccec-95c6-44fb-bfa1-88470f8eff79'],
  personalityIds: ['361b6e50-ba1b-4ef1-93cb-7583483bad7b'],
  txid: '761',
  ts: 1795506161666.378,
  chunk: 1,
  chunks: 1,
};

describe('parsePayload', () => {
  it('accepts the v1 contract', () => {
    const r = parsePayload(JSON.stringify(good));
    expect(r).toMatchObject({ ok: true, event: good });
  });

  it.each([
    ['not JSON', '{', /^not JSON/],
    ['wrong version', JSON.stringify({ ...good, v: 2 }), /^v:/],
    ['unknown table', JSON.stringify({ ...good, table: 'users' }), /^table:/],
    ['bad id', JSON.stringify({ ...good, ids: ['x'] }), /^ids\.0:/],
    ['rows scope without ids', JSON.stringify({ ...good, ids: [] }), /rows-scope/],
    ['chunk beyond chunks', JSON.stringify({ ...good, chunk: 3, chunks: 2 }), /chunk/],
    ['a JSON array', '[]', /payload/],
  ])('rejects %s with a reason, without throwing', (_n, raw, reason) => {
    const r = parsePayload(raw);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(reason);
  });
});
