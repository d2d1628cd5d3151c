import { ValidationError } from './errors.js';

/**
 * Embedding dimension. It must equal `vector(N)` in prisma/schema.prisma and
 * the migrations; test/embedding.test.ts fails when they drift apart.
 */
export const EMBEDDING_DIMENSION = 1536;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function assertUuid(value: unknown, field: string): string {
  if (typeof value !== 'string' || !UUID.test(value)) {
    throw new ValidationError(field, 'must be a UUID');
  }
  return value.toLowerCase();
}

/** Checks length and finiteness; returns the values as float32, as pgvector stores them. */
export function parseEmbedding(value: unknown, field = 'embedding'): Float32Array {
  if (!Array.isArray(value) && !(value instanceof Float32Array) && !(value instanceof Float64Array)) {
    throw new ValidationError(field, `must be an array of ${EMBEDDING_DIMENSION} numbers`);
  }
  if (value.length !== EMBEDDING_DIMENSION) {
    throw new ValidationError(field, `must have ${EMBEDDING_DIMENSION} dimensions, got ${value.length}`);
  }
  const out = new Float32Array(EMBEDDING_DIMENSION);
  let norm = 0;
  for (let i = 0; i < EMBEDDING_DIMENSION; i++) {
    const x = value[i];
    if (typeof x !== 'number' || !Number.isFinite(x)) {
      throw new ValidationError(`${field}[${i}]`, 'must be a finite number');
    }
    out[i] = x;
    if (!Number.isFinite(out[i])) throw new ValidationError(`${field}[${i}]`, 'overflows float32');
    norm += out[i]! * out[i]!;
  }
  if (norm === 0) throw new ValidationError(field, 'must not be the zero vector (cosine is undefined)');
  return out;
}

/** Scales to unit length in float64, stores float32: the hot-set kernel then needs only a dot product. */
export function normalizeInto(src: Float32Array, dst: Float32Array, offset = 0): void {
  let norm = 0;
  for (let i = 0; i < src.length; i++) norm += src[i]! * src[i]!;
  const inv = 1 / Math.sqrt(norm);
  for (let i = 0; i < src.length; i++) dst[offset + i] = src[i]! * inv;
}
