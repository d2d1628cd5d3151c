import { ValidationError } from './contract/errors.js';

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

/*
 * When is a cosine similarity defined? pgvector sums a vector's squares in
 * float32 (`<=>`): they underflow to 0 for tiny vectors (a stored vector of
 * 1e-30 everywhere then scores similarity 1 against every query) and
 * overflow for huge ones. The one rule, on both paths: a vector is searchable
 * iff its squared norm, summed in float64 (each float32 square is exact in
 * float64), lies in [2^-126, 2^126]. Inputs outside it are rejected; stored
 * rows outside it are never returned, by the hot path (searchable()) or by
 * pgvector (`vector_norm(v) BETWEEN 2^-63 AND 2^63`: vector_norm is the square
 * root of the same float64 sum, so the two agree).
 */
export const NORM_SQUARED_MIN = 2 ** -126;
export const NORM_SQUARED_MAX = 2 ** 126;
/** The same bounds on the norm itself, for SQL's vector_norm(). */
export const NORM_SQRT_MIN = 2 ** -63;
export const NORM_SQRT_MAX = 2 ** 63;

/** Σ x², in float64, in index order. */
export function squaredNorm(v: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i]! * v[i]!;
  return s;
}

/**
 * The rule for a sum already taken by squaredNorm (one pass over a row
 * instead of two). Compared as the norm, as SQL compares vector_norm(): a
 * sum a hair above 2^126 whose square root rounds to 2^63 passes on both
 * paths. (pgvector's vectorized double sum may round differently from this
 * index-order one; that can only matter within a few parts in 2^53 of a bound.)
 */
export function searchableSquaredNorm(squared: number): boolean {
  const norm = Math.sqrt(squared);
  return norm >= NORM_SQRT_MIN && norm <= NORM_SQRT_MAX;
}

/** True when cosine similarity against this vector is defined (see above). Non-finite components fail it. */
export function searchable(v: ArrayLike<number>): boolean {
  return searchableSquaredNorm(squaredNorm(v));
}

/**
 * Checks length and finiteness; returns the values as float32, as pgvector
 * stores them, and refuses a vector whose similarity would be undefined.
 */
export function parseEmbedding(value: unknown, dimension: number = EMBEDDING_DIMENSION, field = 'embedding'): Float32Array {
  if (!Array.isArray(value) && !(value instanceof Float32Array) && !(value instanceof Float64Array)) {
    throw new ValidationError(field, `must be an array of ${dimension} numbers`);
  }
  if (value.length !== dimension) {
    throw new ValidationError(field, `must have ${dimension} dimensions, got ${value.length}`);
  }
  const out = new Float32Array(dimension);
  for (let i = 0; i < dimension; i++) {
    const x: unknown = value[i];
    if (typeof x !== 'number' || !Number.isFinite(x)) {
      throw new ValidationError(`${field}[${i}]`, 'must be a finite number');
    }
    out[i] = x;
    if (!Number.isFinite(out[i]!)) throw new ValidationError(`${field}[${i}]`, 'overflows float32');
  }
  const squared = squaredNorm(out);
  if (squared === 0) throw new ValidationError(field, 'must not be the zero vector (cosine is undefined)');
  if (Math.sqrt(squared) < NORM_SQRT_MIN) {
    throw new ValidationError(
      field,
      `is too small: its squared norm is ${squared}, below 2^-126, where pgvector's float32 arithmetic underflows and cosine similarity is wrong or undefined; scale the vector up`,
    );
  }
  if (Math.sqrt(squared) > NORM_SQRT_MAX) {
    throw new ValidationError(
      field,
      `is too large: its squared norm is ${squared}, above 2^126, where pgvector's float32 arithmetic overflows and cosine similarity is undefined; scale the vector down`,
    );
  }
  return out;
}

/**
 * Scales `src` to unit length into `dst` at `offset`: the hot-set kernel then
 * needs only a dot product. The norm is taken in float64, where no float32
 * input can overflow or underflow it. A vector with no direction (zero, or
 * not finite: rows written around parseEmbedding) is written as zeros, so it
 * scores 0 against every query instead of NaN; returns false for it.
 */
export function normalizeInto(src: Float32Array, dst: Float32Array, offset = 0): boolean {
  let squared = 0;
  for (let i = 0; i < src.length; i++) squared += src[i]! * src[i]!;
  const norm = Math.sqrt(squared);
  if (!(norm > 0 && norm < Infinity)) {
    dst.fill(0, offset, offset + src.length);
    return false;
  }
  const inverse = 1 / norm;
  for (let i = 0; i < src.length; i++) dst[offset + i] = src[i]! * inverse;
  return true;
}
