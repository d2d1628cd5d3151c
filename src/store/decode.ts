import { Decimal } from '@prisma/client-runtime-utils';
import type { FieldShape } from '../contract/shape.js';

/*
 * A column's text (as src/store/sql.ts textOf selects it) back into the value
 * Prisma returns for the field: the same on PostgreSQL and PGlite, whatever
 * the session's settings, because every value crosses as text.
 */

function scalar(type: FieldShape['type'], s: string): unknown {
  switch (type) {
    case 'String':
    case 'Enum':
      return s;
    case 'Int':
      return Number.parseInt(s, 10);
    case 'Float':
      return s === 'NaN' ? Number.NaN : s === 'Infinity' ? Number.POSITIVE_INFINITY : s === '-Infinity' ? Number.NEGATIVE_INFINITY : Number.parseFloat(s);
    case 'BigInt':
      return BigInt(s);
    case 'Decimal':
      return new Decimal(s);
    case 'Boolean':
      return s === 'true' || s === 't';
    case 'DateTime':
      // Epoch milliseconds with a fraction: truncated to the millisecond, as a Date made from PostgreSQL's text would be.
      return new Date(Math.trunc(Number(s)));
    case 'Json':
      return JSON.parse(s) as unknown;
    case 'Bytes':
      return new Uint8Array(Buffer.from(s.startsWith('\\x') ? s.slice(2) : s, 'hex'));
  }
}

/** Decodes one field's text (null stays null; a list arrives as a JSON array of texts). */
export function decodeField(f: Pick<FieldShape, 'type' | 'list'>, text: string | null): unknown {
  if (text === null) return null;
  if (!f.list) return scalar(f.type, text);
  const items = JSON.parse(text) as (string | null)[];
  return items.map((x) => (x === null ? null : scalar(f.type, x)));
}
