import { describe, expect, it } from 'vitest';
import { parsePayload } from '../../src/contract/change-event.js';

const memoryId = '3dbdccec-95c6-44fb-bfa1-88470f8eff79';
const personalityId = '361b6e50-ba1b-4ef1-93cb-7583483bad7b';
const goneId = 'a1f0f5de-3d39-4d43-8f64-4ad5f0d3e2b1';

/** A payload as the generated Memory trigger sends it for an UPDATE that also moved one row's id. */
const good = {
  ms: 2,
  model: 'Memory',
  op: 'UPDATE',
  txid: '761',
  ts: 1795506161666.378,
  scope: 'rows',
  fields: ['id', 'personalityId'],
  rows: [[memoryId, personalityId]],
  gone: [[goneId]],
  chunk: 1,
  chunks: 1,
};

const raw = (patch: Record<string, unknown>) => JSON.stringify({ ...good, ...patch });
/** What a rejection keeps of the payload for the log. */
const sampleOf = (text: string) => (text.length > 200 ? `${text.slice(0, 200)}…` : text);

describe('parsePayload', () => {
  it('accepts the v2 contract and reports its size', () => {
    const text = JSON.stringify(good);
    const r = parsePayload(text);
    expect(r).toEqual({ ok: true, event: good, bytes: Buffer.byteLength(text) });
  });

  it.each([
    ['a partitions-scope event', { scope: 'partitions', fields: ['personalityId'], rows: [[personalityId]], gone: [] }],
    ['a model-scope event', { op: 'TRUNCATE', scope: 'model', fields: [], rows: [], gone: [] }],
    ['a null key value', { rows: [[memoryId, null]] }],
    ['the last of several chunks', { chunk: 3, chunks: 3 }],
  ])('accepts %s', (_n, patch) => {
    const r = parsePayload(raw(patch));
    expect(r.ok, r.ok ? '' : r.reason).toBe(true);
  });

  it.each([
    ['a wrong version', raw({ ms: 1 }), /^ms:/],
    ['a newer version', raw({ ms: 3 }), /^ms:/],
    ['a missing model', JSON.stringify({ ...good, model: undefined }), /^model:/],
    ['a model that is not a Prisma name', raw({ model: 'public.memories' }), /^model:/],
    ['an unknown op', raw({ op: 'MERGE' }), /^op:/],
    ['an unknown scope', raw({ scope: 'table' }), /^scope:/],
    ['a row tuple shorter than fields', raw({ rows: [[memoryId]] }), /one value per field/],
    ['a row tuple longer than fields', raw({ rows: [[memoryId, personalityId, 'x']] }), /one value per field/],
    ['a key value that is not text', raw({ rows: [[memoryId, 7]] }), /^rows\.0\.1:/],
    ['chunk beyond chunks', raw({ chunk: 3, chunks: 2 }), /chunk exceeds chunks/],
    ['chunk 0', raw({ chunk: 0 }), /^chunk:/],
    ['a model-scope event that names rows', raw({ scope: 'model', rows: [[memoryId, personalityId]], gone: [] }), /model-scope event names no rows/],
    ['a model-scope event that names gone rows', raw({ scope: 'model', rows: [], gone: [[goneId]] }), /model-scope event names no rows/],
    ['a txid that is not a number', raw({ txid: 'abc' }), /^txid:/],
  ])('rejects %s with a reason, as ours, without throwing', (_n, text, reason) => {
    let r: ReturnType<typeof parsePayload> | undefined;
    expect(() => (r = parsePayload(text))).not.toThrow();
    expect(r).toMatchObject({ ok: false, ours: true, bytes: Buffer.byteLength(text), sample: sampleOf(text) });
    if (r && !r.ok) expect(r.reason).toMatch(reason);
  });

  it.each([
    ['text that is not JSON', 'not json', /^not JSON/],
    ['a truncated object', '{', /^not JSON/],
    ['another program’s object', '{"type":"all"}', /no "ms" key/],
    ['a JSON array', '[1]', /no "ms" key/],
    ['JSON null', 'null', /no "ms" key/],
    ['a JSON string', '"memories"', /no "ms" key/],
    ['a v1 payload of memory-sync 0.1', JSON.stringify({ v: 1, table: 'memories', op: 'INSERT', scope: 'rows', ids: [memoryId], personalityIds: [personalityId] }), /no "ms" key/],
  ])('classifies %s as foreign (ours = false), with a reason', (_n, text, reason) => {
    const r = parsePayload(text);
    expect(r).toMatchObject({ ok: false, ours: false, sample: sampleOf(text) });
    if (!r.ok) expect(r.reason).toMatch(reason);
  });

  it.each([
    ['{"ms":2}', '{"ms":2}'],
    ['a future version', JSON.stringify({ ms: 3, model: 'Memory', op: 'UPSERT', rows: [] })],
    ['an ms key of any value', '{"ms":null}'],
  ])('classifies %s as ours although it cannot be read', (_n, text) => {
    expect(parsePayload(text)).toMatchObject({ ok: false, ours: true });
  });

  it('keeps only the start of a long payload as its sample', () => {
    const text = JSON.stringify({ type: 'x'.repeat(5_000) });
    const r = parsePayload(text);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.bytes).toBe(Buffer.byteLength(text));
      expect(r.sample).toBe(`${text.slice(0, 200)}…`);
    }
  });
});
