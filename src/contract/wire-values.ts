import { Decimal } from '@prisma/client-runtime-utils';
import type { FieldShape, TreeShape } from './shape.js';

/*
 * Values on the wire (sidecar answers, the remote client): JSON cannot carry
 * BigInt, Decimal or bytes, so they travel as strings (bytes as base64) and
 * are revived by the field's type; Dates are ISO strings.
 */

/**
 * JSON for the wire (sidecar answers): what JSON cannot carry becomes a
 * string the remote client revives by the field's type (BigInt, Decimal,
 * Bytes as base64); Dates are ISO strings.
 */
export function toWire(f: Pick<FieldShape, 'type' | 'list'>, v: unknown): unknown {
  if (v === null || v === undefined) return null;
  const one = (x: unknown): unknown => {
    if (x === null) return null;
    switch (f.type) {
      case 'BigInt':
        return (x as bigint).toString();
      case 'Decimal':
        return (x as Decimal).toString();
      case 'Bytes':
        return Buffer.from(x as Uint8Array).toString('base64');
      case 'DateTime':
        return (x as Date).toISOString();
      case 'Float':
        return Number.isFinite(x as number) ? x : String(x);
      default:
        return x;
    }
  };
  return f.list ? (v as unknown[]).map(one) : one(v);
}

/** The inverse of toWire. */
export function fromWire(f: Pick<FieldShape, 'type' | 'list'>, v: unknown): unknown {
  if (v === null || v === undefined) return null;
  const one = (x: unknown): unknown => {
    if (x === null) return null;
    switch (f.type) {
      case 'BigInt':
        return BigInt(x as string);
      case 'Decimal':
        return new Decimal(x as string);
      case 'Bytes':
        return new Uint8Array(Buffer.from(x as string, 'base64'));
      case 'DateTime':
        return new Date(x as string);
      case 'Float':
        return typeof x === 'string' ? Number(x) : x;
      default:
        return x;
    }
  };
  return f.list ? (v as unknown[]).map(one) : one(v);
}

/** An entity value (a tree of rows) for the wire. */
export function entityToWire(node: TreeShape, value: Record<string, unknown> | null): unknown {
  if (value === null) return null;
  const out: Record<string, unknown> = {};
  for (const f of node.fields) out[f.name] = toWire(f, value[f.name]);
  for (const c of node.children) {
    const v = value[c.field];
    out[c.field] = c.list ? ((v as Record<string, unknown>[] | undefined) ?? []).map((x) => entityToWire(c.node, x)) : entityToWire(c.node, (v as Record<string, unknown> | null | undefined) ?? null);
  }
  return out;
}

/** The inverse of entityToWire. */
export function entityFromWire(node: TreeShape, value: unknown): Record<string, unknown> | null {
  if (value === null || value === undefined) return null;
  const v = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const f of node.fields) out[f.name] = fromWire(f, v[f.name]);
  for (const c of node.children) {
    const x = v[c.field];
    out[c.field] = c.list ? ((x as unknown[] | undefined) ?? []).map((y) => entityFromWire(c.node, y)) : entityFromWire(c.node, x);
  }
  return out;
}
