import type { Binding, ModelBinding } from '../schema/binding.js';
import type { CaptureTable } from './replication.js';

/*
 * Capture by logical replication, from the binding: which tables and columns
 * the publication carries. The key fields only (what the triggers would
 * send), so embeddings and bodies never leave the server; how those columns
 * become change events is src/sources/replication/mapper.ts.
 */

/** The publication's tables: each watched model, its payload columns (the identity is added by the publication). */
export function replicationTables(binding: Binding, currentSchema: string): CaptureTable[] {
  return [...binding.watched.values()].map((w) => {
    const m = binding.models.get(w.model)!;
    return { schema: m.schema ?? currentSchema, name: m.table, columns: columns(m, w.payload), replicaIdentity: 'existing' };
  });
}

const columns = (m: ModelBinding, fields: readonly string[]) => fields.map((f) => m.fields.get(f)!.column);
