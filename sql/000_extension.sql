-- pgvector provides the vector type, the <=> cosine operator and ivfflat.
CREATE EXTENSION IF NOT EXISTS vector;
