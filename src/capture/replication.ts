import { ConfigError, PermanentError } from '../contract/errors.js';
import type { Queryable } from '../backend/queryable.js';

/*
 * Capture by logical replication: a publication over the captured tables and
 * a logical replication slot (pgoutput) that keeps the server's WAL until
 * memory-sync has applied it. No trigger, no NOTIFY: writers pay nothing at
 * commit beyond the WAL they write anyway (docs/replication.md).
 */

/**
 * What a captured table's UPDATE and DELETE carry besides the new row:
 * - `default`: the primary key (the old key only when it changed on UPDATE).
 *   What memory-sync needs: its cache keeps the keys of cached rows, so a
 *   deleted row's id says what to drop.
 * - `{ index }`: the columns of that unique, NOT NULL index, e.g. a child's
 *   unique parent key, so a delete names its parent without memory. Free when
 *   the index exists anyway.
 * - `full`: the whole old row. Costly (every UPDATE and DELETE writes the old
 *   row to the WAL; 6 KB for a 1536-d vector) and incompatible with a column
 *   list, so memory-sync never asks for it by default.
 * - `existing`: whatever the table has (another consumer of the bot's WAL
 *   may rely on it); only NOTHING, which would make the table refuse UPDATE
 *   and DELETE once published, becomes DEFAULT. The bot's own tables use it.
 */
export type ReplicaIdentity = 'default' | 'full' | 'existing' | { index: string };

export interface CaptureTable {
  /** @defaultValue "public" */
  schema?: string;
  name: string;
  /**
   * Columns sent to memory-sync; the replica-identity columns are always
   * added (PostgreSQL refuses UPDATE and DELETE on a table whose published
   * column list lacks them). Keys only keeps large values (vectors) on the server.
   * @defaultValue every column
   */
  columns?: string[];
  /**
   * Set on the table when it differs (ALTER TABLE … REPLICA IDENTITY: a brief exclusive lock).
   * @defaultValue "default"
   */
  replicaIdentity?: ReplicaIdentity;
}

export interface CaptureNames {
  /** Logical replication slot: lower-case letters, digits and _, one per consumer (a host or the relays of one bus). */
  slot: string;
  publication: string;
}

/** Slot and publication names: PostgreSQL's rule for slots (lower-case letters, digits, _), at most 63 bytes. */
export const CAPTURE_NAME = /^[a-z0-9_]{1,63}$/;

export function checkCaptureName(variable: string, name: string): string {
  if (!CAPTURE_NAME.test(name)) throw new ConfigError(variable, `"${name}" must be 1 to 63 lower-case letters, digits or _`);
  return name;
}

const ident = (s: string) => `"${s.replace(/"/g, '""')}"`;
const qualified = (t: CaptureTable) => `${ident(t.schema ?? 'public')}.${ident(t.name)}`;

const SETUP = 'see docs/replication.md';

/** How to turn on logical decoding where memory-sync users run PostgreSQL. */
export const WAL_LEVEL_HELP =
  'set wal_level = logical and restart the server. Self-hosted and Railway: ALTER SYSTEM SET wal_level = logical, then restart the ' +
  'database service. Neon: Project settings → Logical Replication → Enable. Supabase: already logical; connect directly (port 5432), ' +
  'not through the pooler. RDS and Aurora: rds.logical_replication = 1 in a custom (cluster) parameter group, then reboot. ' +
  `Or keep the trigger source (MEMORY_SYNC_SOURCE=listen); ${SETUP}`;

interface ServerSettings {
  wal_level: string;
  version: number;
  max_replication_slots: number;
  max_wal_senders: number;
  used_slots: number;
  user: string;
}

/**
 * Refuses (PermanentError) a server that cannot serve a logical slot: wal_level
 * below logical, PostgreSQL before 15 (column lists), no slots or WAL senders.
 */
export async function checkServer(db: Queryable): Promise<ServerSettings> {
  const { rows } = await db.query<ServerSettings>(
    `SELECT current_setting('wal_level') AS wal_level,
            current_setting('server_version_num')::int AS version,
            current_setting('max_replication_slots')::int AS max_replication_slots,
            current_setting('max_wal_senders')::int AS max_wal_senders,
            (SELECT count(*)::int FROM pg_replication_slots) AS used_slots,
            current_user AS "user"`,
  );
  const s = rows[0]!;
  if (s.wal_level !== 'logical') {
    throw new PermanentError(`wal_level is "${s.wal_level}"; memory-sync's replication source needs "logical": ${WAL_LEVEL_HELP}`, '55000');
  }
  if (s.version < 150000) {
    throw new PermanentError(`PostgreSQL ${Math.floor(s.version / 10000)} has no publication column lists; the replication source needs PostgreSQL 15 or later (or MEMORY_SYNC_SOURCE=listen)`, '0A000');
  }
  if (s.max_replication_slots === 0) {
    throw new PermanentError(`max_replication_slots is 0: set it to at least the number of memory-sync slots plus the server's other consumers, and restart; ${SETUP}`, '53400');
  }
  if (s.max_wal_senders === 0) {
    throw new PermanentError(`max_wal_senders is 0: set it (10 is PostgreSQL's default) and restart; ${SETUP}`, '53300');
  }
  return s;
}

/** A replication error that retrying cannot fix, as a PermanentError saying what to do; else undefined. */
export function replicationPermanent(err: unknown, user = 'the DATABASE_URL user'): PermanentError | undefined {
  if (err instanceof PermanentError) return err;
  const e = err as { code?: unknown; message?: unknown } | undefined;
  const code = typeof e?.code === 'string' ? e.code : undefined;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  const cause = { cause: err };
  if (code === '42501' || (code === '28000' && /replication|walsender/i.test(message))) {
    if (/replication|walsender|slot/i.test(message)) {
      return new PermanentError(
        `${message}: give ${user} the REPLICATION attribute (ALTER ROLE … REPLICATION; RDS: GRANT rds_replication TO …; Supabase and Neon: use the owner role); ${SETUP}`,
        code,
        cause,
      );
    }
    return new PermanentError(`${message}: the publication needs ${user} to own the captured tables (or connect as their owner); ${SETUP}`, code, cause);
  }
  if (code === '53400') {
    return new PermanentError(`${message}: raise max_replication_slots (and restart), or drop slots nobody reads (SELECT slot_name, active FROM pg_replication_slots); ${SETUP}`, code, cause);
  }
  if (code === '55000' && /wal_level/i.test(message)) return new PermanentError(`${message}: ${WAL_LEVEL_HELP}`, code, cause);
  return undefined;
}

// ------------------------------------------------------------ publication

interface IdentityRow {
  relreplident: string;
  pk: string[] | null;
  index_cols: string[] | null;
  all_cols: string[];
}

/** The table's identity columns after applying `want` (when it differs), and every column. */
async function ensureIdentity(db: Queryable, t: CaptureTable): Promise<{ identity: string[] | 'full'; all: string[] }> {
  const name = qualified(t);
  const read = async () => {
    const { rows } = await db.query<IdentityRow>(
      `SELECT c.relreplident::text AS relreplident,
              (SELECT array_agg(a.attname::text ORDER BY k.n) FROM pg_index i
                 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                WHERE i.indrelid = c.oid AND i.indisprimary) AS pk,
              (SELECT array_agg(a.attname::text ORDER BY k.n) FROM pg_index i
                 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                WHERE i.indrelid = c.oid AND i.indisreplident) AS index_cols,
              (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS all_cols
         FROM pg_class c WHERE c.oid = to_regclass($1)`,
      [name],
    );
    return rows[0];
  };
  let row = await read();
  if (!row) throw new PermanentError(`captured table ${name} does not exist: migrate the database, or fix the table list`, '42P01');
  const want = t.replicaIdentity ?? 'default';
  const current = row.relreplident;
  let alter: string | undefined;
  if ((want === 'default' && current !== 'd') || (want === 'existing' && current === 'n')) alter = 'DEFAULT';
  else if (want === 'full' && current !== 'f') alter = 'FULL';
  else if (typeof want === 'object') {
    const { rows } = await db.query<{ ok: boolean }>(
      `SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
                       WHERE i.indrelid = to_regclass($1) AND x.relname = $2 AND i.indisreplident) AS ok`,
      [name, want.index],
    );
    if (current !== 'i' || !rows[0]?.ok) alter = `USING INDEX ${ident(want.index)}`;
  }
  if (alter) {
    await db.query(`ALTER TABLE ${name} REPLICA IDENTITY ${alter}`);
    row = (await read())!;
  }
  const all = row.all_cols;
  if (row.relreplident === 'f') return { identity: 'full', all };
  const identity = row.relreplident === 'i' ? row.index_cols : row.relreplident === 'd' ? row.pk : null;
  if (!identity?.length) {
    // Published for UPDATE/DELETE without an identity, the table would refuse the application's own writes.
    throw new PermanentError(`captured table ${name} has no primary key (replica identity ${row.relreplident}): add one, or set replicaIdentity to a unique NOT NULL index`, '55000');
  }
  return { identity, all };
}

/** The published column list: what was asked plus the identity, in table order; null for every column. */
function columnList(t: CaptureTable, identity: string[] | 'full', all: string[]): string[] | null {
  if (!t.columns) return null;
  if (identity === 'full' && t.replicaIdentity === 'existing') return null; // the table's FULL identity needs every column
  if (identity === 'full') {
    throw new ConfigError(`capture.${t.name}.columns`, 'a column list cannot be combined with REPLICA IDENTITY FULL (the old row has every column)');
  }
  const unknown = t.columns.filter((c) => !all.includes(c));
  if (unknown.length) throw new ConfigError(`capture.${t.name}.columns`, `no such column: ${unknown.join(', ')}`);
  const wanted = new Set([...t.columns, ...identity]);
  const list = all.filter((c) => wanted.has(c));
  return list.length === all.length ? null : list;
}

export interface PublicationResult {
  created: boolean;
  altered: boolean;
  /** Per table ("schema.name"): its published columns (null: all) and identity. */
  tables: Record<string, { columns: string[] | null; identity: string[] | 'full' }>;
}

/**
 * Creates the publication, or brings an existing one to exactly these tables
 * and column lists (ALTER PUBLICATION … SET TABLE), publishing insert,
 * update, delete and truncate. Sets each table's replica identity first.
 * Idempotent: when everything is already so, it only reads.
 */
export async function ensurePublication(db: Queryable, publication: string, tables: readonly CaptureTable[]): Promise<PublicationResult> {
  checkCaptureName('replication.publication', publication);
  if (tables.length === 0) throw new ConfigError('replication.tables', 'names no table');
  const wanted: PublicationResult['tables'] = {};
  const clauses: string[] = [];
  for (const t of tables) {
    const { identity, all } = await ensureIdentity(db, t);
    const columns = columnList(t, identity, all);
    wanted[`${t.schema ?? 'public'}.${t.name}`] = { columns, identity };
    clauses.push(columns ? `${qualified(t)} (${columns.map(ident).join(', ')})` : qualified(t));
  }
  const { rows: pubs } = await db.query<{ puballtables: boolean; pubinsert: boolean; pubupdate: boolean; pubdelete: boolean; pubtruncate: boolean; pubviaroot: boolean }>(
    'SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication WHERE pubname = $1',
    [publication],
  );
  const publish = `WITH (publish = 'insert, update, delete, truncate')`;
  const pub = pubs[0];
  if (!pub) {
    try {
      await db.query(`CREATE PUBLICATION ${ident(publication)} FOR TABLE ${clauses.join(', ')} ${publish}`);
      return { created: true, altered: false, tables: wanted };
    } catch (err) {
      // Another process created it at the same moment: bring that one to our list below.
      if ((err as { code?: string }).code !== '42710') throw replicationPermanent(err) ?? err;
    }
  } else if (pub.puballtables) {
    throw new PermanentError(`publication ${publication} is FOR ALL TABLES (not memory-sync's): choose another replication.publication`, '42710');
  }
  const { rows: have } = await db.query<{ table: string; cols: string[] | null }>(
    `SELECT n.nspname || '.' || c.relname AS table,
            CASE WHEN pr.prattrs IS NULL THEN NULL ELSE
              (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
                WHERE a.attrelid = pr.prrelid AND a.attnum = ANY (pr.prattrs::int2[])) END AS cols
       FROM pg_publication_rel pr
       JOIN pg_publication p ON p.oid = pr.prpubid
       JOIN pg_class c ON c.oid = pr.prrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE p.pubname = $1`,
    [publication],
  );
  const same =
    have.length === Object.keys(wanted).length &&
    have.every((h) => h.table in wanted && JSON.stringify(h.cols) === JSON.stringify(wanted[h.table]!.columns));
  const ops = pub ? pub.pubinsert && pub.pubupdate && pub.pubdelete && pub.pubtruncate : false;
  if (same && ops) return { created: false, altered: false, tables: wanted };
  try {
    await db.query(`ALTER PUBLICATION ${ident(publication)} SET TABLE ${clauses.join(', ')}`);
    await db.query(`ALTER PUBLICATION ${ident(publication)} SET (publish = 'insert, update, delete, truncate')`);
  } catch (err) {
    throw replicationPermanent(err) ?? err;
  }
  return { created: false, altered: true, tables: wanted };
}

// ------------------------------------------------------------------ slot

export interface SlotStatus {
  /** pid of the walsender reading it, or null. */
  activePid: number | null;
  /** reserved, extended, unreserved, or lost (invalidated past max_slot_wal_keep_size). */
  walStatus: string | null;
  restartLsn: string | null;
  confirmedFlushLsn: string | null;
  /** WAL the slot keeps on the server's disk: current position − restart_lsn, bytes. */
  retainedBytes: number;
  /** Not yet confirmed: current position − confirmed_flush_lsn, bytes. */
  lagBytes: number;
}

/** The slot, or null when there is none. A slot of that name that is not ours (physical, another plugin or database) is a PermanentError. */
export async function slotStatus(db: Queryable, slot: string): Promise<SlotStatus | null> {
  const { rows } = await db.query<{
    slot_type: string;
    plugin: string | null;
    database: string | null;
    here: string;
    active_pid: number | null;
    wal_status: string | null;
    restart_lsn: string | null;
    confirmed_flush_lsn: string | null;
    retained: string | null;
    lag: string | null;
  }>(
    `SELECT slot_type, plugin, database, current_database() AS here, active_pid, wal_status,
            restart_lsn::text, confirmed_flush_lsn::text,
            pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS retained,
            pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text AS lag
       FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  const r = rows[0];
  if (!r) return null;
  if (r.slot_type !== 'logical' || r.plugin !== 'pgoutput' || r.database !== r.here) {
    throw new PermanentError(
      `replication slot ${slot} exists but is not memory-sync's (${r.slot_type}, plugin ${r.plugin ?? 'none'}, database ${r.database ?? 'none'}): choose another replication.slot`,
      '42710',
    );
  }
  return {
    activePid: r.active_pid,
    walStatus: r.wal_status,
    restartLsn: r.restart_lsn,
    confirmedFlushLsn: r.confirmed_flush_lsn,
    retainedBytes: Number(r.retained ?? 0),
    lagBytes: Number(r.lag ?? 0),
  };
}

/**
 * Creates the slot (pgoutput) and returns its starting position; null when
 * another process created it first. Waits for transactions running now to
 * end (PostgreSQL needs a consistent starting point).
 */
export async function createSlot(db: Queryable, slot: string): Promise<string | null> {
  checkCaptureName('replication.slot', slot);
  try {
    const { rows } = await db.query<{ lsn: string }>(`SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
    return rows[0]!.lsn;
  } catch (err) {
    if ((err as { code?: string }).code === '42710') return null;
    throw replicationPermanent(err) ?? err;
  }
}

/** Drops the slot; true when one was dropped. An active slot rejects (55006) unless `terminate` ends its reader first. */
export async function dropSlot(db: Queryable, slot: string, options: { terminate?: boolean; waitMs?: number } = {}): Promise<boolean> {
  const deadline = Date.now() + (options.waitMs ?? 5_000);
  for (;;) {
    const s = await slotStatus(db, slot);
    if (!s) return false;
    if (s.activePid !== null && options.terminate) await db.query('SELECT pg_terminate_backend($1)', [s.activePid]);
    try {
      await db.query('SELECT pg_drop_replication_slot($1)', [slot]);
      return true;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === '42704') return false; // dropped meanwhile
      // A reader that just disconnected may hold it for a moment longer.
      if (code !== '55006' || Date.now() > deadline) throw replicationPermanent(err) ?? err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

export interface UninstallResult {
  slot: boolean;
  publication: boolean;
}

/**
 * `memory-sync uninstall`: drops the slot and the publication, so the server
 * keeps no WAL for memory-sync. A slot still being read `waitMs` (2 s) later (a
 * memory-sync still running) is a PermanentError: stop it first, or it would
 * create them again.
 */
export async function uninstallCapture(db: Queryable, names: CaptureNames, options: { waitMs?: number } = {}): Promise<UninstallResult> {
  checkCaptureName('replication.slot', names.slot);
  checkCaptureName('replication.publication', names.publication);
  // A reader stopped a moment ago leaves its server process behind for a few milliseconds.
  const deadline = Date.now() + (options.waitMs ?? 2_000);
  let s = await slotStatus(db, names.slot);
  while (s?.activePid != null && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    s = await slotStatus(db, names.slot);
  }
  if (s?.activePid != null) {
    throw new PermanentError(`replication slot ${names.slot} is being read by process ${s.activePid} (a running memory-sync or relay): stop it, then uninstall`, '55006');
  }
  const slot = s ? await dropSlot(db, names.slot) : false;
  const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_publication WHERE pubname = $1', [names.publication]);
  if (rows[0]!.n > 0) await db.query(`DROP PUBLICATION IF EXISTS ${ident(names.publication)}`);
  return { slot, publication: rows[0]!.n > 0 };
}
