-- Cosine ivfflat index for memory search. Prisma cannot declare it, so
-- `prisma migrate dev` proposes dropping it as drift: see README
-- "The vector index guard" and `memory-sync check-migrations`.
-- lists = 50 everywhere, so dev and prod plans agree.
CREATE INDEX IF NOT EXISTS idx_memories_embedding
  ON memories USING ivfflat (embedding vector_cosine_ops) WITH (lists = 50);
