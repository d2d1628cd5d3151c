-- Initial schema. The parts copied from sql/ must stay identical to it:
-- test/sql/catalog.test.ts applies sql/ on top and expects no catalog change.

-- sql/000_extension.sql
-- pgvector provides the vector type, the <=> cosine operator and ivfflat.
CREATE EXTENSION IF NOT EXISTS vector;

-- CreateTable
CREATE TABLE "personalities" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "name" TEXT NOT NULL,
    "displayName" TEXT NOT NULL,
    "systemPrompt" TEXT NOT NULL,
    "isActive" BOOLEAN NOT NULL DEFAULT true,
    "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "personalities_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "llm_configs" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "personalityId" UUID NOT NULL,
    "model" TEXT NOT NULL,
    "temperature" DOUBLE PRECISION NOT NULL DEFAULT 0.7,
    "maxTokens" INTEGER NOT NULL DEFAULT 1024,
    "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "llm_configs_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "memories" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "personalityId" UUID NOT NULL,
    "channelId" TEXT NOT NULL,
    "content" TEXT NOT NULL,
    "embedding" vector(1536) NOT NULL,
    "metadata" JSONB,
    "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "memories_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "conversation_history" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "channelId" TEXT NOT NULL,
    "personalityId" UUID NOT NULL,
    "userId" TEXT NOT NULL,
    "role" TEXT NOT NULL,
    "content" TEXT NOT NULL,
    "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "conversation_history_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "personalities_name_key" ON "personalities"("name");

-- CreateIndex
CREATE UNIQUE INDEX "llm_configs_personalityId_key" ON "llm_configs"("personalityId");

-- CreateIndex
CREATE INDEX "memories_personalityId_channelId_idx" ON "memories"("personalityId", "channelId");

-- CreateIndex
CREATE INDEX "conversation_history_channelId_personalityId_createdAt_idx" ON "conversation_history"("channelId", "personalityId", "createdAt");

-- CreateIndex
CREATE INDEX "conversation_history_userId_idx" ON "conversation_history"("userId");

-- CreateIndex
CREATE INDEX "conversation_history_personalityId_idx" ON "conversation_history"("personalityId");

-- AddForeignKey
ALTER TABLE "llm_configs" ADD CONSTRAINT "llm_configs_personalityId_fkey" FOREIGN KEY ("personalityId") REFERENCES "personalities"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "memories" ADD CONSTRAINT "memories_personalityId_fkey" FOREIGN KEY ("personalityId") REFERENCES "personalities"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "conversation_history" ADD CONSTRAINT "conversation_history_personalityId_fkey" FOREIGN KEY ("personalityId") REFERENCES "personalities"("id") ON DELETE CASCADE ON UPDATE CASCADE;


-- sql/010_notify.sql
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

-- sql/020_vector_index.sql
-- Cosine ivfflat index for memory search. Prisma cannot declare it, so
-- `prisma migrate dev` proposes dropping it as drift: see README
-- "The vector index guard" and `memory-sync check-migrations`.
-- lists = 50 everywhere, so dev and prod plans agree.
CREATE INDEX IF NOT EXISTS idx_memories_embedding
  ON memories USING ivfflat (embedding vector_cosine_ops) WITH (lists = 50);
