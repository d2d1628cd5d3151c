-- Cache-invalidation notifications on channel 'cache_invalidation'.
-- Payload contract (v1) is documented in README.md#notification-payload.
--
-- Statement-level triggers with transition tables: one bulk statement sends a
-- bounded number of notifications, never one per row. Payloads carry keys,
-- never rows (a 1536-dim row alone is over NOTIFY's 8000-byte limit).
-- Every payload is plain ASCII of at most 7,999 bytes.

CREATE OR REPLACE FUNCTION memory_sync_notify() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  -- 90 rows x (id + personality id) x 39 bytes + ~180-byte header < 8000.
  rows_per_chunk CONSTANT int := 90;
  max_row_chunks CONSTANT int := 12;
  -- 190 personality ids x 39 bytes + header < 8000.
  pids_per_chunk CONSTANT int := 190;
  max_pid_chunks CONSTANT int := 20;
  pid_col text := TG_ARGV[0];
  changes text;
  ids uuid[];
  pids uuid[];
  n_rows int;
  n_pids int;
  n_chunks int;
  head text;
  payload text;
  r record;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    n_rows := -1;
  ELSE
    IF TG_OP = 'INSERT' THEN
      changes := format('SELECT id, %I AS pid FROM new_rows', pid_col);
    ELSIF TG_OP = 'DELETE' THEN
      changes := format('SELECT id, %I AS pid FROM old_rows', pid_col);
      IF TG_TABLE_NAME <> 'personalities' THEN
        -- Rows removed by a personality's cascade are reported by that
        -- personality's own DELETE event; a bulk personality delete would
        -- otherwise send one event per parent row.
        changes := changes || format(
          ' o WHERE EXISTS (SELECT 1 FROM %I.personalities p WHERE p.id = o.%I)',
          TG_TABLE_SCHEMA, pid_col);
      END IF;
    ELSE
      -- UPDATE: only rows whose content changed; both old and new keys, so a
      -- row moved between personalities names both.
      changes := format(
        'SELECT k.id, k.pid FROM old_rows o FULL JOIN new_rows n ON n.id = o.id'
        ' CROSS JOIN LATERAL (VALUES (o.id, o.%1$I), (n.id, n.%1$I)) k(id, pid)'
        ' WHERE k.id IS NOT NULL AND n IS DISTINCT FROM o', pid_col);
    END IF;
    EXECUTE format(
      'SELECT array_agg(id ORDER BY id), array_agg(pid ORDER BY id), count(*), count(DISTINCT pid)'
      ' FROM (SELECT DISTINCT id, pid FROM (%s) c) d', changes)
      INTO ids, pids, n_rows, n_pids;
    IF n_rows = 0 THEN
      RETURN NULL;
    END IF;
  END IF;

  head := format('{"v":1,"table":"%s","op":"%s","txid":"%s","ts":%s',
    TG_TABLE_NAME, TG_OP, pg_current_xact_id(),
    round(extract(epoch FROM clock_timestamp()) * 1000, 3));

  IF n_rows > 0 AND n_rows <= rows_per_chunk * max_row_chunks THEN
    n_chunks := (n_rows + rows_per_chunk - 1) / rows_per_chunk;
    FOR r IN
      SELECT g, string_agg(DISTINCT '"' || id || '"', ',') AS id_list,
             string_agg(DISTINCT '"' || pid || '"', ',') AS pid_list
      FROM (SELECT u.id, u.pid, (u.ord - 1) / rows_per_chunk + 1 AS g
            FROM unnest(ids, pids) WITH ORDINALITY AS u(id, pid, ord)) s
      GROUP BY g ORDER BY g
    LOOP
      payload := head || format(',"scope":"rows","ids":[%s],"personalityIds":[%s],"chunk":%s,"chunks":%s}',
        r.id_list, r.pid_list, r.g, n_chunks);
      PERFORM pg_notify('cache_invalidation', payload);
    END LOOP;
  ELSIF n_rows > 0 AND n_pids <= pids_per_chunk * max_pid_chunks THEN
    -- Too many rows to name: name every affected personality instead.
    n_chunks := (n_pids + pids_per_chunk - 1) / pids_per_chunk;
    FOR r IN
      SELECT (ord - 1) / pids_per_chunk + 1 AS g, string_agg('"' || pid || '"', ',' ORDER BY pid) AS pid_list
      FROM (SELECT pid, row_number() OVER (ORDER BY pid) AS ord
            FROM (SELECT DISTINCT unnest(pids) AS pid) d) s
      GROUP BY 1 ORDER BY 1
    LOOP
      payload := head || format(',"scope":"personalities","ids":[],"personalityIds":[%s],"chunk":%s,"chunks":%s}',
        r.pid_list, r.g, n_chunks);
      PERFORM pg_notify('cache_invalidation', payload);
    END LOOP;
  ELSE
    -- TRUNCATE, or more personalities than fit: the whole table is suspect.
    PERFORM pg_notify('cache_invalidation',
      head || ',"scope":"table","ids":[],"personalityIds":[],"chunk":1,"chunks":1}');
  END IF;
  RETURN NULL;
END
$fn$;

-- personalities: the personality id is the row id.
CREATE OR REPLACE TRIGGER memory_sync_insert AFTER INSERT ON personalities
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION memory_sync_notify('id');
CREATE OR REPLACE TRIGGER memory_sync_update AFTER UPDATE ON personalities
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION memory_sync_notify('id');
CREATE OR REPLACE TRIGGER memory_sync_delete AFTER DELETE ON personalities
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION memory_sync_notify('id');
CREATE OR REPLACE TRIGGER memory_sync_truncate AFTER TRUNCATE ON personalities
  FOR EACH STATEMENT EXECUTE FUNCTION memory_sync_notify('id');

-- llm_configs: events name the personality the config belongs to.
CREATE OR REPLACE TRIGGER memory_sync_insert AFTER INSERT ON llm_configs
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION memory_sync_notify('personalityId');
CREATE OR REPLACE TRIGGER memory_sync_update AFTER UPDATE ON llm_configs
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION memory_sync_notify('personalityId');
CREATE OR REPLACE TRIGGER memory_sync_delete AFTER DELETE ON llm_configs
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION memory_sync_notify('personalityId');
CREATE OR REPLACE TRIGGER memory_sync_truncate AFTER TRUNCATE ON llm_configs
  FOR EACH STATEMENT EXECUTE FUNCTION memory_sync_notify('personalityId');

-- memories
CREATE OR REPLACE TRIGGER memory_sync_insert AFTER INSERT ON memories
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION memory_sync_notify('personalityId');
CREATE OR REPLACE TRIGGER memory_sync_update AFTER UPDATE ON memories
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION memory_sync_notify('personalityId');
CREATE OR REPLACE TRIGGER memory_sync_delete AFTER DELETE ON memories
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION memory_sync_notify('personalityId');
CREATE OR REPLACE TRIGGER memory_sync_truncate AFTER TRUNCATE ON memories
  FOR EACH STATEMENT EXECUTE FUNCTION memory_sync_notify('personalityId');

-- Fire under session_replication_role = replica too (logical-replication
-- apply workers, restore tools): a write that notifies nobody leaves every
-- cache stale. ALTER ... ENABLE ALWAYS is idempotent.
ALTER TABLE personalities ENABLE ALWAYS TRIGGER memory_sync_insert;
ALTER TABLE personalities ENABLE ALWAYS TRIGGER memory_sync_update;
ALTER TABLE personalities ENABLE ALWAYS TRIGGER memory_sync_delete;
ALTER TABLE personalities ENABLE ALWAYS TRIGGER memory_sync_truncate;
ALTER TABLE llm_configs ENABLE ALWAYS TRIGGER memory_sync_insert;
ALTER TABLE llm_configs ENABLE ALWAYS TRIGGER memory_sync_update;
ALTER TABLE llm_configs ENABLE ALWAYS TRIGGER memory_sync_delete;
ALTER TABLE llm_configs ENABLE ALWAYS TRIGGER memory_sync_truncate;
ALTER TABLE memories ENABLE ALWAYS TRIGGER memory_sync_insert;
ALTER TABLE memories ENABLE ALWAYS TRIGGER memory_sync_update;
ALTER TABLE memories ENABLE ALWAYS TRIGGER memory_sync_delete;
ALTER TABLE memories ENABLE ALWAYS TRIGGER memory_sync_truncate;
