import type { ChangeEvent } from '../contract/change-event.js';
import type { EntityShape, TreeShape, WatchShape } from '../contract/shape.js';

/*
 * Keys name what a cached value depends on: "this row of model M" (its id)
 * and "rows of model M whose fields F equal V" (a relation's join, a
 * lookup). A cached entity registers the keys of its whole include tree; a
 * change event yields the keys of the rows it touched; an entity is evicted
 * when the two meet. So a change reaches exactly the cached roots that
 * include the changed row, through link tables and shared rows alike, and
 * the triggers need to send only keys.
 */

type Canon = 'lower' | 'trimEnd' | undefined;

/** The text PostgreSQL prints for a key value (`col::text`), canonicalized; null when it joins nothing. */
export function keyText(v: unknown, canon?: Canon): string | null {
  let s: string;
  if (v === null || v === undefined) return null;
  if (typeof v === 'string') s = v;
  else if (typeof v === 'number' || typeof v === 'bigint') s = String(v);
  else if (typeof v === 'boolean') s = v ? 'true' : 'false';
  else return null;
  if (canon === 'lower') return s.toLowerCase();
  if (canon === 'trimEnd') return s.replace(/ +$/, '');
  return s;
}

/** One key: the model, the field set and its values. */
export function key(model: string, fields: readonly string[], values: readonly string[]): string {
  return `${model}\u0001${fields.join(',')}\u0001${values.join('\u0000')}`;
}

/** The key of a lookup (the entity's root model and the lookup's fields); null when a value is null. */
export function lookupKey(model: string, fields: readonly string[], values: readonly unknown[], canon: (field: string) => Canon = () => undefined): string | null {
  const texts: string[] = [];
  for (const [i, f] of fields.entries()) {
    const t = keyText(values[i], canon(f));
    if (t === null) return null;
    texts.push(t);
  }
  return key(model, fields, texts);
}

function canonOf(node: TreeShape): (field: string) => Canon {
  return (f) => node.fields.find((x) => x.name === f)?.canon;
}

/**
 * Every key a cached entity value depends on: each row's id, and for each
 * included relation of each row, the join its children are found by (even
 * when it found none, so that an INSERT of a first child evicts).
 */
export function valueKeys(shape: EntityShape, value: object): Set<string> {
  const out = new Set<string>();
  const walk = (node: TreeShape, row: Record<string, unknown>) => {
    const canon = canonOf(node);
    const id = lookupKey(node.model, node.id, node.id.map((f) => row[f]), canon);
    if (id) out.add(id);
    for (const c of node.children) {
      const join = lookupKey(c.node.model, c.childFields, c.parentFields.map((f) => row[f]), canonOf(c.node));
      if (join) out.add(join);
      const v = row[c.field];
      if (Array.isArray(v)) for (const child of v) walk(c.node, child as Record<string, unknown>);
      else if (v && typeof v === 'object') walk(c.node, v as Record<string, unknown>);
    }
  };
  walk(shape.root, value as Record<string, unknown>);
  return out;
}

export interface EventKeys {
  /** Keys of the rows the event touched: their ids, joins and lookups. */
  keys: string[];
  /** Ids (text) of new row images and of rows that left, for collections. */
  ids: string[];
  /** For each new row image: its id and its partition per partition field set of the model (null: a NULL in it). */
  partitions: { id: string; sets: (string | null)[] }[];
}

/** Positions of `set` in `fields`, or null when the event does not carry the whole set. */
function positions(fields: readonly string[], set: readonly string[]): number[] | null {
  const out: number[] = [];
  for (const f of set) {
    const i = fields.indexOf(f);
    if (i < 0) return null;
    out.push(i);
  }
  return out;
}

/** The keys of a rows-scope event, for the model's watch shape. */
export function eventKeys(w: WatchShape, e: ChangeEvent): EventKeys {
  const keys: string[] = [];
  const ids: string[] = [];
  const partitions: EventKeys['partitions'] = [];
  const canon = (f: string) => w.canon[f];
  const sets = w.keySets.map((s) => [s, positions(e.fields, s)] as const).filter((x): x is readonly [string[], number[]] => x[1] !== null);
  const parts = w.partitions.map((s) => [s, positions(e.fields, s)] as const).filter((x): x is readonly [string[], number[]] => x[1] !== null);
  const idAt = positions(e.fields, w.id);
  for (const t of e.rows) {
    for (const [set, at] of sets) {
      const k = lookupKey(w.model, set, at.map((i) => t[i]), canon);
      if (k) keys.push(k);
    }
    if (idAt) {
      const id = lookupKey(w.model, w.id, idAt.map((i) => t[i]), canon);
      if (id) {
        const idText = idAt.map((i) => t[i]).join('\u0000');
        ids.push(idText);
        partitions.push({ id: idText, sets: parts.map(([set, at]) => partitionKey(at.map((i) => t[i] ?? null), set.map(canon))) });
      }
    }
  }
  for (const t of e.gone) {
    const k = lookupKey(w.model, w.id, t, canon);
    if (k) keys.push(k);
    ids.push(t.join('\u0000'));
  }
  return { keys, ids, partitions };
}

/** A partition's cache name from its values' text; null when one is NULL (no search names a NULL partition). */
export function partitionKey(values: readonly unknown[], canon: readonly Canon[] = []): string | null {
  const texts: string[] = [];
  for (const [i, v] of values.entries()) {
    const t = keyText(v, canon[i]);
    if (t === null) return null;
    texts.push(t);
  }
  return texts.join('\u0000');
}
