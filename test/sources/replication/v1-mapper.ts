import type { ChangeEvent } from '../../../src/contract/change-event.js';
import type { DecodedChange, DecodedTransaction, EventMapper } from '../../../src/sources/replication/types.js';

/*
 * Test-only: turns decoded transactions on memory-sync's built-in tables
 * into today's v1 change events (what sql/010_notify.sql sends), so the
 * cache core can be driven end to end. The schema binding's mapper (issue
 * 15) replaces it. Captured as MEMORY_SYNC_CAPTURE_TABLES: personalities
 * (id), llm_configs (id, personalityId; identity = its personalityId index,
 * so a delete names its personality), memories (id, personalityId; a delete
 * carries only the id, placed through the cache's `holding`).
 */

const ROWS_PER_CHUNK = 90;
const MAX_ROW_CHUNKS = 12;
const PIDS_PER_CHUNK = 190;
const MAX_PID_CHUNKS = 20;
type Table = ChangeEvent['table'];
const TABLES = new Set<string>(['personalities', 'llm_configs', 'memories']);

export interface V1MapperOptions {
  /** Personalities whose cached sets hold this memory (the cache core's holding()). */
  holding?: (memoryId: string) => string[];
}

export function v1Mapper(options: V1MapperOptions = {}): EventMapper {
  return (tx: DecodedTransaction) => {
    const groups = new Map<string, { table: Table; op: ChangeEvent['op']; rows: Map<string, Set<string>>; unplaced: boolean }>();
    for (const c of tx.changes) {
      if (c.schema !== 'public' || !TABLES.has(c.table)) continue;
      const key = `${c.table}.${c.op}`;
      let g = groups.get(key);
      if (!g) groups.set(key, (g = { table: c.table as Table, op: c.op, rows: new Map(), unplaced: false }));
      if (c.op === 'TRUNCATE') continue;
      const add = (id: string | null | undefined, pid: string | null | undefined) => {
        if (!id || !pid) return;
        let s = g.rows.get(id);
        if (!s) g.rows.set(id, (s = new Set()));
        s.add(pid);
      };
      place(c, add, options, () => (g.unplaced = true));
    }
    const events: ChangeEvent[] = [];
    const head = { v: 1 as const, txid: String(tx.xid), ts: tx.commitTime };
    for (const g of groups.values()) {
      const pairs = [...g.rows].flatMap(([id, pids]) => [...pids].map((pid) => [id, pid] as const)).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      const pids = [...new Set(pairs.map((p) => p[1]))].sort();
      const ids = [...g.rows.keys()].sort();
      if (g.op === 'TRUNCATE' || g.unplaced) {
        events.push({ ...head, table: g.table, op: g.op, scope: 'table', ids: [], personalityIds: [], chunk: 1, chunks: 1 });
      } else if (ids.length === 0) {
        continue;
      } else if (pairs.length <= ROWS_PER_CHUNK * MAX_ROW_CHUNKS) {
        const chunks = Math.ceil(pairs.length / ROWS_PER_CHUNK);
        for (let i = 0; i < chunks; i++) {
          const part = pairs.slice(i * ROWS_PER_CHUNK, (i + 1) * ROWS_PER_CHUNK);
          events.push({
            ...head,
            table: g.table,
            op: g.op,
            scope: 'rows',
            ids: [...new Set(part.map((p) => p[0]))],
            personalityIds: [...new Set(part.map((p) => p[1]))],
            chunk: i + 1,
            chunks,
          });
        }
      } else if (pids.length <= PIDS_PER_CHUNK * MAX_PID_CHUNKS) {
        const chunks = Math.ceil(pids.length / PIDS_PER_CHUNK);
        for (let i = 0; i < chunks; i++) {
          events.push({ ...head, table: g.table, op: g.op, scope: 'personalities', ids: [], personalityIds: pids.slice(i * PIDS_PER_CHUNK, (i + 1) * PIDS_PER_CHUNK), chunk: i + 1, chunks });
        }
      } else {
        events.push({ ...head, table: g.table, op: g.op, scope: 'table', ids: [], personalityIds: [], chunk: 1, chunks: 1 });
      }
    }
    return events;
  };
}

function place(c: DecodedChange, add: (id: string | null | undefined, pid: string | null | undefined) => void, o: V1MapperOptions, unplaced: () => void): void {
  const n = c.new ?? {};
  const old = c.old ?? {};
  switch (c.table) {
    case 'personalities':
      add(n.id, n.id);
      add(old.id, old.id);
      return;
    case 'llm_configs':
      // The config id when known; its personality is what the cache keys on.
      add(n.id ?? n.personalityId, n.personalityId);
      add(old.id ?? old.personalityId, old.personalityId);
      return;
    case 'memories': {
      const id = n.id ?? old.id;
      if (!id) return unplaced();
      add(id, n.personalityId);
      add(id, old.personalityId);
      for (const pid of o.holding?.(id) ?? []) add(id, pid);
      // A deleted memory no cached set holds may still be in a set being loaded: flush the table.
      if (c.op === 'DELETE' && !old.personalityId && !(o.holding?.(id) ?? []).length) unplaced();
      return;
    }
  }
}
