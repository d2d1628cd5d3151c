import { PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import { formatLsn, parseLsn } from './lsn.js';
import type { DecodedChange, DecodedTransaction } from './types.js';

/*
 * pg-logical-replication decodes the pgoutput protocol; this file only
 * keeps its values as text and gathers its messages into committed
 * transactions.
 */

/** A message the library could not parse: the stream cannot be trusted past it. */
export interface UnreadableMessage {
  tag: 'unreadable';
  error: Error;
}

export type StreamMessage = Pgoutput.Message | UnreadableMessage;

const asText = (raw: unknown) => raw;

/**
 * pgoutput with text values as PostgreSQL prints them: the library would run
 * pg's global type parsers (Date, number, JSON...), which lose precision and
 * depend on whatever the application registered. A parse error becomes a
 * value instead of an exception thrown into pg's socket handler.
 */
export class TextPgoutputPlugin extends PgoutputPlugin {
  override parse(buffer: Buffer): Pgoutput.Message {
    try {
      const m = super.parse(buffer);
      // Relations are cached by the parser and read by every later tuple of that table.
      if (m.tag === 'relation') for (const c of m.columns) c.parser = asText;
      return m;
    } catch (err) {
      const unreadable: UnreadableMessage = { tag: 'unreadable', error: err instanceof Error ? err : new Error(String(err)) };
      return unreadable as unknown as Pgoutput.Message; // handed on as StreamMessage
    }
  }
}

/** Column values as text; absent (unchanged TOAST) dropped. */
function tuple(t: Record<string, unknown> | null | undefined): Record<string, string | null> | undefined {
  if (!t) return undefined;
  const out: Record<string, string | null> = {};
  for (const [k, v] of Object.entries(t)) {
    if (v === undefined) continue;
    out[k] = v === null ? null : typeof v === 'string' ? v : Buffer.isBuffer(v) ? v.toString('utf8') : String(v);
  }
  return out;
}

/** µs since the Unix epoch (the library's bigint) → epoch ms. */
const toMs = (t: unknown): number => Number(BigInt(t as bigint) / 1000n) + Number(BigInt(t as bigint) % 1000n) / 1000;

export interface LogicalMessage {
  prefix: string;
  content: string;
}

export type Assembled =
  | {
      kind: 'commit';
      tx: DecodedTransaction;
      end: bigint;
      messages: LogicalMessage[];
      /** Why this transaction's changes cannot be trusted to be complete (an unreadable message), or null. */
      broken: string | null;
    }
  | { kind: 'message'; message: LogicalMessage }
  | { kind: 'none' };

interface OpenTransaction {
  xid: number;
  changes: DecodedChange[];
  messages: LogicalMessage[];
  broken: string | null;
}

/**
 * Gathers BEGIN … COMMIT into one DecodedTransaction (and the transactional
 * logical messages inside it). Never throws: what it cannot read or place
 * (an unreadable message, a change outside a transaction) marks the
 * transaction `broken`, and the caller flushes instead of guessing.
 */
export class TransactionAssembler {
  private open: OpenTransaction | undefined;

  get inTransaction(): boolean {
    return this.open !== undefined;
  }

  reset(): void {
    this.open = undefined;
  }

  push(m: StreamMessage): Assembled {
    switch (m.tag) {
      case 'unreadable':
        this.tx('?').broken ??= `pgoutput message not readable: ${m.error.message}`;
        return { kind: 'none' };
      case 'begin':
        if (this.open) this.open.broken ??= `BEGIN of ${m.xid} inside transaction ${this.open.xid}`;
        this.open = { xid: m.xid, changes: [], messages: [], broken: this.open?.broken ?? null };
        return { kind: 'none' };
      case 'insert':
        this.tx('INSERT').changes.push({ schema: m.relation.schema, table: m.relation.name, op: 'INSERT', new: tuple(m.new) });
        return { kind: 'none' };
      case 'update': {
        const change: DecodedChange = { schema: m.relation.schema, table: m.relation.name, op: 'UPDATE', new: tuple(m.new) };
        const old = tuple(m.key ?? m.old);
        if (old) change.old = old;
        this.tx('UPDATE').changes.push(change);
        return { kind: 'none' };
      }
      case 'delete': {
        const change: DecodedChange = { schema: m.relation.schema, table: m.relation.name, op: 'DELETE' };
        const old = tuple(m.key ?? m.old);
        if (old) change.old = old;
        this.tx('DELETE').changes.push(change);
        return { kind: 'none' };
      }
      case 'truncate':
        for (const r of m.relations) this.tx('TRUNCATE').changes.push({ schema: r.schema, table: r.name, op: 'TRUNCATE' });
        return { kind: 'none' };
      case 'message': {
        const message = { prefix: m.prefix, content: Buffer.from(m.content).toString('utf8') };
        if (m.transactional && this.open) {
          this.open.messages.push(message);
          return { kind: 'none' };
        }
        return { kind: 'message', message };
      }
      case 'commit': {
        const open = this.tx('COMMIT');
        this.open = undefined;
        const end = m.commitEndLsn ? parseLsn(m.commitEndLsn) : null;
        if (end === null) open.broken ??= 'COMMIT without an end position';
        return {
          kind: 'commit',
          tx: { xid: open.xid, commitLsn: formatLsn(end ?? 0n), commitTime: toMs(m.commitTime), changes: open.changes },
          end: end ?? 0n,
          messages: open.messages,
          broken: open.broken,
        };
      }
      default:
        // relation, type, origin: bookkeeping the parser keeps.
        return { kind: 'none' };
    }
  }

  private tx(what: string): OpenTransaction {
    this.open ??= { xid: 0, changes: [], messages: [], broken: `${what} outside a transaction` };
    return this.open;
  }
}
