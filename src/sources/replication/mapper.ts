import type { ChangeEvent } from '../../contract/change-event.js';
import type { Binding, ModelBinding, WatchedModel } from '../../schema/binding.js';
import type { DecodedChange, DecodedTransaction, EventMapper } from './types.js';

/*
 * How a committed transaction from the slot becomes the same v2 change
 * events the generated triggers send (src/capture/triggers.ts); the cache
 * core cannot tell them apart. What the WAL gives differs from a trigger's
 * transition tables in two ways:
 * - no old row (REPLICA IDENTITY DEFAULT sends the old key only when it
 *   changed), so every UPDATE is sent, not only those touching a column a
 *   cache reads; a DELETE names only the id (as the triggers' do);
 * - a whole transaction at once, not a statement, and no NOTIFY limit on
 *   size: events are chunked at EVENT_BYTES, up to MAX_EVENTS per model and
 *   operation, before falling back to partitions (INSERT only: an UPDATE's or
 *   DELETE's old partition is not in the WAL) and then to the whole model.
 * What is published (the key columns) is src/capture/publication.ts.
 */

/** One event's rows and gone tuples, in bytes of JSON (bus messages stay small). */
export const EVENT_BYTES = 60_000;
/** Events per model and operation in one transaction before the fallback. */
export const MAX_EVENTS = 64;
/** The event schema's bound on tuples per event. */
const MAX_TUPLES = 10_000;

const columns = (m: ModelBinding, fields: readonly string[]) => fields.map((f) => m.fields.get(f)!.column);

interface Target {
  w: WatchedModel;
  payload: string[];
  ids: string[];
  partFields: string[];
  partCols: string[];
}

interface Group {
  t: Target;
  op: ChangeEvent['op'];
  rows: Set<string>;
  gone: Set<string>;
  parts: Set<string>;
  /** A change that cannot be named row by row (a column not in the WAL, a TRUNCATE). */
  whole: boolean;
}

/** The binding's event mapper: decoded transactions → v2 change events. Never throws on a change it cannot place; it widens the scope. */
export function bindingMapper(binding: Binding, currentSchema: string): EventMapper {
  const targets = new Map<string, Target>();
  for (const w of binding.watched.values()) {
    const m = binding.models.get(w.model)!;
    const partFields = [...new Set(w.partitions.flat())];
    targets.set(`${m.schema ?? currentSchema}.${m.table}`, { w, payload: columns(m, w.payload), ids: columns(m, m.id), partFields, partCols: columns(m, partFields) });
  }
  return (tx: DecodedTransaction) => {
    const groups = new Map<string, Group>();
    for (const c of tx.changes) {
      const t = targets.get(`${c.schema}.${c.table}`);
      if (!t) continue; // published by someone else's ALTER PUBLICATION: no cache reads it
      const key = `${t.w.model}\u0000${c.op}`;
      let g = groups.get(key);
      if (!g) groups.set(key, (g = { t, op: c.op, rows: new Set(), gone: new Set(), parts: new Set(), whole: false }));
      place(g, c);
    }
    const head = { ms: 2 as const, txid: String(tx.xid), ts: tx.commitTime };
    return [...groups.values()].flatMap((g) => eventsOf(g, head));
  };
}

function tuple(values: Record<string, string | null> | undefined, cols: readonly string[]): string | undefined {
  if (!values) return undefined;
  const out: (string | null)[] = [];
  for (const c of cols) {
    const v = values[c];
    if (v === undefined) return undefined; // not sent (an unchanged TOASTed value, a column outside the list)
    out.push(v);
  }
  return JSON.stringify(out);
}

function place(g: Group, c: DecodedChange): void {
  const t = g.t;
  if (c.op === 'TRUNCATE') {
    g.whole = true;
    return;
  }
  if (c.op === 'INSERT' || c.op === 'UPDATE') {
    const row = tuple(c.new, t.payload);
    if (row === undefined) g.whole = true;
    else g.rows.add(row);
    const part = t.partCols.length ? tuple(c.new, t.partCols) : undefined;
    if (part !== undefined) g.parts.add(part);
  }
  if (c.op === 'UPDATE' && c.old) {
    // A key tuple comes only when the identity changed (or with FULL identity: then compare).
    const was = tuple(c.old, t.ids);
    if (was === undefined) g.whole = true;
    else if (was !== tuple(c.new, t.ids)) g.gone.add(was);
  }
  if (c.op === 'DELETE') {
    const was = tuple(c.old, t.ids);
    if (was === undefined) g.whole = true;
    else g.gone.add(was);
  }
}

type Head = Pick<ChangeEvent, 'ms' | 'txid' | 'ts'>;

/** Tuples into events of at most EVENT_BYTES and MAX_TUPLES; undefined past MAX_EVENTS. */
function chunked(rows: string[], gone: string[]): { rows: string[]; gone: string[] }[] | undefined {
  const out: { rows: string[]; gone: string[] }[] = [];
  let cur = { rows: [] as string[], gone: [] as string[] };
  let bytes = 0;
  const add = (kind: 'rows' | 'gone', j: string) => {
    if (cur.rows.length + cur.gone.length > 0 && (bytes + j.length + 1 > EVENT_BYTES || cur.rows.length + cur.gone.length >= MAX_TUPLES)) {
      out.push(cur);
      cur = { rows: [], gone: [] };
      bytes = 0;
    }
    cur[kind].push(j);
    bytes += j.length + 1;
  };
  for (const j of rows) add('rows', j);
  for (const j of gone) add('gone', j);
  if (cur.rows.length + cur.gone.length > 0) out.push(cur);
  return out.length <= MAX_EVENTS ? out : undefined;
}

function eventsOf(g: Group, head: Head): ChangeEvent[] {
  const model = g.t.w.model;
  // Plain literals, not spreads of `head`: this runs once per committed transaction.
  const event = (scope: ChangeEvent['scope'], fields: string[], rows: string[], gone: string[], chunk: number, chunks: number): ChangeEvent => ({
    ms: head.ms,
    model,
    op: g.op,
    scope,
    fields,
    rows: rows.map(parse),
    gone: gone.map(parse),
    txid: head.txid,
    ts: head.ts,
    chunk,
    chunks,
  });
  if (g.whole) return [event('model', [], [], [], 1, 1)];
  const byRows = chunked(sorted(g.rows), sorted(g.gone));
  if (byRows) return byRows.map((c, i) => event('rows', g.t.w.payload, c.rows, c.gone, i + 1, byRows.length));
  // Too many rows to name. An INSERT's partitions are all in its new rows; an UPDATE or DELETE may also leave partitions the WAL does not name.
  if (g.op === 'INSERT' && g.t.partFields.length) {
    const byParts = chunked(sorted(g.parts), []);
    if (byParts) return byParts.map((c, i) => event('partitions', g.t.partFields, c.rows, [], i + 1, byParts.length));
  }
  return [event('model', [], [], [], 1, 1)];
}

const parse = (j: string) => JSON.parse(j) as (string | null)[];
const sorted = (s: Set<string>): string[] => (s.size < 2 ? [...s] : [...s].sort());
