import type { ChangeEvent } from '../../contract/change-event.js';

/*
 * What logical replication hands to the rest of memory-sync: committed
 * transactions, decoded, with text values. Turning them into change events
 * is the mapper's business (the schema binding's), never the source's.
 */

export interface DecodedChange {
  schema: string;
  table: string;
  op: 'INSERT' | 'UPDATE' | 'DELETE' | 'TRUNCATE';
  /** New tuple (INSERT/UPDATE): column name → text value as PostgreSQL prints it, null for NULL; unchanged TOASTed columns absent. */
  new?: Record<string, string | null>;
  /** Old key (UPDATE/DELETE): the replica-identity columns, when the server sent them. */
  old?: Record<string, string | null>;
}

export interface DecodedTransaction {
  xid: number;
  /** End of the commit record ("X/Y"): the position the slot is confirmed to once this transaction is applied. */
  commitLsn: string;
  /** Commit time, epoch ms. */
  commitTime: number;
  changes: DecodedChange[];
}

/** The change events to emit for one committed transaction, in order. Must not throw for valid input; if it does, caches flush. */
export type EventMapper = (tx: DecodedTransaction) => ChangeEvent[];
