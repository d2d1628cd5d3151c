import { readFileSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { EMBEDDING_DIMENSION, assertUuid, parseEmbedding } from '../src/embedding.js';
import { ValidationError } from '../src/errors.js';
import { MIGRATIONS_DIR, ROOT } from './helpers/db.js';

describe('embedding dimension is one constant', () => {
  it('schema.prisma and every migration declare vector(EMBEDDING_DIMENSION)', () => {
    const schema = readFileSync(`${ROOT}prisma/schema.prisma`, 'utf8');
    expect([...schema.matchAll(/vector\((\d+)\)/g)].map((m) => Number(m[1]))).toEqual([EMBEDDING_DIMENSION]);
    for (const dir of readdirSync(MIGRATIONS_DIR, { withFileTypes: true }).filter((d) => d.isDirectory())) {
      const sql = readFileSync(`${MIGRATIONS_DIR}/${dir.name}/migration.sql`, 'utf8');
      for (const m of sql.matchAll(/vector\((\d+)\)/g)) expect(Number(m[1])).toBe(EMBEDDING_DIMENSION);
    }
  });
});

describe('input validation', () => {
  const good = Array.from({ length: EMBEDDING_DIMENSION }, (_, i) => Math.sin(i));

  it('accepts a finite vector of the right dimension, as float32', () => {
    const v = parseEmbedding(good);
    expect(v).toBeInstanceOf(Float32Array);
    expect(v[1]).toBeCloseTo(Math.sin(1), 6);
  });

  it.each([
    ['wrong dimension', good.slice(1), /embedding: must have 1536 dimensions, got 1535/],
    ['NaN', good.map((x, i) => (i === 7 ? Number.NaN : x)), /embedding\[7\]: must be a finite number/],
    ['Infinity', good.map((x, i) => (i === 3 ? Infinity : x)), /embedding\[3\]: must be a finite number/],
    ['float32 overflow', good.map((x, i) => (i === 2 ? 1e39 : x)), /embedding\[2\]: overflows float32/],
    ['string element', good.map((x, i) => (i === 0 ? '1' : x)), /embedding\[0\]/],
    ['zero vector', new Array(EMBEDDING_DIMENSION).fill(0), /zero vector/],
    ['not an array', 'nope', /embedding: must be an array/],
  ])('rejects %s', (_n, value, message) => {
    expect(() => parseEmbedding(value)).toThrow(ValidationError);
    expect(() => parseEmbedding(value)).toThrow(message);
  });

  it('checks UUIDs', () => {
    expect(assertUuid('6F9619FF-8B86-D011-B42D-00C04FC964FF', 'id')).toBe('6f9619ff-8b86-d011-b42d-00c04fc964ff');
    expect(() => assertUuid('42', 'personalityId')).toThrow(/personalityId: must be a UUID/);
    expect(() => assertUuid(undefined, 'id')).toThrow(ValidationError);
  });
});
